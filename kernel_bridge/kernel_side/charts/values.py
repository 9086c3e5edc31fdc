"""Pure value helpers for chart extraction (docs/code-interpreter-api.md §6.4, §6.12.2, §6.12.3).

Kept free of matplotlib so they can be tested in isolation; numpy is only
touched through duck typing (``numpy.datetime64`` is recognised by its
``dtype`` kind) so importing this module costs nothing in the kernel.
"""

from __future__ import annotations

import datetime
import re
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

# "whitespace ( shortest text )" or "[ shortest text ]" (docs/code-interpreter-api.md §6.4).
_UNIT_RE = re.compile(r"\s\((.*?)\)|\[(.*?)\]")

_SIGNIFICANT_DIGITS = 8


def round8(value: float | int | Decimal) -> float:
    """Round with the 8-digit rule of docs/code-interpreter-api.md §6.12.3 and return a float.

    The number of significant digits shrinks with magnitude
    (``max(1, 8 - e)``), which is what upstream emits; keeping the rule
    exact makes box/pie numbers match the SDK tests bit for bit.
    """
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite() or number.is_zero():
        return float(number)
    exponent = number.adjusted()
    digits = max(1, _SIGNIFICANT_DIGITS - exponent)
    quantum = Decimal(1).scaleb(exponent - digits + 1)
    return float(number.quantize(quantum, rounding=ROUND_HALF_EVEN))


def unit_of(label: str | None) -> str | None:
    """Return the unit written in an axis label, e.g. ``"Time (s)"`` -> ``"s"``.

    ``"f(x)"`` has no unit: the parenthesised form needs a whitespace
    before it, so function notation is not mistaken for a unit.
    """
    if not label:
        return None
    match = _UNIT_RE.search(label)
    if match is None:
        return None
    unit = match.group(1) if match.group(1) is not None else match.group(2)
    return unit or None


def text_or_none(text: str) -> str | None:
    """Map matplotlib's empty-string "unset" to JSON null (titles, labels)."""
    return text or None


def _is_datetime64(value: Any) -> bool:
    """True for ``numpy.datetime64`` scalars without importing numpy."""
    dtype = getattr(value, "dtype", None)
    return getattr(dtype, "kind", None) == "M" and getattr(value, "ndim", 1) == 0


def coordinate(value: Any) -> str | float:
    """Normalise one point coordinate for JSON (docs/code-interpreter-api.md §6.12.2).

    Dates become ISO strings, strings (category names) stay as they are and
    every number becomes a float so that ``1`` is emitted as ``1.0``.
    """
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if _is_datetime64(value):
        return str(value.astype("datetime64[s]"))
    if isinstance(value, str):
        return value
    return float(value)


def plain_scalar(value: Any) -> Any:
    """Turn a numpy scalar into the equal Python scalar (JSON-serialisable).

    Used for ticks kept "unchanged" (docs/code-interpreter-api.md §6.5): numpy
    integers must still end up as JSON integers whatever JSON encoder the
    caller uses.
    """
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    return value

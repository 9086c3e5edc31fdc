"""``e2b/chart`` display formatter for the Python kernel (docs/code-interpreter-api.md §5.1 item 3, §6).

Runs inside the kernel only. :func:`install` adds an IPython formatter under
the MIME type ``e2b/chart``; IPython then calls it for every displayed
object, right after the PNG formatter, so a shown matplotlib figure yields
``image/png`` *and* its chart description in the same ``display_data``.

Importing this package is cheap on purpose: it neither imports matplotlib
(figures are recognised through ``sys.modules``, so nothing happens until
the user has imported matplotlib) nor numpy. The extraction code lives in
:mod:`.extract` and is imported on first use.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["CHART_MIME", "chart_from_figure", "install"]

CHART_MIME = "e2b/chart"

_log = logging.getLogger(__name__)


def chart_from_figure(figure: Any) -> dict[str, Any]:
    """Chart dict of a matplotlib figure; ``{}`` if blank or on any failure.

    Never raises: a failing extraction must not cost the user the PNG that
    the same display call carries, so errors are logged (debug level, to
    keep the user's stderr clean) and reported as the blank chart ``{}``.
    """
    try:
        from kernel_bridge.kernel_side.charts.extract import extract

        return extract(figure)
    except Exception:  # noqa: BLE001 - any failure means "no chart"
        _log.debug("chart extraction failed; emitting {}", exc_info=True)
        return {}


def _is_figure(obj: Any) -> bool:
    """A matplotlib Figure, checked without ever importing matplotlib."""
    module = sys.modules.get("matplotlib.figure")
    return module is not None and isinstance(obj, module.Figure)


def _make_formatter(parent: Any) -> Any:
    """Build the formatter; IPython is imported here, not at module import."""
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class ChartFormatter(BaseFormatter):
        """``e2b/chart``: figures -> chart dict; others -> ``_repr_e2b_chart_``.

        Figures are recognised in ``__call__`` rather than registered with
        ``for_type``: activating the inline backend runs IPython's
        ``select_figure_formats``, which pops every ``Figure`` printer from
        every formatter, so a registration would be lost on first plot.
        A printer the user registers for figures later still wins.
        """

        format_type = Unicode(CHART_MIME)
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict, str)

        def __call__(self, obj: Any) -> Any:
            if self.enabled and _is_figure(obj) and not self._has_printer(obj):
                return chart_from_figure(obj)
            return super().__call__(obj)

        def _has_printer(self, obj: Any) -> bool:
            try:
                self.lookup(obj)
            except KeyError:
                return False
            return True

    return ChartFormatter(parent=parent)


def install(ipython: Any) -> None:
    """Register the ``e2b/chart`` formatter on ``ipython``'s display formatter.

    Appending to ``display_formatter.formatters`` places it after
    ``image/png`` in dict order, as upstream does; IPython's own formatters
    are left untouched. Calling it again replaces the previous instance.
    """
    if ipython is None:
        return
    display_formatter = ipython.display_formatter
    display_formatter.formatters[CHART_MIME] = _make_formatter(display_formatter)

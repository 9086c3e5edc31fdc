"""Python-kernel customisation run once at kernel start (docs/code-interpreter-api.md §5.1 items 3-4).

Executed by `runpy.run_path` from the kernel's `exec_lines`, so its names stay out
of the user namespace. Everything is best-effort: a failure here must never keep
the kernel from starting, so each step is guarded and only logged to the
kernel's own stderr (which nobody's execution sees, as it has no parent).
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import sys
import traceback
import uuid
from typing import Any


def _log(message: str) -> None:
    stderr = sys.__stderr__  # None only in a process started without a stderr
    if stderr is not None:
        stderr.write(f"[e2b kernel startup] {message}\n")


def _data_formatter_class() -> type:
    """`e2b/data`: DataFrames as column dicts; `_repr_e2b_data_` for everything else."""
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class E2BDataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict, str)

        def __call__(self, obj: Any) -> Any:
            # Never import pandas here: only objects of an already-imported pandas qualify.
            pandas = sys.modules.get("pandas")
            if pandas is not None and isinstance(obj, pandas.DataFrame):
                return _dataframe_to_dict(obj, pandas)
            return super().__call__(obj)

    return E2BDataFormatter


def _dataframe_to_dict(frame: Any, pandas: Any) -> dict:
    """Column-oriented dict with Timestamps as ISO strings (JSON-safe)."""
    data = frame.to_dict(orient="list")
    return {str(column): [_cell(v, pandas) for v in values] for column, values in data.items()}


def _cell(value: Any, pandas: Any) -> Any:
    """Timestamps as ISO strings; NaN/NaT/inf as null (JSON has no NaN, docs/code-interpreter-api.md §3.1)."""
    if value is pandas.NaT:
        return None
    if isinstance(value, pandas.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays -> plain JSON; anything else is not serialisable."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(obj, numpy.ndarray):
            return obj.tolist()
        if isinstance(obj, numpy.generic):
            return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json_roundtrip(obj: Any) -> Any:
    """Containers round-tripped to plain JSON, keys stringified (orjson semantics)."""
    try:
        import orjson
    except ImportError:
        return json.loads(json.dumps(_plain(obj), allow_nan=False))
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.loads(orjson.dumps(obj, default=_json_default, option=options))


def _plain(obj: Any, depth: int = 0) -> Any:
    """Without orjson: the same result orjson would give (docs/code-interpreter-api.md §5.1 item 3).

    NaN/Infinity -> null, date/datetime/time -> ISO strings, UUID -> str, enums
    by value, numpy via `_json_default`; TypeError for anything else.
    """
    if depth > 254:  # orjson's recursion limit
        raise RecursionError("maximum recursion depth exceeded")
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {_key(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return _plain(obj.value, depth + 1)
    return _plain(_json_default(obj), depth + 1)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        return _key(key.value)
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return str(key)
    if isinstance(key, uuid.UUID):
        return str(key)
    if hasattr(key, "isoformat"):
        return key.isoformat()
    raise TypeError(f"unsupported key type {type(key).__name__}")


def _install_json_formatter(ip: Any) -> None:
    """`application/json` for every list/dict (docs/code-interpreter-api.md §5.1 item 3), else IPython's default."""
    original = ip.display_formatter.formatters["application/json"]

    def containers(obj: Any) -> Any:
        try:
            return _json_roundtrip(obj), {"expanded": True}
        except Exception:  # not JSON-able (TypeError, ValueError, RecursionError...): no JSON
            return None

    original.for_type(list, containers)
    original.for_type(dict, containers)


def _install_data_formatter(ip: Any) -> None:
    formatter = _data_formatter_class()(parent=ip.display_formatter)
    ip.display_formatter.formatters["e2b/data"] = formatter


def _install_charts(ip: Any) -> None:
    """The chart formatter lives in the charts module; import it without touching sys.path for good."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    added = False
    try:
        try:
            from kernel_bridge.kernel_side import charts
        except ImportError:
            sys.path.insert(0, root)
            added = True
            from kernel_bridge.kernel_side import charts
        charts.install(ip)
    finally:
        if added:
            try:
                sys.path.remove(root)
            except ValueError:
                pass


def _install_image_hooks() -> None:
    """PIL: no external viewers, `show()` displays in the notebook, `save(str)` displays too."""
    from IPython.display import display
    from PIL import Image, ImageShow

    # Only the IPython viewer: external ones (xdg-open, display, eog...) would
    # start processes nobody sees, which linger as zombies under the kernel.
    ImageShow._viewers[:] = [v for v in ImageShow._viewers if isinstance(v, ImageShow.IPythonViewer)]
    if not ImageShow._viewers:
        ImageShow.register(ImageShow.IPythonViewer)

    original_save = Image.Image.save

    def save(self: Any, fp: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fp, str):
            display(self)
        return original_save(self, fp, *args, **kwargs)

    save.__doc__ = original_save.__doc__
    Image.Image.save = save  # type: ignore[method-assign]  # patching PIL's class is the point


def _wait_for_the_daemon_instead_of_dropping_output() -> None:
    """IOPub waits for a slow daemon instead of silently dropping output.

    A PUB socket drops messages once its queue to the subscriber is full, and
    the daemon keeps that queue short so that a flood cannot grow its memory
    (kernel_bridge/kernel.py, IOPUB_QUEUE_MESSAGES). With NODROP the kernel's
    IOPub thread waits instead; output not yet sent stays in this process.
    """
    import zmq
    from ipykernel.kernelapp import IPKernelApp

    iopub = IPKernelApp.instance().iopub_thread
    iopub.io_loop.add_callback(lambda: iopub.socket.setsockopt(zmq.XPUB_NODROP, 1))


def main() -> None:
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        return
    steps = (
        ("json formatter", lambda: _install_json_formatter(ip)),
        ("data formatter", lambda: _install_data_formatter(ip)),
        ("chart formatter", lambda: _install_charts(ip)),
        ("image hooks", _install_image_hooks),
        ("output backpressure", _wait_for_the_daemon_instead_of_dropping_output),
    )
    for name, step in steps:
        try:
            step()
        except Exception:
            _log(f"{name} not installed:\n{traceback.format_exc()}")


if __name__ == "__e2b_kernel_startup__":
    main()

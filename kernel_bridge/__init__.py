"""E2B-compatible code interpreter: Jupyter kernels behind aiohttp routes (port 49999).

The daemon assembler only needs `CodeInterpreter` (see `server.py`). It is
imported on first access: the Python kernel imports `kernel_side` from this
package, and must not load the server (aiohttp, jupyter_client) with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_bridge.server import CodeInterpreter

__all__ = ["CodeInterpreter"]


def __getattr__(name: str) -> Any:
    if name == "CodeInterpreter":
        from kernel_bridge.server import CodeInterpreter

        return CodeInterpreter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

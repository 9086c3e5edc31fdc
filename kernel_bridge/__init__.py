"""E2B-compatible code interpreter: Jupyter kernels behind aiohttp routes (port 49999).

The daemon assembler only needs `CodeInterpreter` (see `server.py`).
"""

from .server import CodeInterpreter

__all__ = ["CodeInterpreter"]

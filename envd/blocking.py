"""The one way the daemon runs blocking work off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run blocking I/O or CPU work in a thread; on cancellation still wait for it.

    Otherwise the caller could close a descriptor the thread is about to use,
    and a recycled fd number would make it write into some other file.
    """
    future = asyncio.get_running_loop().run_in_executor(None, function, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise

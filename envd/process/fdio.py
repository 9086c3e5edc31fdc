"""Non-blocking reads and writes on raw pipe and PTY-master fds, driven by the event loop.

Why raw fds instead of asyncio's pipe transports: the daemon must be able to
close its read ends at a moment of its choosing (after a kill, grandchildren
may still hold the write ends open forever), a PTY master reports EOF as
`EIO`, and stdin writes must apply back-pressure per RPC. One small
implementation covers pipes and PTYs alike.
"""

from __future__ import annotations

import asyncio
import errno
import os


async def read_chunk(fd: int, max_bytes: int) -> bytes:
    """Whatever the fd has right now (up to `max_bytes`), waiting until it has something.

    Returns `b""` at EOF, including `EIO`, which is how a PTY master reports
    that the last slave fd was closed.
    """
    while True:
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            await _ready(fd, writing=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def write_all(fd: int, data: bytes) -> None:
    """Hand every byte to the kernel, waiting (without blocking the loop) while the fd is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, writing=True)
            continue
        view = view[written:]


async def _ready(fd: int, writing: bool) -> None:
    """Wait until `fd` is readable (or writable); always unregisters, also when cancelled."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if writing:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if writing:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def close_quietly(fd: int | None) -> None:
    """Close an fd we own; an already-closed fd is not an error at shutdown."""
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass

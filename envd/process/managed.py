"""One running child and everything the daemon does to it: read, write, signal, end (docs/envd-api.md §5.3 to §5.5).

A `ManagedProcess` is independent of any HTTP request: streams only hold
subscriptions to its `output`, so a client disconnect never affects it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from envd.process.fdio import close_quietly, read_chunk, write_all
from envd.process.output import Broadcaster, Subscription
from envd.process.spawn import OutputSource, Spawned, set_window_size
from envd.process.status import end_event
from envd.process.tree import signal_tree
from envd.proto.process_pb2 import ProcessConfig, ProcessEvent

log = logging.getLogger(__name__)

#: How long `kill(SIGKILL)` waits for the child to be reaped before answering,
#: so that `kill -0 <pid>` run right afterwards already fails
#: (docs/envd-api.md §5.10 step 5).
REAP_WAIT_SECONDS = 2.0


class InputError(Exception):
    """Input cannot be delivered; the message is what the client sees (code `internal`)."""


class CloseStdinError(Exception):
    """Stdin cannot be closed (code `unknown`)."""


class ManagedProcess:
    """A child in its own process group, its stdio, deadline and subscribers."""

    def __init__(
        self,
        spawned: Spawned,
        config: ProcessConfig,
        tag: str | None,
        on_end: Callable[[ManagedProcess, ProcessEvent], None],
    ) -> None:
        self._spawned = spawned
        self.proc = spawned.proc
        self.pid: int = spawned.proc.pid
        self.config = config
        self.tag = tag
        self.output = Broadcaster(f"process {self.pid}")
        self._on_end = on_end
        self._stdin_fd = spawned.stdin_fd
        self._pty_fd = spawned.pty_fd
        self._input_lock = asyncio.Lock()
        self._inflight_write: asyncio.Task[None] | None = None
        self._stop_waiting_for_eof = asyncio.Event()
        self._deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_pty(self) -> bool:
        return self._pty_fd is not None

    def start(self, timeout: float | None) -> Subscription:
        """Subscribe the starting stream first, then begin reading: no early output is lost."""
        first = self.output.subscribe()
        if timeout:
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._deadline_expired)
        self._task = asyncio.create_task(self._supervise(), name=f"process-{self.pid}")
        return first

    # --- lifecycle -----------------------------------------------------------

    async def _supervise(self) -> None:
        """Read until EOF (or until told to stop waiting), reap, emit the end event."""
        readers = asyncio.gather(*(self._forward(source) for source in self._spawned.sources))
        stop = asyncio.create_task(self._stop_waiting_for_eof.wait())
        try:
            waiters: list[asyncio.Future[Any]] = [readers, stop]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            returncode = await self.proc.wait()
            if not readers.done():
                readers.cancel()
            await asyncio.gather(readers, return_exceptions=True)
        finally:
            stop.cancel()
            if self._deadline is not None:
                self._deadline.cancel()
            await self._release_fds()
        event = end_event(returncode)
        self.output.finish(event)
        self._on_end(self, event)

    async def _forward(self, source: OutputSource) -> None:
        """Publish each read as its own `DataEvent`, exactly the bytes the read returned."""
        while True:
            try:
                chunk = await read_chunk(source.fd, source.max_bytes)
            except OSError as exc:
                log.warning("process %d: reading %s failed: %s", self.pid, source.kind, exc)
                return
            if not chunk:
                return
            data = ProcessEvent.DataEvent(**{source.kind: chunk})
            await self.output.publish(ProcessEvent(data=data), len(chunk))

    async def _release_fds(self) -> None:
        """Close every fd we own, after making sure no reader or writer still waits on one.

        A waiter still registered with the event loop when its fd is closed would
        confuse the selector once the number is reused, so a pending stdin/PTY
        write is cancelled and awaited first (its RPC then fails cleanly).
        """
        pending = self._inflight_write
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        for fd in self._spawned.owned_fds:
            close_quietly(fd)
        self._spawned.owned_fds = []
        self._stdin_fd = None
        self._pty_fd = None

    async def wait_closed(self) -> None:
        """Until the end event has been emitted."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # --- signals -------------------------------------------------------------

    def signal_group(self, signum: int) -> None:
        """Signal the process group and session; SIGKILL/SIGTERM also stop the wait for output EOF.

        Raises OSError when delivery fails for a reason other than the group
        being gone already.
        """
        if signum in (signal.SIGKILL, signal.SIGTERM):
            self._stop_waiting_for_eof.set()
        signal_tree(self.pid, signum)

    async def wait_reaped(self, seconds: float = REAP_WAIT_SECONDS) -> None:
        """Give a just-killed child a moment to be reaped, bounded, never raising."""
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), seconds)
        except asyncio.TimeoutError:
            log.warning("process %d: not reaped %.0fs after SIGKILL", self.pid, seconds)

    def _deadline_expired(self) -> None:
        """`Connect-Timeout-Ms` of `Start` bounds the process's life (docs/envd-api.md §5.4 step 9)."""
        log.info("process %d: deadline reached, killing its process group", self.pid)
        try:
            self.signal_group(signal.SIGKILL)
        except OSError as exc:
            log.warning("process %d: deadline kill failed: %s", self.pid, exc)

    # --- input ---------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        if self.is_pty:
            raise InputError(
                "error writing to stdin: tty assigned to process — input should be written to the pty, not the stdin"
            )
        async with self._input_lock:
            if self._stdin_fd is None:
                raise InputError("error writing to stdin: stdin not enabled or closed")
            await self._write(self._stdin_fd, data, "error writing to stdin")

    async def write_pty(self, data: bytes) -> None:
        if not self.is_pty:
            raise InputError(
                "error writing to tty: tty not assigned to process — input should be written to the stdin, not the tty"
            )
        async with self._input_lock:
            if self._pty_fd is None:
                raise InputError("error writing to tty: tty closed")
            await self._write(self._pty_fd, data, "error writing to tty")

    async def _write(self, fd: int, data: bytes, what: str) -> None:
        """Write under the input lock, in a task the end of the process can abort.

        A child that never reads leaves a write waiting on a full pipe; when the
        process ends, its fds are closed, and no waiter may outlive its fd.
        """
        task = asyncio.create_task(write_all(fd, data))
        self._inflight_write = task
        try:
            await asyncio.shield(task)
        except OSError as exc:
            raise InputError(f"{what}: {exc.strerror or exc}") from None
        except asyncio.CancelledError:
            if not task.cancelled():
                task.cancel()  # the RPC itself was cancelled: abandon the write,
                await asyncio.gather(task, return_exceptions=True)  # and unregister its waiter
                raise
            raise InputError(f"{what}: process ended") from None
        finally:
            self._inflight_write = None

    async def close_stdin(self) -> None:
        """EOF for the child; idempotent. Waits for in-flight writes so they stay in order."""
        if self.is_pty:
            raise CloseStdinError(
                "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead"
            )
        async with self._input_lock:
            fd, self._stdin_fd = self._stdin_fd, None
            if fd is None:
                return
            self._spawned.owned_fds.remove(fd)
            try:
                os.close(fd)
            except OSError as exc:
                raise CloseStdinError(f"error closing stdin: {exc.strerror or exc}") from None

    def resize(self, cols: int, rows: int) -> None:
        if self._pty_fd is None:
            raise InputError("error resizing tty: tty not assigned to process")
        try:
            set_window_size(self._pty_fd, cols, rows)
        except OSError as exc:
            raise InputError(f"error resizing tty: {exc.strerror or exc}") from None

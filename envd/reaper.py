"""Child subreaper: orphans of sandboxed programs are re-parented to us; reap them.

Children we started ourselves are reaped by their owners (asyncio's child
watcher, jupyter_client's Popen). To never steal an exit status from them,
a zombie is only reaped after it has stayed a zombie for a grace period.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time

import psutil

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 2.0
SCAN_INTERVAL = 1.0


def become_subreaper() -> bool:
    """Ask the kernel to re-parent orphaned descendants to this process."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Reaper:
    """Periodically reaps zombies nobody else has claimed."""

    def __init__(self) -> None:
        self._first_seen: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SCAN_INTERVAL)
            try:
                self.reap_unclaimed()
            except Exception:
                log.exception("reaper scan failed")

    def reap_unclaimed(self) -> None:
        now = time.monotonic()
        zombies = set()
        for child in psutil.Process().children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    zombies.add(child.pid)
            except psutil.NoSuchProcess:
                continue
        self._first_seen = {pid: self._first_seen.get(pid, now) for pid in zombies}
        for pid, since in list(self._first_seen.items()):
            if now - since >= GRACE_SECONDS:
                _reap(pid)
                del self._first_seen[pid]


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass

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
        zombies = {pid for pid in _children() if _is_zombie(pid)}
        self._first_seen = {pid: self._first_seen.get(pid, now) for pid in zombies}
        for pid, since in list(self._first_seen.items()):
            if now - since >= GRACE_SECONDS:
                _reap(pid)
                del self._first_seen[pid]


def _children() -> list[int]:
    """Our direct children, from /proc/self/task/*/children: no scan of every process."""
    pids: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as listing:
                pids.extend(int(pid) for pid in listing.read().split())
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN
        return [child.pid for child in psutil.Process().children()]
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass

"""The per-context kernel watchdog: notices a dead kernel and has it replaced.

Like jupyter_client's restarter: the kernel process is polled once a
second; a death (crash, `os._exit`, OOM kill) replaces the kernel, unless it
keeps dying right after each start, then the context gives up on it
(docs/code-interpreter-api.md §4.11). The watchdog sees its context only
through `Watched`, so this module does not import contexts.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from kernel_bridge.kernel import DEAD, Kernel

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL = 1.0
RESTART_WINDOW = 10.0  # a kernel dying this soon after starting counts as a failed restart
MAX_FAST_RESTARTS = 5


class Watched(Protocol):
    """What the watchdog needs from its context (`contexts.Context` provides it)."""

    @property
    def id(self) -> str: ...

    @property
    def deleted(self) -> bool: ...

    @property
    def kernel(self) -> Kernel | None: ...

    @property
    def replacing(self) -> bool:
        """A kernel replacement is under way: the current kernel is about to change."""
        ...

    async def replace_kernel(self, old: Kernel | None, reason: str, now: bool | None = None) -> None: ...

    def abandon(self, kernel: Kernel) -> None:
        """Give up on a kernel that keeps dying: the context is dead until its next restart."""
        ...


class Watchdog:
    """Polls one context's kernel from its first attach until `stop`."""

    def __init__(self, context: Watched) -> None:
        self._context = context
        self._task: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._fast_restarts = 0

    def kernel_attached(self) -> None:
        """A fresh kernel became current: its lifetime counts from now; polling starts at the first one."""
        self._started_at = time.monotonic()
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name=f"watchdog:{self._context.id}")

    def stop(self) -> None:
        """For good: a later attach does not start polling again."""
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        context = self._context
        while not context.deleted:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            kernel = context.kernel
            if kernel is None or kernel.closed or context.replacing:
                continue
            if await kernel.is_alive() or kernel is not context.kernel or kernel.closed:
                continue
            await self._on_death(kernel)

    async def _on_death(self, kernel: Kernel) -> None:
        context = self._context
        lived = time.monotonic() - self._started_at
        self._fast_restarts = self._fast_restarts + 1 if lived < RESTART_WINDOW else 1
        log.warning("context %s: kernel died after %.1fs, restarting", context.id, lived)
        if self._fast_restarts > MAX_FAST_RESTARTS:
            log.error("context %s: kernel keeps dying, marking dead", context.id)
            context.abandon(kernel)
            return
        try:
            await context.replace_kernel(kernel, DEAD)
        except Exception:
            pass  # logged in replace_kernel; the context is marked dead

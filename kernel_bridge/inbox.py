"""A single-consumer queue for the per-execution hot path.

Every run_code passes its kernel messages and its output lines through one
of these. `asyncio.Queue` read through `asyncio.wait_for` costs a coroutine
per get and, with a timeout, a task and a timer per wait; here a wait is one
future, plus a timer handle only when it has a deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Waitable:
    """One consumer waiting until more than some number of items are there.

    Subclasses define `__len__` and call `_wake()` whenever items arrive.
    """

    _waiter: asyncio.Future | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None = None, more_than: int = 0) -> bool:
        """True once more than `more_than` items wait; False if `timeout` seconds pass first.

        `more_than` may be at most the number waiting now (one more put suffices).
        """
        if len(self) > more_than:
            return True
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        return len(self) > more_than


class Inbox(Waitable, Generic[T]):
    """Items in arrival order, read by one consumer at a time."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def get(self) -> T:
        """The oldest item; only after `wait` returned True."""
        return self._items.popleft()

    def take(self, limit: int) -> list[T]:
        """Up to `limit` waiting items, oldest first."""
        items = self._items
        return [items.popleft() for _ in range(min(limit, len(items)))]


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)

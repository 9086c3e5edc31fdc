"""Where watch events wait for their client: a stream's queue or a polling buffer.

`WatchDir` streams events while its request lives; `CreateWatcher` watchers
outlive their request and are polled with `GetWatcherEvents` (docs/envd-api.md §4.9, §4.10).
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import AsyncIterator

from envd.filesystem.errors import WatcherNotFound, WatchFailed
from envd.filesystem.watch import DirWatcher
from envd.proto.filesystem_pb2 import FilesystemEvent

#: Events a client may leave unread before its watch fails (upstream has no cap).
MAX_BUFFERED_EVENTS = 100_000
_ID_ALPHABET = string.ascii_lowercase + string.digits


class _Closed:
    """Queue sentinel: the daemon is stopping; end the stream cleanly."""


CLOSED = _Closed()


class EventStream:
    """A `WatchDir` stream's sink: events queue up until the generator sends them."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[FilesystemEvent | WatchFailed | _Closed] = asyncio.Queue()
        self._failed = False

    def event(self, event: FilesystemEvent) -> None:
        if self._failed:
            return
        if self._queue.qsize() >= MAX_BUFFERED_EVENTS:
            self.error("watcher error: too many unread events")
            return
        self._queue.put_nowait(event)

    def error(self, message: str) -> None:
        if not self._failed:
            self._failed = True
            self._queue.put_nowait(WatchFailed(message))

    def close(self) -> None:
        self._queue.put_nowait(CLOSED)

    async def events(self) -> AsyncIterator[FilesystemEvent]:
        """Events in arrival order; raises the watcher's error; ends on `close`."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                return
            if isinstance(item, WatchFailed):
                raise item
            yield item


class PolledWatcher:
    """A `CreateWatcher` watcher: buffers events until `take` hands them out."""

    def __init__(self) -> None:
        self.id = "w" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
        self.watcher: DirWatcher | None = None
        self._events: list[FilesystemEvent] = []
        self._error: str | None = None

    def event(self, event: FilesystemEvent) -> None:
        if self._error is not None:
            return
        if len(self._events) >= MAX_BUFFERED_EVENTS:
            self.error("watcher error: too many unread events")
            return
        self._events.append(event)

    def error(self, message: str) -> None:
        if self._error is None:
            self._error = message
            self._events.clear()

    def take(self) -> list[FilesystemEvent]:
        """All events so far, including those still unread in the kernel queue."""
        if self.watcher is not None:
            self.watcher.drain()
        if self._error is not None:
            raise WatchFailed(self._error)
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()


class WatcherRegistry:
    """Polling watchers by id; they live until `RemoveWatcher` or daemon stop."""

    def __init__(self) -> None:
        self._watchers: dict[str, PolledWatcher] = {}

    def add(self, watcher: PolledWatcher) -> None:
        self._watchers[watcher.id] = watcher

    def get(self, watcher_id: str) -> PolledWatcher:
        try:
            return self._watchers[watcher_id]
        except KeyError:
            raise WatcherNotFound(f"watcher with id {watcher_id} not found") from None

    def remove(self, watcher_id: str) -> None:
        self.get(watcher_id).close()
        del self._watchers[watcher_id]

    def close_all(self) -> None:
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers.clear()

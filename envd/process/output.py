"""Fan-out of one process's events to any number of streams (docs/envd-api.md §5.5, §5.7).

Every stream (`Start`, each `Connect`) holds a `Subscription` with a bounded
buffer. Publishing is the only place where the process's output readers can
wait, and the rules for that wait are what keep the daemon honest:

* A subscriber that keeps consuming, even slowly, gets every chunk: the reader
  waits for room, the pipe fills up and the process is slowed to the pace of
  its reader (upstream's back-pressure). Nothing is lost for a client that
  merely cannot keep up with `cat big.file`.
* The only subscriber is never dropped, however long it pauses: the process
  waits for it (a sync SDK `commands.run(..., background=True)` whose
  `wait()` comes much later still gets all of stdout). The same holds when
  every subscriber is stalled: nobody is reading, so nobody is held up.
* When another subscriber keeps reading, a subscriber that makes no progress
  at all for `stall_seconds` is detached so it cannot stall the process and
  the others: it stops receiving output, and its stream ends - after the
  events it had already queued - with a Connect `data_loss` error instead of
  the end event, so a client never mistakes a truncated output for a
  complete one. Detaching is logged.
* With nobody subscribed, chunks are discarded (no replay buffer).

The end event is never dropped and never waits: it is appended past the
bound, so every attached subscriber sees it after all the data.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from envd.process.errors import OutputLost
from envd.proto.process_pb2 import ProcessEvent

log = logging.getLogger(__name__)

#: Bytes of output one subscriber may have queued before the reader waits.
DEFAULT_CAPACITY = 1024 * 1024
#: How long a subscriber may make no progress, while another one keeps reading,
#: before it is detached (its stream then ends with `data_loss`).
DEFAULT_STALL_SECONDS = 5.0


class Subscription:
    """One stream's view of a process: its data events in order, then the end event."""

    def __init__(self, owner: Broadcaster, capacity: int, label: str) -> None:
        self._owner = owner
        self._capacity = capacity
        self._label = label
        self._events: collections.deque[tuple[ProcessEvent, int]] = collections.deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False
        self._delivered_end = False
        self._closed = False
        self.last_progress = time.monotonic()
        #: Set when this subscriber was detached for stalling; raised once its queue is empty.
        self.failure: OutputLost | None = None

    # --- consumer side -------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ProcessEvent:
        """The next data event, then the end event, then `StopAsyncIteration`.

        A plain iterator rather than an async generator, so that a stream
        closed mid-iteration leaves nothing suspended behind it.
        """
        if self._delivered_end:
            raise StopAsyncIteration
        while not self._events:
            if self.failure is not None:
                self._delivered_end = True
                raise self.failure
            self._readable.clear()
            await self._readable.wait()
        event, size = self._events.popleft()
        self._buffered -= size
        self.last_progress = time.monotonic()
        if self._buffered < self._capacity:
            self._room.set()
        if event.HasField("end"):
            self._delivered_end = True
        return event

    def close(self) -> None:
        """Unsubscribe (stream ended, client gone); pending output is released."""
        if self._closed:
            return
        self._closed = True
        self._owner._remove(self)
        self._events.clear()
        self._buffered = 0
        self._room.set()

    # --- producer side (used by Broadcaster) ---------------------------------

    def _append(self, event: ProcessEvent, size: int) -> None:
        if not self._events:
            # Idle time only counts while there is something to consume: a
            # subscriber that had nothing to read for an hour is not stuck.
            self.last_progress = time.monotonic()
        self._events.append((event, size))
        self._buffered += size
        if self._buffered >= self._capacity:
            self._room.clear()
        self._readable.set()

    def _has_room(self, size: int) -> bool:
        # An empty buffer always takes a chunk, however large, so progress is possible.
        return self._buffered == 0 or self._buffered + size <= self._capacity

    def _stalled(self, stall_seconds: float, now: float) -> bool:
        """Data is waiting and the subscriber consumed nothing for the grace period."""
        return bool(self._events) and now - self.last_progress >= stall_seconds

    async def _offer(self, event: ProcessEvent, size: int, stall_seconds: float) -> None:
        """Queue the chunk, waiting for room; detach if stalled while another keeps reading."""
        while not self._closed and self.failure is None and not self._has_room(size):
            now = time.monotonic()
            idle = now - self.last_progress
            if idle >= stall_seconds and self._owner._someone_else_reading(self, stall_seconds, now):
                self._detach(idle)
                return
            self._room.clear()
            # Re-check at least every grace period: a reader may subscribe meanwhile.
            timeout = stall_seconds - idle if idle < stall_seconds else stall_seconds
            try:
                await asyncio.wait_for(self._room.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if not self._closed and self.failure is None:
            self._append(event, size)

    def _detach(self, idle: float) -> None:
        log.warning(
            "%s: subscriber made no progress for %.0fs while another kept reading; "
            "detaching it, its stream ends with data_loss",
            self._label,
            idle,
        )
        self.failure = OutputLost(
            "process output dropped: this stream stopped reading for more than "
            f"{idle:.0f}s while another stream of the same process kept reading, "
            "so it was detached to avoid stalling the process; the output it received is incomplete",
        )
        self._owner._remove(self)
        self._room.set()
        self._readable.set()

    def _end(self, event: ProcessEvent) -> None:
        if not self._ended and not self._closed and self.failure is None:
            self._ended = True
            self._append(event, 0)


class Broadcaster:
    """Delivers one process's output and end event to whoever is subscribed right now."""

    def __init__(
        self,
        label: str,
        capacity: int = DEFAULT_CAPACITY,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ) -> None:
        self._label = label
        self._capacity = capacity
        self._stall_seconds = stall_seconds
        self._subscribers: list[Subscription] = []
        self._end: ProcessEvent | None = None

    def subscribe(self) -> Subscription:
        """A new subscription; after the end it immediately yields just the end event."""
        sub = Subscription(self, self._capacity, self._label)
        if self._end is not None:
            sub._end(self._end)
        else:
            self._subscribers.append(sub)
        return sub

    async def publish(self, event: ProcessEvent, size: int) -> None:
        """Offer a data event to every current subscriber (see the module doc for waiting)."""
        for sub in list(self._subscribers):
            await sub._offer(event, size, self._stall_seconds)

    def finish(self, event: ProcessEvent) -> None:
        """Deliver the end event to everyone and refuse further subscribers."""
        self._end = event
        subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub._end(event)

    def _someone_else_reading(self, sub: Subscription, stall_seconds: float, now: float) -> bool:
        """Whether another attached subscriber is not itself stalled."""
        return any(other is not sub and not other._stalled(stall_seconds, now) for other in self._subscribers)

    def _remove(self, sub: Subscription) -> None:
        try:
            self._subscribers.remove(sub)
        except ValueError:
            pass

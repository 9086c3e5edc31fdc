"""Kernel inotify instances, shared by many directory watchers.

The kernel allows few instances per user (`max_user_instances`, 128 by
default) and they are shared with everything else running in the sandbox, so
one instance per watcher runs out at the 129th watch. Instead each instance
serves up to `WATCHERS_PER_INSTANCE` watchers. A directory watched by several
of them has one watch descriptor (the kernel gives the same one for the same
inode), reference counted here, and each of its events goes to every watcher
holding it.

Why raw inotify instead of watchdog or watchfiles: E2B's event model needs
every kernel event with its mask and cookie (a new file is CREATE, CHMOD,
WRITE; moves pair up by cookie); higher-level libraries coalesce, debounce or
re-map events and run threads of their own. This is a thin ctypes binding.

Watch descriptors may be added from a walking thread while the event loop
reads: `lock` makes "add the watch and subscribe to it" one step, so no event
for a new descriptor is looked up before its subscriber is known.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
import threading
from enum import IntFlag
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)

#: Watchers one kernel instance serves; 1,000 watchers need 16 instances.
WATCHERS_PER_INSTANCE = 64
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_BYTES = 64 * 1024


class Mask(IntFlag):
    """The inotify bits envd uses (<sys/inotify.h>)."""

    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    ISDIR = 0x40000000


class RawEvent(NamedTuple):
    """One kernel event; `name` decoded like `os.fsdecode` (undecodable bytes as surrogates)."""

    wd: int
    mask: Mask
    cookie: int
    name: str


class Subscriber(Protocol):
    """A watcher: receives the events of the descriptors it holds."""

    def deliver(self, event: RawEvent) -> None: ...

    def fail(self, message: str) -> None: ...


_libc = ctypes.CDLL(None, use_errno=True)
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def _checked(result: int, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return result


class SharedInotify:
    """One kernel instance; its watch descriptors are reference counted by subscriber."""

    def __init__(self, pool: InotifyPool) -> None:
        self.lock = threading.Lock()
        self.fd = _checked(_libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        self._pool = pool
        self._subscribers: dict[int, set[Subscriber]] = {}  # wd → who holds it
        self._held: dict[Subscriber, set[int]] = {}  # subscriber → its wds
        self._draining = False
        self.broken = False
        asyncio.get_running_loop().add_reader(self.fd, self.drain)

    @property
    def members(self) -> int:
        return len(self._held)

    def join(self, subscriber: Subscriber) -> None:
        with self.lock:
            self._held[subscriber] = set()

    def add(self, subscriber: Subscriber, path: str, mask: int) -> int:
        """Watch `path` for `subscriber`; ValueError once it has left (a walk outlived it)."""
        with self.lock:
            wds = self._held.get(subscriber)
            if wds is None:
                raise ValueError("watcher closed")
            wd = _checked(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask), path)
            wds.add(wd)
            self._subscribers.setdefault(wd, set()).add(subscriber)
            return wd

    def remove(self, subscriber: Subscriber, wd: int) -> None:
        with self.lock:
            wds = self._held.get(subscriber)
            if wds is not None:
                wds.discard(wd)
            self._release(subscriber, wd)

    def leave(self, subscriber: Subscriber) -> None:
        """Drop every descriptor `subscriber` holds; the last one out closes the instance."""
        with self.lock:
            for wd in self._held.pop(subscriber, set()):
                self._release(subscriber, wd)
        if not self._held:
            self._pool.retire(self)

    def _release(self, subscriber: Subscriber, wd: int) -> None:
        holders = self._subscribers.get(wd)
        if holders is None:
            return
        holders.discard(subscriber)
        if not holders:
            del self._subscribers[wd]
            _libc.inotify_rm_watch(self.fd, wd)  # EINVAL when the kernel dropped it: fine

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.fd)
        except RuntimeError:  # no loop any more: nothing to detach
            pass
        os.close(self.fd)

    def drain(self) -> None:
        """Hand every queued event to its holders, without blocking."""
        if self._draining:
            return
        self._draining = True
        try:
            while not self.broken:
                try:
                    data = os.read(self.fd, _READ_BYTES)
                except BlockingIOError:
                    return
                except OSError as exc:
                    self._fail_all(f"watcher error: {exc}")
                    return
                self._dispatch(data)
        finally:
            self._draining = False

    def _dispatch(self, data: bytes) -> None:
        for event in _parse(data):
            if event.mask & Mask.Q_OVERFLOW:
                self._fail_all("watcher error: fsnotify: queue or buffer overflow")
                return
            with self.lock:
                holders = list(self._subscribers.get(event.wd, ()))
                if event.mask & Mask.IGNORED:  # the kernel dropped it (directory gone)
                    self._subscribers.pop(event.wd, None)
                    for holder in holders:
                        self._held.get(holder, set()).discard(event.wd)
            for holder in holders:
                try:
                    holder.deliver(event)
                except Exception:  # one watcher's trouble must not starve the others
                    log.exception("a watcher could not handle an event; skipped")

    def _fail_all(self, message: str) -> None:
        """Events were lost for everyone on this instance: each watcher ends with `message`."""
        self.broken = True
        for holder in list(self._held):
            holder.fail(message)


class InotifyPool:
    """Hands out shared instances, opening a new one when all are full."""

    def __init__(self, watchers_per_instance: int = WATCHERS_PER_INSTANCE) -> None:
        self._capacity = watchers_per_instance
        self._instances: list[SharedInotify] = []

    def join(self, subscriber: Subscriber) -> SharedInotify:
        for instance in self._instances:
            if not instance.broken and instance.members < self._capacity:
                break
        else:
            instance = SharedInotify(self)
            self._instances.append(instance)
        instance.join(subscriber)
        return instance

    def retire(self, instance: SharedInotify) -> None:
        if instance in self._instances:
            self._instances.remove(instance)
            instance.close()


def _parse(data: bytes) -> list[RawEvent]:
    events = []
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        wd, mask, cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        offset += _EVENT_HEADER.size
        name = data[offset : offset + length].rstrip(b"\0")
        offset += length
        events.append(RawEvent(wd, Mask(mask), cookie, os.fsdecode(name)))
    return events

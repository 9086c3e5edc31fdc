"""Directory watching with E2B's event model on raw inotify (spec envd.md 3.5).

Why raw inotify through `asyncinotify`: the SDK tests assert exact event
sequences (a new file is CREATE, CHMOD, WRITE; IN_ATTRIB is CHMOD; moves are
RENAME + CREATE via cookies), which needs every kernel event with its mask and
cookie. Higher-level watchers (watchdog, watchfiles) coalesce, debounce or
re-map events and run threads. asyncinotify is a thin ctypes binding with no
thread and lets us read the queue synchronously, which `GetWatcherEvents`
needs to include events caused by requests that already completed.

Every kernel event is translated inside one synchronous step (`drain`), run
either by the event loop's reader callback or on demand; so new
subdirectories are watched before any later request is served. One event that
cannot be translated is logged and skipped; it never ends the watch.

The initial walk of a recursive watch runs in a thread (a big tree would
otherwise hold up every other request); the reader is attached only after it.
Watches are kept by descriptor, so forgetting a moved tree is linear in its size.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import posixpath
from collections import OrderedDict
from typing import Protocol

from asyncinotify import Event, Inotify, Mask, Watch

from envd.filesystem.entry import build_entry, printable
from envd.proto.filesystem_pb2 import EventType, FilesystemEvent

log = logging.getLogger(__name__)

WATCH_MASK = (
    Mask.CREATE | Mask.MODIFY | Mask.DELETE | Mask.DELETE_SELF
    | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.MOVE_SELF | Mask.ATTRIB
)
#: Subdirectories found by a walk: never follow a symlink swapped in meanwhile.
SUBDIR_FLAGS = Mask.ONLYDIR | Mask.DONT_FOLLOW

#: statfs f_type of filesystems whose events are unreliable (spec 3.4 WatchDir).
NETWORK_FILESYSTEMS = {
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0x517B: "smb",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
}

#: Kernel bits → E2B event types, in the order one event's types are emitted.
_TRANSLATION: tuple[tuple[Mask, int], ...] = (
    (Mask.CREATE | Mask.MOVED_TO, EventType.EVENT_TYPE_CREATE),
    (Mask.MOVED_FROM | Mask.MOVE_SELF, EventType.EVENT_TYPE_RENAME),
    (Mask.ATTRIB, EventType.EVENT_TYPE_CHMOD),
    (Mask.MODIFY, EventType.EVENT_TYPE_WRITE),
    (Mask.DELETE | Mask.DELETE_SELF, EventType.EVENT_TYPE_REMOVE),
)
_WITH_ENTRY = {EventType.EVENT_TYPE_CREATE, EventType.EVENT_TYPE_WRITE, EventType.EVENT_TYPE_CHMOD}

#: Directory moves remembered until their MOVED_TO half arrives.
_MAX_PENDING_MOVES = 1024
_READ_BATCH_EVENTS = 64

OVERFLOW_MESSAGE = "fsnotify: queue or buffer overflow"


class EventSink(Protocol):
    """Where a watcher delivers translated events (a stream or a polling buffer)."""

    def event(self, event: FilesystemEvent) -> None: ...

    def error(self, message: str) -> None: ...


def translate(mask: Mask) -> list[int]:
    """E2B event types for one kernel event, in the spec's order."""
    return [kind for bits, kind in _TRANSLATION if mask & bits]


def filesystem_type(path: str) -> int:
    """`statfs(path).f_type`; Python has no statfs, and statvfs lacks the type."""
    buffer = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buffer)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buffer.f_type & 0xFFFFFFFF


class _Statfs(ctypes.Structure):
    # f_type comes first on every Linux ABI; the rest is padding large enough for all.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


_libc = ctypes.CDLL(None, use_errno=True)


class DirWatcher:
    """One inotify instance watching a directory, optionally its whole tree."""

    def __init__(self, root: str, recursive: bool, include_entry: bool, sink: EventSink) -> None:
        self.root = posixpath.normpath(root)
        self.recursive = recursive
        self.include_entry = include_entry
        self._sink = sink
        self._inotify: Inotify | None = None
        self._dirs: dict[int, str] = {}  # watch descriptor → absolute directory path
        self._watches: dict[int, Watch] = {}  # watch descriptor → its asyncinotify Watch
        self._root_wd = -1
        self._moves: OrderedDict[int, str] = OrderedDict()  # cookie → old dir path
        self._reading = False

    async def start(self) -> None:
        """Watch the root (and its subdirectories); raises OSError if the root fails."""
        inotify = Inotify(cache_size=_READ_BATCH_EVENTS)
        inotify.sync_timeout = 0  # sync_get: poll, never block
        self._inotify = inotify
        try:
            watch = inotify.add_watch(self.root, WATCH_MASK)
            self._root_wd = watch.wd
            self._dirs[watch.wd] = self.root
            self._watches[watch.wd] = watch
            if self.recursive:
                # Nothing else touches this watcher until the reader is attached.
                walk = asyncio.get_running_loop().run_in_executor(
                    None, self._watch_tree, self.root, False, True
                )
                try:
                    await asyncio.shield(walk)
                except asyncio.CancelledError:
                    await asyncio.wait([walk])  # never close the fd under the thread
                    raise
            if self._inotify is None:
                raise OSError(f"watcher of {self.root} closed while starting")
            asyncio.get_running_loop().add_reader(inotify.fd, self.drain)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop reading and release the inotify instance (idempotent)."""
        inotify, self._inotify = self._inotify, None
        if inotify is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(inotify.fd)
        except RuntimeError:
            pass
        inotify.close()
        self._dirs.clear()
        self._watches.clear()

    def drain(self) -> None:
        """Translate everything the kernel has queued, without blocking."""
        if self._reading:
            return
        self._reading = True
        try:
            while self._inotify is not None:
                try:
                    event = self._inotify.sync_get()
                except OSError as exc:
                    self._fail(str(exc))
                    return
                if event is None:
                    return
                try:
                    self._handle(event)
                except Exception:  # one odd event must not end the watch
                    log.exception("watch of %s: skipped an event it could not handle", self.root)
        finally:
            self._reading = False

    def _fail(self, message: str) -> None:
        self.close()
        self._sink.error(f"watcher error: {message}")

    def _handle(self, event: Event) -> None:
        mask = event.mask
        if mask & Mask.Q_OVERFLOW:
            self._fail(OVERFLOW_MESSAGE)
            return
        watch = event.watch
        if watch is None:
            return
        if mask & Mask.IGNORED:
            self._dirs.pop(watch.wd, None)
            self._watches.pop(watch.wd, None)
            return
        directory = self._dirs.get(watch.wd)
        if directory is None:
            return
        # Names are kept as the kernel gave them (undecodable bytes as surrogates)
        # so the path still works with os calls; `_emit` makes the name printable.
        path = posixpath.join(directory, str(event.name)) if event.name else directory
        if mask & (Mask.DELETE_SELF | Mask.MOVE_SELF) and not self._handle_self(watch.wd, path, mask):
            return
        name = self._relative(path)
        for kind in translate(mask):
            self._emit(name, kind, path)
        if self.recursive and mask & Mask.ISDIR:
            self._follow_directory(path, mask, event.cookie)

    def _handle_self(self, wd: int, path: str, mask: Mask) -> bool:
        """Events about a watched directory itself: report only those of the root.

        A subdirectory's removal or move is already reported by its parent. A
        subdirectory moved out of the tree is forgotten; a moved root goes quiet.
        """
        if wd != self._root_wd:
            if mask & Mask.MOVE_SELF and path in self._moves.values():
                self._forget_tree(path)
            return False
        if mask & Mask.MOVE_SELF:
            self._forget_tree(self.root)
        return True

    def _follow_directory(self, path: str, mask: Mask, cookie: int) -> None:
        """Keep the watch set equal to the tree as directories come, go and move."""
        if mask & Mask.MOVED_FROM:
            self._moves[cookie] = path
            while len(self._moves) > _MAX_PENDING_MOVES:
                self._moves.popitem(last=False)
            return
        if not mask & (Mask.CREATE | Mask.MOVED_TO):
            return
        old = self._moves.pop(cookie, None) if mask & Mask.MOVED_TO else None
        if old is not None and self._rewrite(old, path):
            return
        if self._add_watch(path):
            self._watch_tree(path, synthetic=True, strict=False)

    def _watch_tree(self, directory: str, synthetic: bool, strict: bool) -> None:
        """Watch every subdirectory below `directory`, pre-order by name.

        With `synthetic`, report a CREATE for everything found: a directory
        filled before its watch existed (e.g. `mkdir -p a/b/c`) stays visible.
        Unreadable subdirectories are skipped; `strict` makes the top one fatal.
        """
        try:
            with os.scandir(directory) as listing:
                children = sorted(
                    ((e.name, e.is_dir(follow_symlinks=False)) for e in listing),
                    key=lambda item: os.fsencode(item[0]),
                )
        except OSError:
            if strict:
                raise
            return
        for name, is_dir in children:
            child = posixpath.join(directory, name)
            if synthetic:
                self._emit(self._relative(child), EventType.EVENT_TYPE_CREATE, child)
            if is_dir and self._add_watch(child):
                self._watch_tree(child, synthetic, strict=False)

    def _add_watch(self, path: str) -> bool:
        if self._inotify is None:
            return False
        try:
            watch = self._inotify.add_watch(path, WATCH_MASK | SUBDIR_FLAGS)
        except (OSError, ValueError):  # ValueError: closed meanwhile
            return False
        self._dirs[watch.wd] = path
        self._watches[watch.wd] = watch
        return True

    def _rewrite(self, old: str, new: str) -> bool:
        """A directory moved inside the tree: its watches stay, their paths change."""
        found = False
        for wd, path in self._dirs.items():
            if path == old:
                self._dirs[wd] = new
                found = True
            elif path.startswith(old + "/"):
                self._dirs[wd] = new + path[len(old):]
        return found

    def _forget_tree(self, top: str) -> None:
        """Drop the watches of `top` and below: one pass, each watch found by descriptor."""
        assert self._inotify is not None
        prefix = top.rstrip("/") + "/"
        doomed = [wd for wd, path in self._dirs.items() if path == top or path.startswith(prefix)]
        for wd in doomed:
            del self._dirs[wd]
            watch = self._watches.pop(wd, None)
            if watch is None:
                continue
            try:
                self._inotify.rm_watch(watch)
            except OSError:
                pass

    def _relative(self, path: str) -> str:
        """Event name: the path relative to the watched root, `.` for the root."""
        if path == self.root:
            return "."
        return path[len(self.root.rstrip("/")) + 1:]

    def _emit(self, name: str, kind: int, path: str) -> None:
        event = FilesystemEvent(name=printable(name), type=kind)
        if self.include_entry and kind in _WITH_ENTRY:
            try:
                event.entry.CopyFrom(build_entry(path))
            except OSError:
                pass  # vanished meanwhile: normal, the event goes without entry
        self._sink.event(event)

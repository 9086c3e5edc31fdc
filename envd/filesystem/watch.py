"""Directory watching with E2B's event model on shared inotify instances (docs/envd-api.md §4.11).

Every kernel event is translated as it arrives (`deliver`), so new
subdirectories are watched before any later request is served. One event that
cannot be translated is logged and skipped; it never ends the watch.

Walking a tree (the initial walk of a recursive watch, or a big tree created
or moved into it) runs in a thread: a big tree would otherwise hold up every
other request. Meanwhile the watcher holds its kernel events back and replays
them once the walk is done, so clients see the same order as if the walk had
been instant. A small tree (up to `INLINE_WALK_DIRECTORIES`) is walked at once,
which keeps `mkdir -p a/b/c; touch a/b/c/f` exact without a thread hop.
Watches are kept by descriptor, so forgetting a moved tree is linear in its size.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import posixpath
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from envd.blocking import run_blocking
from envd.filesystem.entry import build_entry, printable
from envd.filesystem.inotify import InotifyPool, Mask, RawEvent, SharedInotify
from envd.proto.filesystem_pb2 import EventType, FilesystemEvent

log = logging.getLogger(__name__)

WATCH_MASK = (
    Mask.CREATE
    | Mask.MODIFY
    | Mask.DELETE
    | Mask.DELETE_SELF
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.MOVE_SELF
    | Mask.ATTRIB
)
#: Subdirectories found by a walk: never follow a symlink swapped in meanwhile.
SUBDIR_FLAGS = Mask.ONLYDIR | Mask.DONT_FOLLOW
#: Directories a walk lists on the event loop before it moves to a thread.
INLINE_WALK_DIRECTORIES = 64

#: statfs f_type of filesystems whose events are unreliable (docs/envd-api.md §4.9 step 3).
NETWORK_FILESYSTEMS = {
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0x517B: "smb",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
}

#: Kernel bits → E2B event types, in the order one event's types are emitted.
_TRANSLATION: tuple[tuple[Mask, EventType], ...] = (
    (Mask.CREATE | Mask.MOVED_TO, EventType.EVENT_TYPE_CREATE),
    (Mask.MOVED_FROM | Mask.MOVE_SELF, EventType.EVENT_TYPE_RENAME),
    (Mask.ATTRIB, EventType.EVENT_TYPE_CHMOD),
    (Mask.MODIFY, EventType.EVENT_TYPE_WRITE),
    (Mask.DELETE | Mask.DELETE_SELF, EventType.EVENT_TYPE_REMOVE),
)
_WITH_ENTRY = {EventType.EVENT_TYPE_CREATE, EventType.EVENT_TYPE_WRITE, EventType.EVENT_TYPE_CHMOD}

#: Directory moves remembered until their MOVED_TO half arrives.
_MAX_PENDING_MOVES = 1024

#: A walk's work list: entries still to visit (path, is a directory), last first.
_Stack = list[tuple[str, bool]]


class EventSink(Protocol):
    """Where a watcher delivers translated events (a stream or a polling buffer)."""

    def event(self, event: FilesystemEvent) -> None: ...

    def error(self, message: str) -> None: ...


def translate(mask: Mask) -> list[EventType]:
    """E2B event types for one kernel event, in the order of docs/envd-api.md §4.11."""
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
    """A directory watched (optionally with its whole tree) for one client."""

    def __init__(self, root: str, recursive: bool, include_entry: bool, sink: EventSink, pool: InotifyPool) -> None:
        self.root = posixpath.normpath(root)
        self.recursive = recursive
        self.include_entry = include_entry
        self._sink = sink
        self._pool = pool
        self._inotify: SharedInotify | None = None
        self._dirs: dict[int, str] = {}  # watch descriptor → absolute directory path
        self._root_wd = -1
        self._moves: OrderedDict[int, str] = OrderedDict()  # cookie → old dir path
        self._held: list[RawEvent] | None = None  # events waiting for a walk to finish
        self._walk: asyncio.Task[_Stack] | None = None  # a big walk finishing in a thread

    async def start(self) -> None:
        """Watch the root (and its subdirectories); raises OSError if the root fails."""
        self._inotify = self._pool.join(self)
        self._held = []
        try:
            self._root_wd = self._inotify.add(self, self.root, WATCH_MASK)
            self._dirs[self._root_wd] = self.root
            if self.recursive:
                await run_blocking(self._walk_root)
            if self._inotify is None:
                raise OSError(f"watcher of {self.root} closed while starting")
        except BaseException:
            self.close()
            raise
        self._replay([])

    def close(self) -> None:
        """Stop watching and release the descriptors (idempotent)."""
        inotify, self._inotify = self._inotify, None
        if inotify is None:
            return
        inotify.leave(self)
        self._dirs.clear()
        self._held = None
        if self._walk is not None:
            self._walk.cancel()  # its thread sees the watcher closed and stops at the next directory

    def drain(self) -> None:
        """Deliver everything the kernel has queued, without blocking."""
        if self._inotify is not None:
            self._inotify.drain()

    def deliver(self, event: RawEvent) -> None:
        if self._held is not None:
            self._held.append(event)
        elif self._inotify is not None:
            self._handle(event)

    def fail(self, message: str) -> None:
        self.close()
        self._sink.error(message)

    def _handle(self, event: RawEvent) -> None:
        mask = event.mask
        if mask & Mask.IGNORED:
            self._dirs.pop(event.wd, None)
            return
        directory = self._dirs.get(event.wd)
        if directory is None:
            return
        # Names are kept as the kernel gave them (undecodable bytes as surrogates)
        # so the path still works with os calls; `_event` makes the name printable.
        path = posixpath.join(directory, event.name) if event.name else directory
        if mask & (Mask.DELETE_SELF | Mask.MOVE_SELF) and not self._handle_self(event.wd, path, mask):
            return
        for kind in translate(mask):
            self._sink.event(self._event(path, kind))
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
        if not self._add_watch(path):
            return
        stack = self._children(path, strict=False)
        rest = self._walk_tree(stack, self._sink.event, budget=INLINE_WALK_DIRECTORIES)
        if rest:
            self._walk_in_thread(rest)

    # -- walking -------------------------------------------------------------

    def _walk_root(self) -> None:
        """The initial walk (in a thread): watch every subdirectory, report nothing."""
        self._walk_tree(self._children(self.root, strict=True), None, budget=None)

    def _walk_in_thread(self, stack: _Stack) -> None:
        """Finish a big walk off the loop; hold kernel events until it is done."""
        self._held = []
        found: list[FilesystemEvent] = []
        self._walk = asyncio.get_running_loop().create_task(
            run_blocking(self._walk_tree, stack, found.append, None), name=f"watch walk of {self.root}"
        )
        self._walk.add_done_callback(lambda done: self._walk_done(done, found))

    def _walk_done(self, walk: asyncio.Task[_Stack], found: list[FilesystemEvent]) -> None:
        self._walk = None
        if self._inotify is None or walk.cancelled():
            return
        if walk.exception() is not None:
            log.error("watch of %s: walk failed", self.root, exc_info=walk.exception())
        self._replay(found)

    def _replay(self, found: list[FilesystemEvent]) -> None:
        """Report what a walk found, then the events held meanwhile, in order."""
        for reported in found:
            self._sink.event(reported)
        held, self._held = self._held or [], None
        for index, event in enumerate(held):
            if self._inotify is None:
                return
            self._handle(event)
            if self._held is not None:  # that event started another walk: wait for it
                self._held.extend(held[index + 1 :])
                return

    def _walk_tree(self, stack: _Stack, report: Callable[[FilesystemEvent], None] | None, budget: int | None) -> _Stack:
        """Visit `stack` pre-order by name, watching directories; what is left when over budget.

        With `report`, a CREATE is reported for everything found: a directory
        filled before its watch existed (e.g. `mkdir -p a/b/c`) stays visible.
        """
        while stack:
            if budget is not None and budget <= 0:
                return stack
            path, is_dir = stack.pop()
            if self._inotify is None:
                return []
            if report is not None:
                report(self._event(path, EventType.EVENT_TYPE_CREATE))
            if is_dir and self._add_watch(path):
                stack.extend(self._children(path, strict=False))
                if budget is not None:
                    budget -= 1
        return []

    def _children(self, directory: str, strict: bool) -> _Stack:
        """Entries of `directory`, sorted by name, last first (ready to pop).

        An unreadable directory has none, unless `strict` (the root) makes that fatal.
        """
        try:
            with os.scandir(directory) as listing:
                children = [(posixpath.join(directory, e.name), e.is_dir(follow_symlinks=False)) for e in listing]
        except OSError:
            if strict:
                raise
            return []
        children.sort(key=lambda item: os.fsencode(item[0]), reverse=True)
        return children

    def _add_watch(self, path: str) -> bool:
        inotify = self._inotify
        if inotify is None:
            return False
        try:
            wd = inotify.add(self, path, WATCH_MASK | SUBDIR_FLAGS)
        except (OSError, ValueError):  # ValueError: closed meanwhile
            return False
        self._dirs[wd] = path
        return True

    # -- bookkeeping ---------------------------------------------------------

    def _rewrite(self, old: str, new: str) -> bool:
        """A directory moved inside the tree: its watches stay, their paths change."""
        found = False
        for wd, path in self._dirs.items():
            if path == old:
                self._dirs[wd] = new
                found = True
            elif path.startswith(old + "/"):
                self._dirs[wd] = new + path[len(old) :]
        return found

    def _forget_tree(self, top: str) -> None:
        """Drop the watches of `top` and below: one pass, each watch found by descriptor."""
        assert self._inotify is not None
        prefix = top.rstrip("/") + "/"
        doomed = [wd for wd, path in self._dirs.items() if path == top or path.startswith(prefix)]
        for wd in doomed:
            del self._dirs[wd]
            self._inotify.remove(self, wd)

    def _relative(self, path: str) -> str:
        """Event name: the path relative to the watched root, `.` for the root."""
        if path == self.root:
            return "."
        return path[len(self.root.rstrip("/")) + 1 :]

    def _event(self, path: str, kind: EventType) -> FilesystemEvent:
        event = FilesystemEvent(name=printable(self._relative(path)), type=kind)
        if self.include_entry and kind in _WITH_ENTRY:
            try:
                event.entry.CopyFrom(build_entry(path))
            except OSError:
                pass  # vanished meanwhile: normal, the event goes without entry
        return event

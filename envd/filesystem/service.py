"""filesystem.Filesystem RPC handlers (docs/envd-api.md §4.4 to §4.10).

Handlers speak protobuf messages and ConnectError only; the Connect layer owns
the wire. Error codes and messages follow upstream, because the SDKs turn
codes into exceptions (`not_found` → FileNotFoundException, `already_exists`
→ `make_dir` returns False).
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import stat
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message

from envd.blocking import run_blocking
from envd.config import Config
from envd.connect import Code, ConnectError, Kind, Rpc, RpcContext
from envd.filesystem.entry import build_entry, printable
from envd.filesystem.errors import WatcherNotFound, WatchFailed
from envd.filesystem.inotify import InotifyPool
from envd.filesystem.paths import (
    NotADirectoryComponent,
    ensure_dir,
    remove_tree,
    walk_sorted,
)
from envd.filesystem.watch import (
    NETWORK_FILESYSTEMS,
    DirWatcher,
    EventSink,
    filesystem_type,
)
from envd.filesystem.watchers import EventStream, PolledWatcher, WatcherRegistry
from envd.proto import filesystem_pb2 as pb
from envd.users import PathError, User, resolve_path

SERVICE = "filesystem.Filesystem"
#: How long `close` lets open WatchDir streams send their end-of-stream.
CLOSE_GRACE_SECONDS = 2.0


def os_error_text(op: str, path: str, exc: OSError) -> str:
    """Go's `*PathError` text, e.g. `lstat /x: no such file or directory`."""
    reason = (exc.strerror or str(exc)).lower()
    return f"{op} {path}: {reason}"


#: The watching machinery's failures as the SDKs expect them.
ERRORS: dict[type[Exception], Code] = {WatcherNotFound: Code.NOT_FOUND, WatchFailed: Code.INTERNAL}


class FilesystemService:
    """Stat, MakeDir, Move, ListDir, Remove and the two flavours of watching."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._watchers = WatcherRegistry()
        self._inotify = InotifyPool()
        self._streams: set[EventStream] = set()

    def rpcs(self) -> list[Rpc]:
        unary: list[tuple[str, type[Message], Callable[..., Any]]] = [
            ("Stat", pb.StatRequest, self.stat),
            ("MakeDir", pb.MakeDirRequest, self.make_dir),
            ("Move", pb.MoveRequest, self.move),
            ("ListDir", pb.ListDirRequest, self.list_dir),
            ("Remove", pb.RemoveRequest, self.remove),
            ("CreateWatcher", pb.CreateWatcherRequest, self.create_watcher),
            ("GetWatcherEvents", pb.GetWatcherEventsRequest, self.get_watcher_events),
            ("RemoveWatcher", pb.RemoveWatcherRequest, self.remove_watcher),
        ]
        rpcs = [Rpc(SERVICE, name, Kind.UNARY, req, handler, errors=ERRORS) for name, req, handler in unary]
        rpcs.append(
            Rpc(
                SERVICE,
                "WatchDir",
                Kind.SERVER_STREAM,
                pb.WatchDirRequest,
                self.watch_dir,
                keepalive=lambda: pb.WatchDirResponse(keepalive=pb.WatchDirResponse.KeepAlive()),
                errors=ERRORS,
            )
        )
        return rpcs

    async def close(self) -> None:
        """Drop polling watchers; end open streams with a clean end-of-stream."""
        self._watchers.close_all()
        for stream in list(self._streams):
            stream.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE_SECONDS
        while self._streams and loop.time() < deadline:
            await asyncio.sleep(0.01)

    # -- paths and entries -------------------------------------------------

    def _resolve(self, path: str, user: User) -> str:
        try:
            return resolve_path(path, user, self.config.default_workdir)
        except PathError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, str(exc)) from None

    # -- unary RPCs --------------------------------------------------------

    async def stat(self, request: pb.StatRequest, ctx: RpcContext) -> pb.StatResponse:
        path = self._resolve(request.path, ctx.user())
        return pb.StatResponse(entry=_entry(path))

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RpcContext) -> pb.MakeDirResponse:
        user = ctx.user()
        path = self._resolve(request.path, user)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConnectError(Code.INTERNAL, f"error getting file info: {os_error_text('stat', path, exc)}") from None
        else:
            if stat.S_ISDIR(st.st_mode):
                raise ConnectError(Code.ALREADY_EXISTS, f"directory already exists: {path}")
            raise ConnectError(Code.INVALID_ARGUMENT, f"path already exists but it is not a directory: {path}")
        _ensure_dir(path, user)
        return pb.MakeDirResponse(entry=_entry(path))

    async def move(self, request: pb.MoveRequest, ctx: RpcContext) -> pb.MoveResponse:
        user = ctx.user()
        source = self._resolve(request.source, user)
        destination = self._resolve(request.destination, user)
        _ensure_dir(posixpath.dirname(destination) or "/", user)
        try:
            os.rename(source, destination)
        except FileNotFoundError as exc:
            raise ConnectError(
                Code.NOT_FOUND,
                f"source file not found: {os_error_text('rename', f'{source} {destination}', exc)}",
            ) from None
        except OSError as exc:
            raise ConnectError(
                Code.INTERNAL,
                f"error renaming: {os_error_text('rename', f'{source} {destination}', exc)}",
            ) from None
        return pb.MoveResponse(entry=_entry(destination))

    async def list_dir(self, request: pb.ListDirRequest, ctx: RpcContext) -> pb.ListDirResponse:
        requested = self._resolve(request.path, ctx.user())
        entries = await run_blocking(_list_dir, requested, request.depth or 1)
        return pb.ListDirResponse(entries=entries)

    async def remove(self, request: pb.RemoveRequest, ctx: RpcContext) -> pb.RemoveResponse:
        user = ctx.user()
        if not request.path:
            # Upstream would resolve "" to the home directory and delete it.
            raise ConnectError(Code.INVALID_ARGUMENT, "path must not be empty")
        path = self._resolve(request.path, user)
        try:
            await run_blocking(remove_tree, path)
        except OSError as exc:
            raise ConnectError(Code.INTERNAL, f"error removing file or directory: {exc}") from None
        return pb.RemoveResponse()

    # -- watching ------------------------------------------------------------

    async def watch_dir(self, request: pb.WatchDirRequest, ctx: RpcContext) -> AsyncIterator[pb.WatchDirResponse]:
        """Stream events until the client leaves, the deadline hits or we stop."""
        path = self._watch_target(request, ctx.user())
        stream = EventStream()
        watcher = await _start_watcher(path, request, stream, self._inotify)
        self._streams.add(stream)
        try:
            yield pb.WatchDirResponse(start=pb.WatchDirResponse.StartEvent())
            async for event in stream.events():
                yield pb.WatchDirResponse(filesystem=event)
        finally:
            watcher.close()
            self._streams.discard(stream)

    async def create_watcher(self, request: pb.CreateWatcherRequest, ctx: RpcContext) -> pb.CreateWatcherResponse:
        path = self._watch_target(request, ctx.user())
        polled = PolledWatcher()
        polled.watcher = await _start_watcher(path, request, polled, self._inotify)
        self._watchers.add(polled)
        return pb.CreateWatcherResponse(watcher_id=polled.id)

    async def get_watcher_events(
        self, request: pb.GetWatcherEventsRequest, ctx: RpcContext
    ) -> pb.GetWatcherEventsResponse:
        events = self._watchers.get(request.watcher_id).take()
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(self, request: pb.RemoveWatcherRequest, ctx: RpcContext) -> pb.RemoveWatcherResponse:
        self._watchers.remove(request.watcher_id)
        return pb.RemoveWatcherResponse()

    def _watch_target(self, request: pb.WatchDirRequest | pb.CreateWatcherRequest, user: User) -> str:
        """Resolve and validate a directory to watch (docs/envd-api.md §4.9 steps 1-3)."""
        path = self._resolve(request.path, user)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise ConnectError(Code.NOT_FOUND, f"path {path} not found: {os_error_text('stat', path, exc)}") from None
        except OSError as exc:
            raise ConnectError(
                Code.INTERNAL, f"error statting path {path}: {os_error_text('stat', path, exc)}"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConnectError(Code.INVALID_ARGUMENT, f"path {path} not a directory")
        if not request.allow_network_mounts:
            _refuse_network_mount(path)
        return path


def _entry(path: str) -> pb.EntryInfo:
    """EntryInfo or the Stat-style error: only ENOENT is `not_found`."""
    try:
        return build_entry(path)
    except FileNotFoundError as exc:
        raise ConnectError(Code.NOT_FOUND, f"file not found: {os_error_text('lstat', path, exc)}") from None
    except OSError as exc:
        raise ConnectError(Code.INTERNAL, f"error getting file info: {os_error_text('lstat', path, exc)}") from None


def _ensure_dir(path: str, user: User) -> None:
    try:
        ensure_dir(path, user)
    except NotADirectoryComponent as exc:
        raise ConnectError(Code.INTERNAL, str(exc)) from None
    except PermissionError as exc:
        raise ConnectError(Code.PERMISSION_DENIED, str(exc)) from None
    except OSError as exc:
        raise ConnectError(Code.INTERNAL, f"error creating directory: {os_error_text('mkdir', path, exc)}") from None


def _list_dir(requested: str, depth: int) -> list[pb.EntryInfo]:
    """ListDir, docs/envd-api.md §4.7 steps 3-6; runs in a thread because a deep tree takes long."""
    try:
        target = os.path.realpath(requested, strict=True)
    except FileNotFoundError as exc:
        raise ConnectError(Code.NOT_FOUND, f"path not found: {os_error_text('lstat', requested, exc)}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConnectError(
                Code.FAILED_PRECONDITION,
                f'cyclic symlink or chain >255 links at "{requested}"',
            ) from None
        raise ConnectError(Code.INTERNAL, f"error resolving path: {os_error_text('lstat', requested, exc)}") from None
    if not os.path.isdir(target):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {target}")
    entries = []
    try:
        for relative in walk_sorted(target, depth):
            try:
                entry = build_entry(posixpath.join(target, relative))
            except FileNotFoundError:
                continue  # vanished between listing and lstat
            # Cleaned like Go's filepath.Join: `/home/user/./d` lists `/home/user/d/...`.
            entry.path = printable(posixpath.normpath(posixpath.join(requested, relative)))
            entries.append(entry)
    except OSError as exc:
        raise ConnectError(Code.INTERNAL, f"error reading directory {target}: {exc}") from None
    return entries


def _refuse_network_mount(path: str) -> None:
    try:
        fs_type = filesystem_type(path)
    except OSError as exc:
        raise ConnectError(
            Code.INTERNAL, f"error checking filesystem of {path}: {os_error_text('statfs', path, exc)}"
        ) from None
    if fs_type in NETWORK_FILESYSTEMS:
        raise ConnectError(Code.INVALID_ARGUMENT, f"cannot watch path on network filesystem: {path}")


async def _start_watcher(
    path: str,
    request: pb.WatchDirRequest | pb.CreateWatcherRequest,
    sink: EventSink,
    pool: InotifyPool,
) -> DirWatcher:
    watcher = DirWatcher(path, request.recursive, request.include_entry, sink, pool)
    try:
        await watcher.start()
    except OSError as exc:
        raise ConnectError(Code.INTERNAL, f"error adding path {path} to watcher: {exc}") from None
    return watcher

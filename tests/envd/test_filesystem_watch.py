"""Watching (docs/envd-api.md §4.9 to §4.11): exact event sequences through the
official SDK, plus the raw stream for what the SDK hides (end-of-stream,
shutdown, cleanup)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import threading
import time

import aiohttp
import psutil
import pytest
from e2b import FileNotFoundException, InvalidArgumentException, SandboxException
from e2b.sandbox.filesystem.filesystem import FileType
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType as T

from tests.wire import http, open_stream, parse_envelopes, stream_async, unary

# host_only: the fixtures prepare and inspect files on this host (tests/envd/conftest.py).
pytestmark = [pytest.mark.timeout(60), pytest.mark.host_only]
USER_AUTH = {"Authorization": "Basic " + base64.b64encode(b"user:").decode()}
WATCH_DIR = "filesystem.Filesystem/WatchDir"


def kinds(events) -> list[tuple[str, T]]:
    return [(e.name, e.type) for e in events]


# -- polling watchers (CreateWatcher / GetWatcherEvents) ----------------------------


def test_new_file_is_exactly_create_chmod_write(envd_sandbox, home_dir) -> None:
    handle = envd_sandbox.files.watch_dir(home_dir)
    envd_sandbox.files.write(f"{home_dir}/new.txt", "hello")
    assert kinds(handle.get_new_events()) == [("new.txt", T.CREATE), ("new.txt", T.CHMOD), ("new.txt", T.WRITE)]
    assert handle.get_new_events() == []  # the buffer was handed out
    handle.stop()


def test_overwrite_is_chmod_then_writes(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(f"{home_dir}/f.txt", "one")
    handle = envd_sandbox.files.watch_dir(home_dir, include_entry=True)
    envd_sandbox.files.write(f"{home_dir}/f.txt", "two")
    events = handle.get_new_events()
    assert kinds(events) in (
        [("f.txt", T.CHMOD), ("f.txt", T.WRITE)],
        [("f.txt", T.CHMOD), ("f.txt", T.WRITE), ("f.txt", T.WRITE)],
    )
    write = events[-1]
    assert write.entry is not None
    assert (write.entry.name, write.entry.path, write.entry.type) == ("f.txt", f"{home_dir}/f.txt", FileType.FILE)
    handle.stop()


def test_entries_only_on_create_write_chmod(envd_sandbox, home_dir) -> None:
    handle = envd_sandbox.files.watch_dir(home_dir, include_entry=True)
    envd_sandbox.files.write(f"{home_dir}/a", "x")
    envd_sandbox.files.rename(f"{home_dir}/a", f"{home_dir}/b")
    envd_sandbox.files.remove(f"{home_dir}/b")
    events = handle.get_new_events()
    assert kinds(events) == [
        ("a", T.CREATE),
        ("a", T.CHMOD),
        ("a", T.WRITE),
        ("a", T.RENAME),
        ("b", T.CREATE),
        ("b", T.REMOVE),
    ]
    with_entry = [e.type for e in events if e.entry is not None]
    assert with_entry == [T.CREATE, T.CHMOD, T.WRITE, T.CREATE]
    handle.stop()


def test_make_dir_and_chmod(envd_sandbox, home_dir) -> None:
    handle = envd_sandbox.files.watch_dir(home_dir)
    envd_sandbox.files.make_dir(f"{home_dir}/d")
    assert kinds(handle.get_new_events()) == [("d", T.CREATE), ("d", T.CHMOD)]
    os.chmod(home_dir, 0o750)  # the root itself is "."
    assert kinds(handle.get_new_events()) == [(".", T.CHMOD)]
    handle.stop()


def test_non_recursive_ignores_subdirectories(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.make_dir(f"{home_dir}/sub")
    handle = envd_sandbox.files.watch_dir(home_dir)
    envd_sandbox.files.write(f"{home_dir}/sub/inner", "x")
    envd_sandbox.files.write(f"{home_dir}/top", "x")
    assert [n for n, _ in kinds(handle.get_new_events())] == ["top"] * 3
    handle.stop()


def test_recursive_existing_subdirectory(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.make_dir(f"{home_dir}/nested")
    handle = envd_sandbox.files.watch_dir(home_dir, recursive=True)
    envd_sandbox.files.write(f"{home_dir}/nested/file", "x")
    assert kinds(handle.get_new_events()) == [
        ("nested/file", T.CREATE),
        ("nested/file", T.CHMOD),
        ("nested/file", T.WRITE),
    ]
    handle.stop()


def test_recursive_picks_up_new_directories(envd_sandbox, home_dir) -> None:
    handle = envd_sandbox.files.watch_dir(home_dir, recursive=True)
    envd_sandbox.files.make_dir(f"{home_dir}/nested")
    envd_sandbox.files.write(f"{home_dir}/nested/file", "x")
    events = kinds(handle.get_new_events())
    assert events[0] == ("nested", T.CREATE)
    assert ("nested/file", T.WRITE) in events
    handle.stop()


def test_recursive_mkdir_p_gets_synthetic_creates(envd_sandbox, home_dir) -> None:
    handle = envd_sandbox.files.watch_dir(home_dir, recursive=True)
    os.makedirs(f"{home_dir}/a/b/c")
    with open(f"{home_dir}/a/b/c/f", "w"):
        pass
    creates = [e.name for e in handle.get_new_events() if e.type == T.CREATE]
    assert list(dict.fromkeys(creates)) == ["a", "a/b", "a/b/c", "a/b/c/f"]
    with open(f"{home_dir}/a/b/c/g", "w") as later:
        later.write("x")  # the deepest directory is watched now
    assert ("a/b/c/g", T.WRITE) in kinds(handle.get_new_events())
    handle.stop()


def test_recursive_directory_moved_inside_the_tree(envd_sandbox, home_dir) -> None:
    os.makedirs(f"{home_dir}/old/deep")
    handle = envd_sandbox.files.watch_dir(home_dir, recursive=True)
    os.rename(f"{home_dir}/old", f"{home_dir}/new")
    assert kinds(handle.get_new_events()) == [("old", T.RENAME), ("new", T.CREATE)]
    with open(f"{home_dir}/new/deep/f", "w"):
        pass
    assert kinds(handle.get_new_events()) == [("new/deep/f", T.CREATE)]
    handle.stop()


def test_recursive_directory_moved_out_is_forgotten(envd_sandbox, home_dir) -> None:
    os.makedirs(f"{home_dir}/inside/sub")
    outside = f"{home_dir}-outside"
    handle = envd_sandbox.files.watch_dir(home_dir, recursive=True)
    try:
        os.rename(f"{home_dir}/inside", outside)
        assert kinds(handle.get_new_events()) == [("inside", T.RENAME)]
        with open(f"{outside}/sub/f", "w"):
            pass
        with open(f"{home_dir}/still", "w"):
            pass
        assert kinds(handle.get_new_events()) == [("still", T.CREATE)]
    finally:
        handle.stop()
        shutil.rmtree(outside, ignore_errors=True)


def test_removed_subdirectory_reported_once(envd_sandbox, home_dir) -> None:
    os.makedirs(f"{home_dir}/gone")
    handle = envd_sandbox.files.watch_dir(home_dir, recursive=True)
    os.rmdir(f"{home_dir}/gone")
    assert kinds(handle.get_new_events()) == [("gone", T.REMOVE)]
    handle.stop()


def test_moved_root_reports_rename_dot_and_goes_quiet(envd_sandbox, home_dir) -> None:
    os.makedirs(f"{home_dir}/root")
    handle = envd_sandbox.files.watch_dir(f"{home_dir}/root")
    os.rename(f"{home_dir}/root", f"{home_dir}/moved")
    assert kinds(handle.get_new_events()) == [(".", T.RENAME)]
    with open(f"{home_dir}/moved/f", "w"):
        pass
    assert handle.get_new_events() == []
    handle.stop()


def test_allow_network_mounts_on_a_local_directory(envd_sandbox, home_dir) -> None:
    handle = envd_sandbox.files.watch_dir(home_dir, allow_network_mounts=True)
    envd_sandbox.files.write(f"{home_dir}/x", "x")
    assert len(handle.get_new_events()) == 3
    handle.stop()


def test_watch_errors(envd_sandbox, home_dir) -> None:
    with pytest.raises(FileNotFoundException):
        envd_sandbox.files.watch_dir(f"{home_dir}/missing")
    envd_sandbox.files.write(f"{home_dir}/file", "x")
    with pytest.raises(InvalidArgumentException):
        envd_sandbox.files.watch_dir(f"{home_dir}/file")
    with pytest.raises(InvalidArgumentException):
        envd_sandbox.files.watch_dir("~root")


def test_unknown_and_removed_watcher_ids(envd_daemon, envd_sandbox, home_dir) -> None:
    status, body = unary(envd_daemon.url, "filesystem.Filesystem/GetWatcherEvents", {"watcherId": "wnope"})
    assert (status, body) == (404, {"code": "not_found", "message": "watcher with id wnope not found"})
    status, created = unary(envd_daemon.url, "filesystem.Filesystem/CreateWatcher", {"path": home_dir}, USER_AUTH)
    assert status == 200 and created["watcherId"].startswith("w") and len(created["watcherId"]) == 21
    assert unary(envd_daemon.url, "filesystem.Filesystem/RemoveWatcher", {"watcherId": created["watcherId"]}) == (
        200,
        {},
    )
    status, body = unary(envd_daemon.url, "filesystem.Filesystem/RemoveWatcher", {"watcherId": created["watcherId"]})
    assert (status, body["code"]) == (404, "not_found")


def test_watchers_share_inotify_instances_and_release_them(envd_daemon, envd_sandbox, home_dir) -> None:
    before = inotify_fds(envd_daemon.pid)
    handles = [envd_sandbox.files.watch_dir(home_dir, recursive=True) for _ in range(3)]
    assert inotify_fds(envd_daemon.pid) == before + 1
    for handle in handles:
        handle.stop()
    assert inotify_fds(envd_daemon.pid) == before


def test_a_thousand_watchers_each_see_their_own_events(envd_daemon, home_dir) -> None:
    """Past the kernel's 128 instances per user: 500 watchers of one directory
    and 500 of their own directories, each sees exactly its events."""

    def create_watcher(path: str) -> str:
        status, body = unary(envd_daemon.url, "filesystem.Filesystem/CreateWatcher", {"path": path}, USER_AUTH)
        assert status == 200, body
        return body["watcherId"]

    def events_of(watcher_id: str) -> list[tuple[str, str]]:
        status, body = unary(envd_daemon.url, "filesystem.Filesystem/GetWatcherEvents", {"watcherId": watcher_id})
        assert status == 200, body
        return [(e["name"], e["type"]) for e in body.get("events", [])]

    own_dirs = [f"{home_dir}/d{index}" for index in range(500)]
    for directory in own_dirs:
        os.mkdir(directory)
    shared = [create_watcher(home_dir) for _ in range(500)]
    own = [create_watcher(directory) for directory in own_dirs]
    assert inotify_fds(envd_daemon.pid) < 128
    with open(f"{home_dir}/shared.txt", "w"):
        pass
    for directory in own_dirs:
        with open(f"{directory}/f", "w") as out:
            out.write("x")
    for watcher_id in shared:
        assert events_of(watcher_id) == [("shared.txt", "EVENT_TYPE_CREATE")]
    for watcher_id in own:
        assert events_of(watcher_id) == [("f", "EVENT_TYPE_CREATE"), ("f", "EVENT_TYPE_WRITE")]
    for watcher_id in shared + own:
        assert unary(envd_daemon.url, "filesystem.Filesystem/RemoveWatcher", {"watcherId": watcher_id})[0] == 200
    assert inotify_fds(envd_daemon.pid) == 0


def inotify_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                count += 1
        except OSError:
            pass
    return count


# -- the WatchDir stream ----------------------------------------------------------


async def test_async_watch_dir_streams_events(envd_async_sandbox, home_dir) -> None:
    received: list = []
    arrived = asyncio.Event()
    exits: list = []

    def on_event(event) -> None:
        received.append(event)
        if len(received) >= 3:
            arrived.set()

    handle = await envd_async_sandbox.files.watch_dir(
        home_dir, on_event, on_exit=exits.append, recursive=True, include_entry=True
    )
    await envd_async_sandbox.files.write(f"{home_dir}/s.txt", "stream")
    await asyncio.wait_for(arrived.wait(), 30)
    assert kinds(received) == [("s.txt", T.CREATE), ("s.txt", T.CHMOD), ("s.txt", T.WRITE)]
    assert received[0].entry is not None and received[0].entry.path == f"{home_dir}/s.txt"
    await handle.stop()
    assert exits == [None]


async def test_async_watch_missing_directory(envd_async_sandbox, home_dir) -> None:
    with pytest.raises(FileNotFoundException):
        await envd_async_sandbox.files.watch_dir(f"{home_dir}/missing", lambda e: None)
    with pytest.raises(SandboxException):
        await envd_async_sandbox.files.watch_dir("/etc/hostname", lambda e: None)


async def test_raw_stream_error_before_start_is_an_end_of_stream(envd_daemon, home_dir) -> None:
    async with aiohttp.ClientSession() as session:
        messages, end = await stream_async(
            session, envd_daemon.url, WATCH_DIR, {"path": f"{home_dir}/missing"}, USER_AUTH
        )
    assert messages == []
    assert end["error"]["code"] == "not_found"
    assert end["error"]["message"].startswith(f"path {home_dir}/missing not found")


async def test_raw_stream_deadline_ends_with_deadline_exceeded(envd_daemon, home_dir) -> None:
    async with aiohttp.ClientSession() as session:
        messages, end = await stream_async(
            session, envd_daemon.url, WATCH_DIR, {"path": home_dir}, {**USER_AUTH, "Connect-Timeout-Ms": "300"}
        )
    assert messages == [{"start": {}}]
    assert end == {"error": {"code": "deadline_exceeded", "message": "context deadline exceeded"}}


async def test_client_disconnect_removes_the_watch(envd_daemon, home_dir) -> None:
    before = inotify_fds(envd_daemon.pid)
    async with aiohttp.ClientSession() as session:
        watch = await open_stream(session, envd_daemon.url, WATCH_DIR, {"path": home_dir, "recursive": True}, USER_AUTH)
        assert await watch.next() == {"start": {}}
        assert inotify_fds(envd_daemon.pid) == before + 1
        watch.response.close()
    for _ in range(500):
        if inotify_fds(envd_daemon.pid) == before:
            break
        await asyncio.sleep(0.02)
    assert inotify_fds(envd_daemon.pid) == before


async def test_shutdown_ends_open_streams_cleanly(daemon_factory, home_dir) -> None:
    own = daemon_factory()
    async with aiohttp.ClientSession() as session:
        watch = await open_stream(session, own.url, WATCH_DIR, {"path": home_dir}, USER_AUTH)
        assert await watch.next() == {"start": {}}
        psutil.Process(own.pid).send_signal(signal.SIGTERM)
        messages, end = parse_envelopes(await watch.response.content.read())
    assert (messages, end) == ([], {})
    assert own.proc.wait(10) == 0


async def test_raw_stream_events_and_keepalives(envd_daemon, home_dir) -> None:
    async with aiohttp.ClientSession() as session:
        watch = await open_stream(
            session,
            envd_daemon.url,
            WATCH_DIR,
            {"path": home_dir, "includeEntry": True},
            {**USER_AUTH, "Keepalive-Ping-Interval": "1"},
        )
        assert await watch.read_envelope() == (0, {"start": {}})
        os.mkdir(f"{home_dir}/made")
        flags, created = await watch.read_envelope()
        assert flags == 0
        event = created["filesystem"]
        assert (event["name"], event["type"]) == ("made", "EVENT_TYPE_CREATE")
        assert event["entry"]["type"] == "FILE_TYPE_DIRECTORY"
        assert event["entry"]["path"] == f"{home_dir}/made"
        assert await watch.read_envelope() == (0, {"keepalive": {}})  # silence → keep-alive


# -- big trees and odd names ---------------------------------------------------------


class HealthProbe:
    """Polls /health in a thread; `worst` is the slowest answer seen."""

    def __init__(self, url: str) -> None:
        self.worst = 0.0
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                http(f"{url}/health")
                self.worst = max(self.worst, time.monotonic() - started)
                time.sleep(0.01)

        self._thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(35)


def test_recursive_watch_of_a_big_tree_keeps_the_daemon_responsive(envd_daemon, envd_sandbox, home_dir) -> None:
    """Setting up and tearing down ~10,000 watches never holds up other requests.

    (With teardown quadratic in the number of watches this took ~5 s; linear, ~0.1 s.)
    """
    tree = f"{home_dir}/tree"
    for i in range(100):
        for j in range(100):
            os.makedirs(f"{tree}/d{i:02}/e{j:02}")
    with HealthProbe(envd_daemon.url) as probe:
        handle = envd_sandbox.files.watch_dir(tree, recursive=True)
        try:
            os.rename(tree, f"{home_dir}/moved")  # forgets every watch of the tree
            deadline = time.monotonic() + 20
            events = []
            while (".", T.RENAME) not in kinds(events) and time.monotonic() < deadline:
                events += handle.get_new_events()
            assert (".", T.RENAME) in kinds(events)
            time.sleep(0.3)
        finally:
            handle.stop()
    assert probe.worst < 2, f"/health took {probe.worst:.2f}s"


def test_a_big_tree_moved_in_is_walked_off_the_event_loop(envd_daemon, home_dir) -> None:
    """Moving a 30,000-directory tree into a recursive watch: the daemon answers
    requests while the walk runs, and the watcher still reports the whole tree,
    pre-order by name, after the move itself."""
    outside = f"{home_dir}/outside"
    for i in range(100):
        for j in range(300):
            os.makedirs(f"{outside}/d{i:02}/e{j:03}")
    watched = f"{home_dir}/watched"
    os.mkdir(watched)
    status, body = unary(
        envd_daemon.url, "filesystem.Filesystem/CreateWatcher", {"path": watched, "recursive": True}, USER_AUTH
    )
    assert status == 200, body
    watcher_id = body["watcherId"]
    expected = ["tree"] + [
        name for i in range(100) for name in [f"tree/d{i:02}"] + [f"tree/d{i:02}/e{j:03}" for j in range(300)]
    ]

    def new_events() -> list[str]:
        status, body = unary(envd_daemon.url, "filesystem.Filesystem/GetWatcherEvents", {"watcherId": watcher_id})
        assert status == 200, body
        assert {e["type"] for e in body.get("events", [])} <= {"EVENT_TYPE_CREATE"}
        return [e["name"] for e in body.get("events", [])]

    os.rename(outside, f"{watched}/tree")
    names = new_events()
    assert len(names) < len(expected), "the walk ran on the event loop, holding up this request"
    deadline = time.monotonic() + 30
    while len(names) < len(expected) and time.monotonic() < deadline:
        names += new_events()
    assert names == expected
    with open(f"{watched}/tree/d99/e299/late", "w"):
        pass
    assert new_events() == ["tree/d99/e299/late"]
    assert unary(envd_daemon.url, "filesystem.Filesystem/RemoveWatcher", {"watcherId": watcher_id})[0] == 200


def test_undecodable_file_name_in_events(envd_sandbox, home_dir) -> None:
    """A name that is not UTF-8 is reported (with U+FFFD) and never ends the watch."""
    handle = envd_sandbox.files.watch_dir(home_dir, include_entry=True)
    try:
        with open(os.path.join(os.fsencode(home_dir), b"bad\xff"), "w"):
            pass
        with open(f"{home_dir}/good", "w"):
            pass
        events = handle.get_new_events()
        assert ("bad\ufffd", T.CREATE) in kinds(events)
        assert ("good", T.CREATE) in kinds(events)
        with open(f"{home_dir}/later", "w"):
            pass
        assert ("later", T.CREATE) in kinds(handle.get_new_events())
    finally:
        handle.stop()


async def test_undecodable_file_name_in_a_streamed_watch(envd_async_sandbox, home_dir) -> None:
    received = []
    handle = await envd_async_sandbox.files.watch_dir(home_dir, on_event=received.append, include_entry=True)
    try:
        with open(os.path.join(os.fsencode(home_dir), b"bad\xff"), "w"):
            pass
        with open(f"{home_dir}/after", "w"):
            pass
        for _ in range(100):
            if ("after", T.CREATE) in kinds(received):
                break
            await asyncio.sleep(0.05)
        assert ("bad\ufffd", T.CREATE) in kinds(received)
        assert ("after", T.CREATE) in kinds(received)
    finally:
        await handle.stop()

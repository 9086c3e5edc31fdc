"""Resource hygiene under load: fds, zombies, memory, stuck readers (docs/envd-api.md §5.4, §5.5).

Each test gets its own daemon, so its measurements are not disturbed by others.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

import aiohttp
import psutil
import pytest

from tests.wire import b64, open_stream, stream_async, unary_async

pytestmark = pytest.mark.asyncio

#: Each job may hold a stream and make a unary call at once: the client pool allows both.
CONCURRENCY = 25


def fd_kinds(pid: int) -> dict[str, int]:
    """The daemon's open fds by kind: pipe, socket, pty master, file, other."""
    kinds: dict[str, int] = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            kind = "pipe"
        elif target.startswith("socket:"):
            kind = "socket"
        elif target == "/dev/ptmx" or target.startswith("/dev/pts/"):
            kind = "pty"
        elif target.startswith("/"):
            kind = "file"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def end_of(messages: list[dict]) -> dict:
    return messages[-1]["event"]["end"]


async def echo(http, url: str, i: int) -> None:
    messages, end = await stream_async(
        http, url, "process.Process/Start", {"process": {"cmd": "/bin/echo", "args": [str(i)]}, "stdin": False}
    )
    data = b"".join(base64.b64decode(m["event"]["data"]["stdout"]) for m in messages if "data" in m["event"])
    assert (data, end, end_of(messages)["status"]) == (f"{i}\n".encode(), {}, "exit status 0")


async def piped_stdin(http, url: str, i: int) -> None:
    started = await open_stream(http, url, "process.Process/Start", {"process": {"cmd": "/bin/cat"}})
    try:
        pid = (await started.next())["event"]["start"]["pid"]
        await unary_async(
            http,
            url,
            "process.Process/SendInput",
            {"process": {"pid": pid}, "input": {"stdin": b64(f"in{i}".encode())}},
        )
        await unary_async(http, url, "process.Process/CloseStdin", {"process": {"pid": pid}})
        messages = await started.rest()
    finally:
        started.response.close()
    assert end_of(messages)["status"] == "exit status 0"


async def pty_session(http, url: str, i: int) -> None:
    request = {
        "process": {"cmd": "/bin/sh", "args": ["-c", "read x; echo got-$x"]},
        "pty": {"size": {"cols": 80, "rows": 24}},
    }
    started = await open_stream(http, url, "process.Process/Start", request)
    try:
        pid = (await started.next())["event"]["start"]["pid"]
        await unary_async(
            http, url, "process.Process/SendInput", {"process": {"pid": pid}, "input": {"pty": b64(f"{i}\n".encode())}}
        )
        messages = await started.rest()
    finally:
        started.response.close()
    text = b"".join(base64.b64decode(m["event"]["data"]["pty"]) for m in messages if "data" in m["event"])
    assert f"got-{i}".encode() in text
    assert end_of(messages)["status"] == "exit status 0"


async def killed(http, url: str, i: int) -> None:
    started = await open_stream(http, url, "process.Process/Start", {"process": {"cmd": "/bin/sleep", "args": ["100"]}})
    try:
        pid = (await started.next())["event"]["start"]["pid"]
        status, _ = await unary_async(
            http, url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}
        )
        assert status == 200
        messages = await started.rest()
    finally:
        started.response.close()
    assert end_of(messages)["status"] == "signal: killed"


@pytest.mark.host_only
async def test_thousand_commands_leave_no_fds_or_zombies(daemon_factory) -> None:
    extra = daemon_factory()
    jobs = [echo] * 700 + [piped_stdin] * 100 + [pty_session] * 100 + [killed] * 100
    async with aiohttp.ClientSession() as http:
        for i in range(10):  # warm up: lazily created loop/thread-pool fds settle first
            await jobs[i % len(jobs)](http, extra.url, i)
        await killed(http, extra.url, 0)
        await pty_session(http, extra.url, 0)
    before = fd_kinds(extra.pid)

    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(index: int, job) -> None:
        async with gate:
            await job(http, extra.url, index)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * CONCURRENCY)) as http:
        await asyncio.gather(*(run(i, job) for i, job in enumerate(jobs)))
        status, listed = await unary_async(http, extra.url, "process.Process/List", {})
        assert (status, listed) == (200, {})

    assert extra.zombies() == []
    # Client sockets close asynchronously on the daemon's side; everything else must match exactly.
    deadline = time.monotonic() + 10
    while fd_kinds(extra.pid).get("socket", 0) > before.get("socket", 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after = fd_kinds(extra.pid)
    assert after.pop("socket", 0) <= before.pop("socket", 0)
    assert after == before  # pipes, pty masters, files: not one more than before


@pytest.mark.host_only
async def test_flood_with_slow_reader_keeps_memory_bounded(daemon_factory) -> None:
    """200 MB as fast as possible, read slowly: the process is throttled, memory stays flat."""
    extra = daemon_factory()
    daemon_proc = psutil.Process(extra.pid)
    baseline = daemon_proc.memory_info().rss
    peak = baseline
    async with aiohttp.ClientSession() as http:
        flood = await open_stream(
            http,
            extra.url,
            "process.Process/Start",
            {"process": {"cmd": "/usr/bin/head", "args": ["-c", "200000000", "/dev/zero"]}},
        )
        try:
            pid = (await flood.next())["event"]["start"]["pid"]
            received = 0
            for i in range(300):
                message = await flood.next()
                received += len(message["event"].get("data", {}).get("stdout", ""))
                await asyncio.sleep(0.01)
                if i % 20 == 0:
                    peak = max(peak, daemon_proc.memory_info().rss)
                    # Other requests still answer while the flood is on.
                    await echo(http, extra.url, i)
            peak = max(peak, daemon_proc.memory_info().rss)
            # Still running: output was held back, not buffered or thrown away.
            status, _ = await unary_async(
                http, extra.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}
            )
            assert status == 200
        finally:
            flood.response.close()
    assert received > 0
    assert peak - baseline < 100 * 1024 * 1024, f"daemon RSS grew by {(peak - baseline) >> 20} MiB"


@pytest.mark.host_only
async def test_stuck_reader_does_not_stall_the_process(daemon_factory) -> None:
    """A stream that stops reading while another keeps reading is detached after a grace
    period and ends with `data_loss` (never a clean end after lost data); the other gets everything."""
    extra = daemon_factory()
    daemon_proc = psutil.Process(extra.pid)
    baseline = daemon_proc.memory_info().rss
    script = "sleep 0.5; head -c 30000000 /dev/zero; echo"
    async with aiohttp.ClientSession() as http:
        stuck = await open_stream(
            http, extra.url, "process.Process/Start", {"process": {"cmd": "/bin/sh", "args": ["-c", script]}}
        )
        try:
            pid = (await stuck.next())["event"]["start"]["pid"]
            watcher = await open_stream(http, extra.url, "process.Process/Connect", {"process": {"pid": pid}})
            try:
                assert (await watcher.next())["event"] == {"start": {"pid": pid}}
                received = 0
                while (message := await watcher.next()) is not None:
                    event = message["event"]
                    if "data" in event:
                        received += len(base64.b64decode(event["data"]["stdout"]))
                    if "end" in event:
                        assert event["end"]["status"] == "exit status 0"
                assert watcher.end == {}
            finally:
                watcher.response.close()
            assert received == 30_000_001  # the watcher subscribed before the output began
            peak = daemon_proc.memory_info().rss
            # The stuck stream now gets what it had queued, then a data_loss error, no end event.
            stuck_received = 0
            while (message := await asyncio.wait_for(stuck.next(), 30)) is not None:
                event = message["event"]
                assert "end" not in event
                if "data" in event:
                    stuck_received += len(base64.b64decode(event["data"]["stdout"]))
            assert stuck_received < 30_000_001
            assert stuck.end["error"]["code"] == "data_loss"
            assert "stopped reading" in stuck.end["error"]["message"]
        finally:
            stuck.response.close()
    assert peak - baseline < 100 * 1024 * 1024, f"daemon RSS grew by {(peak - baseline) >> 20} MiB"


async def test_sole_subscriber_pausing_longer_than_the_grace_period_loses_nothing(daemon_factory) -> None:
    """The only subscriber is never dropped: the process waits for it (docs/envd-api.md §5.5)."""
    extra = daemon_factory()
    size = 40_000_000
    async with aiohttp.ClientSession() as http:
        started = await open_stream(
            http,
            extra.url,
            "process.Process/Start",
            {"process": {"cmd": "/bin/sh", "args": ["-c", f"head -c {size} /dev/zero"]}},
        )
        try:
            assert "start" in (await started.next())["event"]
            await asyncio.sleep(8)  # longer than the 5 s grace period
            received = 0
            ends = []
            while (message := await asyncio.wait_for(started.next(), 60)) is not None:
                event = message["event"]
                if "data" in event:
                    received += len(base64.b64decode(event["data"]["stdout"]))
                if "end" in event:
                    ends.append(event["end"])
            assert received == size
            assert [e["status"] for e in ends] == ["exit status 0"]
            assert started.end == {}
        finally:
            started.response.close()

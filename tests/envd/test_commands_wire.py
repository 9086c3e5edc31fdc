"""process.Process on the wire: exact JSON, tags, keep-alives, deadlines, bad input (docs/envd-api.md §5)."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess

import aiohttp
import psutil
import pytest

from tests.wire import b64, events, output, stream_async, unary_async

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def start_request(cmd: str, *args: str, **extra) -> dict:
    return {"process": {"cmd": cmd, "args": list(args)}, **extra}


async def wait_listed(http, url: str, tag: str) -> int:
    """The pid of the live process with `tag`, once `List` shows it."""
    for _ in range(200):
        _, listed = await unary_async(http, url, "process.Process/List", {})
        for info in listed.get("processes", []):
            if info.get("tag") == tag:
                return info["pid"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no process tagged {tag!r} appeared")


async def test_event_order_and_end_shapes(daemon, http) -> None:
    messages, end = await stream_async(
        http, daemon.url, "process.Process/Start", start_request("/bin/sh", "-c", "echo hi")
    )
    evs = events(messages)
    assert list(evs[0]) == ["start"] and evs[0]["start"]["pid"] > 0
    assert evs[-1] == {"end": {"exited": True, "status": "exit status 0"}}
    assert output(messages) == b"hi\n"
    assert end == {}

    messages, _ = await stream_async(
        http, daemon.url, "process.Process/Start", start_request("/bin/sh", "-c", "exit 3")
    )
    assert events(messages)[-1] == {
        "end": {"exitCode": 3, "exited": True, "status": "exit status 3", "error": "exit status 3"}
    }


async def test_signal_by_tag_and_go_signal_names(daemon, http) -> None:
    for signal_name, status in (("SIGNAL_SIGKILL", "signal: killed"), ("SIGNAL_SIGTERM", "signal: terminated")):
        tag = f"wire-{signal_name}"
        run = asyncio.create_task(
            stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/sleep", "30", tag=tag))
        )
        await wait_listed(http, daemon.url, tag)
        status_code, reply = await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"tag": tag}, "signal": signal_name}
        )
        assert (status_code, reply) == (200, {})
        messages, end = await run
        assert events(messages)[-1] == {"end": {"exitCode": -1, "status": status, "error": status}}
        assert end == {}


async def test_connect_by_tag_and_retained_end(daemon, http) -> None:
    tag = "wire-connect-tag"
    started = asyncio.create_task(
        stream_async(
            http,
            daemon.url,
            "process.Process/Start",
            start_request("/bin/sh", "-c", "read x; echo got $x; exit 4", tag=tag),
        )
    )
    pid = await wait_listed(http, daemon.url, tag)
    attached = asyncio.create_task(stream_async(http, daemon.url, "process.Process/Connect", {"process": {"tag": tag}}))
    await asyncio.sleep(0.2)  # let Connect subscribe; output before that would be lost to it
    await unary_async(
        http, daemon.url, "process.Process/SendInput", {"process": {"pid": pid}, "input": {"stdin": b64(b"y\n")}}
    )
    for messages, end in (await started, await attached):
        assert events(messages)[0] == {"start": {"pid": pid}}
        assert output(messages) == b"got y\n"
        assert events(messages)[-1]["end"]["exitCode"] == 4
        assert end == {}
    # After the exit, Connect by tag or pid still reports the outcome.
    for selector in ({"tag": tag}, {"pid": pid}):
        messages, end = await stream_async(http, daemon.url, "process.Process/Connect", {"process": selector})
        assert [list(e) for e in events(messages)] == [["start"], ["end"]]
        assert events(messages)[1]["end"]["exitCode"] == 4


async def test_unknown_pid_or_tag_is_not_found(daemon, http) -> None:
    _, end = await stream_async(http, daemon.url, "process.Process/Connect", {"process": {"pid": 999999}})
    assert end == {"error": {"code": "not_found", "message": "process with pid 999999 not found"}}
    _, end = await stream_async(http, daemon.url, "process.Process/Connect", {"process": {"tag": "no-such-tag"}})
    assert end == {"error": {"code": "not_found", "message": "process with tag no-such-tag not found"}}
    for method, body in (
        ("SendSignal", {"process": {"tag": "no-such-tag"}, "signal": "SIGNAL_SIGKILL"}),
        ("SendInput", {"process": {"pid": 999999}, "input": {"stdin": "eA=="}}),
        ("CloseStdin", {"process": {"pid": 999999}}),
        ("Update", {"process": {"pid": 999999}}),
    ):
        status, reply = await unary_async(http, daemon.url, f"process.Process/{method}", body)
        assert (status, reply["code"]) == (404, "not_found"), method


async def test_missing_selector_and_input_are_unimplemented(daemon, http) -> None:
    status, reply = await unary_async(http, daemon.url, "process.Process/CloseStdin", {"process": {}})
    assert (status, reply["code"]) == (501, "unimplemented")
    tag = "wire-no-input"
    run = asyncio.create_task(
        stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/sleep", "30", tag=tag))
    )
    pid = await wait_listed(http, daemon.url, tag)
    try:
        status, reply = await unary_async(
            http, daemon.url, "process.Process/SendInput", {"process": {"pid": pid}, "input": {}}
        )
        assert (status, reply["code"]) == (501, "unimplemented")
        status, reply = await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_UNSPECIFIED"}
        )
        assert (status, reply) == (501, {"code": "unimplemented", "message": "invalid signal: SIGNAL_UNSPECIFIED"})
        # A number the enum does not define is named by its number, not an internal error.
        status, reply = await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": 3}
        )
        assert (status, reply) == (501, {"code": "unimplemented", "message": "invalid signal: 3"})
        status, reply = await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": 1234}
        )
        assert (status, reply) == (501, {"code": "unimplemented", "message": "invalid signal: 1234"})
        status, reply = await unary_async(
            http,
            daemon.url,
            "process.Process/Update",
            {"process": {"pid": pid}, "pty": {"size": {"cols": 1, "rows": 1}}},
        )
        assert (status, reply["code"]) == (500, "internal")
        assert "tty not assigned" in reply["message"]
        status, reply = await unary_async(
            http, daemon.url, "process.Process/SendInput", {"process": {"pid": pid}, "input": {"pty": "eA=="}}
        )
        assert (status, reply["code"]) == (500, "internal")
        assert reply["message"].startswith("error writing to tty: tty not assigned to process")
    finally:
        await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}
        )
        await run


async def test_keepalives_only_during_silence(daemon, http) -> None:
    messages, end = await stream_async(
        http,
        daemon.url,
        "process.Process/Start",
        start_request("/bin/sh", "-c", "sleep 2.5; echo done"),
        headers={"Keepalive-Ping-Interval": "1"},
    )
    kinds = [list(e)[0] for e in events(messages)]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert "keepalive" in kinds[1:-1]
    assert events(messages)[kinds.index("keepalive")] == {"keepalive": {}}
    assert end == {}


async def test_exec_failure_names_the_command(daemon, http) -> None:
    _, end = await stream_async(http, daemon.url, "process.Process/Start", start_request("/no/such/binary", "arg"))
    assert end["error"]["code"] == "invalid_argument"
    assert end["error"]["message"].startswith("error starting process '/no/such/binary arg': ")


@pytest.mark.host_only
async def test_program_the_user_may_not_run_is_an_exec_error(daemon, http, tmp_path) -> None:
    """Not a process that exits 126: the same error as a missing program."""
    program = tmp_path / "root-only"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o700)
    os.chmod(tmp_path, 0o755)
    as_user = {"Authorization": "Basic " + b64(b"user:")}
    _, end = await stream_async(http, daemon.url, "process.Process/Start", start_request(str(program)), headers=as_user)
    assert end["error"]["code"] == "invalid_argument"
    assert end["error"]["message"] == f"error starting process '{program}': Permission denied: {program}"
    as_root = {"Authorization": "Basic " + b64(b"root:")}
    messages, end = await stream_async(
        http, daemon.url, "process.Process/Start", start_request(str(program)), headers=as_root
    )
    assert end == {} and output(messages) == b"ran\n"


@pytest.mark.host_only
async def test_every_supplementary_group_is_set(daemon, http) -> None:
    group = f"envd-test-{os.getpid()}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["gpasswd", "-a", "user", group], check=True, capture_output=True)
        gid = grp.getgrnam(group).gr_gid
        entry = pwd.getpwnam("user")
        as_user = {"Authorization": "Basic " + b64(b"user:")}
        messages, _ = await stream_async(
            http, daemon.url, "process.Process/Start", start_request("id", "-G"), headers=as_user
        )
        groups = sorted(int(g) for g in output(messages).split())
        assert groups == sorted({entry.pw_gid, gid, *os.getgrouplist("user", entry.pw_gid)})
        assert gid in groups
    finally:
        subprocess.run(["groupdel", group], check=True)


async def test_cwd_that_does_not_exist(daemon, http) -> None:
    request = {"process": {"cmd": "/bin/pwd", "cwd": "/no/such/dir"}}
    _, end = await stream_async(http, daemon.url, "process.Process/Start", request)
    assert end == {"error": {"code": "invalid_argument", "message": "cwd '/no/such/dir' does not exist"}}


async def test_stdin_absent_means_pipe_false_means_devnull(daemon, http) -> None:
    messages, _ = await stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/cat", stdin=False))
    assert events(messages)[-1]["end"]["status"] == "exit status 0"
    tag = "wire-stdin-default"
    run = asyncio.create_task(
        stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/cat", tag=tag))
    )
    pid = await wait_listed(http, daemon.url, tag)
    await unary_async(
        http, daemon.url, "process.Process/SendInput", {"process": {"pid": pid}, "input": {"stdin": b64(b"piped")}}
    )
    assert await unary_async(http, daemon.url, "process.Process/CloseStdin", {"process": {"pid": pid}}) == (200, {})
    messages, _ = await run
    assert output(messages) == b"piped"


async def test_stream_input_errors_and_success(daemon, http) -> None:
    data = {"data": {"input": {"stdin": "eA=="}}}
    _, end = await stream_async(http, daemon.url, "process.Process/StreamInput", [data])
    assert end["error"]["code"] == "failed_precondition"
    _, end = await stream_async(
        http, daemon.url, "process.Process/StreamInput", [{"start": {"process": {"pid": 999999}}}, data]
    )
    assert end["error"]["code"] == "not_found"

    tag = "wire-stream-input"
    run = asyncio.create_task(
        stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/cat", tag=tag))
    )
    pid = await wait_listed(http, daemon.url, tag)
    chunks = [{"start": {"process": {"pid": pid}}}, {"keepalive": {}}]
    chunks += [{"data": {"input": {"stdin": b64(part)}}} for part in (b"one ", b"two ", b"three")]
    messages, end = await stream_async(http, daemon.url, "process.Process/StreamInput", chunks)
    assert (messages, end) == ([{}], {})
    await unary_async(http, daemon.url, "process.Process/CloseStdin", {"process": {"pid": pid}})
    assert output((await run)[0]) == b"one two three"


async def test_list_echoes_the_request_config(daemon, http) -> None:
    tag = "wire-list"
    request = {"process": {"cmd": "/bin/sleep", "args": ["30"], "envs": {"K": "v"}}, "tag": tag}
    run = asyncio.create_task(stream_async(http, daemon.url, "process.Process/Start", request))
    pid = await wait_listed(http, daemon.url, tag)
    try:
        _, listed = await unary_async(http, daemon.url, "process.Process/List", {})
        [info] = [p for p in listed["processes"] if p["pid"] == pid]
        assert info == {"config": {"cmd": "/bin/sleep", "args": ["30"], "envs": {"K": "v"}}, "pid": pid, "tag": tag}
    finally:
        await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}
        )
        await run


@pytest.mark.host_only
async def test_process_deadline_kills_even_with_other_subscribers(daemon, http) -> None:
    """`Connect-Timeout-Ms` of Start bounds the process; a Connect without deadline sees the end."""
    tag = "wire-deadline"
    started = asyncio.create_task(
        stream_async(
            http,
            daemon.url,
            "process.Process/Start",
            start_request("/bin/sleep", "30", tag=tag),
            headers={"Connect-Timeout-Ms": "1500"},
        )
    )
    pid = await wait_listed(http, daemon.url, tag)
    attached = asyncio.create_task(stream_async(http, daemon.url, "process.Process/Connect", {"process": {"pid": pid}}))
    messages, end = await started
    assert end == {"error": {"code": "deadline_exceeded", "message": "context deadline exceeded"}}
    messages, end = await attached
    assert events(messages)[-1] == {"end": {"exitCode": -1, "status": "signal: killed", "error": "signal: killed"}}
    assert end == {}
    assert not psutil.pid_exists(pid)


@pytest.mark.host_only
async def test_client_disconnect_never_kills(daemon, http) -> None:
    tag = "wire-disconnect"
    run = asyncio.create_task(
        stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/sleep", "30", tag=tag))
    )
    pid = await wait_listed(http, daemon.url, tag)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await asyncio.sleep(0.3)
    try:
        assert await wait_listed(http, daemon.url, tag) == pid
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    finally:
        await unary_async(
            http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}
        )


@pytest.mark.host_only
async def test_shutdown_ends_streams_and_kills_children(daemon_factory, http) -> None:
    """SIGTERM to the daemon: every stream gets its end event, no child survives."""
    extra = daemon_factory()
    tag = "wire-shutdown"
    run = asyncio.create_task(
        stream_async(
            http, extra.url, "process.Process/Start", start_request("/bin/sh", "-c", "sleep 1000 & sleep 1000", tag=tag)
        )
    )
    pid = await wait_listed(http, extra.url, tag)
    group = [p.pid for p in psutil.Process(pid).children()] + [pid]
    assert await asyncio.to_thread(extra.stop) == 0
    messages, end = await run
    assert events(messages)[-1]["end"]["status"] == "signal: killed"
    assert end == {}
    for member in group:
        assert not psutil.pid_exists(member) or psutil.Process(member).status() == psutil.STATUS_ZOMBIE


async def test_blocked_stdin_write_fails_cleanly_when_the_process_dies(daemon, http) -> None:
    """A write stuck on a full pipe is abandoned at the end; the daemon keeps working."""
    tag = "wire-blocked-stdin"
    run = asyncio.create_task(
        stream_async(http, daemon.url, "process.Process/Start", start_request("/bin/sleep", "30", tag=tag))
    )
    pid = await wait_listed(http, daemon.url, tag)
    write = asyncio.create_task(
        unary_async(
            http,
            daemon.url,
            "process.Process/SendInput",
            {"process": {"pid": pid}, "input": {"stdin": b64(b"x" * 1_000_000)}},
        )
    )
    await asyncio.sleep(0.3)
    assert not write.done()  # more than a pipe holds, and nobody reads it
    await unary_async(
        http, daemon.url, "process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}
    )
    status, reply = await write
    assert (status, reply["code"]) == (500, "internal")
    assert reply["message"].startswith("error writing to stdin: ")
    await run
    messages, _ = await stream_async(
        http, daemon.url, "process.Process/Start", start_request("/bin/echo", "still-fine")
    )
    assert output(messages) == b"still-fine\n"


@pytest.mark.host_only
async def test_environment_is_exactly_built(daemon, http) -> None:
    """PATH, user identity, global envs, request envs, and nothing from the daemon's own env."""
    async with http.get(daemon.url + "/envs") as response:
        global_envs = await response.json()
    request = {"process": {"cmd": "/usr/bin/env", "envs": {"X": "y", "HOME": "/elsewhere"}}}
    messages, _ = await stream_async(http, daemon.url, "process.Process/Start", request)
    lines = output(messages).decode().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    daemon_env = psutil.Process(daemon.pid).environ()
    assert env == {
        "PATH": daemon_env["PATH"],
        "USER": "user",
        "LOGNAME": "user",
        **global_envs,
        "X": "y",
        "HOME": "/elsewhere",
    }


async def test_default_workdir_and_invalid_default_user(daemon_factory, http) -> None:
    with_workdir = daemon_factory("--default-workdir", "/tmp")
    messages, _ = await stream_async(http, with_workdir.url, "process.Process/Start", start_request("/bin/pwd"))
    assert output(messages) == b"/tmp\n"
    messages, _ = await stream_async(
        http, with_workdir.url, "process.Process/Start", {"process": {"cmd": "/bin/pwd", "cwd": "sub/.."}}
    )
    assert output(messages) == b"/home/user\n"  # relative paths resolve against home (docs/envd-api.md §2.3)

    no_user = daemon_factory("--default-user", "no-such-user-xyz")
    _, end = await stream_async(http, no_user.url, "process.Process/Start", start_request("/bin/pwd"))
    assert end == {"error": {"code": "unauthenticated", "message": "invalid default user: 'no-such-user-xyz'"}}

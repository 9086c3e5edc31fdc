"""sandbox.commands through the official sync SDK (docs/envd-api.md §5, §5.10)."""

from __future__ import annotations

import os
import pwd
import signal
import time

import psutil
import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)

from tests.envd.helpers import alive
from tests.harness import wait_until


def test_run_echo(sandbox) -> None:
    result = sandbox.commands.run('echo "Hello, World!"')
    assert (result.exit_code, result.stdout, result.stderr) == (0, "Hello, World!\n", "")
    assert result.error is None


def test_run_special_characters_and_multiline(sandbox) -> None:
    text = "!@#$%^&*()_+ 'quoted' ünïcødé €\nsecond line\n\tthird"
    result = sandbox.commands.run(f"printf '%s' \"{text}\"")
    assert result.stdout == text


def test_stdout_and_stderr_are_separate(sandbox) -> None:
    result = sandbox.commands.run("echo out; echo err >&2")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_nonzero_exit_raises_with_output(sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo partial; echo bad >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.error == "exit status 3"
    assert (info.value.stdout, info.value.stderr) == ("partial\n", "bad\n")


def test_envs_visible_to_the_command_only(sandbox) -> None:
    result = sandbox.commands.run(
        'echo "$FOO"; python3 -c "import os; print(os.environ[\'FOO\'])"', envs={"FOO": "bar"}
    )
    assert result.stdout == "bar\nbar\n"
    assert sandbox.commands.run('echo "${FOO-unset}"').stdout == "unset\n"


def test_env_is_built_not_inherited(sandbox) -> None:
    """HOME/USER/LOGNAME of the user, request envs override, the daemon's own env stays out."""
    result = sandbox.commands.run('echo "$HOME $USER $LOGNAME $E2B_SANDBOX $X"', envs={"X": "y"})
    assert result.stdout == "/home/user user user true y\n"
    overridden = sandbox.commands.run('echo "$E2B_SANDBOX"', envs={"E2B_SANDBOX": "mine"})
    assert overridden.stdout == "mine\n"


def test_cwd_defaults_to_home_and_can_be_set(sandbox) -> None:
    assert sandbox.commands.run("pwd").stdout == "/home/user\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.commands.run("pwd", cwd="~").stdout == "/home/user\n"


def test_invalid_cwd_names_the_path(sandbox) -> None:
    with pytest.raises(InvalidArgumentException) as info:
        sandbox.commands.run("pwd", cwd="/no/such/dir")
    assert "/no/such/dir" in str(info.value)


@pytest.mark.host_only
def test_user_root_versus_default(sandbox) -> None:
    assert sandbox.commands.run("whoami").stdout == "user\n"
    root = sandbox.commands.run("whoami; echo $HOME; id -g", user="root")
    assert root.stdout == "root\n/root\n0\n"
    entry = pwd.getpwnam("user")
    ids = sandbox.commands.run("id -u; id -g")
    assert ids.stdout.split() == [str(entry.pw_uid), str(entry.pw_gid)]


@pytest.mark.host_only
def test_supplementary_groups_are_set(sandbox) -> None:
    entry = pwd.getpwnam("user")
    expected = sorted(set(os.getgrouplist("user", entry.pw_gid)))
    assert sorted(int(g) for g in sandbox.commands.run("id -G").stdout.split()) == expected


def test_nonexistent_user_is_unauthenticated(sandbox) -> None:
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("whoami", user="no-such-user-xyz")


def test_timeout_short_enough_succeeds(sandbox) -> None:
    assert sandbox.commands.run("echo quick", timeout=10).stdout == "quick\n"


def test_too_short_timeout_raises_and_kills_the_process(sandbox) -> None:
    marker = f"envd-timeout-{time.monotonic_ns()}"
    with pytest.raises(TimeoutException):
        sandbox.commands.run(f"sleep 30; echo {marker}", timeout=2)
    assert wait_until(lambda: not _processes_with(marker)), "the process outlived its deadline"


@pytest.mark.host_only
def test_too_short_timeout_while_iterating_background(sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True, timeout=2)
    assert alive(handle.pid)
    with pytest.raises(TimeoutException):
        for _ in handle:
            pass
    assert wait_until(lambda: not alive(handle.pid)), "the process outlived its deadline"


def test_on_stdout_and_on_stderr_callbacks(sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    sandbox.commands.run(
        "echo one; echo two >&2; echo three",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "one\nthree\n"
    assert "".join(err) == "two\n"


def test_utf8_split_across_reads_is_not_corrupted(sandbox) -> None:
    """The euro sign's three bytes arrive in two separate reads; bytes pass through untouched."""
    script = (
        "import sys, time; o = sys.stdout.buffer; "
        "o.write(b'\\xe2\\x82'); o.flush(); time.sleep(0.3); o.write(b'\\xac!\\n'); o.flush()"
    )
    chunks: list[str] = []
    result = sandbox.commands.run(f'python3 -c "{script}"', on_stdout=chunks.append)
    assert result.stdout == "€!\n"


def test_broken_utf8_is_forwarded_raw(sandbox) -> None:
    result = sandbox.commands.run("printf 'a%.0s' $(seq 8191); printf '\\xe2'")
    assert result.stdout == "a" * 8191 + "\ufffd"


def test_large_output_arrives_complete(sandbox) -> None:
    """5 MB through one stream: back-pressure, not loss, for a client that keeps reading."""
    result = sandbox.commands.run("head -c 5000000 /dev/zero | tr '\\0' 'x'")
    assert result.stdout == "x" * 5_000_000


def test_background_connect_and_wait(sandbox) -> None:
    handle = sandbox.commands.run("sleep 1; echo done", background=True)
    again = sandbox.commands.connect(handle.pid)
    assert again.pid == handle.pid
    result = again.wait()
    assert (result.exit_code, result.stdout) == (0, "done\n")


def test_connect_unknown_pid_is_not_found(sandbox) -> None:
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(999999)


def test_connect_after_exit_reports_the_exit_code(sandbox) -> None:
    """Ended processes are retained for a while, so a late Connect still learns the outcome."""
    handle = sandbox.commands.run("exit 7", background=True)
    with pytest.raises(CommandExitException):
        handle.wait()
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.connect(handle.pid).wait()
    assert info.value.exit_code == 7


def test_disconnect_does_not_kill(sandbox) -> None:
    handle = sandbox.commands.run("sleep 2; echo survived", background=True)
    handle.disconnect()
    assert handle.pid in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.connect(handle.pid).wait().stdout == "survived\n"


def test_two_subscribers_both_receive_output(sandbox) -> None:
    handle = sandbox.commands.run("read line; echo got $line", background=True, stdin=True)
    second = sandbox.commands.connect(handle.pid)
    sandbox.commands.send_stdin(handle.pid, "x\n")
    assert handle.wait().stdout == "got x\n"
    assert second.wait().stdout == "got x\n"


def test_list_shows_running_commands(sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True, envs={"A": "b"}, cwd="/tmp")
    try:
        [info] = [p for p in sandbox.commands.list() if p.pid == handle.pid]
        assert (info.cmd, info.args) == ("/bin/bash", ["-l", "-c", "sleep 30"])
        assert (info.envs, info.cwd, info.tag) == ({"A": "b"}, "/tmp", None)
    finally:
        sandbox.commands.kill(handle.pid)
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]


def test_kill_then_kill_0_fails(sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True)
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        sandbox.commands.run(f"kill -0 {handle.pid}")
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert (info.value.exit_code, info.value.error) == (-1, "signal: killed")


def test_kill_unknown_or_finished_is_false(sandbox) -> None:
    assert sandbox.commands.kill(999999) is False
    handle = sandbox.commands.run("true", background=True)
    handle.wait()
    assert sandbox.commands.kill(handle.pid) is False


@pytest.mark.host_only
def test_kill_takes_the_whole_tree(sandbox) -> None:
    """A child started in the background inside the command dies with it."""
    handle = sandbox.commands.run("sleep 1000 & echo $!; wait", background=True)
    child = None
    for stdout, _, _ in handle:
        if stdout and stdout.strip():
            child = int(stdout.strip())
            break
    assert child is not None and alive(child)
    assert handle.kill() is True
    assert wait_until(lambda: not alive(child)), f"child {child} survived the kill"


@pytest.mark.host_only
def test_handle_kill_ends_stream_despite_grandchild_holding_stdout(sandbox) -> None:
    """After a kill the end event does not wait for pipe EOF from stray holders."""
    handle = sandbox.commands.run("setsid sleep 1000 & echo $!; sleep 1000", background=True)
    escaped = None
    for stdout, _, _ in handle:
        if stdout and stdout.strip():
            escaped = int(stdout.strip())
            break
    try:
        assert escaped is not None and alive(escaped)  # holds the stdout pipe, own session
        assert handle.kill()
        with pytest.raises(CommandExitException) as info:
            handle.wait()
        assert info.value.exit_code == -1
    finally:
        if escaped is not None:
            os.kill(escaped, signal.SIGKILL)


def test_send_stdin_str_and_bytes(sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "Hello, World!")
    for stdout, _, _ in handle:
        assert stdout == "Hello, World!"
        break
    sandbox.commands.send_stdin(handle.pid, b"\xc3\xa9\n special $chars\n")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "Hello, World!é\n special $chars\n"


def test_close_stdin_via_handle(sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    handle.send_stdin("text")
    handle.close_stdin()
    result = handle.wait()
    assert (result.exit_code, result.stdout) == (0, "text")


def test_close_stdin_is_idempotent(sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True, stdin=True)
    try:
        handle.close_stdin()
        handle.close_stdin()
    finally:
        handle.kill()


def test_stream_input(sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(handle.pid, iter(["a", b"b", "c\n"]))
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "abc\n"


def test_stdin_not_enabled_is_a_clear_error(sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True)
    try:
        with pytest.raises(SandboxException, match="stdin not enabled or closed"):
            sandbox.commands.send_stdin(handle.pid, "x")
    finally:
        handle.kill()


def test_stdin_after_close_is_a_clear_error(sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True, stdin=True)
    try:
        sandbox.commands.close_stdin(handle.pid)
        with pytest.raises(SandboxException, match="stdin not enabled or closed"):
            sandbox.commands.send_stdin(handle.pid, "x")
    finally:
        handle.kill()


def test_input_to_finished_process_is_not_found(sandbox) -> None:
    handle = sandbox.commands.run("true", background=True, stdin=True)
    handle.wait()
    with pytest.raises(NotFoundException, match=f"process with pid {handle.pid} not found"):
        sandbox.commands.send_stdin(handle.pid, "late")
    with pytest.raises(NotFoundException):
        sandbox.commands.close_stdin(handle.pid)


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found

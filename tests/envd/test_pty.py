"""sandbox.pty through the official SDKs (docs/envd-api.md §5.4 step 6, §5.11)."""

from __future__ import annotations

import asyncio
import re

import pytest
from e2b import CommandExitException, NotFoundException, SandboxException
from e2b.sandbox.commands.command_handle import PtySize

from tests.envd.helpers import alive
from tests.harness import wait_until


def _read_until(handle, needle: bytes) -> bytes:
    """Consume PTY output from a sync handle until `needle` shows up."""
    seen = b""
    for _, _, pty in handle:
        if pty:
            seen += pty
            if needle in seen:
                return seen
    raise AssertionError(f"{needle!r} never appeared in {seen[-500:]!r}")


def _read_until_match(handle, pattern: bytes) -> re.Match[bytes]:
    seen = b""
    for _, _, pty in handle:
        if pty:
            seen += pty
            match = re.search(pattern, seen)
            if match:
                return match
    raise AssertionError(f"{pattern!r} never matched {seen[-500:]!r}")


def test_pty_create_envs_cwd_and_exit(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"ABC": "123"}, cwd="/")
    sandbox.pty.send_stdin(terminal.pid, b"echo $ABC-$(pwd)-$TERM-$(tty)\nexit\n")
    chunks: list[bytes] = []
    result = terminal.wait(on_pty=chunks.append)
    text = b"".join(chunks)
    assert result.exit_code == 0
    assert b"123-/-xterm-256color-/dev/pts/" in text


def test_pty_runs_as_user_with_controlling_terminal(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"echo who=$(whoami) sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$\nexit\n")
    chunks: list[bytes] = []
    terminal.wait(on_pty=chunks.append)
    text = b"".join(chunks).decode(errors="replace")
    assert f"who=user sid={terminal.pid} pid={terminal.pid}" in text


def test_pty_ctrl_c_interrupts_the_foreground_job(sandbox) -> None:
    """^C reaches `sleep` through the terminal: the PTY is the shell's controlling tty."""
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"sleep 60\n")
    # `|| true`: ps exits 1 while the shell has no child yet.
    assert wait_until(lambda: "sleep 60" in sandbox.commands.run(f"ps -o args= --ppid {terminal.pid} || true").stdout)
    sandbox.pty.send_stdin(terminal.pid, b"\x03")
    sandbox.pty.send_stdin(terminal.pid, b"exit\n")
    with pytest.raises(CommandExitException) as info:
        terminal.wait()
    assert info.value.exit_code == 130  # the shell's last status: 128 + SIGINT


def test_pty_exit_only(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"exit\n")
    assert terminal.wait().exit_code == 0


def test_pty_nonzero_exit(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"exit 5\n")
    with pytest.raises(CommandExitException) as info:
        terminal.wait()
    assert info.value.exit_code == 5


def test_pty_size_and_resize(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"echo cols=$(tput cols) lines=$(tput lines)\n")
    assert b"cols=80 lines=24" in _read_until(terminal, b"lines=24")
    sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"echo cols=$(tput cols) lines=$(tput lines)\nexit\n")
    chunks: list[bytes] = []
    terminal.wait(on_pty=chunks.append)
    assert b"cols=100 lines=30" in b"".join(chunks)


def test_pty_kill_then_kill_0_fails(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    assert sandbox.pty.kill(terminal.pid) is True
    # The daemon answers once the pid is reaped, or after 2 s under load: poll, do not time.
    probe = f"kill -0 {terminal.pid} 2>/dev/null || echo gone"
    assert wait_until(lambda: sandbox.commands.run(probe).stdout == "gone\n", timeout=15)
    with pytest.raises(CommandExitException) as info:
        terminal.wait()
    assert info.value.exit_code == -1
    assert sandbox.pty.kill(terminal.pid) is False
    assert sandbox.pty.kill(999999) is False


@pytest.mark.host_only
def test_pty_kill_takes_background_jobs(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"sleep 1000 & echo job=$!:end\n")
    job = int(_read_until_match(terminal, rb"job=(\d+):end").group(1))
    assert alive(job)
    assert terminal.kill()
    assert wait_until(lambda: not alive(job)), f"background job {job} survived"


def test_pty_connect_after_disconnect(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"echo before-$((40+2))\n")
    assert b"before-42" in _read_until(terminal, b"before-42")
    terminal.disconnect()
    again = sandbox.pty.connect(terminal.pid)
    assert again.pid == terminal.pid
    sandbox.pty.send_stdin(terminal.pid, b"echo after-$((50+5))\nexit\n")
    chunks: list[bytes] = []
    result = again.wait(on_pty=chunks.append)
    assert result.exit_code == 0
    assert b"after-55" in b"".join(chunks)


def test_pty_connect_unknown_pid(sandbox) -> None:
    with pytest.raises(NotFoundException):
        sandbox.pty.connect(999999)


def test_pty_input_mismatches_are_clear_errors(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    try:
        with pytest.raises(SandboxException, match="tty assigned to process"):
            sandbox.commands.send_stdin(terminal.pid, "x")
        with pytest.raises(SandboxException, match="cannot close stdin for PTY process"):
            sandbox.commands.close_stdin(terminal.pid)
    finally:
        sandbox.pty.kill(terminal.pid)


def test_pty_stream_input(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.stream_input(terminal.pid, iter([b"echo str", b"eamed-$((1+1))\n", b"exit\n"]))
    chunks: list[bytes] = []
    assert terminal.wait(on_pty=chunks.append).exit_code == 0
    assert b"streamed-2" in b"".join(chunks)


async def test_async_pty_connect_keeps_receiving(async_sandbox) -> None:
    """The async SDK reads in the background; output before and after reconnecting both arrive."""
    first: list[bytes] = []
    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=first.append)
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo one-$((1+1))\n")
    for _ in range(200):
        if b"one-2" in b"".join(first):
            break
        await asyncio.sleep(0.05)
    assert b"one-2" in b"".join(first)
    await terminal.disconnect()

    second: list[bytes] = []
    again = await async_sandbox.pty.connect(terminal.pid, on_data=second.append)
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo two-$((2+2))\nexit\n")
    result = await again.wait()
    assert result.exit_code == 0
    assert b"two-4" in b"".join(second)
    assert b"two-4" not in b"".join(first)

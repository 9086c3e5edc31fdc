"""sandbox.commands through the official async SDK, which reads streams in background tasks."""

from __future__ import annotations

import asyncio

import pytest
from e2b import CommandExitException, NotFoundException, TimeoutException

pytestmark = pytest.mark.asyncio


async def test_run_and_exit_code(async_sandbox) -> None:
    result = await async_sandbox.commands.run('echo "Hello, World!"; echo e >&2')
    assert (result.exit_code, result.stdout, result.stderr) == (0, "Hello, World!\n", "e\n")
    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("exit 2")
    assert info.value.exit_code == 2


async def test_background_callbacks_connect_and_kill(async_sandbox) -> None:
    out: list[str] = []
    handle = await async_sandbox.commands.run("echo first; sleep 30", background=True, on_stdout=out.append)
    for _ in range(200):
        if out:
            break
        await asyncio.sleep(0.05)
    assert "".join(out) == "first\n"
    assert handle.pid in [p.pid for p in await async_sandbox.commands.list()]
    again = await async_sandbox.commands.connect(handle.pid)
    assert await async_sandbox.commands.kill(handle.pid) is True
    for waiting in (handle, again):
        with pytest.raises(CommandExitException) as info:
            await waiting.wait()
        assert (info.value.exit_code, info.value.error) == (-1, "signal: killed")
    assert await async_sandbox.commands.kill(handle.pid) is False


async def test_send_stdin_and_close(async_sandbox) -> None:
    handle = await async_sandbox.commands.run("cat", background=True, stdin=True)
    await async_sandbox.commands.send_stdin(handle.pid, "Hello, World!\n")
    await async_sandbox.commands.close_stdin(handle.pid)
    result = await handle.wait()
    assert (result.exit_code, result.stdout) == (0, "Hello, World!\n")


async def test_timeout_and_unknown_pid(async_sandbox) -> None:
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run("sleep 10", timeout=1)
    with pytest.raises(NotFoundException):
        await async_sandbox.commands.connect(999999)


async def test_concurrent_runs(async_sandbox) -> None:
    results = await asyncio.gather(*(async_sandbox.commands.run(f"echo {i}") for i in range(20)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]

"""Interrupts, kernel death, pre-emption, huge output and concurrency
(docs/code-interpreter-api.md §4.7, §4.10 to §4.12).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import httpx
import psutil
import pytest
from e2b import TimeoutException

from tests.harness import wait_until

pytestmark = pytest.mark.timeout(180)

CI_HEADERS = {"E2b-Sandbox-Port": "49999", "Content-Type": "application/json"}


def _kernel_pid(sandbox, context) -> int:
    return int(sandbox.run_code("import os; os.getpid()", context=context).text)


def test_timeout_interrupts_and_next_run_works(sandbox):
    context = sandbox.create_code_context()
    try:
        sandbox.run_code("survivor = 41", context=context)
        with pytest.raises(TimeoutException):
            sandbox.run_code("while True: pass", context=context, timeout=2)
        after = sandbox.run_code("survivor + 1", context=context, timeout=30)
        assert after.error is None, after.error  # no stray KeyboardInterrupt
        assert after.text == "42"  # interrupted, not restarted: state kept
    finally:
        sandbox.remove_code_context(context)


def test_kernel_ignoring_interrupt_is_replaced(sandbox):
    """SIGINT ignored by user code: the drain gives up, the kernel is replaced, the context serves on."""
    context = sandbox.create_code_context()
    try:
        with pytest.raises(TimeoutException):
            sandbox.run_code(
                "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass",
                context=context,
                timeout=2,
            )
        after = sandbox.run_code("'next'", context=context, timeout=60)
        assert after.error is None, after.error
        assert after.text == "next"
        assert after.execution_count == 1  # a fresh kernel
    finally:
        sandbox.remove_code_context(context)


async def test_async_timeout_interrupt_sleep(async_sandbox):
    context = await async_sandbox.create_code_context()
    try:
        with pytest.raises(TimeoutException):
            await async_sandbox.run_code("import time; time.sleep(300)", context=context, timeout=2)
        execution = await async_sandbox.run_code("1 + 1", context=context, timeout=30)
        assert execution.text == "2"
        assert execution.error is None
    finally:
        await async_sandbox.remove_code_context(context)


def test_queued_request_survives_interrupt_of_previous(sandbox):
    """A request queued behind an interrupted one must run normally (docs/differences.md §6.2 item 4)."""
    context = sandbox.create_code_context()
    started = threading.Event()
    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            sandbox.run_code(
                "print('started', flush=True)\nimport time\nwhile True: time.sleep(0.01)",
                context=context,
                on_stdout=lambda _: started.set(),
                timeout=2,
            )
        except TimeoutException as exc:
            outcome["first"] = exc

    try:
        thread = threading.Thread(target=first)
        thread.start()
        assert started.wait(60)
        second = sandbox.run_code("'second'", context=context, timeout=60)  # queued behind `first`
        thread.join(60)
        assert isinstance(outcome.get("first"), TimeoutException)
        assert second.error is None, second.error
        assert second.text == "second"
        assert sandbox.run_code("'third'", context=context, timeout=60).text == "third"
    finally:
        sandbox.remove_code_context(context)


@pytest.mark.host_only
@pytest.mark.parametrize("how", ["os._exit", "sigkill"])
def test_kernel_death_reports_and_recovers(sandbox, how):
    context = sandbox.create_code_context(cwd="/tmp")
    try:
        pid = _kernel_pid(sandbox, context)
        if how == "os._exit":
            # the pause lets the kernel's IOPub thread send the line before the process vanishes
            code = "print('dying', flush=True)\nimport os, time; time.sleep(0.5); os._exit(1)"
            execution = sandbox.run_code(code, context=context, timeout=60)
            assert execution.logs.stdout == ["dying\n"]
        else:
            execution = sandbox.run_code(
                "print('go', flush=True)\nimport time; time.sleep(60)",
                context=context,
                on_stdout=lambda _: os.kill(pid, signal.SIGKILL),  # kill once it is running
                timeout=60,
            )
        assert execution.error.name == "ContextRestarting"
        assert execution.error.value == "Context was restarted"
        after = sandbox.run_code("import os; os.getcwd()", context=context, timeout=60)
        assert after.text == "/tmp"  # same context id, cwd re-applied
        assert after.execution_count == 1  # fresh kernel
        assert _kernel_pid(sandbox, context) != pid
    finally:
        sandbox.remove_code_context(context)


@pytest.mark.host_only
def test_idle_kernel_death_is_silent(daemon, sandbox):
    context = sandbox.create_code_context()
    try:
        pid = _kernel_pid(sandbox, context)
        kernel_process = psutil.Process(pid)
        os.kill(pid, signal.SIGKILL)
        kernel_process.wait(10)
        # The next run either lands on the restarted kernel or waits for it.
        execution = sandbox.run_code("'alive'", context=context, timeout=60)
        assert execution.text == "alive" or execution.error.name == "ContextRestarting"
        assert sandbox.run_code("'alive'", context=context, timeout=60).text == "alive"
    finally:
        sandbox.remove_code_context(context)


def _stream_in_thread(daemon, body: dict, out: list) -> threading.Thread:
    def run() -> None:
        with httpx.stream("POST", f"{daemon.url}/execute", json=body, headers=CI_HEADERS, timeout=60) as r:
            out.extend(json.loads(line) for line in r.iter_lines())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_running(lines: list) -> None:
    started = wait_until(lambda: any(line.get("type") == "stdout" for line in lines))
    assert started, f"execution never started: {lines}"


@pytest.mark.parametrize("action", ["restart", "delete"])
def test_restart_or_delete_preempts_running_execution(daemon, sandbox, action):
    context = sandbox.create_code_context()
    lines: list = []
    thread = _stream_in_thread(
        daemon, {"code": "print('go', flush=True)\nimport time; time.sleep(60)", "context_id": context.id}, lines
    )
    _wait_running(lines)
    if action == "restart":
        sandbox.restart_code_context(context)
    else:
        sandbox.remove_code_context(context)
    thread.join(30)
    errors = [line for line in lines if line["type"] == "error"]
    assert errors == [
        {
            "type": "error",
            "name": "UnexpectedEndOfExecution",
            "value": "Connection to the execution was closed before the execution was finished",
            "traceback": "",
        }
    ]
    assert lines[-1] == {"type": "end_of_execution"}
    if action == "restart":
        assert sandbox.run_code("'fresh'", context=context).text == "fresh"
        sandbox.remove_code_context(context)


FLOOD_CODE = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range({mib}):\n    sys.stdout.write(chunk)\n"


def _stream_execute(daemon, code: str, pause: float = 0.0) -> tuple[int, list[str], int]:
    """Run `code` over raw HTTP, reading nothing for `pause` seconds first:
    (stdout characters, stderr texts, peak daemon RSS growth in bytes)."""
    process = psutil.Process(daemon.pid)
    before = peak = process.memory_info().rss
    stdout, stderr = 0, []
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with httpx.stream(
            "POST", f"{daemon.url}/execute", json={"code": code}, headers=CI_HEADERS, timeout=120
        ) as response:
            assert response.status_code == 200
            done.wait(pause)
            for raw in response.iter_lines():
                line = json.loads(raw)
                if line["type"] == "stdout":
                    stdout += len(line["text"])
                elif line["type"] == "stderr":
                    stderr.append(line["text"])
                elif line["type"] == "error":
                    raise AssertionError(line)
            assert line["type"] == "end_of_execution"
    finally:
        done.set()
        sampler.join()
    return stdout, stderr, peak - before


@pytest.mark.host_only
def test_a_flood_to_a_slow_reader_arrives_whole_and_memory_stays_bounded(daemon, sandbox):
    """200 MB printed while the client reads nothing for 3 s: all of it arrives
    (spooled to disk meanwhile), and the daemon grows by at most 64 MB."""
    sandbox.run_code("1")  # the default context exists before measuring
    stdout, stderr, growth = _stream_execute(daemon, FLOOD_CODE.format(mib=200), pause=3)
    assert (stdout, stderr) == (200 << 20, [])
    assert growth <= 64 << 20, f"daemon grew by {growth / (1 << 20):.0f} MB"
    assert sandbox.run_code("'ok'").text == "ok"


@pytest.mark.host_only
def test_output_past_the_cap_ends_with_a_truncation_marker(daemon, sandbox):
    stdout, stderr, _ = _stream_execute(daemon, FLOOD_CODE.format(mib=260))
    assert stdout == 256 << 20
    assert len(stderr) == 1 and "output truncated" in stderr[0]
    assert sandbox.run_code("'ok'").text == "ok"


async def test_fifty_concurrent_executions_across_ten_contexts(async_sandbox):
    contexts = await asyncio.gather(*(async_sandbox.create_code_context() for _ in range(10)))
    try:
        await asyncio.gather(*(async_sandbox.run_code("seen = []", context=c) for c in contexts))

        async def run(context, index: int):
            return await async_sandbox.run_code(
                f"import time; time.sleep(0.01); seen.append({index}); {index}", context=context, timeout=120
            )

        jobs = [run(contexts[i % 10], i) for i in range(50)]
        executions = await asyncio.gather(*jobs)
        assert [e.text for e in executions] == [str(i) for i in range(50)]
        for offset, context in enumerate(contexts):
            seen = (await async_sandbox.run_code("seen", context=context)).results[0].json
            mine = [(executions[i].execution_count, i) for i in range(offset, 50, 10)]
            assert sorted(seen) == [i for _, i in mine]
            # serialised: the kernel ran them one by one, in execution-count order
            assert seen == [i for _, i in sorted(mine)]
    finally:
        await asyncio.gather(*(async_sandbox.remove_code_context(c) for c in contexts))


def test_headers_and_keepalives_while_queued(daemon, sandbox):
    """A request queued behind a busy context gets its 200 at once and keepalives meanwhile."""
    context = sandbox.create_code_context()
    busy: list = []
    try:
        blocker = _stream_in_thread(
            daemon,
            {"code": "print('busy', flush=True)\nimport time; time.sleep(6)", "context_id": context.id},
            busy,
        )
        _wait_running(busy)
        with httpx.stream(
            "POST",
            f"{daemon.url}/execute",
            json={"code": "'after'", "context_id": context.id},
            headers=CI_HEADERS,
            timeout=60,
        ) as response:
            assert response.status_code == 200  # before the lock was free
            queued = [json.loads(line) for line in response.iter_lines()]
        blocker.join(30)
        assert {"type": "keepalive"} in busy + queued
        assert [line["type"] for line in queued if line["type"] != "keepalive"] == [
            "number_of_executions",
            "result",
            "end_of_execution",
        ]
    finally:
        sandbox.remove_code_context(context)


def test_headers_come_before_a_silent_run_ends(daemon, sandbox):
    """The JS SDK times out a request whose headers do not come: they wait neither for
    output nor for the first keepalive (5 s, above the read timeout here)."""
    context = sandbox.create_code_context()
    try:
        body = {"code": "import time; time.sleep(60)", "context_id": context.id}
        with httpx.stream(
            "POST", f"{daemon.url}/execute", json=body, headers=CI_HEADERS, timeout=httpx.Timeout(60, read=3)
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
        # leaving interrupted the sleep: the context answers again
        assert sandbox.run_code("'free'", context=context, timeout=30).text == "free"
    finally:
        sandbox.remove_code_context(context)


@pytest.mark.host_only
def test_daemon_stop_ends_streams_and_leaves_no_kernels(daemon_factory):
    extra = daemon_factory(code_interpreter=True)
    lines: list = []
    thread = _stream_in_thread(extra, {"code": "print('go', flush=True)\nimport time; time.sleep(60)"}, lines)
    _wait_running(lines)
    kernels = psutil.Process(extra.pid).children(recursive=True)
    assert kernels, "expected kernel processes under the daemon"
    assert extra.stop() == 0
    thread.join(30)
    assert [line["type"] for line in lines][-2:] == ["error", "end_of_execution"]
    assert lines[-2]["name"] == "UnexpectedEndOfExecution"
    gone, alive = psutil.wait_procs(kernels, timeout=10)
    assert alive == []

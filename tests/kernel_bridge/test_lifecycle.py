"""Context lifecycle races, cwd failures on restart, JS timeouts and spare kernels.

Driven through the real daemon (SDK or raw HTTP); kernel processes are counted
as the daemon's direct children with psutil.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import httpx
import psutil
import pytest
from e2b import TimeoutException

from tests.kernel_bridge.kernels import require_kernel

pytestmark = pytest.mark.timeout(180)

CI_HEADERS = {"E2b-Sandbox-Port": "49999", "Content-Type": "application/json"}


def _contexts(daemon) -> list[dict]:
    return httpx.get(f"{daemon.url}/contexts", headers=CI_HEADERS, timeout=30).json()


def _kernel_count(daemon) -> int:
    """Kernel processes = live direct children of the daemon."""
    count = 0
    for child in psutil.Process(daemon.pid).children(recursive=False):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                count += 1
        except psutil.NoSuchProcess:
            pass
    return count


def _kernel_backed(contexts: list[dict]) -> int:
    """Contexts with a kernel in a daemon whose default JavaScript context was never used.

    That default is listed from the start but starts its kernel on first use
    (docs/code-interpreter-api.md §4.3).
    """
    return len(contexts) - any(c["language"] == "javascript" for c in contexts)


def _settled_kernel_count(daemon, quiet: float = 4.0, timeout: float = 90.0) -> int:
    """The kernel count once it has not changed for `quiet` seconds (spares started, old ones gone)."""
    deadline = time.monotonic() + timeout
    last, since = _kernel_count(daemon), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _kernel_count(daemon)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"kernel count never settled (last {last})")


# ---------------------------------------------------------------- item 1: lazy default


def test_language_default_kept_when_client_gives_up_during_creation(daemon, sandbox):
    """A client that times out while the bash default is being created leaves exactly one bash context."""
    require_kernel("bash")
    for context in sandbox.list_code_contexts():
        if context.language == "bash":
            sandbox.remove_code_context(context)
    with pytest.raises(httpx.TimeoutException):  # gives up while the bash kernel starts
        httpx.post(
            f"{daemon.url}/execute",
            json={"code": "echo first", "language": "bash"},
            headers=CI_HEADERS,
            timeout=0.2,
        )
    again = sandbox.run_code("echo ok", language="bash", timeout=60)
    assert again.logs.stdout == ["ok\n"]
    assert sandbox.run_code("echo ok", language="bash", timeout=60).logs.stdout == ["ok\n"]
    assert [c["language"] for c in _contexts(daemon)].count("bash") == 1


def test_python_default_kept_when_client_gives_up_during_creation(daemon, sandbox):
    before = {c["id"] for c in _contexts(daemon)}
    # upstream quirk kept (docs/differences.md §6.3 item 8)
    deleted = httpx.delete(f"{daemon.url}/contexts/default", headers=CI_HEADERS, timeout=60)
    assert deleted.status_code == 200, deleted.text
    try:
        httpx.post(f"{daemon.url}/execute", json={"code": "1"}, headers=CI_HEADERS, timeout=0.01)
    except httpx.TimeoutException:
        pass
    assert sandbox.run_code("kb_default = 'x'; kb_default", timeout=60).text == "x"
    assert sandbox.run_code("kb_default", language="python", timeout=60).text == "x"
    new = [c for c in _contexts(daemon) if c["id"] not in before]
    assert [c["language"] for c in new] == ["python"]


# ---------------------------------------------------------------- item 2: delete during restart


@pytest.mark.host_only
async def test_delete_during_restart_leaks_no_kernel(daemon_factory):
    extra = daemon_factory(code_interpreter=True)
    async with httpx.AsyncClient(base_url=extra.url, headers=CI_HEADERS, timeout=60) as client:
        created = await client.post("/contexts", json={})
        assert created.status_code == 200, created.text
        context_id = created.json()["id"]
        first = await client.post(f"/contexts/{context_id}/restart")
        assert first.status_code == 200, first.text
        # The first restart used the spare; this one waits for the next spare to start...
        second = asyncio.ensure_future(client.post(f"/contexts/{context_id}/restart"))
        await asyncio.sleep(0.3)
        # ...and the context is deleted meanwhile.
        deleted = await client.delete(f"/contexts/{context_id}")
        assert deleted.status_code == 200, deleted.text
        await second
    contexts = _contexts(extra)
    assert context_id not in [c["id"] for c in contexts]
    assert _settled_kernel_count(extra) == _kernel_backed(contexts) + 1  # + the python spare
    assert "Traceback" not in extra.log_text()


# ---------------------------------------------------------------- item 3: cwd gone at restart


@pytest.mark.host_only
@pytest.mark.parametrize("language", ["bash", "python"])
def test_restart_with_removed_cwd_keeps_the_context(daemon, sandbox, language):
    require_kernel(language)
    path = tempfile.mkdtemp(prefix="kb-cwd-", dir="/tmp")
    context = sandbox.create_code_context(language=language, cwd=path)
    try:
        pwd = "pwd" if language == "bash" else "import os; print(os.getcwd())"
        assert sandbox.run_code(pwd, context=context).logs.stdout == [f"{path}\n"]
        os.rmdir(path)
        log_start = len(daemon.log_text())
        restarted = httpx.post(f"{daemon.url}/contexts/{context.id}/restart", headers=CI_HEADERS, timeout=60)
        assert (restarted.status_code, restarted.text) == (200, "null")
        check = "echo alive" if language == "bash" else "print('alive')"
        for _ in range(2):  # and no failed kernel start on every later run
            execution = sandbox.run_code(check, context=context, timeout=60)
            assert execution.error is None, execution.error
            assert execution.logs.stdout == ["alive\n"]
        log = daemon.log_text()[log_start:]
        if language == "bash":
            assert log.count("Failed to set working directory") == 1, log
    finally:
        sandbox.remove_code_context(context)


# ---------------------------------------------------------------- item 4: JS timeout


def test_javascript_timeout_interrupts_and_keeps_state(daemon, sandbox):
    """The Node.js kernel is interrupted (SIGINT): the same kernel goes on, with its variables."""
    require_kernel("javascript")
    context = sandbox.create_code_context(language="javascript")
    try:
        sandbox.run_code("globalThis.kbState = 41", context=context)
        log_start = len(daemon.log_text())
        with pytest.raises(TimeoutException):
            sandbox.run_code("while (true) {}", context=context, timeout=2)
        after = sandbox.run_code("kbState + 1", context=context, timeout=60)
        assert after.error is None, after.error
        assert after.text == "42"
        assert sandbox.run_code("1 + 1", context=context, timeout=60).text == "2"
        time.sleep(1.5)  # a watchdog tick: a kernel killed by the SIGINT would be reported now
        log = daemon.log_text()[log_start:]
        assert f"context {context.id}: kernel died" not in log, log
        assert "cannot be interrupted" not in log, log
        assert "WARNING" not in "\n".join(line for line in log.splitlines() if context.id in line), log
    finally:
        sandbox.remove_code_context(context)


def test_deno_timeout_replaces_kernel_without_death(daemon, sandbox):
    """Deno cannot be interrupted: the kernel is replaced on purpose (state lost), no crash is logged."""
    require_kernel("deno")
    context = sandbox.create_code_context(language="deno")
    try:
        sandbox.run_code("globalThis.kbState = 41", context=context)
        log_start = len(daemon.log_text())
        with pytest.raises(TimeoutException):
            sandbox.run_code("while (true) {}", context=context, timeout=2)
        after = sandbox.run_code("typeof kbState", context=context, timeout=60)
        assert after.error is None, after.error
        assert after.text == "undefined"  # documented: Deno state is lost on a timeout
        assert sandbox.run_code("1 + 1", context=context, timeout=60).text == "2"
        time.sleep(1.5)  # a watchdog tick: a SIGINT-killed kernel would be reported now
        log = daemon.log_text()[log_start:]
        assert f"context {context.id}: kernel died" not in log, log
        assert "WARNING" not in "\n".join(line for line in log.splitlines() if context.id in line), log
    finally:
        sandbox.remove_code_context(context)


# ---------------------------------------------------------------- item 5: json formatter


def test_nan_in_list_displays_as_null_json(sandbox):
    execution = sandbox.run_code("[float('nan'), 1]")
    assert execution.error is None, execution.error
    assert execution.results[0].json == [None, 1]


# ---------------------------------------------------------------- item 6: spares


@pytest.mark.host_only
def test_only_python_keeps_a_spare(daemon_factory):
    extra = daemon_factory(code_interpreter=True)
    contexts = _contexts(extra)
    assert _settled_kernel_count(extra) == _kernel_backed(contexts) + 1  # python spare only
    if "javascript" in [c["language"] for c in contexts]:  # a JS context is created on demand, no JS spare
        created = httpx.post(f"{extra.url}/contexts", json={"language": "js"}, headers=CI_HEADERS, timeout=60)
        assert created.status_code == 200, created.text
        assert _settled_kernel_count(extra) == _kernel_backed(_contexts(extra)) + 1
    created = httpx.post(f"{extra.url}/contexts", json={}, headers=CI_HEADERS, timeout=60)
    assert created.status_code == 200, created.text
    assert _settled_kernel_count(extra) == _kernel_backed(_contexts(extra)) + 1  # the python spare was refilled


@pytest.mark.host_only
def test_default_javascript_context_starts_on_first_use(daemon_factory):
    """Listed from the start, no kernel until used; a restart before that starts none (issue #18)."""
    require_kernel("javascript")
    extra = daemon_factory(code_interpreter=True)
    contexts = _contexts(extra)
    default = next(c for c in contexts if c["language"] == "javascript")
    assert default["cwd"] == [c for c in contexts if c["language"] == "python"][0]["cwd"]
    assert _settled_kernel_count(extra) == 2  # python default + spare
    restarted = httpx.post(f"{extra.url}/contexts/{default['id']}/restart", headers=CI_HEADERS, timeout=60)
    assert (restarted.status_code, restarted.text) == (200, "null")
    assert _kernel_count(extra) == 2

    # First use by id, twice at once: one kernel starts, both runs see it.
    async def run_twice() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=extra.url, headers=CI_HEADERS, timeout=60) as client:
            body = {"code": "globalThis.kbRuns = (globalThis.kbRuns || 0) + 1", "context_id": default["id"]}
            return await asyncio.gather(client.post("/execute", json=body), client.post("/execute", json=body))

    for response in asyncio.run(run_twice()):
        assert response.status_code == 200, response.text
    by_language = httpx.post(
        f"{extra.url}/execute", json={"code": "kbRuns", "language": "js"}, headers=CI_HEADERS, timeout=60
    )
    assert '"text":"2"' in by_language.text.replace(" ", ""), by_language.text
    assert _settled_kernel_count(extra) == 3
    assert _contexts(extra) == contexts  # the same contexts, in the same order

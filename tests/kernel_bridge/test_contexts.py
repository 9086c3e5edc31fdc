"""Contexts (docs/code-interpreter-api.md §2.3 to §2.6, §4.1, §4.4) and
HTTP-level validation (docs/code-interpreter-api.md §1.3, §1.4, §2.2).
"""

from __future__ import annotations

import json

import httpx
import pytest
from e2b import NotFoundException, SandboxException
from e2b_code_interpreter import Context

from tests.kernel_bridge.kernels import require_kernel

pytestmark = pytest.mark.timeout(120)

CI_HEADERS = {"E2b-Sandbox-Port": "49999", "Content-Type": "application/json"}


def _post(daemon, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{daemon.url}{path}", content=content, headers=CI_HEADERS, timeout=60, **kwargs)


def _lines(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    raw = response.content
    assert raw.endswith(b"\n") and b"\n\n" not in raw
    raw.decode("ascii")  # pure-ASCII lines (docs/code-interpreter-api.md §3.1)
    return [json.loads(line) for line in raw.splitlines()]


# ---------------------------------------------------------------- contexts via the SDK


def test_create_list_remove(sandbox):
    context = sandbox.create_code_context()
    listed = sandbox.list_code_contexts()
    assert listed[-1].id == context.id
    assert (listed[-1].language, listed[-1].cwd) == ("python", "/home/user")
    assert listed[0].language == "python"
    sandbox.remove_code_context(context)
    assert context.id not in [c.id for c in sandbox.list_code_contexts()]


def test_context_cwd_root_and_isolation(sandbox):
    sandbox.run_code("x_isolated = 1")
    context = sandbox.create_code_context(language="python", cwd="/root")
    try:
        assert sandbox.list_code_contexts()[-1].cwd == "/root"
        assert sandbox.run_code("import os; os.getcwd()", context=context).text == "/root"
        error = sandbox.run_code("x_isolated", context=context).error
        assert error.value == "name 'x_isolated' is not defined"
    finally:
        sandbox.remove_code_context(context)


def test_restart_clears_state_keeps_id_and_cwd(sandbox):
    context = sandbox.create_code_context(cwd="/tmp")
    try:
        sandbox.run_code("x = 1", context=context)
        sandbox.restart_code_context(context)
        error = sandbox.run_code("x", context=context).error
        assert (error.name, error.value) == ("NameError", "name 'x' is not defined")
        after = sandbox.run_code("import os; os.getcwd()", context=context)
        assert after.text == "/tmp"  # cwd re-applied after restart (docs/differences.md §6.2 item 1)
        assert after.execution_count == 2
        assert context.id in [c.id for c in sandbox.list_code_contexts()]
    finally:
        sandbox.remove_code_context(context)


def test_unknown_context_is_404(sandbox):
    ghost = Context(context_id="nope-123", language="python", cwd="/home/user")
    with pytest.raises(NotFoundException, match="Context nope-123 not found"):
        sandbox.run_code("1", context=ghost)
    with pytest.raises(NotFoundException):
        sandbox.remove_code_context(ghost)
    with pytest.raises(NotFoundException):
        sandbox.restart_code_context(ghost)


def test_unknown_language_names_installed_ones(sandbox):
    with pytest.raises(SandboxException) as info:
        sandbox.create_code_context(language="cobol")
    message = str(info.value)
    assert "500" in message and "Failed to create context" in message
    assert "cobol" in message and "python" in message
    with pytest.raises(SandboxException, match="Failed to create context"):
        sandbox.run_code("1", language="cobol")


def test_missing_cwd_fails_for_bash(sandbox):
    require_kernel("bash")
    with pytest.raises(SandboxException, match="Failed to set working directory"):
        sandbox.create_code_context(language="bash", cwd="/does/not/exist")


async def test_async_contexts(async_sandbox):
    context = await async_sandbox.create_code_context(cwd="/tmp")
    try:
        assert (await async_sandbox.run_code("import os; os.getcwd()", context=context)).text == "/tmp"
        await async_sandbox.restart_code_context(context)
        listed = await async_sandbox.list_code_contexts()
        assert context.id in [c.id for c in listed]
    finally:
        await async_sandbox.remove_code_context(context)


def test_deleted_default_is_recreated_lazily(daemon, sandbox):
    require_kernel("bash")
    created = sandbox.run_code("true", language="bash")  # lazily creates the bash default
    assert created.error is None
    bash_default = [c for c in sandbox.list_code_contexts() if c.language == "bash"][0]
    sandbox.remove_code_context(bash_default)
    again = sandbox.run_code("echo ok", language="bash")
    assert again.logs.stdout == ["ok\n"]
    assert [c.language for c in sandbox.list_code_contexts()].count("bash") == 1


# ---------------------------------------------------------------- raw HTTP


def test_execute_stream_shape(daemon):
    lines = _lines(_post(daemon, "/execute", {"code": "print('h\\u00e9')\n1"}))
    assert lines[0]["type"] == "number_of_executions"
    assert lines[1] == {"type": "stdout", "text": "h\u00e9\n", "timestamp": lines[1]["timestamp"]}
    assert lines[2] == {"type": "result", "text": "1", "extra": {}, "is_main_result": True}
    assert lines[-1] == {"type": "end_of_execution"}


@pytest.mark.parametrize(
    "body",
    [
        {"language": "python"},
        {"code": {"not": "a string"}},
        {"code": 1},
        {"code": "1", "env_vars": {"A": 1}},
        {"code": "1", "env_vars": ["A"]},
        {"code": "1", "context_id": 5},
        [1, 2],
        b"{not json",
    ],
)
def test_bad_execute_bodies_are_422(daemon, body):
    response = _post(daemon, "/execute", body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_bad_context_body_is_422(daemon):
    assert _post(daemon, "/contexts", {"cwd": 3}).status_code == 422


def test_context_and_language_is_400(daemon):
    response = _post(daemon, "/execute", {"code": "1", "context_id": "x", "language": "python"})
    assert response.status_code == 400
    assert response.text == "Only one of context_id or language can be provided"
    assert response.headers["content-type"].startswith("text/plain")


def test_unknown_context_raw_404(daemon):
    response = _post(daemon, "/execute", {"code": "1", "context_id": "abc"})
    assert (response.status_code, response.text) == (404, "Context abc not found")


def test_framework_errors_and_cors(daemon):
    missing = httpx.get(f"{daemon.url}/contexts/x/y/z", headers=CI_HEADERS)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = httpx.put(f"{daemon.url}/execute", headers=CI_HEADERS)
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})
    assert "POST" in wrong.headers["allow"]
    preflight = httpx.options(
        f"{daemon.url}/execute",
        headers={
            **CI_HEADERS,
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-custom",
        },
    )
    assert (preflight.status_code, preflight.text) == (200, "OK")
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "x-custom"
    assert preflight.headers["access-control-max-age"] == "600"
    listed = httpx.get(f"{daemon.url}/contexts", headers={**CI_HEADERS, "Origin": "http://o.test"})
    assert listed.headers["access-control-allow-origin"] == "*"
    streamed = httpx.post(
        f"{daemon.url}/execute",
        content=json.dumps({"code": "1"}),
        headers={**CI_HEADERS, "Origin": "http://o.test"},
    )
    assert streamed.headers["access-control-allow-origin"] == "*"


def test_delete_and_restart_bodies(daemon):
    created = _post(daemon, "/contexts", b"")  # lenient empty body
    assert created.status_code == 200
    context_id = created.json()["id"]
    restarted = httpx.post(f"{daemon.url}/contexts/{context_id}/restart", headers=CI_HEADERS, timeout=60)
    assert (restarted.status_code, restarted.text) == (200, "null")
    deleted = httpx.delete(f"{daemon.url}/contexts/{context_id}", headers=CI_HEADERS, timeout=60)
    assert (deleted.status_code, deleted.text) == (200, "null")


def test_health_is_json_ok(daemon):
    response = httpx.get(f"{daemon.url}/health", headers=CI_HEADERS)
    assert (response.status_code, response.content) == (200, b'"OK"')


@pytest.mark.host_only
def test_python_cwd_with_special_characters(sandbox, tmp_path_factory):
    odd = tmp_path_factory.mktemp("cwd") / "a $HOME {x} 'q\" dir"
    odd.mkdir()
    context = sandbox.create_code_context(cwd=str(odd))
    try:
        assert sandbox.run_code("import os; print(os.getcwd())", context=context).logs.stdout == [f"{odd}\n"]
    finally:
        sandbox.remove_code_context(context)


def test_python_missing_cwd_still_creates_context(sandbox):
    context = sandbox.create_code_context(cwd="/does/not/exist")
    try:
        assert context.cwd == "/does/not/exist"
        assert sandbox.run_code("import os; os.getcwd()", context=context).text == "/home/user"
        assert sandbox.run_code("'_e2b_cd_error' in dir()", context=context).text == "False"
    finally:
        sandbox.remove_code_context(context)

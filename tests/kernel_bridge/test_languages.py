"""Non-Python kernels (docs/code-interpreter-api.md §5.2, §5.3, §4.4;
the SDK's test_default_kernels / test_cwd) and pure helpers.

Kernels that are not installed are skipped with the reason printed.
"""

from __future__ import annotations

import json

import pytest

from kernel_bridge import languages, messages
from tests.kernel_bridge.kernels import require_kernel

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- JavaScript / TypeScript


def test_javascript_default_context_listed(sandbox):
    require_kernel("javascript")
    assert {"python", "javascript"} <= {c.language for c in sandbox.list_code_contexts()}


@pytest.mark.parametrize(
    "code, stdout",
    [
        ("console.log('Hello, World!')", ["Hello, World!\n"]),
        ("import { readFileSync } from 'fs'\nconsole.log(typeof readFileSync)", ["function\n"]),
        ("const message: string = 'Hello, World!'\nconsole.log(message)", ["Hello, World!\n"]),
    ],
)
def test_javascript_stdout(sandbox, code, stdout):
    require_kernel("javascript")
    execution = sandbox.run_code(code, language="js")
    assert execution.error is None, execution.error
    assert execution.logs.stdout == stdout


def test_javascript_await_result_and_error(sandbox):
    require_kernel("javascript")
    for _ in range(3):  # no result may be lost (Deno published them after `idle`)
        assert sandbox.run_code("await Promise.resolve('Hello World!')", language="js").text == "Hello World!"
    error = sandbox.run_code("throw new Error('boom')", language="js").error
    assert error.value == "boom"


@pytest.mark.parametrize("language", ["js", "ts"])
def test_javascript_cwd(sandbox, language):
    require_kernel(languages.normalise(language))
    assert sandbox.run_code("process.cwd()", language=language).text == "/home/user"


def test_typescript_is_a_separate_kernel(sandbox):
    require_kernel("typescript")
    sandbox.run_code("globalThis.kbShared = 'js'", language="js")
    result = sandbox.run_code("typeof globalThis.kbShared", language="ts")
    assert result.text == "undefined"


async def test_async_typescript(async_sandbox):
    require_kernel("typescript")
    execution = await async_sandbox.run_code(
        "const message: string = 'Hello, World!'\nconsole.log(message)", language="ts"
    )
    assert execution.logs.stdout == ["Hello, World!\n"]


def test_javascript_context_with_cwd(sandbox):
    require_kernel("javascript")
    context = sandbox.create_code_context(language="javascript", cwd="/tmp")
    try:
        assert sandbox.run_code("process.cwd()", context=context).text == "/tmp"
    finally:
        sandbox.remove_code_context(context)


@pytest.mark.parametrize("language", ["javascript", "deno"])
def test_javascript_timeout_then_next_run_works(sandbox, language):
    """Node.js is interrupted, Deno (which dies on SIGINT) replaced; the context keeps serving.

    docs/code-interpreter-api.md §4.10, §4.11.
    """
    require_kernel(language)
    from e2b import TimeoutException

    context = sandbox.create_code_context(language=language)
    try:
        with pytest.raises(TimeoutException):
            sandbox.run_code("while (true) {}", context=context, timeout=2)
        assert sandbox.run_code("1 + 1", context=context, timeout=60).text == "2"
    finally:
        sandbox.remove_code_context(context)


def test_javascript_results_look_like_node(sandbox):
    """Node.js's util.inspect, as E2B's JavaScript kernel shows them; strings without quotes."""
    require_kernel("javascript")
    assert sandbox.run_code("({a: 1, b: [1, 2]})", language="js").text == "{ a: 1, b: [ 1, 2 ] }"
    assert sandbox.run_code("'it' + 's'", language="js").text == "its"
    assert sandbox.run_code("let kbUndefined; kbUndefined", language="js").results == []


def test_deno_language(sandbox):
    """`deno` is Deno's own kernel (E2B's template has it too): cwd and env vars as for JavaScript."""
    require_kernel("deno")
    assert sandbox.run_code("process.cwd()", language="deno").text == "/home/user"
    execution = sandbox.run_code("Deno.env.get('KB_DENO')", language="deno", envs={"KB_DENO": "yes"})
    assert execution.text == "yes"


# ---------------------------------------------------------------- bash


def test_bash_state_and_cwd(sandbox):
    require_kernel("bash")
    context = sandbox.create_code_context(language="bash", cwd="/tmp")
    try:
        assert sandbox.run_code("pwd", context=context).logs.stdout == ["/tmp\n"]
        sandbox.run_code("export KB_STATE=kept; cd /", context=context)
        execution = sandbox.run_code('echo "$KB_STATE $(pwd)"', context=context)
        assert execution.logs.stdout == ["kept /\n"]
    finally:
        sandbox.remove_code_context(context)


def test_bash_default_cwd(sandbox):
    require_kernel("bash")
    assert sandbox.run_code("pwd", language="bash").logs.stdout == ["/home/user\n"]


# ---------------------------------------------------------------- R / Java


def test_r_print(sandbox):
    require_kernel("r")
    assert sandbox.run_code('print("Hello, World!")', language="r").logs.stdout == ['[1] "Hello, World!"\n']
    assert sandbox.run_code("getwd()", language="r").results[0].text == '[1] "/home/user"'


def test_java_println_and_cwd(sandbox):
    require_kernel("java")
    execution = sandbox.run_code('System.out.println("Hello, World!");', language="java")
    # IJava 1.3 sends the newline as its own chunk, JJava does not; chunks are relayed as sent
    assert execution.logs.stdout[0].rstrip("\n") == "Hello, World!"
    assert "".join(execution.logs.stdout) == "Hello, World!\n"
    assert sandbox.run_code('System.getProperty("user.dir")', language="java").text == "/home/user"


# ---------------------------------------------------------------- pure helpers


def test_normalise():
    assert [languages.normalise(x) for x in (None, "", "  JS ", "ts", "Python", "node")] == [
        "python",
        "python",
        "javascript",
        "typescript",
        "python",
        "node",
    ]


@pytest.mark.parametrize("value", ["plain", "it's", 'q"uote', "back\\slash", "new\nline", "caf\u00e9\u2028"])
def test_literals_round_trip(value):
    assert eval(languages.py_literal(value)) == value  # noqa: S307 - our own literal
    assert json.loads(languages.js_literal(value)) == value
    java = languages.java_literal(value)
    assert java.startswith('"') and "\n" not in java
    shell = languages.sh_literal(value)
    assert shell.startswith("'") and shell.endswith("'")


def test_env_override_code_saves_before_setting():
    code = languages.env_override_code("python", {"A": "1"})
    assert code == "import os; _envd_saved = {k: os.environ.get(k) for k in ('A',)}\nimport os; os.environ['A'] = '1'"
    assert languages.env_override_code("bash", {"not-valid": "x"}) is None
    assert languages.env_restore_code("bash", ["not-valid"]) is None
    assert languages.env_set_code("bash", {"not-valid": "x", "OK": "it's"}) == "export OK='it'\\''s'"
    assert languages.env_set_code("cobol", {"A": "1"}) is None


def test_result_line_shape():
    line = messages.result_line(
        {"text/plain": "'x'", "image/png": "AA==", "e2b/chart": {}, "application/vnd.x": 1}, False
    )
    assert line == {
        "type": "result",
        "text": "x",
        "png": "AA==",
        "chart": {},
        "extra": {"application/vnd.x": 1},
        "is_main_result": False,
    }
    assert messages.strip_quotes("'") == ""
    assert messages.strip_quotes('[1] "bar"') == '[1] "bar"'


def test_encode_line_is_ascii():
    raw = messages.encode_line({"type": "stdout", "text": "\u2028\u00e9", "timestamp": "t"})
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    raw.decode("ascii")

"""Per-execution environment variables for every installed language (docs/code-interpreter-api.md §4.5).

Languages whose kernel is not installed are skipped with the reason printed.
Global (sandbox-level) variables come from envd's table, set through `/init`.
"""

from __future__ import annotations

import httpx
import pytest

from tests.kernel_bridge.kernels import require_kernel

pytestmark = pytest.mark.timeout(120)

# language -> (code whose result is FOO or "default", code printing FOO)
READERS = {
    "python": ("import os; os.getenv('FOO', 'default')", "import os; print(os.environ['FOO'])"),
    "javascript": ("process.env.FOO || 'default'", "console.log(process.env.FOO)"),
    "typescript": ("const foo: string = process.env.FOO || 'default'\nfoo", "console.log(process.env.FOO)"),
    "bash": ("echo ${FOO:-default}", 'echo "$FOO"'),
    "r": ("Sys.getenv('FOO', unset='default')", "cat(Sys.getenv('FOO'), '\\n', sep='')"),
    "java": ('System.getProperty("FOO", "default")', 'System.out.println(System.getProperty("FOO"));'),
}
EXPECTED = {"python": "{}", "javascript": "{}", "typescript": "{}", "bash": "{}", "r": '[1] "{}"', "java": "{}"}
TRICKY = "b'a\"r\\ $x\u00e9"


def _value(language: str, execution) -> str:
    if language == "bash":
        return "".join(execution.logs.stdout).strip()
    return execution.results[0].text.strip()  # IRkernel shows values as display_data


@pytest.mark.parametrize("language", sorted(READERS))
def test_env_vars_per_execution(sandbox, language):
    require_kernel(language)
    code, printing = READERS[language]
    with_env = sandbox.run_code(code, language=language, envs={"FOO": "bar"})
    assert with_env.error is None, with_env.error
    assert _value(language, with_env) == EXPECTED[language].format("bar")
    after = sandbox.run_code(code, language=language)
    assert _value(language, after) == EXPECTED[language].format("default")
    # quotes, backslash, dollar and non-ASCII are passed as literals, never interpreted
    tricky = sandbox.run_code(printing, language=language, envs={"FOO": TRICKY})
    assert "".join(tricky.logs.stdout) == TRICKY + "\n"


# language -> code that sets FOO in the kernel itself, as a user's cell would
SETTERS = {
    "python": "import os; os.environ['FOO'] = 'mine'",
    "javascript": "process.env.FOO = 'mine'",
    "typescript": "process.env.FOO = 'mine'",
    "bash": "export FOO=mine",
    "r": "Sys.setenv(FOO = 'mine')",
    "java": 'System.setProperty("FOO", "mine");',
}
UNSETTERS = {
    "python": "import os; os.environ.pop('FOO', None)",
    "javascript": "delete process.env.FOO",
    "typescript": "delete process.env.FOO",
    "bash": "unset FOO",
    "r": "Sys.unsetenv('FOO')",
    "java": 'System.clearProperty("FOO");',
}


@pytest.mark.parametrize("language", sorted(READERS))
def test_an_override_restores_what_the_kernel_had(sandbox, language):
    """After a run with envs, each variable is back to its value before the run, not just unset."""
    require_kernel(language)
    code, _ = READERS[language]
    context = sandbox.create_code_context(language=language)
    try:
        assert sandbox.run_code(SETTERS[language], context=context).error is None
        overridden = sandbox.run_code(code, context=context, envs={"FOO": "override"})
        assert _value(language, overridden) == EXPECTED[language].format("override")
        assert _value(language, sandbox.run_code(code, context=context)) == EXPECTED[language].format("mine")
        assert sandbox.run_code(UNSETTERS[language], context=context).error is None
        sandbox.run_code(code, context=context, envs={"FOO": "override"})
        assert _value(language, sandbox.run_code(code, context=context)) == EXPECTED[language].format("default")
    finally:
        sandbox.remove_code_context(context)


def test_python_env_visible_to_child_processes(sandbox):
    execution = sandbox.run_code("!echo $CHILD_VAR", envs={"CHILD_VAR": "inherited"})
    assert "".join(execution.logs.stdout).strip() == "inherited"


def test_env_setup_does_not_shift_tracebacks_or_break_cell_magics(sandbox):
    execution = sandbox.run_code("%%capture out\nprint('hidden')", envs={"X": "1"})
    assert execution.error is None
    assert execution.logs.stdout == []
    error = sandbox.run_code("a = 1\nb = 2\nraise ValueError('line3')", envs={"X": "1"}).error
    assert "line 3" in error.traceback


async def test_async_env_vars(async_sandbox):
    execution = await async_sandbox.run_code("import os; os.environ['FOO']", envs={"FOO": "async"})
    assert execution.text == "async"
    assert (await async_sandbox.run_code("import os; os.getenv('FOO', 'default')")).text == "default"


def test_global_env_overwrite_and_restore(daemon, sandbox):
    """Global vars from envd `/init` reach a fresh context; per-execution values override then restore."""
    response = httpx.post(
        f"{daemon.url}/init",
        json={"envVars": {"TEST_ENV_VAR": "supertest"}},
        headers={"E2b-Sandbox-Port": "49983"},
        timeout=10,
    )
    if response.status_code >= 300:
        pytest.skip(f"envd /init not available in this daemon: {response.status_code} {response.text}")
    context = sandbox.create_code_context()
    try:
        read = "import os; os.getenv('TEST_ENV_VAR')"
        assert sandbox.run_code(read, context=context).text == "supertest"
        overwritten = sandbox.run_code(read, context=context, envs={"TEST_ENV_VAR": "overwrite"})
        assert overwritten.text == "overwrite"
        assert sandbox.run_code(read, context=context).text == "supertest"
        sandbox.restart_code_context(context)
        # re-injected after the restart (docs/differences.md §6.2 item 2)
        assert sandbox.run_code(read, context=context).text == "supertest"
    finally:
        sandbox.remove_code_context(context)


def test_pip_in_a_notebook_is_the_kernels_own(sandbox):
    """`!pip install` must land where the kernel imports from, whatever PATH the daemon had."""
    execution = sandbox.run_code(
        "import os, shutil, sys\n"
        "here = os.path.dirname(sys.executable)\n"
        "print(os.environ['PATH'].split(os.pathsep)[0] == here,"
        " shutil.which('pip') == os.path.join(here, 'pip'))"
    )
    assert execution.logs.stdout == ["True True\n"], execution

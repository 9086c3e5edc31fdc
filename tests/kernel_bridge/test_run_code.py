"""Core `run_code` behaviour through the official SDK, sync and async (docs/code-interpreter-api.md §3, §4, §5.1)."""

from __future__ import annotations

import uuid

import pytest
from e2b import InvalidArgumentException

pytestmark = pytest.mark.timeout(120)


def _name() -> str:
    """A fresh variable name: tests share the session daemon's default context."""
    return "v_" + uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- sync


def test_basic_result_and_stdout(sandbox):
    execution = sandbox.run_code("print('hi')\nx_basic = 1; x_basic")
    assert execution.text == "1"
    assert execution.results[0].is_main_result
    assert execution.logs.stdout == ["hi\n"]
    assert execution.error is None
    assert isinstance(execution.execution_count, int)


def test_statefulness(sandbox):
    name = _name()
    sandbox.run_code(f"{name} = 1")
    assert sandbox.run_code(f"{name} += 1; {name}").text == "2"


def test_callbacks_called_once_per_line(sandbox):
    seen: dict[str, list] = {"out": [], "err": [], "res": [], "error": []}
    execution = sandbox.run_code(
        "import sys\nprint('Hello from e2b')\nprint('This is an error message', file=sys.stderr)\n7",
        on_stdout=seen["out"].append,
        on_stderr=seen["err"].append,
        on_result=seen["res"].append,
        on_error=seen["error"].append,
    )
    assert [m.line for m in seen["out"]] == ["Hello from e2b\n"]
    assert [m.line for m in seen["err"]] == ["This is an error message\n"]
    assert seen["out"][0].timestamp.endswith("+00:00")
    assert [r.text for r in seen["res"]] == ["7"]
    assert seen["error"] == []
    assert execution.logs.stderr == ["This is an error message\n"]


def test_first_error_only(sandbox):
    errors = []
    execution = sandbox.run_code("xyz_undefined_name", on_error=errors.append)
    assert len(errors) == 1
    assert execution.error.name == "NameError"
    assert execution.error.value == "name 'xyz_undefined_name' is not defined"
    assert "\x1b[" not in execution.error.traceback  # NoColor tracebacks


def test_quote_stripping_and_plain_strings(sandbox):
    assert sandbox.run_code("'bar'").text == "bar"
    assert sandbox.run_code('"it\'s"').text == "it's"
    assert sandbox.run_code("'a' + \"'\"").text == "a'"


def test_non_ascii_and_line_separators_survive(sandbox):
    execution = sandbox.run_code("print('caf\\u00e9 \\u2028 end')")
    assert execution.logs.stdout == ["caf\u00e9 \u2028 end\n"]


def test_shell_escape_uses_home_cwd(sandbox):
    execution = sandbox.run_code("!pwd")
    assert "".join(execution.logs.stdout).strip() == "/home/user"


def test_indented_cell(sandbox):
    execution = sandbox.run_code("\n        a_ind = 40\n        a_ind + 2")
    assert execution.text == "42"


def test_execution_count_counts_only_user_cells(sandbox):
    context = sandbox.create_code_context()
    try:
        first = sandbox.run_code("echo 'E2B is awesome!'", context=context, envs={"A": "1"})
        assert first.error.name == "SyntaxError"
        assert first.execution_count == 1
        second = sandbox.run_code("!pwd", context=context, envs={"B": "2"})
        assert second.execution_count == 2
    finally:
        sandbox.remove_code_context(context)


def test_thousands_of_kernel_messages_arrive_complete_and_in_order(sandbox):
    """Each flush is one IOPub message: far more than one socket read batch."""
    execution = sandbox.run_code("for i in range(3000): print(i, flush=True)\n'done'")
    assert "".join(execution.logs.stdout) == "".join(f"{i}\n" for i in range(3000))
    assert execution.text == "done"


def test_history_lives_in_memory(sandbox):
    """No SQLite history file is written, yet In/Out/_i/%history still work."""
    context = sandbox.create_code_context()
    try:
        sandbox.run_code("a_hist = 40", context=context)
        assert sandbox.run_code("a_hist + 2", context=context).text == "42"
        assert sandbox.run_code("Out[2], In[1], _i", context=context).text == ("(42, 'a_hist = 40', 'a_hist + 2')")
        listing = sandbox.run_code("%history -n 1-2", context=context).logs.stdout
        assert "".join(listing).split("\n")[:2] == ["   1: a_hist = 40", "   2: a_hist + 2"]
        manager = sandbox.run_code(
            "h = get_ipython().history_manager; (h.enabled, type(h.db).__name__)", context=context
        )
        assert manager.text == "(False, 'DummyDB')"
    finally:
        sandbox.remove_code_context(context)


def test_context_and_language_is_rejected_by_sdk(sandbox):
    context = sandbox.create_code_context()
    try:
        with pytest.raises(InvalidArgumentException):
            sandbox.run_code("1", context=context, language="python")
    finally:
        sandbox.remove_code_context(context)


def test_input_fails_instead_of_blocking(sandbox):
    execution = sandbox.run_code("input('x')")
    assert execution.error is not None
    assert execution.error.name == "StdinNotImplementedError"


# ---------------------------------------------------------------- rich output


def test_display_data_matplotlib(sandbox):
    execution = sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()")
    assert len(execution.results) == 1
    result = execution.results[0]
    assert result.png
    assert result.text.startswith("<Figure size")
    assert not result.extra
    assert not result.is_main_result


def test_streaming_figure_then_expression_two_results(sandbox):
    results = []
    sandbox.run_code(
        "import matplotlib.pyplot as plt\nfig = plt.figure()\nplt.plot([1, 2])\nx_fig = 3\nx_fig",
        on_result=results.append,
    )
    assert len(results) == 2
    assert [r.is_main_result for r in results].count(True) == 1


def test_dataframe_data(sandbox):
    execution = sandbox.run_code(
        "\n        import pandas as pd\n        pd.DataFrame({'a': [1, 2, 3], 't': pd.to_datetime(['2024-01-01'] * 3)})"
    )
    result = execution.results[0]
    assert result.data["a"] == [1, 2, 3]
    assert result.data["t"][0] == "2024-01-01T00:00:00"
    assert result.html
    assert result.json is None


def test_json_for_containers_only(sandbox):
    assert sandbox.run_code("[1, 2]").results[0].json == [1, 2]
    assert sandbox.run_code("{1: 'a'}").results[0].json == {"1": "a"}
    assert sandbox.run_code("(1, 2)").results[0].json is None
    assert sandbox.run_code("[{1, 2}]").results[0].json is None


def test_custom_repr_raw_display(sandbox):
    execution = sandbox.run_code("display({'text/latex': r'\\text{CustomReprObject}'}, raw=True)")
    assert execution.results[0].formats() == ["latex"]
    assert not execution.results[0].extra


def test_custom_repr_methods(sandbox):
    code = """
class Rich:
    def _repr_html_(self): return '<b>x</b>'
    def _repr_markdown_(self): return '**x**'
    def _repr_e2b_data_(self): return {'k': [1]}
    def _repr_mimebundle_(self, include=None, exclude=None): return {'application/x-custom': 'c'}
    def __repr__(self): return 'Rich()'
Rich()
"""
    result = sandbox.run_code(code).results[0]
    assert result.text == "Rich()"
    assert result.html == "<b>x</b>"
    assert result.markdown == "**x**"
    assert result.data == {"k": [1]}
    assert result.extra == {"application/x-custom": "c"}


def test_ipython_display_objects(sandbox):
    execution = sandbox.run_code("from IPython.display import HTML, display\ndisplay(HTML('<i>y</i>'))\ndisplay('q')")
    assert execution.results[0].html == "<i>y</i>"
    assert execution.results[0].text == "<IPython.core.display.HTML object>"
    assert execution.results[1].text == "q"


def test_pil_images(sandbox):
    code = """
from PIL import Image
img = Image.new('RGBA', (16, 16), (255, 0, 0, 255))
img.show()
print('shown')
"""
    execution = sandbox.run_code(code)
    assert execution.error is None
    assert execution.logs.stdout == ["shown\n"]
    assert len(execution.results) == 1 and execution.results[0].png
    assert sandbox.run_code("img").results[0].png
    saved = sandbox.run_code("img.save('kb_test.png')\nimport os\nos.remove('kb_test.png')")
    assert saved.error is None
    assert saved.results[0].png


# ---------------------------------------------------------------- async


async def test_async_basic_and_callbacks(async_sandbox):
    out = []

    async def on_stdout(message):
        out.append(message.line)

    execution = await async_sandbox.run_code("print(1)\nx_async = 5; x_async", on_stdout=on_stdout)
    assert out == ["1\n"]
    assert execution.text == "5"


async def test_async_statefulness_and_error(async_sandbox):
    name = _name()
    await async_sandbox.run_code(f"{name} = 10")
    assert (await async_sandbox.run_code(f"{name} * 2")).text == "20"
    execution = await async_sandbox.run_code("1/0")
    assert execution.error.name == "ZeroDivisionError"


async def test_async_display_and_dataframe(async_sandbox):
    execution = await async_sandbox.run_code(
        "import pandas as pd\nimport matplotlib.pyplot as plt\nplt.bar(['a','b'],[1,2])\nplt.show()\n"
        "pd.DataFrame({'z': [1.5, None]})"
    )
    assert execution.results[0].png
    assert execution.results[1].data == {"z": [1.5, None]}

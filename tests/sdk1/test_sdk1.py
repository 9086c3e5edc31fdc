"""Every surface of `e2b` 1.0.5 / `e2b-code-interpreter` 1.0.2 against the daemon.

The 1.x Connect client parses JSON strictly: one response field it does not
know fails the call, so the daemon gives it only what it knows
(envd/connect/compat.py). Running in this environment is the proof.
"""

from __future__ import annotations

import uuid

import pytest
from e2b import CommandExitException, NotFoundException
from e2b.sandbox.commands.command_handle import PtySize
from e2b.sandbox.filesystem.filesystem import FileType
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def workdir(sandbox) -> str:
    path = f"/home/user/sdk1-{uuid.uuid4().hex[:8]}"
    assert sandbox.files.make_dir(path) is True
    return path


def test_files_return_entries_the_old_sdk_can_parse(sandbox, workdir: str) -> None:
    written = sandbox.files.write(f"{workdir}/a.txt", "one")
    # (1.x's write answers with the upload's JSON, where the type is a plain string)
    assert (written.name, written.path, FileType(written.type)) == ("a.txt", f"{workdir}/a.txt", FileType.FILE)
    assert sandbox.files.read(f"{workdir}/a.txt") == "one"
    assert sandbox.files.exists(f"{workdir}/a.txt")
    assert sandbox.files.make_dir(f"{workdir}/sub") is True
    assert sandbox.files.make_dir(f"{workdir}/sub") is False
    listed = {entry.name: FileType(entry.type) for entry in sandbox.files.list(workdir)}
    assert listed == {"a.txt": FileType.FILE, "sub": FileType.DIR}
    moved = sandbox.files.rename(f"{workdir}/a.txt", f"{workdir}/sub/b.txt")
    assert moved.path == f"{workdir}/sub/b.txt"
    sandbox.files.remove(f"{workdir}/sub")
    assert not sandbox.files.exists(f"{workdir}/sub")
    with pytest.raises(NotFoundException):
        sandbox.files.read(f"{workdir}/missing.txt")


def test_watch_dir_events(sandbox, workdir: str) -> None:
    handle = sandbox.files.watch_dir(workdir)
    sandbox.files.write(f"{workdir}/w.txt", "x")
    events = handle.get_new_events()
    handle.stop()
    assert ("w.txt", FilesystemEventType.CREATE) in [(e.name, e.type) for e in events]


def test_commands_with_callbacks_exit_codes_and_background(sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = sandbox.commands.run("echo hello; echo oops >&2", on_stdout=out.append, on_stderr=err.append)
    assert (result.stdout, result.stderr, result.exit_code) == ("hello\n", "oops\n", 0)
    assert "".join(out) == "hello\n" and "".join(err) == "oops\n"
    assert sandbox.commands.run("echo $X", envs={"X": "from-envs"}).stdout == "from-envs\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    with pytest.raises(CommandExitException) as failed:
        sandbox.commands.run("exit 3")
    assert failed.value.exit_code == 3
    background = sandbox.commands.run("sleep 600", background=True)
    assert background.pid in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.kill(background.pid) is True


def test_pty(sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"echo pty-$((40 + 2)); exit\n")
    seen: list[bytes] = []
    terminal.wait(on_pty=seen.append)
    assert b"pty-42" in b"".join(seen)


def test_run_code_state_results_errors_and_contexts(sandbox) -> None:
    sandbox.run_code("x = 41")
    assert sandbox.run_code("x + 1").text == "42"
    printed = sandbox.run_code("print('out')")
    assert printed.logs.stdout == ["out\n"]
    error = sandbox.run_code("1 / 0").error
    assert error is not None and error.name == "ZeroDivisionError"
    frame = sandbox.run_code("import pandas as pd; pd.DataFrame({'a': [1, 2]})")
    assert frame.results and frame.results[0].html and "<table" in frame.results[0].html
    chart = sandbox.run_code(
        "import matplotlib.pyplot as plt; plt.plot([1, 2, 3], [4, 5, 6]); plt.title('t'); plt.show()"
    )
    assert chart.results and chart.results[0].png
    assert chart.results[0].chart is not None and chart.results[0].chart.title == "t"
    context = sandbox.create_code_context(cwd="/tmp")
    assert sandbox.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    bash = sandbox.run_code("echo $((6 * 7))", language="bash")
    assert "42" in "".join(bash.logs.stdout)


def test_per_execution_envs(sandbox) -> None:
    with_env = sandbox.run_code("import os; os.environ.get('ONLY_HERE')", envs={"ONLY_HERE": "yes"})
    assert with_env.text == "yes"
    assert sandbox.run_code("import os; os.environ.get('ONLY_HERE', 'gone')").text == "gone"

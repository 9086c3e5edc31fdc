"""The requested user's credentials hold from a process's first instruction.

A library named in `LD_PRELOAD` (or the loader's other variables) runs its
constructor in every program the loader starts with it: it must only ever see
the user's uid, never the root the daemon's helpers start as; and the program
itself must still get it, as the request asked.
"""

from __future__ import annotations

import uuid

from e2b.sandbox.commands.command_handle import PtySize

RECORDER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void record(void) {
    FILE *log = fopen(getenv("UID_LOG") ? getenv("UID_LOG") : "/dev/null", "a");
    if (log) { fprintf(log, "%d\n", (int)getuid()); fclose(log); }
}
"""


def _build_recorder(sandbox) -> tuple[str, str]:
    """A preload library compiled in the sandbox by `user`, and a log anyone may append to."""
    name = f"/tmp/uid-recorder-{uuid.uuid4().hex[:8]}"
    sandbox.files.write(f"{name}.c", RECORDER)
    built = sandbox.commands.run(f"gcc -shared -fPIC -o {name}.so {name}.c && touch {name}.log && chmod 666 {name}.log")
    assert built.exit_code == 0, built.stderr
    return f"{name}.so", f"{name}.log"


def _uids(sandbox, log: str) -> list[str]:
    return sandbox.files.read(log).split()


def test_preloaded_library_never_runs_as_root_in_commands(sandbox) -> None:
    library, log = _build_recorder(sandbox)
    for key in ("LD_PRELOAD", "LD_AUDIT"):
        envs = {key: library, "UID_LOG": log}
        result = sandbox.commands.run("id -u", envs=envs)
        uid = result.stdout.strip()
        assert uid != "0"
        uids = _uids(sandbox, log)
        assert uids, "the program itself must still get the loader variable"
        assert set(uids) == {uid}, f"{key}: constructor ran with uids {uids}"
        sandbox.files.write(log, "")


def test_preloaded_library_never_runs_as_root_in_terminals(sandbox) -> None:
    library, log = _build_recorder(sandbox)
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"LD_PRELOAD": library, "UID_LOG": log})
    sandbox.pty.send_stdin(terminal.pid, b"exit\n")
    assert terminal.wait().exit_code == 0
    uids = _uids(sandbox, log)
    assert uids and "0" not in uids, uids


def test_loader_variables_still_reach_root_commands(sandbox) -> None:
    """As root there is nothing to protect: the variable simply applies."""
    library, log = _build_recorder(sandbox)
    sandbox.commands.run("true", user="root", envs={"LD_PRELOAD": library, "UID_LOG": log})
    assert set(_uids(sandbox, log)) == {"0"}

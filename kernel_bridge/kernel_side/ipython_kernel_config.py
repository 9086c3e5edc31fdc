# IPython kernel configuration passed with `--config=<this file>` by the daemon
# (docs/code-interpreter-api.md §5.1 item 1). Loaded by traitlets, which
# defines `c`, `get_config` and `__file__`.
import os as _os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the traitlets loader provides `get_config` when it runs this file
    from traitlets.config import Config

    def get_config() -> Config: ...


c = get_config()

# Tracebacks without ANSI escapes; long containers never truncated with '...'.
c.InteractiveShell.colors = "nocolor"
c.PlainTextFormatter.max_seq_length = 0

# No SQLite history: by default every execution is written to the user's
# ~/.ipython/.../history.sqlite by a saving thread (about 0.9 ms of kernel CPU
# per run_code), and concurrent kernels contend for that one file. `In`, `Out`,
# `_i`, `%history` and `%rerun` keep working from the in-memory history.
c.HistoryManager.enabled = False

# Output flow control must be in place before the kernel's streams exist.
_here = _os.path.dirname(_os.path.abspath(__file__))
__import__("runpy").run_path(_os.path.join(_here, "output.py"), run_name="__e2b_kernel_output__")

# Run startup.py in its own namespace (runpy) so nothing leaks into the user's
# globals; store_history is off for exec_lines, so the execution counter stays at 1.
# The line's value is None: the displayhook ignores the `;` of an exec line, and
# showing run_path's result (startup.py's globals) bound them to `_` in the user
# namespace and had the JSON formatter import numpy (~14 MB per kernel).
_startup = _os.path.join(_here, "startup.py")
c.IPKernelApp.exec_lines = [f"__import__('runpy').run_path({_startup!r}, run_name='__e2b_kernel_startup__') and None"]

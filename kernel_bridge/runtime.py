"""What the daemon's kernels run with: a per-daemon scratch directory and their environment.

Nothing here happens at import: `RuntimeDir()` creates the directory and
`kernel_environment` reads `os.environ`, both called by `Registry.open`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

log = logging.getLogger(__name__)

# Variables of the daemon that must not leak into user kernels.
_PRIVATE_ENV_PREFIXES = ("ENVD_", "E2B_ACCESS_TOKEN")
_DROPPED_ENV = ("MPLBACKEND", "JPY_PARENT_PID", "JPY_SESSION_NAME")

_CJK_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKjp-Regular.otf",
)


class RuntimeDir:
    """Per-daemon scratch directory: the kernels' matplotlibrc and their output log.

    Kernel stdout/stderr (ipykernel's own warnings and internal tracebacks, e.g.
    when a kernel is shut down mid-request) go to `kernels.log` here, not into
    the daemon's log, where they would look like daemon failures.
    """

    def __init__(self) -> None:
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        self.path = tempfile.mkdtemp(prefix=f"envd-kernels-{os.getpid()}-", dir=base)
        self.log_file = open(os.path.join(self.path, "kernels.log"), "ab", buffering=0)
        self.matplotlibrc_dir = _write_matplotlibrc(self.path)

    def close(self) -> None:
        self.log_file.close()
        shutil.rmtree(self.path, ignore_errors=True)


def kernel_environment(runtime: RuntimeDir) -> dict[str, str]:
    """Kernel process environment: daemon env minus private vars, plus MATPLOTLIBRC.

    docs/code-interpreter-api.md §5.4.

    The kernels' interpreter directory comes first on PATH, so `!pip install`
    installs where the kernel imports from, whatever PATH the daemon had.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED_ENV and not key.startswith(_PRIVATE_ENV_PREFIXES)
    }
    interpreter_dir = os.path.dirname(sys.executable)
    rest = [d for d in env.get("PATH", os.defpath).split(os.pathsep) if d and d != interpreter_dir]
    env["PATH"] = os.pathsep.join([interpreter_dir, *rest])
    if runtime.matplotlibrc_dir:
        env["MATPLOTLIBRC"] = runtime.matplotlibrc_dir
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _write_matplotlibrc(directory: str) -> str | None:
    """Write the kernels' matplotlibrc; the CJK fallback only if that font is installed.

    Naming a missing font makes matplotlib log "findfont" warnings on stderr,
    which would end up in users' executions.
    """
    families = ["sans-serif"]
    if any(os.path.exists(path) for path in _CJK_FONT_FILES):
        families.append("Noto Sans CJK JP")
    try:
        with open(os.path.join(directory, "matplotlibrc"), "w", encoding="utf-8") as fh:
            fh.write(f"font.family: {', '.join(families)}\n")
    except OSError:
        log.warning("could not write matplotlibrc", exc_info=True)
        return None
    return directory

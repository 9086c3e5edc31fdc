"""Language names, kernel specs and the per-language code snippets the daemon injects.

Everything here is pure (no I/O except kernel-spec discovery and `provide_package_kernels`,
which `Registry.open` calls) so the rules of
docs/code-interpreter-api.md §4.2.1, §4.2.2, §4.4 and §4.5.3 can be
unit-tested in isolation. Values are always encoded as proper literals of the
target language: upstream interpolated raw text, which broke on quotes and
backslashes (docs/differences.md §6.2 item 8).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterable, Mapping

# jupyter_client is imported where specs are read, not here: the HTTP layer
# uses this module while the daemon starts, before any kernel is needed.

PYTHON = "python"
JAVASCRIPT = "javascript"
TYPESCRIPT = "typescript"
R = "r"
JAVA = "java"
BASH = "bash"
#: Deno's own kernel, kept for code written for Deno (E2B's template has it too);
#: `javascript` and `typescript` run on Node.js.
DENO = "deno"
_JS_LANGUAGES = (JAVASCRIPT, TYPESCRIPT, DENO)

_ALIASES = {"js": JAVASCRIPT, "ts": TYPESCRIPT}

# docs/code-interpreter-api.md §4.2.2: language -> candidate kernel spec names, first installed wins.
_SPEC_CANDIDATES: dict[str, tuple[str, ...]] = {
    PYTHON: ("python3", "python"),
    JAVASCRIPT: ("javascript", "deno"),
    TYPESCRIPT: ("javascript", "deno"),
    R: ("r", "ir"),
    JAVA: ("java",),
    BASH: ("bash",),
    DENO: ("deno",),
}

_SHELL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def normalise(language: str | None) -> str:
    """docs/code-interpreter-api.md §4.2.1: empty -> python, lower-case/trim, only `js`/`ts` are aliases."""
    if not language:
        return PYTHON
    lang = language.strip().lower()
    if not lang:
        return PYTHON
    return _ALIASES.get(lang, lang)


#: Kernels that are plain Python packages: usable as soon as they are
#: pip-installed (the `kernels` extra), with no separate `... install` step.
_PACKAGE_KERNELS = {"bash": ("bash_kernel", "Bash", "bash")}


def provide_package_kernels(data_dir: str) -> None:
    """Write specs for importable kernel packages that have none; put them on JUPYTER_PATH.

    The specs run the package with this interpreter, so a `pip install` of
    the project is all a bash context needs.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    existing = KernelSpecManager().find_kernel_specs()
    missing = [
        name
        for name, (module, _, _) in _PACKAGE_KERNELS.items()
        if name not in existing and importlib.util.find_spec(module) is not None
    ]
    for name in missing:
        module, display_name, language = _PACKAGE_KERNELS[name]
        spec_dir = os.path.join(data_dir, "kernels", name)
        os.makedirs(spec_dir, exist_ok=True)
        spec = {
            "argv": [sys.executable, "-m", module, "-f", "{connection_file}"],
            "display_name": display_name,
            "language": language,
        }
        with open(os.path.join(spec_dir, "kernel.json"), "w") as out:
            json.dump(spec, out)
    if missing:
        paths = [data_dir, os.environ.get("JUPYTER_PATH", "")]
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in paths if p)


def installed_kernel_specs() -> dict[str, str]:
    """Kernel spec name -> resource dir, for specs whose program actually exists.

    A spec left behind without its runtime (e.g. the Java kernel without a JRE)
    is reported as "not available" instead of failing at launch.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    found = {}
    with warnings.catch_warnings():
        # bash_kernel's kernel.json carries a legacy top-level key traitlets warns about
        warnings.simplefilter("ignore", DeprecationWarning)
        specs = KernelSpecManager().get_all_specs()
    for name, entry in specs.items():
        argv = entry.get("spec", {}).get("argv") or []
        # jupyter_client runs "python"/"python3" specs with sys.executable
        if argv and (argv[0] in ("python", "python3") or shutil.which(os.path.expanduser(argv[0]))):
            found[name] = entry.get("resource_dir", "")
    return found


def resolve_kernel_spec(language: str, installed: Mapping[str, str] | None = None) -> str:
    """Pick the kernel spec for a normalised language.

    Raises NoSuchKernel with the upstream-like message when nothing fits, so the
    route can answer `500 Failed to create context: {...}`
    (docs/code-interpreter-api.md §2.3).
    """
    from jupyter_client.kernelspec import NoSuchKernel

    specs = installed if installed is not None else installed_kernel_specs()
    for name in _SPEC_CANDIDATES.get(language, (language,)):
        if name in specs:
            return name
    raise NoSuchKernel(language)


def unavailable_message(language: str, installed: Iterable[str]) -> str:
    """Upstream's Jupyter Server error JSON, plus the installed languages to help the caller."""
    available = ", ".join(sorted(installed)) or "none"
    return json.dumps(
        {
            "message": (
                f"The '{language}' kernel is not available. Please pick another suitable "
                f"kernel instead, or install that kernel. Installed languages: {available}"
            ),
            "short_message": f"{language} not found",
        }
    )


def installed_languages(installed: Mapping[str, str]) -> list[str]:
    """Languages of docs/code-interpreter-api.md §4.2.2 that have a kernel among the `installed` specs."""
    return [
        lang
        for lang in (PYTHON, JAVASCRIPT, TYPESCRIPT, R, JAVA, BASH, DENO)
        if any(name in installed for name in _SPEC_CANDIDATES.get(lang, (lang,)))
    ]


# ---------------------------------------------------------------- literals


def py_literal(value: str) -> str:
    """Python string literal (repr is always a valid literal for str)."""
    return repr(value)


def js_literal(value: str) -> str:
    """JSON string is a valid JS literal; ensure_ascii also escapes U+2028/2029."""
    return json.dumps(value, ensure_ascii=True)


def _c_like_literal(value: str) -> str:
    """Double-quoted literal with backslash escapes, valid in R and Java."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F or 0x2028 <= code <= 0x2029:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def r_literal(value: str) -> str:
    """R string literal."""
    return _c_like_literal(value)


def java_literal(value: str) -> str:
    """Java string literal (surrogate pairs pass through as characters)."""
    return _c_like_literal(value)


def sh_literal(value: str) -> str:
    """Single-quoted shell word; `'` becomes `'\\''`."""
    return "'" + value.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------- snippets


def cwd_code(language: str, path: str) -> str | None:
    """docs/code-interpreter-api.md §4.4: code that makes the kernel use `path` as working directory."""
    if language == PYTHON:
        # Like upstream's `%cd <P>` (a missing directory is reported, not raised, so the
        # context is still created), but with a real literal: the magic would expand
        # `$name`/`{expr}` inside the path and mangle quotes.
        return (
            "try:\n"
            f"    __import__('os').chdir({py_literal(path)})\n"
            "except OSError as _e2b_cd_error:\n"
            "    print(_e2b_cd_error)\n"
            "    del _e2b_cd_error"
        )
    if language in _JS_LANGUAGES:
        return f"process.chdir({js_literal(path)})"
    if language == R:
        return f"setwd({r_literal(path)})"
    if language == JAVA:
        return f'System.setProperty("user.dir", {java_literal(path)});'
    if language == BASH:
        return f"cd {sh_literal(path)}"
    return None


def env_set_code(language: str, env: Mapping[str, str]) -> str | None:
    """docs/code-interpreter-api.md §4.5.3: assignments for every pair, joined by newlines; None if nothing to do."""
    lines = [line for k, v in env.items() if (line := _set_one(language, k, v))]
    return "\n".join(lines) or None


def env_override_code(language: str, env: Mapping[str, str]) -> str | None:
    """Per-execution vars: remember each one's value in the kernel, then set it.

    `env_restore_code` puts back exactly what was there before the run (or
    unsets what did not exist), so an override never clobbers state the
    kernel had, whether it came from `/init` or from the user's own code.
    """
    keys = [k for k in env if _set_one(language, k, "") is not None]
    sets = env_set_code(language, {k: env[k] for k in keys})
    if not keys or sets is None:
        return None
    return f"{_save(language, keys)}\n{sets}"


def env_restore_code(language: str, keys: Iterable[str]) -> str | None:
    """Undo `env_override_code` for `keys` (docs/code-interpreter-api.md §4.5.4, restoring the previous value)."""
    keys = [k for k in keys if _set_one(language, k, "") is not None]
    if not keys:
        return None
    if language == PYTHON:
        return (
            "import os\n"
            "for _envd_k, _envd_v in globals().pop('_envd_saved', {}).items():\n"
            "    os.environ.pop(_envd_k, None) if _envd_v is None else os.environ.__setitem__(_envd_k, _envd_v)\n"
            "globals().pop('_envd_k', None); globals().pop('_envd_v', None)"
        )
    if language in _JS_LANGUAGES:
        return (
            'for (const [k, v] of Object.entries(globalThis["__envdSaved"] ?? {})) '
            "{ if (v === undefined) delete process.env[k]; else process.env[k] = v; }\n"
            'delete globalThis["__envdSaved"];'
        )
    if language == R:
        return (
            "for (.envd_k in names(.envd_saved)) { if (is.na(.envd_saved[[.envd_k]])) Sys.unsetenv(.envd_k) "
            "else do.call(Sys.setenv, stats::setNames(list(.envd_saved[[.envd_k]]), .envd_k)) }\n"
            'suppressWarnings(rm(list = c(".envd_saved", ".envd_k")))'
        )
    if language == JAVA:
        return (
            "for (var __envdEntry : __envdSaved.entrySet()) { if (__envdEntry.getValue() == null) "
            "System.clearProperty(__envdEntry.getKey()); "
            "else System.setProperty(__envdEntry.getKey(), __envdEntry.getValue()); }"
        )
    if language == BASH:
        return "\n".join(
            f'if [ -n "$__envd_saved_{k}" ]; then eval "$__envd_saved_{k}"; else unset {k}; fi; unset __envd_saved_{k}'
            for k in keys
        )
    return None


def _save(language: str, keys: list[str]) -> str:
    """Code that records each key's current value (or its absence) in the kernel."""
    if language == PYTHON:
        listed = ", ".join(py_literal(k) for k in keys)
        return f"import os; _envd_saved = {{k: os.environ.get(k) for k in ({listed},)}}"
    if language in _JS_LANGUAGES:
        listed = ", ".join(js_literal(k) for k in keys)
        return f'globalThis["__envdSaved"] = Object.fromEntries([{listed}].map((k) => [k, process.env[k]]));'
    if language == R:
        listed = ", ".join(r_literal(k) for k in keys)
        return f".envd_saved <- as.list(Sys.getenv(c({listed}), unset = NA, names = TRUE))"
    if language == JAVA:
        puts = " ".join(f"__envdSaved.put({java_literal(k)}, System.getProperty({java_literal(k)}));" for k in keys)
        return f"java.util.Map<String, String> __envdSaved = new java.util.HashMap<>(); {puts}"
    # bash: `declare -p` prints a statement that recreates the variable, exported or not.
    return "\n".join(f"__envd_saved_{k}=$(declare -p {k} 2>/dev/null)" for k in keys)


def _set_one(language: str, key: str, value: str) -> str | None:
    if language == PYTHON:
        return f"import os; os.environ[{py_literal(key)}] = {py_literal(value)}"
    if language in _JS_LANGUAGES:
        return f"process.env[{js_literal(key)}] = {js_literal(value)}"
    if language == R:
        return f"Sys.setenv({r_literal(key)} = {r_literal(value)})"
    if language == JAVA:
        return f"System.setProperty({java_literal(key)}, {java_literal(value)});"
    if language == BASH:
        if not _SHELL_IDENTIFIER.match(key):
            return None
        return f"export {key}={sh_literal(value)}"
    return None

"""Templates from a TOML file: names the SDKs ask for, mapped to local images.

```toml
[[templates]]
id = "local-envd"                           # reported as templateID
aliases = ["base", "code-interpreter-v1"]   # the SDKs' default names
image = "localhost/envd:latest"             # a local image; never pulled
cpu_count = 2
memory_mb = 1024
disk_size_mb = 10240                        # reported, not enforced
pids_limit = 4096
default_user = "user"
default_workdir = "/home/user"
pool_size = 1                               # optional: this template's warm pool
```

Only `id` and `image` are required; unknown keys are an error, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from controlplane.config import Template

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_FIELDS = {f.name: f.type for f in dataclasses.fields(Template)}
_INTEGERS = ("cpu_count", "memory_mb", "disk_size_mb", "pids_limit", "pool_size")
_STRINGS = ("id", "image", "default_user", "default_workdir")


class TemplateFileError(ValueError):
    """The file cannot be read or describes an impossible template; the message says where."""


def load_templates(path: str) -> list[Template]:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateFileError(f"{path}: {exc}") from None
    entries = document.get("templates")
    if not isinstance(entries, list) or not entries:
        raise TemplateFileError(f"{path}: expected at least one [[templates]] table")
    templates = [_template(path, index, entry) for index, entry in enumerate(entries)]
    names = [name for t in templates for name in (t.id, *t.aliases)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TemplateFileError(f"{path}: names used by more than one template: {', '.join(duplicates)}")
    return templates


def _template(path: str, index: int, entry: Any) -> Template:
    where = f"{path}: templates[{index}]"
    if not isinstance(entry, dict):
        raise TemplateFileError(f"{where}: expected a table")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise TemplateFileError(f"{where}: unknown keys {', '.join(unknown)}")
    for key in ("id", "image"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise TemplateFileError(f"{where}: `{key}` is required (a non-empty string)")
    for key in _STRINGS:
        if key in entry and not isinstance(entry[key], str):
            raise TemplateFileError(f"{where}: `{key}` must be a string")
    for key in _INTEGERS:
        if key in entry and (isinstance(entry[key], bool) or not isinstance(entry[key], int) or entry[key] < 0):
            raise TemplateFileError(f"{where}: `{key}` must be a non-negative integer")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise TemplateFileError(f"{where}: `aliases` must be a list of names")
    return Template(**{**entry, "aliases": tuple(aliases)})

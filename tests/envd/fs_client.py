"""Shared pieces of the filesystem tests: an envd-only daemon, raw HTTP, temp dirs.

The filesystem tests need no code interpreter, so they run their own daemon
with `--no-code-interpreter` (importing `daemon` from here overrides the
session fixture for that module; `sandbox` and the log check follow it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import DaemonProcess, start_daemon
from tests.wire import envelope, http, parse_envelopes  # noqa: F401 (re-exported)

HOME = "/home/user"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """An envd-only daemon for this module (default user `user`)."""
    process = start_daemon(code_interpreter=False)
    yield process
    assert process.stop() == 0, process.log_text()[-5000:]


@pytest.fixture
def home_dir() -> Iterator[str]:
    """A fresh directory under /home/user (owned by user), removed afterwards."""
    path = os.path.join(HOME, f"fs-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(path)
    os.chown(path, *user_ids())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_ids() -> tuple[int, int]:
    st = os.stat(HOME)
    return st.st_uid, st.st_gid


def unary(
    daemon: DaemonProcess, method: str, message: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """A Connect unary call to filesystem.Filesystem with a JSON body (bytes or object)."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    status, _, raw = http(
        f"{daemon.url}/filesystem.Filesystem/{method}",
        "POST",
        body,
        {"Content-Type": "application/json", **(headers or {})},
    )
    return status, json.loads(raw) if raw else {}


def users_link_to(home_dir: str, target: str) -> str:
    """A symlink `<home_dir>/d -> target` owned by `user`, as they could plant it."""
    link = f"{home_dir}/d"
    os.symlink(target, link)
    os.lchown(link, *user_ids())
    return link

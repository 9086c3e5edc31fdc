"""Shared pieces of the filesystem tests: an envd-only daemon, raw HTTP, temp dirs.

The filesystem tests need no code interpreter, so they run their own daemon
with `--no-code-interpreter` (importing `daemon` from here overrides the
session fixture for that module; `sandbox` and the log check follow it).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import DaemonProcess, start_daemon

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
    os.chown(path, *_user_ids())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _user_ids() -> tuple[int, int]:
    st = os.stat(HOME)
    return st.st_uid, st.st_gid


def http(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain request; errors come back as (status, headers, body) too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


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


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def parse_envelopes(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Messages and the end-of-stream object (None if missing) of a stream body."""
    messages: list[dict[str, Any]] = []
    end = None
    offset = 0
    while offset + 5 <= len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = json.loads(body[offset + 5 : offset + 5 + length])
        offset += 5 + length
        if flags & 0x02:
            end = payload
        else:
            messages.append(payload)
    return messages, end

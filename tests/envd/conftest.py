"""Fixtures of the envd tests: an envd-only daemon and what runs against it, temp dirs.

The filesystem tests need no code interpreter, so each of their modules runs its
own daemon with `--no-code-interpreter` (`envd_daemon`), reached through
`envd_sandbox` / `envd_async_sandbox`. Like the session `daemon`, the autouse
check in tests/conftest.py fails a test whose `envd_daemon` logged a traceback,
died or kept zombies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from e2b_code_interpreter import AsyncSandbox, Sandbox

from tests.envd.helpers import HOME, user_ids
from tests.harness import DaemonProcess, start_daemon


@pytest.fixture(scope="module")
def envd_daemon() -> Iterator[DaemonProcess]:
    """An envd-only daemon (`--no-code-interpreter`) for one module (default user `user`)."""
    process = start_daemon(code_interpreter=False)
    yield process
    assert process.stop() == 0, process.log_text()[-5000:]


@pytest.fixture
def envd_sandbox(envd_daemon: DaemonProcess) -> Sandbox:
    """The official sync SDK in debug mode, pointed at the module's `envd_daemon`."""
    return Sandbox.create(**envd_daemon.sdk_opts())


@pytest.fixture
async def envd_async_sandbox(envd_daemon: DaemonProcess) -> AsyncSandbox:
    """The official async SDK in debug mode, pointed at the module's `envd_daemon`."""
    return await AsyncSandbox.create(**envd_daemon.sdk_opts())


@pytest.fixture
def home_dir() -> Iterator[str]:
    """A fresh directory under /home/user (owned by user), removed afterwards."""
    path = os.path.join(HOME, f"fs-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(path)
    os.chown(path, *user_ids())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiny_fs() -> Iterator[str]:
    """A 256 KiB tmpfs, for a real ENOSPC (needs root and mount rights)."""
    path = f"/tmp/envd-tiny-{uuid.uuid4().hex[:8]}"
    os.mkdir(path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", path]).returncode:
        os.rmdir(path)
        pytest.skip("cannot mount a tmpfs here")
    yield path
    subprocess.run(["umount", path], check=True)
    os.rmdir(path)

"""Fixtures: the real daemon over real sockets, driven by the official SDKs."""

from __future__ import annotations

import time

import pytest
from e2b_code_interpreter import AsyncSandbox, Sandbox

from tests.harness import DaemonProcess, start_daemon


@pytest.fixture(scope="session")
def daemon() -> DaemonProcess:
    """One daemon for the session: envd API and code interpreter on one free port."""
    process = start_daemon()
    yield process
    assert process.stop() == 0, process.log_text()[-5000:]


@pytest.fixture(autouse=True)
def _daemon_stays_clean(request: pytest.FixtureRequest):
    """Fail the test if the session daemon logged a traceback while it ran."""
    if "daemon" not in request.fixturenames:
        yield
        return
    process: DaemonProcess = request.getfixturevalue("daemon")
    start = len(process.log_text())
    yield
    new_log = process.log_text()[start:]
    assert "Traceback" not in new_log, new_log[-5000:]
    assert process.proc.poll() is None, "the daemon died"
    assert _no_zombies_soon(process), f"zombie children of the daemon: {process.zombies()}"


def _no_zombies_soon(process: DaemonProcess, timeout: float = 5.0) -> bool:
    """A child that just exited is reaped within moments; one that stays is a bug."""
    deadline = time.monotonic() + timeout
    while process.zombies():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def sandbox(daemon: DaemonProcess) -> Sandbox:
    """The official sync SDK in debug mode, pointed at the session daemon."""
    return Sandbox.create(**daemon.sdk_opts())


@pytest.fixture
async def async_sandbox(daemon: DaemonProcess) -> AsyncSandbox:
    """The official async SDK in debug mode, pointed at the session daemon."""
    return await AsyncSandbox.create(**daemon.sdk_opts())


@pytest.fixture
def daemon_factory():
    """Start extra daemons with their own flags (tokens, users); stopped after the test."""
    started: list[DaemonProcess] = []

    def start(*args: str, code_interpreter: bool = False) -> DaemonProcess:
        process = start_daemon(*args, code_interpreter=code_interpreter)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()

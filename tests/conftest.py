"""Fixtures: the real daemon over real sockets, driven by the official SDKs."""

from __future__ import annotations

import pytest
from e2b_code_interpreter import AsyncSandbox, Sandbox

from tests.harness import (
    TEST_IMAGE,
    DaemonProcess,
    no_zombies_soon,
    start_container,
    start_daemon,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "host_only: reaches the daemon's process or files directly, not only over sockets"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against the image (`ENVD_TEST_IMAGE`), tests that need the daemon on this host skip."""
    if not TEST_IMAGE:
        return
    skip = pytest.mark.skip(reason="needs the daemon on this host; ENVD_TEST_IMAGE runs it in a container")
    for item in items:
        if item.get_closest_marker("host_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def daemon() -> DaemonProcess:
    """One daemon for the session: envd API and code interpreter on one free port.

    With `ENVD_TEST_IMAGE` set, that daemon runs in a container of the image.
    """
    process = start_container() if TEST_IMAGE else start_daemon()
    yield process
    assert process.stop() == 0, process.log_text()[-5000:]


#: The shared daemons a test may use: the session's, and the envd-only one of a
#: module (tests/envd/conftest.py). Tests check their own `daemon_factory` ones.
SHARED_DAEMONS = ("daemon", "envd_daemon")


@pytest.fixture(autouse=True)
def _daemon_stays_clean(request: pytest.FixtureRequest):
    """Fail the test if a shared daemon it used logged a traceback, died or kept zombies."""
    processes: list[DaemonProcess] = [
        request.getfixturevalue(name) for name in SHARED_DAEMONS if name in request.fixturenames
    ]
    starts = [len(process.log_text()) for process in processes]
    yield
    for process, start in zip(processes, starts, strict=True):
        new_log = process.log_text()[start:]
        assert "Traceback" not in new_log, new_log[-5000:]
        assert process.running(), "the daemon died"
        assert no_zombies_soon(process), f"zombie children of the daemon: {process.zombies()}"


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
        if TEST_IMAGE:
            flags = () if code_interpreter else ("--no-code-interpreter",)
            process = start_container(TEST_IMAGE, *flags, *args)
        else:
            process = start_daemon(*args, code_interpreter=code_interpreter)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()

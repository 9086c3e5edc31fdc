"""The first SDK generation, `e2b` 1.0.5 and `e2b-code-interpreter` 1.0.2, in debug mode.

They need protobuf < 6 and so live in their own environment (`.ci/sdk1-tests`
makes it); the daemon runs from the project's (ENVD_TEST_DAEMON_PYTHON). In
debug mode 1.x always talks to localhost:49983 and :49999, so the daemon
takes those ports, one API on each.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest

from tests.harness import DaemonProcess, start_daemon

SDK_GENERATION = version("e2b").split(".")[0]

collect_ignore_glob = [] if SDK_GENERATION == "1" else ["test_*.py"]


@pytest.fixture(scope="session")
def daemon() -> DaemonProcess:
    process = start_daemon(host_port=49983, code_port=49999)
    yield process
    assert process.stop() == 0, process.log_text()[-5000:]


@pytest.fixture
def sandbox(daemon: DaemonProcess):
    from e2b_code_interpreter import Sandbox

    return Sandbox(debug=True)

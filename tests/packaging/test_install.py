"""packaging/install.sh into a scratch prefix, then a smoke test of what it installed.

The Docker image runs the same script, so this keeps image and CI honest
(no Docker engine runs on the build machines).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from e2b_code_interpreter import Sandbox

from tests.harness import ROOT, DaemonProcess, free_port, wait_healthy


@pytest.fixture(scope="module")
def installed_prefix(tmp_path_factory: pytest.TempPathFactory) -> str:
    prefix = str(tmp_path_factory.mktemp("envd-prefix"))
    script = os.path.join(ROOT, "packaging", "install.sh")
    subprocess.run([script, "--prefix", prefix, "--no-system"], check=True, timeout=900)
    # Idempotent: a second run upgrades in place and succeeds.
    subprocess.run([script, "--prefix", prefix, "--no-system"], check=True, timeout=900)
    yield prefix
    shutil.rmtree(prefix, ignore_errors=True)


def test_installed_daemon_serves_the_sdk(installed_prefix: str, tmp_path) -> None:
    port = free_port()
    log_path = tmp_path / "envd.log"
    envd = os.path.join(installed_prefix, "venv", "bin", "envd")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [envd, "--host", "127.0.0.1", "--port", str(port), "--code-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
        )
    daemon = DaemonProcess(port, proc, str(log_path))
    try:
        wait_healthy(daemon, code_interpreter=True, timeout=60)
        sandbox = Sandbox.create(**daemon.sdk_opts())
        assert sandbox.run_code("6 * 7").text == "42"
        sandbox.files.write("/tmp/envd-smoke.txt", "smoke")
        assert sandbox.files.read("/tmp/envd-smoke.txt") == "smoke"
        assert sandbox.commands.run("echo hi").stdout == "hi\n"
        bash = sandbox.run_code("echo $((6 * 7))", language="bash")
        assert "42" in "".join(bash.logs.stdout)
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    result = subprocess.run([hadolint, os.path.join(ROOT, "e2b.Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

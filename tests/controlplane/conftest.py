"""The real control plane as a subprocess, over a real engine, with the image under test.

Needs `ENVD_TEST_IMAGE` (an image built by packaging/build-image.sh) and a
Docker Engine API: `DOCKER_HOST`, or Podman, whose service is started here.
The SDKs run unmodified in header mode (E2B_API_URL, E2B_SANDBOX_URL), never debug.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

from tests.harness import ROOT, TEST_IMAGE, free_port

KEYS = {"key-team-a": "team-a", "key-team-b": "team-b"}

pytestmark = pytest.mark.skipif(not TEST_IMAGE, reason="set ENVD_TEST_IMAGE to an image built by packaging/build-image.sh")


@pytest.fixture(scope="session")
def engine_url(tmp_path_factory: pytest.TempPathFactory):
    """DOCKER_HOST if set; else a Podman API service of our own for the session."""
    if not TEST_IMAGE:
        pytest.skip("set ENVD_TEST_IMAGE")
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    if shutil.which("podman") is None:
        pytest.skip("no DOCKER_HOST and no podman: the control plane needs a Docker Engine API")
    socket_path = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"unix://{socket_path}"
    service.terminate()
    service.wait(10)


@dataclass
class ControlPlaneProcess:
    api_port: int
    proxy_port: int
    argv: list[str]
    log_path: str
    engine_url: str
    instance: str
    proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"control plane not up:\n{self.log_text()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def log_text(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()


@pytest.fixture(scope="module")
def control_plane(engine_url: str, tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("cp-state")
    keys_file = state / "keys"
    keys_file.write_text("".join(f"{key} {team}\n" for key, team in KEYS.items()))
    api_port, proxy_port = free_port(), free_port()
    instance = f"test-{uuid.uuid4().hex[:8]}"
    argv = [
        sys.executable, "-m", "controlplane", "--api-port", str(api_port), "--proxy-port", str(proxy_port),
        "--engine-url", engine_url, "--state-dir", str(state / "data"), "--image", TEST_IMAGE,
        "--api-keys-file", str(keys_file), "--instance-id", instance,
    ]
    log_path = tempfile.mktemp(prefix="cp-", suffix=".log")
    plane = ControlPlaneProcess(api_port, proxy_port, argv, log_path, engine_url, instance)
    plane.start()
    yield plane
    if plane.proc is not None and plane.proc.poll() is None:
        plane.stop()
    _remove_containers(engine_url, instance)
    assert "Traceback" not in plane.log_text(), plane.log_text()[-5000:]


def _remove_containers(engine_url: str, instance: str) -> None:
    """No container outlives the tests, whatever they left running."""
    import docker

    client = docker.DockerClient(base_url=engine_url, version="auto")
    for container in client.containers.list(all=True, filters={"label": f"e2b.local/managed-by={instance}"}):
        container.remove(force=True)
    client.close()


@pytest.fixture
def sdk_env(control_plane: ControlPlaneProcess, monkeypatch: pytest.MonkeyPatch) -> ControlPlaneProcess:
    """What a user exports: header mode, team A's key, no debug."""
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.setenv("E2B_API_URL", control_plane.api_url)
    monkeypatch.setenv("E2B_SANDBOX_URL", control_plane.sandbox_url)
    monkeypatch.setenv("E2B_API_KEY", "key-team-a")
    return control_plane

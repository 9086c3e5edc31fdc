"""The real control plane as a subprocess, over a real engine, with the image under test.

Needs `ENVD_TEST_IMAGE` (an image built by packaging/build-image.sh) and a
Docker Engine API: `DOCKER_HOST`, or Podman, whose service is started here.
The SDKs run unmodified in header mode (E2B_API_URL, E2B_SANDBOX_URL), never debug.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.controlplane.harness import (
    ControlPlaneProcess,
    control_plane_process,
    remove_containers,
    start_podman_service,
)
from tests.harness import TEST_IMAGE

KEYS = {"key-team-a": "team-a", "key-team-b": "team-b"}

pytestmark = pytest.mark.skipif(
    not TEST_IMAGE, reason="set ENVD_TEST_IMAGE to an image built by packaging/build-image.sh"
)


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
    service, url = start_podman_service(tmp_path_factory.mktemp("podman"))
    yield url
    service.terminate()
    service.wait(10)


@pytest.fixture(scope="module")
def control_plane(engine_url: str, tmp_path_factory: pytest.TempPathFactory):
    plane = control_plane_process(engine_url, TEST_IMAGE, tmp_path_factory.mktemp("cp-state"), KEYS)
    plane.start()
    yield plane
    if plane.proc is not None and plane.proc.poll() is None:
        plane.stop()
    remove_containers(engine_url, plane.instance)
    assert "Traceback" not in plane.log_text(), plane.log_text()[-5000:]


@pytest.fixture
def sdk_env(control_plane: ControlPlaneProcess, monkeypatch: pytest.MonkeyPatch) -> ControlPlaneProcess:
    """What a user exports: header mode, team A's key, no debug."""
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.setenv("E2B_API_URL", control_plane.api_url)
    monkeypatch.setenv("E2B_SANDBOX_URL", control_plane.sandbox_url)
    monkeypatch.setenv("E2B_API_KEY", "key-team-a")
    return control_plane

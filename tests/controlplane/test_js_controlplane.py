"""The npm SDKs (tests/js/controlplane.mjs) against the real control plane, in header mode."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.controlplane.harness import ControlPlaneProcess

JS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "js")

pytestmark = pytest.mark.timeout(600)


def test_js_sdks_against_the_control_plane(control_plane: ControlPlaneProcess) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm is not installed: the JS SDK tests need Node.js 20+")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
    env = {key: value for key, value in os.environ.items() if key != "E2B_DEBUG"}
    env.update(E2B_API_URL=control_plane.api_url, E2B_SANDBOX_URL=control_plane.sandbox_url, E2B_API_KEY="key-team-a")
    result = subprocess.run(
        [node, "--test", "--test-concurrency=1", "--test-timeout=240000", "controlplane.mjs"],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]

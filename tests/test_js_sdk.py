"""Runs the npm SDK test project (tests/js) against the session daemon."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.harness import DaemonProcess

JS_DIR = os.path.join(os.path.dirname(__file__), "js")


def test_js_sdks(daemon: DaemonProcess) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the JS SDK tests need Node.js 20+")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
    result = subprocess.run(
        [npm, "test", "--silent"],
        cwd=JS_DIR,
        env={**os.environ, "ENVD_TEST_URL": daemon.url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]

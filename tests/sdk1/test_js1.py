"""Runs the npm 1.x SDK test project (tests/js1) against the daemon on 1.x's fixed ports."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.harness import DaemonProcess

JS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "js1")


def test_js_sdk_first_generation(daemon: DaemonProcess) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the JS SDK tests need Node.js 20+")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
    result = subprocess.run(
        [npm, "test", "--silent"], cwd=JS_DIR, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]

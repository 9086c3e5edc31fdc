"""The daemon as a whole: health, routing, /envs, /init, tokens, CORS, shutdown."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from e2b import Sandbox as EnvdSandbox

from envd import ENVD_PROTOCOL_VERSION
from tests.harness import DaemonProcess, wait_until
from tests.wire import http as raw_http
from tests.wire import unary


def http(
    daemon: DaemonProcess,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    return raw_http(daemon.url + path, method, body, headers)


def test_sdk_connects_and_sees_it_running(sandbox) -> None:
    assert sandbox.is_running()


def test_health_on_both_apis(daemon: DaemonProcess) -> None:
    status, headers, body = http(daemon, "/health", headers={"E2b-Sandbox-Port": "49983"})
    assert (status, body) == (204, b"")
    assert headers["Cache-Control"] == "no-store"
    status, _, body = http(daemon, "/health", headers={"E2b-Sandbox-Port": "49999"})
    assert (status, json.loads(body)) == (200, "OK")


def test_unknown_path_and_wrong_method(daemon: DaemonProcess) -> None:
    status, _, body = http(daemon, "/no/such/route")
    assert (status, body) == (404, b"404 page not found")
    status, headers, _ = http(daemon, "/filesystem.Filesystem/Stat")
    assert status == 405
    assert headers["Allow"] == "POST"
    status, _, _ = http(daemon, "/envs", method="DELETE")
    assert status == 405


def test_cors_preflight_and_simple_requests(daemon: DaemonProcess) -> None:
    status, headers, _ = http(
        daemon,
        "/filesystem.Filesystem/Stat",
        method="OPTIONS",
        headers={
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,connect-protocol-version",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Headers"] == "content-type,connect-protocol-version"
    assert headers["Access-Control-Max-Age"] == "7200"
    _, headers, _ = http(daemon, "/envs", headers={"Origin": "http://example.test"})
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_metrics_fields(daemon: DaemonProcess) -> None:
    status, _, body = http(daemon, "/metrics")
    metrics = json.loads(body)
    assert status == 200
    for key in (
        "ts",
        "cpu_count",
        "mem_total_mib",
        "mem_used_mib",
        "mem_total",
        "mem_used",
        "mem_cache",
        "disk_used",
        "disk_total",
    ):
        assert isinstance(metrics[key], int), key
    assert isinstance(metrics["cpu_used_pct"], (int, float))
    assert 0 < metrics["mem_used"] < metrics["mem_total"]
    assert 0 < metrics["disk_used"] <= metrics["disk_total"]


def test_unknown_basic_user_is_unauthenticated(daemon: DaemonProcess) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"nosuchuser:").decode()}
    status, _, body = http(daemon, "/envs", headers=auth)
    assert status == 401
    assert json.loads(body) == {
        "code": "unauthenticated",
        "message": "invalid username: 'nosuchuser'",
    }


def test_envs_reflect_cli_and_init(daemon_factory) -> None:
    daemon = daemon_factory("--env", "FROM_CLI=1", "--env", "OTHER=x=y")
    envs = json.loads(http(daemon, "/envs")[2])
    assert envs["FROM_CLI"] == "1" and envs["OTHER"] == "x=y"
    assert envs["E2B_SANDBOX"] == "true"
    status, headers, _ = http(
        daemon,
        "/init",
        "POST",
        json.dumps({"envVars": {"NEW": "v", "E2B_SANDBOX": "no"}}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 204
    assert headers["X-Envd-Version"] == ENVD_PROTOCOL_VERSION
    envs = json.loads(http(daemon, "/envs")[2])
    assert envs == {"NEW": "v", "E2B_SANDBOX": "true"}  # replaced; internal ones win


def test_init_token_then_required(daemon_factory) -> None:
    daemon = daemon_factory()
    assert unary(daemon.url, "filesystem.Filesystem/Stat", {})[0] != 401
    body = json.dumps({"accessToken": "s3cret", "timestamp": "2026-01-01T00:00:00Z"}).encode()
    assert http(daemon, "/init", "POST", body, {"Content-Type": "application/json"})[0] == 204

    status, reply = unary(daemon.url, "filesystem.Filesystem/Stat", {})
    assert status == 401
    assert reply["message"].startswith("unauthorized access")
    assert unary(daemon.url, "filesystem.Filesystem/Stat", {}, {"X-Access-Token": "wrong"})[0] == 401
    assert unary(daemon.url, "filesystem.Filesystem/Stat", {}, {"X-Access-Token": "s3cret"})[0] != 401
    assert http(daemon, "/envs")[0] == 401
    assert http(daemon, "/envs", headers={"X-Access-Token": "s3cret"})[0] == 200
    assert http(daemon, "/health")[0] == 204  # exempt

    # Once set, the token can only be repeated, never changed or dropped.
    changed = json.dumps({"accessToken": "other"}).encode()
    status, _, text = http(daemon, "/init", "POST", changed, {"Content-Type": "application/json"})
    assert (status, text) == (401, b"access token validation failed")
    status, _, text = http(daemon, "/init", "POST", b"{}", {"Content-Type": "application/json"})
    assert (status, text) == (401, b"access token reset not authorized")


def test_init_rejects_bad_bodies(daemon_factory) -> None:
    daemon = daemon_factory()
    for body in (
        b"[1]",
        b"{not json",
        json.dumps({"accessToken": ""}).encode(),
        json.dumps({"envVars": {"A": 1}}).encode(),
        json.dumps({"defaultUser": "nosuchuser"}).encode(),
    ):
        status, _, _ = http(daemon, "/init", "POST", body, {"Content-Type": "application/json"})
        assert status == 400, body
    assert http(daemon, "/health")[0] == 204


def test_version_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "envd", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("envd-py ")
    protocol = out.stdout.split("envd protocol of E2B's envd ")[1].split()[0]
    assert tuple(int(part) for part in protocol.split(".")) >= (0, 6, 4)


@pytest.mark.host_only
def test_graceful_shutdown_leaves_no_children(daemon_factory) -> None:
    daemon = daemon_factory()
    sandbox = EnvdSandbox.create(**daemon.sdk_opts())
    handle = sandbox.commands.run("sleep 1000 & sleep 1000", background=True)
    child = psutil.Process(handle.pid)
    descendants = [child, *child.children(recursive=True)]
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    gone, alive = psutil.wait_procs(descendants, timeout=2)
    assert alive == []
    assert "Traceback" not in daemon.log_text()


@pytest.mark.host_only
def test_orphans_are_reaped(daemon_factory) -> None:
    """An orphan re-parented to the daemon (a subreaper) does not stay a zombie."""
    daemon = daemon_factory()
    sandbox = EnvdSandbox.create(**daemon.sdk_opts())
    result = sandbox.commands.run("(sleep 0.3 & echo $!) ; exit 0")
    orphan = int(result.stdout.strip())
    assert wait_until(lambda: not psutil.pid_exists(orphan), 10, interval=0.2), "orphan left as a zombie"
    assert daemon.zombies() == []
    assert os.getpid() != orphan


def test_nul_bytes_and_odd_headers_are_client_errors(daemon: DaemonProcess) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"us\x00er:").decode()}
    status, _, body = http(daemon, "/envs", headers=auth)
    assert (status, json.loads(body)["code"]) == (401, "unauthenticated")
    status, reply = unary(daemon.url, "filesystem.Filesystem/Stat", {"path": "/tmp/a\u0000b"})
    assert (status, reply["code"]) == (400, "invalid_argument")
    bad_timeout = {"Connect-Timeout-Ms": "²".encode().decode("latin-1")}
    status, reply = unary(daemon.url, "filesystem.Filesystem/Stat", {}, bad_timeout)
    assert (status, reply["code"]) == (400, "invalid_argument")
    assert http(daemon, "/health")[0] == 204


def test_init_validates_everything_before_applying(daemon_factory) -> None:
    daemon = daemon_factory()
    headers = {"Content-Type": "application/json"}
    bad = {"envVars": {"HALF": "applied?"}, "defaultUser": "nosuchuser", "timestamp": "2026-01-01T00:00:00Z"}
    assert http(daemon, "/init", "POST", json.dumps(bad).encode(), headers)[0] == 400
    assert "HALF" not in json.loads(http(daemon, "/envs")[2])
    # The failed request did not consume its timestamp: a corrected retry applies.
    good = {**bad, "defaultUser": "root"}
    assert http(daemon, "/init", "POST", json.dumps(good).encode(), headers)[0] == 204
    assert json.loads(http(daemon, "/envs")[2])["HALF"] == "applied?"
    # A replay of the same timestamp changes nothing.
    replay = {"envVars": {}, "timestamp": "2026-01-01T00:00:00Z"}
    assert http(daemon, "/init", "POST", json.dumps(replay).encode(), headers)[0] == 204
    assert json.loads(http(daemon, "/envs")[2])["HALF"] == "applied?"
    huge = json.dumps({"envVars": {"X": "y" * (2 * 1024 * 1024)}}).encode()
    assert http(daemon, "/init", "POST", huge, headers)[0] == 400


def test_init_refuses_what_would_break_later_starts(daemon_factory) -> None:
    """Values no process environment can hold are refused up front, and Start keeps working."""
    daemon = daemon_factory()
    headers = {"Content-Type": "application/json"}
    for fields in (
        {"envVars": {"NUL": "a\u0000b"}},
        {"envVars": {"A=B": "c"}},
        {"envVars": {"": "c"}},
        {"envVars": {"S": "\ud800"}},
        {"accessToken": "tok\udc80"},
        {"defaultWorkdir": "/tmp/\u0000"},
    ):
        status, _, text = http(daemon, "/init", "POST", json.dumps(fields).encode(), headers)
        assert status == 400, (fields, text)
    sandbox = EnvdSandbox.create(**daemon.sdk_opts())
    assert sandbox.commands.run("echo fine").stdout == "fine\n"


def test_init_timestamps_with_and_without_offset_compare(daemon_factory) -> None:
    daemon = daemon_factory()
    headers = {"Content-Type": "application/json"}
    for when, value in (("2026-01-01T00:00:00", "1"), ("2026-01-01T00:00:01Z", "2"), ("2026-01-01T00:00:02", "3")):
        body = json.dumps({"envVars": {"N": value}, "timestamp": when}).encode()
        assert http(daemon, "/init", "POST", body, headers)[0] == 204
        assert json.loads(http(daemon, "/envs")[2])["N"] == value

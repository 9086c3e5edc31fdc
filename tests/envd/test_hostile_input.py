"""Hostile bodies and headers: each gets its Connect error at once, nothing runs, the daemon serves on."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
import uuid

from tests.harness import DaemonProcess
from tests.wire import envelope, http, stream, unary

JSON = {"Content-Type": "application/json", "Authorization": "Basic dXNlcjo="}  # user:
STREAM_JSON = {"Content-Type": "application/connect+json", "Authorization": "Basic dXNlcjo="}
#: 100 MB of zeros gzip to about 100 KB: far past the 64 MiB message limit once inflated.
BOMB = gzip.compress(json.dumps({"path": "/tmp/" + "0" * 100_000_000}).encode(), compresslevel=9)


def _healthy(daemon: DaemonProcess) -> bool:
    return http(f"{daemon.url}/health")[0] == 204


def test_gzip_bomb_in_a_unary_body_is_resource_exhausted(daemon: DaemonProcess) -> None:
    status, error = unary(daemon.url, "filesystem.Filesystem/Stat", BOMB, {**JSON, "Content-Encoding": "gzip"})
    assert (status, error["code"]) == (429, "resource_exhausted"), error
    assert len(json.dumps(error)) < 5000
    assert _healthy(daemon)


def test_gzip_bomb_in_a_stream_envelope_is_resource_exhausted(daemon: DaemonProcess) -> None:
    body = struct.pack(">BI", 0x01, len(BOMB)) + BOMB
    _, end = stream(
        daemon.url, "filesystem.Filesystem/WatchDir", body, {**STREAM_JSON, "Connect-Content-Encoding": "gzip"}
    )
    assert end is not None and end["error"]["code"] == "resource_exhausted", end
    assert _healthy(daemon)


def test_concatenated_gzip_members_still_decode(daemon: DaemonProcess) -> None:
    whole = json.dumps({"path": "/tmp"}).encode()
    body = gzip.compress(whole[:5]) + gzip.compress(whole[5:])
    status, reply = unary(daemon.url, "filesystem.Filesystem/Stat", body, {**JSON, "Content-Encoding": "gzip"})
    assert (status, reply["entry"]["path"]) == (200, "/tmp")


def test_oversized_unary_body_is_refused_before_it_is_read(daemon: DaemonProcess) -> None:
    """A Content-Length over the limit is answered at once, without waiting for the body."""
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /filesystem.Filesystem/Stat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000000\r\n\r\n{"path": "'
        )
        reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 429"), reply
    assert b"resource_exhausted" in reply


def test_errors_never_echo_unbounded_input(daemon: DaemonProcess) -> None:
    body = json.dumps({"path": "/tmp/" + "a" * 1_000_000}).encode()
    status, error = unary(daemon.url, "filesystem.Filesystem/Stat", body, JSON)
    assert status >= 400
    assert len(error["message"]) < 5000


def test_unknown_envelope_flag_starts_nothing(daemon: DaemonProcess, sandbox) -> None:
    marker = f"/tmp/flag-{uuid.uuid4().hex}"
    body = envelope({"process": {"cmd": "/usr/bin/touch", "args": [marker]}}, flags=0x80)
    _, end = stream(daemon.url, "process.Process/Start", body, STREAM_JSON)
    assert end is not None and end["error"]["code"] == "invalid_argument", end
    time.sleep(0.3)
    assert not sandbox.files.exists(marker)


def test_end_stream_envelope_on_a_server_stream_is_refused_at_once(daemon: DaemonProcess) -> None:
    """Before, these watched the home directory until the client gave up."""
    for body in (envelope({}, flags=0x02), envelope({"path": "/tmp"}, flags=0x82)):
        _, end = stream(daemon.url, "filesystem.Filesystem/WatchDir", body, STREAM_JSON)
        assert end is not None and end["error"]["code"] == "invalid_argument", end
    _, end = stream(daemon.url, "filesystem.Filesystem/WatchDir", b"", STREAM_JSON)
    assert end is not None and end["error"]["code"] == "invalid_argument", end


def test_absurd_keepalive_interval_is_invalid_argument(daemon: DaemonProcess) -> None:
    body = envelope({"process": {"cmd": "/bin/true"}})
    _, end = stream(daemon.url, "process.Process/Start", body, {**STREAM_JSON, "Keepalive-Ping-Interval": "9" * 400})
    assert end is not None and end["error"]["code"] == "invalid_argument", end
    assert _healthy(daemon)


def test_truncated_or_non_object_json_is_invalid_argument(daemon: DaemonProcess) -> None:
    """Never guessed into an empty request (a Move of nothing would mean the home directory)."""
    for method in ("Move", "ListDir", "Stat", "Remove"):
        for body in (b'{"path": 123', b'{"source": "/tmp/a"', b"[]", b"nul", b'"text"'):
            status, error = unary(daemon.url, f"filesystem.Filesystem/{method}", body, JSON)
            assert (status, error.get("code")) == (400, "invalid_argument"), (method, body, error)

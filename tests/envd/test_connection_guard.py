"""Connections that hold a descriptor without doing anything are closed;
connections with a request in flight never are, however long it runs."""

from __future__ import annotations

import socket
import time

import pytest
from e2b import Sandbox

from tests.harness import DaemonProcess
from tests.wire import http

# host_only: raw sockets here must meet the daemon itself, not an engine's port forwarder.
pytestmark = [pytest.mark.timeout(60), pytest.mark.host_only]


def _connect(daemon: DaemonProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", daemon.port), timeout=5)


def _closed_by_the_daemon(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _health_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: sandbox\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return response.split(b"\r\n", 1)[0]


def test_connections_that_send_no_whole_request_head_are_closed(daemon_factory) -> None:
    daemon = daemon_factory("--head-timeout", "2")
    silent = [_connect(daemon) for _ in range(10)]
    slow = [_connect(daemon) for _ in range(10)]
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: sand")  # and never the rest
    sandbox = Sandbox.create(**daemon.sdk_opts())
    result = sandbox.commands.run("sleep 5; echo done")  # in flight across several sweeps
    assert result.stdout == "done\n"
    assert all(_closed_by_the_daemon(sock, 5) for sock in silent + slow)
    assert http(f"{daemon.url}/health")[0] == 204


def test_the_longest_idle_connections_are_closed_first_over_the_limit(daemon_factory) -> None:
    daemon = daemon_factory("--max-idle-connections", "5")
    kept_alive = []
    for _ in range(12):
        sock = _connect(daemon)
        assert _health_on(sock) == b"HTTP/1.1 204 No Content"
        kept_alive.append(sock)
        time.sleep(0.01)
    oldest, newest = kept_alive[:7], kept_alive[7:]
    assert all(_closed_by_the_daemon(sock, 5) for sock in oldest)
    assert [_health_on(sock) for sock in newest] == [b"HTTP/1.1 204 No Content"] * 5

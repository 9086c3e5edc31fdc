"""The Unix-socket ingress the control plane uses (no published ports).

`E2b-Sandbox-Port` alone picks envd (49983 or absent), the code interpreter
(49999) or, for any other port, a program listening inside the sandbox, which
the daemon relays to, WebSockets included.
"""

from __future__ import annotations

import json
import os
import socket
import stat

import aiohttp
import psutil
import pytest
from aiohttp import web

from tests.envd.helpers import user_ids

pytestmark = [pytest.mark.asyncio, pytest.mark.host_only]


@pytest.fixture
def socket_dir(tmp_path):
    directory = tmp_path / "ingress"
    directory.mkdir(mode=0o700)
    os.chown(directory, *user_ids())  # the daemon hands the socket to the directory's owner
    return directory


@pytest.fixture
def ingress(daemon_factory, socket_dir):
    path = str(socket_dir / "daemon.sock")
    daemon = daemon_factory("--unix-socket", path, code_interpreter=True)
    return daemon, path


def _session(path: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path), auto_decompress=False)


@pytest.fixture
async def user_server():
    """A program's own server on a loopback port: echoes, streams, a WebSocket."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "host": request.host,
                "length": len(body),
                "forwarded": request.headers.get("X-Forwarded-For"),
            }
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(3):
            await response.write(f"chunk {i}\n".encode())
        return response

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["chat"])
        await ws.prepare(request)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo " + message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    app = web.Application()
    app.add_routes([web.route("*", "/echo", echo), web.get("/stream", stream), web.get("/ws", websocket)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port it got
    await runner.cleanup()


async def test_socket_is_private_to_the_directory_owner(ingress, socket_dir) -> None:
    _, path = ingress
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == user_ids()


async def test_the_port_header_alone_picks_the_api(ingress) -> None:
    _, path = ingress
    async with _session(path) as http:
        async with http.get("http://sandbox/health") as response:
            assert response.status == 204  # envd, the default
        async with http.get("http://sandbox/health", headers={"E2b-Sandbox-Port": "49999"}) as response:
            assert (response.status, await response.json()) == (200, "OK")
        body = json.dumps({"code": "6 * 7"})
        async with http.post("http://sandbox/execute", data=body, headers={"E2b-Sandbox-Port": "49999"}) as response:
            lines = [json.loads(line) for line in (await response.text()).splitlines()]
        result = next(line for line in lines if line["type"] == "result")
        assert {"type": "result", "text": "42"}.items() <= result.items()
        async with http.post("http://sandbox/execute", data=body) as response:
            assert response.status == 404  # envd has no /execute: never routed by path
        async with http.get("http://sandbox/envs", headers={"E2b-Sandbox-Port": "49999"}) as response:
            assert (response.status, await response.json()) == (404, {"detail": "Not Found"})
        for bad in ("http", "0", "70000", "²"):
            async with http.get("http://sandbox/health", headers={"E2b-Sandbox-Port": bad}) as response:
                assert response.status == 400, bad


async def test_other_ports_reach_the_program_with_host_kept(ingress, user_server) -> None:
    _, path = ingress
    headers = {
        "E2b-Sandbox-Port": str(user_server),
        "Host": f"{user_server}-abc.e2b.localhost",
        "X-Forwarded-For": "10.9.8.7",
    }
    async with _session(path) as http:
        async with http.post("http://sandbox/echo?q=1", data=b"x" * 100_000, headers=headers) as response:
            echoed = await response.json()
        assert echoed == {
            "method": "POST",
            "path": "/echo?q=1",
            "host": f"{user_server}-abc.e2b.localhost",
            "length": 100_000,
            "forwarded": "10.9.8.7",
        }
        async with http.get("http://sandbox/stream", headers=headers) as response:
            assert await response.text() == "chunk 0\nchunk 1\nchunk 2\n"
        async with http.get("http://sandbox/nothing-here", headers=headers) as response:
            assert response.status == 404  # the program's answer, relayed


async def test_websockets_are_relayed_with_the_chosen_subprotocol(ingress, user_server) -> None:
    _, path = ingress
    async with _session(path) as http:
        async with http.ws_connect(
            "http://sandbox/ws", protocols=["other", "chat"], headers={"E2b-Sandbox-Port": str(user_server)}
        ) as ws:
            assert ws.protocol == "chat"
            await ws.send_str("hi")
            assert (await ws.receive()).data == "echo hi"
            await ws.send_bytes(b"abc")
            assert (await ws.receive()).data == b"cba"


async def test_a_closed_port_is_the_sdks_port_not_open(ingress) -> None:
    _, path = ingress
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with _session(path) as http:
        headers = {"E2b-Sandbox-Port": str(closed), "E2b-Sandbox-Id": "abc123"}
        async with http.get("http://sandbox/", headers=headers) as response:
            assert response.status == 502
            assert await response.json() == {
                "sandboxId": "abc123",
                "port": closed,
                "code": 502,
                "message": "The sandbox is running but port is not open",
            }


async def test_tcp_binds_loopback_only_and_a_stale_socket_is_replaced(daemon_factory, socket_dir) -> None:
    path = str(socket_dir / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, as after a filesystem pause
    daemon = daemon_factory("--unix-socket", path, "--host", "0.0.0.0")
    listening = {c.laddr.ip for c in psutil.Process(daemon.pid).net_connections("inet") if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}
    async with _session(path) as http, http.get("http://sandbox/health") as response:
        assert response.status == 204
    assert daemon.stop() == 0
    assert not os.path.exists(path)

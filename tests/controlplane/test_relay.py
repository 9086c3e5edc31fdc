"""The proxy's HTTP/1.1 relay (controlplane/relay.py, http1.py) on real sockets.

A router of the test's own sends every request to one upstream on a Unix
socket: an aiohttp server standing in for a sandbox's program, or the real
daemon. What the control-plane suite checks end to end with the SDKs (routing,
tokens, errors the SDKs map) is not repeated here; this is the relaying itself:
framing, keep-alive, pipelining, streaming, upgrades, bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest
from aiohttp import web

from controlplane import http1, relay

pytestmark = pytest.mark.asyncio


class Upstream:
    """An aiohttp server on a Unix socket, noting the connections requests came on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: list[object] = []  # the connections' protocols, held so ids stay unique
        self.release = asyncio.Event()

    @property
    def connections(self) -> int:
        return len({id(protocol) for protocol in self.seen})

    def app(self) -> web.Application:
        @web.middleware
        async def note_connection(request: web.Request, handler):  # type: ignore[no-untyped-def]
            self.seen.append(request.protocol)
            return await handler(request)

        async def echo(request: web.Request) -> web.Response:
            body = await request.read()
            return web.json_response(
                {
                    "method": request.method,
                    "path": request.path_qs,
                    "length": len(body),
                    "sum": sum(body) % 65521,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                }
            )

        async def slow_stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"first\n")
            await self.release.wait()
            await response.write(b"second\n")
            return response

        async def refuse_at_once(request: web.Request) -> web.Response:
            return web.json_response({"refused": True}, status=413)  # the body is never read

        async def websocket(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(protocols=["chat"])
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str("echo " + message.data)
            return ws

        app = web.Application(middlewares=[note_connection])
        app.add_routes(
            [
                web.route("*", "/echo", echo),
                web.get("/slow", slow_stream),
                web.get("/ws", websocket),
                web.post("/early", refuse_at_once),
            ]
        )
        return app


@pytest.fixture
async def upstream(tmp_path):
    server = Upstream(str(tmp_path / "up.sock"))
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.UnixSite(runner, server.path).start()
    yield server
    server.release.set()
    await runner.cleanup()


@pytest.fixture
async def proxy(upstream: Upstream):
    """The relay on a free loopback port, everything routed to `upstream` with a marker field."""
    loop = asyncio.get_running_loop()
    pool = relay.ConnectionPool(lambda factory: loop.create_unix_connection(factory, upstream.path))

    async def route(head: http1.RequestHead, peer: relay.Peer) -> relay.Target:
        if head.path == "/refused":
            raise relay.ProxyError(403, {"code": 403, "message": "no"})
        return relay.Target(pool, {"X-Routed-By": "test", "X-Forwarded-For": peer.address})

    server = await relay.serve(route, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    pool.close()


async def _exchange(port: int, raw: bytes, *, until: bytes = b"", timeout: float = 10) -> bytes:
    """Send raw bytes, read until `until` appears (or the connection closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    received = b""
    try:
        while not (until and until in received):
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
    return received


async def test_keep_alive_reuses_one_upstream_connection(proxy: int, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(5):
            async with http.post(f"http://127.0.0.1:{proxy}/echo?i={i}", data=b"x" * i) as response:
                echoed = await response.json()
            assert (echoed["path"], echoed["length"]) == (f"/echo?i={i}", i)
            assert echoed["headers"]["x-routed-by"] == "test"
            assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert upstream.connections == 1


async def test_pipelined_requests_are_answered_in_order(proxy: int) -> None:
    requests = b"".join(f"GET /echo?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in range(3))
    received = await _exchange(proxy, requests + b"GET /echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    paths = [json.loads(part.split(b"\r\n\r\n", 1)[1])["path"] for part in received.split(b"HTTP/1.1 200")[1:]]
    assert paths == ["/echo?n=0", "/echo?n=1", "/echo?n=2", "/echo?n=last"]


async def test_a_chunked_upload_arrives_whole(proxy: int) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB in uneven chunks

    async def chunks():
        for start in range(0, len(payload), 77_777):
            yield payload[start : start + 77_777]

    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{proxy}/echo", data=chunks()) as response:
            echoed = await response.json()
    assert echoed["headers"]["transfer-encoding"] == "chunked"
    assert (echoed["length"], echoed["sum"]) == (len(payload), sum(payload) % 65521)


async def test_responses_stream_without_buffering(proxy: int, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{proxy}/slow") as response:
            assert await asyncio.wait_for(response.content.readline(), 5) == b"first\n"
            upstream.release.set()
            assert await response.content.read() == b"second\n"


async def test_a_client_that_goes_away_cancels_the_upstream_request(proxy: int, upstream: Upstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"first" in await asyncio.wait_for(reader.readuntil(b"first\n"), 5)
    writer.transport.abort()
    # The upstream connection is closed at once: the next request needs a new one.
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{proxy}/echo") as response:
            assert response.status == 200
    assert upstream.connections == 2


async def test_websocket_upgrades_become_a_byte_tunnel(proxy: int) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{proxy}/ws", protocols=["chat"]) as ws:
            assert ws.protocol == "chat"
            for text in ("hello", "x" * 200_000):
                await ws.send_str(text)
                assert (await ws.receive_str()) == "echo " + text


async def test_the_router_answers_errors_as_json_and_the_connection_goes_on(proxy: int) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{proxy}/refused", headers={"Accept": "text/html"}) as response:
            assert (response.status, await response.json()) == (403, {"code": 403, "message": "no"})
        async with http.get(f"http://127.0.0.1:{proxy}/echo") as response:
            assert response.status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /echo HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431),
    ],
)
async def test_malformed_requests_get_a_clear_status_and_a_close(proxy: int, raw: bytes, status: int) -> None:
    received = await _exchange(proxy, raw)
    assert received.startswith(f"HTTP/1.1 {status} ".encode()), received[:100]
    assert b"Connection: close" in received
    assert "message" in json.loads(received.split(b"\r\n\r\n", 1)[1])


async def test_an_unreachable_upstream_gets_the_targets_answer(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    missing = str(tmp_path / "nothing.sock")
    pool = relay.ConnectionPool(lambda factory: loop.create_unix_connection(factory, missing))
    unreachable = relay.ProxyError(502, {"code": 502, "message": "port is not open"})

    async def route(head: http1.RequestHead, peer: relay.Peer) -> relay.Target:
        return relay.Target(pool, unreachable=lambda: unreachable)

    server = await relay.serve(route, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/") as response:
                assert (response.status, await response.json()) == (502, unreachable.body)
    finally:
        server.close()


async def test_a_slow_head_is_cut_off(proxy: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "HEAD_SECONDS", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(b"GET /echo HTTP/1.1\r\n")  # and nothing more
    assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the proxy
    writer.close()


async def test_an_http_1_0_client_gets_a_whole_answer_and_a_close(proxy: int) -> None:
    received = await _exchange(proxy, b"GET /echo?v=10 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"chunked" not in head.lower()
    assert json.loads(body)["path"] == "/echo?v=10"


async def test_expect_100_continue_is_relayed_before_the_body(proxy: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
    )
    assert json.loads(await reader.readexactly(length))["length"] == 5
    writer.close()


async def test_connection_cannot_strip_the_framing(proxy: int) -> None:
    """`Connection: content-length` must not make the body a second request (smuggling)."""
    smuggled = b"GET /echo?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: content-length, close\r\n"
        + f"Content-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled
    )
    received = await _exchange(proxy, raw)
    assert received.count(b"HTTP/1.1 200") == 1
    echoed = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert (echoed["method"], echoed["path"], echoed["length"]) == ("POST", "/echo", len(smuggled))


async def test_a_broken_chunked_body_gets_400(proxy: int) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    received = await _exchange(proxy, head + b"5\r\nhello\r\nZZ\r\n")  # all at once
    assert received.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in received
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(head + b"5\r\nhello\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)  # the exchange is under way
    writer.write(b"ZZ\r\n")
    assert (await asyncio.wait_for(reader.read(65536), 5)).startswith(b"HTTP/1.1 400 ")
    writer.close()


async def test_an_error_answer_to_head_has_no_body(proxy: int) -> None:
    received = await _exchange(
        proxy,
        b"HEAD /refused HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 403 ")
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body in between: the next answer follows at once


async def test_an_answer_before_the_whole_upload_reaches_the_client(proxy: int) -> None:
    """The upstream refuses at once; the client is still sending 8 MiB. It gets the
    answer (with Connection: close), not a reset."""
    size = 8 << 20
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(f"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())

    async def upload() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(size >> 16):
                writer.write(b"u" * 65536)
                await writer.drain()

    sending = asyncio.create_task(upload())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in head
    assert json.loads(await asyncio.wait_for(reader.read(), 10)) == {"refused": True}
    sending.cancel()
    writer.close()

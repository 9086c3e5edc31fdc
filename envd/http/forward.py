"""Requests for other ports, relayed to a program listening inside the sandbox.

On the Unix-socket ingress (the control plane's only way in, no published
ports) a request whose `E2b-Sandbox-Port` names neither envd nor the code
interpreter is for a program of the user's: a dev server, a notebook, an app.
It is relayed to `127.0.0.1:PORT`, then `[::1]:PORT`, streamed both ways with
the original `Host`; a WebSocket upgrade is relayed frame by frame (aiohttp
offers no supported way to hand over the raw connection).
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
from aiohttp import web

#: Headers that describe one hop, never forwarded (RFC 9110 7.6.1), plus the
#: routing headers only the ingress needs.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Connection",
    )
)
WEBSOCKET_HANDSHAKE = frozenset(
    h.lower()
    for h in (
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Accept",
    )
)
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")
#: Connect in 5 s; a quiet stream may idle up to 620 s (above the SDKs' 50 s pings).
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=620)


class PortForwarder:
    """One client session for every relayed request; closed when the daemon stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = relay_session(aiohttp.TCPConnector(limit=0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, request: web.Request, port: int) -> web.StreamResponse:
        for host in LOOPBACK_HOSTS:
            response = await relay(request, self._client(), f"http://{host}:{port}")
            if response is not None:
                return response
        return port_not_open(request, port)


async def relay(
    request: web.Request, session: aiohttp.ClientSession, base_url: str, extra_headers: dict[str, str] | None = None
) -> web.StreamResponse | None:
    """Relay `request` to the same path under `base_url`, WebSocket upgrades included.

    None when nothing accepts the connection there (the caller decides what
    that means); otherwise the response, already streamed to the client.
    """
    headers = {**_forwarded_headers(request), **(extra_headers or {})}
    url = f"{base_url}{request.rel_url}"
    if _is_websocket(request):
        return await _relay_websocket(request, session, url, headers)
    try:
        upstream = await session.request(
            request.method,
            url,
            headers=headers,
            data=request.content.iter_any() if request.body_exists else None,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )
    except aiohttp.ClientConnectorError:
        return None
    async with upstream:
        return await _relay_response(request, upstream)


async def _relay_websocket(
    request: web.Request, session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> web.StreamResponse | None:
    """Open the upstream WebSocket first, so the client gets its subprotocol."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = {k: v for k, v in headers.items() if k.lower() not in WEBSOCKET_HANDSHAKE}
    try:
        upstream = await session.ws_connect(url, headers=headers, protocols=protocols, autoping=False, max_msg_size=0)
    except aiohttp.ClientConnectorError:
        return None
    except aiohttp.WSServerHandshakeError as exc:
        return web.Response(status=exc.status or 502, text=exc.message)
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), autoping=False, max_msg_size=0
    )
    async with upstream:
        await client.prepare(request)
        relays = [asyncio.create_task(_pump(client, upstream)), asyncio.create_task(_pump(upstream, client))]
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            await client.close()
    return client


#: Bytes read from upstream per chunk: big downloads then cross in few, large writes.
RELAY_BUFFER_BYTES = 1 << 20


def relay_session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    """A client session for relaying: no total timeout, bodies and cookies passed through untouched."""
    return aiohttp.ClientSession(
        connector=connector,
        timeout=TIMEOUT,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=RELAY_BUFFER_BYTES,
    )


def port_not_open(request: web.Request, port: int) -> web.Response:
    """What E2B's proxy answers, which the SDKs map to SandboxUnreachableException."""
    sandbox_id = request.headers.get("E2b-Sandbox-Id") or os.environ.get("E2B_SANDBOX_ID", "")
    return web.json_response(
        {"sandboxId": sandbox_id, "message": "The sandbox is running but port is not open", "port": port, "code": 502},
        status=502,
    )


def _is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _forwarded_headers(request: web.Request) -> dict[str, str]:
    """Everything but hop-by-hop headers, the original Host included."""
    connection_listed = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
    return {
        key: value
        for key, value in request.headers.items()
        if key.lower() not in HOP_BY_HOP and key.lower() not in connection_listed
    }


async def _relay_response(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for key, value in upstream.headers.items():
        if key.lower() not in HOP_BY_HOP:
            response.headers.add(key, value)
    await response.prepare(request)
    async for chunk in upstream.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


async def _pump(
    source: web.WebSocketResponse[bool] | aiohttp.ClientWebSocketResponse[bool],
    sink: web.WebSocketResponse[bool] | aiohttp.ClientWebSocketResponse[bool],
) -> None:
    """Relay frames one way until a close; each kind as it came."""
    async for message in source:
        if message.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is aiohttp.WSMsgType.PING:
            await sink.ping(message.data)
        elif message.type is aiohttp.WSMsgType.PONG:
            await sink.pong(message.data)
    await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)

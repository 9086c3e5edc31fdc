"""The proxy's HTTP/1.1 relay, on asyncio protocols rather than a server and a client.

A request head is parsed, routed (by `controlplane.proxy`) and sent upstream
rewritten; from then on body bytes go from one transport to the other inside
`data_received`, as they arrived, with no parser, buffer or task in between,
and each side's flow control pausing the other. The relay follows each body
only to find where it ends (`http1.BodyEnd`), so connections stay reusable on
both sides. A `101 Switching Protocols` (a WebSocket, say) turns the exchange
into a byte tunnel.

Why not aiohttp's server and client: relaying through them costs two parsers,
two buffers and a task per request; a 1 GB download cost the proxy 0.60-0.73 s
of CPU that way against 0.36-0.44 s for a byte pump on protocols
(bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

from controlplane import http1
from controlplane.http1 import HeadError, RequestHead

log = logging.getLogger(__name__)

#: A connection may idle this long between requests, and a quiet exchange or
#: tunnel this long (above the SDKs' 50 s keepalive pings, as E2B's proxy).
IDLE_SECONDS = 620.0
#: A started request head must be complete within this.
HEAD_SECONDS = 30.0
#: An idle pooled upstream connection is dropped after this (the daemon keeps them 640 s).
POOL_IDLE_SECONDS = 300.0
#: How long a closing connection keeps reading (and dropping) what the client still sends.
LINGER_SECONDS = 1.0
CONNECT_SECONDS = 5.0
CONNECT_ATTEMPTS = 5
CONNECT_RETRY_SECONDS = 0.1


class ProxyError(Exception):
    """An answer the proxy gives itself: a status and a JSON body."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


Connector = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]]]


class ConnectionPool:
    """Keep-alive connections to one upstream (a sandbox's socket, or the API)."""

    def __init__(self, connect: Connector) -> None:
        self._connect = connect
        self._idle: list[Upstream] = []
        self._busy: set[Upstream] = set()

    async def acquire(self, *, fresh: bool = False) -> tuple[Upstream, bool]:
        """A connection and whether it was used before (it may then be stale); `fresh`: a new one."""
        now = asyncio.get_running_loop().time()
        while self._idle and not fresh:
            upstream = self._idle.pop()
            if upstream.usable and now - upstream.idle_since < POOL_IDLE_SECONDS:
                self._busy.add(upstream)
                return upstream, True
            upstream.abort()
        _, protocol = await asyncio.wait_for(self._connect(Upstream), CONNECT_SECONDS)  # TimeoutError is an OSError
        assert isinstance(protocol, Upstream)
        self._busy.add(protocol)
        return protocol, False

    def release(self, upstream: Upstream, reusable: bool) -> None:
        self._busy.discard(upstream)
        upstream.exchange = None
        if reusable and upstream.usable:
            upstream.hold_reading(False)
            upstream.idle_since = asyncio.get_running_loop().time()
            self._idle.append(upstream)
        else:
            upstream.abort()

    def close(self) -> None:
        """Abort every connection, idle or busy: their clients see the sandbox go."""
        for upstream in [*self._idle, *self._busy]:
            upstream.abort()
        self._idle.clear()
        self._busy.clear()


@dataclass
class Target:
    """Where a request goes: a pool, the fields to set on it, and what to answer
    when nothing there accepts a connection."""

    pool: ConnectionPool
    set_headers: dict[str, str] = field(default_factory=dict)
    #: What to answer when nothing accepts the connection, or it closes before any
    #: answer; asked at that moment, since the reason may have changed (a kill).
    unreachable: Callable[[], ProxyError] = lambda: ProxyError(502, {"code": 502, "message": "Bad gateway"})
    #: Called after a failed connect, before the next attempt (forget a stale socket).
    reset: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Peer:
    """The client side of a request, as routing needs it."""

    address: str
    scheme: str


Router = Callable[[RequestHead, Peer], Awaitable[Target]]


class Upstream(asyncio.Protocol):
    """One connection to an upstream; carries one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.open = False
        self.reading_held = False
        self.writing_paused = False  # its send buffer is full: the client must wait
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        return self.open and self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not registered as such
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            self.abort()  # nothing was asked: the connection is out of step
        else:
            self.exchange.from_upstream(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.exchange is not None:
            self.exchange.upstream_lost()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.exchange is not None:
            self.exchange.client.hold_reading("upstream", True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.exchange is not None:
            self.exchange.client.hold_reading("upstream", False)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send, unless the connection is going (the exchange then ends by `connection_lost`)."""
        if self.usable:
            assert self.transport is not None
            self.transport.write(data)

    def hold_reading(self, hold: bool) -> None:
        """The client cannot take more for now (or can again)."""
        if self.transport is None or not self.open or self.reading_held == hold:
            return
        self.reading_held = hold
        if hold:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()


class BadRequestBody(Exception):
    """The client's body broke its own framing (a bad chunk size line)."""

    def __init__(self, error: HeadError) -> None:
        super().__init__(str(error))
        self.status = error.status


class UpstreamLost(Exception):
    def __init__(self, answered: bool) -> None:
        super().__init__("the upstream connection closed")
        self.answered = answered


class Exchange:
    """One request and its response between a client connection and an upstream one."""

    def __init__(self, client: ClientConnection, upstream: Upstream, request: RequestHead) -> None:
        self.client = client
        self.upstream = upstream
        self.request = request
        self.request_body = http1.BodyEnd(request.framing)
        self.response_body: http1.BodyEnd | None = None
        self.tunnel = False
        self.answered = False  # bytes went to the client
        self.reusable = True  # the upstream connection can serve another exchange
        self.client_keeps = request.keep_alive
        self.last_activity = asyncio.get_running_loop().time()
        self._head = bytearray()
        self.error: Exception | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        upstream.exchange = self
        # Either side may still be full from before: the other starts paused.
        if upstream.writing_paused:
            client.hold_reading("upstream", True)
        upstream.hold_reading(client.writing_paused)

    def start(self, head: bytes, early: bytes) -> bytes:
        """Send the request head with the body bytes already here, in one write;
        returns what belongs to the next request."""
        taken = self.request_body.feed(early)
        self.upstream.write(head + early[:taken] if taken else head)
        return early[taken:]

    def from_client(self, data: bytes) -> bytes:
        """Relay request body bytes; returns what belongs to the next request."""
        self.last_activity = asyncio.get_running_loop().time()
        if self.tunnel:
            self.upstream.write(data)
            return b""
        try:
            taken = self.request_body.feed(data)
        except HeadError as exc:
            self.reusable = False
            self.upstream.abort()
            self._finish(BadRequestBody(exc))
            return b""
        if taken:
            self.upstream.write(data if taken == len(data) else data[:taken])
        return data[taken:] if taken < len(data) else b""

    def from_upstream(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        if self.tunnel:
            self.client.write(data)
            return
        try:
            heads = b""
            if self.response_body is None:
                heads, data = self._response_heads(data)
                if self.response_body is None or self.tunnel:
                    if heads or data:
                        self._to_client(heads + data)
                    return
            self._response_data(heads, data)
        except HeadError as exc:
            self.reusable = False
            self._finish(exc)

    def _response_heads(self, data: bytes) -> tuple[bytes, bytes]:
        """Collect the response head (and interim 1xx ones); returns them rendered
        for the client, and the bytes after them (body, or a tunnel's first bytes)."""
        self._head += data
        rendered = b""
        while True:
            end = http1.find_head_end(self._head)
            if end < 0:
                return rendered, b""
            head = http1.parse_response(self._head[:end])
            rest = bytes(self._head[end:])
            self._head.clear()
            if head.status == 101 and self.request.upgrade:
                self.tunnel = True
                self.client.start_tunnel(self)
                return rendered + self._render_head(head, upgrade=True), rest
            if head.status < 200:
                if self.request.version != "1.0":  # HTTP/1.0 has no interim responses
                    rendered += self._render_head(head, interim=True)
                self._head += rest
                continue
            framing = head.framing(self.request.method)
            self.reusable = head.keep_alive and not framing.until_close
            # An answer before the whole request body (a refusal, say) ends the connection.
            self.client_keeps = self.client_keeps and not framing.until_close and self.request_body.done
            self.response_body = http1.BodyEnd(framing)
            return rendered + self._render_head(head), rest

    def _render_head(self, head: http1.ResponseHead, *, interim: bool = False, upgrade: bool = False) -> bytes:
        close = {"Connection": "close"} if not interim and not upgrade and not self.client_keeps else {}
        return http1.render_response(head, close, self.request.version, upgrade=upgrade)

    def _response_data(self, heads: bytes, data: bytes) -> None:
        """Relay body bytes (after the heads, in one write: fewer wake-ups for the client)."""
        assert self.response_body is not None
        taken = self.response_body.feed(data)
        body = data if taken == len(data) else data[:taken]
        if heads or body:
            self._to_client(heads + body if heads else body)
        if taken < len(data):
            self.reusable = False  # more than the response: the connection is out of step
        if self.response_body.done:
            self._finish(None)

    def _to_client(self, data: bytes) -> None:
        self.answered = True
        self.client.write(data)

    def upstream_lost(self) -> None:
        self.reusable = False
        if self.response_body is not None and self.response_body.until_close:
            self._finish(None)  # the body ended with the connection, as it said it would
        elif self.tunnel:
            self._finish(None)
            self.client.close()
        else:
            self._finish(UpstreamLost(self.answered))

    def client_lost(self) -> None:
        """The client went away: the upstream request is cancelled at once, so the daemon sees it."""
        self.reusable = False
        self.upstream.abort()
        self._finish(ConnectionResetError("the client went away"))

    def _finish(self, error: Exception | None) -> None:
        """The exchange is over; `error` says how, if it did not end well."""
        if self.done.done():
            return
        self.upstream.exchange = None
        self.error = error
        self.done.set_result(None)

    @property
    def request_complete(self) -> bool:
        return self.request_body.done


class ClientConnection(asyncio.Protocol):
    """One client connection: heads are read and routed one after another."""

    def __init__(self, router: Router, scheme: str) -> None:
        self._router = router
        self._scheme = scheme
        self._buffer = bytearray()
        self._arrived: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._head_since: float | None = None
        self._exchange: Exchange | None = None
        self._tunnel: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._holds: set[str] = set()  # reasons the transport should not read now
        self.writing_paused = False
        self._lingering = False
        self._peer = Peer("", scheme)
        self.transport: asyncio.Transport | None = None

    @property
    def _active(self) -> Exchange | None:
        """The exchange under way: a tunnel, or a request and its response."""
        return self._tunnel or self._exchange

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not registered as such
        peer = transport.get_extra_info("peername")
        self._peer = Peer(peer[0] if isinstance(peer, tuple) else "", self._scheme)
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        self._timer = loop.call_later(HEAD_SECONDS, self._check_deadlines)
        self._task = loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a body nobody reads
        exchange = self._active
        if exchange is not None and (exchange.tunnel or not exchange.request_complete):
            data = exchange.from_client(data)
            if not data:
                return
        self._buffer += data
        if len(self._buffer) > http1.MAX_HEAD_BYTES:
            self.hold_reading("unrouted", True)  # read on once the bytes have somewhere to go
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self._active
        if exchange is not None:
            exchange.client_lost()
        if self._task is not None:
            self._task.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def pause_writing(self) -> None:
        self.writing_paused = True
        exchange = self._active
        if exchange is not None:
            exchange.upstream.hold_reading(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        exchange = self._active
        if exchange is not None:
            exchange.upstream.hold_reading(False)

    def hold_reading(self, reason: str, hold: bool) -> None:
        """Reading pauses while any reason holds it: the upstream is full, or
        unrouted bytes pile up."""
        assert self.transport is not None
        was_held = bool(self._holds)
        if hold:
            self._holds.add(reason)
        else:
            self._holds.discard(reason)
        if self.transport.is_closing() or was_held == bool(self._holds):
            return
        if self._holds:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def write(self, data: bytes | bytearray) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def start_tunnel(self, exchange: Exchange) -> None:
        self._tunnel = exchange
        if self._buffer:  # bytes the client sent after its upgrade request
            exchange.upstream.write(bytes(self._buffer))
            self._buffer.clear()

    async def _serve(self) -> None:
        assert self.transport is not None
        try:
            while not self.transport.is_closing():
                head = await self._next_head()
                if head is None or not await self._relay(head):
                    break
            await self._linger()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("proxy: unexpected error; closing the client connection")
        finally:
            self.transport.close()

    async def _linger(self) -> None:
        """Before closing, read and drop what the client is still sending (the rest of
        a body answered early) for a moment: closing with unread bytes makes the
        kernel send a reset, which can destroy the answer before the client reads it."""
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self._lingering = True
        self._holds.clear()
        self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        await asyncio.sleep(LINGER_SECONDS)

    async def _next_head(self) -> RequestHead | None:
        """The next request head, or None after junk (answered) or a close."""
        while True:
            while self._buffer.startswith(b"\r\n"):  # blank lines before a request are ignored (RFC 9112 2.2)
                del self._buffer[:2]
            try:
                end = http1.find_head_end(self._buffer)
                if end >= 0:
                    raw = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._head_since = None
                    return http1.parse_request(raw)
            except HeadError as exc:
                self._answer(ProxyError(exc.status, {"code": exc.status, "message": str(exc)}), None, close=True)
                return None
            self.hold_reading("unrouted", False)
            if self._buffer and self._head_since is None:
                self._head_since = asyncio.get_running_loop().time()
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived

    def _check_deadlines(self) -> None:
        """One timer per connection, re-armed lazily: a client idle too long between
        requests, a head not finished in time, or an exchange quiet too long is closed."""
        loop = asyncio.get_running_loop()
        exchange = self._active
        if exchange is not None:
            deadline = exchange.last_activity + IDLE_SECONDS
        elif self._head_since is not None:
            deadline = self._head_since + HEAD_SECONDS
        else:
            deadline = self._idle_since + IDLE_SECONDS
        remaining = deadline - loop.time()
        if remaining > 0:
            self._timer = loop.call_later(min(remaining, HEAD_SECONDS), self._check_deadlines)
            return
        if exchange is not None:
            exchange.client_lost()
        if self.transport is not None:
            self.transport.abort()  # not close: a client that stopped reading would hold it forever

    async def _relay(self, head: RequestHead) -> bool:
        """Relay one exchange; whether the connection goes on to the next request."""
        try:
            target = await self._route(head)
        except ProxyError as exc:
            keep = head.keep_alive and head.framing.empty  # an unread body would be taken for a request
            self._answer(exc, head, close=not keep)
            return keep
        try:
            exchange = await self._exchange_with(head, target)
        except ProxyError as exc:
            self._answer(exc, head, close=True)
            return False
        except ConnectionError:  # the client left, or the exchange broke after answering
            return False
        return not exchange.tunnel and exchange.client_keeps and exchange.request_complete

    async def _route(self, head: RequestHead) -> Target:
        try:
            return await self._router(head, self._peer)
        except HeadError as exc:  # a target the router could not read
            raise ProxyError(exc.status, {"code": exc.status, "message": str(exc)}) from None

    async def _exchange_with(self, head: RequestHead, target: Target) -> Exchange:
        """Send the request and relay the answer. A pooled connection that the
        upstream closed before answering a bodiless request is retried once on
        a fresh one (the daemon may have dropped it while idle)."""
        for attempt in range(2):
            exchange, reused = await self._send_upstream(head, target, fresh=attempt > 0)
            try:
                await self._await_response(exchange)
                return exchange
            except UpstreamLost as exc:
                if exc.answered:
                    raise ConnectionAbortedError("the upstream closed in the middle of its answer") from None
                if not (reused and head.framing.empty and attempt == 0):
                    raise target.unreachable() from None
            except HeadError as exc:  # the upstream's answer could not be read
                if exchange.answered:
                    raise ConnectionAbortedError(str(exc)) from None
                raise _bad_gateway(exc) from None
            except BadRequestBody as exc:
                raise ProxyError(exc.status, {"code": exc.status, "message": str(exc)}) from None
            finally:
                self._exchange = None
                self._idle_since = asyncio.get_running_loop().time()
                self.hold_reading("upstream", False)
                target.pool.release(exchange.upstream, exchange.reusable and exchange.request_complete)
        raise target.unreachable()

    async def _send_upstream(self, head: RequestHead, target: Target, *, fresh: bool) -> tuple[Exchange, bool]:
        """Open (or reuse) an upstream connection and send the head and any body
        bytes already here; the exchange and whether the connection was reused."""
        raw_head = http1.render_request(head, target.set_headers)
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                upstream, reused = await target.pool.acquire(fresh=fresh)
            except OSError:
                if target.reset is not None:
                    await target.reset()
                if attempt + 1 < CONNECT_ATTEMPTS:
                    await asyncio.sleep(CONNECT_RETRY_SECONDS)
                continue
            exchange = Exchange(self, upstream, head)
            self._exchange = exchange
            early, self._buffer = bytes(self._buffer), bytearray()
            try:
                self._buffer += exchange.start(raw_head, early)
            except HeadError as exc:  # the body's first bytes already break its framing
                self._exchange = None
                target.pool.release(upstream, False)
                raise ProxyError(exc.status, {"code": exc.status, "message": str(exc)}) from None
            self.hold_reading("unrouted", len(self._buffer) > http1.MAX_HEAD_BYTES)
            return exchange, reused
        raise target.unreachable()

    async def _await_response(self, exchange: Exchange) -> None:
        """Until the response is relayed (or the tunnel closes); the deadline timer ends quiet ones."""
        await exchange.done
        if exchange.error is not None:
            raise exchange.error

    def _answer(self, error: ProxyError, head: RequestHead | None, *, close: bool) -> None:
        """The proxy's own answer (an error), JSON whatever the client accepts; no body to a HEAD."""
        body = json.dumps(error.body).encode()
        reason = HTTPStatus(error.status).phrase if error.status in HTTPStatus._value2member_map_ else "Error"
        content_type = "application/json; charset=utf-8"
        answer = http1.response_bytes(error.status, reason, body, content_type, close=close)
        self.write(answer[: len(answer) - len(body)] if head is not None and head.method == "HEAD" else answer)


async def serve(router: Router, host: str, port: int, *, ssl_context: object | None = None) -> asyncio.AbstractServer:
    """Listen on host:port, relaying each request where `router` says."""
    scheme = "https" if ssl_context is not None else "http"
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: ClientConnection(router, scheme),
        host,
        port,
        reuse_address=True,
        ssl=ssl_context,  # type: ignore[arg-type]
    )


def _bad_gateway(error: Exception) -> ProxyError:
    return ProxyError(502, {"code": 502, "message": f"Invalid response from the sandbox: {error}"})

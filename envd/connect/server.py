"""Serving Connect RPCs over aiohttp: the only place that knows the wire.

Services register `Rpc` descriptors whose handlers take and return protobuf
messages; this module reads envelopes and bodies, applies deadlines,
keep-alives and codecs, and writes errors the way the SDKs expect
(docs/envd-api.md §3).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import Message
from multidict import CIMultiDictProxy

from envd.blocking import run_blocking
from envd.connect import envelope
from envd.connect.codec import CODECS, Codec
from envd.connect.compat import codec_for_client
from envd.connect.errors import Code, ConnectError, deadline_exceeded
from envd.permissions import acting_user, requested_user
from envd.users import User, UserError

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_SECONDS = 90.0
STREAM_PREFIX = "application/connect+"
_TIMEOUT_MS = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() accepts "²"
LARGE_MESSAGE_BYTES = 256 * 1024


class Kind(enum.Enum):
    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"


@dataclass(frozen=True)
class Rpc:
    """One RPC method: where it lives, its message types and its handler.

    Handlers by kind:
      unary:         async (request, ctx) -> response
      server_stream: async generator (request, ctx) yielding responses
      client_stream: async (AsyncIterator[request], ctx) -> response
    `keepalive` builds the message sent during silence on a server stream.
    `errors` maps the service's domain exceptions to Connect codes: the one
    place a service says how its machinery's failures look on the wire.
    """

    service: str
    method: str
    kind: Kind
    request_type: type[Message]
    handler: Callable[..., Any]
    keepalive: Callable[[], Message] | None = None
    errors: Mapping[type[Exception], Code] = field(default_factory=dict)

    def connect_error(self, exc: Exception) -> ConnectError | None:
        """`exc` as the Connect error this RPC declares for it, if any."""
        for kind, code in self.errors.items():
            if isinstance(exc, kind):
                return ConnectError(code, str(exc))
        return None

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"


@dataclass
class RpcContext:
    """What a handler may know about its call, without seeing HTTP."""

    timeout: float | None
    keepalive_interval: float
    basic_user: User | None
    default_user: Callable[[], str]

    def user(self) -> User:
        """The acting user: the Basic-auth user, else the daemon's default (docs/envd-api.md §2.1)."""
        if self.basic_user is not None:
            return self.basic_user
        try:
            return acting_user(None, self.default_user())
        except UserError as exc:
            raise ConnectError(Code.UNAUTHENTICATED, str(exc)) from None


class ConnectServer:
    """Routes `POST /<service>/<method>` to registered RPCs."""

    def __init__(self, default_user: Callable[[], str]) -> None:
        self._rpcs: dict[str, Rpc] = {}
        self._default_user = default_user

    def add(self, rpcs: list[Rpc]) -> None:
        for rpc in rpcs:
            self._rpcs[rpc.path] = rpc

    def is_rpc_path(self, path: str) -> bool:
        return path in self._rpcs

    def routes(self) -> list[web.RouteDef]:
        routes = []
        for path in self._rpcs:
            routes.append(web.post(path, self._handle))
            routes.append(web.route("*", path, _method_not_allowed))
        return routes

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rpc = self._rpcs[request.path]
        codec = _codec_for(request.content_type, streaming=rpc.kind is not Kind.UNARY)
        if codec is None:
            return web.Response(status=415, text="unsupported content type")
        codec = codec_for_client(codec, request.headers)
        if rpc.kind is Kind.UNARY:
            return await self._serve_unary(request, rpc, codec)
        return await self._serve_stream(request, rpc, codec)

    def _context(self, request: web.Request) -> RpcContext:
        """Parse the headers every RPC shares; raises ConnectError on bad ones."""
        return RpcContext(
            timeout=_parse_timeout(request.headers.get("Connect-Timeout-Ms")),
            keepalive_interval=_parse_keepalive(request.headers.get("Keepalive-Ping-Interval")),
            basic_user=basic_user(request.headers.get("Authorization")),
            default_user=self._default_user,
        )

    async def _serve_unary(self, request: web.Request, rpc: Rpc, codec: Codec) -> web.Response:
        try:
            ctx = self._context(request)
            body = await _decompress_body(await _read_unary_body(request), request.headers)
            message = await _decode(codec, body, rpc.request_type)
            reply = await _with_deadline(rpc.handler(message, ctx), ctx.timeout)
        except ConnectError as exc:
            return unary_error(exc)
        except Exception as exc:
            return unary_error(_as_connect_error(rpc, exc))
        return web.Response(body=await _encode(codec, reply), headers={"Content-Type": f"application/{codec.name}"})

    async def _serve_stream(self, request: web.Request, rpc: Rpc, codec: Codec) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": f"{STREAM_PREFIX}{codec.name}"})

        async def prepare() -> None:
            # Headers go out only once the request body has been read (as
            # connect-go does): the SDK's HTTP client (pyqwest/hyper) otherwise
            # sometimes ends a request body it has not sent yet when the
            # response headers arrive first, and the RPC sees no message.
            if not response.prepared:
                await response.prepare(request)

        async def send(message: Message) -> None:
            await prepare()
            await response.write(envelope.encode(codec.encode(message)))

        error: ConnectError | None = None
        try:
            ctx = self._context(request)
            messages = _decode_each(request, rpc, codec)
            if rpc.kind is Kind.SERVER_STREAM:
                run = _run_server_stream(rpc, messages, ctx, send)
            else:
                run = _run_client_stream(rpc, messages, ctx, send)
            await _with_deadline(run, ctx.timeout)
        except ConnectError as exc:
            error = exc
        except ConnectionError:
            return response  # the client went away; nobody is left to tell
        except Exception as exc:
            error = _as_connect_error(rpc, exc)
        try:
            await prepare()
            await response.write_eof(_end_of_stream(error))  # one send with the final chunk
        except ConnectionError:
            pass
        return response


def _as_connect_error(rpc: Rpc, exc: Exception) -> ConnectError:
    """A declared domain error keeps its code; anything else is a bug: `internal`, logged."""
    declared = rpc.connect_error(exc)
    if declared is not None:
        return declared
    log.exception("RPC %s failed", rpc.path)
    return ConnectError(Code.INTERNAL, str(exc))


async def _encode(codec: Codec, message: Message) -> bytes:
    """Encode; a big message (a 10,000-entry listing) off the event loop, which
    would otherwise stall every other request for a few hundred milliseconds."""
    if message.ByteSize() < LARGE_MESSAGE_BYTES:
        return codec.encode(message)
    return await run_blocking(codec.encode, message)


async def _run_server_stream(
    rpc: Rpc,
    requests: AsyncIterator[Message],
    ctx: RpcContext,
    send: Callable[[Message], Awaitable[None]],
) -> None:
    request = await _single_message(requests)
    await _pump(rpc.handler(request, ctx), send, rpc.keepalive, ctx.keepalive_interval)


async def _run_client_stream(
    rpc: Rpc,
    requests: AsyncIterator[Message],
    ctx: RpcContext,
    send: Callable[[Message], Awaitable[None]],
) -> None:
    await send(await rpc.handler(requests, ctx))


async def _pump(
    stream: AsyncIterator[Message],
    send: Callable[[Message], Awaitable[None]],
    keepalive: Callable[[], Message] | None,
    interval: float,
) -> None:
    """Forward a handler's messages; during silence send keep-alives.

    The timer starts after the first message and restarts with every message
    (docs/envd-api.md §3.9). The pending `__anext__` survives a keep-alive, so
    the handler is never interrupted mid-step.
    """
    pending: asyncio.Future[Message] | None = None
    sent_first = False
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(stream.__anext__())
            if sent_first and keepalive is not None:
                done, _ = await asyncio.wait({pending}, timeout=interval)
                if not done:
                    await send(keepalive())
                    continue
            try:
                message = await pending
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            await send(message)
            sent_first = True
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await stream.aclose()  # type: ignore[attr-defined]


async def _decode_each(request: web.Request, rpc: Rpc, codec: Codec) -> AsyncIterator[Message]:
    compression = request.headers.get("Connect-Content-Encoding", "identity").lower()
    end_stream_allowed = rpc.kind is not Kind.SERVER_STREAM
    async for payload in envelope.read_envelopes(request.content, compression, end_stream_allowed):
        yield await _decode(codec, payload, rpc.request_type)


async def _single_message(requests: AsyncIterator[Message]) -> Message:
    """A server-streaming call carries exactly one request message.

    The body is read to its end before the handler runs (and before any
    response byte is sent), like connect-go; extra messages are ignored.
    """
    first: Message | None = None
    async for message in requests:
        if first is None:
            first = message
    if first is None:
        raise ConnectError(Code.INVALID_ARGUMENT, "protocol error: missing request message")
    return first


async def _with_deadline(coro: Awaitable[Any], timeout: float | None) -> Any:
    if timeout is None:
        return await coro
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise deadline_exceeded() from None


async def _read_unary_body(request: web.Request) -> bytes:
    """The whole body, refused beyond the message limit before it fills memory."""
    limit = envelope.MAX_MESSAGE_BYTES
    if (request.content_length or 0) > limit:
        raise ConnectError(Code.RESOURCE_EXHAUSTED, f"request body is larger than {limit} bytes")
    body = await request.content.read(limit + 1)
    while len(body) <= limit and not request.content.at_eof():
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise ConnectError(Code.RESOURCE_EXHAUSTED, f"request body is larger than {limit} bytes")
    return body


async def _decompress_body(body: bytes, headers: CIMultiDictProxy[str]) -> bytes:
    """Unary bodies may be gzipped (docs/envd-api.md §3.8); the SDKs send identity."""
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    return await envelope.decompress(body, encoding)


async def _decode(codec: Codec, data: bytes, message_type: type[Message]) -> Message:
    """Decode on the loop when small; a large JSON body would stall it for seconds."""
    if len(data) <= envelope.INLINE_BYTES:
        return codec.decode(data, message_type)
    return await run_blocking(codec.decode, data, message_type)


def _codec_for(content_type: str, streaming: bool) -> Codec | None:
    content_type = content_type.lower()
    prefix = STREAM_PREFIX if streaming else "application/"
    if not content_type.startswith(prefix):
        return None
    return CODECS.get(content_type[len(prefix) :])


def _parse_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    if not _TIMEOUT_MS.fullmatch(value):
        raise ConnectError(Code.INVALID_ARGUMENT, f"protocol error: invalid timeout {value!r}")
    return int(value) / 1000


def _parse_keepalive(value: str | None) -> float:
    try:
        seconds = float(int(value)) if value is not None else DEFAULT_KEEPALIVE_SECONDS
    except ValueError:
        seconds = DEFAULT_KEEPALIVE_SECONDS
    except OverflowError:  # hundreds of digits: not a duration
        raise ConnectError(Code.INVALID_ARGUMENT, "invalid Keepalive-Ping-Interval") from None
    return max(seconds, 1.0)


def basic_user(header: str | None) -> User | None:
    """The Basic header's user as a Connect error when unknown (envd/permissions.py)."""
    try:
        return requested_user(header)
    except UserError as exc:
        raise ConnectError(Code.UNAUTHENTICATED, str(exc)) from None


def _end_of_stream(error: ConnectError | None) -> bytes:
    body = {} if error is None else {"error": error.to_json()}
    return envelope.encode(json.dumps(body).encode(), envelope.FLAG_END_STREAM)


def unary_error(error: ConnectError) -> web.Response:
    """The unary JSON error shape; plain HTTP routes that fail like an RPC use it too."""
    return web.Response(
        body=json.dumps(error.to_json()).encode(),
        status=error.code.http_status,
        headers={"Content-Type": "application/json"},
    )


async def _method_not_allowed(request: web.Request) -> web.Response:
    return web.Response(status=405, text="method not allowed", headers={"Allow": "POST"})

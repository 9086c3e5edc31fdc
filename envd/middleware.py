"""The request pipeline (docs/envd-api.md §1.3): log → CORS → access token → Basic user."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from envd.auth import TOKEN_EXEMPT, UNAUTHORIZED_MESSAGE, token_matches
from envd.config import CODE_INTERPRETER_PORT, ENVD_PORT, Config
from envd.connect.errors import ConnectError
from envd.connect.server import basic_user, unary_error
from envd.http.errors import http_error
from envd.http.forward import PortForwarder

log = logging.getLogger("envd.access")


#: Which API a request is for, on a port that may serve both; on the Unix
#: socket also FORWARD, for a program's own port (`FORWARD_PORT_KEY`).
API_KEY = "api"
FORWARD_PORT_KEY = "forward_port"
ENVD, CODE, FORWARD = "envd", "code", "forward"

CORS_EXPOSED = (
    "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Location, Cache-Control, "
    "X-Content-Type-Options, Content-Encoding, Connect-Content-Encoding"
)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: method, path, status, duration; never payloads."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away mid-request (nginx's convention)
        raise
    finally:
        log.info(
            "%s %s %d %.1fms",
            request.method,
            request.path,
            status,
            (time.monotonic() - started) * 1000,
        )


def api_selector(single_port: bool) -> Middleware:
    """Tag each request with the API it belongs to.

    On a shared port the code interpreter owns `/execute` and `/contexts*`;
    `/health` is told apart by the `E2b-Sandbox-Port` header the SDKs send.
    """

    @web.middleware
    async def select(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[API_KEY] = _api_of(request) if single_port else ENVD
        return await handler(request)

    return select


def port_header_selector(code_interpreter: bool) -> Middleware:
    """On the Unix-socket ingress, `E2b-Sandbox-Port` alone picks the API, never the path.

    A user's own server may well have an `/execute`; absent means envd, as
    upstream's proxy defaults to it.
    """

    @web.middleware
    async def select(request: web.Request, handler: Handler) -> web.StreamResponse:
        value = request.headers.get("E2b-Sandbox-Port", str(ENVD_PORT))
        if not (value.isascii() and value.isdigit() and 0 < int(value) < 65536):
            return http_error(400, "invalid E2b-Sandbox-Port header")
        port = int(value)
        if port == ENVD_PORT:
            request[API_KEY] = ENVD
        elif port == CODE_INTERPRETER_PORT and code_interpreter:
            request[API_KEY] = CODE
        else:
            request[API_KEY] = FORWARD
            request[FORWARD_PORT_KEY] = port
        return await handler(request)

    return select


def forward_other_ports(forwarder: PortForwarder) -> Middleware:
    """Requests for a program's port go to it, past envd's routes and token."""

    @web.middleware
    async def forward(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request[API_KEY] == FORWARD:
            return await forwarder.forward(request, request[FORWARD_PORT_KEY])
        return await handler(request)

    return forward


def routes_of_api(api: str, resources: set) -> Middleware:
    """`resources` answer only requests of `api`, the others only requests of other APIs.

    Where the port header picks the API, envd must not serve `/execute`, nor
    the code interpreter `/files`: each answers its own 404 instead.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if route.resource is not None and route.resource.canonical != "/health":
            if (route.resource in resources) != (request.get(API_KEY) == api):
                raise web.HTTPNotFound()
        return await handler(request)

    return guard


def _api_of(request: web.Request) -> str:
    path = request.path
    if path == "/execute" or path == "/contexts" or path.startswith("/contexts/"):
        return CODE
    # The SDKs name the port of the API they mean, whatever port we listen on
    # (the shared one may well be 49983 itself).
    if path == "/health" and request.headers.get("E2b-Sandbox-Port") == str(CODE_INTERPRETER_PORT):
        return CODE
    return ENVD


def only_for(api: str, middleware: Middleware) -> Middleware:
    """Apply `middleware` only to requests of one API."""

    @web.middleware
    async def scoped(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.get(API_KEY, api) != api:
            return await handler(request)
        return await middleware(request, handler)

    return scoped


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Permissive CORS for browsers running the JS SDK (docs/envd-api.md §1.4)."""
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "HEAD, GET, POST, PUT, PATCH, DELETE",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ""),
                "Access-Control-Max-Age": "7200",
                "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            },
        )
    if origin:
        request["cors_headers"] = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Expose-Headers": CORS_EXPOSED,
            "Vary": "Origin",
        }
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if origin and not response.prepared:
        response.headers.update(request["cors_headers"])
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def add_cors_to_streams(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: streaming responses get CORS headers too."""
    headers = request.get("cors_headers")
    if headers:
        response.headers.update(headers)


def access_token_gate(config: Config) -> Middleware:
    """With a token configured, everything but the exempt routes needs it (docs/envd-api.md §6.2)."""

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = config.access_token
        if token and (request.method, request.path) not in TOKEN_EXEMPT:
            if not token_matches(token, request.headers.get("X-Access-Token")):
                return http_error(401, UNAUTHORIZED_MESSAGE)
        return await handler(request)

    return gate


def execute_token_gate(config: Config) -> Middleware:
    """With a token configured, running code needs it as much as the envd API does.

    The SDKs send `X-Access-Token` on `/execute` only, so only `/execute` asks
    for it; the context routes stay as open as upstream's. Without this, a
    cross-origin page could POST code (a `text/plain` body needs no preflight).
    """

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = config.access_token
        if token and request.path == "/execute":
            if not token_matches(token, request.headers.get("X-Access-Token")):
                return web.Response(status=401, text=UNAUTHORIZED_MESSAGE, content_type="text/plain")
        return await handler(request)

    return gate


def basic_user_check(is_rpc_path: Callable[[str], bool]) -> Middleware:
    """A Basic header naming an unknown user fails every request (docs/envd-api.md §1.3 step 7).

    RPC paths are checked by the Connect layer, which knows the stream format.
    """

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_rpc_path(request.path):
            try:
                basic_user(request.headers.get("Authorization"))
            except ConnectError as exc:
                return unary_error(exc)
        return await handler(request)

    return check


@web.middleware
async def plain_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Go's mux answers unknown paths with `404 page not found` in plain text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(status=404, text="404 page not found")
    except web.HTTPMethodNotAllowed as exc:
        return web.Response(status=405, text="method not allowed", headers={"Allow": ", ".join(exc.allowed_methods)})

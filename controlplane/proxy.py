"""Sandbox traffic (`E2B_SANDBOX_URL`): routed by the SDK's headers or by `PORT-ID.domain`.

Each request goes to its sandbox's Unix socket with `E2b-Sandbox-Port` set,
streamed both ways (envd/http/forward.py does the relaying, for the daemon's
own port forwarder as well). Error bodies are the ones the SDKs map.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re

from aiohttp import web

from controlplane.lifecycle import Manager
from controlplane.records import Sandbox
from envd.auth import sign
from envd.http.forward import relay

log = logging.getLogger(__name__)

ENVD_PORT, CODE_PORT = 49983, 49999
TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"
SANDBOX_ID = re.compile(r"[a-z0-9]{20}")
CONNECT_ATTEMPTS = 5


class ProxyError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


class Proxy:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            sandbox_id, port = self._signed_target(request) or _target(request)
            return await self._forward(request, sandbox_id, port)
        except ProxyError as exc:
            return web.json_response(exc.body, status=exc.status)

    async def _forward(self, request: web.Request, sandbox_id: str, port: int) -> web.StreamResponse:
        routed = self.manager.routable(sandbox_id)
        if routed is None and await self._woken(sandbox_id):
            routed = self.manager.routable(sandbox_id)
        if routed is None:
            raise ProxyError(502, {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502})
        sandbox, ingress = routed
        _check_traffic_token(request, sandbox, port)
        if sandbox.access_token and port == CODE_PORT and request.path == "/execute":
            # The daemon checks too; here nobody without the token reaches it at all.
            given = request.headers.get("X-Access-Token", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(sandbox.access_token.encode(), given):
                raise ProxyError(
                    401, {"code": 401, "message": "unauthorized access, please provide a valid access token"}
                )
        headers = {
            "E2b-Sandbox-Id": sandbox_id,
            "E2b-Sandbox-Port": str(port),
            "X-Forwarded-For": request.remote or "",
            "X-Forwarded-Proto": request.scheme,
            "X-Forwarded-Host": request.host,
        }
        if sandbox.mask_request_host and port != ENVD_PORT:
            headers["Host"] = sandbox.mask_request_host.replace("${PORT}", str(port))
        for _ in range(CONNECT_ATTEMPTS):
            try:
                response = await relay(request, ingress.session(), "http://sandbox", headers)
            except OSError:  # the socket is missing or not a socket (yet, or any more)
                response = None
            if response is not None:
                return response
            await ingress.reset()
            await asyncio.sleep(0.1)
        raise ProxyError(
            502,
            {
                "sandboxId": sandbox_id,
                "message": "The sandbox is running but port is not open",
                "port": port,
                "code": 502,
            },
        )

    def _signed_target(self, request: web.Request) -> tuple[str, int] | None:
        """A `download_url()`/`upload_url()` of SDK 2.x in header mode: the bare proxy URL
        with a signature, no routing header and no sandbox host name. The one running
        secured sandbox whose token makes that signature is the target (port 49983)."""
        if "E2b-Sandbox-Id" in request.headers or "E2b-Sandbox-Port" in request.headers:
            return None
        if request.path != "/files" or request.method not in ("GET", "POST"):
            return None
        signature = request.query.get("signature")
        if signature is None or _host_names_a_sandbox(request.host):
            return None
        operation = "read" if request.method == "GET" else "write"
        raw_expiration = request.query.get("signature_expiration")
        try:
            expiration = int(raw_expiration) if raw_expiration is not None else None
        except ValueError:
            return None  # the daemon would refuse it; without a target it is 400 Invalid host
        path, user = request.query.get("path", ""), request.query.get("username", "")
        matches = [
            sandbox.id
            for sandbox in list(self.manager.sandboxes.values())
            if sandbox.access_token
            and hmac.compare_digest(
                sign(path, operation, user, sandbox.access_token, expiration).encode(), signature.encode()
            )
        ]
        return (matches[0], ENVD_PORT) if len(matches) == 1 else None

    async def _woken(self, sandbox_id: str) -> bool:
        """A paused sandbox created with autoResume runs again for this request."""
        sandbox = self.manager.sandboxes.get(sandbox_id)
        if sandbox is None:
            return False
        try:
            return await self.manager.wake(sandbox)
        except Exception as exc:  # the request then gets "not found"; the sandbox stays paused
            log.warning("sandbox %s could not be resumed for a request: %s", sandbox_id, exc)
            return False


def _check_traffic_token(request: web.Request, sandbox: Sandbox, port: int) -> None:
    """`allowPublicTraffic: false`: every port but envd's (which checks its own token) needs it."""
    if not sandbox.traffic_token or port == ENVD_PORT:
        return
    given = request.headers.get(TRAFFIC_TOKEN_HEADER)
    prefix = "Sandbox is secured with traffic access token."
    if given is None:
        message = f"{prefix} Token header '{TRAFFIC_TOKEN_HEADER}' is missing"
    elif hmac.compare_digest(sandbox.traffic_token.encode(), given.encode("utf-8", "surrogateescape")):
        return
    else:
        message = f"{prefix} Provided token in header '{TRAFFIC_TOKEN_HEADER}' is invalid"
    raise ProxyError(403, {"sandboxId": sandbox.id, "message": message, "code": 403})


def _host_names_a_sandbox(host: str) -> bool:
    parts = host.split(".", 1)[0].split("-")
    return len(parts) >= 2 and parts[0].isdigit()


def _target(request: web.Request) -> tuple[str, int]:
    """(sandbox id, port) from the routing headers, else from the Host's first label."""
    sandbox_id = request.headers.get("E2b-Sandbox-Id")
    port = request.headers.get("E2b-Sandbox-Port")
    if sandbox_id is not None or port is not None:
        if sandbox_id is None:
            raise ProxyError(400, {"code": 400, "message": "Missing header: E2b-Sandbox-Id"})
        if port is None:
            raise ProxyError(400, {"code": 400, "message": "Missing header: E2b-Sandbox-Port"})
    else:
        parts = request.host.split(".", 1)[0].split("-")
        if len(parts) < 2:
            raise ProxyError(400, {"code": 400, "message": "Invalid host"})
        port, sandbox_id = parts[0], parts[1]
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ProxyError(400, {"code": 400, "message": f"Invalid sandbox port: {port[:20]}"})
    if not SANDBOX_ID.fullmatch(sandbox_id):
        raise ProxyError(400, {"code": 400, "message": "Invalid sandbox ID"})
    return sandbox_id, int(port)

"""Sandbox traffic (`E2B_SANDBOX_URL`): routed by the SDK's headers or by `PORT-ID.domain`.

Each request goes to its sandbox's Unix socket with `E2b-Sandbox-Port` set,
streamed both ways (envd/http/forward.py does the relaying, for the daemon's
own port forwarder as well). Error bodies are the ones the SDKs map.
"""

from __future__ import annotations

import asyncio
import hmac
import re

from aiohttp import web

from controlplane.lifecycle import Manager
from envd.http.forward import relay

CODE_PORT = 49999
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
            sandbox_id, port = _target(request)
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
        for _ in range(CONNECT_ATTEMPTS):
            try:
                response = await relay(request, ingress.session(), "http://sandbox", headers)
            except OSError:  # the socket is missing or not a socket (yet, or any more)
                response = None
            if response is not None:
                return response
            await ingress.reset()
            await asyncio.sleep(0.1)
        raise ProxyError(502, {"sandboxId": sandbox_id, "message": "The sandbox is running but port is not open",
                               "port": port, "code": 502})


    async def _woken(self, sandbox_id: str) -> bool:
        """A paused sandbox created with autoResume runs again for this request."""
        sandbox = self.manager.sandboxes.get(sandbox_id)
        return sandbox is not None and await self.manager.wake(sandbox)


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

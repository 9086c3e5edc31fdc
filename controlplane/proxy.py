"""Sandbox traffic (`E2B_SANDBOX_URL`): routed by the SDK's headers or by `PORT-ID.domain`.

This module decides where a request goes and who may send it
(docs/control-plane-api.md §2.2); `controlplane.relay` moves the bytes, to the
sandbox's Unix socket with `E2b-Sandbox-Port` set. Error bodies are the ones
the SDKs map.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Callable

from controlplane.http1 import RequestHead
from controlplane.lifecycle import Manager
from controlplane.records import Sandbox
from controlplane.relay import ConnectionPool, Peer, ProxyError, Target
from envd.auth import sign

log = logging.getLogger(__name__)

ENVD_PORT, CODE_PORT = 49983, 49999
TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"
SANDBOX_ID = re.compile(r"[a-z0-9]{20}")


class Proxy:
    """The router of the proxy listener; with `api_host`, also of the domain-mode
    listener, where `api.<domain>` is the REST API and every other name a sandbox."""

    def __init__(self, manager: Manager, api_host: str | None = None, api_port: int = 0) -> None:
        self.manager = manager
        self._api = ConnectionPool(self._connect_api) if api_host else None
        self._api_address = (api_host or "", api_port)

    async def _connect_api(
        self, factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        host, port = self._api_address
        return await asyncio.get_running_loop().create_connection(factory, host, port)

    async def route(self, head: RequestHead, peer: Peer) -> Target:
        if self._api is not None and head.host.split(".", 1)[0] == "api":
            return Target(self._api)
        sandbox_id, port = self._signed_target(head) or _target(head)
        return await self._sandbox_target(head, peer, sandbox_id, port)

    async def _sandbox_target(self, head: RequestHead, peer: Peer, sandbox_id: str, port: int) -> Target:
        routed = self.manager.routable(sandbox_id)
        if routed is None and await self._woken(sandbox_id):
            routed = self.manager.routable(sandbox_id)
        if routed is None:
            raise _not_found(sandbox_id)
        sandbox, ingress = routed
        _check_traffic_token(head, sandbox, port)
        if sandbox.access_token and port == CODE_PORT and head.path == "/execute":
            # The daemon checks too; here nobody without the token reaches it at all.
            given = head.headers.get("X-Access-Token", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(sandbox.access_token.encode(), given):
                raise ProxyError(
                    401, {"code": 401, "message": "unauthorized access, please provide a valid access token"}
                )
        headers = {
            "E2b-Sandbox-Id": sandbox_id,
            "E2b-Sandbox-Port": str(port),
            "X-Forwarded-For": peer.address,
            "X-Forwarded-Proto": peer.scheme,
            "X-Forwarded-Host": head.host,
        }
        if sandbox.mask_request_host and port != ENVD_PORT:
            headers["Host"] = sandbox.mask_request_host.replace("${PORT}", str(port))

        def unreachable() -> ProxyError:
            """Killed or paused meanwhile: "not found", as for a new request; else the port is shut."""
            if self.manager.routable(sandbox_id) is None:
                return _not_found(sandbox_id)
            body = {"sandboxId": sandbox_id, "message": "The sandbox is running but port is not open", "port": port}
            return ProxyError(502, {**body, "code": 502})

        return Target(ingress.pool, headers, unreachable, reset=ingress.reopen)

    def _signed_target(self, head: RequestHead) -> tuple[str, int] | None:
        """A `download_url()`/`upload_url()` of SDK 2.x in header mode: the bare proxy URL
        with a signature, no routing header and no sandbox host name. The one running
        secured sandbox whose token makes that signature is the target (port 49983)."""
        if "E2b-Sandbox-Id" in head.headers or "E2b-Sandbox-Port" in head.headers:
            return None
        if head.path != "/files" or head.method not in ("GET", "POST"):
            return None
        query = head.url.query
        signature = query.get("signature")
        if signature is None or _host_names_a_sandbox(head.host):
            return None
        operation = "read" if head.method == "GET" else "write"
        raw_expiration = query.get("signature_expiration")
        try:
            expiration = int(raw_expiration) if raw_expiration is not None else None
        except ValueError:
            return None  # the daemon would refuse it; without a target it is 400 Invalid host
        path, user = query.get("path", ""), query.get("username", "")
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


def _not_found(sandbox_id: str) -> ProxyError:
    return ProxyError(502, {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502})


def _check_traffic_token(head: RequestHead, sandbox: Sandbox, port: int) -> None:
    """`allowPublicTraffic: false`: every port but envd's (which checks its own token) needs it."""
    if not sandbox.traffic_token or port == ENVD_PORT:
        return
    given = head.headers.get(TRAFFIC_TOKEN_HEADER)
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


def _target(head: RequestHead) -> tuple[str, int]:
    """(sandbox id, port) from the routing headers, else from the Host's first label."""
    sandbox_id = head.headers.get("E2b-Sandbox-Id")
    port = head.headers.get("E2b-Sandbox-Port")
    if sandbox_id is not None or port is not None:
        if sandbox_id is None:
            raise ProxyError(400, {"code": 400, "message": "Missing header: E2b-Sandbox-Id"})
        if port is None:
            raise ProxyError(400, {"code": 400, "message": "Missing header: E2b-Sandbox-Port"})
    else:
        parts = head.host.split(".", 1)[0].split("-")
        if len(parts) < 2:
            raise ProxyError(400, {"code": 400, "message": "Invalid host"})
        port, sandbox_id = parts[0], parts[1]
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ProxyError(400, {"code": 400, "message": f"Invalid sandbox port: {port[:20]}"})
    if not SANDBOX_ID.fullmatch(sandbox_id):
        raise ProxyError(400, {"code": 400, "message": "Invalid sandbox ID"})
    return sandbox_id, int(port)

"""E2B's REST API subset (`E2B_API_URL`): create, connect, list, get info, kill, timeout.

Every error is `{"code": <int>, "message": ...}`, the shape both SDK
generations parse; the exception each status becomes is the SDK's business.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiohttp
from aiohttp import web

from controlplane.backend import EngineError
from controlplane.config import DEFAULT_TIMEOUT, Settings
from controlplane.idempotency import KEY as IDEMPOTENCY_KEY
from controlplane.idempotency import IdempotentCreates, KeyMismatch
from controlplane.lifecycle import Claims, HostFull, Manager, StartTimeout, TeamLimit
from controlplane.records import FULL, PAUSED, RUNNING, Sandbox

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TEAM = "team"
UNSUPPORTED_FIELDS = ("mcp", "iam", "volumeMounts")
#: Routes of the SDKs this control plane does not offer (yet): 501, never a silent success.
NOT_SUPPORTED = {
    ("POST", "/sandboxes/{id}/fork"): "fork",
    ("POST", "/sandboxes/{id}/snapshots"): "snapshots",
    ("PUT", "/sandboxes/{id}/network"): "network update",
    ("GET", "/sandboxes/{id}/logs"): "logs",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        message = "not found" if exc.status == 404 else exc.reason
        return error_response(exc.status, message)


class Api:
    def __init__(self, settings: Settings, manager: Manager) -> None:
        self.settings = settings
        self.manager = manager
        self.idempotent = IdempotentCreates(manager.store)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors, self._authenticate])
        app.add_routes(
            [
                web.get("/health", self.health),
                web.post("/v2/sandboxes", self.create_v2),
                web.post("/sandboxes", self.create_v1),
                web.get("/v2/sandboxes", self.list_v2),
                web.get("/sandboxes", self.list_v1),
                web.get("/sandboxes/{id}", self.info),
                web.delete("/sandboxes/{id}", self.kill),
                web.post("/sandboxes/{id}/timeout", self.set_timeout),
                web.post("/v2/sandboxes/{id}/connect", self.connect),
                web.post("/sandboxes/{id}/connect", self.connect),
                web.post("/sandboxes/{id}/pause", self.pause),
                web.get("/sandboxes/{id}/metrics", self.metrics),
                web.post("/sandboxes/{id}/resume", self.resume),
                web.get("/snapshots", self.no_snapshots),
            ]
        )
        for (method, path), feature in NOT_SUPPORTED.items():
            app.router.add_route(method, path, _not_supported(feature))
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        given = request.headers.get("X-API-KEY", "").encode("utf-8", "surrogateescape")
        for key, team in self.settings.api_keys.items():
            if hmac.compare_digest(key.encode(), given):
                request[TEAM] = team
                return await handler(request)
        raise ApiError(401, "Invalid API key")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def no_snapshots(self, request: web.Request) -> web.Response:
        return web.json_response([])

    # ------------------------------------------------------------ create

    async def create_v2(self, request: web.Request) -> web.Response:
        return await self._create(request, secure=True)

    async def create_v1(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        return await self._create(request, secure=body.get("secure") is True, body=body)

    async def _create(self, request: web.Request, secure: bool, body: dict | None = None) -> web.Response:
        body = body if body is not None else await _json_object(request)
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return web.json_response(await self._new_sandbox(request, secure, body), status=201)
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(400, "Idempotency-Key must be 1 to 255 characters of a-z, 0-9 and -")
        try:
            answer = await self.idempotent.once(
                request[TEAM],
                key,
                {"route": request.path, "body": body},
                lambda: self._new_sandbox(request, secure, body),
            )
        except KeyMismatch:
            return web.json_response(
                {
                    "code": 409,
                    "message": "Idempotency-Key was already used with a different request",
                    "error_code": "idempotency_request_mismatch",
                },
                status=409,
            )
        return web.json_response(answer, status=201)

    async def _new_sandbox(self, request: web.Request, secure: bool, body: dict[str, Any]) -> dict[str, Any]:
        for name in UNSUPPORTED_FIELDS:
            if body.get(name) not in (None, False, {}, []):
                raise ApiError(400, f"{name} is not supported by the local control plane")
        name = _string(body, "templateID", required=True)
        template = self.settings.template(name)
        if template is None:
            raise ApiError(404, f"template '{name}' not found")
        if not await self.manager.backend.image_present(template.image):
            raise ApiError(404, f"template '{name}' is not available: image {template.image} is not present")
        timeout = self._timeout(body, "timeout")
        internet = body.get("allow_internet_access")
        if internet is not None and not isinstance(internet, bool):
            raise ApiError(400, "allow_internet_access must be a boolean")
        auto_pause, auto_pause_memory, auto_resume = _lifecycle(body)
        network = _network(body)
        if network.get("denyOut") == ["0.0.0.0/0"]:
            internet = False  # everything out denied: no network at all
        try:
            claims = Claims(
                team=request[TEAM],
                alias=name if name != template.id else None,
                timeout=timeout,
                metadata=_string_map(body, "metadata"),
                env_vars=_string_map(body, "envVars"),
                secure=secure,
                internet=internet,
                auto_pause=auto_pause,
                auto_pause_memory=auto_pause_memory,
                auto_resume=auto_resume,
                network=network,
            )
            sandbox = await self.manager.create(template, claims)
        except StartTimeout as exc:
            raise ApiError(504, str(exc), {"Should-Retry": "false"}) from None
        except TeamLimit as exc:
            raise ApiError(429, str(exc), {"Should-Retry": "false"}) from None
        except HostFull as exc:
            raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
        except EngineError as exc:
            raise ApiError(500, str(exc), {"Should-Retry": "false"}) from None
        return self._sandbox(sandbox)

    def _timeout(self, body: dict[str, Any], field: str, allow_zero: bool = False) -> int:
        value = body.get(field, DEFAULT_TIMEOUT)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{field} must be an integer number of seconds")
        if value < 0 or (value == 0 and not allow_zero):
            raise ApiError(400, "Timeout must be greater than 0")
        if value > self.settings.max_timeout:
            raise ApiError(400, "Timeout cannot be greater than 24 hours")
        return value

    def _sandbox(self, sandbox: Sandbox) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.id,
            "clientID": self.settings.client_id,
            "envdVersion": sandbox.envd_version,
            "trafficAccessToken": sandbox.traffic_token,
            "domain": self.settings.public_domain,
        }
        if sandbox.alias:
            answer["alias"] = sandbox.alias
        if sandbox.access_token:
            answer["envdAccessToken"] = sandbox.access_token
        return answer

    # ------------------------------------------------------------ list and info

    async def list_v1(self, request: web.Request) -> web.Response:
        found = [s for s in self._matching(request) if s.state == RUNNING]
        return web.json_response([s.listed(self.settings.client_id) for s in found])

    async def list_v2(self, request: web.Request) -> web.Response:
        states = {"running": RUNNING, "paused": PAUSED}
        wanted = {states[s] for s in request.query.get("state", "running,paused").split(",") if s in states}
        newest_first = _order(request.query.get("order"))
        found = [s for s in self._matching(request, newest_first) if s.state in wanted]
        limit = _limit(request.query.get("limit"))
        start = _after_cursor(found, request.query.get("nextToken"), newest_first)
        page = found[start : start + limit]
        headers = {}
        if start + limit < len(found):
            last = page[-1]
            headers["x-next-token"] = base64.urlsafe_b64encode(json.dumps([last.started_at, last.id]).encode()).decode()
        return web.json_response([s.listed(self.settings.client_id) for s in page], headers=headers)

    def _matching(self, request: web.Request, newest_first: bool = True) -> list[Sandbox]:
        """The team's running and paused sandboxes matching every filter given
        (metadata pairs, `startedAfter`, `template` id or alias), in start order."""
        wanted = _metadata_query(request.query.get("metadata", ""))
        since = _started_after(request.query.get("startedAfter"))
        template = request.query.get("template")
        found = [
            s
            for s in self.manager.sandboxes.values()
            if self.manager.find(request[TEAM], s.id) is s
            and all(s.metadata.get(k) == v for k, v in wanted.items())
            and (since is None or s.started_at >= since)
            and (template is None or template in (s.template_id, s.alias))
        ]
        return sorted(found, key=lambda s: (s.started_at, s.id), reverse=newest_first)

    async def info(self, request: web.Request) -> web.Response:
        sandbox = self._find(request)
        detail = {
            **sandbox.listed(self.settings.client_id),
            **self._sandbox(sandbox),
            "allowInternetAccess": sandbox.allow_internet,
            **({"network": sandbox.network} if sandbox.network else {}),
            "lifecycle": {"onTimeout": "pause" if sandbox.auto_pause else "kill", "autoResume": sandbox.auto_resume},
        }
        if sandbox.state == PAUSED:
            detail["pauseMode"] = sandbox.pause_mode or FULL
        return web.json_response(detail)

    # ------------------------------------------------------------ changes

    async def kill(self, request: web.Request) -> web.Response:
        if not await self.manager.kill(self._find(request)):
            raise ApiError(404, _missing(request))
        return web.Response(status=204)

    async def set_timeout(self, request: web.Request) -> web.Response:
        sandbox = self._find(request)
        if sandbox.state == PAUSED:
            raise ApiError(409, f'Sandbox "{sandbox.id}" is paused')
        timeout = self._timeout(await _json_object(request), "timeout", allow_zero=True)
        sandbox.timeout = timeout
        self.manager.set_end(sandbox, time.time() + timeout)
        return web.Response(status=204)

    async def connect(self, request: web.Request) -> web.Response:
        """Running: extend the timeout only (200). Paused: resume, timeout from now (201)."""
        sandbox = self._find(request)
        timeout = self._timeout(await _json_object(request), "timeout")
        if sandbox.state == PAUSED:
            await self._resume(sandbox, timeout)
            return web.json_response(self._sandbox(sandbox), status=201)
        self.manager.set_end(sandbox, max(sandbox.end_at, time.time() + timeout))
        return web.json_response(self._sandbox(sandbox))

    async def metrics(self, request: web.Request) -> web.Response:
        """Samples in [start, end] (unix seconds; default: the sandbox's start to now), oldest first."""
        sandbox = self._find(request)
        try:
            start = float(request.query.get("start", sandbox.started_at))
            end = float(request.query.get("end", time.time()))
        except ValueError:
            raise ApiError(400, "start and end are unix timestamps in seconds") from None
        return web.json_response(self.manager.metrics.between(sandbox.id, int(start), end))

    async def pause(self, request: web.Request) -> web.Response:
        """Frozen (the default: processes stop, memory stays) or, with `memory: false`, stopped
        keeping only the files (resume boots it again)."""
        sandbox = self._find(request)
        memory = (await _json_object(request)).get("memory", True)
        if not isinstance(memory, bool):
            raise ApiError(400, "memory must be a boolean")
        try:
            paused = await self.manager.pause(sandbox, memory=memory)
        except EngineError as exc:
            raise ApiError(500, f"the sandbox could not be paused: {exc}") from None
        if not paused:
            raise ApiError(409, f'Sandbox "{sandbox.id}" is already paused')
        return web.Response(status=204)

    async def resume(self, request: web.Request) -> web.Response:
        """The deprecated resume route: 201, or 409 when it is running."""
        sandbox = self._find(request)
        if sandbox.state != PAUSED:
            raise ApiError(409, f'Sandbox "{sandbox.id}" is already running')
        await self._resume(sandbox, self._timeout(await _json_object(request), "timeout"))
        return web.json_response(self._sandbox(sandbox), status=201)

    async def _resume(self, sandbox: Sandbox, timeout: int) -> None:
        try:
            await self.manager.resume(sandbox, timeout)
        except StartTimeout as exc:
            raise ApiError(504, str(exc)) from None
        except (EngineError, OSError, aiohttp.ClientError) as exc:
            raise ApiError(500, f"the sandbox could not be resumed: {exc}") from None

    def _find(self, request: web.Request) -> Sandbox:
        sandbox = self.manager.find(request[TEAM], request.match_info["id"])
        if sandbox is None:
            raise ApiError(404, _missing(request))
        return sandbox


def _missing(request: web.Request) -> str:
    return f"Sandbox \"{request.match_info['id']}\" doesn't exist or you don't have access to it"


def _not_supported(feature: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        raise ApiError(501, f"{feature} is not supported by the local control plane")

    return handler


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.content.read(1024 * 1024 + 1)
    if len(raw) > 1024 * 1024:
        raise ApiError(400, "request body too large")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ApiError(400, f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _network(body: dict[str, Any]) -> dict[str, object]:
    """The `network` fields this control plane honours; any other is a clear 400.

    `allowPublicTraffic: false` issues a traffic token the proxy requires;
    `maskRequestHost` is the Host a program inside sees; `denyOut: ["0.0.0.0/0"]`
    (without `allowOut`) is the same as `allow_internet_access: false`.
    """
    network = body.get("network")
    if network is None:
        return {}
    if not isinstance(network, dict):
        raise ApiError(400, "network must be an object")
    for name, value in network.items():
        if name == "allowPublicTraffic" and isinstance(value, bool):
            continue
        if name == "maskRequestHost" and isinstance(value, str) and value:
            continue
        if name == "denyOut" and value == ["0.0.0.0/0"] and not network.get("allowOut"):
            continue
        if value in (None, [], {}):
            continue
        raise ApiError(400, f"network.{name} is not supported by the local control plane")
    return {name: value for name, value in network.items() if value not in (None, [], {})}


def _lifecycle(body: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(autoPause, autoPauseMemory, autoResume.enabled) of a create body."""
    auto_pause = body.get("autoPause", False)
    if not isinstance(auto_pause, bool):
        raise ApiError(400, "autoPause must be a boolean")
    memory = body.get("autoPauseMemory", True)
    if not isinstance(memory, bool):
        raise ApiError(400, "autoPauseMemory must be a boolean")
    resume = body.get("autoResume")
    if resume is None:
        return auto_pause, memory, False
    if not isinstance(resume, dict) or not isinstance(resume.get("enabled"), bool):
        raise ApiError(400, 'autoResume must be {"enabled": true|false}')
    if resume["enabled"] and not auto_pause:
        raise ApiError(400, "autoResume needs autoPause: only a sandbox paused at its timeout resumes on traffic")
    if resume["enabled"] and not memory:
        raise ApiError(400, "autoResume cannot wake a filesystem pause: it resumes only through connect")
    return auto_pause, memory, resume["enabled"]


def _string(body: dict[str, Any], field: str, required: bool = False) -> str:
    value = body.get(field)
    if not isinstance(value, str) or (required and not value):
        raise ApiError(400, f"{field} must be a non-empty string")
    return value


def _string_map(body: dict[str, Any], field: str) -> dict[str, str]:
    value = body.get(field) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, f"{field} must map strings to strings")
    return dict(value)


def _metadata_query(value: str) -> dict[str, str]:
    """The SDK quotes keys and values, then urlencodes: undo both layers."""
    return {unquote(k): unquote(v) for k, v in parse_qsl(value, keep_blank_values=True)}


def _limit(value: str | None) -> int:
    if value is None:
        return 100
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise ApiError(400, "limit must be between 1 and 100")
    return int(value)


def _order(value: str | None) -> bool:
    """Whether the newest come first (`desc`, the default)."""
    if value in (None, "", "desc"):
        return True
    if value == "asc":
        return False
    raise ApiError(400, f"invalid order {value!r}: asc or desc")


def _started_after(value: str | None) -> float | None:
    """`startedAfter` as the SDK sends it (ISO 8601 with an offset) in epoch seconds."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"invalid startedAfter {value[:40]!r}: an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _after_cursor(found: list[Sandbox], token: str | None, newest_first: bool = True) -> int:
    """Index of the first item after the cursor (started_at, id of the last item sent)."""
    if not token:
        return 0
    try:
        started_at, sandbox_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, TypeError):
        raise ApiError(400, "invalid nextToken") from None
    for index, sandbox in enumerate(found):
        key = (sandbox.started_at, sandbox.id)
        if (key < (started_at, sandbox_id)) if newest_first else (key > (started_at, sandbox_id)):
            return index
    return len(found)

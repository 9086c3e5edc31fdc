"""`/health`, `/metrics`, `/envs` and `/init` (docs/envd-api.md §6.3 to §6.6)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timezone
from typing import Any

import psutil
from aiohttp import web

from envd import ENVD_PROTOCOL_VERSION
from envd.auth import token_matches
from envd.config import Config
from envd.users import UserError, lookup_user

NO_STORE = {"Cache-Control": "no-store"}
MAX_INIT_BYTES = 1024 * 1024


def json_response(payload: Any) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **NO_STORE},
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=NO_STORE)


class SystemRoutes:
    """Routes that read or change the daemon's own configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._init_lock = asyncio.Lock()
        self._last_init: datetime | None = None
        psutil.cpu_percent(interval=None)  # first reading: "since daemon start"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/envs", self.envs, allow_head=False),
            web.get("/metrics", self.metrics, allow_head=False),
            web.post("/init", self.init),
        ]

    async def envs(self, request: web.Request) -> web.Response:
        return json_response(self.config.global_envs())

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            return json_response(_read_metrics())
        except OSError:
            return web.Response(status=500)

    async def init(self, request: web.Request) -> web.Response:
        headers = {**NO_STORE, "X-Envd-Version": ENVD_PROTOCOL_VERSION}
        try:
            # /init skips the token gate: read no more than a configuration needs.
            if (request.content_length or 0) > MAX_INIT_BYTES:
                raise ValueError("body too large")
            body = await request.content.read(MAX_INIT_BYTES + 1)
            if len(body) > MAX_INIT_BYTES:
                raise ValueError("body too large")
            fields = json.loads(body) if body.strip() else {}
            if not isinstance(fields, dict):
                raise ValueError("request body must be a JSON object")
        except ValueError as exc:
            return web.Response(status=400, text=f"invalid request body: {exc}", headers=headers)
        async with self._init_lock:
            failure = self._check_token(fields.get("accessToken"))
            if failure:
                return web.Response(status=failure[0], text=failure[1], headers=headers)
            try:
                when = _parse_timestamp(fields.get("timestamp"))
                if self._is_new(when):
                    _validate(fields)  # all of it first: never half-apply
                    self._apply(fields)
                    self._last_init = when or self._last_init
            except (ValueError, TypeError, UserError) as exc:
                return web.Response(status=400, text=str(exc), headers=headers)
        return web.Response(status=204, headers=headers)

    def _check_token(self, given: Any) -> tuple[int, str] | None:
        """Outside Firecracker the token can be set once, then only repeated (docs/envd-api.md §6.5)."""
        if given is not None and (not isinstance(given, str) or given == "" or not _is_text(given)):
            return 400, "access token must be a non-empty UTF-8 string"
        current = self.config.access_token
        if not current:
            return None
        if given is None:
            return 401, "access token reset not authorized"
        if not token_matches(current, given):
            return 401, "access token validation failed"
        return None

    def _is_new(self, when: datetime | None) -> bool:
        """Replay guard: a request not newer than the last applied one changes nothing."""
        return when is None or self._last_init is None or when > self._last_init

    def _apply(self, fields: dict[str, Any]) -> None:
        if fields.get("envVars") is not None:
            self.config.user_envs = dict(fields["envVars"])
        if fields.get("accessToken"):
            self.config.access_token = fields["accessToken"]
        if fields.get("defaultUser"):
            self.config.default_user = fields["defaultUser"]
        if fields.get("defaultWorkdir"):
            self.config.default_workdir = str(fields["defaultWorkdir"])


def _parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 time; one without an offset is taken as UTC, so any two compare."""
    if value is None:
        return None
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _validate(fields: dict[str, Any]) -> None:
    """Everything a later Start would trip over is refused now, before anything applies."""
    envs = fields.get("envVars")
    if envs is not None:
        if not isinstance(envs, dict) or not all(isinstance(v, str) for v in envs.values()):
            raise ValueError("envVars must map strings to strings")
        for key, value in envs.items():
            if not key or "=" in key or "\0" in key or "\0" in value or not _is_text(key + value):
                raise ValueError(f"invalid environment variable {key[:100]!r}")
    workdir = fields.get("defaultWorkdir")
    if workdir and (not isinstance(workdir, str) or "\0" in workdir or not _is_text(workdir)):
        raise ValueError("defaultWorkdir must be a path")
    if fields.get("defaultUser"):
        lookup_user(str(fields["defaultUser"]))


def _is_text(value: str) -> bool:
    """JSON can carry lone surrogates, which no program's environment can."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _read_metrics() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    cached = getattr(memory, "cached", 0)
    disk = os.statvfs("/")
    used = memory.total - memory.free - getattr(memory, "buffers", 0) - cached
    return {
        "ts": int(time.time()),
        "cpu_count": psutil.cpu_count() or 1,
        "cpu_used_pct": round(psutil.cpu_percent(interval=None), 2),
        "mem_total_mib": memory.total // 2**20,
        "mem_used_mib": used // 2**20,
        "mem_total": memory.total,
        "mem_used": used,
        "mem_cache": cached,
        "disk_used": (disk.f_blocks - disk.f_bavail) * disk.f_frsize,
        "disk_total": disk.f_blocks * disk.f_frsize,
    }

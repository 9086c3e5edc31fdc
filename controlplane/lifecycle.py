"""Sandboxes from birth to kill: create and `/init`, timeouts, kill, restart reconciliation."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import datetime, timezone

import aiohttp

from controlplane.backend import DockerBackend
from controlplane.config import Settings, Template, random_id
from controlplane.ingress import Ingress
from controlplane.records import KILLING, RUNNING, Sandbox, Store

log = logging.getLogger(__name__)

START_DEADLINE = 30.0
TIMER_INTERVAL = 0.25  # timeouts are enforced within this of endAt


class StartTimeout(Exception):
    """The daemon did not answer within START_DEADLINE; the sandbox was removed."""


class Manager:
    """Every sandbox of this instance, in memory, mirrored to the store."""

    def __init__(self, settings: Settings, store: Store, backend: DockerBackend) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.sandboxes: dict[str, Sandbox] = {}
        self.ingresses: dict[str, Ingress] = {}
        self._timer: asyncio.Task[None] | None = None
        self._kills: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ start and stop

    async def start(self) -> None:
        await self.reconcile()
        self._timer = asyncio.create_task(self._enforce_timeouts())

    async def stop(self) -> None:
        """Stop watching; sandboxes keep running and are picked up at the next start."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        await asyncio.gather(*self._kills, return_exceptions=True)
        for ingress in self.ingresses.values():
            await ingress.reset()

    async def reconcile(self) -> None:
        """Make records and containers agree: no lost sandbox, no orphan container."""
        records = {sandbox.id: sandbox for sandbox in self.store.load()}
        alive = set()
        for managed in await self.backend.list_managed():
            record = records.get(managed.sandbox_id)
            if record is not None and managed.running and record.state == RUNNING:
                alive.add(managed.sandbox_id)
            else:
                log.info("removing container %s (no running record)", managed.container_id[:12])
                await self.backend.remove(managed.sandbox_id, container=managed.container_id)
        for sandbox_id, record in records.items():
            if sandbox_id in alive:
                self.sandboxes[sandbox_id] = record
                self.ingresses[sandbox_id] = Ingress(self.backend.socket_path(sandbox_id))
            else:
                self.store.delete(sandbox_id)
                await self.backend.remove(sandbox_id)
        log.info("reconciled: %d sandboxes running", len(self.sandboxes))

    # ------------------------------------------------------------ create

    async def create(
        self,
        team: str,
        template: Template,
        alias: str | None,
        timeout: int,
        metadata: dict[str, str],
        env_vars: dict[str, str],
        secure: bool,
        internet: bool | None,
    ) -> Sandbox:
        now = time.time()
        sandbox = Sandbox(
            id=random_id(20), team=team, template_id=template.id, alias=alias,
            started_at=now, end_at=now + timeout, cpu_count=template.cpu_count,
            memory_mb=template.memory_mb, disk_size_mb=template.disk_size_mb,
            metadata=metadata, env_vars=env_vars,
            access_token=secrets.token_hex(32) if secure else None,
            allow_internet=internet, default_user=template.default_user,
            default_workdir=template.default_workdir,
        )
        self.sandboxes[sandbox.id] = sandbox
        self.store.save(sandbox)
        try:
            await self.backend.create(sandbox.id, template, internet=internet is not False)
            ingress = self.ingresses[sandbox.id] = Ingress(self.backend.socket_path(sandbox.id))
            sandbox.envd_version = await _initialise(sandbox, ingress)
        except BaseException:
            await self._discard(sandbox)
            raise
        sandbox.state = RUNNING
        self.store.save(sandbox)
        return sandbox

    # ------------------------------------------------------------ queries and changes

    def find(self, team: str, sandbox_id: str) -> Sandbox | None:
        """A running sandbox of `team`; 1.x's `<id>-<clientID>` form is cut at the dash."""
        sandbox = self.sandboxes.get(sandbox_id.split("-", 1)[0])
        if sandbox is None or sandbox.team != team or sandbox.state != RUNNING:
            return None
        return sandbox

    def routable(self, sandbox_id: str) -> tuple[Sandbox, Ingress] | None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.state != RUNNING:
            return None
        return sandbox, self.ingresses[sandbox_id]

    def set_end(self, sandbox: Sandbox, end_at: float) -> None:
        sandbox.end_at = end_at
        self.store.save(sandbox)

    async def kill(self, sandbox: Sandbox) -> bool:
        """True for the one caller that killed it; racing kills get False."""
        if sandbox.state == KILLING or self.sandboxes.get(sandbox.id) is not sandbox:
            return False
        sandbox.state = KILLING
        self.store.save(sandbox)
        await self._discard(sandbox)
        return True

    async def _discard(self, sandbox: Sandbox) -> None:
        ingress = self.ingresses.pop(sandbox.id, None)
        if ingress is not None:
            await ingress.reset()  # open connections end: the SDK then sees "not found"
        self.sandboxes.pop(sandbox.id, None)
        try:
            await self.backend.remove(sandbox.id)
        finally:
            self.store.delete(sandbox.id)

    async def _enforce_timeouts(self) -> None:
        while True:
            now = time.time()
            for sandbox in list(self.sandboxes.values()):
                if sandbox.state == RUNNING and sandbox.end_at <= now:
                    log.info("sandbox %s timed out", sandbox.id)
                    task = asyncio.create_task(self.kill(sandbox))
                    self._kills.add(task)
                    task.add_done_callback(self._kills.discard)
            await asyncio.sleep(TIMER_INTERVAL)


async def _initialise(sandbox: Sandbox, ingress: Ingress) -> str:
    """Wait for the daemon's /health over the socket, then `/init`; the daemon's version."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            async with ingress.session().get("http://sandbox/health") as response:
                if response.status == 204:
                    break
        except (OSError, aiohttp.ClientError):
            await ingress.reset()
        if time.monotonic() > deadline:
            raise StartTimeout(f"sandbox {sandbox.id} did not start within {START_DEADLINE:.0f} s")
        await asyncio.sleep(0.02)
    body = {
        "envVars": sandbox.env_vars,
        "defaultUser": sandbox.default_user,
        "defaultWorkdir": sandbox.default_workdir,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    if sandbox.access_token:
        body["accessToken"] = sandbox.access_token
    async with ingress.session().post("http://sandbox/init", json=body) as response:
        if response.status != 204:
            raise RuntimeError(f"/init answered {response.status}: {await response.text()}")
        return response.headers.get("X-Envd-Version", "0.1.0")

"""Sandboxes from birth to kill: create and `/init`, timeouts, kill, restart reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import aiohttp

from controlplane.backend import DockerBackend
from controlplane.config import DEFAULT_TIMEOUT, Settings, Template, random_id
from controlplane.ingress import Ingress
from controlplane.metrics import MetricsSampler
from controlplane.records import (
    FILESYSTEM,
    FULL,
    KILLING,
    PAUSED,
    POOLED,
    RUNNING,
    STARTING,
    Sandbox,
    Store,
)

log = logging.getLogger(__name__)

START_DEADLINE = 30.0
#: How often running containers are checked against the records (`tidy`).
TIDY_INTERVAL = 10.0
TIMER_INTERVAL = 0.25  # timeouts are enforced within this of endAt


class StartTimeout(Exception):
    """The daemon did not answer within START_DEADLINE; the sandbox was removed."""


class TeamLimit(Exception):
    """The team already has `team_limit` sandboxes."""


class HostFull(Exception):
    """This instance already runs `host_limit` containers and none is warm."""


@dataclass(frozen=True)
class Claims:
    """What a create asks for; given to a warm container or a new one alike."""

    team: str
    alias: str | None = None
    timeout: int = DEFAULT_TIMEOUT
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    secure: bool = False
    internet: bool | None = None  # None: not asked (default network)
    auto_pause: bool = False
    auto_pause_memory: bool = True
    auto_resume: bool = False
    network: dict[str, object] = field(default_factory=dict)


class Manager:
    """Every sandbox of this instance, in memory, mirrored to the store."""

    def __init__(self, settings: Settings, store: Store, backend: DockerBackend) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.sandboxes: dict[str, Sandbox] = {}
        self.ingresses: dict[str, Ingress] = {}
        self.metrics = MetricsSampler(backend)
        self._timer: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()  # kills and pool fills
        self._pool: dict[str, list[Sandbox]] = {}  # template id -> ready, unclaimed
        self._filling: dict[str, int] = {}  # template id -> pool containers starting
        self._locks: dict[str, asyncio.Lock] = {}  # sandbox id -> held while it is paused or resumed
        self._changing_now: set[str] = set()  # sandboxes being paused or resumed: not routable
        self._expiring: set[str] = set()  # sandboxes whose timeout is being acted on
        self._creating: dict[str, int] = {}  # team -> creates under way (counted against its limit)
        self._transitions = 0  # bumped when a sandbox starts running, pauses or resumes (see `tidy`)

    # ------------------------------------------------------------ start and stop

    async def start(self) -> None:
        await self.reconcile()
        self._timer = asyncio.create_task(self._enforce_timeouts())
        self._sampler = asyncio.create_task(self.metrics.run(self.sandboxes, self.ingresses))
        self._janitor = asyncio.create_task(self._tidy_forever())
        for template in self.settings.templates:
            self._refill(template)

    async def stop(self) -> None:
        """Stop watching; sandboxes keep running and are picked up at the next start.

        Pool containers hold nothing yet: they go, so none lingers unowned.
        """
        for task in (self._timer, self._sampler, self._janitor):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        for ready in self._pool.values():
            for sandbox in ready:
                await self._discard(sandbox)
        self._pool.clear()
        for ingress in self.ingresses.values():
            await ingress.reset()

    async def reconcile(self) -> None:
        """Make records and containers agree: no lost sandbox, no orphan container."""
        records = {sandbox.id: sandbox for sandbox in self.store.load()}
        alive = set()
        for managed in await self.backend.list_managed():
            record = records.get(managed.sandbox_id)
            if record is not None and _stopped_on_its_own(record, managed.status):
                log.info("sandbox %s exited on its own: paused, files kept", record.id)
                record.state, record.pause_mode = PAUSED, FILESYSTEM
                self.store.save(record)
            if record is not None and (record.state, managed.status) in _AGREEING:
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
        log.info("reconciled: %d sandboxes running or paused", len(self.sandboxes))

    async def tidy(self) -> None:
        """While running, what `reconcile` does at start: a container nobody owns
        (its teardown failed, or it was made behind our back) is removed; a sandbox
        whose container stopped on its own (a crash, an OOM kill, `podman stop`)
        becomes a filesystem pause, which `connect` boots again; one whose
        container is gone is forgotten."""
        transitions = self._transitions
        managed = {m.sandbox_id: m for m in await self.backend.list_managed()}
        if self._transitions != transitions:
            return  # the listing may predate a change: look again next round
        for sandbox_id, container in managed.items():
            sandbox = self.sandboxes.get(sandbox_id)
            if sandbox is None:
                log.warning("removing container %s: no sandbox owns it", container.container_id[:12])
                await self.backend.remove(sandbox_id, container=container.container_id)
            elif self._settled(sandbox) and _stopped_on_its_own(sandbox, container.status):
                log.warning("sandbox %s: its container stopped on its own; paused, files kept", sandbox_id)
                sandbox.state, sandbox.pause_mode = PAUSED, FILESYSTEM
                self.store.save(sandbox)
                await self.ingresses[sandbox_id].reset()
        for sandbox in list(self.sandboxes.values()):
            if sandbox.id not in managed and self._settled(sandbox) and sandbox.id in self.sandboxes:
                log.warning("sandbox %s: its container is gone", sandbox.id)
                await self._discard(sandbox)

    def _settled(self, sandbox: Sandbox) -> bool:
        """Running or paused, with nothing under way that changes its container."""
        return (
            sandbox.state in (RUNNING, PAUSED)
            and sandbox.id not in self._changing_now
            and sandbox.id not in self._expiring
            and not self._locks.get(sandbox.id, asyncio.Lock()).locked()
        )

    async def _tidy_forever(self) -> None:
        while True:
            await asyncio.sleep(TIDY_INTERVAL)
            try:
                await self.tidy()
            except Exception as exc:  # the engine may be restarting: try again next round
                log.warning("tidying up: %s", exc)

    # ------------------------------------------------------------ create

    async def create(self, template: Template, claims: Claims) -> Sandbox:
        """A warm container from the pool when one is ready (default network only), else a new one.

        The limits are checked and the place reserved before anything awaits,
        so concurrent creates cannot overshoot them.
        """
        team = claims.team
        self._check_team_limit(team)
        warm = self._claim(template) if claims.internet is not False else None
        if warm is None and len(self.sandboxes) >= self.settings.host_limit:
            raise HostFull(f"this host runs its limit of {self.settings.host_limit} sandboxes; try again later")
        self._creating[team] = self._creating.get(team, 0) + 1
        try:
            if warm is not None:
                try:
                    return await self._hand_over(warm, template, claims)
                except (OSError, aiohttp.ClientError, RuntimeError) as exc:
                    log.warning("warm container %s failed its /init (%s); starting a new one", warm.id, exc)
            sandbox = self._new_record(template, STARTING)
            await self._boot(sandbox, template, internet=claims.internet is not False)
            return await self._hand_over(sandbox, template, claims)
        finally:
            self._creating[team] -= 1

    def _check_team_limit(self, team: str) -> None:
        owned = sum(1 for s in self.sandboxes.values() if s.team == team and s.state in (RUNNING, PAUSED))
        if owned + self._creating.get(team, 0) >= self.settings.team_limit:
            raise TeamLimit(f"You have reached the maximum number of concurrent sandboxes ({self.settings.team_limit})")

    async def _hand_over(self, sandbox: Sandbox, template: Template, claims: Claims) -> Sandbox:
        """Give a started container to its team: record it, then `/init` (removed if that fails)."""
        now = time.time()
        sandbox.team, sandbox.alias, sandbox.allow_internet = claims.team, claims.alias, claims.internet
        sandbox.auto_pause, sandbox.auto_pause_memory = claims.auto_pause, claims.auto_pause_memory
        sandbox.auto_resume, sandbox.timeout = claims.auto_resume, claims.timeout
        sandbox.started_at, sandbox.end_at = now, now + claims.timeout
        sandbox.metadata, sandbox.env_vars = claims.metadata, claims.env_vars
        sandbox.access_token = secrets.token_hex(32) if claims.secure else None
        network = claims.network
        sandbox.network = network
        sandbox.traffic_token = secrets.token_hex(32) if network.get("allowPublicTraffic") is False else None
        mask = network.get("maskRequestHost")
        sandbox.mask_request_host = mask if isinstance(mask, str) else None
        try:
            sandbox.envd_version = await _send_init(sandbox, self.ingresses[sandbox.id])
        except BaseException:
            await self._discard(sandbox)
            raise
        sandbox.state = RUNNING
        self._transitions += 1
        self.store.save(sandbox)
        self._refill(template)
        return sandbox

    def _new_record(self, template: Template, state: str) -> Sandbox:
        now = time.time()
        return Sandbox(
            id=random_id(20),
            team="",
            template_id=template.id,
            alias=None,
            started_at=now,
            end_at=now,
            cpu_count=template.cpu_count,
            memory_mb=template.memory_mb,
            disk_size_mb=template.disk_size_mb,
            state=state,
            default_user=template.default_user,
            default_workdir=template.default_workdir,
        )

    async def _boot(self, sandbox: Sandbox, template: Template, internet: bool) -> None:
        """Container started and daemon answering on its socket; nothing left behind on failure."""
        self.sandboxes[sandbox.id] = sandbox
        self.store.save(sandbox)
        try:
            await self.backend.create(sandbox.id, template, internet=internet)
            self.ingresses[sandbox.id] = Ingress(self.backend.socket_path(sandbox.id))
            await _wait_healthy(sandbox, self.ingresses[sandbox.id])
        except BaseException:
            await self._discard(sandbox)
            raise

    # ------------------------------------------------------------ warm pool

    def _claim(self, template: Template) -> Sandbox | None:
        ready = self._pool.get(template.id)
        return ready.pop(0) if ready else None

    def _refill(self, template: Template) -> None:
        """Start pool containers in the background until `pool_size` are ready or coming."""
        ready = len(self._pool.setdefault(template.id, []))
        coming = self._filling.get(template.id, 0)
        room = self.settings.host_limit - len(self.sandboxes) - sum(self._filling.values())
        for _ in range(min(self.settings.pool_size_of(template) - ready - coming, room)):
            self._filling[template.id] = self._filling.get(template.id, 0) + 1
            task = asyncio.create_task(self._fill(template))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _fill(self, template: Template) -> None:
        sandbox = self._new_record(template, POOLED)
        try:
            await self._boot(sandbox, template, internet=True)
            self._pool[template.id].append(sandbox)
        except Exception as exc:
            log.warning("warm pool of %s: container not started: %s", template.id, exc)
        finally:
            self._filling[template.id] -= 1

    # ------------------------------------------------------------ queries and changes

    def find(self, team: str, sandbox_id: str) -> Sandbox | None:
        """A running or paused sandbox of `team`; 1.x's `<id>-<clientID>` form is cut at the dash."""
        sandbox = self.sandboxes.get(sandbox_id.split("-", 1)[0])
        if sandbox is None or sandbox.team != team or sandbox.state not in (RUNNING, PAUSED):
            return None
        return sandbox

    def routable(self, sandbox_id: str) -> tuple[Sandbox, Ingress] | None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.state != RUNNING or sandbox_id in self._changing_now:
            return None
        return sandbox, self.ingresses[sandbox_id]

    def set_end(self, sandbox: Sandbox, end_at: float) -> None:
        sandbox.end_at = end_at
        self.store.save(sandbox)

    async def pause(self, sandbox: Sandbox, memory: bool = True) -> bool:
        """Freeze it, or with `memory` False stop it keeping only its files (False if not running).

        While the engine works, no request is routed to it and nothing else
        changes it (a resume waits); it counts as paused only once paused. Its
        connections end and it stops timing out. If the engine refuses, it
        stays running and the error is raised.
        """
        async with self._changing(sandbox):
            if sandbox.state != RUNNING or self.sandboxes.get(sandbox.id) is not sandbox:
                return False
            await self.ingresses[sandbox.id].reset()
            await (self.backend.pause if memory else self.backend.stop)(sandbox.id)
            sandbox.state, sandbox.pause_mode = PAUSED, FULL if memory else FILESYSTEM
            self.store.save(sandbox)
            return True

    async def resume(self, sandbox: Sandbox, timeout: int) -> bool:
        """Run it again, timing out `timeout` s from now; False if it was not paused (any more).

        A frozen sandbox thaws where it stopped; a filesystem-paused one boots
        from its files and gets its `/init` again (same token and env vars).
        The API and traffic (auto-resume) may ask at once, and a pause may be
        under way: one change at a time per sandbox.
        """
        async with self._changing(sandbox):
            if sandbox.state != PAUSED or self.sandboxes.get(sandbox.id) is not sandbox:
                return False
            if sandbox.pause_mode == FILESYSTEM:
                await self._cold_boot(sandbox)
            else:
                await self.backend.unpause(sandbox.id)
            sandbox.state, sandbox.pause_mode = RUNNING, ""
            sandbox.timeout = timeout
            self.set_end(sandbox, time.time() + timeout)
            return True

    @contextlib.asynccontextmanager
    async def _changing(self, sandbox: Sandbox) -> AsyncIterator[None]:
        """Hold the sandbox's one lock for a pause or resume; not routable meanwhile."""
        async with self._locks.setdefault(sandbox.id, asyncio.Lock()):
            self._changing_now.add(sandbox.id)
            try:
                yield
            finally:
                self._changing_now.discard(sandbox.id)
                self._transitions += 1

    async def _cold_boot(self, sandbox: Sandbox) -> None:
        ingress = self.ingresses[sandbox.id]
        await self.backend.start(sandbox.id)
        await ingress.reset()
        await _wait_healthy(sandbox, ingress)
        sandbox.envd_version = await _send_init(sandbox, ingress)

    async def wake(self, sandbox: Sandbox) -> bool:
        """Auto-resume on traffic: a frozen sandbox created with it runs again for its last timeout.

        A filesystem-paused one is never woken by traffic (as E2B): it waits for `connect`.
        """
        if not sandbox.auto_resume or sandbox.pause_mode == FILESYSTEM:
            return False
        if sandbox.state != PAUSED and sandbox.id not in self._changing_now:
            return False
        await self.resume(sandbox, sandbox.timeout)
        return sandbox.state == RUNNING

    async def kill(self, sandbox: Sandbox) -> bool:
        """True for the one caller that killed it; racing kills get False."""
        if sandbox.state == KILLING or self.sandboxes.get(sandbox.id) is not sandbox:
            return False
        sandbox.state = KILLING
        self.store.save(sandbox)
        await self._discard(sandbox)
        return True

    async def _discard(self, sandbox: Sandbox) -> None:
        self._locks.pop(sandbox.id, None)
        ingress = self.ingresses.pop(sandbox.id, None)
        if ingress is not None:
            await ingress.reset()  # open connections end: the SDK then sees "not found"
        self.sandboxes.pop(sandbox.id, None)
        try:
            await self.backend.remove(sandbox.id)
        finally:
            self.store.delete(sandbox.id)

    async def _expire(self, sandbox: Sandbox) -> None:
        """At `endAt`: pause when it was created with autoPause, else kill."""
        try:
            if sandbox.auto_pause:
                try:
                    await self.pause(sandbox, memory=sandbox.auto_pause_memory)
                    return  # paused, or someone else paused or killed it first
                except Exception as exc:  # a sandbox that cannot be paused must not outlive its timeout
                    log.warning("sandbox %s could not be paused at its timeout (%s); killing it", sandbox.id, exc)
            await self.kill(sandbox)
        finally:
            self._expiring.discard(sandbox.id)

    async def _enforce_timeouts(self) -> None:
        while True:
            now = time.time()
            for sandbox in list(self.sandboxes.values()):
                if sandbox.state == RUNNING and sandbox.end_at <= now and sandbox.id not in self._expiring:
                    self._expiring.add(sandbox.id)
                    log.info("sandbox %s timed out: %s", sandbox.id, "pausing" if sandbox.auto_pause else "killing")
                    task = asyncio.create_task(self._expire(sandbox))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            await asyncio.sleep(TIMER_INTERVAL)


#: (record state, container status) pairs that need no repair at start.
_AGREEING = {(RUNNING, "running"), (PAUSED, "paused"), (PAUSED, "exited")}


def _stopped_on_its_own(record: Sandbox, status: str) -> bool:
    """A running or frozen sandbox whose container exited (daemon crash, engine restart): its files remain."""
    return record.state in (RUNNING, PAUSED) and record.pause_mode != FILESYSTEM and status == "exited"


async def _wait_healthy(sandbox: Sandbox, ingress: Ingress) -> None:
    """Until the daemon answers `/health` on its socket (it listens before loading kernels)."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            async with ingress.session().get("http://sandbox/health") as response:
                if response.status == 204:
                    return
        except (OSError, aiohttp.ClientError):
            await ingress.reset()
        if time.monotonic() > deadline:
            raise StartTimeout(f"sandbox {sandbox.id} did not start within {START_DEADLINE:.0f} s")
        await asyncio.sleep(0.02)


async def _send_init(sandbox: Sandbox, ingress: Ingress) -> str:
    """Env vars, token, default user and workdir to the daemon; its version."""
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

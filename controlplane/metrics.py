"""Per-sandbox metrics: sampled every 5 s while running, the last hour kept in memory.

CPU from the engine's cumulative usage between two samples, memory from the
container's cgroup (page cache left out where the engine reports it), disk
from the daemon's own `/metrics` (statvfs of `/` as the sandbox sees it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import aiohttp

from controlplane.backend import DockerBackend
from controlplane.ingress import Ingress
from controlplane.records import RUNNING, Sandbox, rfc3339

log = logging.getLogger(__name__)

INTERVAL = 5.0
KEPT = int(3600 / INTERVAL)


class MetricsSampler:
    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
        self.samples: dict[str, deque[dict]] = {}
        self._cpu: dict[str, tuple[int, float]] = {}  # id -> (cumulative ns, wall time)

    async def run(self, sandboxes: dict[str, Sandbox], ingresses: dict[str, Ingress]) -> None:
        while True:
            for sandbox in list(sandboxes.values()):
                if sandbox.state == RUNNING and sandbox.id in ingresses:
                    try:
                        await self.sample(sandbox, ingresses[sandbox.id])
                    except Exception as exc:  # gone meanwhile, engine hiccup: next round
                        log.debug("metrics of %s: %s", sandbox.id, exc)
            for gone in set(self.samples) - set(sandboxes):
                self.forget(gone)
            await asyncio.sleep(INTERVAL)

    async def sample(self, sandbox: Sandbox, ingress: Ingress) -> None:
        stats = await self.backend.stats(sandbox.id)
        now = time.time()
        used_ns = int(stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0))
        previous = self._cpu.get(sandbox.id)
        self._cpu[sandbox.id] = (used_ns, now)
        percent = 0.0
        if previous is not None and now > previous[1]:
            percent = (used_ns - previous[0]) / ((now - previous[1]) * 1e9 * sandbox.cpu_count) * 100
        memory = stats.get("memory_stats", {})
        details = memory.get("stats", {})
        cache = int(details.get("inactive_file", details.get("total_inactive_file", 0)))
        disk = await _disk(sandbox, ingress)
        self.samples.setdefault(sandbox.id, deque(maxlen=KEPT)).append(
            {
                "timestamp": rfc3339(now).replace(".000Z", "Z"),
                "timestampUnix": int(now),
                "cpuCount": sandbox.cpu_count,
                "cpuUsedPct": round(max(percent, 0.0), 2),
                "memUsed": int(memory.get("usage", 0)) - cache,
                "memTotal": int(memory.get("limit", sandbox.memory_mb * 2**20)),
                "memCache": int(details.get("file", details.get("cache", cache))),
                "diskUsed": disk[0],
                "diskTotal": disk[1],
            }
        )

    def between(self, sandbox_id: str, start: float, end: float) -> list[dict]:
        return [s for s in self.samples.get(sandbox_id, ()) if start <= s["timestampUnix"] <= end]

    def forget(self, sandbox_id: str) -> None:
        self.samples.pop(sandbox_id, None)
        self._cpu.pop(sandbox_id, None)


async def _disk(sandbox: Sandbox, ingress: Ingress) -> tuple[int, int]:
    headers = {"X-Access-Token": sandbox.access_token} if sandbox.access_token else {}
    try:
        async with ingress.session().get("http://sandbox/metrics", headers=headers) as response:
            body = await response.json()
        return int(body.get("disk_used", 0)), int(body.get("disk_total", 0))
    except (OSError, aiohttp.ClientError, ValueError):
        return 0, 0

"""Sandbox records and their SQLite store: what survives a control-plane restart."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

#: POOLED: a warm container no team has claimed yet; never listed, never routable.
STARTING, POOLED, RUNNING, PAUSED, KILLING = "starting", "pooled", "running", "paused", "killing"
#: How a paused sandbox was paused: frozen with its memory, or stopped with only its files.
FULL, FILESYSTEM = "full", "filesystem"


@dataclass
class Sandbox:
    id: str
    team: str
    template_id: str
    alias: str | None
    started_at: float
    end_at: float
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    state: str = STARTING
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    access_token: str | None = None
    envd_version: str = ""
    allow_internet: bool | None = None
    default_user: str = "user"
    default_workdir: str = "/home/user"
    auto_pause: bool = False  # pause instead of kill at timeout
    auto_pause_memory: bool = True  # False: that pause keeps only the filesystem
    pause_mode: str = ""  # while paused: FULL (frozen) or FILESYSTEM (stopped)
    auto_resume: bool = False  # traffic resumes it when paused
    timeout: int = 300  # the last timeout asked for: what a resume by traffic grants
    traffic_token: str | None = None  # network.allowPublicTraffic false: required by the proxy
    mask_request_host: str | None = None  # network.maskRequestHost: the Host user ports see
    network: dict[str, object] = field(default_factory=dict)  # the accepted network fields, as sent

    def listed(self, client_id: str) -> dict:
        """The `ListedSandbox` shape both SDK generations parse."""
        return {
            "templateID": self.template_id,
            "alias": self.alias,
            "sandboxID": self.id,
            "clientID": client_id,
            "startedAt": rfc3339(self.started_at),
            "endAt": rfc3339(self.end_at),
            "cpuCount": self.cpu_count,
            "memoryMB": self.memory_mb,
            "diskSizeMB": self.disk_size_mb,
            "metadata": self.metadata,
            "state": "paused" if self.state == PAUSED else "running",
            "envdVersion": self.envd_version,
        }


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """One row per live sandbox; writes are small and local (WAL, sub-millisecond)."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self._db = sqlite3.connect(os.path.join(state_dir, "state.db"), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency (team TEXT, key TEXT, digest TEXT NOT NULL, "
            "answer TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (team, key))"
        )

    def save(self, sandbox: Sandbox) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sandboxes (id, record) VALUES (?, ?)",
            (sandbox.id, json.dumps(asdict(sandbox))),
        )

    def delete(self, sandbox_id: str) -> None:
        self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def load(self) -> list[Sandbox]:
        return [Sandbox(**json.loads(row[0])) for row in self._db.execute("SELECT record FROM sandboxes")]

    def idempotent_answer(self, team: str, key: str, not_before: float) -> tuple[str, dict] | None:
        """(body digest, answer) kept for this key since `not_before`; older ones are dropped."""
        self._db.execute("DELETE FROM idempotency WHERE created < ?", (not_before,))
        row = self._db.execute(
            "SELECT digest, answer FROM idempotency WHERE team = ? AND key = ?", (team, key)
        ).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def keep_idempotent_answer(self, team: str, key: str, digest: str, answer: dict, created: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency (team, key, digest, answer, created) VALUES (?, ?, ?, ?, ?)",
            (team, key, digest, json.dumps(answer), created),
        )

    def close(self) -> None:
        self._db.close()

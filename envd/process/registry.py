"""Live processes by pid and tag, and the end events of recently exited ones (docs/envd-api.md §5.3).

Retention exists so that a `Connect` arriving just after a process exited
still learns its exit code instead of `not_found`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from envd.process.errors import NoSelector, ProcessNotFound
from envd.process.managed import ManagedProcess
from envd.proto.process_pb2 import ProcessEvent, ProcessSelector

RETENTION_SECONDS = 30.0


@dataclass(frozen=True)
class Retained:
    """What is left of an exited process: enough to answer a late `Connect`."""

    pid: int
    tag: str | None
    end: ProcessEvent
    expires: float


class Registry:
    """Processes the daemon started and has not yet seen end."""

    def __init__(self, retention_seconds: float = RETENTION_SECONDS) -> None:
        self._live: dict[int, ManagedProcess] = {}
        self._retained: OrderedDict[int, Retained] = OrderedDict()
        self._retention = retention_seconds

    def live(self) -> list[ManagedProcess]:
        return list(self._live.values())

    def add(self, process: ManagedProcess) -> None:
        """A new process replaces stale retained entries with its pid or tag."""
        self._expire()
        self._retained.pop(process.pid, None)
        if process.tag is not None:
            for pid in [p for p, r in self._retained.items() if r.tag == process.tag]:
                del self._retained[pid]
        self._live[process.pid] = process

    def retire(self, process: ManagedProcess, end: ProcessEvent) -> None:
        """Move an ended process from live to retained."""
        if self._live.get(process.pid) is process:
            del self._live[process.pid]
        self._expire()
        expires = time.monotonic() + self._retention
        self._retained[process.pid] = Retained(process.pid, process.tag, end, expires)
        self._retained.move_to_end(process.pid)

    def find(self, selector: ProcessSelector) -> ManagedProcess:
        """The live process a selector names; `not_found` otherwise."""
        kind = _selector_kind(selector)
        if kind == "pid":
            process = self._live.get(selector.pid)
            if process is None:
                raise ProcessNotFound(f"process with pid {selector.pid} not found")
            return process
        for process in self._live.values():
            if process.tag == selector.tag:
                return process
        raise ProcessNotFound(f"process with tag {selector.tag} not found")

    def find_retained(self, selector: ProcessSelector) -> Retained | None:
        """The end of a recently exited process, by pid or first tag match."""
        self._expire()
        if _selector_kind(selector) == "pid":
            return self._retained.get(selector.pid)
        for retained in self._retained.values():
            if retained.tag == selector.tag:
                return retained
        return None

    def _expire(self) -> None:
        now = time.monotonic()
        while self._retained:
            pid, oldest = next(iter(self._retained.items()))
            if oldest.expires > now:
                return
            del self._retained[pid]


def _selector_kind(selector: ProcessSelector) -> str:
    kind = selector.WhichOneof("selector")
    if kind is None:
        raise NoSelector("invalid input type <nil>")
    return kind

"""Percentiles, rows and the ratio table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Latency:
    """Latency samples in milliseconds."""

    samples: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    def __str__(self) -> str:
        return f"p50 {self.p50:.2f} ms, p90 {self.p90:.2f} ms, p99 {self.p99:.2f} ms"


def time_calls(call: Callable[[], object], count: int, warmup: int = 5) -> Latency:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return Latency(samples)


@dataclass
class Target:
    """One line of the report: what we measured, the baseline, and the goal."""

    name: str
    ours: str
    baseline: str
    goal: str
    met: bool | None  # None: informational, no target

    def cells(self) -> list[str]:
        verdict = {True: "met", False: "MISSED", None: "-"}[self.met]
        return [self.name, self.ours, self.baseline, self.goal, verdict]


def render(rows: list[Target]) -> str:
    header = ["case", "envd", "baseline", "target", "result"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)

"""Idle sandbox memory and JavaScript next to Python (issue #18, "Lean sandboxes").

`python -m bench.footprint [--quick]` runs these cases alone; `python -m bench`
includes them. An idle sandbox is the daemon with its default contexts and
the spare Python kernel, measured once the kernel count has settled:

* RSS counts pages shared between processes (the interpreter, libraries) once
  per process, so summed RSS overstates a sandbox; PSS splits each shared page
  among its users, so summed PSS is what the sandbox adds to the machine.
* "without the spare": the spare Python kernel is the daemon's youngest
  Python kernel (it is started after the default contexts).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import httpx
import psutil
from e2b_code_interpreter import Sandbox

from bench.stats import Latency, Target, time_calls
from tests.harness import DaemonProcess, start_daemon

MB = 1_000_000
ROUNDS = 5
SANDBOX_TARGET_MB = 200  # issue #18: daemon + default contexts, without the spare
JS_DEFAULT_TARGET_MB = 60  # issue #18: the default JS context costs nothing until used, or <= 60 MB
HEADERS = {"E2b-Sandbox-Port": "49999"}


@dataclass
class Tree:
    """A process and its descendants: what it is, its summed RSS and PSS."""

    kind: str
    started: float
    rss: float
    pss: float


def _pss(pid: int) -> float:
    """Proportional set size in bytes (smaps_rollup), 0 for a process gone meanwhile."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _kind(process: psutil.Process) -> str:
    cmdline = " ".join(process.cmdline())
    if "ipykernel" in cmdline:
        return "python kernel"
    if "bash_kernel" in cmdline:
        return "bash kernel"
    if "kernel.js" in cmdline:
        return "js kernel (node)"
    if "deno" in cmdline:
        return "js kernel (deno)"
    return process.name()


def _tree(process: psutil.Process, kind: str | None = None) -> Tree:
    members = [process]
    try:
        members += process.children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    rss = pss = 0.0
    for member in members:
        try:
            rss += member.memory_info().rss
            pss += _pss(member.pid)
        except psutil.NoSuchProcess:
            pass
    return Tree(kind or _kind(process), process.create_time(), rss / MB, pss / MB)


def _kernel_count(daemon: DaemonProcess) -> int:
    return len(psutil.Process(daemon.pid).children(recursive=False))


def settle(daemon: DaemonProcess, quiet: float = 4.0, timeout: float = 120.0) -> None:
    """Wait for the default contexts, then until the kernel count stays put for `quiet` s."""
    httpx.get(f"{daemon.url}/contexts", headers=HEADERS, timeout=timeout).raise_for_status()
    deadline = time.monotonic() + timeout
    last, since = _kernel_count(daemon), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _kernel_count(daemon)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    time.sleep(1)  # kernels finish their start-up imports


def snapshot(daemon: DaemonProcess) -> tuple[Tree, list[Tree]]:
    """The daemon alone, and each of its children with their descendants (kernels)."""
    process = psutil.Process(daemon.pid)
    own = Tree("daemon", process.create_time(), process.memory_info().rss / MB, _pss(process.pid) / MB)
    kernels = [_tree(child) for child in process.children(recursive=False)]
    return own, kernels


def _totals(own: Tree, kernels: list[Tree]) -> tuple[float, float]:
    return own.rss + sum(k.rss for k in kernels), own.pss + sum(k.pss for k in kernels)


def _without_spare(kernels: list[Tree]) -> list[Tree]:
    python = [k for k in kernels if k.kind == "python kernel"]
    if len(python) < 2:
        return kernels
    spare = max(python, key=lambda k: k.started)
    return [k for k in kernels if k is not spare]


def _describe(kernels: list[Tree]) -> str:
    return ", ".join(f"{k.kind} {k.rss:.0f}/{k.pss:.0f}" for k in sorted(kernels, key=lambda k: k.started))


def idle_sandbox(daemon: DaemonProcess) -> list[Target]:
    settle(daemon)
    own, kernels = snapshot(daemon)
    rss, pss = _totals(own, kernels)
    lean = _without_spare(kernels)
    lean_rss, lean_pss = _totals(own, lean)
    contexts = httpx.get(f"{daemon.url}/contexts", headers=HEADERS, timeout=30).json()
    languages = ", ".join(c["language"] for c in contexts)
    return [
        Target(
            "idle sandbox RSS/PSS, without the spare",
            f"RSS {lean_rss:.0f} MB, PSS {lean_pss:.0f} MB",
            f"contexts: {languages}",
            f"RSS <= {SANDBOX_TARGET_MB} MB",
            lean_rss <= SANDBOX_TARGET_MB,
        ),
        Target("  with the spare python kernel", f"RSS {rss:.0f} MB, PSS {pss:.0f} MB", "-", "-", None),
        Target(
            "  by process (RSS/PSS MB)", f"daemon {own.rss:.0f}/{own.pss:.0f}, {_describe(kernels)}", "-", "-", None
        ),
    ]


def javascript_default(daemon: DaemonProcess, sbx: Sandbox) -> list[Target]:
    """What the default JS context costs idle, and once used; its first run (a lazy start)."""
    idle_rss = sum(k.rss for k in snapshot(daemon)[1] if k.kind.startswith("js kernel"))
    started = time.perf_counter()
    first = sbx.run_code("1 + 1", language="js")
    first_ms = (time.perf_counter() - started) * 1000
    if first.error is not None or first.text != "2":
        raise RuntimeError(f"JavaScript run failed: {first.error or first.text!r}")
    settle(daemon, quiet=2.0)
    kernels = snapshot(daemon)[1]
    js = [k for k in kernels if k.kind.startswith("js kernel")]
    used_rss = sum(k.rss for k in js)
    used_pss = sum(k.pss for k in js)
    return [
        Target(
            "default JS context idle, before first use",
            f"RSS {idle_rss:.0f} MB",
            "-",
            f"0 or <= {JS_DEFAULT_TARGET_MB} MB",
            idle_rss <= JS_DEFAULT_TARGET_MB,
        ),
        Target("  after first use (the JS kernel)", f"RSS {used_rss:.0f} MB, PSS {used_pss:.0f} MB", "-", "-", None),
        Target("  first run_code(language='js') (starts it)", f"{first_ms:.0f} ms", "-", "-", None),
    ]


def rtt_js_vs_python(sbx: Sandbox, count: int) -> list[Target]:
    """`x+=1; x` in the default JS and Python contexts, alternating rounds."""
    sbx.run_code("x = 0")
    sbx.run_code("var x = 0", language="js")
    python: list[float] = []
    javascript: list[float] = []
    for _ in range(ROUNDS):
        python += time_calls(lambda: sbx.run_code("x+=1; x"), count // ROUNDS).samples
        javascript += time_calls(lambda: sbx.run_code("x+=1; x", language="js"), count // ROUNDS).samples
    js, py = Latency(javascript), Latency(python)
    return [
        Target(
            "run_code('x+=1; x') RTT, JavaScript vs Python", f"{js}; {js.p50 / py.p50:.2f}x", f"python: {py}", "-", None
        )
    ]


def cases(count: int) -> list[Target]:
    """Each case on a fresh daemon: idle first, then the JS default's first use and RTT."""
    daemon = start_daemon("--log-level", "WARNING")
    try:
        rows = idle_sandbox(daemon)
        sbx = Sandbox.create(**daemon.sdk_opts())
        languages = {c.language for c in sbx.list_code_contexts()}
        if "javascript" not in languages:
            return rows + [Target("JavaScript cases", "skipped: no JavaScript kernel installed", "-", "-", None)]
        rows += javascript_default(daemon, sbx)
        rows += rtt_js_vs_python(sbx, count)
    finally:
        daemon.stop()
    return rows


def main() -> None:
    from bench.stats import render

    parser = argparse.ArgumentParser(prog="python -m bench.footprint")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    print(render(cases(50 if args.quick else 300)))


if __name__ == "__main__":
    main()

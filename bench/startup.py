"""`python -m bench.startup [--image REF ...] [--build]`: how fast a sandbox is ready.

- bare daemon: exec of `python -m envd` until `/health` answers on both APIs,
  against the floor of any aiohttp daemon (exec, import aiohttp, listen, answer);
- container: `run` of the image until both `/health` answer on 127.0.0.1,
  against `run IMAGE true` (what the engine alone costs to start a container);
- with --build: image build time (no cache) and size, per variant.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench.stats import Latency, Target, render
from tests.harness import ROOT, container_engine, free_port, healthy

ENVD, CODE = "49983", "49999"  # the E2b-Sandbox-Port of each API

STARTS = 10
#: The floor: an aiohttp app that answers /health, started the way envd is.
MINIMAL_SERVER = (
    "import sys; from aiohttp import web; app = web.Application(); "
    "app.router.add_get('/health', lambda r: web.Response(status=204)); "
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)


def _time_until_healthy(start: list[str], targets: list[tuple[str, str]], stop: list[str] | None = None) -> float:
    """Milliseconds from starting `start` until every (base url, API port) answers /health."""
    started = time.perf_counter()
    proc = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    pending = list(targets)
    while pending:
        pending = [(url, api) for url, api in pending if not healthy(url, api)]
        if proc.poll() not in (None, 0):
            raise RuntimeError(f"{start} exited with {proc.returncode}")
        time.sleep(0.002)
    elapsed = (time.perf_counter() - started) * 1000
    if stop:
        subprocess.run(stop, capture_output=True, check=False)
    proc.terminate()
    proc.wait()
    return elapsed


def bare_daemon() -> Target:
    ours, floor = [], []
    for _ in range(STARTS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "envd", "--host", "127.0.0.1", "--port", str(port), "--code-port", str(port)]
        ours.append(_time_until_healthy(argv, [(url, ENVD), (url, CODE)]))
        port = free_port()
        floor.append(
            _time_until_healthy([sys.executable, "-c", MINIMAL_SERVER, str(port)], [(f"http://127.0.0.1:{port}", ENVD)])
        )
    mine, base = Latency(ours), Latency(floor)
    return Target(
        "bare daemon exec -> /health, both APIs",
        f"p50 {mine.p50:.0f} ms, p90 {mine.p90:.0f} ms",
        f"aiohttp floor p50 {base.p50:.0f} ms",
        "p50 <= 300 ms",
        mine.p50 <= 300,
    )


def container_start(engine: str, image: str) -> list[Target]:
    ours, floor = [], []
    network = ["--network", "slirp4netns"] if engine == "podman" else []
    for i in range(STARTS):
        envd_port, code_port = free_port(), free_port()
        name = f"envd-bench-{os.getpid()}-{i}"
        run = [
            engine,
            "run",
            "--rm",
            "--name",
            name,
            *network,
            "-p",
            f"127.0.0.1:{envd_port}:49983",
            "-p",
            f"127.0.0.1:{code_port}:49999",
            image,
        ]
        targets = [(f"http://127.0.0.1:{envd_port}", ENVD), (f"http://127.0.0.1:{code_port}", CODE)]
        ours.append(_time_until_healthy(run, targets, stop=[engine, "stop", "--time", "5", name]))
        started = time.perf_counter()
        subprocess.run(
            [engine, "run", "--rm", *network, "--entrypoint", "true", image], capture_output=True, check=True
        )
        floor.append((time.perf_counter() - started) * 1000)
    mine, base = Latency(ours), Latency(floor)
    return [
        Target(
            f"{engine} run {image} -> both /health",
            f"p50 {mine.p50:.0f} ms, p90 {mine.p90:.0f} ms",
            f"run .. true: p50 {base.p50:.0f} ms",
            "p50 <= 500 ms",
            mine.p50 <= 500,
        )
    ]


def build(engine: str, variant: str) -> Target:
    tag = f"envd-bench:{variant}"
    started = time.perf_counter()
    subprocess.run(
        [
            os.path.join(ROOT, "packaging", "build-image.sh"),
            "--engine",
            engine,
            "--variant",
            variant,
            "--tag",
            tag,
            "--no-cache",
        ],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    return Target(f"image build ({variant}), no cache", f"{seconds:.0f} s, {image_size(engine, tag)}", "-", "-", None)


def image_size(engine: str, image: str) -> str:
    size = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True, check=True
    ).stdout
    return f"{int(size) / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup")
    parser.add_argument("--image", action="append", default=[], help="image to start (repeatable)")
    parser.add_argument("--build", action="store_true", help="also time no-cache builds of both variants")
    args = parser.parse_args()
    rows = [bare_daemon()]
    engine = container_engine()
    if engine and args.build:
        rows += [build(engine, "full"), build(engine, "slim")]
    for image in args.image:
        assert engine, "no container engine"
        rows += container_start(engine, image)
        rows.append(Target(f"image size {image}", image_size(engine, image), "-", "-", None))
    print(render(rows))


if __name__ == "__main__":
    main()

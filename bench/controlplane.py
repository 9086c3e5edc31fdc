"""`python -m bench.controlplane --image REF`: the control plane as the SDK feels it.

- `Sandbox.create()` (no warm pool) and time to interactive (create -> first
  run_code result);
- proxy overhead: run_code('x+=1; x') and a 1 GB download through the proxy,
  against the same daemon reached directly over TCP from inside its network
  namespace (the SDK's debug-mode path) and over its Unix socket (same raw client);
- density: memory of one idle sandbox and how many fit in 16 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import docker
from e2b_code_interpreter import Sandbox

from bench.stats import Latency, Target, render
from tests.controlplane.harness import (
    control_plane_process,
    remove_containers,
    start_podman_service,
)

KEY = "bench-key"


def create_and_tti(count: int, warm: bool) -> list[Target]:
    """Sequential creates; from the pool, each after the pool has refilled and settled."""
    creates, interactive = [], []
    for _ in range(count):
        if warm:
            time.sleep(4)  # the replacement container and its kernels are up again
        started = time.perf_counter()
        sandbox = Sandbox.create(timeout=120)
        created = time.perf_counter()
        sandbox.run_code("1")
        creates.append((created - started) * 1000)
        interactive.append((time.perf_counter() - started) * 1000)
        sandbox.kill()
    create, tti = Latency(creates), Latency(interactive)
    kind = "warm pool" if warm else "cold, no pool"
    goal_create, goal_tti = (50, 100) if warm else (1000, None)
    return [
        Target(f"Sandbox.create(), {kind}", str(create), "-", f"p50 <= {goal_create} ms", create.p50 <= goal_create),
        Target(
            f"create -> first run_code result, {kind}",
            str(tti),
            "-",
            f"p50 <= {goal_tti} ms" if goal_tti else "-",
            tti.p50 <= goal_tti if goal_tti else None,
        ),
    ]


async def execute_rtts(session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int) -> list[float]:
    samples = []
    body = json.dumps({"code": "x+=1; x"})
    for _ in range(count):
        started = time.perf_counter()
        async with session.post(f"{url}/execute", data=body, headers=headers) as response:
            await response.read()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def download_rate(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    """MB/s of one download of /tmp/big.bin, read as the SDK reads a stream."""
    started = time.perf_counter()
    size = 0
    async with session.get(
        f"{url}/files", params={"path": "/tmp/big.bin", "username": "user"}, headers=headers
    ) as response:
        assert response.status == 200, response.status
        async for chunk in response.content.iter_chunked(1 << 20):
            size += len(chunk)
    return size / (time.perf_counter() - started) / 1e6


def _in_sandbox_netns(pid: int, *args: str) -> dict:
    """The baseline client (bench/netns_client.py) on the sandbox's own loopback."""
    command = ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-m", "bench.netns_client", *args]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


async def proxy_overhead(sandbox: Sandbox, proxy_url: str, socket_path: str, pid: int, rounds: int) -> list[Target]:
    """Through the proxy (TCP), against the same daemon over TCP in its own network
    namespace (the SDK's debug-mode path: the targets' baseline) and over its Unix
    socket (the proxy's upstream; informational), alternating rounds."""
    token = sandbox._envd_access_token or ""  # noqa: SLF001 - what the SDK sends as X-Access-Token
    routing = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49999", "X-Access-Token": token}
    envd = {**routing, "E2b-Sandbox-Port": "49983"}
    sandbox.run_code("x = 0")
    sandbox.commands.run("head -c 1000000000 /dev/urandom > /tmp/big.bin", timeout=120)
    rtts: dict[str, list[float]] = {"proxy": [], "tcp": [], "socket": []}
    rates: dict[str, list[float]] = {"proxy": [], "tcp": [], "socket": []}
    async with (
        aiohttp.ClientSession() as through,
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path)) as straight,
    ):
        for _ in range(5):  # alternate, so machine drift hits all alike
            rtts["proxy"] += await execute_rtts(through, proxy_url, routing, rounds)
            rtts["tcp"] += _in_sandbox_netns(pid, "--token", token, "--rtt", str(rounds))["samples"]
            rtts["socket"] += await execute_rtts(straight, "http://sandbox", routing, rounds)
        for _ in range(3):
            rates["proxy"].append(await download_rate(through, proxy_url, envd))
            rates["tcp"].append(_in_sandbox_netns(pid, "--token", token, "--download")["rate"])
            rates["socket"].append(await download_rate(straight, "http://sandbox", envd))
    proxy, tcp, unix = (Latency(rtts[key]) for key in ("proxy", "tcp", "socket"))
    ratio = proxy.p50 / tcp.p50
    rate, tcp_rate, socket_rate = (max(rates[key]) for key in ("proxy", "tcp", "socket"))
    return [
        Target(
            "run_code('x+=1; x') RTT through the proxy",
            f"{proxy}; {ratio:.2f}x",
            f"direct TCP: {tcp}",
            "p50 <= 1.1x direct",
            ratio <= 1.1,
        ),
        Target("  same, daemon's Unix socket (no TCP)", f"{proxy.p50 / unix.p50:.2f}x", f"socket: {unix}", "-", None),
        Target(
            "1 GB download through the proxy",
            f"{rate:,.0f} MB/s ({rate / tcp_rate:.2f}x)",
            f"direct TCP: {tcp_rate:,.0f} MB/s",
            ">= 0.8x direct",
            rate >= 0.8 * tcp_rate,
        ),
        Target(
            "  same, daemon's Unix socket (no TCP)",
            f"{rate / socket_rate:.2f}x",
            f"socket: {socket_rate:,.0f} MB/s",
            "-",
            None,
        ),
    ]


def _container_pid(engine_url: str, sandbox_id: str) -> int:
    client = docker.DockerClient(base_url=engine_url, version="auto")
    try:
        return int(client.containers.get(f"e2b-{sandbox_id}").attrs["State"]["Pid"])
    finally:
        client.close()


def density(engine_url: str, sandbox_id: str) -> Target:
    client = docker.DockerClient(base_url=engine_url, version="auto")
    try:
        time.sleep(10)  # idle: kernels started, spare settled
        stats = client.containers.get(f"e2b-{sandbox_id}").stats(stream=False)
    finally:
        client.close()
    memory = stats["memory_stats"]
    used = memory["usage"] - memory.get("stats", {}).get("inactive_file", 0)
    mb = used / 2**20
    return Target(
        "idle sandbox memory (container, daemon, default kernels)",
        f"{mb:.0f} MB, {int(16 * 1024 / mb)} per 16 GB",
        "-",
        "-",
        None,
    )


def _point_sdk_at(plane) -> None:
    os.environ.pop("E2B_DEBUG", None)
    os.environ.update(E2B_API_URL=plane.api_url, E2B_SANDBOX_URL=plane.sandbox_url, E2B_API_KEY=KEY)


def _with_plane(plane, engine_url: str, measure) -> list[Target]:
    plane.start()
    _point_sdk_at(plane)
    try:
        return measure()
    finally:
        plane.stop()
        remove_containers(engine_url, plane.instance)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.controlplane")
    parser.add_argument("--image", required=True, help="the sandbox image (packaging/build-image.sh)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cp-"))
    service = None
    engine_url = os.environ.get("DOCKER_HOST", "")
    if not engine_url:
        service, engine_url = start_podman_service(work)
    count = 5 if args.quick else 10
    cold = control_plane_process(engine_url, args.image, work / "cold", {KEY: "bench"}, pool_size=0)
    rows = _with_plane(cold, engine_url, lambda: create_and_tti(count, warm=False))
    plane = control_plane_process(engine_url, args.image, work / "warm", {KEY: "bench"}, pool_size=1)
    plane.start()
    _point_sdk_at(plane)
    try:
        rows += create_and_tti(count, warm=True)
        sandbox = Sandbox.create(timeout=600)
        socket_path = str(work / "warm" / "data" / "ingress" / sandbox.sandbox_id / "daemon.sock")
        pid = _container_pid(engine_url, sandbox.sandbox_id)
        rows += asyncio.run(proxy_overhead(sandbox, plane.sandbox_url, socket_path, pid, 20 if args.quick else 60))
        sandbox.kill()
        idle = Sandbox.create(timeout=600)
        rows.append(density(engine_url, idle.sandbox_id))
        idle.kill()
    finally:
        plane.stop()
        remove_containers(engine_url, plane.instance)
        if service is not None:
            service.terminate()
            service.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print(render(rows))


if __name__ == "__main__":
    main()

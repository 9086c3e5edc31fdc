"""Baselines the daemon cannot beat: raw kernels, raw spawns, raw loopback HTTP."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import time
from typing import TypedDict

from aiohttp import ClientSession, web
from jupyter_client.manager import AsyncKernelManager

from bench.stats import Latency

ENVD_KERNEL_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "kernel_bridge",
    "kernel_side",
    "ipython_kernel_config.py",
)


class RawKernel:
    """A python3 kernel driven with jupyter_client, execute-to-idle.

    `envd_config=True` launches it with the configuration the daemon gives its
    own kernels (formatters, in-memory history), which isolates the daemon's
    overhead from what that configuration saves or costs in the kernel.
    """

    def __init__(self, envd_config: bool = False) -> None:
        self.arguments = [f"--config={ENVD_KERNEL_CONFIG}"] if envd_config else []
        self.manager: AsyncKernelManager | None = None

    async def start(self) -> None:
        self.manager = AsyncKernelManager(kernel_name="python3")
        await self.manager.start_kernel(stderr=subprocess.DEVNULL, extra_arguments=self.arguments)
        self.client = self.manager.client()
        self.client.start_channels()
        await self.client.wait_for_ready(timeout=60)

    async def execute(self, code: str) -> int:
        """Run to idle; returns how many stream messages arrived."""
        msg_id = self.client.execute(code, store_history=True)
        streams = 0
        while True:
            msg = await self.client.get_iopub_msg()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                streams += 1
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return streams

    async def stop(self) -> None:
        """Safe on a kernel that never started or failed to."""
        if self.manager is None:
            return
        if getattr(self, "client", None) is not None:
            self.client.stop_channels()
        if self.manager.has_kernel:
            await self.manager.shutdown_kernel(now=True)


async def start_all(kernels: list[RawKernel], at_once: int = 4) -> None:
    """Start kernels a few at a time: 16 launches at once on 2 cores can exceed
    jupyter_client's 60 s readiness wait."""
    gate = asyncio.Semaphore(at_once)

    async def start(kernel: RawKernel) -> None:
        async with gate:
            await kernel.start()

    await asyncio.gather(*(start(k) for k in kernels))


async def stop_all(kernels: list[RawKernel]) -> None:
    await asyncio.gather(*(k.stop() for k in kernels), return_exceptions=True)


async def kernel_rtt(kernel: RawKernel, count: int) -> Latency:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await kernel.execute("x+=1; x")
        samples.append((time.perf_counter() - started) * 1000)
    return Latency(samples)


async def kernel_print_lines(kernel: RawKernel, lines: int) -> float:
    """Seconds for a raw kernel to print `lines` lines and go idle."""
    started = time.perf_counter()
    await kernel.execute(f"for i in range({lines}): print(i)")
    return time.perf_counter() - started


async def kernels_concurrent(kernels: list[RawKernel], runs: int) -> float:
    """Aggregate executions per second of raw kernels driven from one loop."""

    async def drive(kernel: RawKernel) -> None:
        for _ in range(runs):
            await kernel.execute("x+=1; x")

    started = time.perf_counter()
    await asyncio.gather(*(drive(k) for k in kernels))
    return len(kernels) * runs / (time.perf_counter() - started)


class _Credentials(TypedDict, total=False):
    """Who the spawned shell runs as (root only: the daemon drops to the user too)."""

    user: int
    group: int
    extra_groups: list[int]


async def spawn_latency(command: str, count: int, user: str = "user") -> Latency:
    """What starting the same shell command costs with asyncio directly.

    Same argv (`bash -l -c`), user and clean environment as the daemon uses,
    so both pay for the same login profile.
    """
    account = pwd.getpwnam(user)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": account.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "E2B_SANDBOX": "true",
    }
    credentials: _Credentials = (
        {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": os.getgrouplist(user, account.pw_gid)}
        if os.geteuid() == 0
        else {}
    )
    samples = []
    for _ in range(count + 3):
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "/bin/bash",
            "-l",
            "-c",
            command,
            env=env,
            cwd=account.pw_dir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            **credentials,
        )
        await proc.communicate()
        samples.append((time.perf_counter() - started) * 1000)
    return Latency(samples[3:])


async def loopback_http(size: int, path: str) -> tuple[float, float]:
    """MB/s of a plain aiohttp upload to disk and download from disk over loopback."""

    async def upload(request: web.Request) -> web.Response:
        with open(path, "wb") as out:
            async for chunk in request.content.iter_chunked(1 << 20):
                out.write(chunk)
        return web.Response(text="ok")

    async def download(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    app = web.Application(client_max_size=0)
    app.add_routes([web.post("/up", upload), web.get("/down", download)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]  # the one site's (host, port)
    chunk = os.urandom(1 << 20)

    async def body():
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            sent += len(piece)
            yield piece

    try:
        async with ClientSession() as session:
            started = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/up", data=body()) as r:
                await r.read()
            up = size / (time.perf_counter() - started) / 1e6
            started = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/down") as r:
                async for _ in r.content.iter_chunked(1 << 20):
                    pass
            down = size / (time.perf_counter() - started) / 1e6
        return up, down
    finally:
        await runner.cleanup()


def disk_copy(path: str, size: int) -> float:
    """MB/s of a raw file copy on the same disk."""
    target = path + ".copy"
    started = time.perf_counter()
    shutil.copyfile(path, target)
    elapsed = time.perf_counter() - started
    os.unlink(target)
    return size / elapsed / 1e6

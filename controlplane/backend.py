"""Containers through the Docker Engine API (docker-py): Docker or Podman's compatible service.

docker-py is synchronous: every call runs in a worker thread, never on the loop.
One container per sandbox, named `e2b-<id>`, labelled with this instance, its
only mount the sandbox's ingress directory, no published port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from controlplane.config import Template

LABEL_MANAGER = "e2b.local/managed-by"
LABEL_SANDBOX = "e2b.local/sandbox-id"
LABEL_TEMPLATE = "e2b.local/template"
INGRESS_IN_SANDBOX = "/run/e2b-ingress"
SOCKET_NAME = "daemon.sock"

log = logging.getLogger(__name__)


class EngineError(Exception):
    """The engine refused or failed; the message says what to fix."""


@dataclass
class Managed:
    """A container carrying this instance's label, whatever its name."""

    container_id: str
    sandbox_id: str
    status: str  # the engine's: running, paused, exited, ...


def find_engine_url(configured: str) -> str:
    """The configured URL, else DOCKER_HOST, else Docker's or Podman's usual socket."""
    if configured:
        return configured
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    for path in ("/var/run/docker.sock", "/run/podman/podman.sock", f"/run/user/{os.getuid()}/podman/podman.sock"):
        if os.path.exists(path):
            return f"unix://{path}"
    raise EngineError(
        "no container engine found: start Docker, or `podman system service --time=0 "
        "unix:///run/podman/podman.sock`, or pass --engine-url"
    )


class DockerBackend:
    def __init__(self, engine_url: str, state_dir: str, instance_id: str) -> None:
        self.instance_id = instance_id
        self.ingress_root = os.path.join(state_dir, "ingress")
        os.makedirs(self.ingress_root, mode=0o700, exist_ok=True)
        try:
            # "auto" asks the engine for its API version (Podman 4 serves 1.41).
            self.client = docker.DockerClient(base_url=engine_url, version="auto", timeout=60)
        except DockerException as exc:
            raise EngineError(f"cannot reach the container engine at {engine_url}: {exc}") from None
        self.is_podman = "podman" in str(self.client.version().get("Components", "")).lower()

    def socket_path(self, sandbox_id: str) -> str:
        return os.path.join(self.ingress_root, sandbox_id, SOCKET_NAME)

    async def image_present(self, image: str) -> bool:
        def check() -> bool:
            try:
                self.client.images.get(image)
                return True
            except ImageNotFound:
                return False

        return await asyncio.to_thread(check)

    async def create(self, sandbox_id: str, template: Template, internet: bool) -> None:
        """Create and start the container; raises EngineError, leaving nothing behind."""
        directory = os.path.join(self.ingress_root, sandbox_id)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            await asyncio.to_thread(self._create, sandbox_id, template, internet, directory)
        except DockerException as exc:
            await self.remove(sandbox_id)
            raise EngineError(f"container engine: {exc}") from None

    def _create(self, sandbox_id: str, template: Template, internet: bool, directory: str) -> None:
        network = "none"
        if internet:
            network = "slirp4netns" if self.is_podman else "bridge"
        container = self.client.containers.create(
            template.image,
            name=f"e2b-{sandbox_id}",
            hostname=sandbox_id,
            labels={LABEL_MANAGER: self.instance_id, LABEL_SANDBOX: sandbox_id, LABEL_TEMPLATE: template.id},
            environment={
                "ENVD_UNIX_SOCKET": f"{INGRESS_IN_SANDBOX}/{SOCKET_NAME}",
                "ENVD_HOST": "127.0.0.1",
                "E2B_SANDBOX_ID": sandbox_id,
                "E2B_TEMPLATE_ID": template.id,
            },
            volumes={directory: {"bind": INGRESS_IN_SANDBOX, "mode": "rw"}},
            network_mode=network,
            nano_cpus=template.cpu_count * 10**9,
            mem_limit=f"{template.memory_mb}m",
            memswap_limit=f"{template.memory_mb}m",
            pids_limit=template.pids_limit,
            healthcheck={"test": ["NONE"]},
            oom_score_adj=500,
        )
        container.start()

    async def stats(self, sandbox_id: str) -> dict:
        """One sample of the engine's stats (cpu_stats, memory_stats) for the container."""
        return await asyncio.to_thread(lambda: self.client.containers.get(f"e2b-{sandbox_id}").stats(stream=False))

    async def pause(self, sandbox_id: str) -> None:
        """Freeze every process (cgroup freezer); memory stays resident."""
        await _engine(lambda: self.client.containers.get(f"e2b-{sandbox_id}").pause())

    async def unpause(self, sandbox_id: str) -> None:
        await _engine(lambda: self.client.containers.get(f"e2b-{sandbox_id}").unpause())

    async def stop(self, sandbox_id: str) -> None:
        """Stop every process (SIGTERM, SIGKILL after 5 s); the writable layer stays.

        Podman 4.3 sometimes answers a stop under load with "container state
        improper" while the container is still going down: then kill it and
        wait for it to exit, and only fail if it does not.
        """

        def stop() -> None:
            container = self.client.containers.get(f"e2b-{sandbox_id}")
            try:
                container.stop(timeout=5)
            except APIError as exc:
                log.warning("stopping %s: %s; killing it", sandbox_id, exc)
                container.reload()
                if container.status not in ("exited", "stopped"):
                    try:
                        container.kill()
                    except APIError:
                        pass  # exited meanwhile
                    container.wait(timeout=30)

        await _engine(stop)

    async def start(self, sandbox_id: str) -> None:
        """Boot a stopped container again, from its files."""
        await _engine(lambda: self.client.containers.get(f"e2b-{sandbox_id}").start())

    async def remove(self, sandbox_id: str, container: str = "") -> None:
        """Force-remove the container (by name, or the given id) and the ingress directory."""

        def remove() -> None:
            try:
                self.client.containers.get(container or f"e2b-{sandbox_id}").remove(force=True, v=True)
            except NotFound:
                pass

        await asyncio.to_thread(remove)
        if sandbox_id and "/" not in sandbox_id and sandbox_id not in (".", ".."):
            shutil.rmtree(os.path.join(self.ingress_root, sandbox_id), ignore_errors=True)

    async def list_managed(self) -> list[Managed]:
        def listing() -> list[Managed]:
            containers = self.client.containers.list(all=True, filters={"label": f"{LABEL_MANAGER}={self.instance_id}"})
            return [Managed(c.id, c.labels.get(LABEL_SANDBOX, ""), c.status) for c in containers]

        return await asyncio.to_thread(listing)

    def close(self) -> None:
        self.client.close()


async def _engine(call: Callable[[], object]) -> None:
    """Run an engine call in a thread; its failures become EngineError with the engine's words."""
    try:
        await asyncio.to_thread(call)
    except DockerException as exc:
        raise EngineError(f"container engine: {exc}") from None

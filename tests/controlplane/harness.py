"""Start the control plane (and, without DOCKER_HOST, a Podman API service) as tests and bench need."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.harness import DAEMON_PYTHON, ROOT, free_port, wait_until


def start_podman_service(directory: Path) -> tuple[subprocess.Popen, str]:
    """`podman system service` on a socket in `directory`; its process and engine URL."""
    socket_path = directory / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(socket_path.exists, 30)
    return service, f"unix://{socket_path}"


@dataclass
class ControlPlaneProcess:
    api_port: int
    proxy_port: int
    argv: list[str]
    log_path: str
    engine_url: str
    instance: str
    tls_port: int = 0
    client_bundle: str = ""  # SSL_CERT_FILE for domain mode
    proc: subprocess.Popen | None = None

    @property
    def domain(self) -> str:
        """E2B_DOMAIN for domain mode."""
        return f"e2b.localhost:{self.tls_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"control plane not up:\n{self.log_text()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def log_text(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()


def control_plane_process(
    engine_url: str, image: str, state: Path, keys: dict[str, str], pool_size: int = 1
) -> ControlPlaneProcess:
    """Configured, not yet started: free ports, its own state and instance label."""
    state.mkdir(parents=True, exist_ok=True)
    keys_file = state / "keys"
    keys_file.write_text("".join(f"{key} {team}\n" for key, team in keys.items()))
    api_port, proxy_port, tls_port = free_port(), free_port(), free_port()
    instance = f"test-{uuid.uuid4().hex[:8]}"
    argv = [
        DAEMON_PYTHON,
        "-m",
        "controlplane",
        "--api-port",
        str(api_port),
        "--proxy-port",
        str(proxy_port),
        "--engine-url",
        engine_url,
        "--state-dir",
        str(state / "data"),
        "--image",
        image,
        "--api-keys-file",
        str(keys_file),
        "--instance-id",
        instance,
        "--log-level",
        "WARNING",
        "--pool-size",
        str(pool_size),
        "--tls-port",
        str(tls_port),
    ]
    log_path = tempfile.mktemp(prefix="cp-", suffix=".log")
    bundle = str(state / "data" / "tls" / "client-bundle.crt")
    return ControlPlaneProcess(api_port, proxy_port, argv, log_path, engine_url, instance, tls_port, bundle)


def remove_containers(engine_url: str, instance: str) -> None:
    """No container outlives a run, whatever it left running."""
    import docker

    client = docker.DockerClient(base_url=engine_url, version="auto")
    for container in client.containers.list(all=True, filters={"label": f"e2b.local/managed-by={instance}"}):
        container.remove(force=True)
    client.close()

"""Start the real daemon on a free port, both APIs on it: as a subprocess, or
inside a container of the sandbox image (`ENVD_TEST_IMAGE`, see tests/image/).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DaemonProcess:
    """A running daemon: where it listens, its pid, and its log."""

    port: int
    proc: subprocess.Popen
    log_path: str
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def running(self) -> bool:
        return self.proc.poll() is None

    def sdk_opts(self) -> dict:
        """Keyword arguments that point an official SDK `Sandbox` at this daemon."""
        return {"debug": True, "sandbox_url": self.url}

    def zombies(self) -> list[int]:
        """Zombie children of the daemon right now."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    found.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, and wait: a graceful shutdown exits 0 within seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `condition` until it is true or `timeout` seconds passed; whether it became true.

    For what the daemon makes true asynchronously: a generous bound, not a timing
    assertion. Callers assert the result, with a message saying what never happened.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def no_zombies_soon(daemon: DaemonProcess | ContainerDaemon, timeout: float = 5.0) -> bool:
    """Orphans are reaped within seconds (envd/reaper.py); a zombie that stays is a bug."""
    return wait_until(lambda: not daemon.zombies(), timeout, interval=0.1)


#: The interpreter that runs the daemon: this one, unless the tests run in an
#: environment without envd (the SDK 1.x one, whose protobuf is too old).
DAEMON_PYTHON = os.environ.get("ENVD_TEST_DAEMON_PYTHON") or sys.executable


def start_daemon(
    *args: str,
    ready_timeout: float = 60,
    code_interpreter: bool = True,
    host_port: int | None = None,
    code_port: int | None = None,
) -> DaemonProcess:
    """Run `python -m envd` and wait until both APIs answer.

    Both APIs share one free port unless `host_port`/`code_port` name fixed ones.
    """
    port = host_port or free_port()
    log = tempfile.NamedTemporaryFile(prefix="envd-", suffix=".log", delete=False)
    argv = [DAEMON_PYTHON, "-m", "envd", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--code-port", str(code_port or port)] if code_interpreter else ["--no-code-interpreter"]
    argv += ["--log-level", "DEBUG", *args]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    daemon = DaemonProcess(port, proc, log.name, list(args))
    wait_healthy(daemon, code_interpreter, ready_timeout)
    if code_interpreter and code_port and code_port != port:
        code = DaemonProcess(code_port, proc, log.name, list(args))
        wait_healthy(code, code_interpreter, ready_timeout)
    return daemon


def wait_healthy(daemon: DaemonProcess, code_interpreter: bool, timeout: float) -> None:
    """Wait for `/health` of the API the daemon serves last; fail if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log_text()}")
        if healthy(daemon.url, "49999" if code_interpreter else "49983"):
            return
        time.sleep(0.05)
    daemon.proc.kill()
    raise RuntimeError(f"daemon not healthy after {timeout}s:\n{daemon.log_text()}")


# ---------------------------------------------------------------- the image


#: The sandbox image the suite runs against instead of a local daemon, if set.
TEST_IMAGE = os.environ.get("ENVD_TEST_IMAGE", "")


def container_engine() -> str | None:
    """`podman` or `docker`, whichever is installed (ENVD_ENGINE picks one)."""
    wanted = os.environ.get("ENVD_ENGINE")
    for name in [wanted] if wanted else ["podman", "docker"]:
        if name and shutil.which(name):
            return name
    return None


@dataclass
class ContainerDaemon:
    """The daemon in a running container of the image, reached on 127.0.0.1 only.

    Podman publishes through slirp4netns, so no test traffic goes to a
    bridge address; both APIs share the daemon's port (`ENVD_CODE_PORT`).
    """

    engine: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sdk_opts(self) -> dict:
        return {"debug": True, "sandbox_url": self.url}

    def engine_run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([self.engine, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def exec(self, *argv: str, user: str = "root") -> subprocess.CompletedProcess:
        return self.engine_run("exec", "--user", user, self.name, *argv)

    def log_text(self) -> str:
        result = self.engine_run("logs", self.name)
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = self.engine_run("inspect", "--format", "{{.State.Running}}", self.name)
        return state.stdout.strip() == "true"

    def zombies(self) -> list[int]:
        """Zombies anywhere in the container (tini and envd both reap)."""
        listing = self.exec("ps", "-eo", "pid=,stat=").stdout.split()
        return [int(pid) for pid, stat in zip(listing[::2], listing[1::2], strict=False) if stat.startswith("Z")]

    def stop(self, timeout: float = 10) -> int:
        """`engine stop` (SIGTERM to tini, then the daemon): the exit code, then removal."""
        self.engine_run("stop", "--time", str(int(timeout)), self.name, timeout=timeout + 30)
        code = self.engine_run("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout
        self.engine_run("rm", "--force", self.name)
        return int(code.strip() or -1)


def start_container(
    image: str = "",
    *daemon_args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60,
) -> ContainerDaemon:
    """Run the image with both APIs on one port published on 127.0.0.1; wait for health."""
    engine = container_engine()
    if engine is None:
        raise RuntimeError("no container engine: install podman or docker")
    port = free_port()
    name = f"envd-test-{uuid.uuid4().hex[:10]}"
    argv = [engine, "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:49983"]
    if engine == "podman":
        argv += ["--network", "slirp4netns"]
    for key, value in {"ENVD_CODE_PORT": "49983", "ENVD_LOG_LEVEL": "DEBUG", **(env or {})}.items():
        argv += ["--env", f"{key}={value}"]
    argv.append(image or TEST_IMAGE)
    if daemon_args:
        argv += ["/opt/envd/venv/bin/envd", *daemon_args]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    daemon = ContainerDaemon(engine, name, port)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if healthy(daemon.url, "49999"):
            return daemon
        if not daemon.running():
            break
        time.sleep(0.05)
    log = daemon.log_text()
    daemon.engine_run("rm", "--force", name)
    raise RuntimeError(f"container {name} not healthy after {ready_timeout}s:\n{log}")


def healthy(url: str, sandbox_port: str) -> bool:
    """`/health` of the API the port header names answers 2xx."""
    request = urllib.request.Request(f"{url}/health", headers={"E2b-Sandbox-Port": sandbox_port})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return 200 <= response.status < 300
    except OSError:
        return False

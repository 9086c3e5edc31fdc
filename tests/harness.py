"""Start the real daemon as a subprocess on a free port, both APIs on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def start_daemon(*args: str, ready_timeout: float = 60, code_interpreter: bool = True) -> DaemonProcess:
    """Run `python -m envd` on a free port and wait until both APIs answer."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="envd-", suffix=".log", delete=False)
    argv = [sys.executable, "-m", "envd", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--code-port", str(port)] if code_interpreter else ["--no-code-interpreter"]
    argv += ["--log-level", "DEBUG", *args]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    daemon = DaemonProcess(port, proc, log.name, list(args))
    wait_healthy(daemon, code_interpreter, ready_timeout)
    return daemon


def wait_healthy(daemon: DaemonProcess, code_interpreter: bool, timeout: float) -> None:
    """Wait for `/health` of the API the daemon serves last; fail if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log_text()}")
        if _healthy(daemon.url, "49999" if code_interpreter else "49983"):
            return
        time.sleep(0.05)
    daemon.proc.kill()
    raise RuntimeError(f"daemon not healthy after {timeout}s:\n{daemon.log_text()}")


def _healthy(url: str, sandbox_port: str) -> bool:
    request = urllib.request.Request(f"{url}/health", headers={"E2b-Sandbox-Port": sandbox_port})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return 200 <= response.status < 300
    except OSError:
        return False

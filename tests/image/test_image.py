"""The sandbox image itself (`ENVD_TEST_IMAGE`): account, tools, kernels, health, stop.

The rest of the suite runs against the same image when `ENVD_TEST_IMAGE` is set
(see tests/harness.py); these checks are about what only an image has.
`packaging/build-image.sh` builds one; `.ci/run` builds both variants.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from e2b_code_interpreter import Sandbox

from tests.harness import (
    TEST_IMAGE,
    ContainerDaemon,
    container_engine,
    free_port,
    no_zombies_soon,
    start_container,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not TEST_IMAGE, reason="set ENVD_TEST_IMAGE to an image built by packaging/build-image.sh"
)

#: What each variant promises (e2b.Dockerfile's VARIANT build argument).
KERNELS = {
    "full": {
        "python": ("print(6 * 7)", "42"),
        "bash": ("echo $((6 * 7))", "42"),
        "javascript": ("console.log(6 * 7)", "42"),
        "typescript": ("const n: number = 6 * 7; console.log(n)", "42"),
        "r": ("cat(6 * 7)", "42"),
        "java": ("System.out.println(6 * 7);", "42"),
    },
    "slim": {
        "python": ("print(6 * 7)", "42"),
        "bash": ("echo $((6 * 7))", "42"),
    },
}


def _variant() -> str:
    engine = container_engine()
    assert engine is not None
    labels = subprocess.run(
        [engine, "image", "inspect", "--format", "{{json .Config.Labels}}", TEST_IMAGE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return (json.loads(labels) or {}).get("envd.variant", "")


@pytest.fixture(scope="module")
def container() -> ContainerDaemon:
    daemon = start_container()
    yield daemon
    daemon.stop()


def test_variant_is_labelled() -> None:
    assert _variant() in KERNELS


def test_user_account_with_passwordless_sudo(container: ContainerDaemon) -> None:
    who = container.exec("bash", "-lc", "id -un; echo $HOME; sudo -n id -u", user="user")
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == ["user", "/home/user", "0"]


@pytest.mark.parametrize("tool", ["python", "python3", "pip", "pip3"])
def test_kernel_interpreter_on_every_path(container: ContainerDaemon, tool: str) -> None:
    """Login shells (as commands run) and plain ones find the kernel's interpreter."""
    probe = f"{tool} --version >/dev/null && {tool} -c 'import sys; print(sys.prefix)'"
    if tool.startswith("pip"):
        probe = f"{tool} --version"
    for shell in (["bash", "-lc", probe], ["sh", "-c", probe]):
        result = container.exec(*shell, user="user")
        assert result.returncode == 0, result.stderr
        assert "/opt/envd/venv" in result.stdout


def test_pip_in_a_notebook_installs_where_the_kernel_imports(container: ContainerDaemon) -> None:
    sandbox = Sandbox.create(**container.sdk_opts())
    pip = sandbox.run_code("!pip --version")
    assert "/opt/envd/venv" in "".join(pip.logs.stdout), pip
    command = sandbox.commands.run("python -c 'import numpy, pandas, matplotlib; print(\"ok\")'")
    assert command.stdout.strip() == "ok"


def test_every_kernel_of_the_variant_answers(container: ContainerDaemon) -> None:
    sandbox = Sandbox.create(**container.sdk_opts())
    for language, (code, expected) in KERNELS[_variant()].items():
        execution = sandbox.run_code(code, language=language, timeout=120)
        assert execution.error is None, (language, execution.error)
        output = "".join(execution.logs.stdout) + (execution.text or "")
        assert expected in output, (language, execution)


def test_both_default_ports_and_the_healthcheck() -> None:
    """The image as `docker run` starts it: envd on 49983, code interpreter on 49999."""
    engine = container_engine()
    envd_port, code_port = free_port(), free_port()
    name = f"envd-health-{envd_port}"
    argv = [
        engine,
        "run",
        "--detach",
        "--name",
        name,
        "--publish",
        f"127.0.0.1:{envd_port}:49983",
        "--publish",
        f"127.0.0.1:{code_port}:49999",
    ]
    if engine == "podman":
        argv += ["--network", "slirp4netns"]
    subprocess.run([*argv, TEST_IMAGE], check=True, capture_output=True)
    daemon = ContainerDaemon(engine, name, envd_port)
    try:
        assert _wait_health(f"http://127.0.0.1:{envd_port}/health", 204)
        assert _wait_health(f"http://127.0.0.1:{code_port}/health", 200)
        assert _healthcheck_passes(daemon)
    finally:
        assert daemon.stop() == 0


def test_stop_ends_everything_gracefully_within_five_seconds() -> None:
    """`stop --time 5` kills whatever is still running after 5 s: exit 0 means it was graceful."""
    daemon = start_container()
    try:
        sandbox = Sandbox.create(**daemon.sdk_opts())
        sandbox.commands.run("sleep 600", background=True)
        sandbox.commands.run("sh -c 'sleep 0.2 >/dev/null 2>&1 & sleep 600 >/dev/null 2>&1 & exit 0'")  # orphans
        sandbox.run_code("x = 1")
        assert no_zombies_soon(daemon), daemon.zombies()
    except BaseException:
        daemon.stop()
        raise
    log_before_stop = daemon.log_text()
    assert daemon.stop(timeout=5) == 0, daemon.log_text()
    assert "Traceback" not in log_before_stop


def _wait_health(url: str, status: int, timeout: float = 60) -> bool:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == status
        except OSError:
            return False

    return wait_until(answers, timeout, interval=0.1)


def _healthcheck_passes(daemon: ContainerDaemon) -> bool:
    """Podman runs the image's HEALTHCHECK on demand; Docker on its own interval."""
    if daemon.engine == "podman":
        return daemon.engine_run("healthcheck", "run", daemon.name).returncode == 0

    def healthy() -> bool:
        status = daemon.engine_run("inspect", "--format", "{{.State.Health.Status}}", daemon.name)
        return status.stdout.strip() == "healthy"

    return wait_until(healthy, 60, interval=1)

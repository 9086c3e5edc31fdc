"""The SDK's whole Sandbox lifecycle against the real control plane and real containers."""

from __future__ import annotations

import os
import time

import pytest
from e2b import (
    AuthenticationException,
    NotFoundException,
    SandboxException,
    SandboxNotRunningException,
    SandboxQuery,
)
from e2b import Sandbox as EnvdSandbox
from e2b_code_interpreter import Sandbox

from tests.controlplane.harness import ControlPlaneProcess, control_plane_process, remove_containers
from tests.harness import ROOT, TEST_IMAGE, wait_until

pytestmark = pytest.mark.timeout(300)


def _listed_ids(**opts) -> list[str]:
    paginator = EnvdSandbox.list(**opts)
    ids = []
    while paginator.has_next:
        ids += [item.sandbox_id for item in paginator.next_items()]
    return ids


def _start_program(sandbox: EnvdSandbox, name: str, source: str) -> None:
    """A Python program of the test's own, running in the background in the sandbox."""
    sandbox.files.write(f"/home/user/{name}", source)
    sandbox.commands.run(f"python3 /home/user/{name}", background=True)


def test_create_with_envs_and_metadata_then_kill(sdk_env: ControlPlaneProcess) -> None:
    sandbox = Sandbox.create(envs={"GREETING": "hello"}, metadata={"suite": "cp", "case": "create"}, timeout=120)
    try:
        assert sandbox.run_code("6 * 7").text == "42"
        assert sandbox.commands.run("echo $GREETING").stdout == "hello\n"
        assert sandbox.run_code("import os; os.environ['GREETING']").text == "hello"
        sandbox.files.write("note.txt", "kept")
        assert sandbox.files.read("/home/user/note.txt") == "kept"
        info = sandbox.get_info()
        assert (info.sandbox_id, info.metadata, info.template_id) == (
            sandbox.sandbox_id,
            {"suite": "cp", "case": "create"},
            "local-envd",
        )
        assert sandbox.sandbox_id in _listed_ids(query=SandboxQuery(metadata={"case": "create"}))
        assert sandbox.sandbox_id not in _listed_ids(query=SandboxQuery(metadata={"case": "other"}))
        assert sandbox.is_running()
    finally:
        assert sandbox.kill() is True
    assert not sandbox.is_running()
    assert sandbox.sandbox_id not in _listed_ids()
    assert EnvdSandbox.kill(sandbox.sandbox_id) is False
    with pytest.raises(SandboxNotRunningException):
        sandbox.commands.run("true")


def test_a_second_client_connects_by_id(sdk_env: ControlPlaneProcess) -> None:
    first = Sandbox.create(timeout=120)
    try:
        first.run_code("shared = 21")
        second = Sandbox.connect(first.sandbox_id)
        assert second.run_code("shared * 2").text == "42"
        assert second.commands.run("whoami").stdout == "user\n"
    finally:
        EnvdSandbox.kill(first.sandbox_id)


def test_the_timeout_kills_the_sandbox_and_its_container(sdk_env: ControlPlaneProcess) -> None:
    sandbox = EnvdSandbox.create(timeout=3)
    assert sandbox.commands.run("echo alive").stdout == "alive\n"
    assert wait_until(lambda: sandbox.sandbox_id not in _listed_ids(), 15)
    assert not sandbox.is_running()
    with pytest.raises(SandboxNotRunningException):
        sandbox.commands.run("true")


def test_set_timeout_and_connect_keep_it_alive(sdk_env: ControlPlaneProcess) -> None:
    sandbox = EnvdSandbox.create(timeout=3)
    try:
        sandbox.set_timeout(120)
        time.sleep(4)
        assert sandbox.is_running()
        EnvdSandbox.connect(sandbox.sandbox_id, timeout=200)
        assert sandbox.get_info().end_at > sandbox.get_info().started_at
    finally:
        sandbox.kill()


def test_teams_never_see_each_others_sandboxes(sdk_env: ControlPlaneProcess) -> None:
    sandbox = EnvdSandbox.create(timeout=120)
    try:
        assert sandbox.sandbox_id not in _listed_ids(api_key="key-team-b")
        assert EnvdSandbox.kill(sandbox.sandbox_id, api_key="key-team-b") is False
        with pytest.raises(NotFoundException):
            EnvdSandbox.get_info(sandbox.sandbox_id, api_key="key-team-b")
        assert sandbox.is_running()
    finally:
        sandbox.kill()


def test_bad_requests_get_the_sdks_exceptions(sdk_env: ControlPlaneProcess) -> None:
    with pytest.raises(AuthenticationException):
        EnvdSandbox.create(api_key="not-a-key")
    with pytest.raises(SandboxException, match="not found"):
        EnvdSandbox.create(template="no-such-template")
    with pytest.raises(SandboxException, match="greater than 0"):
        EnvdSandbox.create(timeout=-5)
    with pytest.raises(NotFoundException):
        EnvdSandbox.get_info("a" * 20)


def test_secure_sandbox_refuses_code_without_its_token(sdk_env: ControlPlaneProcess) -> None:
    import json
    import urllib.error
    import urllib.request

    sandbox = Sandbox.create(timeout=120)
    try:
        request = urllib.request.Request(
            f"{sdk_env.sandbox_url}/execute",
            data=json.dumps({"code": "1"}).encode(),
            method="POST",
            headers={"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49999"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401
        assert sandbox.run_code("1 + 1").text == "2"  # the SDK sends the token
    finally:
        sandbox.kill()


def test_a_restart_loses_no_sandbox_and_leaves_no_orphan(sdk_env: ControlPlaneProcess) -> None:
    import docker

    engine = docker.DockerClient(base_url=sdk_env.engine_url, version="auto")
    sandbox = Sandbox.create(timeout=120)
    try:
        sandbox.run_code("survivor = 'yes'")
        assert sdk_env.stop() == 0
        # A container of ours without a record, as if the control plane died mid-create.
        orphan = engine.containers.create(
            TEST_IMAGE,
            command=["sleep", "600"],
            name=f"e2b-orphan-{sdk_env.instance}",
            labels={"e2b.local/managed-by": sdk_env.instance, "e2b.local/sandbox-id": "o" * 20},
        )
        orphan.start()
        sdk_env.start()
        assert sandbox.sandbox_id in _listed_ids()
        assert sandbox.run_code("survivor").text == "yes"
        assert not engine.containers.list(all=True, filters={"name": f"e2b-orphan-{sdk_env.instance}"})
    finally:
        sandbox.kill()
        engine.close()


def test_without_internet_access_only_loopback_exists(sdk_env: ControlPlaneProcess) -> None:
    closed = EnvdSandbox.create(allow_internet_access=False, timeout=120)
    default = EnvdSandbox.create(timeout=120)
    try:
        assert closed.commands.run("ls /sys/class/net").stdout.split() == ["lo"]
        assert len(default.commands.run("ls /sys/class/net").stdout.split()) > 1
        assert closed.get_info().allow_internet_access is False
    finally:
        closed.kill()
        default.kill()


def test_twenty_sandboxes_created_at_once_all_run_code(sdk_env: ControlPlaneProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create_and_run(index: int) -> tuple[str, str | None]:
        sandbox = Sandbox.create(timeout=300, metadata={"batch": "twenty"})
        return sandbox.sandbox_id, sandbox.run_code(f"{index} * 2").text

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(create_and_run, range(20)))
    try:
        assert [text for _, text in results] == [str(i * 2) for i in range(20)]
        assert len({sandbox_id for sandbox_id, _ in results}) == 20
        assert sorted(_listed_ids(query=SandboxQuery(metadata={"batch": "twenty"}), limit=7)) == sorted(
            sandbox_id for sandbox_id, _ in results
        )  # three pages
    finally:
        for sandbox_id, _ in results:
            EnvdSandbox.kill(sandbox_id)


def test_a_server_inside_is_reachable_by_host_name(sdk_env: ControlPlaneProcess) -> None:
    import urllib.request

    sandbox = EnvdSandbox.create(timeout=120)
    try:
        sandbox.files.write("/home/user/site/index.html", "served from the sandbox")
        sandbox.commands.run("cd /home/user/site && python -m http.server 8123", background=True)
        host = sandbox.get_host(8123)
        assert host.startswith(f"8123-{sandbox.sandbox_id}.")

        def fetch() -> bytes | None:
            request = urllib.request.Request(f"{sdk_env.sandbox_url}/index.html", headers={"Host": host})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.read()
            except OSError:
                return None

        assert wait_until(lambda: fetch() == b"served from the sandbox", 15)
    finally:
        sandbox.kill()


def test_private_traffic_needs_its_token_and_the_host_can_be_masked(sdk_env: ControlPlaneProcess) -> None:
    """network allow_public_traffic=False: a user port needs e2b-traffic-access-token (403 without),
    envd and run_code still work through the SDK; mask_request_host is the Host the program sees."""
    import urllib.error
    import urllib.request

    sandbox = Sandbox.create(
        timeout=120, network={"allow_public_traffic": False, "mask_request_host": "app.local:${PORT}"}
    )
    try:
        token = sandbox.traffic_access_token
        assert token
        assert sandbox.run_code("6 * 7").text == "42"  # the code interpreter sends the token
        server = (
            "import http.server\n"
            "class Echo(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        body = self.headers['Host'].encode()\n"
            "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
            "        self.end_headers(); self.wfile.write(body)\n"
            "http.server.HTTPServer(('127.0.0.1', 8124), Echo).serve_forever()\n"
        )
        _start_program(sandbox, "echo_host.py", server)
        routing = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8124"}

        def fetch(headers: dict[str, str]) -> tuple[int, bytes]:
            request = urllib.request.Request(sdk_env.sandbox_url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        assert wait_until(lambda: fetch({**routing, "e2b-traffic-access-token": token})[0] == 200, 15)
        assert fetch({**routing, "e2b-traffic-access-token": token}) == (200, b"app.local:8124")
        status, body = fetch(routing)
        assert status == 403 and b"is missing" in body
        status, body = fetch({**routing, "e2b-traffic-access-token": "wrong"})
        assert status == 403 and b"is invalid" in body
    finally:
        sandbox.kill()


def test_signed_urls_work_in_header_mode(sdk_env: ControlPlaneProcess) -> None:
    """download_url()/upload_url() are the bare proxy URL plus a signature: the proxy finds the
    sandbox by it."""
    import urllib.request

    sandbox = EnvdSandbox.create(timeout=120)
    other = EnvdSandbox.create(timeout=120)
    try:
        sandbox.files.write("/home/user/signed.txt", "by signature")
        with urllib.request.urlopen(sandbox.download_url("/home/user/signed.txt"), timeout=10) as response:
            assert response.read() == b"by signature"
        upload = urllib.request.Request(
            sandbox.upload_url("/home/user/uploaded.txt"),
            data=b"up",
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(upload, timeout=10) as response:
            assert response.status == 200
        assert sandbox.files.read("/home/user/uploaded.txt") == "up"
        assert not other.files.exists("/home/user/uploaded.txt")
    finally:
        sandbox.kill()
        other.kill()


def test_a_websocket_server_inside_is_reachable_through_the_proxy(sdk_env: ControlPlaneProcess) -> None:
    import asyncio

    import aiohttp

    server = (
        "from aiohttp import web\n"
        "async def echo(request):\n"
        "    ws = web.WebSocketResponse(protocols=['echo'])\n"
        "    await ws.prepare(request)\n"
        "    async for message in ws:\n"
        "        await (ws.send_str('echo:' + message.data) if message.type == 1 else ws.send_bytes(message.data))\n"
        "    return ws\n"
        "app = web.Application(); app.router.add_get('/ws', echo)\n"
        "web.run_app(app, host='127.0.0.1', port=8125)\n"
    )
    sandbox = EnvdSandbox.create(timeout=120)
    try:
        sandbox.files.write("/home/user/ws_echo.py", server)
        sandbox.commands.run("python /home/user/ws_echo.py", background=True)

        async def talk() -> tuple[str | None, str, bytes]:
            headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8125"}
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{sdk_env.sandbox_url}/ws", headers=headers, protocols=["echo"]) as ws:
                    await ws.send_str("hello")
                    text = (await ws.receive(timeout=10)).data
                    await ws.send_bytes(b"\x00\x01" * 50_000)
                    binary = (await ws.receive(timeout=10)).data
                    return ws.protocol, text, binary

        def attempt() -> tuple[str | None, str, bytes] | None:
            try:
                return asyncio.run(talk())
            except (aiohttp.ClientError, OSError):
                return None

        assert wait_until(lambda: attempt() is not None, 20)
        assert attempt() == ("echo", "echo:hello", b"\x00\x01" * 50_000)
    finally:
        sandbox.kill()


def test_a_gigabyte_each_way_through_the_proxy_keeps_its_memory_flat(sdk_env: ControlPlaneProcess) -> None:
    """Upload and download 1 GiB through the control plane: bytes intact, the control plane's
    RSS grows by less than 64 MB (nothing is buffered whole)."""
    import hashlib

    import psutil

    size = 1 << 30
    process = psutil.Process(sdk_env.proc.pid)
    before = process.memory_info().rss
    sandbox = EnvdSandbox.create(timeout=300)
    try:
        chunk = os.urandom(1 << 20)

        def body():
            for _ in range(size >> 20):
                yield chunk

        sandbox.files.write("/tmp/big.bin", body())
        assert sandbox.commands.run("stat -c %s /tmp/big.bin").stdout.strip() == str(size)
        expected, received = hashlib.sha256(), hashlib.sha256()
        for _ in range(size >> 20):
            expected.update(chunk)
        count = 0
        for piece in sandbox.files.read("/tmp/big.bin", format="stream"):
            count += len(piece)
            received.update(piece)
        assert count == size
        assert received.hexdigest() == expected.hexdigest()
        assert process.memory_info().rss - before < 64 << 20
    finally:
        sandbox.kill()


def test_pause_and_resume_keep_files_and_kernel_state(sdk_env: ControlPlaneProcess) -> None:
    from e2b.api.client.models.sandbox_state import SandboxState

    sandbox = Sandbox.create(timeout=120)
    try:
        sandbox.run_code("kept = 41")
        sandbox.files.write("/home/user/paused.txt", "still here")
        assert sandbox.pause() is True
        assert sandbox.pause() is False  # already paused
        assert not sandbox.is_running()
        assert sandbox.get_info().state == SandboxState.PAUSED
        assert sandbox.sandbox_id in _listed_ids(query=SandboxQuery(state=[SandboxState.PAUSED]))
        assert sandbox.sandbox_id not in _listed_ids(query=SandboxQuery(state=[SandboxState.RUNNING]))
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
        assert resumed.run_code("kept + 1").text == "42"
        assert resumed.files.read("/home/user/paused.txt") == "still here"
        assert resumed.get_info().state == SandboxState.RUNNING
    finally:
        EnvdSandbox.kill(sandbox.sandbox_id)


def test_a_timeout_pauses_when_asked_and_traffic_resumes(sdk_env: ControlPlaneProcess) -> None:
    """lifecycle on_timeout=pause with auto_resume: the timeout freezes it (state kept), the
    next request thaws it for its timeout again."""
    from e2b.api.client.models.sandbox_state import SandboxState

    sandbox = Sandbox.create(timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        sandbox.run_code("kept = 'state'")
        lifecycle = sandbox.get_info().lifecycle
        assert lifecycle == {"on_timeout": "pause", "auto_resume": True}
        assert wait_until(lambda: sandbox.get_info().state == SandboxState.PAUSED, timeout=30)
        assert sandbox.run_code("kept").text == "state"  # this request resumed it
        info = sandbox.get_info()
        assert info.state == SandboxState.RUNNING
        assert info.end_at.timestamp() > time.time() + 1  # its timeout again, from now
    finally:
        EnvdSandbox.kill(sandbox.sandbox_id)


def test_a_paused_sandbox_without_auto_resume_waits_for_connect(sdk_env: ControlPlaneProcess) -> None:
    from e2b.api.client.models.sandbox_state import SandboxState

    sandbox = Sandbox.create(timeout=3, lifecycle={"on_timeout": "pause"})
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        assert wait_until(lambda: sandbox.get_info().state == SandboxState.PAUSED, timeout=30)
        with pytest.raises(SandboxException):
            sandbox.commands.run("true")
        assert sandbox.get_info().state == SandboxState.PAUSED  # traffic did not resume it
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        EnvdSandbox.kill(sandbox.sandbox_id)


def _container_status(control_plane: ControlPlaneProcess, sandbox_id: str) -> str:
    import docker

    engine = docker.DockerClient(base_url=control_plane.engine_url, version="auto")
    try:
        return engine.containers.get(f"e2b-{sandbox_id}").status
    finally:
        engine.close()


def test_a_filesystem_pause_keeps_files_and_boots_again_on_connect(sdk_env: ControlPlaneProcess) -> None:
    """mode="filesystem": the container stops (memory gone, files kept); connect boots it with its
    env vars and token again."""
    from e2b.api.client.models.sandbox_state import SandboxState

    sandbox = Sandbox.create(timeout=120, envs={"KEPT_ENV": "yes"})
    try:
        sandbox.run_code("in_memory = 1")
        sandbox.files.write("/home/user/on-disk.txt", "kept")
        assert sandbox.pause(mode="filesystem") is True
        assert sandbox.get_info().state == SandboxState.PAUSED
        assert _container_status(sdk_env, sandbox.sandbox_id) == "exited"  # stopped, not frozen
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
        assert resumed.files.read("/home/user/on-disk.txt") == "kept"
        assert resumed.commands.run("echo $KEPT_ENV").stdout == "yes\n"
        assert resumed.run_code("'in_memory' in globals()").text == "False"  # a fresh boot
    finally:
        EnvdSandbox.kill(sandbox.sandbox_id)


def test_a_timeout_can_pause_to_the_filesystem(sdk_env: ControlPlaneProcess) -> None:
    from e2b.api.client.models.sandbox_state import SandboxState

    sandbox = Sandbox.create(timeout=3, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}})
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        assert wait_until(lambda: sandbox.get_info().state == SandboxState.PAUSED, timeout=30)
        assert _container_status(sdk_env, sandbox.sandbox_id) == "exited"
        assert Sandbox.connect(sandbox.sandbox_id, timeout=60).files.read("/home/user/kept.txt") == "kept"
    finally:
        EnvdSandbox.kill(sandbox.sandbox_id)


def test_one_idempotency_key_makes_one_sandbox(sdk_env: ControlPlaneProcess) -> None:
    """The same key and body, also at once from several clients: one sandbox, the same tokens;
    the same key with another body: 409."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    key = f"cp-test-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(3) as pool:
        made = list(pool.map(lambda _: EnvdSandbox.create(timeout=120, idempotency_key=key), range(3)))
    try:
        assert len({sandbox.sandbox_id for sandbox in made}) == 1
        assert len({sandbox._envd_access_token for sandbox in made}) == 1
        again = EnvdSandbox.create(timeout=120, idempotency_key=key)
        assert again.sandbox_id == made[0].sandbox_id
        with pytest.raises(SandboxException, match="409"):
            EnvdSandbox.create(timeout=60, idempotency_key=key)
        assert _listed_ids().count(made[0].sandbox_id) == 1
    finally:
        EnvdSandbox.kill(made[0].sandbox_id)


def test_a_warm_pool_container_takes_its_create_env(sdk_env: ControlPlaneProcess) -> None:
    """The pool's container was started before anyone asked: /init must still reach its kernels."""
    import docker

    engine = docker.DockerClient(base_url=sdk_env.engine_url, version="auto")

    def pooled() -> set[str]:
        labelled = engine.containers.list(filters={"label": f"e2b.local/managed-by={sdk_env.instance}"})
        return {c.labels["e2b.local/sandbox-id"] for c in labelled} - set(_listed_ids())

    try:
        assert wait_until(lambda: len(pooled()) == 1, 60)
        warm = pooled()
        time.sleep(2)  # its kernels are up too
        sandbox = Sandbox.create(envs={"POOL_VAR": "claimed"}, timeout=120)
        assert {sandbox.sandbox_id} == warm
        assert sandbox.run_code("import os; os.environ['POOL_VAR']").text == "claimed"
        assert sandbox.commands.run("echo $POOL_VAR; whoami").stdout == "claimed\nuser\n"
        sandbox.kill()
        assert wait_until(lambda: len(pooled()) == 1, 60)  # refilled
    finally:
        engine.close()


DOMAIN_MODE_SCRIPT = """
import json
from e2b_code_interpreter import Sandbox
sandbox = Sandbox.create(timeout=120, envs={"MODE": "domain"})
try:
    sandbox.files.write("/tmp/over-tls.txt", "tls")
    print(json.dumps({
        "id": sandbox.sandbox_id,
        "code": sandbox.run_code("6 * 7").text,
        "env": sandbox.commands.run("echo $MODE").stdout,
        "file": sandbox.files.read("/tmp/over-tls.txt"),
        "host": sandbox.get_host(8080),
        "listed": sandbox.sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()],
    }))
finally:
    print(json.dumps({"killed": sandbox.kill(), "running": sandbox.is_running()}))
"""


def test_domain_mode_over_tls(control_plane: ControlPlaneProcess) -> None:
    """E2B_DOMAIN alone (with our CA in SSL_CERT_FILE), as a user's script runs: https, host names."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_DOMAIN=control_plane.domain, E2B_API_KEY="key-team-a", SSL_CERT_FILE=control_plane.client_bundle)
    run = subprocess.run(
        [sys.executable, "-c", DOMAIN_MODE_SCRIPT], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr[-4000:]
    used, ended = (json.loads(line) for line in run.stdout.splitlines()[-2:])
    assert (used["code"], used["env"], used["file"], used["listed"]) == ("42", "domain\n", "tls", True)
    assert used["host"] == f"8080-{used['id']}.{control_plane.domain}"
    assert ended == {"killed": True, "running": False}


SDK1_DOMAIN_MODE_SCRIPT = """
import json, socket
_resolve = socket.getaddrinfo
def resolve(host, *args, **kwargs):  # what libnss-myhostname or a DNS wildcard does for users
    return _resolve("127.0.0.1" if str(host).endswith(".e2b.localhost") else host, *args, **kwargs)
socket.getaddrinfo = resolve
from e2b_code_interpreter import Sandbox
sandbox = Sandbox(timeout=120, envs={"MODE": "sdk1"})
try:
    sandbox.files.write("/tmp/sdk1.txt", "one")
    print(json.dumps({
        "id": sandbox.sandbox_id,
        "code": sandbox.run_code("6 * 7").text,
        "env": sandbox.commands.run("echo $MODE").stdout,
        "file": sandbox.files.read("/tmp/sdk1.txt"),
        "listed": sandbox.sandbox_id in [s.sandbox_id for s in Sandbox.list()],
    }))
finally:
    sandbox.kill()
    print(json.dumps({"running": sandbox.is_running()}))
"""
SDK1_PYTHON = os.path.join(ROOT, ".venv-sdk1", "bin", "python")


@pytest.mark.skipif(not os.path.exists(SDK1_PYTHON), reason="no .venv-sdk1 (.ci/sdk1-tests makes it)")
def test_sdk1_in_domain_mode(control_plane: ControlPlaneProcess) -> None:
    """SDK 1.x reaches a control plane only this way; its ids are `<id>-<clientID>`."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_DOMAIN=control_plane.domain, E2B_API_KEY="key-team-a", SSL_CERT_FILE=control_plane.client_bundle)
    run = subprocess.run(
        [SDK1_PYTHON, "-c", SDK1_DOMAIN_MODE_SCRIPT], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr[-4000:]
    used, ended = (json.loads(line) for line in run.stdout.splitlines()[-2:])
    assert (used["code"], used["env"], used["file"], used["listed"]) == ("42", "sdk1\n", "one", True)
    assert "-" in used["id"]  # <sandboxID>-<clientID>
    assert ended == {"running": False}


def test_metrics_are_sampled_while_running(sdk_env: ControlPlaneProcess) -> None:
    sandbox = EnvdSandbox.create(timeout=120)
    try:
        sandbox.commands.run("head -c 20000000 /dev/urandom > /tmp/metrics.bin")
        assert wait_until(lambda: len(sandbox.get_metrics()) >= 2, 20)
        sample = sandbox.get_metrics()[-1]
        assert sample.cpu_count == 2
        assert 0 < sample.mem_used <= sample.mem_total == 1024 * 2**20
        assert 0 < sample.disk_used < sample.disk_total
        assert sample.cpu_used_pct >= 0
    finally:
        sandbox.kill()


def test_team_and_host_limits(engine_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its team limit a create is 429 (RateLimitException, not retried); past the host's
    container limit it is 503 (ServiceBusyException, after the SDK's retries)."""
    from e2b import RateLimitException, ServiceBusyException

    keys = {"key-team-a": "team-a", "key-team-b": "team-b", "key-team-c": "team-c"}
    plane = control_plane_process(engine_url, TEST_IMAGE, tmp_path / "cp", keys, pool_size=0)
    plane.argv += ["--team-limit", "1", "--host-limit", "2"]
    plane.start()
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.setenv("E2B_API_URL", plane.api_url)
    monkeypatch.setenv("E2B_SANDBOX_URL", plane.sandbox_url)
    try:
        first = EnvdSandbox.create(timeout=120, api_key="key-team-a")
        with pytest.raises(RateLimitException):
            EnvdSandbox.create(timeout=120, api_key="key-team-a")
        EnvdSandbox.create(timeout=120, api_key="key-team-b")
        with pytest.raises(ServiceBusyException):
            EnvdSandbox.create(timeout=120, api_key="key-team-c")
        first.kill()
        assert EnvdSandbox.create(timeout=120, api_key="key-team-c").is_running()
    finally:
        plane.stop()
        remove_containers(engine_url, plane.instance)


def test_the_janitor_notices_crashed_sandboxes_and_removes_unowned_containers(sdk_env: ControlPlaneProcess) -> None:
    """While it runs, not only at start: a container stopped behind the control plane's back
    becomes a filesystem pause that `connect` boots again; a container with this instance's
    label that no sandbox owns (a failed teardown) is removed."""
    import docker
    from e2b.api.client.models.sandbox_state import SandboxState

    from controlplane.backend import LABEL_MANAGER, LABEL_SANDBOX

    engine = docker.DockerClient(base_url=sdk_env.engine_url, version="auto")
    sandbox = Sandbox.create(timeout=120)
    orphan = None
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        engine.containers.get(f"e2b-{sandbox.sandbox_id}").kill()  # a crash, as the engine sees one
        orphan = engine.containers.create(
            TEST_IMAGE,
            name=f"e2b-orphan-{os.getpid()}",
            labels={LABEL_MANAGER: sdk_env.instance, LABEL_SANDBOX: "orphan00000000000000"},
            network_mode="none",
        )
        assert wait_until(lambda: sandbox.get_info().state == SandboxState.PAUSED, timeout=30)
        assert wait_until(lambda: not engine.containers.list(all=True, filters={"id": orphan.id}), timeout=30)
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        assert resumed.run_code("1 + 1").text == "2"
    finally:
        EnvdSandbox.kill(sandbox.sandbox_id)
        if orphan is not None and engine.containers.list(all=True, filters={"id": orphan.id}):
            orphan.remove(force=True)
        engine.close()


def test_list_filters_by_start_time_and_template_in_either_order(sdk_env: ControlPlaneProcess) -> None:
    """`started_after`, `template` (id or alias) and the wire's `order`, with paging."""
    import datetime

    import httpx

    first = Sandbox.create(timeout=120, metadata={"case": "filters"})
    time.sleep(1.1)
    boundary = datetime.datetime.now(datetime.timezone.utc)
    later = [Sandbox.create(timeout=120, metadata={"case": "filters"}) for _ in range(2)]
    try:
        query = {"case": "filters"}
        since = _listed_ids(query=SandboxQuery(metadata=query, started_after=boundary), limit=1)
        assert sorted(since) == sorted(s.sandbox_id for s in later)
        assert len(_listed_ids(query=SandboxQuery(metadata=query, template="code-interpreter-v1"))) == 3
        assert _listed_ids(query=SandboxQuery(metadata=query, template="no-such-template")) == []
        url = f"{sdk_env.api_url}/v2/sandboxes"
        headers = {"X-API-KEY": os.environ["E2B_API_KEY"]}
        oldest_first = [
            item["sandboxID"]
            for item in httpx.get(url, params={"metadata": "case=filters", "order": "asc"}, headers=headers).json()
        ]
        newest_first = [
            item["sandboxID"] for item in httpx.get(url, params={"metadata": "case=filters"}, headers=headers).json()
        ]
        assert oldest_first[0] == first.sandbox_id
        assert oldest_first == newest_first[::-1]
        for bad in ({"order": "sideways"}, {"startedAfter": "yesterday"}):
            assert httpx.get(url, params=bad, headers=headers).status_code == 400
    finally:
        for sandbox in (first, *later):
            sandbox.kill()


def test_a_request_in_flight_when_its_sandbox_is_killed_gets_not_found(sdk_env: ControlPlaneProcess) -> None:
    """The proxy's answer is decided when the upstream goes, not when the request was routed:
    the SDK's "was not found" (SandboxNotRunningException), not "port is not open"."""
    import threading

    import httpx

    sandbox = EnvdSandbox.create(timeout=120)
    server = (
        "import http.server, time\n"
        "class Slow(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        time.sleep(0 if self.path == '/ready' else 60)\n"
        "        self.send_response(204); self.end_headers()\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', 8124), Slow).serve_forever()\n"
    )
    _start_program(sandbox, "slow.py", server)
    headers = {"Host": sandbox.get_host(8124)}
    try:
        assert wait_until(
            lambda: httpx.get(f"{sdk_env.sandbox_url}/ready", headers=headers, timeout=10).status_code == 204, 15
        )
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(httpx.get(f"{sdk_env.sandbox_url}/slow", headers=headers, timeout=30))
        )
        waiting.start()
        time.sleep(1)  # the request is with the program, unanswered
    finally:
        sandbox.kill()
    waiting.join(30)
    assert answers and answers[0].status_code == 502
    assert "was not found" in answers[0].json()["message"]

"""Templates from a TOML file (--templates-file): names, limits and pool per template."""

from __future__ import annotations

import subprocess
import sys

import pytest
from e2b import Sandbox

from tests.controlplane.harness import control_plane_process, remove_containers
from tests.harness import ROOT, TEST_IMAGE

pytestmark = pytest.mark.timeout(300)

KEYS = {"key-team-a": "team-a"}


def test_a_template_from_the_file_sets_its_name_and_limits(
    engine_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker

    templates = tmp_path / "templates.toml"
    templates.write_text(
        "[[templates]]\n"
        'id = "small-python"\n'
        'aliases = ["my-template"]\n'
        f'image = "{TEST_IMAGE}"\n'
        "cpu_count = 1\n"
        "memory_mb = 768\n"
        "pool_size = 0\n"
    )
    plane = control_plane_process(engine_url, TEST_IMAGE, tmp_path / "cp", KEYS)
    plane.argv += ["--templates-file", str(templates)]
    plane.start()
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.setenv("E2B_API_URL", plane.api_url)
    monkeypatch.setenv("E2B_SANDBOX_URL", plane.sandbox_url)
    monkeypatch.setenv("E2B_API_KEY", "key-team-a")
    engine = docker.DockerClient(base_url=engine_url, version="auto")
    try:
        sandbox = Sandbox.create("my-template", timeout=120)
        info = sandbox.get_info()
        assert (info.template_id, info.cpu_count, info.memory_mb) == ("small-python", 1, 768)
        limits = engine.containers.get(f"e2b-{sandbox.sandbox_id}").attrs["HostConfig"]
        assert (limits["NanoCpus"], limits["Memory"]) == (10**9, 768 << 20)
        assert sandbox.commands.run("echo ok").stdout == "ok\n"
        sandbox.kill()
        with pytest.raises(Exception, match="404"):
            Sandbox.create("base")  # the file replaced the default template
        managed = engine.containers.list(all=True, filters={"label": f"e2b.local/managed-by={plane.instance}"})
        assert managed == []  # pool_size = 0: no warm container
    finally:
        engine.close()
        plane.stop()
        remove_containers(engine_url, plane.instance)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("[[templates]]\nid = 'x'\n", "`image` is required"),
        ("[[templates]]\nid = 'x'\nimage = 'i'\ncpus = 2\n", "unknown keys cpus"),
        ("[[templates]]\nid = 'x'\nimage = 'i'\nmemory_mb = '1G'\n", "`memory_mb` must be a non-negative integer"),
        (
            "[[templates]]\nid = 'a'\nimage = 'i'\n[[templates]]\nid = 'b'\nimage = 'i'\naliases = ['a']\n",
            "more than one template: a",
        ),
        ("templates = 3", "at least one [[templates]]"),
        ("[[templates", "templates.toml"),
    ],
)
def test_a_bad_templates_file_stops_the_start_with_its_reason(tmp_path, content: str, complaint: str) -> None:
    templates = tmp_path / "templates.toml"
    templates.write_text(content)
    keys = tmp_path / "keys"
    keys.write_text("k team\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "--templates-file",
            str(templates),
            "--api-keys-file",
            str(keys),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr

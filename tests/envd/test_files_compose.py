"""`POST /files/compose` over real HTTP on a real disk (docs/envd-api.md §6.9)."""

from __future__ import annotations

import json
import os
import pwd

import pytest

from tests.envd.helpers import TOKEN, users_link_to
from tests.wire import http

# host_only: the fixtures prepare and inspect files on this host (tests/envd/conftest.py).
pytestmark = [pytest.mark.timeout(60), pytest.mark.host_only]


def compose(daemon, body: object, headers: dict[str, str] | None = None) -> tuple[int, object]:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, raw = http(
        f"{daemon.url}/files/compose",
        "POST",
        raw_body,
        {"Content-Type": "application/json", **(headers or {})},
    )
    return status, json.loads(raw)


def write_parts(directory: str, *contents: bytes) -> list[str]:
    paths = []
    for index, content in enumerate(contents):
        path = os.path.join(directory, f"part{index}")
        with open(path, "wb") as out:
            out.write(content)
        paths.append(path)
    return paths


def leftovers(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if ".e2b-compose." in name]


def test_parts_are_joined_owned_by_the_user_and_removed(envd_daemon, home_dir) -> None:
    big = os.urandom(3 * 1024 * 1024)
    parts = write_parts(home_dir, b"head-", big, b"", b"-tail")
    destination = f"{home_dir}/new/dir/joined.bin"
    status, entry = compose(envd_daemon, {"source_paths": parts, "destination": destination})
    assert (status, entry) == (200, {"path": destination, "name": "joined.bin", "type": "file"})
    with open(destination, "rb") as joined:
        assert joined.read() == b"head-" + big + b"-tail"
    user = pwd.getpwnam("user")
    for path in (destination, f"{home_dir}/new/dir", f"{home_dir}/new"):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (user.pw_uid, user.pw_gid)
    assert not any(os.path.exists(p) for p in parts)
    assert leftovers(f"{home_dir}/new/dir") == []


def test_no_file_is_composed_for_the_user_through_a_link_to_a_root_directory(envd_daemon, home_dir, tmp_path) -> None:
    victim = tmp_path / "root-only"
    victim.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    link = users_link_to(home_dir, str(victim))
    parts = write_parts(home_dir, b"evil")
    status, error = compose(envd_daemon, {"source_paths": parts, "destination": f"{link}/joined"})
    assert status == 403 and "may not create" in error["message"], error
    assert os.listdir(victim) == []


def test_relative_paths_resolve_for_the_user_and_replace_the_destination(envd_daemon, home_dir) -> None:
    name = os.path.basename(home_dir)
    write_parts(home_dir, b"a", b"b")
    with open(f"{home_dir}/out", "w") as existing:
        existing.write("old content")
    status, entry = compose(
        envd_daemon,
        {
            "source_paths": [f"{name}/part0", f"~/{name}/part1"],
            "destination": f"{name}/out",
            "username": "user",
        },
    )
    assert status == 200 and entry["path"] == f"{home_dir}/out"
    with open(f"{home_dir}/out") as joined:
        assert joined.read() == "ab"


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, None),
        ({"destination": "/tmp/x"}, 400, "source_paths must not be empty"),
        ({"source_paths": [], "destination": "/tmp/x"}, 400, "source_paths must not be empty"),
        ({"source_paths": ["/etc/hostname"]}, 400, "destination is required"),
        ({"source_paths": [1], "destination": "/tmp/x"}, 400, None),
        (
            {"source_paths": ["/etc/hostname"], "destination": "/tmp/x", "username": "nobody-xyz"},
            401,
            "error looking up user 'nobody-xyz': user: unknown user nobody-xyz",
        ),
    ],
)
def test_bad_requests(envd_daemon, body, status, message) -> None:
    got_status, error = compose(envd_daemon, body)
    assert got_status == status and error["code"] == status
    if message is not None:
        assert error["message"] == message


def test_bad_sources_change_nothing(envd_daemon, home_dir) -> None:
    parts = write_parts(home_dir, b"keep me")
    destination = f"{home_dir}/out"
    cases = [
        ([parts[0], f"{home_dir}/missing"], 404, f"source file not found: {home_dir}/missing"),
        ([parts[0], home_dir], 400, f"source path is not a regular file: {home_dir}"),
        ([parts[0], destination], 400, f'source path "{destination}" cannot be the same as destination'),
    ]
    for sources, status, message in cases:
        got = compose(envd_daemon, {"source_paths": sources, "destination": destination})
        assert got == (status, {"code": status, "message": message})
    assert os.listdir(home_dir) == ["part0"]
    with open(parts[0], "rb") as kept:
        assert kept.read() == b"keep me"


def test_disk_full_is_507_and_keeps_the_parts(envd_daemon, tiny_fs, tmp_path) -> None:
    parts = write_parts(str(tmp_path), os.urandom(200_000), os.urandom(200_000))
    status, error = compose(envd_daemon, {"source_paths": parts, "destination": f"{tiny_fs}/joined"})
    assert (status, error) == (507, {"code": 507, "message": "not enough disk space available"})
    assert os.listdir(tiny_fs) == []
    assert all(os.path.exists(p) for p in parts)


def test_needs_the_access_token(daemon_factory, home_dir) -> None:
    secured = daemon_factory("--access-token", TOKEN)
    parts = write_parts(home_dir, b"x")
    body = {"source_paths": parts, "destination": f"{home_dir}/out"}
    assert compose(secured, body)[0] == 401
    assert os.path.exists(parts[0])
    assert compose(secured, body, {"X-Access-Token": TOKEN})[0] == 200

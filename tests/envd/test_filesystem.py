"""filesystem.Filesystem and /files through the official sync SDK (docs/envd-api.md §4, §6.7, §6.8)."""

from __future__ import annotations

import base64
import io
import os
import posixpath
from datetime import datetime

import pytest
from e2b import (
    AuthenticationException,
    FileNotFoundException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import FileType, WriteEntry

from tests.envd.helpers import user_ids, users_link_to
from tests.wire import unary

# host_only: the fixtures prepare and inspect files on this host (tests/envd/conftest.py).
pytestmark = [pytest.mark.timeout(60), pytest.mark.host_only]


def rel(home_dir: str, *parts: str) -> str:
    """A path relative to the user's home, as SDK users write them."""
    return posixpath.join(os.path.basename(home_dir), *parts)


# -- write and read ------------------------------------------------------------


def test_write_and_read_text_bytes_and_stream(envd_sandbox, home_dir) -> None:
    info = envd_sandbox.files.write(rel(home_dir, "a.txt"), "héllo\n")
    assert (info.name, info.type, info.path) == ("a.txt", FileType.FILE, f"{home_dir}/a.txt")
    assert info.metadata is None
    assert envd_sandbox.files.read(rel(home_dir, "a.txt")) == "héllo\n"
    assert envd_sandbox.files.read(rel(home_dir, "a.txt"), format="bytes") == bytearray("héllo\n".encode())
    assert b"".join(envd_sandbox.files.read(rel(home_dir, "a.txt"), format="stream")) == "héllo\n".encode()
    st = os.stat(f"{home_dir}/a.txt")
    assert (st.st_mode & 0o777, st.st_uid) == (0o644, os.stat("/home/user").st_uid)


def test_binary_file_like_iterable_and_gzip(envd_sandbox, home_dir) -> None:
    payload = os.urandom(300_000)
    envd_sandbox.files.write(rel(home_dir, "bin"), payload)
    assert bytes(envd_sandbox.files.read(rel(home_dir, "bin"), format="bytes")) == payload
    envd_sandbox.files.write(rel(home_dir, "io"), io.BytesIO(payload))
    assert bytes(envd_sandbox.files.read(rel(home_dir, "io"), format="bytes", gzip=True)) == payload
    envd_sandbox.files.write(rel(home_dir, "iter"), iter([payload[:1000], payload[1000:]]))
    assert bytes(envd_sandbox.files.read(rel(home_dir, "iter"), format="bytes")) == payload
    envd_sandbox.files.write(rel(home_dir, "gz"), payload, gzip=True)
    with open(f"{home_dir}/gz", "rb") as stored:
        assert stored.read() == payload  # gunzipped exactly once
    envd_sandbox.files.write(rel(home_dir, "text.txt"), io.StringIO("string io"), use_octet_stream=True)
    assert envd_sandbox.files.read(rel(home_dir, "text.txt"), gzip=True) == "string io"


def test_empty_file_and_partial_stream_read(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "empty"), "")
    assert envd_sandbox.files.read(rel(home_dir, "empty")) == ""
    envd_sandbox.files.write(rel(home_dir, "big"), b"z" * 2_000_000)
    with envd_sandbox.files.read(rel(home_dir, "big"), format="stream") as reader:
        assert next(iter(reader))[:1] == b"z"
    assert envd_sandbox.files.exists(rel(home_dir, "big"))  # the daemon survived the hang-up


def test_overwrite_and_missing_parents(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "deep/er/f.txt"), "one")
    envd_sandbox.files.write(rel(home_dir, "deep/er/f.txt"), "2")
    assert envd_sandbox.files.read(rel(home_dir, "deep/er/f.txt")) == "2"
    for directory in ("deep", "deep/er"):
        st = os.stat(f"{home_dir}/{directory}")
        assert (st.st_mode & 0o777, st.st_uid) == (0o755, os.stat("/home/user").st_uid)


def test_write_through_a_users_symlink_keeps_the_targets_owner(envd_sandbox, home_dir, tmp_path) -> None:
    """`user` plants a link to a root-owned file: the write follows it (as upstream)
    but the daemon never gives the target to the user."""
    victim = tmp_path / "root-owned.conf"
    victim.write_text("original")
    os.chmod(tmp_path, 0o755)
    link = f"{home_dir}/x"
    os.symlink(victim, link)
    os.lchown(link, *user_ids())
    envd_sandbox.files.write(link, "rewritten")
    assert victim.read_text() == "rewritten"
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert os.path.islink(link)


def test_write_through_a_dangling_symlink_creates_nothing(envd_sandbox, home_dir, tmp_path) -> None:
    target = tmp_path / "cron.d" / "job"
    target.parent.mkdir()
    link = f"{home_dir}/job"
    os.symlink(target, link)
    os.lchown(link, *user_ids())
    with pytest.raises(InvalidArgumentException, match="symlink to nothing"):
        envd_sandbox.files.write(link, "* * * * * root evil")
    assert not target.exists()
    assert os.path.islink(link)


def test_write_files_keeps_directories_and_order(envd_sandbox, home_dir) -> None:
    files = [WriteEntry(path=rel(home_dir, f"multi/{i}/f{i}.txt"), data=f"content {i}") for i in range(5)]
    files.append(WriteEntry(path=f"{home_dir}/absolute.bin", data=b"\x00\x01"))
    written = envd_sandbox.files.write_files(files)
    assert [w.path for w in written] == [f"{home_dir}/multi/{i}/f{i}.txt" for i in range(5)] + [
        f"{home_dir}/absolute.bin"
    ]
    for i in range(5):
        assert envd_sandbox.files.read(rel(home_dir, f"multi/{i}/f{i}.txt")) == f"content {i}"
    assert envd_sandbox.files.write_files([]) == []


def test_write_files_with_awkward_names_in_multipart(envd_sandbox, home_dir) -> None:
    """Several files go as one multipart body: the names travel in `filename`."""
    names = ["semi;colon.txt", "ünï cødé.txt", "back\\slash", "sub/dir/x"]
    files = [WriteEntry(path=rel(home_dir, name), data=name) for name in names]
    files.append(WriteEntry(path=f"{home_dir}/absolute", data="absolute"))  # leading / kept
    written = envd_sandbox.files.write_files(files)
    assert [w.path for w in written] == [f"{home_dir}/{name}" for name in names + ["absolute"]]
    for entry in written:
        assert envd_sandbox.files.read(entry.path) == entry.path[len(home_dir) + 1 :]


@pytest.mark.parametrize("name", ["with space.txt", "ünïcödé ✓.txt", "new\nline.txt", 'quote"and\\slash.txt', "-dash"])
def test_awkward_file_names(envd_sandbox, home_dir, name: str) -> None:
    info = envd_sandbox.files.write(rel(home_dir, name), name)
    assert info.path == f"{home_dir}/{name}"
    assert os.path.exists(f"{home_dir}/{name}")
    assert envd_sandbox.files.read(rel(home_dir, name)) == name
    assert envd_sandbox.files.get_info(rel(home_dir, name)).name == name
    assert [e.name for e in envd_sandbox.files.list(home_dir)] == [name]


def test_metadata_roundtrip(envd_sandbox, home_dir) -> None:
    info = envd_sandbox.files.write(rel(home_dir, "m.txt"), "x", metadata={"Author": "me", "k2": "v 2"})
    assert info.metadata == {"author": "me", "k2": "v 2"}
    assert os.getxattr(f"{home_dir}/m.txt", "user.e2b.author") == b"me"
    assert envd_sandbox.files.get_info(rel(home_dir, "m.txt")).metadata == {"author": "me", "k2": "v 2"}
    renamed = envd_sandbox.files.rename(rel(home_dir, "m.txt"), rel(home_dir, "n.txt"))
    assert renamed.metadata == {"author": "me", "k2": "v 2"}
    assert envd_sandbox.files.list(home_dir)[0].metadata == {"author": "me", "k2": "v 2"}
    os.setxattr(f"{home_dir}/n.txt", "user.e2b.extra", b"oob")
    assert envd_sandbox.files.get_info(rel(home_dir, "n.txt")).metadata["extra"] == "oob"
    octet = envd_sandbox.files.write(rel(home_dir, "n.txt"), io.BytesIO(b"y"), metadata={"only": "this"})
    assert octet.metadata == {"only": "this"}
    cleared = envd_sandbox.files.write(rel(home_dir, "n.txt"), "z")
    assert cleared.metadata is None
    assert envd_sandbox.files.get_info(rel(home_dir, "n.txt")).metadata is None


# -- stat, list, make_dir, rename, remove -------------------------------------------


def test_get_info_of_file_and_directory(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "f.txt"), "12345")
    info = envd_sandbox.files.get_info(rel(home_dir, "f.txt"))
    assert (info.name, info.type, info.path) == ("f.txt", FileType.FILE, f"{home_dir}/f.txt")
    assert (info.size, info.mode, info.permissions) == (5, 0o644, "-rw-r--r--")
    assert (info.owner, info.group) == ("user", "user")
    assert isinstance(info.modified_time, datetime) and info.modified_time.tzinfo is not None
    assert info.symlink_target is None
    directory = envd_sandbox.files.get_info(home_dir)
    assert (directory.type, directory.mode, directory.permissions) == (FileType.DIR, 0o755, "drwxr-xr-x")
    assert directory.size > 0
    assert envd_sandbox.files.get_info("~").path == "/home/user"


def test_symlink_info(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "test.txt"), "x")
    os.symlink("test.txt", f"{home_dir}/link")
    info = envd_sandbox.files.get_info(rel(home_dir, "link"))
    assert info.symlink_target == f"{home_dir}/test.txt"
    assert info.type == FileType.FILE  # envd 0.6.13 behaviour (is_symlink off)
    assert info.permissions == "Lrwxrwxrwx"


def test_exists(envd_sandbox, home_dir) -> None:
    assert envd_sandbox.files.exists(home_dir)
    assert not envd_sandbox.files.exists(rel(home_dir, "nope"))
    envd_sandbox.files.write(rel(home_dir, "yes"), "")
    assert envd_sandbox.files.exists(rel(home_dir, "yes"))


def test_list_with_depth(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "file1.txt"), "x")
    for sub in ("subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/subdir2_1", "subdir2/subdir2_2"):
        assert envd_sandbox.files.make_dir(rel(home_dir, sub))
    os.mkfifo(f"{home_dir}/fifo")  # type UNSPECIFIED: the SDK drops it
    depth1 = envd_sandbox.files.list(rel(home_dir))
    assert [e.name for e in depth1] == ["file1.txt", "subdir1", "subdir2"]
    assert [e.type for e in depth1] == [FileType.FILE, FileType.DIR, FileType.DIR]
    expected = [
        "file1.txt",
        "subdir1",
        "subdir1/subdir1_1",
        "subdir1/subdir1_2",
        "subdir2",
        "subdir2/subdir2_1",
        "subdir2/subdir2_2",
    ]
    for depth in (2, 3):
        entries = envd_sandbox.files.list(rel(home_dir), depth=depth)
        assert [e.path for e in entries] == [f"{home_dir}/{p}" for p in expected]
        assert [e.name for e in entries] == [posixpath.basename(p) for p in expected]
    with pytest.raises(InvalidArgumentException):
        envd_sandbox.files.list(home_dir, depth=0)


def test_list_through_a_symlinked_directory_reports_requested_paths(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "real/inner.txt"), "x")
    os.symlink(f"{home_dir}/real", f"{home_dir}/alias")
    entries = envd_sandbox.files.list(rel(home_dir, "alias"))
    assert [e.path for e in entries] == [f"{home_dir}/alias/inner.txt"]
    listing = envd_sandbox.files.list(home_dir, depth=3)
    assert [e.path for e in listing] == [
        f"{home_dir}/alias",
        f"{home_dir}/real",
        f"{home_dir}/real/inner.txt",
    ]  # the symlinked directory is listed, not entered


def test_make_dir(envd_sandbox, home_dir) -> None:
    assert envd_sandbox.files.make_dir(rel(home_dir, "a/b/c")) is True
    assert envd_sandbox.files.make_dir(rel(home_dir, "a/b/c")) is False
    assert os.path.isdir(f"{home_dir}/a/b/c")
    assert os.stat(f"{home_dir}/a/b/c").st_uid == os.stat("/home/user").st_uid
    envd_sandbox.files.write(rel(home_dir, "file"), "x")
    with pytest.raises(InvalidArgumentException):
        envd_sandbox.files.make_dir(rel(home_dir, "file"))
    with pytest.raises(SandboxException, match="INTERNAL.*not a directory"):
        envd_sandbox.files.make_dir(rel(home_dir, "file/sub"))


def test_rename(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "old.txt"), "data")
    entry = envd_sandbox.files.rename(rel(home_dir, "old.txt"), rel(home_dir, "new/place.txt"))
    assert (entry.path, entry.name, entry.type) == (f"{home_dir}/new/place.txt", "place.txt", FileType.FILE)
    assert not envd_sandbox.files.exists(rel(home_dir, "old.txt"))
    assert envd_sandbox.files.read(rel(home_dir, "new/place.txt")) == "data"
    with pytest.raises(FileNotFoundException):
        envd_sandbox.files.rename(rel(home_dir, "old.txt"), rel(home_dir, "x"))


def test_remove(envd_sandbox, home_dir) -> None:
    envd_sandbox.files.write(rel(home_dir, "tree/a/b.txt"), "x")
    os.symlink("/etc", f"{home_dir}/tree/etc-link")
    envd_sandbox.files.remove(rel(home_dir, "tree"))
    assert not os.path.lexists(f"{home_dir}/tree")
    assert os.path.isdir("/etc")  # the link went, not its target
    envd_sandbox.files.remove(rel(home_dir, "never-existed"))  # no error


# -- bad input ---------------------------------------------------------------------


def test_missing_paths_raise_file_not_found(envd_sandbox, home_dir) -> None:
    missing = rel(home_dir, "missing.txt")
    for call in (
        lambda: envd_sandbox.files.read(missing),
        lambda: envd_sandbox.files.read(missing, format="stream"),
        lambda: envd_sandbox.files.get_info(missing),
        lambda: envd_sandbox.files.list(missing),
    ):
        with pytest.raises(FileNotFoundException) as caught:
            call()
        assert isinstance(caught.value, NotFoundException)


def test_reading_a_directory_is_a_clear_error(envd_sandbox, home_dir) -> None:
    with pytest.raises(InvalidArgumentException, match="is a directory"):
        envd_sandbox.files.read(home_dir)
    envd_sandbox.files.write(rel(home_dir, "f"), "x")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        envd_sandbox.files.list(rel(home_dir, "f"))
    envd_sandbox.files.make_dir(rel(home_dir, "d"))
    with pytest.raises(InvalidArgumentException, match="is a directory"):
        envd_sandbox.files.write(rel(home_dir, "d"), "x")


def test_other_users_home_is_invalid_argument(envd_sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="cannot expand user-specific home dir"):
        envd_sandbox.files.get_info("~root/x")
    with pytest.raises(InvalidArgumentException, match="cannot expand"):
        envd_sandbox.files.read("~root/x")
    with pytest.raises(InvalidArgumentException):
        envd_sandbox.files.write("~root/x", "x")


def test_unknown_user_is_unauthenticated(envd_sandbox) -> None:
    with pytest.raises(AuthenticationException, match="invalid username: 'nobody-here'"):
        envd_sandbox.files.get_info("/tmp", user="nobody-here")
    with pytest.raises(AuthenticationException, match="unknown user nobody-here"):
        envd_sandbox.files.read("/etc/hostname", user="nobody-here")
    with pytest.raises(AuthenticationException):
        envd_sandbox.files.write("/tmp/never-written", "x", user="nobody-here")
    assert not os.path.exists("/tmp/never-written")


def test_acting_as_root(envd_sandbox, home_dir) -> None:
    info = envd_sandbox.files.write(f"{home_dir}/root-owned", "x", user="root")
    assert os.stat(info.path).st_uid == 0
    assert envd_sandbox.files.get_info("~", user="root").path == "/root"


def test_empty_remove_path_is_refused(envd_daemon, home_dir) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"user:").decode()}
    status, body = unary(envd_daemon.url, "filesystem.Filesystem/Remove", {"path": ""}, auth)
    assert (status, body["code"]) == (400, "invalid_argument")
    assert os.path.isdir("/home/user")


def test_list_with_an_undecodable_file_name(envd_sandbox, home_dir) -> None:
    """One file name that is not UTF-8 must not break the listing (shown with U+FFFD)."""
    envd_sandbox.files.write(rel(home_dir, "d/ok.txt"), "x")
    with open(os.path.join(os.fsencode(home_dir), b"d", b"bad\xff"), "w"):
        pass
    entries = envd_sandbox.files.list(rel(home_dir, "d"))
    assert sorted((e.name, e.path) for e in entries) == [
        ("bad\ufffd", f"{home_dir}/d/bad\ufffd"),
        ("ok.txt", f"{home_dir}/d/ok.txt"),
    ]
    assert envd_sandbox.files.list(home_dir, depth=2)  # deeper listings too


def test_list_paths_are_cleaned(envd_sandbox, home_dir) -> None:
    """Entry paths are joined like Go's filepath.Join: no `/./`, no `//`, no `..`."""
    envd_sandbox.files.write(rel(home_dir, "d/sub/f.txt"), "x")
    for requested in (f"{home_dir}/./d", f"{home_dir}/d/", f"{home_dir}/d/sub/../"):
        entries = envd_sandbox.files.list(requested, depth=2)
        assert [e.path for e in entries] == [f"{home_dir}/d/sub", f"{home_dir}/d/sub/f.txt"], requested


def test_ensure_dir_leaves_a_concurrently_created_component_alone(monkeypatch, home_dir) -> None:
    """A component another creator made first (EEXIST) keeps its owner: not ours to chown."""
    from envd.filesystem import paths
    from envd.users import lookup_user

    user = lookup_user("user")
    real_mkdir = os.mkdir
    target = f"{home_dir}/raced/inner"

    def racing_mkdir(path, mode=0o777):
        if path == f"{home_dir}/raced":
            real_mkdir(path, mode)  # another creator wins: owned by root
            raise FileExistsError(17, "File exists", path)
        real_mkdir(path, mode)

    monkeypatch.setattr(paths.os, "mkdir", racing_mkdir)
    paths.ensure_dir(target, user)
    assert os.stat(f"{home_dir}/raced").st_uid == 0
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)


def test_nothing_is_created_for_the_user_through_a_link_to_a_root_directory(envd_sandbox, home_dir, tmp_path) -> None:
    """`user` plants `~/d -> <root-owned dir>`: MakeDir and writes through it would
    hand the user new objects where they may not write; both refuse (compose too:
    test_files_compose)."""
    victim = tmp_path / "root-only"
    victim.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    link = users_link_to(home_dir, str(victim))
    with pytest.raises(SandboxException, match="may not create"):
        envd_sandbox.files.make_dir(f"{link}/new/deeper")
    with pytest.raises(SandboxException, match="may not create"):
        envd_sandbox.files.write(f"{link}/job", "* * * * * root evil")
    assert os.listdir(victim) == []


def test_links_to_where_the_user_may_write_still_work(envd_sandbox, home_dir) -> None:
    real = f"{home_dir}/real"
    envd_sandbox.files.make_dir(real)
    link = users_link_to(home_dir, real)
    envd_sandbox.files.make_dir(f"{link}/new")
    envd_sandbox.files.write(f"{link}/f.txt", "ok")
    for path in (f"{real}/new", f"{real}/f.txt"):
        assert os.stat(path).st_uid == user_ids()[0], path

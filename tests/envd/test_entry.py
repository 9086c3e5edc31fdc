"""EntryInfo building and Go's mode string (docs/envd-api.md §4.3, §4.3.1), in process."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from envd.filesystem.entry import SYMLINK_FLAG_ENV, build_entry, go_mode_string
from envd.proto.filesystem_pb2 import FileType


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (stat.S_IFREG | 0o644, "-rw-r--r--"),
        (stat.S_IFREG | 0o000, "----------"),
        (stat.S_IFDIR | 0o755, "drwxr-xr-x"),
        (stat.S_IFLNK | 0o777, "Lrwxrwxrwx"),
        (stat.S_IFDIR | 0o1777, "dtrwxrwxrwx"),
        (stat.S_IFREG | 0o4755, "urwxr-xr-x"),
        (stat.S_IFREG | 0o6755, "ugrwxr-xr-x"),
        (stat.S_IFREG | 0o2644, "grw-r--r--"),
        (stat.S_IFCHR | 0o666, "Dcrw-rw-rw-"),
        (stat.S_IFBLK | 0o660, "Drw-rw----"),
        (stat.S_IFIFO | 0o644, "prw-r--r--"),
        (stat.S_IFSOCK | 0o777, "Srwxrwxrwx"),
        (stat.S_IFDIR | 0o3775, "dgtrwxrwxr-x"),
    ],
)
def test_go_mode_string(mode: int, expected: str) -> None:
    assert go_mode_string(mode) == expected


def test_real_special_files() -> None:
    assert build_entry("/dev/null").permissions == "Dcrw-rw-rw-"
    assert build_entry("/tmp").permissions.startswith("dt")


def test_regular_file(tmp_path) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"hello world!!")
    os.chmod(path, 0o4644)
    entry = build_entry(str(path))
    assert entry.name == "file.txt"
    assert entry.path == str(path)
    assert entry.type == FileType.FILE_TYPE_FILE
    assert entry.size == 13
    assert entry.mode == 0o644  # permission bits only, setuid dropped
    assert entry.permissions == "urw-r--r--"
    assert entry.owner == "root" and entry.group == "root"
    assert entry.modified_time.ToNanoseconds() == os.lstat(path).st_mtime_ns
    assert not entry.HasField("symlink_target")
    assert not entry.is_symlink


def test_directory_and_root(tmp_path) -> None:
    os.chmod(tmp_path, 0o750)
    entry = build_entry(str(tmp_path))
    assert (entry.type, entry.mode, entry.permissions) == (FileType.FILE_TYPE_DIRECTORY, 0o750, "drwxr-x---")
    assert build_entry("/").name == "/"


def test_symlink_to_file_reports_the_resolved_target(tmp_path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("x")
    os.chmod(target, 0o600)
    (tmp_path / "hop").symlink_to("real.txt")
    (tmp_path / "link").symlink_to("hop")
    entry = build_entry(str(tmp_path / "link"))
    assert entry.symlink_target == str(target)  # the whole chain resolved
    assert entry.type == FileType.FILE_TYPE_FILE
    assert entry.mode == 0o600
    assert entry.permissions == "Lrwxrwxrwx"
    assert entry.path == str(tmp_path / "link")
    assert entry.size == len("hop")


def test_symlink_to_directory(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "ld").symlink_to(tmp_path / "d")
    entry = build_entry(str(tmp_path / "ld"))
    assert (entry.type, entry.symlink_target) == (FileType.FILE_TYPE_DIRECTORY, str(tmp_path / "d"))


def test_dangling_symlink_points_at_itself(tmp_path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    entry = build_entry(str(tmp_path / "dangling"))
    assert entry.symlink_target == str(tmp_path / "dangling")
    assert (entry.type, entry.mode) == (FileType.FILE_TYPE_UNSPECIFIED, 0)


def test_is_symlink_switch(tmp_path, monkeypatch) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to("f")
    assert not build_entry(str(tmp_path / "l")).is_symlink
    monkeypatch.setenv(SYMLINK_FLAG_ENV, "1")
    entry = build_entry(str(tmp_path / "l"))
    assert entry.is_symlink and entry.type == FileType.FILE_TYPE_FILE
    assert not build_entry(str(tmp_path / "f")).is_symlink


def test_fifo_and_socket_have_no_type(tmp_path) -> None:
    os.mkfifo(tmp_path / "fifo", 0o644)
    entry = build_entry(str(tmp_path / "fifo"))
    assert (entry.type, entry.permissions) == (FileType.FILE_TYPE_UNSPECIFIED, "prw-r--r--")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert build_entry(str(tmp_path / "sock")).permissions.startswith("S")


def test_metadata_only_from_the_e2b_namespace(tmp_path) -> None:
    path = tmp_path / "m"
    path.write_text("x")
    os.setxattr(path, "user.e2b.author", b"me")
    os.setxattr(path, "user.other", b"no")
    os.setxattr(path, "user.e2b.bad", b"\xff\xfe")  # not UTF-8: skipped
    assert dict(build_entry(str(path)).metadata) == {"author": "me"}


def test_missing_path_raises_file_not_found(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        build_entry(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):  # only ENOENT is "not found"
        build_entry(str(tmp_path / "file" / "child"))

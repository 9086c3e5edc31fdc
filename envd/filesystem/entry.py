"""`EntryInfo` for a path, exactly as envd builds it (docs/envd-api.md §4.3, §4.3.1).

The SDK tests check these fields literally (Go's mode string, permission-only
`mode`, the resolved symlink target), so this mirrors Go rather than `ls`.
"""

from __future__ import annotations

import functools
import grp
import os
import posixpath
import pwd
import stat
from collections.abc import Callable

from envd.filesystem.metadata import read_metadata
from envd.proto.filesystem_pb2 import EntryInfo, FileType

#: Env switch for EntryInfo.is_symlink (field 12, docs/envd-api.md §4.3.2). Off = envd 0.6.13.
SYMLINK_FLAG_ENV = "ENVD_REPORT_IS_SYMLINK"

# Go's fs.FileMode letters in their fixed order; `a`, `l`, `T` never occur on Linux.
_TYPE_LETTERS: tuple[tuple[str, Callable[[int], bool]], ...] = (
    ("d", lambda m: stat.S_ISDIR(m)),
    ("L", lambda m: stat.S_ISLNK(m)),
    ("D", lambda m: stat.S_ISBLK(m) or stat.S_ISCHR(m)),
    ("p", lambda m: stat.S_ISFIFO(m)),
    ("S", lambda m: stat.S_ISSOCK(m)),
    ("u", lambda m: bool(m & stat.S_ISUID)),
    ("g", lambda m: bool(m & stat.S_ISGID)),
    ("c", lambda m: stat.S_ISCHR(m)),
    ("t", lambda m: bool(m & stat.S_ISVTX)),
    ("?", lambda m: _unknown_type(m)),
)


@functools.lru_cache(maxsize=1024)
def go_mode_string(mode: int) -> str:
    """Go's `fs.FileMode.String()` of an lstat mode: `-rw-r--r--`, `dtrwxrwxrwx`, `Lrwxrwxrwx`.

    Special bits are prefix letters and never replace an `x` (unlike `ls`).
    """
    prefix = "".join(letter for letter, test in _TYPE_LETTERS if test(mode)) or "-"
    perms = "".join(char if mode & (1 << (8 - i)) else "-" for i, char in enumerate("rwxrwxrwx"))
    return prefix + perms


def _unknown_type(mode: int) -> bool:
    kind = stat.S_IFMT(mode)
    return kind not in (
        stat.S_IFREG,
        stat.S_IFDIR,
        stat.S_IFLNK,
        stat.S_IFBLK,
        stat.S_IFCHR,
        stat.S_IFIFO,
        stat.S_IFSOCK,
    )


def file_type(mode: int) -> FileType:
    """FILE and DIRECTORY only; FIFOs, sockets and devices are UNSPECIFIED (SDK drops them)."""
    if stat.S_ISREG(mode):
        return FileType.FILE_TYPE_FILE
    if stat.S_ISDIR(mode):
        return FileType.FILE_TYPE_DIRECTORY
    return FileType.FILE_TYPE_UNSPECIFIED


def printable(text: str) -> str:
    """`text` as valid UTF-8 for a protobuf string field.

    File names are bytes; Python decodes the undecodable ones with
    surrogateescape, which protobuf refuses. Such bytes become U+FFFD, as
    Go's JSON encoder shows them upstream.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "replace").decode("utf-8")


def build_entry(path: str) -> EntryInfo:
    """EntryInfo of `path` itself (lstat). Raises FileNotFoundError or another OSError."""
    st = os.lstat(path)
    entry = EntryInfo(
        name=printable(posixpath.basename(path.rstrip("/")) or "/"),
        path=printable(path),
        size=st.st_size,
        permissions=go_mode_string(st.st_mode),
        owner=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
    )
    if st.st_mtime_ns:
        entry.modified_time.FromNanoseconds(st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        _describe_symlink(entry, path)
    else:
        entry.type = file_type(st.st_mode)
        entry.mode = stat.S_IMODE(st.st_mode) & 0o777
    metadata = read_metadata(path)
    if metadata:
        entry.metadata.update(metadata)
    return entry


def _describe_symlink(entry: EntryInfo, path: str) -> None:
    """Type and mode of what the link points to; the target fully resolved."""
    try:
        target = os.path.realpath(path, strict=True)
        st = os.stat(target)
    except (OSError, RuntimeError, ValueError):
        # Dangling or looping: upstream reports the link itself, type unknown.
        entry.symlink_target = printable(path)
    else:
        entry.symlink_target = printable(target)
        entry.type = file_type(st.st_mode)
        entry.mode = stat.S_IMODE(st.st_mode) & 0o777
    if os.environ.get(SYMLINK_FLAG_ENV, "").lower() in ("1", "true", "yes"):
        entry.is_symlink = True


def _user_name(uid: int) -> str:
    return _cached_name(_USER_NAMES, uid, lambda: pwd.getpwuid(uid).pw_name)


def _group_name(gid: int) -> str:
    return _cached_name(_GROUP_NAMES, gid, lambda: grp.getgrgid(gid).gr_name)


# Names seen once are kept (a listing of 10,000 files would otherwise read
# /etc/passwd 10,000 times); unknown ids are not, so a user added later shows up.
_USER_NAMES: dict[int, str] = {}
_GROUP_NAMES: dict[int, str] = {}


def _cached_name(cache: dict[int, str], ident: int, lookup: Callable[[], str]) -> str:
    name = cache.get(ident)
    if name is None:
        try:
            name = cache[ident] = lookup()
        except KeyError:
            return str(ident)
    return name

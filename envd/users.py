"""Users, credentials and path resolution (docs/envd-api.md §2.1 to §2.3).

The daemon does all file work as root; a "user" only decides how paths
resolve, who owns what the daemon creates, and the credentials of processes.
"""

from __future__ import annotations

import os
import posixpath
import pwd
from dataclasses import dataclass


class UserError(Exception):
    """The request named a user we cannot act as (Connect `unauthenticated`)."""


class PathError(Exception):
    """A path that cannot be resolved for the user (Connect `invalid_argument`)."""


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    def groups(self) -> list[int]:
        """Primary plus supplementary group ids, as `initgroups` would set them."""
        return _GROUP_LISTS.get(self.name, self.gid)


class _GroupLists:
    """`getgrouplist` answers, kept until /etc/group changes.

    Every process start asks, and `getgrouplist` walks each NSS source
    (124 us here, a tenth of the daemon's CPU per `commands.run`).
    """

    def __init__(self) -> None:
        self._stamp: tuple[int, int, int] | None = None
        self._lists: dict[tuple[str, int], list[int]] = {}

    def get(self, name: str, gid: int) -> list[int]:
        stamp = _stamp("/etc/group")
        if stamp != self._stamp:
            self._stamp, self._lists = stamp, {}
        found = self._lists.get((name, gid))
        if found is None:
            found = self._lists[(name, gid)] = os.getgrouplist(name, gid)
        return list(found)


_GROUP_LISTS = _GroupLists()


def _stamp(path: str) -> tuple[int, int, int] | None:
    """What changes whenever the file is rewritten: mtime, inode, size."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


def lookup_user(name: str) -> User:
    """Look a user up in the system database; raises `UserError` if unknown."""
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        raise UserError(f"invalid username: '{name}'") from None
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def resolve_path(path: str, user: User, default_workdir: str = "") -> str:
    """Resolve a request path for `user` (docs/envd-api.md §2.3).

    Empty → default workdir; `~` → home; absolute paths are returned as given
    (upstream does not clean them); relative paths are joined onto the home.
    """
    if "\0" in path:
        raise PathError(f"invalid path '{path}': contains a NUL byte")
    if path == "" and default_workdir:
        path = default_workdir
    if path.startswith("~"):
        rest = path[1:]
        if rest and rest[0] not in "/\\":
            raise PathError(
                f"failed to expand path '{path}' for user '{user.name}': cannot expand user-specific home dir"
            )
        path = posixpath.normpath(posixpath.join(user.home, rest.lstrip("/\\")))
    if posixpath.isabs(path):
        return path
    return posixpath.normpath(posixpath.join(user.home, path))

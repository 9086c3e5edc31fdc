"""Filesystem operations shared by the RPCs and `/files`: mkdir -p, rm -rf, listing.

They run as root and only hand ownership of what they create to the acting
user (docs/envd-api.md §2.2); errors are plain OSErrors for the callers to map.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator

from envd.users import User


class NotADirectoryComponent(OSError):
    """An existing path component is not a directory (`path is a file: <c>`)."""

    def __init__(self, component: str) -> None:
        super().__init__(errno.ENOTDIR, f"path is a file: {component}")
        self.component = component

    def __str__(self) -> str:
        return f"path is a file: {self.component}"


def ensure_dir(path: str, user: User) -> None:
    """`mkdir -p path` (0755, umask applies), each created directory owned by `user`.

    MakeDir (docs/envd-api.md §4.5 step 3): every component that was missing
    is created and given to the user; components that existed before are left
    untouched, and so is one a concurrent creator made first (EEXIST): the
    daemon never changes the ownership of what it did not create.
    """
    try:
        for directory in _missing_components(path):
            check_creatable(posixpath.dirname(directory), user)
            _make_owned_dir(directory, user)
        is_directory = os.path.isdir(path)  # `path` itself may exist as a non-directory
    except (NotADirectoryError, FileExistsError):
        is_directory = False
    if not is_directory:
        raise NotADirectoryComponent(_first_non_directory(path) or path)


def check_creatable(directory: str, user: User) -> None:
    """Refuse to create in `directory` for `user` when a symlink leads somewhere they may not write.

    Paths are followed as root (upstream semantics), so a link the user
    planted (`~/d -> /etc`) would otherwise let them own new objects in
    places they cannot write. A path the client named without links keeps
    upstream's behaviour: the client chose it.
    """
    if user.uid == 0:
        return
    real = os.path.realpath(directory)
    if real == posixpath.normpath(directory):
        return
    try:
        st = os.stat(real)
    except OSError:
        return  # nothing there to create in: the creation itself reports it
    if not _may_write(st, user):
        raise PermissionError(
            errno.EACCES,
            f"{directory} leads through a symlink to {real}, where {user.name} may not create files",
        )


def _may_write(st: os.stat_result, user: User) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in user.groups():
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def _make_owned_dir(directory: str, user: User) -> None:
    """Create `directory` and give it to `user` through a descriptor of what was created.

    The descriptor is opened without following links, so a swap between
    mkdir and chown cannot redirect the chown.
    """
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, user.uid, user.gid)
    finally:
        os.close(fd)


def _missing_components(path: str) -> list[str]:
    """The components of `path` that do not exist yet, from the root down."""
    missing: list[str] = []
    current = path
    while current and not os.path.lexists(current):
        missing.append(current)
        parent = posixpath.dirname(current)
        if parent == current:
            break
        current = parent
    missing.reverse()
    return missing


def _first_non_directory(path: str) -> str | None:
    """The first component of `path`, from the root down, that exists but is no directory."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = posixpath.join(current, part)
        if not os.path.lexists(current):
            return None
        if not os.path.isdir(current):
            return current
    return None


def remove_tree(path: str) -> None:
    """`rm -rf path` without following symlinks; a missing path is success."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, onerror=_ignore_vanished)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _ignore_vanished(function: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
    """A concurrent delete is not an error for `rm -rf`."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def walk_sorted(root: str, depth: int) -> Iterator[str]:
    """Paths under `root` relative to it: depth-first, pre-order, byte-wise by name.

    Symlinks are listed but not followed; directories at `depth` are not entered.
    Iterative, so a very deep tree cannot exhaust the interpreter's stack.
    Raises OSError if a directory cannot be read (vanished ones are skipped).
    """
    stack = [(1, "", iter(_sorted_children(root, "")))]
    while stack:
        level, relative, children = stack[-1]
        for name, is_dir in children:
            child = posixpath.join(relative, name) if relative else name
            yield child
            if is_dir and level < depth:
                entries = _sorted_children(posixpath.join(root, child), child)
                stack.append((level + 1, child, iter(entries)))
                break
        else:
            stack.pop()


def _sorted_children(directory: str, relative: str) -> list[tuple[str, bool]]:
    try:
        with os.scandir(directory) as listing:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
    except FileNotFoundError:
        if relative:
            return []
        raise
    return sorted(entries, key=lambda item: os.fsencode(item[0]))

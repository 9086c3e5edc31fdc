"""Plain helpers shared by the envd tests (their fixtures live in tests/envd/conftest.py)."""

from __future__ import annotations

import os

import psutil

#: The home of `user`, the daemon's default user, on this host.
HOME = "/home/user"

#: The access token of the secured daemons the files tests start (`--access-token`).
TOKEN = "secret-token"


def user_ids() -> tuple[int, int]:
    """uid and gid of `user`, as the owner of their home says."""
    st = os.stat(HOME)
    return st.st_uid, st.st_gid


def users_link_to(home_dir: str, target: str) -> str:
    """A symlink `<home_dir>/d -> target` owned by `user`, as they could plant it."""
    link = f"{home_dir}/d"
    os.symlink(target, link)
    os.lchown(link, *user_ids())
    return link


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for the subreaper."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

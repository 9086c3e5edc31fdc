"""Turning a `StartRequest` into a running child: environment, cwd, credentials, stdio (docs/envd-api.md §5.4).

Every child leads its own session and process group, so signals can reach
the whole tree (a deliberate departure from upstream, see
docs/envd-api.md §5.4 step 6). Children are spawned through asyncio, whose
child watcher reaps them the moment they exit; the daemon's subreaper never
has to step in.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import shutil
import stat
import struct
import termios
from dataclasses import dataclass, field
from typing import TypedDict

from envd.process.fdio import close_quietly
from envd.users import PathError, User, resolve_path

#: Where `PATH` comes from when the daemon itself has none.
FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIPE_READ_BYTES = 32 * 1024
PTY_READ_BYTES = 16 * 1024
#: util-linux `setpriv` and `setsid`: user switch and new session after a cheap
#: vfork (see `_as_user`); without them children are forked the slow way.
SETPRIV = shutil.which("setpriv", path=FALLBACK_PATH)
SETSID = shutil.which("setsid", path=FALLBACK_PATH)
ENV = shutil.which("env", path=FALLBACK_PATH)
#: What the dynamic loader and libc act on as a program starts: the variables
#: glibc ignores in setuid programs (its UNSECURE_ENVVARS). `setpriv` and
#: `setsid` start as root, so they never see the request's values of these;
#: `env`, already running as the user, puts them back for the program itself.
LOADER_ENV = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LD_AUDIT",
        "LD_BIND_NOT",
        "LD_BIND_NOW",
        "LD_DEBUG",
        "LD_DEBUG_OUTPUT",
        "LD_DYNAMIC_WEAK",
        "LD_HWCAP_MASK",
        "LD_LIBRARY_PATH",
        "LD_ORIGIN_PATH",
        "LD_PRELOAD",
        "LD_PROFILE",
        "LD_PROFILE_OUTPUT",
        "LD_SHOW_AUXV",
        "LD_USE_LOAD_BIAS",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_ARENA_MAX",
        "MALLOC_ARENA_TEST",
        "MALLOC_PERTURB_",
        "MALLOC_TCACHE_MAX",
        "MALLOC_TOP_PAD_",
        "MALLOC_TRACE",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_MMAP_MAX_",
        "MALLOC_MMAP_THRESHOLD_",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
    }
)


class SpawnError(Exception):
    """The request cannot be started as asked (Connect `invalid_argument`)."""


@dataclass
class OutputSource:
    """One fd the daemon reads output from, and which `DataEvent` member carries it."""

    kind: str  # "stdout" | "stderr" | "pty"
    fd: int
    max_bytes: int


@dataclass
class Spawned:
    """A started child and the daemon's ends of its stdio."""

    proc: asyncio.subprocess.Process
    sources: list[OutputSource]
    stdin_fd: int | None = None
    pty_fd: int | None = None
    owned_fds: list[int] = field(default_factory=list)


def build_env(user: User, global_envs: dict[str, str], request_envs: dict[str, str]) -> dict[str, str]:
    """The child's whole environment; later layers win (docs/envd-api.md §5.4 step 4).

    Nothing else leaks in from the daemon's own environment.
    """
    env = {"PATH": os.environ.get("PATH") or FALLBACK_PATH}
    env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    env.update(global_envs)
    env.update(request_envs)
    return env


def resolve_cwd(requested: str, user: User, default_workdir: str) -> str:
    """The working directory: as requested, else the default workdir, else home (docs/envd-api.md §5.4 step 3)."""
    try:
        cwd = resolve_path(requested, user, default_workdir)
    except PathError as exc:
        raise SpawnError(str(exc)) from None
    try:
        os.stat(cwd)
    except FileNotFoundError:
        raise SpawnError(f"cwd '{cwd}' does not exist") from None
    except OSError as exc:
        raise SpawnError(f"cwd '{cwd}': {exc.strerror}") from None
    return cwd


def set_window_size(fd: int, cols: int, rows: int) -> None:
    """`TIOCSWINSZ`; the kernel then sends SIGWINCH to the terminal's foreground group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Credentials(TypedDict, total=False):
    """What `asyncio.create_subprocess_exec` takes to start a child as another user."""

    user: int
    group: int
    extra_groups: list[int]


def _credentials(user: User) -> Credentials:
    """uid, primary gid and supplementary groups; only root can switch (tests run as root)."""
    if os.geteuid() != 0:
        return Credentials()
    return Credentials(user=user.uid, group=user.gid, extra_groups=user.groups())


Launch = tuple[list[str], dict[str, str], Credentials]


def _as_user(argv: list[str], env: dict[str, str], cwd: str, user: User) -> Launch:
    """The argv, the environment to exec it with, and the `subprocess` credentials
    that run `argv` as `user` with environment `env`.

    A child that changes uid/gid/groups after the fork keeps CPython from
    using vfork, so every spawn copies the daemon's page tables: 5 ms of
    daemon CPU and 9 ms of wall time at 150 MB RSS, more than `bash -l -c
    true` itself. util-linux's `setpriv` drops the privileges after a vfork
    instead (0.7 ms of daemon CPU), keeping the pid and the argv. When the
    program is not plainly runnable by the user, the slow path runs so that
    the exec error is reported exactly as before. The helpers start as root,
    so they are exec'd without the request's loader variables (`LOADER_ENV`).
    """
    if os.geteuid() != 0:
        return argv, env, Credentials()
    groups = user.groups()
    if (user.uid, user.gid) == (os.getuid(), os.getgid()) and set(groups) == set(os.getgroups()):
        return argv, env, Credentials()  # already that user: nothing to switch
    helper_env = {key: value for key, value in env.items() if key not in LOADER_ENV}
    loader_vars = [f"{key}={value}" for key, value in env.items() if key in LOADER_ENV]
    restorable = not loader_vars or (ENV is not None and "=" not in argv[0])
    setpriv = SETPRIV
    if setpriv is None or not restorable or not _runnable(argv[0], env, cwd, user, groups):
        return argv, env, _credentials(user)
    group_option = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    switch = [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", group_option, "--"]
    restore = [ENV, *loader_vars] if loader_vars and ENV else []
    return [*switch, *restore, *argv], helper_env, Credentials()


def _runnable(program: str, env: dict[str, str], cwd: str, user: User, groups: list[int]) -> bool:
    """Whether `execvp(program)` finds a regular file the user may execute (mode bits)."""
    if "/" in program:
        candidates = [os.path.join(cwd, program)]
    else:
        candidates = [os.path.join(d or ".", program) for d in os.get_exec_path(env)]
    for path in candidates:
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if user.uid == 0:
            allowed = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        elif info.st_uid == user.uid:
            allowed = stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = stat.S_IXGRP
        else:
            allowed = stat.S_IXOTH
        if info.st_mode & allowed:
            return True
    return False


async def spawn_pipes(argv: list[str], env: dict[str, str], cwd: str, user: User, with_stdin: bool) -> Spawned:
    """Separate stdout/stderr pipes; stdin a pipe or `/dev/null`."""
    argv, env, credentials = _as_user(argv, env, cwd, user)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if with_stdin else (None, None)
    ours = [out_r, err_r] + ([in_w] if in_w is not None else [])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=in_r if in_r is not None else asyncio.subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=cwd,
            env=env,
            start_new_session=True,
            **credentials,
        )
    except BaseException:
        for fd in ours:
            close_quietly(fd)
        raise
    finally:
        for theirs in (out_w, err_w, in_r):
            close_quietly(theirs)
    for fd in ours:
        os.set_blocking(fd, False)
    return Spawned(
        proc=proc,
        sources=[
            OutputSource("stdout", out_r, PIPE_READ_BYTES),
            OutputSource("stderr", err_r, PIPE_READ_BYTES),
        ],
        stdin_fd=in_w,
        owned_fds=ours,
    )


def _take_controlling_terminal() -> None:
    """Runs in the child after `setsid()`: make the PTY slave on fd 0 its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def spawn_pty(argv: list[str], env: dict[str, str], cwd: str, user: User, cols: int, rows: int) -> Spawned:
    """The child gets a PTY slave as fds 0-2 and controlling terminal; we keep the master.

    util-linux's `setsid --ctty` makes the new session and takes the
    terminal after a vfork; a `preexec_fn` would force a full fork of the
    daemon (see `_as_user`). Not being a group leader, it does not fork.
    """
    argv, env, credentials = _as_user(argv, env, cwd, user)
    fast = SETSID is not None and not credentials
    master, slave = pty.openpty()
    try:
        set_window_size(slave, cols, rows)
        proc = await asyncio.create_subprocess_exec(
            *([SETSID, "--ctty", *argv] if fast else argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=not fast,
            preexec_fn=None if fast else _take_controlling_terminal,
            **credentials,
        )
    except BaseException:
        close_quietly(master)
        raise
    finally:
        close_quietly(slave)
    os.set_blocking(master, False)
    return Spawned(
        proc=proc,
        sources=[OutputSource("pty", master, PTY_READ_BYTES)],
        pty_fd=master,
        owned_fds=[master],
    )

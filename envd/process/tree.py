"""Signalling everything a process started (docs/envd-api.md §5.10, this project's departure from upstream).

Each child leads its own session and process group. Signalling the group
reaches ordinary children; an interactive shell (every PTY) gives each job
its own process group inside that session, so the session is swept too.
Only a descendant that deliberately left the session (`setsid`) escapes.
"""

from __future__ import annotations

import os


def signal_tree(leader: int, signum: int) -> bool:
    """Send `signum` to the leader's process group and to every other member of its session.

    Returns whether anything was signalled; a tree that is entirely gone is
    not an error (its end event is on its way).
    """
    delivered = False
    try:
        os.killpg(leader, signum)
        delivered = True
    except ProcessLookupError:
        pass
    for pid in session_members(leader):
        try:
            os.kill(pid, signum)
            delivered = True
        except ProcessLookupError:
            pass
    return delivered


def session_members(sid: int) -> list[int]:
    """Pids whose session id is `sid`, from /proc (empty where /proc is unavailable)."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) == sid:
                members.append(pid)
        except OSError:
            continue
    return members

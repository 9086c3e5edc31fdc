"""`POST /files/compose`: concatenate files into one, then delete them (docs/envd-api.md §6.9).

Clients upload a large file in parts and join them here. The result is
assembled in a temporary file next to the destination, owned by the user,
and renamed over it only once every part is in, so a failure never leaves
a half-joined file or touches an existing destination. The sources are
deleted only after that rename. The copy runs in a thread, kernel-side
(`copy_file_range`, else `sendfile`), so parts of any size keep the event
loop free and the daemon's memory flat.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
import uuid
from typing import Any

from aiohttp import web

from envd.blocking import run_blocking
from envd.config import Config
from envd.filesystem.paths import check_creatable, ensure_dir
from envd.http.errors import TransferError, os_failure, transfer_user
from envd.users import PathError, User, resolve_path

#: `copy_file_range` cannot serve these pairs of files; `sendfile` can.
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}
_CHUNK_BYTES = 64 * 1024 * 1024


class ComposeRoutes:
    """The one compose handler; the access-token middleware guards it."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/files/compose", self.compose)]

    async def compose(self, request: web.Request) -> web.StreamResponse:
        body = await _read_body(request)
        user = self._user(body.get("username"))
        destination = self._resolve(body["destination"], user, "error resolving destination path")
        sources = [self._source(path, destination, user) for path in body["source_paths"]]
        _ensure_parent(destination, user)
        await _assemble(sources, destination, user)
        for source in sources:
            try:
                os.unlink(source)
            except OSError:
                pass  # the composed file is in place; a vanished part is no error
        return web.json_response({"path": destination, "name": posixpath.basename(destination), "type": "file"})

    def _user(self, name: Any) -> User:
        """`username` from the body, else the default user (docs/envd-api.md §2.1)."""
        return transfer_user(str(name) if name else None, self.config.default_user, "no user specified")

    def _resolve(self, path: str, user: User, what: str) -> str:
        try:
            return resolve_path(path, user, self.config.default_workdir)
        except PathError as exc:
            raise TransferError(400, f"{what}: {exc}") from None

    def _source(self, path: str, destination: str, user: User) -> str:
        resolved = self._resolve(path, user, f"error resolving source path {json.dumps(path)}")
        if resolved == destination:
            raise TransferError(400, f"source path {json.dumps(path)} cannot be the same as destination")
        try:
            info = os.stat(resolved)
        except OSError:
            raise TransferError(404, f"source file not found: {path}") from None
        if not stat.S_ISREG(info.st_mode):
            raise TransferError(400, f"source path is not a regular file: {path}")
        return resolved


async def _read_body(request: web.Request) -> dict[str, Any]:
    """`{"source_paths": [str, ...], "destination": str, "username"?: str}`, checked."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransferError(400, f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise TransferError(400, "invalid request body: expected a JSON object")
    sources = body.get("source_paths")
    if not sources:
        raise TransferError(400, "source_paths must not be empty")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise TransferError(400, "invalid request body: source_paths must be a list of strings")
    if not body.get("destination"):
        raise TransferError(400, "destination is required")
    if not isinstance(body["destination"], str):
        raise TransferError(400, "invalid request body: destination must be a string")
    return body


def _ensure_parent(destination: str, user: User) -> None:
    parent = posixpath.dirname(destination) or "/"
    try:
        ensure_dir(parent, user)
        check_creatable(parent, user)
    except PermissionError as exc:
        raise TransferError(403, str(exc)) from None
    except OSError as exc:
        raise TransferError(500, f"error ensuring directories: {exc}") from None


async def _assemble(sources: list[str], destination: str, user: User) -> None:
    """Join `sources` into a user-owned temporary file and rename it over `destination`."""
    temporary = f"{destination}.e2b-compose.{uuid.uuid4()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise os_failure(exc, "error creating destination file") from None
    try:
        try:
            os.fchown(fd, user.uid, user.gid)
        except OSError as exc:
            raise TransferError(500, f"error changing file ownership: {exc}") from None
        for source in sources:
            await run_blocking(_append, fd, source)
        os.close(fd)
        fd = -1
        try:
            os.rename(temporary, destination)
        except OSError as exc:
            raise TransferError(500, f"error finalizing compose: {exc}") from None
    except BaseException:  # errors, and a client that left: no temporary file stays
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _append(out_fd: int, source: str) -> None:
    """Copy all of `source` to the end of `out_fd`, without passing it through user space."""
    try:
        in_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TransferError(500, f"error opening source file {source}: {exc}") from None
    try:
        _copy(in_fd, out_fd)
    except OSError as exc:
        raise os_failure(exc, f"error composing source {source}") from None
    finally:
        os.close(in_fd)


def _copy(in_fd: int, out_fd: int) -> None:
    use_copy_range = hasattr(os, "copy_file_range")
    while True:
        if use_copy_range:
            try:
                copied = os.copy_file_range(in_fd, out_fd, _CHUNK_BYTES)
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                use_copy_range = False
                continue
        else:
            copied = os.sendfile(out_fd, in_fd, None, _CHUNK_BYTES)
        if copied == 0:
            return

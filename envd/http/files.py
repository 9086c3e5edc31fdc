"""`GET /files` (download) and `POST /files` (upload), docs/envd-api.md §6.7, §6.8, §6.10.

The routes authorize, find the acting user and resolve paths here; sending a
file is `download.py` (with `encoding.py` and `ranges.py`), receiving one is
`upload.py` (with `multipart.py`). Both stream, so memory stays flat.
"""

from __future__ import annotations

import os

from aiohttp import web

from envd.auth import SignatureError, check_file_access
from envd.config import Config
from envd.http.download import open_for_reading, regular_file, send_file
from envd.http.encoding import wants_gzip
from envd.http.errors import PlainBadRequest, TransferError, transfer_user
from envd.http.upload import (
    check_content_encoding,
    is_gzipped,
    receive_multipart,
    receive_raw,
    upload_metadata,
)
from envd.users import PathError, User, resolve_path


class FileRoutes:
    """The two `/files` handlers; they authorize themselves (token or signature)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/files", self.download, allow_head=False),
            web.post("/files", self.upload),
        ]

    async def download(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request, "read")
        user = self._user(request)
        path = self._resolve(request.query.get("path", ""), user)
        regular_file(path)
        gzip = wants_gzip(request)
        fd, size, mtime = open_for_reading(path)
        try:
            return await send_file(request, fd, path, size, mtime, gzip)
        finally:
            os.close(fd)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request, "write")
        check_content_encoding(request)
        user = self._user(request)
        metadata = upload_metadata(request)
        # aiohttp reports a missing Content-Type as octet-stream; upstream refuses it.
        declared = request.headers.get("Content-Type", "").strip()
        media_type = request.content_type.lower() if declared else ""
        if media_type == "application/octet-stream":
            written = [await receive_raw(request, user, metadata, self._resolve)]
        elif media_type.startswith("multipart/"):
            if is_gzipped(request):  # no SDK sends it; say so rather than misread it
                raise TransferError(400, "gzip-encoded multipart uploads are not supported")
            written = await receive_multipart(request, user, metadata, self._resolve)
        else:
            raise TransferError(
                400,
                f"unsupported content type: {request.headers.get('Content-Type', '')}, "
                "expected multipart/form-data or application/octet-stream",
            )
        return web.json_response(written)

    # -- request prelude ---------------------------------------------------

    def _authorize(self, request: web.Request, operation: str) -> None:
        query = {key: request.query.getone(key) for key in request.query.keys()}
        try:
            check_file_access(self.config.access_token, request.headers.get("X-Access-Token"), query, operation)
        except SignatureError as exc:
            raise TransferError(401, str(exc)) from None
        except ValueError:
            raise PlainBadRequest(
                "Invalid format for parameter signature_expiration: "
                f"{query.get('signature_expiration')!r} is not an integer"
            ) from None

    def _user(self, request: web.Request) -> User:
        """`username` if present (even empty), else the default user (docs/envd-api.md §2.1)."""
        return transfer_user(request.query.get("username"), self.config.default_user, "username not provided")

    def _resolve(self, path: str, user: User) -> str:
        try:
            return resolve_path(path, user, self.config.default_workdir)
        except PathError as exc:
            raise TransferError(400, f"error expanding and resolving path '{path}': {exc}") from None

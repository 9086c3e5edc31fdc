"""Receiving `POST /files` (docs/envd-api.md §6.8): the request's body or parts, and
writing each file with upstream's exact syscall order.

The order is observable: a watcher of the directory must see exactly CREATE
(open O_CREAT), CHMOD (fchown) and WRITE (one write(2)) for a small new file.
So the file is written in place, not through a temporary file and a rename
(see docs/envd-api.md §6.8 step 7.7); instead a failed or interrupted upload
removes the target, so no partial file is ever left behind.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import BodyPartReader, web

from envd.blocking import run_blocking
from envd.filesystem.metadata import MetadataError, metadata_from_headers, read_metadata, replace_metadata
from envd.filesystem.paths import check_creatable, ensure_dir
from envd.http.errors import BodyError, TransferError, os_failure
from envd.http.multipart import disposition_params, filename_of
from envd.users import User

#: Bytes gathered before one write(2): a small body is written in one call.
WRITE_BUFFER_BYTES = 1024 * 1024
#: Bytes read from the request at a time (a gzip body inflates at most this much per step).
READ_CHUNK_BYTES = 256 * 1024
#: Below this a write is quick enough to do on the event loop.
INLINE_WRITE_BYTES = 64 * 1024


class FileUpload:
    """One target file: `open`, `write` chunks, then `finish` or `abort`."""

    def __init__(self, path: str, user: User) -> None:
        self.path = path
        self.user = user
        self._fd: int | None = None
        self._buffer = bytearray()

    def open(self) -> None:
        """Parent directories, type check, open, ownership (docs/envd-api.md §6.8 steps 7.1 to 7.5).

        A new file is created without following a final symlink (so a
        dangling link planted by the user cannot make the daemon create a
        file elsewhere) and given to the user through the descriptor. An
        existing file is rewritten through links, as upstream, but keeps its
        owner: the daemon never changes the ownership of what it did not
        create. Where the owner already is the user, the no-op chown still
        runs, keeping upstream's event order (CHMOD before WRITE).
        """
        parent = posixpath.dirname(self.path) or "/"
        try:
            ensure_dir(parent, self.user)
            if not os.path.lexists(self.path):
                check_creatable(parent, self.user)
        except PermissionError as exc:
            raise TransferError(403, str(exc)) from None
        except OSError as exc:  # NotADirectoryComponent included: same answer
            raise TransferError(500, f"error ensuring directories: {exc}") from None
        self._check_target()
        fd, created = self._open_target()
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise TransferError(400, _not_regular(self.path, st.st_mode))
            os.set_blocking(fd, True)
            if created or (st.st_uid, st.st_gid) == (self.user.uid, self.user.gid):
                self._chown(fd)
            if not created:
                os.ftruncate(fd, 0)
        except BaseException as exc:
            os.close(fd)
            if created:
                _unlink_quietly(self.path)
            if isinstance(exc, OSError):
                raise os_failure(exc, "error opening file") from None
            raise  # a special file is not ours to remove, nor is an existing file
        self._fd = fd

    def _open_target(self) -> tuple[int, bool]:
        """The target's descriptor, and whether this open created it.

        O_NONBLOCK: opening a FIFO (swapped in after the check) never blocks.
        """
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
                return fd, True
            except FileExistsError:
                return os.open(self.path, flags), False
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO without a reader
                raise TransferError(400, _not_regular(self.path, stat.S_IFIFO)) from None
            if exc.errno == errno.ENOENT:  # a dangling symlink: nothing to create through it
                raise TransferError(400, f"path is a symlink to nothing: {self.path}") from None
            raise os_failure(exc, "error opening file", no_space="not enough inodes available") from None

    def _check_target(self) -> None:
        """A directory or special file there is the client's mistake: say so clearly."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TransferError(500, f"error getting file info: {exc}") from None
        if stat.S_ISDIR(st.st_mode):
            raise TransferError(400, f"path is a directory: {self.path}")
        if not stat.S_ISREG(st.st_mode):
            raise TransferError(400, _not_regular(self.path, st.st_mode))

    def _chown(self, fd: int) -> None:
        try:
            os.fchown(fd, self.user.uid, self.user.gid)
        except OSError as exc:
            raise TransferError(500, f"error changing file ownership: {exc}") from None

    async def write(self, chunk: bytes) -> None:
        """Buffer `chunk`; write out whenever a full buffer has gathered."""
        self._buffer += chunk
        if len(self._buffer) >= WRITE_BUFFER_BYTES:
            await self._flush()

    async def finish(self, metadata: Mapping[str, str]) -> dict[str, Any]:
        """Write the rest, replace the metadata, close; return the JSON entry."""
        await self._flush()
        assert self._fd is not None
        try:
            replace_metadata(self._fd, metadata)
        except OSError as exc:
            raise os_failure(
                exc, "error setting file metadata", no_space="not enough space for file metadata"
            ) from None
        stored = read_metadata(self._fd)
        self._close()
        entry: dict[str, Any] = {
            "path": self.path,
            "name": posixpath.basename(self.path),
            "type": "file",
        }
        if stored:
            entry["metadata"] = stored
        return entry

    def abort(self) -> None:
        """Close and remove the target: a missing file is more honest than half a file."""
        self._close()
        _unlink_quietly(self.path)

    async def _flush(self) -> None:
        if not self._buffer:
            return
        assert self._fd is not None
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            if len(data) <= INLINE_WRITE_BYTES:
                _write_all(self._fd, data)
            else:
                await run_blocking(_write_all, self._fd, data)
        except OSError as exc:
            raise os_failure(exc, "error writing file") from None

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _not_regular(path: str, mode: int) -> str:
    kind = (
        "named pipe"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else "character device"
        if stat.S_ISCHR(mode)
        else "block device"
        if stat.S_ISBLK(mode)
        else "special file"
    )
    return f"path is not a regular file (it is a {kind}): {path}"


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    """write(2) until everything is on disk; one call in the normal case."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- reading the request ----------------------------------------------------

#: Resolves a requested path for the acting user (TransferError 400 if it cannot).
Resolver = Callable[[str, User], str]


async def receive_raw(request: web.Request, user: User, metadata: dict[str, str], resolve: Resolver) -> dict[str, Any]:
    """An `application/octet-stream` body, written to `?path=`."""
    raw_path = request.query.get("path")
    if not raw_path:
        raise TransferError(400, "path query parameter is required for raw body upload")
    target = resolve(raw_path, user)
    return await write_file(target, user, metadata, body_chunks(request))


async def receive_multipart(
    request: web.Request, user: User, metadata: dict[str, str], resolve: Resolver
) -> list[dict[str, Any]]:
    """Every `file` part, in order; a later failure keeps earlier files."""
    query_path = request.query.get("path")
    written: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            disposition = disposition_params(part.headers.get("Content-Disposition", ""))
            if disposition.get("name") != "file":
                continue
            name = query_path if query_path is not None else filename_of(disposition)
            if name is None:
                raise TransferError(400, "missing filename in multipart part and no path given")
            target = resolve(name, user)
            if target in seen:
                raise TransferError(
                    400,
                    f"you cannot upload multiple files to the same path '{target}' in one "
                    "upload request, only the first specified file was uploaded",
                )
            seen.add(target)
            written.append(await write_file(target, user, metadata, part_chunks(part)))
    except (ValueError, AssertionError) as exc:
        raise BodyError(400, f"error parsing multipart request: {exc}") from None
    return written


def check_content_encoding(request: web.Request) -> None:
    """aiohttp already gunzips the body; only refuse what upstream refuses."""
    value = request.headers.get("Content-Encoding", "")
    if value.strip().lower() not in ("", "identity", "gzip"):
        raise TransferError(
            400,
            f"error decompressing request body: unsupported Content-Encoding: {value}, supported: [gzip]",
        )


def upload_metadata(request: web.Request) -> dict[str, str]:
    try:
        return metadata_from_headers(request.headers)
    except MetadataError as exc:
        raise TransferError(400, f"invalid metadata: {exc}") from None


def is_gzipped(request: web.Request) -> bool:
    return request.headers.get("Content-Encoding", "").strip().lower() == "gzip"


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The decoded upload body, chunk by chunk.

    The server runs with aiohttp's `auto_decompress` off, so gzip is decoded
    here, where a truncated stream is an error instead of a short file.
    """
    chunks = request.content.iter_chunked(READ_CHUNK_BYTES)
    if not is_gzipped(request):
        async for chunk in chunks:
            yield chunk
        return
    decompressor = zlib.decompressobj(31)
    async for chunk in chunks:
        while chunk:
            yield decompressor.decompress(chunk, READ_CHUNK_BYTES)  # bounded: no zip bomb
            chunk = decompressor.unconsumed_tail
    if not decompressor.eof:
        raise ValueError("unexpected end of gzip stream")


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK_BYTES):
        yield chunk
    if not part.at_eof():  # the body ended before the part's boundary
        raise ValueError("multipart body ends in the middle of a part")


async def write_file(target: str, user: User, metadata: dict[str, str], chunks: AsyncIterator[bytes]) -> dict[str, Any]:
    """Stream `chunks` into `target`; on any failure remove what was written."""
    upload = FileUpload(target, user)
    upload.open()
    try:
        async for chunk in chunks:
            await upload.write(chunk)
        return await upload.finish(metadata)
    except TransferError:
        upload.abort()
        raise
    except Exception as exc:  # body cut off, bad gzip, broken multipart
        upload.abort()
        raise BodyError(400, f"error reading request body: {exc}") from None
    except BaseException:  # cancelled: the client went away mid-body
        upload.abort()
        raise

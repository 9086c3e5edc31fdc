"""`GET /files` (download) and `POST /files` (upload), docs/envd-api.md §6.7, §6.8, §6.10.

Both stream: uploads go to disk in bounded chunks, downloads are read in a
thread chunk by chunk, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import posixpath
import re
import stat
import uuid
import zlib
from collections.abc import AsyncIterator
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web

from envd.auth import SignatureError, check_file_access
from envd.blocking import run_blocking
from envd.config import Config
from envd.filesystem.metadata import MetadataError, metadata_from_headers
from envd.http.errors import TransferError, http_error, transfer_user
from envd.http.upload import FileUpload
from envd.users import PathError, User, resolve_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
GZIP_LEVEL = 6
_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
_TOKEN_SPECIALS = set('()<>@,;:\\"/[]?= ')


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
        try:
            self._authorize(request, "read")
            user = self._user(request)
            path = self._resolve(request.query.get("path", ""), user)
            _regular_file(path)
            gzip = _negotiate(request)
            fd, size, mtime = _open_for_reading(path)
        except TransferError as exc:
            return http_error(exc.status, exc.message)
        except _PlainBadRequest as exc:
            return web.Response(status=400, text=str(exc))
        try:
            return await _send_file(request, fd, path, size, mtime, gzip)
        finally:
            os.close(fd)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authorize(request, "write")
            _check_content_encoding(request)
            user = self._user(request)
            metadata = _metadata(request)
            # aiohttp reports a missing Content-Type as octet-stream; upstream refuses it.
            declared = request.headers.get("Content-Type", "").strip()
            media_type = request.content_type.lower() if declared else ""
            if media_type == "application/octet-stream":
                written = [await self._upload_raw(request, user, metadata)]
            elif media_type.startswith("multipart/"):
                if _is_gzipped(request):  # no SDK sends it; say so rather than misread it
                    raise TransferError(400, "gzip-encoded multipart uploads are not supported")
                written = await self._upload_multipart(request, user, metadata)
            else:
                raise TransferError(
                    400,
                    f"unsupported content type: {request.headers.get('Content-Type', '')}, "
                    "expected multipart/form-data or application/octet-stream",
                )
        except BodyError as exc:
            return _close_after(request, http_error(exc.status, exc.message))
        except TransferError as exc:
            return http_error(exc.status, exc.message)
        except _PlainBadRequest as exc:
            return web.Response(status=400, text=str(exc))
        return web.json_response(written)

    # -- request prelude ---------------------------------------------------

    def _authorize(self, request: web.Request, operation: str) -> None:
        query = {key: request.query.getone(key) for key in request.query.keys()}
        try:
            check_file_access(
                self.config.access_token, request.headers.get("X-Access-Token"), query, operation
            )
        except SignatureError as exc:
            raise TransferError(401, str(exc)) from None
        except ValueError:
            raise _PlainBadRequest(
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

    # -- uploads -------------------------------------------------------------

    async def _upload_raw(
        self, request: web.Request, user: User, metadata: dict[str, str]
    ) -> dict[str, Any]:
        raw_path = request.query.get("path")
        if not raw_path:
            raise TransferError(400, "path query parameter is required for raw body upload")
        target = self._resolve(raw_path, user)
        return await _write_file(target, user, metadata, _body_chunks(request))

    async def _upload_multipart(
        self, request: web.Request, user: User, metadata: dict[str, str]
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
                disposition = _disposition_params(part.headers.get("Content-Disposition", ""))
                if disposition.get("name") != "file":
                    continue
                name = query_path if query_path is not None else _filename(disposition)
                if name is None:
                    raise TransferError(400, "missing filename in multipart part and no path given")
                target = self._resolve(name, user)
                if target in seen:
                    raise TransferError(
                        400,
                        f"you cannot upload multiple files to the same path '{target}' in one "
                        "upload request, only the first specified file was uploaded",
                    )
                seen.add(target)
                written.append(await _write_file(target, user, metadata, _part_chunks(part)))
        except (ValueError, AssertionError) as exc:
            raise BodyError(400, f"error parsing multipart request: {exc}") from None
        return written


class BodyError(TransferError):
    """The request body itself is broken; the connection cannot be reused."""


class _PlainBadRequest(Exception):
    """A parameter-binding failure, which upstream answers with plain text."""


def _close_after(request: web.Request, response: web.Response) -> web.Response:
    """Answer a broken body and drop the connection.

    Marking the payload finished stops aiohttp from draining it after the
    handler, which would re-raise the body's error as an unhandled exception.
    """
    response.force_close()
    request.content.feed_eof()
    return response


def _check_content_encoding(request: web.Request) -> None:
    """aiohttp already gunzips the body; only refuse what upstream refuses."""
    value = request.headers.get("Content-Encoding", "")
    if value.strip().lower() not in ("", "identity", "gzip"):
        raise TransferError(
            400,
            f"error decompressing request body: unsupported Content-Encoding: {value}, "
            "supported: [gzip]",
        )


def _metadata(request: web.Request) -> dict[str, str]:
    try:
        return metadata_from_headers(request.headers)
    except MetadataError as exc:
        raise TransferError(400, f"invalid metadata: {exc}") from None


def _filename(params: dict[str, str]) -> str | None:
    """The part's `filename` exactly as sent, directories and leading `/` included.

    aiohttp's own parser strips leading slashes (the SDKs send absolute
    paths there) and gives up on several `;` inside quotes, so parse like Go's
    mime.ParseMediaType: quoted strings with backslash escapes, RFC 2231 `filename*`.
    """
    extended = params.get("filename*")
    if extended is not None and extended.count("'") >= 2:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return unquote(encoded, charset or "utf-8", "strict")
        except (LookupError, UnicodeDecodeError):
            pass
    return params.get("filename")


def _disposition_params(header: str) -> dict[str, str]:
    _, _, text = header.partition(";")
    params: dict[str, str] = {}
    pos, size = 0, len(text)
    while pos < size:
        while pos < size and text[pos] in " \t;":
            pos += 1
        equals = text.find("=", pos)
        if equals < 0:
            break
        key = text[pos:equals].strip().lower()
        pos = equals + 1
        while pos < size and text[pos] in " \t":
            pos += 1
        if pos < size and text[pos] == '"':
            chars, pos = [], pos + 1
            while pos < size and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < size:
                    pos += 1
                chars.append(text[pos])
                pos += 1
            pos += 1
            value = "".join(chars)
        else:
            end = text.find(";", pos)
            end = size if end < 0 else end
            value, pos = text[pos:end].strip(), end
        params.setdefault(key, value)
    return params


def _is_gzipped(request: web.Request) -> bool:
    return request.headers.get("Content-Encoding", "").strip().lower() == "gzip"


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The decoded upload body, chunk by chunk.

    The server runs with aiohttp's `auto_decompress` off, so gzip is decoded
    here, where a truncated stream is an error instead of a short file.
    """
    chunks = request.content.iter_chunked(CHUNK_BYTES)
    if not _is_gzipped(request):
        async for chunk in chunks:
            yield chunk
        return
    decompressor = zlib.decompressobj(31)
    async for chunk in chunks:
        while chunk:
            yield decompressor.decompress(chunk, CHUNK_BYTES)  # bounded: no zip bomb
            chunk = decompressor.unconsumed_tail
    if not decompressor.eof:
        raise ValueError("unexpected end of gzip stream")


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK_BYTES):
        yield chunk
    if not part.at_eof():  # the body ended before the part's boundary
        raise ValueError("multipart body ends in the middle of a part")


async def _write_file(
    target: str, user: User, metadata: dict[str, str], chunks: AsyncIterator[bytes]
) -> dict[str, Any]:
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


# -- downloads ---------------------------------------------------------------


def _regular_file(path: str) -> tuple[int, float]:
    """Size and mtime of the file to send (following symlinks)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TransferError(404, f"path '{path}' does not exist") from None
    except OSError as exc:
        raise TransferError(500, f"error checking if path exists '{path}': {exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise TransferError(400, f"path '{path}' is a directory")
    _require_regular(path, st)
    return st.st_size, st.st_mtime


def _require_regular(path: str, st: os.stat_result) -> None:
    """Only regular files are served: reading a FIFO or a device could block forever."""
    if not stat.S_ISREG(st.st_mode):
        raise TransferError(
            400, f"path '{path}' is not a regular file (it is a {_file_kind(st.st_mode)})"
        )


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def _open_for_reading(path: str) -> tuple[int, int, float]:
    """Open without ever blocking (a FIFO swapped in after the stat would), check the
    opened file is regular, then make the descriptor blocking for the reader threads.
    Returns the fd with the size and mtime of what was actually opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TransferError(404, f"path '{path}' does not exist") from None
    except OSError as exc:
        raise TransferError(500, f"error opening file '{path}': {exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise TransferError(400, f"path '{path}' is a directory")
        _require_regular(path, st)
        os.set_blocking(fd, True)
    except TransferError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise TransferError(500, f"error opening file '{path}': {exc}") from None
    return fd, st.st_size, st.st_mtime


def _negotiate(request: web.Request) -> bool:
    """True to gzip the body. Upstream's rules: gzip or identity, by q-value."""
    conditional = any(
        h in request.headers for h in ("Range", "If-Modified-Since", "If-None-Match", "If-Range")
    )
    choice = choose_encoding(request.headers.get("Accept-Encoding"), identity_only=conditional)
    if choice is None:
        raise TransferError(
            406,
            "error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]",
        )
    return choice == "gzip"


def choose_encoding(header: str | None, identity_only: bool = False) -> str | None:
    """`gzip`, `identity`, or None when nothing acceptable (→ 406).

    Deliberately unlike upstream, gzip is used only when the client asks for
    it alone (the SDKs' `gzip=True` sends exactly `gzip`) or prefers it over
    identity: httpx adds `gzip, deflate` to every read, and compressing on
    the fly caps a loopback download at ~35 MB/s instead of ~1 GB/s.
    """
    q = dict(_parse_accept_encoding(header or ""))
    wildcard = q.get("*")
    identity_q = q.get("identity", wildcard if wildcard is not None else 1.0)
    gzip_q = q.get("gzip", wildcard if wildcard is not None else 0.0)
    if identity_only:
        return "identity" if identity_q > 0 else None
    if identity_q <= 0:
        return "gzip" if gzip_q > 0 else None
    others = {c for c, value in q.items() if value > 0 and c not in ("gzip", "identity")}
    if "gzip" in q and gzip_q > 0 and not others and gzip_q > q.get("identity", 0.0):
        return "gzip"
    return "identity"


def _parse_accept_encoding(header: str) -> list[tuple[str, float]]:
    items = []
    for raw in header.split(","):
        coding, _, params = raw.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        items.append((coding, quality))
    return items


async def _send_file(
    request: web.Request, fd: int, path: str, size: int, mtime: float, gzip: bool
) -> web.StreamResponse:
    headers = {
        "Content-Disposition": content_disposition(posixpath.basename(path)),
        "Content-Type": content_type_for(path),
        "Vary": "Accept-Encoding",
    }
    if gzip:
        response = web.StreamResponse(status=200, headers={**headers, "Content-Encoding": "gzip"})
        await response.prepare(request)
        await _stream_gzip(response, fd)
        return response
    last_modified = formatdate(mtime, usegmt=True)
    headers.update({"Accept-Ranges": "bytes", "Last-Modified": last_modified})
    if _not_modified(request, mtime):
        return web.Response(status=304, headers=headers)
    start, end = 0, size
    status = 200
    range_header = request.headers.get("Range")
    if range_header and _if_range_matches(request, last_modified):
        ranges = parse_ranges(range_header, size)
        if ranges is None:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if len(ranges) > 1:
            return await _send_ranges(request, fd, ranges, size, headers)
        if ranges:
            (start, end), status = ranges[0], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    await _stream_plain(request, response, fd, start, end)
    return response


async def _stream_plain(
    request: web.Request, response: web.StreamResponse, fd: int, start: int, end: int
) -> None:
    """The file straight from the page cache to the socket (sendfile), as aiohttp's
    FileResponse does; chunked reads where sendfile is not available.

    Content-Length was promised from the stat; if the file shrank meanwhile and
    fewer bytes went out, the connection is closed, so the client sees a
    truncated body as an error instead of waiting forever for the rest."""
    try:
        transport = request.transport
        if transport is None:
            return
        if end <= start:  # an empty file: sendfile refuses a zero count
            await response.write_eof()
            return
        with open(fd, "rb", closefd=False) as file:
            try:
                sent = await asyncio.get_running_loop().sendfile(transport, file, start, end - start)
            except NotImplementedError:
                sent = await _copy_chunks(response, fd, start, end)
        if sent < end - start:
            log.warning(
                "download of %s: file shrank during the transfer, sent %d of %d bytes; "
                "closing the connection",
                request.query.get("path", "?"),
                sent,
                end - start,
            )
            response.force_close()
            transport.close()
            return
        await response.write_eof()
    except ConnectionError:
        pass  # a streaming reader may hang up after the first chunk (docs/envd-api.md §6.7)


async def _copy_chunks(response: web.StreamResponse, fd: int, start: int, end: int) -> int:
    """Bytes sent; fewer than `end - start` if the file shrank meanwhile."""
    offset = start
    while offset < end:
        chunk = await run_blocking(os.pread, fd, min(CHUNK_BYTES, end - offset), offset)
        if not chunk:
            break  # the file shrank meanwhile
        await response.write(chunk)
        offset += len(chunk)
    return offset - start


async def _stream_gzip(response: web.StreamResponse, fd: int) -> None:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    offset = 0
    try:
        while True:
            data, read = await run_blocking(_read_compressed, fd, offset, compressor)
            offset += read
            if data:
                await response.write(data)
            if not read:
                break
        await response.write_eof()
    except ConnectionError:
        pass  # a streaming reader may hang up after the first chunk (docs/envd-api.md §6.7)


def _read_compressed(fd: int, offset: int, compressor: Any) -> tuple[bytes, int]:
    """One chunk read and compressed (in a thread); at EOF the gzip trailer."""
    chunk = os.pread(fd, CHUNK_BYTES, offset)
    if not chunk:
        return compressor.flush(), 0
    return compressor.compress(chunk), len(chunk)


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """`bytes=a-b, c-, -n` as half-open (start, end) pairs, as Go's file server reads them.

    None: unsatisfiable or malformed (416). Ranges starting past the end are
    dropped; an empty list means "send the whole file", also when the ranges
    add up to more than the file (Go's guard against amplified responses).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    ranges = []
    for item in spec.split(","):
        if not item.strip():
            continue
        match = _RANGE.match(item)
        if match is None:
            return None
        first, last = match.groups()
        if first == "":
            if last == "":
                return None
            if int(last) == 0:
                continue  # `-0`: nothing of the file
            ranges.append((max(size - int(last), 0), size))
            continue
        start = int(first)
        if last != "" and int(last) < start:
            return None
        if start >= size:
            continue  # begins past the end: does not overlap
        ranges.append((start, size if last == "" else min(int(last) + 1, size)))
    if not ranges:
        return None
    if sum(end - start for start, end in ranges) > size:
        return []
    return ranges


async def _send_ranges(
    request: web.Request, fd: int, ranges: list[tuple[int, int]], size: int, headers: dict[str, str]
) -> web.StreamResponse:
    """206 `multipart/byteranges`: one part per range, each with its Content-Range."""
    boundary = uuid.uuid4().hex
    part_type = headers["Content-Type"]
    heads = [
        (f"--{boundary}\r\n" if index == 0 else f"\r\n--{boundary}\r\n")
        + f"Content-Range: bytes {start}-{end - 1}/{size}\r\nContent-Type: {part_type}\r\n\r\n"
        for index, (start, end) in enumerate(ranges)
    ]
    closing = f"\r\n--{boundary}--\r\n"
    response = web.StreamResponse(
        status=206,
        headers={**headers, "Content-Type": f"multipart/byteranges; boundary={boundary}"},
    )
    response.content_length = (
        sum(len(head) for head in heads) + sum(end - start for start, end in ranges) + len(closing)
    )
    await response.prepare(request)
    try:
        for head, (start, end) in zip(heads, ranges, strict=True):
            await response.write(head.encode())
            if await _copy_chunks(response, fd, start, end) < end - start:
                # The file shrank: a short body must not look complete (as in _stream_plain).
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return response
        await response.write_eof(closing.encode())
    except ConnectionError:
        pass
    return response


def _not_modified(request: web.Request, mtime: float) -> bool:
    value = request.headers.get("If-Modified-Since")
    if not value or "If-None-Match" in request.headers:
        return False
    try:
        since = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= since


def _if_range_matches(request: web.Request, last_modified: str) -> bool:
    value = request.headers.get("If-Range")
    return value is None or value.strip() == last_modified


def content_type_for(path: str) -> str:
    """By extension of the requested path, as Go does; text gets `charset=utf-8`."""
    guessed, _ = mimetypes.guess_type(path, strict=False)
    if guessed is None:
        return "application/octet-stream"
    if guessed.startswith("text/"):
        return f"{guessed}; charset=utf-8"
    return guessed


def content_disposition(name: str) -> str:
    """`inline; filename=...` like Go's mime.FormatMediaType (token, quoted, or RFC 2231)."""
    if not all(ch == "\t" or 0x20 <= ord(ch) <= 0x7E for ch in name):
        return f"inline; filename*=utf-8''{quote(name, safe='')}"
    if name and all(32 < ord(ch) < 127 and ch not in _TOKEN_SPECIALS for ch in name):
        return f"inline; filename={name}"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'inline; filename="{escaped}"'

"""Sending a file for `GET /files` (docs/envd-api.md §6.7): sendfile from the page
cache, gzip on request, single ranges and `multipart/byteranges`.

Only regular files are served, opened without blocking; memory stays flat
whatever the file size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import posixpath
import socket
import stat
import uuid
import zlib
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from aiohttp import web

from envd.blocking import run_blocking
from envd.http.errors import TransferError
from envd.http.ranges import if_range_matches, not_modified, parse_ranges

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
GZIP_LEVEL = 6
_TOKEN_SPECIALS = set('()<>@,;:\\"/[]?= ')


def regular_file(path: str) -> tuple[int, float]:
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
        raise TransferError(400, f"path '{path}' is not a regular file (it is a {_file_kind(st.st_mode)})")


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


def open_for_reading(path: str) -> tuple[int, int, float]:
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


async def send_file(
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
    if not_modified(request, mtime):
        return web.Response(status=304, headers=headers)
    start, end = 0, size
    status = 200
    range_header = request.headers.get("Range")
    if range_header and if_range_matches(request, last_modified):
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


async def _stream_plain(request: web.Request, response: web.StreamResponse, fd: int, start: int, end: int) -> None:
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
        _widen_unix_send_buffer(transport)
        with open(fd, "rb", closefd=False) as file:
            try:
                sent = await asyncio.get_running_loop().sendfile(transport, file, start, end - start)
            except NotImplementedError:
                sent = await _copy_chunks(response, fd, start, end)
        if sent < end - start:
            log.warning(
                "download of %s: file shrank during the transfer, sent %d of %d bytes; closing the connection",
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


#: Send buffer of a Unix-socket connection carrying a download (the kernel doubles it).
UNIX_SEND_BUFFER_BYTES = 1 << 20


def _widen_unix_send_buffer(transport: asyncio.BaseTransport) -> None:
    """On the control plane's Unix-socket ingress, sendfile moves at most the
    socket's send buffer per wake-up of the reader; the 208 KiB default makes a
    big download cost the proxy (and any reader) about twice the wake-ups.
    TCP tunes its own buffers, so it is left alone."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER_BYTES)


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

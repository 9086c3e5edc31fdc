"""Connect streaming envelopes: 1 flag byte, 4-byte big-endian length, payload."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator

from aiohttp import StreamReader

from envd.blocking import run_blocking
from envd.connect.errors import Code, ConnectError

FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02
_HEADER = struct.Struct(">BI")

#: Upper bound for one incoming message, compressed or not, after decompression
#: too; stdin chunks and every other request are far smaller.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Below this, a message is decompressed or decoded on the event loop.
INLINE_BYTES = 256 * 1024


def encode(payload: bytes, flags: int = 0) -> bytes:
    return _HEADER.pack(flags, len(payload)) + payload


async def read_envelopes(
    stream: StreamReader, compression: str = "identity", end_stream_allowed: bool = True
) -> AsyncIterator[bytes]:
    """Yield message payloads as they arrive; stop at the body's end.

    Reads incrementally so client-streamed stdin reaches the process at once.
    A flag Connect does not define is an error. An end-stream envelope ends a
    client stream early; in a server-streaming request, whose one message
    the client sends whole, it is an error.
    """
    while True:
        header = await stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            header += await _read_exactly(stream, _HEADER.size - len(header))
        flags, length = _HEADER.unpack(header)
        if flags & ~(FLAG_COMPRESSED | FLAG_END_STREAM):
            raise ConnectError(Code.INVALID_ARGUMENT, f"protocol error: invalid envelope flags {flags:#04x}")
        if flags & FLAG_END_STREAM and not end_stream_allowed:
            raise ConnectError(Code.INVALID_ARGUMENT, "protocol error: end-stream envelope from the client")
        if length > MAX_MESSAGE_BYTES:
            raise ConnectError(Code.RESOURCE_EXHAUSTED, f"message of {length} bytes is too large")
        payload = await _read_exactly(stream, length)
        if flags & FLAG_END_STREAM:
            return
        if flags & FLAG_COMPRESSED:
            payload = await decompress(payload, compression)
        yield payload


async def _read_exactly(stream: StreamReader, size: int) -> bytes:
    try:
        return await stream.readexactly(size)
    except Exception as exc:  # IncompleteReadError, or the body was cut off
        raise ConnectError(Code.INVALID_ARGUMENT, "protocol error: incomplete envelope") from exc


async def decompress(payload: bytes, compression: str) -> bytes:
    """gunzip, refusing output beyond MAX_MESSAGE_BYTES (a small gzip bomb expands 1000x).

    Large payloads are decompressed in a thread, so the loop keeps serving.
    """
    if compression != "gzip":
        raise ConnectError(Code.UNIMPLEMENTED, f"compression {compression!r} is not supported")
    if len(payload) <= INLINE_BYTES:
        return gunzip_bounded(payload, MAX_MESSAGE_BYTES)
    return await run_blocking(gunzip_bounded, payload, MAX_MESSAGE_BYTES)


def gunzip_bounded(payload: bytes, limit: int) -> bytes:
    """All gzip members of `payload`, at most `limit` bytes of output."""
    output = bytearray()
    remaining = payload
    try:
        while remaining:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            output += inflater.decompress(remaining, limit + 1 - len(output))
            if len(output) > limit:
                raise ConnectError(Code.RESOURCE_EXHAUSTED, f"message is larger than {limit} bytes once decompressed")
            if not inflater.eof:
                raise ConnectError(Code.INVALID_ARGUMENT, "invalid gzip message: unexpected end of data")
            remaining = inflater.unused_data
    except zlib.error as exc:
        raise ConnectError(Code.INVALID_ARGUMENT, f"invalid gzip message: {exc}") from exc
    return bytes(output)

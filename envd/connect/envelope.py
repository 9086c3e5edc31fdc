"""Connect streaming envelopes: 1 flag byte, 4-byte big-endian length, payload."""

from __future__ import annotations

import gzip
import struct
from collections.abc import AsyncIterator

from aiohttp import StreamReader

from envd.connect.errors import Code, ConnectError

FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02
_HEADER = struct.Struct(">BI")

#: Upper bound for one incoming message; stdin chunks are far smaller.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def encode(payload: bytes, flags: int = 0) -> bytes:
    return _HEADER.pack(flags, len(payload)) + payload


async def read_envelopes(
    stream: StreamReader, compression: str = "identity"
) -> AsyncIterator[bytes]:
    """Yield message payloads as they arrive; stop at the body's end.

    Reads incrementally so client-streamed stdin reaches the process at once.
    """
    while True:
        header = await stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            header += await _read_exactly(stream, _HEADER.size - len(header))
        flags, length = _HEADER.unpack(header)
        if length > MAX_MESSAGE_BYTES:
            raise ConnectError(Code.RESOURCE_EXHAUSTED, f"message of {length} bytes is too large")
        payload = await _read_exactly(stream, length)
        if flags & FLAG_END_STREAM:
            return
        if flags & FLAG_COMPRESSED:
            payload = decompress(payload, compression)
        yield payload


async def _read_exactly(stream: StreamReader, size: int) -> bytes:
    try:
        return await stream.readexactly(size)
    except Exception as exc:  # IncompleteReadError, or the body was cut off
        raise ConnectError(Code.INVALID_ARGUMENT, "protocol error: incomplete envelope") from exc


def decompress(payload: bytes, compression: str) -> bytes:
    if compression != "gzip":
        raise ConnectError(
            Code.UNIMPLEMENTED, f"compression {compression!r} is not supported"
        )
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError) as exc:
        raise ConnectError(Code.INVALID_ARGUMENT, f"invalid gzip message: {exc}") from exc

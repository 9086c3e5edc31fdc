"""Raw HTTP, and the tests' one hand-written Connect client, for what the SDKs cannot send or check.

A Connect procedure is named in full, as it appears in the URL:
`filesystem.Filesystem/Stat`, `process.Process/Start`. Unary calls post a
JSON body (docs/envd-api.md §3.1); streaming calls post enveloped JSON
(`application/connect+json`) and read envelopes back until the
end-of-stream one (flag 0x02).
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

#: The envelope flag of the end-of-stream message.
END_STREAM = 0x02


def http(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain request; errors come back as (status, headers, body) too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- framing


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def _envelopes(request: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    """The body of a streaming call: one envelope per request."""
    requests = request if isinstance(request, list) else [request]
    return b"".join(envelope(r) for r in requests)


def parse_envelopes(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Messages and the end-of-stream object (None if missing) of a stream body."""
    messages: list[dict[str, Any]] = []
    end = None
    offset = 0
    while offset + 5 <= len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = json.loads(body[offset + 5 : offset + 5 + length])
        offset += 5 + length
        if flags & END_STREAM:
            end = payload
        else:
            messages.append(payload)
    return messages, end


# ---------------------------------------------------------------- calls, blocking


def unary(url: str, procedure: str, message: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """A Connect unary call with a JSON body: (status, reply).

    Bytes are sent as they are, for malformed or compressed bodies. A reply that
    is not JSON comes back as `{"raw": body}`, so the failing assertion shows it.
    """
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    status, _, raw = http(
        f"{url}/{procedure}",
        "POST",
        body,
        {"Content-Type": "application/json", **(headers or {})},
    )
    if not raw:
        return status, {}
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"raw": raw}


def stream(
    url: str,
    procedure: str,
    request: dict[str, Any] | list[dict[str, Any]] | bytes,
    headers: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One streaming call read to its end: (messages, end-of-stream object).

    A list of requests is sent as a client stream, one envelope each; bytes are
    sent as they are, for hostile envelopes.
    """
    body = request if isinstance(request, bytes) else _envelopes(request)
    status, response_headers, raw = http(
        f"{url}/{procedure}",
        "POST",
        body,
        {"Content-Type": "application/connect+json", **(headers or {})},
    )
    assert status == 200, raw
    assert response_headers["Content-Type"] == "application/connect+json"
    messages, end = parse_envelopes(raw)
    assert end is not None, "stream ended without an end-of-stream envelope"
    return messages, end


# ---------------------------------------------------------------- calls, asyncio


async def unary_async(
    session: aiohttp.ClientSession, url: str, procedure: str, message: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """`unary` through an aiohttp session, for calls made while streams run."""
    async with session.post(
        f"{url}/{procedure}", json=message, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, await response.json(content_type=None)


async def stream_async(
    session: aiohttp.ClientSession,
    url: str,
    procedure: str,
    request: dict[str, Any] | list[dict[str, Any]],
    headers: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`stream` through an aiohttp session, for calls that run side by side."""
    async with session.post(
        f"{url}/{procedure}",
        data=_envelopes(request),
        headers={"Content-Type": "application/connect+json", **(headers or {})},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/connect+json"
        messages, end = parse_envelopes(await response.read())
        assert end is not None, "stream ended without an end-of-stream envelope"
        return messages, end


class OpenStream:
    """A streaming call read message by message, for tests that interact while it runs."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.end: dict[str, Any] | None = None

    async def read_envelope(self) -> tuple[int, dict[str, Any]]:
        """The next envelope as it came: (flags, payload)."""
        header = await self.response.content.readexactly(5)
        flags, length = struct.unpack(">BI", header)
        return flags, json.loads(await self.response.content.readexactly(length))

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None once the end-of-stream envelope arrived."""
        if self.end is not None:
            return None
        flags, payload = await self.read_envelope()
        if flags & END_STREAM:
            self.end = payload
            return None
        return payload

    async def rest(self) -> list[dict[str, Any]]:
        """Every remaining message; `end` holds the end-of-stream object afterwards."""
        messages = []
        while (message := await self.next()) is not None:
            messages.append(message)
        return messages


async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    procedure: str,
    request: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> OpenStream:
    """Start a streaming call; the caller must `close()` the returned stream's response."""
    response = await session.post(
        f"{url}/{procedure}",
        data=envelope(request),
        headers={"Content-Type": "application/connect+json", **(headers or {})},
    )
    assert response.status == 200
    return OpenStream(response)


# ---------------------------------------------------------------- process.Process messages


def events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `event` of each process stream message."""
    return [m["event"] for m in messages]


def output(messages: list[dict[str, Any]], kind: str = "stdout") -> bytes:
    """The decoded `stdout` (or `stderr`, `pty`) data of process stream messages."""
    return b"".join(base64.b64decode(e["data"][kind]) for e in events(messages) if kind in e.get("data", {}))


def b64(data: bytes) -> str:
    """Bytes as the base64 a JSON `bytes` field holds."""
    return base64.b64encode(data).decode()

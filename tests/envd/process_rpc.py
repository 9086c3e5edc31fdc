"""A tiny raw Connect client for process.Process, for what the SDK cannot express.

Tags, keep-alives, exact JSON shapes, malformed requests and fast bulk
starts go through this instead of the official SDK.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import aiohttp

from tests.wire import envelope, parse_envelopes

SERVICE = "/process.Process/"


async def stream(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    request: dict[str, Any] | list[dict[str, Any]],
    headers: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One streaming call read to its end: (messages, end-of-stream object)."""
    requests = request if isinstance(request, list) else [request]
    body = b"".join(envelope(r) for r in requests)
    async with session.post(
        url + SERVICE + method,
        data=body,
        headers={"Content-Type": "application/connect+json", **(headers or {})},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/connect+json"
        messages, end = parse_envelopes(await response.read())
        assert end is not None, "stream ended without an end-of-stream envelope"
        return messages, end


async def unary(
    session: aiohttp.ClientSession, url: str, method: str, request: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        url + SERVICE + method, json=request, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, await response.json(content_type=None)


def events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `event` of each process stream message."""
    return [m["event"] for m in messages]


def output(messages: list[dict[str, Any]], kind: str = "stdout") -> bytes:
    return b"".join(
        base64.b64decode(e["data"][kind]) for e in events(messages) if kind in e.get("data", {})
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class OpenStream:
    """A streaming call read message by message, for tests that interact while it runs."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.end: dict[str, Any] | None = None

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None once the end-of-stream envelope arrived."""
        if self.end is not None:
            return None
        header = await self.response.content.readexactly(5)
        flags, length = struct.unpack(">BI", header)
        payload = json.loads(await self.response.content.readexactly(length))
        if flags & 0x02:
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
    method: str,
    request: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> OpenStream:
    """Start a streaming call; the caller must `close()` the returned stream's response."""
    response = await session.post(
        url + SERVICE + method,
        data=envelope(request),
        headers={"Content-Type": "application/connect+json", **(headers or {})},
    )
    assert response.status == 200
    return OpenStream(response)

"""Raw HTTP and Connect framing for tests of what the SDKs cannot send."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from typing import Any


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


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def parse_envelopes(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Messages and the end-of-stream object (None if missing) of a stream body."""
    messages: list[dict[str, Any]] = []
    end = None
    offset = 0
    while offset + 5 <= len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = json.loads(body[offset + 5 : offset + 5 + length])
        offset += 5 + length
        if flags & 0x02:
            end = payload
        else:
            messages.append(payload)
    return messages, end

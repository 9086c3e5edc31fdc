"""The HTTP API's error body: the integer status as `code` (spec 5.1)."""

from __future__ import annotations

import json

from aiohttp import web


def http_error(status: int, message: str) -> web.Response:
    """`{"code": <status>, "message": ...}` as Go's encoder writes it."""
    body = json.dumps({"code": status, "message": message}) + "\n"
    return web.Response(
        status=status,
        body=body.encode(),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
        },
    )

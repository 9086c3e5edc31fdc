"""The HTTP API's errors: a status-carrying exception and the body that answers it (docs/envd-api.md §6.1)."""

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


class TransferError(Exception):
    """A failed `/files` transfer, with the HTTP status and message to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

"""The HTTP API's errors: a status-carrying exception and the body that answers it (docs/envd-api.md §6.1)."""

from __future__ import annotations

import json

from aiohttp import web

from envd.permissions import NoUser, UnknownUser, acting_user
from envd.users import User


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


def transfer_user(named: str | None, default_name: str, missing: str) -> User:
    """The acting user of a `/files` route, failing as upstream words it there:
    `400 <missing>` when no user is named anywhere, `401` for an unknown one."""
    try:
        return acting_user(named, default_name)
    except NoUser:
        raise TransferError(400, missing) from None
    except UnknownUser as exc:
        raise TransferError(401, f"error looking up user '{exc.name}': user: unknown user {exc.name}") from None

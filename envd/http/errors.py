"""The HTTP API's errors, in one place (docs/envd-api.md §6.1).

Handlers raise `TransferError` (or one of its kinds) and `transfer_errors`,
the one middleware for them, answers: Go's `{"code", "message"}` body, plain
text for parameter-binding failures, and a closed connection after a broken
body. `os_failure` is the one mapping of an OSError to a status.
"""

from __future__ import annotations

import errno
import json

from aiohttp import web
from aiohttp.typedefs import Handler

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


class BodyError(TransferError):
    """The request body itself is broken; the connection cannot be reused."""


class PlainBadRequest(TransferError):
    """A parameter-binding failure, which upstream answers with plain text."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


#: errnos that mean the disk is full: `507 Insufficient Storage`.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def os_failure(exc: OSError, what: str, no_space: str = "not enough disk space available") -> TransferError:
    """`507 <no_space>` (upstream's fixed wording) for a full disk, else `500 <what>: <exc>`."""
    if exc.errno in NO_SPACE:
        return TransferError(507, no_space)
    return TransferError(500, f"{what}: {exc}")


@web.middleware
async def transfer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place a `/files` failure becomes its response."""
    try:
        return await handler(request)
    except PlainBadRequest as exc:
        return web.Response(status=400, text=exc.message)
    except BodyError as exc:
        # Marking the payload finished stops aiohttp from draining it after the
        # handler, which would re-raise the body's error as an unhandled exception.
        response = http_error(exc.status, exc.message)
        response.force_close()
        request.content.feed_eof()
        return response
    except TransferError as exc:
        return http_error(exc.status, exc.message)


def transfer_user(named: str | None, default_name: str, missing: str) -> User:
    """The acting user of a `/files` route, failing as upstream words it there:
    `400 <missing>` when no user is named anywhere, `401` for an unknown one."""
    try:
        return acting_user(named, default_name)
    except NoUser:
        raise TransferError(400, missing) from None
    except UnknownUser as exc:
        raise TransferError(401, f"error looking up user '{exc.name}': user: unknown user {exc.name}") from None

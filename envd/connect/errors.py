"""Connect error codes and their HTTP statuses (docs/envd-api.md §3.6)."""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Connect codes; the value is the wire name, the HTTP status is for unary errors."""

    CANCELED = ("canceled", 499)
    UNKNOWN = ("unknown", 500)
    INVALID_ARGUMENT = ("invalid_argument", 400)
    DEADLINE_EXCEEDED = ("deadline_exceeded", 504)
    NOT_FOUND = ("not_found", 404)
    ALREADY_EXISTS = ("already_exists", 409)
    PERMISSION_DENIED = ("permission_denied", 403)
    RESOURCE_EXHAUSTED = ("resource_exhausted", 429)
    FAILED_PRECONDITION = ("failed_precondition", 400)
    ABORTED = ("aborted", 409)
    OUT_OF_RANGE = ("out_of_range", 400)
    UNIMPLEMENTED = ("unimplemented", 501)
    INTERNAL = ("internal", 500)
    UNAVAILABLE = ("unavailable", 503)
    DATA_LOSS = ("data_loss", 500)
    UNAUTHENTICATED = ("unauthenticated", 401)

    @property
    def wire_name(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]


#: Longest message sent back: errors quote paths and names from the request,
#: and a request may be megabytes long.
MAX_MESSAGE_CHARS = 4096


class ConnectError(Exception):
    """An RPC failure the client sees as `{"code": ..., "message": ...}`.

    Services raise it; only the Connect layer turns it into bytes.
    """

    def __init__(self, code: Code, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "... (truncated)"
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.wire_name, "message": self.message}

    def __repr__(self) -> str:
        return f"ConnectError({self.code.wire_name}, {self.message!r})"


def deadline_exceeded() -> ConnectError:
    return ConnectError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")

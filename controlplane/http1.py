"""HTTP/1.1 message heads and body framing for the sandbox proxy (RFC 9112).

The proxy relays bodies as the bytes they are (chunked framing included), so
all it needs from a message is its head and where its body ends. This module
is that and nothing else: no I/O, no routing. Heads are decoded as UTF-8 with
surrogate escapes, so whatever bytes came in go out unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from multidict import CIMultiDict
from yarl import URL

#: A head (request line or status line plus fields) larger than this is refused.
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 4096
HEAD_END = b"\r\n\r\n"

#: Fields that describe one connection, never relayed (RFC 9110 §7.6.1). The
#: framing fields are handled apart, since bodies go through as they came.
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "upgrade")
)
#: Fields a `Connection` list can never remove: the framing the relay follows, and the Host.
PROTECTED = frozenset(("content-length", "transfer-encoding", "host"))
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(1\.[01])")
STATUS_LINE = re.compile(r"HTTP/(1\.[01]) ([1-9][0-9]{2})(?: (.*))?")


class HeadError(Exception):
    """A message the proxy will not relay; `status` is what the client is told."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Framing:
    """Where a body ends: after `length` bytes, after a chunked body's last
    chunk, when the connection closes (`length` None, not chunked), or at once."""

    length: int | None = 0
    chunked: bool = False

    @property
    def until_close(self) -> bool:
        return self.length is None and not self.chunked

    @property
    def empty(self) -> bool:
        return self.length == 0 and not self.chunked


NO_BODY = Framing()


@dataclass
class RequestHead:
    method: str
    target: str
    version: str
    headers: CIMultiDict[str]
    framing: Framing = NO_BODY

    @cached_property
    def url(self) -> URL:
        """Parsed only when needed (a signed URL's query): most requests never are."""
        try:
            return URL(self.target)
        except ValueError:
            raise HeadError(400, "Invalid request target") from None

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def path(self) -> str:
        """Decoded as the daemon will decode it; plain targets without the URL parser."""
        if "%" in self.target or not self.target.startswith("/"):
            return self.url.path
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        return _keep_alive(self.version, self.headers)

    @property
    def upgrade(self) -> bool:
        """Asks to switch protocols (a WebSocket, say): after a 101 the bytes are relayed raw."""
        return "upgrade" in _connection_tokens(self.headers) and "Upgrade" in self.headers


@dataclass
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: CIMultiDict[str]

    @property
    def keep_alive(self) -> bool:
        return _keep_alive(self.version, self.headers)

    def framing(self, method: str) -> Framing:
        """RFC 9112 §6.3: which responses have no body, else how it ends."""
        if method == "HEAD" or self.status < 200 or self.status in (204, 304):
            return NO_BODY
        return _body_framing(self.headers, response=True)


def find_head_end(buffer: bytes | bytearray) -> int:
    """Length of the complete head at the start of `buffer`, or -1."""
    end = buffer.find(HEAD_END)
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HeadError(431, "Request header fields too large")
        return -1
    if end > MAX_HEAD_BYTES:
        raise HeadError(431, "Request header fields too large")
    return end + len(HEAD_END)


def parse_request(raw: bytes | bytearray) -> RequestHead:
    start, headers = _split(raw)
    match = REQUEST_LINE.fullmatch(start)
    if match is None:
        raise HeadError(400, "Invalid request line")
    method, target, version = match.groups()
    if not (target.startswith("/") or target.startswith("http://") or target.startswith("https://")):
        raise HeadError(400, "Invalid request target")
    if version == "1.0" and "Transfer-Encoding" in headers:
        raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 6.1
    return RequestHead(method, target, version, headers, _body_framing(headers, response=False))


def parse_response(raw: bytes | bytearray) -> ResponseHead:
    start, headers = _split(raw)
    match = STATUS_LINE.fullmatch(start)
    if match is None:
        raise HeadError(502, "Invalid response from the sandbox")
    version, status, reason = match.groups()
    return ResponseHead(version, int(status), reason or "", headers)


def render_request(head: RequestHead, replaced: dict[str, str]) -> bytes:
    """The head as sent upstream: origin-form target (a proxy-style absolute URL
    is cut to its path), relayed fields, then `replaced` (which wins)."""
    target = head.target if head.target.startswith("/") else head.url.raw_path_qs
    fields = relayed_fields(head.headers, replaced, upgrade=head.upgrade)
    return _render(f"{head.method} {target} HTTP/{head.version}", fields)


def render_response(head: ResponseHead, replaced: dict[str, str], version: str, *, upgrade: bool = False) -> bytes:
    fields = relayed_fields(head.headers, replaced, upgrade=upgrade)
    return _render(f"HTTP/{version} {head.status} {head.reason}", fields)


def relayed_fields(
    headers: CIMultiDict[str], replaced: dict[str, str] | None = None, *, upgrade: bool = False
) -> list[tuple[str, str]]:
    """The fields of one hop worth passing on, then `replaced`: framing stays (bodies
    go through as they are), connection-scoped ones go, unless a protocol switch needs them."""
    replaced = {**(replaced or {}), **({"Connection": "Upgrade"} if upgrade else {})}
    dropped = {name.lower() for name in replaced}
    if "Connection" in headers:
        # A client may name any field as connection-scoped, but never the framing or
        # the Host: dropping those would let a body be read as a request (smuggling).
        dropped |= _connection_tokens(headers) - PROTECTED - ({"upgrade"} if upgrade else set())
    kept = [
        (name, value)
        for name, value in headers.items()
        if (lowered := name.lower()) not in dropped
        and (lowered not in HOP_BY_HOP or (upgrade and lowered == "upgrade"))
    ]
    return kept + list(replaced.items())


def response_bytes(status: int, reason: str, body: bytes, content_type: str, *, close: bool) -> bytes:
    """A whole response the proxy answers itself (errors)."""
    fields = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if close:
        fields.append(("Connection", "close"))
    return _render(f"HTTP/1.1 {status} {reason}", fields) + body


class BodyEnd:
    """Follows a body through the relay to find where it ends.

    `feed` says how many of the given bytes still belong to the body; once
    `done`, the rest is the next message's. Chunked bodies are tracked by
    their chunk-size lines, without copying the data between them.
    """

    def __init__(self, framing: Framing) -> None:
        self._remaining = framing.length or 0
        self._chunked = framing.chunked
        self.until_close = framing.until_close
        self._line = bytearray()
        self._state = "size" if framing.chunked else "data"
        self.done = framing.empty

    def feed(self, data: bytes) -> int:
        if self.done:
            return 0
        if self.until_close:
            return len(data)
        if not self._chunked:
            taken = min(self._remaining, len(data))
            self._remaining -= taken
            self.done = self._remaining == 0
            return taken
        return self._feed_chunked(data)

    def _feed_chunked(self, data: bytes) -> int:
        position = 0
        while position < len(data) and not self.done:
            if self._state == "data":
                taken = min(self._remaining, len(data) - position)
                position += taken
                self._remaining -= taken
                if self._remaining == 0:
                    self._state = "data-end"
                continue
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line += data[position:]
                position = len(data)
            else:
                self._line += data[position : newline + 1]
                position = newline + 1
                if not self._line.endswith(b"\r\n"):  # a bare LF: parsers would disagree on it
                    raise HeadError(400, "Invalid chunked body")
                self._end_of_line(bytes(self._line[:-2]))
                self._line.clear()
            if len(self._line) > MAX_CHUNK_LINE_BYTES:
                raise HeadError(400, "Invalid chunked body")
        return position

    def _end_of_line(self, line: bytes) -> None:
        if self._state == "size":
            size = line.split(b";", 1)[0].strip()
            if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
                raise HeadError(400, "Invalid chunked body")
            self._remaining = int(size, 16)
            self._state = "data" if self._remaining else "trailer"
        elif self._state == "data-end":
            if line:
                raise HeadError(400, "Invalid chunked body")
            self._state = "size"
        elif not line:  # the empty line after the trailer fields
            self.done = True


def _split(raw: bytes | bytearray) -> tuple[str, CIMultiDict[str]]:
    text = bytes(raw).decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise HeadError(400, "Invalid header field")
        headers.add(name, value.strip(" \t"))
    return lines[0], headers


def _body_framing(headers: CIMultiDict[str], *, response: bool) -> Framing:
    """Transfer-Encoding chunked, else Content-Length; both at once is refused
    (the classic request-smuggling ambiguity), as are lengths that disagree."""
    codings = [c.strip().lower() for value in headers.getall("Transfer-Encoding", []) for c in value.split(",")]
    lengths = {value.strip(" \t") for value in headers.getall("Content-Length", [])}
    invalid = 502 if response else 400
    if codings:
        if lengths:
            raise HeadError(invalid, "Both Transfer-Encoding and Content-Length")
        if codings[-1] != "chunked":
            if response:
                return Framing(length=None)
            raise HeadError(501, "Unsupported Transfer-Encoding")
        return Framing(length=None, chunked=True)
    if not lengths:
        return Framing(length=None) if response else NO_BODY
    if len(lengths) > 1 or not all(v.isascii() and v.isdigit() for v in lengths):
        raise HeadError(invalid, "Invalid Content-Length")
    return Framing(length=int(lengths.pop()))


def _connection_tokens(headers: CIMultiDict[str]) -> set[str]:
    return {token.strip().lower() for value in headers.getall("Connection", []) for token in value.split(",")}


def _keep_alive(version: str, headers: CIMultiDict[str]) -> bool:
    tokens = _connection_tokens(headers)
    if version == "1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _render(start_line: str, fields: list[tuple[str, str]]) -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in fields), "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")

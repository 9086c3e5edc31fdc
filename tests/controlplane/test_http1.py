"""HTTP/1.1 heads and body ends as the proxy's relay reads them (controlplane/http1.py)."""

from __future__ import annotations

import pytest

from controlplane import http1
from controlplane.http1 import BodyEnd, Framing, HeadError


def test_body_end_finds_a_chunked_bodys_end_however_it_is_split() -> None:
    body = b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    following = b"GET / HTTP/1.1\r\n"
    for size in (1, 2, 7, len(body) + len(following)):
        end = BodyEnd(Framing(length=None, chunked=True))
        taken, data = 0, body + following
        for start in range(0, len(data), size):
            piece = data[start : start + size]
            taken += end.feed(piece)
            if end.done:
                break
        assert (end.done, taken) == (True, len(body)), size


def test_body_end_refuses_a_bad_chunk_size() -> None:
    with pytest.raises(HeadError):
        BodyEnd(Framing(length=None, chunked=True)).feed(b"zz\r\n")


def test_hop_by_hop_fields_are_dropped_and_framing_kept() -> None:
    head = http1.parse_request(
        b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: 5\r\nContent-Length: 2\r\nX-Access-Token: t\r\n\r\n"
    )
    assert http1.relayed_fields(head.headers, {"Host": "sandbox"}) == [
        ("Content-Length", "2"),
        ("X-Access-Token", "t"),
        ("Host", "sandbox"),
    ]
    assert head.framing == Framing(length=2)

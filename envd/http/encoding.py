"""Accept-Encoding negotiation for downloads (docs/envd-api.md §6.7)."""

from __future__ import annotations

from aiohttp import web

from envd.http.errors import TransferError


def wants_gzip(request: web.Request) -> bool:
    """True to gzip the body. Upstream's rules: gzip or identity, by q-value."""
    conditional = any(h in request.headers for h in ("Range", "If-Modified-Since", "If-None-Match", "If-Range"))
    choice = choose_encoding(request.headers.get("Accept-Encoding"), identity_only=conditional)
    if choice is None:
        raise TransferError(
            406,
            "error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]",
        )
    return choice == "gzip"


def choose_encoding(header: str | None, identity_only: bool = False) -> str | None:
    """`gzip`, `identity`, or None when nothing acceptable (→ 406).

    Deliberately unlike upstream, gzip is used only when the client asks for
    it alone (the SDKs' `gzip=True` sends exactly `gzip`) or prefers it over
    identity: httpx adds `gzip, deflate` to every read, and compressing on
    the fly caps a loopback download at ~35 MB/s instead of ~1 GB/s.
    """
    q = dict(_parse_accept_encoding(header or ""))
    wildcard = q.get("*")
    identity_q = q.get("identity", wildcard if wildcard is not None else 1.0)
    gzip_q = q.get("gzip", wildcard if wildcard is not None else 0.0)
    if identity_only:
        return "identity" if identity_q > 0 else None
    if identity_q <= 0:
        return "gzip" if gzip_q > 0 else None
    others = {c for c, value in q.items() if value > 0 and c not in ("gzip", "identity")}
    if "gzip" in q and gzip_q > 0 and not others and gzip_q > q.get("identity", 0.0):
        return "gzip"
    return "identity"


def _parse_accept_encoding(header: str) -> list[tuple[str, float]]:
    items = []
    for raw in header.split(","):
        coding, _, params = raw.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        items.append((coding, quality))
    return items

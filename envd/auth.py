"""Access token and signed URLs (docs/envd-api.md §6.2, §6.10)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

#: Routes the access-token gate lets through; they check on their own (docs/envd-api.md §6.2).
TOKEN_EXEMPT = {("GET", "/health"), ("GET", "/files"), ("POST", "/files"), ("POST", "/init")}

UNAUTHORIZED_MESSAGE = "unauthorized access, please provide a valid access token or method signing if supported"


class SignatureError(Exception):
    """A `/files` request carries neither a valid token nor a valid signature."""


def token_matches(expected: str, given: str | None) -> bool:
    """Compare in constant time, so the token cannot be guessed byte by byte.

    A header that is not text (aiohttp hands undecodable bytes over as
    surrogates) is simply not the token.
    """
    if given is None:
        return False
    try:
        return hmac.compare_digest(expected.encode(), given.encode())
    except UnicodeEncodeError:
        return False


def sign(path: str, operation: str, username: str, token: str, expiration: int | None) -> str:
    """The `v1_` signature the SDKs put into `download_url`/`upload_url`."""
    text = f"{path}:{operation}:{username}:{token}"
    if expiration is not None:
        text += f":{expiration}"
    digest = hashlib.sha256(text.encode()).digest()
    return "v1_" + base64.b64encode(digest).decode().rstrip("=")


def check_file_access(
    token: str,
    header_token: str | None,
    query: dict[str, str],
    operation: str,
) -> None:
    """Allow a `/files` request or raise `SignatureError` with upstream's text (docs/envd-api.md §6.10).

    `query` holds the raw query values; the signature covers them as sent.
    Raises ValueError for a non-integer `signature_expiration`.
    """
    if not token:
        return
    if header_token is not None:
        if token_matches(token, header_token):
            return
        raise SignatureError("access token present in header but does not match")
    signature = query.get("signature")
    if signature is None:
        raise SignatureError("missing signature query parameter")
    raw_expiration = query.get("signature_expiration")
    expiration = int(raw_expiration) if raw_expiration is not None else None
    expected = sign(query.get("path", ""), operation, query.get("username", ""), token, expiration)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("invalid signature")
    if expiration is not None and expiration < time.time():
        raise SignatureError("signature is already expired")

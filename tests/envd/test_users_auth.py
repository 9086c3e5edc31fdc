"""Unit tests: path resolution, Basic-auth parsing, URL signatures."""

from __future__ import annotations

import base64

import pytest
from e2b.sandbox.signature import get_signature

from envd.auth import SignatureError, check_file_access, sign
from envd.permissions import basic_auth_username
from envd.users import PathError, User, resolve_path

USER = User("user", 1000, 1000, "/home/user", "/bin/bash")


@pytest.mark.parametrize(
    ("path", "workdir", "expected"),
    [
        ("", "", "/home/user"),
        ("", "/work", "/work"),
        ("~", "", "/home/user"),
        ("~/a/b", "", "/home/user/a/b"),
        ("a/../b/./c", "/work", "/home/user/b/c"),
        ("/abs/../kept", "", "/abs/../kept"),
        ("with space/ü", "", "/home/user/with space/ü"),
    ],
)
def test_resolve_path(path: str, workdir: str, expected: str) -> None:
    assert resolve_path(path, USER, workdir) == expected


def test_resolve_path_refuses_other_users_home() -> None:
    with pytest.raises(PathError, match="cannot expand user-specific home dir"):
        resolve_path("~other/x", USER)


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_basic("user:"), "user"),
        (_basic("root:secret:with:colons"), "root"),
        ("basic " + base64.b64encode(b"user:").decode(), "user"),
        (_basic("nocolon"), None),
        ("Basic !!!notbase64", None),
        ("Bearer abc", None),
        (None, None),
    ],
)
def test_basic_auth_username(header: str | None, expected: str | None) -> None:
    assert basic_auth_username(header) == expected


@pytest.mark.parametrize("expiration", [None, 4102444800])
def test_signature_matches_the_sdk(expiration: int | None) -> None:
    ours = sign("/home/user/a b.txt", "read", "user", "tok", expiration)
    if expiration is None:
        theirs = get_signature("/home/user/a b.txt", "read", "user", "tok")["signature"]
        assert ours == theirs
    query = {"path": "/home/user/a b.txt", "username": "user", "signature": ours}
    if expiration is not None:
        query["signature_expiration"] = str(expiration)
    check_file_access("tok", None, query, "read")
    with pytest.raises(SignatureError, match="invalid signature"):
        check_file_access("tok", None, query, "write")


def test_expired_and_missing_signatures() -> None:
    expired = {"path": "/x", "signature": sign("/x", "read", "", "tok", 1), "signature_expiration": "1"}
    with pytest.raises(SignatureError, match="already expired"):
        check_file_access("tok", None, expired, "read")
    with pytest.raises(SignatureError, match="missing signature"):
        check_file_access("tok", None, {"path": "/x"}, "read")
    with pytest.raises(SignatureError, match="does not match"):
        check_file_access("tok", "wrong", {"path": "/x"}, "read")
    check_file_access("tok", "tok", {"path": "/x"}, "read")
    check_file_access("", None, {}, "read")

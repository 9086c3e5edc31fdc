"""Who a request acts as: the one home of that rule (docs/envd-api.md §2.2).

A request names its user in the way its route allows (a Basic header on RPCs
and most routes, a `username` parameter on `/files`, a body field on
`/files/compose`); a request that names none acts as the daemon's default
user. Each route words the failures as upstream does; they map `NoUser` and
`UnknownUser` to their own status and text at their boundary.
"""

from __future__ import annotations

import base64
import binascii

from envd.users import User, UserError, lookup_user


class NoUser(UserError):
    """Neither the request nor the daemon names a user."""

    def __init__(self) -> None:
        super().__init__("no user specified")


class UnknownUser(UserError):
    """The named user does not exist; `default` if the daemon's default named it."""

    def __init__(self, name: str, default: bool) -> None:
        kind = "default user" if default else "username"
        super().__init__(f"invalid {kind}: '{name}'")
        self.name = name


def acting_user(named: str | None, default_name: str) -> User:
    """The user a request acts as: the one it names (even ""), else the default."""
    if named is not None:
        return _lookup(named, default=False)
    if not default_name:
        raise NoUser()
    return _lookup(default_name, default=True)


def requested_user(authorization: str | None) -> User | None:
    """The user a Basic `Authorization` header names; None without one.

    A well-formed header naming an unknown user fails every request at once
    (UnknownUser), even where the handler would not need a user.
    """
    name = basic_auth_username(authorization)
    return None if name is None else _lookup(name, default=False)


def basic_auth_username(header: str | None) -> str | None:
    """Username of an `Authorization: Basic` header, parsed like Go's `BasicAuth`.

    Anything malformed counts as absent: only a well-formed header can fail
    later, when the user it names does not exist.
    """
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in decoded:
        return None
    return decoded.split(":", 1)[0]


def _lookup(name: str, default: bool) -> User:
    try:
        return lookup_user(name)
    except UserError:
        raise UnknownUser(name, default) from None

"""What an older SDK can parse, decided once per request from the request itself.

`e2b` 1.0.0 to 1.5.2 (Python) parse Connect JSON strictly: one response field
they do not know fails the whole call with a ParseError (`files.write`,
`list`, `get_info`... on every entry). Their Connect client announces itself
as `user-agent: connect-python` (through 1.7.0; from 1.7.1 on the SDKs send
`e2b-python-sdk/<version>` and ignore unknown fields, as every npm release
does). Protobuf-encoded responses need nothing: unknown fields are skipped
by design.

The table comes from the generated `_pb2` modules of every 1.x release: the
response messages of 1.0.0 to 1.7.1 match ours field for field except
`EntryInfo`, which knew only name, type and path until 1.8.0 (size, mode,
permissions, owner, group, modified_time, symlink_target came then; metadata
and is_symlink never in 1.x). `FilesystemEvent.entry` is unknown to all of
1.x too, but those clients cannot ask for it (no `include_entry` then).
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message
from multidict import CIMultiDictProxy

from envd.connect.codec import Codec, JsonCodec
from envd.connect.protojson import is_repeated

#: message full name -> the only fields a strict legacy client parses.
KNOWN_TO_CONNECT_PYTHON: Mapping[str, frozenset[str]] = {
    "filesystem.EntryInfo": frozenset({"name", "type", "path"}),
}


def codec_for_client(codec: Codec, headers: CIMultiDictProxy[str]) -> Codec:
    """The codec as the client needs it: JSON restricted for strict legacy clients."""
    if isinstance(codec, JsonCodec) and headers.get("User-Agent", "").startswith("connect-python"):
        return RestrictedJsonCodec(KNOWN_TO_CONNECT_PYTHON)
    return codec


class RestrictedJsonCodec(JsonCodec):
    """JSON without the fields a client does not know."""

    def __init__(self, known: Mapping[str, frozenset[str]]) -> None:
        self.known = known

    def encode(self, message: Message) -> bytes:
        return super().encode(restrict(message, self.known))


def restrict(message: Message, known: Mapping[str, frozenset[str]]) -> Message:
    """A copy of `message` without the fields `known` leaves out, at any depth."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip(copy, known)
    return copy


def _strip(message: Message, known: Mapping[str, frozenset[str]]) -> None:
    allowed = known.get(message.DESCRIPTOR.full_name)
    for field, value in message.ListFields():
        if allowed is not None and field.name not in allowed:
            message.ClearField(field.name)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            items = value if is_repeated(field) else [value]
            for item in items:
                _strip(item, known)

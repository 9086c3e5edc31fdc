"""Message codecs: canonical proto3 JSON (what every SDK sends) and binary protobuf."""

from __future__ import annotations

import json
from typing import Protocol, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from envd.connect.errors import Code, ConnectError
from envd.connect.protojson import message_to_dict

M = TypeVar("M", bound=Message)


class Codec(Protocol):
    name: str

    def decode(self, data: bytes, message_type: type[M]) -> M: ...

    def encode(self, message: Message) -> bytes: ...


class JsonCodec:
    """protojson rules (docs/envd-api.md §3.2): camelCase out, both spellings in, unknown keys ignored."""

    name = "json"

    def decode(self, data: bytes, message_type: type[M]) -> M:
        message = message_type()
        if not data.strip():
            return message
        if not data.lstrip().startswith(b"{"):
            # json_format.Parse accepts `[]` as an empty message; protojson does not.
            raise ConnectError(Code.INVALID_ARGUMENT, "unmarshal message: expected a JSON object")
        try:
            json_format.Parse(data, message, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"unmarshal message: {exc}") from exc
        return message

    def encode(self, message: Message) -> bytes:
        as_dict = message_to_dict(message)
        return json.dumps(as_dict, separators=(",", ":")).encode()


class ProtoCodec:
    name = "proto"

    def decode(self, data: bytes, message_type: type[M]) -> M:
        message = message_type()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"unmarshal message: {exc}") from exc
        return message

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()


CODECS: dict[str, Codec] = {"json": JsonCodec(), "proto": ProtoCodec()}

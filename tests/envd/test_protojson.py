"""The fast message-to-JSON walk equals `json_format.MessageToDict`, on every message type."""

from __future__ import annotations

import random

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from envd.connect.protojson import is_repeated, message_to_dict
from envd.proto import filesystem_pb2, process_pb2


def _message_types() -> list[type[Message]]:
    found = []
    for module in (filesystem_pb2, process_pb2):
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            found.append(getattr(module, descriptor.name))
    return found


def _scalar(field: FieldDescriptor, rng: random.Random):
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(["", "x", 'héllo \u2028 "q"', "/home/user/" + "a" * rng.randint(0, 40)])
    if kind == FieldDescriptor.TYPE_BYTES:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 20)))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values] + [99]  # 99: unknown value
        return rng.choice(numbers)
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return rng.choice([0, 1, -1, 2**62, -(2**62)])
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice([0, 1, 2**63])
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1])
    return rng.choice([0, 1, -1, 2**31 - 1, -(2**31)])  # int32, sint32, sfixed32


def _fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                target[_scalar(field.message_type.fields_by_name["key"], rng)] = _scalar(value_field, rng)
        elif field.message_type is not None:
            if depth > 3:
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                items = [] if is_repeated(field) else [getattr(message, field.name)]
                for stamp in items:
                    stamp.seconds = rng.choice([0, -1, 1, rng.randint(-(2**34), 2**34), -62135596800, 253402300799])
                    stamp.nanos = rng.choice([0, 5000, 1_000_000, 123456789, 999_999_999])
                continue
            if is_repeated(field):
                for _ in range(rng.randint(0, 3)):
                    _fill(getattr(message, field.name).add(), rng, depth + 1)
            else:
                getattr(message, field.name).SetInParent()
                _fill(getattr(message, field.name), rng, depth + 1)
        elif is_repeated(field):
            getattr(message, field.name).extend(_scalar(field, rng) for _ in range(rng.randint(0, 3)))
        else:
            setattr(message, field.name, _scalar(field, rng))
    return message


@pytest.mark.parametrize("message_type", _message_types(), ids=lambda t: t.DESCRIPTOR.full_name)
def test_equals_json_format_on_random_messages(message_type) -> None:
    rng = random.Random(message_type.DESCRIPTOR.full_name)
    for _ in range(200):
        message = _fill(message_type(), rng)
        assert message_to_dict(message) == json_format.MessageToDict(message)


def test_key_order_follows_field_numbers_like_json_format() -> None:
    entry = filesystem_pb2.EntryInfo(name="n", path="/p", size=3, owner="o")
    assert list(message_to_dict(entry)) == list(json_format.MessageToDict(entry))

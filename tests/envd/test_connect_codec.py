"""The Connect JSON codec and envelopes with the filesystem messages (docs/envd-api.md §3.1, §3.2)."""

from __future__ import annotations

import asyncio
import json
import struct
from unittest import mock

import pytest
from aiohttp import StreamReader

from envd.connect import Code, ConnectError
from envd.connect.codec import CODECS
from envd.connect.envelope import FLAG_END_STREAM, encode, read_envelopes
from envd.proto import filesystem_pb2 as pb

JSON = CODECS["json"]


def encoded(message) -> dict:
    return json.loads(JSON.encode(message))


def test_entry_info_is_canonical_protojson() -> None:
    entry = pb.EntryInfo(
        name="x",
        type=pb.FILE_TYPE_FILE,
        path="/home/user/x",
        size=13,
        mode=0o644,
        permissions="-rw-r--r--",
        owner="user",
        group="user",
        symlink_target="/t",
        is_symlink=True,
    )
    entry.modified_time.FromNanoseconds(1_777_629_600_123_456_789)
    entry.metadata["author"] = "me"
    assert encoded(entry) == {
        "name": "x",
        "type": "FILE_TYPE_FILE",  # enum by name
        "path": "/home/user/x",
        "size": "13",  # int64 as a string
        "mode": 420,  # uint32 as a number
        "permissions": "-rw-r--r--",
        "owner": "user",
        "group": "user",
        "modifiedTime": "2026-05-01T10:00:00.123456789Z",  # camelCase, RFC 3339 UTC
        "symlinkTarget": "/t",
        "metadata": {"author": "me"},
        "isSymlink": True,
    }


def test_defaults_are_omitted_but_optional_presence_is_kept() -> None:
    assert encoded(pb.EntryInfo()) == {}
    assert encoded(pb.EntryInfo(symlink_target="")) == {"symlinkTarget": ""}
    assert encoded(pb.RemoveResponse()) == {}
    assert encoded(pb.ListDirResponse()) == {}


def test_oneof_with_empty_messages() -> None:
    start = pb.WatchDirResponse(start=pb.WatchDirResponse.StartEvent())
    assert encoded(start) == {"start": {}}
    keepalive = pb.WatchDirResponse(keepalive=pb.WatchDirResponse.KeepAlive())
    assert encoded(keepalive) == {"keepalive": {}}
    event = pb.WatchDirResponse(filesystem=pb.FilesystemEvent(name="a/b", type=pb.EVENT_TYPE_CHMOD))
    assert encoded(event) == {"filesystem": {"name": "a/b", "type": "EVENT_TYPE_CHMOD"}}


def test_camel_and_snake_case_and_unknown_fields_are_accepted() -> None:
    camel = JSON.decode(
        b'{"path":".","recursive":true,"includeEntry":true,"allowNetworkMounts":true,"x":1}',
        pb.CreateWatcherRequest,
    )
    snake = JSON.decode(
        b'{"path":".","recursive":true,"include_entry":true,"allow_network_mounts":true}',
        pb.CreateWatcherRequest,
    )
    assert camel == snake
    assert camel.include_entry and camel.allow_network_mounts
    assert JSON.decode(b'{"watcherId":"w1"}', pb.GetWatcherEventsRequest).watcher_id == "w1"


def test_numbers_as_strings_enums_by_number_and_nulls() -> None:
    assert JSON.decode(b'{"path":"d","depth":"2"}', pb.ListDirRequest).depth == 2
    assert JSON.decode(b'{"size":13}', pb.EntryInfo).size == 13
    assert JSON.decode(b'{"type":2}', pb.EntryInfo).type == pb.FILE_TYPE_DIRECTORY
    assert JSON.decode(b'{"path":null}', pb.StatRequest).path == ""
    assert JSON.decode(b"", pb.StatRequest) == pb.StatRequest()


@pytest.mark.parametrize(
    "body",
    [b"{", b"[1,2]", b"[]", b"null", b'"s"', b'{"path": 5}', b'{"depth": -1}', b"\xff\xfe", b'{"depth":"x"}'],
)
def test_malformed_json_is_invalid_argument(body: bytes) -> None:
    with pytest.raises(ConnectError) as caught:
        JSON.decode(body, pb.ListDirRequest)
    assert caught.value.code is Code.INVALID_ARGUMENT


def test_malformed_protobuf_is_invalid_argument() -> None:
    with pytest.raises(ConnectError) as caught:
        CODECS["proto"].decode(b"\x0a\xff\xff\xff", pb.StatRequest)
    assert caught.value.code is Code.INVALID_ARGUMENT
    wire = pb.StatRequest(path="x").SerializeToString()
    assert CODECS["proto"].decode(wire, pb.StatRequest).path == "x"


def test_envelope_layout() -> None:
    assert encode(b"{}") == b"\x00\x00\x00\x00\x02{}"
    assert encode(b'{"a":1}', FLAG_END_STREAM) == b"\x02\x00\x00\x00\x07" + b'{"a":1}'
    big = b"x" * 70000
    assert encode(big)[:5] == struct.pack(">BI", 0, 70000)


async def test_envelopes_are_read_across_arbitrary_chunk_boundaries() -> None:
    wire = encode(b'{"path":"a"}') + encode(b'{"path":"bb"}') + encode(b"{}", FLAG_END_STREAM)
    stream = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    for index in range(0, len(wire), 3):  # split headers and payloads mid-way
        stream.feed_data(wire[index : index + 3])
    stream.feed_eof()
    payloads = [payload async for payload in read_envelopes(stream)]
    assert payloads == [b'{"path":"a"}', b'{"path":"bb"}']  # end-of-stream not yielded


async def test_truncated_envelope_is_invalid_argument() -> None:
    stream = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    stream.feed_data(encode(b'{"path":"abc"}')[:-3])
    stream.feed_eof()
    with pytest.raises(ConnectError) as caught:
        [payload async for payload in read_envelopes(stream)]
    assert caught.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("value", ["²", "12a", "", "12345678901", "-5", " 5"])
def test_malformed_timeouts_are_invalid_argument(value: str) -> None:
    from envd.connect.server import _parse_timeout

    with pytest.raises(ConnectError) as caught:
        _parse_timeout(value)
    assert caught.value.code is Code.INVALID_ARGUMENT


def test_timeouts_in_milliseconds() -> None:
    from envd.connect.server import _parse_timeout

    assert _parse_timeout("60000") == 60.0
    assert _parse_timeout(None) is None

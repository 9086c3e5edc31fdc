"""Unit tests of pure pieces: line encoding, the request consumer, the JSON formatter fallback."""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import json
import os
import sys
import uuid

import pytest

from kernel_bridge import messages
from kernel_bridge.execution import consume
from kernel_bridge.inbox import Inbox
from kernel_bridge.kernel import GONE, KernelRequest
from kernel_bridge.server import _hold_for_successor

try:
    import orjson as ORJSON
except ImportError:  # the fallback is still tested
    ORJSON = None

STARTUP = os.path.join(os.path.dirname(messages.__file__), "kernel_side", "startup.py")


# ---------------------------------------------------------------- encode_line (item 7)


def test_encode_line_turns_nan_inside_a_result_into_null():
    line = messages.result_line(
        {"text/plain": "x", "application/json": {"a": [float("nan"), 1.5, float("inf"), -float("inf")]}}, True
    )
    encoded = messages.encode_line(line)
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert json.loads(encoded)["json"] == {"a": [None, 1.5, None, None]}
    assert b"NaN" not in encoded and b"Infinity" not in encoded


def test_encode_line_never_raises():
    encoded = messages.encode_line({"type": "result", "extra": {"bad": {1, 2}}})
    decoded = json.loads(encoded)
    assert decoded["type"] == "error" and decoded["name"] == "EncodingError"


# ---------------------------------------------------------------- consume (item 8)


def _msg(msg_type: str, **content) -> dict:
    return {"header": {"msg_type": msg_type}, "content": content}


@pytest.mark.parametrize("order", ["reply-gone-idle", "idle-gone-reply"])
async def test_client_gone_after_the_kernel_finished_is_harmless(order):
    request = KernelRequest(msg_id="m", silent=False)
    reply = ("shell", _msg("execute_reply", status="ok"))
    idle = ("iopub", _msg("status", execution_state="idle"))
    first, last = (reply, idle) if order == "reply-gone-idle" else (idle, reply)
    for item in (first, (GONE, None), last):
        request.inbox.put(item)
    outcome = await consume(request, None)
    assert outcome.event is None  # no interrupt of a kernel that already answered


async def test_client_gone_while_running_still_ends_the_wait():
    request = KernelRequest(msg_id="m", silent=False)
    request.inbox.put(("iopub", _msg("status", execution_state="busy")))
    request.inbox.put((GONE, None))
    assert (await consume(request, None)).event == GONE


# ---------------------------------------------------------------- inbox


async def test_inbox_wakes_its_reader_and_times_out():
    inbox: Inbox[int] = Inbox()
    assert await inbox.wait(0.01) is False  # nothing came
    waiting = asyncio.ensure_future(inbox.wait())
    await asyncio.sleep(0)
    inbox.put(1)
    inbox.put(2)
    assert await waiting is True
    assert inbox.get() == 1
    inbox.put(3)
    assert inbox.take(5) == [2, 3] and len(inbox) == 0


async def _returns_at_once(lines: Inbox) -> bool:
    """Whether holding returned without waiting for anything."""
    task = asyncio.ensure_future(_hold_for_successor(lines))
    await asyncio.sleep(0)
    done = task.done()
    await task
    return done


async def test_count_and_result_wait_for_the_end_but_output_never_waits():
    count = messages.number_of_executions(1)
    result = messages.result_line({"text/plain": "2"}, True)
    lines: Inbox[messages.Line] = Inbox()
    lines.put(count)
    loop = asyncio.get_running_loop()
    loop.call_later(0.001, lines.put, result)
    loop.call_later(0.002, lines.put, messages.END_OF_EXECUTION)
    await _hold_for_successor(lines)
    assert lines.take(9) == [count, result, messages.END_OF_EXECUTION]  # one write

    lines.put(count)
    lines.put(messages.stream_line("stdout", "hi\n", None))
    assert await _returns_at_once(lines)  # output releases what came before it
    lines.take(9)
    lines.put(messages.result_line({"text/plain": "plot"}, False))
    assert await _returns_at_once(lines)  # display data streams, it is not held
    lines.take(9)
    lines.put(count)
    assert not await _returns_at_once(lines)  # alone: released after the window
    assert lines.take(9) == [count]


# ---------------------------------------------------------------- json formatter fallback (item 5)


@pytest.fixture
def startup_without_orjson(monkeypatch):
    monkeypatch.setitem(sys.modules, "orjson", None)  # `import orjson` raises ImportError
    spec = importlib.util.spec_from_file_location("kb_startup_under_test", STARTUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_json_fallback_matches_orjson(startup_without_orjson):
    roundtrip = startup_without_orjson._json_roundtrip
    assert roundtrip([float("nan"), 1]) == [None, 1]
    value = {
        "dt": datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        "utc": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        "d": datetime.date(2024, 1, 1),
        "u": uuid.UUID(int=5),
        "inf": float("-inf"),
        1: (1, 2),
        datetime.date(2020, 5, 6): None,
    }
    expected = {
        "dt": "2024-01-02T03:04:05.000006",
        "utc": "2024-01-01T00:00:00+00:00",
        "d": "2024-01-01",
        "u": "00000000-0000-0000-0000-000000000005",
        "inf": None,
        "1": [1, 2],
        "2020-05-06": None,
    }
    assert roundtrip(value) == expected
    if ORJSON is not None:  # and that is what orjson itself gives
        option = ORJSON.OPT_NON_STR_KEYS | ORJSON.OPT_SERIALIZE_NUMPY
        assert ORJSON.loads(ORJSON.dumps(value, option=option)) == expected
    with pytest.raises(TypeError):
        roundtrip([{1, 2}])  # like orjson: the formatter then falls back to IPython's

"""The output fan-out on its own: ordering, discard, back-pressure, detached stuck
subscribers (docs/envd-api.md §5.5).
"""

from __future__ import annotations

import asyncio

import pytest

from envd.connect import Code
from envd.process.errors import OutputLost
from envd.process.output import Broadcaster
from envd.process.service import ERRORS as PROCESS_ERRORS
from envd.process.status import end_event
from envd.proto.process_pb2 import ProcessEvent

pytestmark = pytest.mark.asyncio


def chunk(data: bytes) -> ProcessEvent:
    return ProcessEvent(data=ProcessEvent.DataEvent(stdout=data))


async def drain(sub, delay: float = 0.0) -> list[ProcessEvent]:
    received = []
    async for event in sub:
        received.append(event)
        if delay:
            await asyncio.sleep(delay)
    return received


async def publish_all(broadcaster: Broadcaster, parts: list[bytes]) -> None:
    for part in parts:
        await broadcaster.publish(chunk(part), len(part))
    broadcaster.finish(end_event(0))


async def test_every_subscriber_gets_everything_in_order() -> None:
    broadcaster = Broadcaster("t", capacity=8, stall_seconds=5)
    subs = [broadcaster.subscribe() for _ in range(3)]
    parts = [f"part{i}".encode() for i in range(50)]
    results = await asyncio.gather(publish_all(broadcaster, parts), *(drain(s) for s in subs))
    for received in results[1:]:
        assert [e.data.stdout for e in received[:-1]] == parts
        assert received[-1].end.status == "exit status 0"


async def test_without_subscribers_output_is_discarded() -> None:
    broadcaster = Broadcaster("t")
    await broadcaster.publish(chunk(b"lost"), 4)
    late = broadcaster.subscribe()
    await broadcaster.publish(chunk(b"seen"), 4)
    broadcaster.finish(end_event(3))
    assert [e.WhichOneof("event") for e in await drain(late)] == ["data", "end"]
    after_end = broadcaster.subscribe()
    [only] = await drain(after_end)
    assert only.end.exit_code == 3


async def test_stuck_subscriber_is_detached_with_data_loss_and_never_blocks_the_others() -> None:
    broadcaster = Broadcaster("t", capacity=10, stall_seconds=0.2)
    reader = broadcaster.subscribe()
    stuck = broadcaster.subscribe()
    parts = [b"0123456789"] * 100
    published, received = await asyncio.gather(publish_all(broadcaster, parts), drain(reader))
    assert [e.data.stdout for e in received[:-1]] == parts
    assert received[-1].HasField("end")
    assert stuck.failure is not None
    # The events it had queued come first, then the stream fails: never a clean end after lost data.
    queued = []
    with pytest.raises(OutputLost) as caught:
        async for event in stuck:
            queued.append(event)
    assert PROCESS_ERRORS[OutputLost] is Code.DATA_LOSS  # what the SDK sees
    assert "stopped reading" in str(caught.value) and "another stream" in str(caught.value)
    assert queued and all(e.HasField("data") for e in queued)
    assert len(queued) < 10
    with pytest.raises(StopAsyncIteration):
        await stuck.__anext__()


async def test_sole_stuck_subscriber_is_never_dropped() -> None:
    """The only subscriber gets back-pressure, however long it pauses (docs/envd-api.md §5.5)."""
    broadcaster = Broadcaster("t", capacity=10, stall_seconds=0.1)
    sub = broadcaster.subscribe()
    parts = [bytes([i]) * 10 for i in range(20)]
    publisher = asyncio.create_task(publish_all(broadcaster, parts))
    await asyncio.sleep(0.5)  # five grace periods without reading
    assert not publisher.done()  # the process waits for its reader
    received = await drain(sub)
    await publisher
    assert [e.data.stdout for e in received[:-1]] == parts
    assert received[-1].end.status == "exit status 0"
    assert sub.failure is None


async def test_all_subscribers_stuck_means_back_pressure_not_loss() -> None:
    broadcaster = Broadcaster("t", capacity=10, stall_seconds=0.1)
    first, second = broadcaster.subscribe(), broadcaster.subscribe()
    parts = [bytes([i]) * 10 for i in range(20)]
    publisher = asyncio.create_task(publish_all(broadcaster, parts))
    await asyncio.sleep(0.5)
    assert not publisher.done()
    results = await asyncio.gather(drain(first), drain(second))
    await publisher
    for received in results:
        assert [e.data.stdout for e in received[:-1]] == parts
        assert received[-1].HasField("end")


async def test_slow_but_steady_subscriber_loses_nothing() -> None:
    broadcaster = Broadcaster("t", capacity=10, stall_seconds=1.0)
    slow = broadcaster.subscribe()
    parts = [bytes([i]) * 10 for i in range(30)]
    _, received = await asyncio.gather(publish_all(broadcaster, parts), drain(slow, delay=0.01))
    assert [e.data.stdout for e in received[:-1]] == parts
    assert slow.failure is None


async def test_idle_subscriber_is_not_mistaken_for_stuck() -> None:
    """Silence from the process is not a lack of progress of the reader."""
    broadcaster = Broadcaster("t", capacity=10, stall_seconds=0.2)
    sub = broadcaster.subscribe()
    await asyncio.sleep(0.4)
    parts = [b"x" * 10] * 20
    _, received = await asyncio.gather(publish_all(broadcaster, parts), drain(sub, delay=0.01))
    assert sub.failure is None
    assert len(received) == 21


async def test_closed_subscription_releases_a_waiting_publisher() -> None:
    broadcaster = Broadcaster("t", capacity=10, stall_seconds=60)
    sub = broadcaster.subscribe()
    await broadcaster.publish(chunk(b"x" * 10), 10)
    blocked = asyncio.create_task(broadcaster.publish(chunk(b"y" * 10), 10))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    sub.close()
    await asyncio.wait_for(blocked, 5)

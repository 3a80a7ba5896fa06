"""The in-process bus: numbering, routing, bounded buffers, close."""

from __future__ import annotations

import asyncio

import pytest

from realtime.bus import BusClosed, MemoryBus
from realtime.clock import ManualClock


async def test_seq_counts_per_channel_from_one() -> None:
    bus = MemoryBus(epoch="ep1")
    seqs = [bus.publish_nowait(ch, {}).seq for ch in ["trades.SPY", "trades.QQQ", "trades.SPY"]]
    assert seqs == [1, 1, 2]
    assert bus.last_seq("trades.SPY") == 2 and bus.last_seq("bars.1m.SPY") == 0
    assert (await bus.publish("trades.SPY", {})).seq == 3


async def test_envelope_times_come_from_the_clock() -> None:
    clock = ManualClock(5_000)
    bus = MemoryBus(clock=clock, epoch="ep1")
    first = bus.publish_nowait("trades.SPY", {"px": 1})
    clock.advance(10)
    second = bus.publish_nowait("trades.SPY", {"px": 2}, event_ns=4_000)
    assert (first.event_ns, first.publish_ns, first.epoch) == (5_000, 5_000, "ep1")
    assert (second.event_ns, second.publish_ns) == (4_000, 5_010)


async def test_pattern_routing() -> None:
    bus = MemoryBus()
    subs = {p: bus.subscribe(p) for p in ("trades.*", "bars.>", "bars.*", ">", "trades.SPY")}
    names = ["trades.SPY", "bars.1m.SPY", "quotes.SPY", "trades.QQQ"]
    for name in names:
        bus.publish_nowait(name, {})
    seen = {
        p: [e.channel for e in await s.next_batch()] if s.pending else [] for p, s in subs.items()
    }
    assert seen == {
        "trades.*": ["trades.SPY", "trades.QQQ"],
        "bars.>": ["bars.1m.SPY"],
        "bars.*": [],
        ">": names,
        "trades.SPY": ["trades.SPY"],
    }
    late = bus.subscribe("quotes.*")  # routes are rebuilt for a new subscription
    bus.publish_nowait("quotes.SPY", {})
    assert [e.seq for e in await late.next_batch()] == [2]


async def test_bounded_buffer_drops_oldest_and_counts() -> None:
    bus = MemoryBus()
    sub = bus.subscribe(">", max_pending=3)
    for i in range(5):
        bus.publish_nowait("trades.SPY", {"i": i})
    assert (sub.pending, sub.dropped) == (3, 2)
    batch = await sub.next_batch(2)
    assert [e.seq for e in batch] == [3, 4]  # 1 and 2 dropped: the consumer sees the hole
    assert [e.seq for e in await sub.next_batch()] == [5]
    assert sub.pending == 0


async def test_next_batch_waits_for_a_publish() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("trades.SPY")
    waiting = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)
    assert not waiting.done()
    bus.publish_nowait("trades.SPY", {"i": 0})
    assert [e.payload for e in await asyncio.wait_for(waiting, 1)] == [{"i": 0}]


async def test_close_ends_iteration_and_stops_delivery() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("trades.SPY")
    other = bus.subscribe("trades.SPY")
    bus.publish_nowait("trades.SPY", {"i": 0})
    received = []

    async def consume() -> None:
        async for env in sub:
            received.append(env.seq)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1)
    bus.publish_nowait("trades.SPY", {"i": 1})
    assert received == [1] and sub.pending == 0 and other.pending == 2
    await bus.close()
    assert await other.next_batch() != [] and await other.next_batch() == []
    with pytest.raises(BusClosed):
        bus.publish_nowait("trades.SPY", {})
    with pytest.raises(BusClosed):
        bus.subscribe(">")


async def test_history_is_the_epoch_and_nothing_kept() -> None:
    bus = MemoryBus(epoch="ep1")
    for i in range(3):
        bus.publish_nowait("trades.SPY", {"i": i})
    assert await bus.history("trades.SPY", 0, 10) == ("ep1", [])
    assert await bus.history("trades.NEVER", 0, 10) == ("ep1", [])

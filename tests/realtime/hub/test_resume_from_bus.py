"""Any hub resumes any client from the bus's history (issue 5): hubs on port 0, real WebSocket
clients, the real Redis at 127.0.0.1:6379 (keys under a random prefix, deleted afterwards)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.bus.base import BusUnavailable, Envelope
from realtime.bus.redis import RedisBus, RedisBusConfig
from realtime.hub import Hub, HubConfig
from tests.realtime.hub.conftest import Client, HubFactory, client

REDIS_URL = "redis://127.0.0.1:6379/0"

Buses = Callable[..., Any]


@pytest.fixture
async def buses() -> AsyncIterator[Buses]:
    """``make()`` opens a RedisBus on this test's key prefix (shared by every bus it opens)."""
    prefix = f"nautilus-test:{secrets.token_hex(4)}:"
    opened: list[RedisBus] = []

    async def make(**overrides: Any) -> RedisBus:
        config = replace(RedisBusConfig(url=REDIS_URL, key_prefix=prefix), **overrides)
        bus = await RedisBus.connect(config)
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()
    admin = Redis.from_url(REDIS_URL)
    keys = [key async for key in admin.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


@asynccontextmanager
async def running_hub(bus: RedisBus, **overrides: Any) -> AsyncIterator[Hub]:
    config = HubConfig(port=0, heartbeat_interval_s=30.0, implicit_channels=True)
    hub = Hub(replace(config, **overrides), bus)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def publish(bus: RedisBus, first: int, last: int) -> list[Envelope]:
    """Messages ``{"i": n}`` for n in first..last on trades.SPY (seq n + 1 on a fresh channel)."""
    return [await bus.publish("trades.SPY", {"i": n}) for n in range(first, last + 1)]


async def resume(c: Client, seq: int, epoch: str, count: int) -> list[dict[str, Any]]:
    """Subscribe to trades.SPY from ``(epoch, seq)``; return the ack, ``count`` replayed
    updates and the status."""
    position = {"trades.SPY": {"epoch": epoch, "seq": seq}}
    await c.request("subscribe", channels=["trades.SPY"], resume=position)
    return await c.messages(count + 2, timeout=5.0)


async def test_hub_started_after_the_messages_resumes_from_the_stream(buses: Buses) -> None:
    engine = await buses()
    sent = await publish(engine, 0, 29)  # seq 1..30, before the hub exists
    epoch = sent[0].epoch
    async with running_hub(await buses()) as hub, client(hub) as c:
        ack, *replayed, status = await resume(c, 12, epoch, 18)
        await publish(engine, 30, 34)
        live = await c.messages(5, timeout=5.0)
        # the hub now holds the channel: a second client resumes from its ring
        async with client(hub) as other:
            _, *again, _ = await resume(other, 25, epoch, 10)
    assert ack["type"] == "ack"
    assert ack["recovery"]["trades.SPY"] == {
        "recovered": True,
        "replayed": 18,
        "epoch": epoch,
        "seq": 30,
    }
    assert [(m["seq"], m["data"]["i"]) for m in replayed] == [(n + 1, n) for n in range(12, 30)]
    assert {m["epoch"] for m in replayed + live} == {epoch}
    assert status["state"] == "recovered" and status["count"] == 18 and status["to_seq"] == 30
    assert [(m["seq"], m["data"]["i"]) for m in live] == [(n + 1, n) for n in range(30, 35)]
    assert [m["seq"] for m in again] == list(range(26, 36))
    assert hub.stats.bus_resumes == {"recovered": 1}  # the second came from the ring


async def test_small_ring_recovers_the_gap_from_redis(buses: Buses) -> None:
    engine = await buses()
    async with running_hub(await buses(), history_size=4) as hub, client(hub) as c:
        async with client(hub) as watcher:
            await watcher.reply("subscribe", channels=["trades.SPY"])
            sent = await publish(engine, 0, 39)
            seen = await watcher.messages(40, timeout=5.0)  # the hub has seen all 40
        ack, *replayed, status = await resume(c, 5, sent[0].epoch, 35)
        await publish(engine, 40, 41)
        live = await c.messages(2, timeout=5.0)
    assert [m["seq"] for m in seen] == list(range(1, 41))
    assert ack["recovery"]["trades.SPY"]["recovered"] is True
    assert [(m["seq"], m["data"]["i"]) for m in replayed] == [(n + 1, n) for n in range(5, 40)]
    assert status["state"] == "recovered"
    assert [m["seq"] for m in live] == [41, 42]
    assert hub.stats.bus_resumes == {"recovered": 1}


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        (9, "too_old"),  # trimmed away
        (20, "too_old"),  # the position itself trimmed away: the stream cannot prove 21 follows
        (45, "ahead_of_stream"),
    ],
)
async def test_stream_that_no_longer_reaches_back_is_not_recovered(
    buses: Buses, position: int, reason: str
) -> None:
    engine = await buses()
    sent = await publish(engine, 0, 29)
    admin = Redis.from_url(REDIS_URL)
    try:
        await admin.xtrim(engine.keys.stream("trades.SPY"), minid="21-0", approximate=False)
        assert await admin.xlen(engine.keys.stream("trades.SPY")) == 10  # 21..30 remain
    finally:
        await admin.aclose()
    async with running_hub(await buses()) as hub, client(hub) as c:
        ack, status = await resume(c, position, sent[0].epoch, 0)
        wrong_epoch, _ = await resume_again(c, 25, "other")
        ack_21, *replayed, status_21 = await resume_again(c, 21, sent[0].epoch, 9)
    rec = ack["recovery"]["trades.SPY"]
    assert rec["recovered"] is False and rec["replayed"] == 0 and rec["reason"] == reason
    assert status["state"] == "not_recovered" and status["reason"] == reason
    assert wrong_epoch["recovery"]["trades.SPY"]["reason"] == "epoch_changed"
    assert ack_21["recovery"]["trades.SPY"]["recovered"] is True  # from the oldest kept on
    assert [m["seq"] for m in replayed] == list(range(22, 31))
    assert status_21["state"] == "recovered"


async def resume_again(c: Client, seq: int, epoch: str, count: int = 0) -> list[dict[str, Any]]:
    await c.reply("unsubscribe", channels=["trades.SPY"])
    return await resume(c, seq, epoch, count)


class GatedHistory:
    """Wraps a bus's ``history``: the first call waits for ``release`` (before or after reading
    the stream), so messages published meanwhile are in flight while the hub resumes."""

    def __init__(self, bus: Any, *, read_first: bool) -> None:
        self._real = bus.history
        self.read_first = read_first
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(
        self, channel: str, after_seq: int, limit: int, *, payload_fragments: bool = False
    ) -> tuple[str, list[Envelope]]:
        self.calls += 1
        if self.calls > 1:
            return await self._real(channel, after_seq, limit, payload_fragments=payload_fragments)
        result = None
        if self.read_first:
            result = await self._real(
                channel, after_seq, limit, payload_fragments=payload_fragments
            )
        self.started.set()
        await self.release.wait()
        if result is None:
            result = await self._real(
                channel, after_seq, limit, payload_fragments=payload_fragments
            )
        return result


@pytest.mark.parametrize("read_first", [True, False], ids=["read-then-wait", "wait-then-read"])
@pytest.mark.parametrize("late_hub", [True, False], ids=["late-hub", "small-ring"])
async def test_live_messages_during_the_read_are_neither_lost_nor_repeated(
    buses: Buses, monkeypatch: pytest.MonkeyPatch, read_first: bool, late_hub: bool
) -> None:
    """The hub either never saw 1..20 (started after them) or keeps only 4 of them; 21..120
    are published while the hub reads the bus's history, held open by ``GatedHistory``."""
    engine = await buses()
    hub_bus = await buses()
    gate = GatedHistory(hub_bus, read_first=read_first)
    monkeypatch.setattr(hub_bus, "history", gate)
    total = 120
    published = asyncio.Event()

    async def publisher() -> None:
        for n in range(20, total):
            await engine.publish("trades.SPY", {"i": n})
            if n == 60:
                published.set()
            await asyncio.sleep(0.001)

    sent = await publish(engine, 0, 19) if late_hub else []
    async with running_hub(hub_bus, history_size=1000 if late_hub else 4) as hub, client(hub) as c:
        if not late_hub:
            sent = await publish(engine, 0, 19)
            await asyncio.sleep(0.05)
        position = {"trades.SPY": {"epoch": sent[0].epoch, "seq": 2}}
        await c.request("subscribe", channels=["trades.SPY"], resume=position)
        await asyncio.wait_for(gate.started.wait(), 5.0)
        task = asyncio.create_task(publisher())
        await asyncio.wait_for(published.wait(), 5.0)
        pong = await c.reply("ping")  # served while the history read is held
        gate.release.set()
        got: list[dict[str, Any]] = []
        while not got or got[-1].get("seq") != total:
            got += await c.messages(1, timeout=5.0)
        await task
    ack, *rest = got
    updates = [m for m in rest if m["type"] == "update"]
    statuses = [m for m in rest if m["type"] == "status"]
    assert pong["type"] == "pong"
    assert ack["type"] == "ack" and ack["recovery"]["trades.SPY"]["recovered"] is True
    assert [m["seq"] for m in updates] == list(range(3, total + 1))  # no gap, no duplicate
    assert [m["data"]["i"] for m in updates] == list(range(2, total))
    assert [s["state"] for s in statuses] == ["recovered"]
    replayed = ack["recovery"]["trades.SPY"]["replayed"]
    assert rest[replayed]["type"] == "status"  # the status closes the replay; live follows
    assert replayed >= 18  # at least 3..20, published before the subscribe
    # held reads of a ring too small for what came meanwhile are read again, past the first run
    assert gate.calls >= (2 if read_first and not late_hub else 1)


class HeldConsumer:
    """Wraps a bus's ``subscribe`` so the hub's consumer can be held: while ``flowing`` is
    clear, the batch it took from the bus waits before the hub sees it (a hub behind the stream,
    as when pub/sub delivery lags the history read)."""

    def __init__(self, bus: Any) -> None:
        self._subscribe = bus.subscribe
        self.flowing = asyncio.Event()
        self.flowing.set()

    def __call__(self, pattern: str, **kwargs: Any) -> Any:
        sub = self._subscribe(pattern, **kwargs)
        take = sub.next_batch

        async def next_batch(max_items: int = 1024) -> list[Envelope]:
            batch: list[Envelope] = await take(max_items)
            await self.flowing.wait()
            return batch

        sub.next_batch = next_batch
        return sub


@pytest.mark.parametrize("late_hub", [True, False], ids=["late-hub", "small-ring"])
async def test_messages_still_on_their_way_to_the_hub_come_once(
    buses: Buses, monkeypatch: pytest.MonkeyPatch, late_hub: bool
) -> None:
    """The stream holds 11..15 before the hub received them: a late hub replays them and drops
    the copies arriving afterwards; a hub holding the channel replays up to what it sent its
    subscribers (10) and lets 11..15 come live."""
    engine = await buses()
    hub_bus = await buses()
    held = HeldConsumer(hub_bus)
    monkeypatch.setattr(hub_bus, "subscribe", held)
    sent = await publish(engine, 0, 9) if late_hub else []
    async with running_hub(hub_bus, history_size=4) as hub, client(hub) as c:
        if not late_hub:
            async with client(hub) as watcher:
                await watcher.reply("subscribe", channels=["trades.SPY"])
                sent = await publish(engine, 0, 9)
                await watcher.messages(10, timeout=5.0)
        held.flowing.clear()
        await publish(engine, 10, 14)  # seq 11..15: stored, held on their way to the hub
        await asyncio.sleep(0.05)
        ack, *replayed, status = await resume(c, 3, sent[0].epoch, 12 if late_hub else 7)
        held.flowing.set()
        await publish(engine, 15, 15)
        live = await c.messages(1 if late_hub else 6, timeout=5.0)
    assert ack["recovery"]["trades.SPY"]["recovered"] is True
    assert status["state"] == "recovered"
    assert [m["seq"] for m in replayed + live] == list(range(4, 17))
    assert [m["data"]["i"] for m in replayed + live] == list(range(3, 16))
    assert status["to_seq"] == (15 if late_hub else 10)


async def test_bus_errors_and_slowness_answer_bus_unavailable(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*_args: Any, **_kwargs: Any) -> tuple[str, list[Envelope]]:
        raise BusUnavailable("redis://127.0.0.1:6379/0", "connection refused")

    async def hanging(*_args: Any, **_kwargs: Any) -> tuple[str, list[Envelope]]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with (
        hub_factory(history_size=3, history_read_timeout_s=0.2) as (hub, bus),
        client(hub) as c,
    ):
        for i in range(10):
            bus.publish_nowait("trades.SPY", {"i": i})
        for fake in (failing, hanging):
            monkeypatch.setattr(bus, "history", fake)
            ack, status = await resume_again(c, 2, "ep1")
            rec = ack["recovery"]["trades.SPY"]
            assert rec == {
                "recovered": False,
                "replayed": 0,
                "epoch": "ep1",
                "seq": 10,
                "reason": "bus_unavailable",
            }
            assert status["state"] == "not_recovered" and status["reason"] == "bus_unavailable"
        bus.publish_nowait("trades.SPY", {"i": 10})  # subscribed live all the same
        (live,) = await c.messages(1)
    assert live["seq"] == 11
    assert hub.stats.bus_resumes == {"bus_unavailable": 2}


async def test_unsubscribe_or_close_during_the_read(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hub_factory(history_size=3) as (hub, bus):
        gate = GatedHistory(bus, read_first=False)
        monkeypatch.setattr(bus, "history", gate)
        for i in range(10):
            bus.publish_nowait("trades.SPY", {"i": i})
        async with client(hub) as c:
            position = {"trades.SPY": {"epoch": "ep1", "seq": 2}}
            await c.request("subscribe", channels=["trades.SPY"], resume=position)
            await asyncio.wait_for(gate.started.wait(), 5.0)
            unsub = await c.reply("unsubscribe", channels=["trades.SPY"])
            gate.release.set()
            (ack,) = await c.messages(1)
            bus.publish_nowait("trades.SPY", {"i": 10})
            pong = await c.reply("ping")
        assert unsub["channels"] == [] and ack["channels"] == []
        assert pong["type"] == "pong"  # nothing of trades.SPY came in between
        gate.calls, gate.started, gate.release = 0, asyncio.Event(), asyncio.Event()
        async with client(hub) as c:
            await c.request("subscribe", channels=["trades.SPY"], resume=position)
            await asyncio.wait_for(gate.started.wait(), 5.0)
        gate.release.set()
        await asyncio.sleep(0.05)
        assert hub.health()["connections"] == 0

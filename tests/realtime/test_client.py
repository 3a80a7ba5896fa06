"""The Python client (realtime/client.py) against real hubs on port 0.

What the client delivers is checked against what the test published on the bus (payload per
``seq``, the bus's own numbering), and against the protocol's resume rules across a dropped
connection (recovered from the ring), a hub restart on a MemoryBus (nothing to recover:
not_recovered, then a Gap naming exactly the messages published while no hub ran) and a hub
restart on Redis (recovered from the stream, nothing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, serve

from protocol.messages import ResumePosition, Snapshot, Status, StatusState, Update
from protocol.schemas import check_payload
from realtime.bus import MemoryBus
from realtime.bus.redis import RedisBus, RedisBusConfig
from realtime.client import (
    ClientConfig,
    ClientError,
    Connected,
    Disconnected,
    ErrorKind,
    Event,
    Gap,
    HubClient,
    RequestFailed,
    format_event,
)
from realtime.hub import Hub, HubConfig
from realtime.hub.server import TICK_MAX_MESSAGES
from tests.support import REDIS_URL, until

TRADES, QUOTES = "trades.SPY", "quotes.SPY"
EPOCH = "ep1"
#: Fast reconnects and a deterministic jitter for tests.
FAST: dict[str, Any] = {"reconnect_min_s": 0.02, "reconnect_max_s": 0.2, "request_timeout_s": 5.0}


@asynccontextmanager
async def running_hub(bus: Any, port: int = 0, **overrides: Any) -> AsyncIterator[Hub]:
    config = replace(HubConfig(port=port, heartbeat_interval_s=30.0), **overrides)
    hub = Hub(config, bus)
    await hub.start()
    if not config.implicit_channels:
        hub.declare([TRADES, QUOTES])
    try:
        yield hub
    finally:
        await hub.stop()


def hub_client(port: int, **overrides: Any) -> HubClient:
    config = ClientConfig(url=f"ws://127.0.0.1:{port}/ws", **{**FAST, **overrides})
    return HubClient(config, rng=random.Random(7))


async def next_event(client: HubClient, timeout: float = 5.0) -> Event:
    async with asyncio.timeout(timeout):
        return await anext(client)


async def events_until(client: HubClient, done: Any, timeout: float = 5.0) -> list[Event]:
    """Events up to and including the first for which ``done(event)`` holds."""
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in client:
            out.append(event)
            if done(event):
                return out
    raise AssertionError(f"stream ended: {out}")


def is_update(channel: str, seq: int) -> Any:
    return lambda e: isinstance(e, Update) and e.channel == channel and e.seq == seq


def updates(events: list[Event], channel: str = TRADES) -> list[Update]:
    return [e for e in events if isinstance(e, Update) and e.channel == channel]


def publish_trades(bus: Any, first: int, last: int) -> list[Any]:
    return [bus.publish_nowait(TRADES, {"i": n, "px": 430 + n / 4}) for n in range(first, last + 1)]


async def test_receives_in_order_with_acks_snapshots_batches_list_ping_and_unsubscribe() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, hub_client(hub.port) as client:
        assert isinstance(await next_event(client), Connected)
        quote = {"bid": 430.0, "ask": 430.02}
        bus.publish_nowait(QUOTES, quote)
        await until(lambda: hub.stats.messages_in == 1)
        ack = await client.subscribe([TRADES, QUOTES])
        assert ack.op == "subscribe" and set(ack.channels) == {TRADES, QUOTES}
        assert ack.limits is not None and ack.limits.max_pending_messages == 10_000
        snap = await next_event(client)
        assert isinstance(snap, Snapshot) and (snap.channel, snap.seq, snap.data) == (
            QUOTES,
            1,
            quote,
        )

        # 600 trades in one loop turn: the hub sends them as batch frames, unpacked in order.
        sent = publish_trades(bus, 1, 600)
        events = await events_until(client, is_update(TRADES, 600))
        got = updates(events)
        assert [(u.seq, u.data) for u in got] == [(e.seq, e.payload) for e in sent]
        assert all(
            u.epoch == EPOCH and u.ts.publish == e.publish_ns
            for u, e in zip(got, sent, strict=True)
        )
        assert client.stats.frames < 600  # batches were unpacked, not one frame per message
        tracker = client.tracker(TRADES)
        assert tracker is not None
        assert (tracker.received, tracker.missing, tracker.duplicates) == (600, 0, 0)
        assert client.positions() == {
            TRADES: ResumePosition(EPOCH, 600),
            QUOTES: ResumePosition(EPOCH, 1),
        }

        infos = {i.name: i for i in await client.list_channels()}
        assert (infos[TRADES].seq, infos[TRADES].subscribers) == (600, 1)
        assert infos[QUOTES].delivery == "latest-value"
        assert 0 < await client.ping() < 1.0

        left = await client.unsubscribe([TRADES])
        assert left is not None and left.channels == (QUOTES,)
        publish_trades(bus, 601, 610)
        bus.publish_nowait(QUOTES, {"bid": 431.0, "ask": 431.02})
        events = await events_until(client, is_update(QUOTES, 2))
        assert updates(events) == []  # the trades published after the ack never arrive
        assert client.subscriptions == (QUOTES,)


async def test_dropped_connection_resumes_recovered_from_the_ring() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, hub_client(hub.port) as client:
        await client.subscribe([TRADES])
        publish_trades(bus, 1, 20)
        await events_until(client, is_update(TRADES, 20))
        client.drop_connection()
        missed = publish_trades(bus, 21, 30)  # published while the client is away
        events = await events_until(
            client, lambda e: isinstance(e, Status) and e.state is StatusState.RECOVERED
        )
        dropped, connected = events[0], events[1]
        assert isinstance(dropped, Disconnected) and dropped.code is None
        assert dropped.reason == "dropped by the application"
        assert isinstance(connected, Connected) and connected.reconnects == 1
        status = events[-1]
        assert isinstance(status, Status)
        assert (status.count, status.to_seq, status.epoch) == (10, 30, EPOCH)
        assert [(u.seq, u.data) for u in updates(events)] == [(e.seq, e.payload) for e in missed]
        publish_trades(bus, 31, 35)
        live = updates(await events_until(client, is_update(TRADES, 35)))
        assert [u.seq for u in live] == [31, 32, 33, 34, 35]
        tracker = client.tracker(TRADES)
        assert tracker is not None and (tracker.missing, tracker.duplicates) == (0, 0)
        assert client.stats.gaps == 0


async def test_hub_restart_on_a_memory_bus_is_not_recovered_and_the_gap_is_an_event() -> None:
    """A MemoryBus keeps no history and the new hub never held the channel: resume cannot be
    proven (protocol/README.md, "Resume rules": the bus does not hold the position and the hub
    holds nothing, so ``ahead_of_stream``). The new hub declares trades only: the client's
    resubscribe is refused for quotes (an error event) and sent again without it."""
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as first:
        port = first.port
        client = hub_client(port)
        client.start()
        await client.subscribe([TRADES, QUOTES])
        publish_trades(bus, 1, 50)
        await events_until(client, is_update(TRADES, 50))
    lost = publish_trades(bus, 51, 60)  # no hub runs: nobody receives these
    second = Hub(HubConfig(port=port, heartbeat_interval_s=30.0), bus)
    try:
        event = await next_event(client)
        assert isinstance(event, Disconnected) and event.code == 1001
        await second.start()
        second.declare([TRADES])
        events = await events_until(
            client, lambda e: isinstance(e, Status) and e.state is StatusState.NOT_RECOVERED
        )
        refused = [e for e in events if isinstance(e, ClientError)]
        assert len(refused) == 1 and refused[0].kind is ErrorKind.SERVER
        assert refused[0].error is not None and refused[0].error.code == "unknown_channel"
        assert refused[0].channel == QUOTES
        assert client.subscriptions == (TRADES,)
        status = events[-1]
        assert isinstance(status, Status) and status.reason == "ahead_of_stream"
        assert client.stats.connects == 2

        publish_trades(bus, 61, 70)
        events = await events_until(client, is_update(TRADES, 70))
    finally:
        await client.close()
        await second.stop()
    gap = events[0]
    assert isinstance(gap, Gap)
    assert (gap.epoch, gap.from_seq, gap.to_seq, gap.count) == (EPOCH, 51, 60, len(lost))
    assert [u.seq for u in updates(events)] == list(range(61, 71))
    tracker = client.tracker(TRADES)
    assert tracker is not None
    assert (tracker.received, tracker.missing, tracker.duplicates) == (60, 10, 0)


async def test_hub_restart_on_redis_recovers_from_the_stream() -> None:
    prefix = f"nautilus-test:{secrets.token_hex(4)}:"
    config = RedisBusConfig(url=REDIS_URL, key_prefix=prefix)
    engine, first_bus, second_bus = [await RedisBus.connect(config) for _ in range(3)]
    try:
        async with running_hub(first_bus, implicit_channels=True) as first:
            port = first.port
            client = hub_client(port)
            client.start()
            await client.subscribe([TRADES])
            sent = [await engine.publish(TRADES, {"i": n}) for n in range(1, 31)]
            await events_until(client, is_update(TRADES, 30))
        missed = [await engine.publish(TRADES, {"i": n}) for n in range(31, 41)]
        try:
            async with running_hub(second_bus, port=port, implicit_channels=True):
                events = await events_until(
                    client, lambda e: isinstance(e, Status) and e.state is StatusState.RECOVERED
                )
                live = [await engine.publish(TRADES, {"i": n}) for n in range(41, 46)]
                events += await events_until(client, is_update(TRADES, 45))
        finally:
            await client.close()
    finally:
        for bus in (engine, first_bus, second_bus):
            await bus.close()
        admin = Redis.from_url(REDIS_URL)
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
    status = next(e for e in events if isinstance(e, Status))
    assert (status.count, status.to_seq, status.epoch) == (10, 40, sent[0].epoch)
    got = updates(events)
    # seq n carries {"i": n} (a fresh stream); the bus hands back encoded payloads
    assert [(u.seq, u.data) for u in got] == [(e.seq, {"i": e.seq}) for e in missed + live]
    assert not [e for e in events if isinstance(e, Gap | ClientError)]


async def test_unknown_and_malformed_channels_raise_and_keep_the_connection() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, hub_client(hub.port) as client:
        assert isinstance(await next_event(client), Connected)
        with pytest.raises(RequestFailed) as info:
            await client.subscribe([TRADES, "trades.NOPE"])
        assert (info.value.error.code, info.value.error.field) == ("unknown_channel", "channels[1]")
        assert client.subscriptions == ()  # all or nothing
        error = await next_event(client)
        assert isinstance(error, ClientError) and error.kind is ErrorKind.SERVER
        assert error.channel == "trades.NOPE"
        with pytest.raises(RequestFailed) as info:
            await client.subscribe(["nope"])
        assert info.value.error.code == "bad_channel"
        assert isinstance(await next_event(client), ClientError)
        await client.subscribe([TRADES])
        publish_trades(bus, 1, 3)
        events = await events_until(client, is_update(TRADES, 3))
        assert [u.seq for u in updates(events)] == [1, 2, 3]
        assert client.stats.connects == 1 and client.stats.errors == 2


def _update(seq: Any, data: Any = None) -> dict[str, Any]:
    ts = {"event": 1, "publish": 2, "hub": 3}
    return {"type": "update", "channel": TRADES, "seq": seq, "epoch": EPOCH, "ts": ts, "data": data}


async def test_malformed_frames_become_error_events_and_the_rest_is_delivered() -> None:
    """A scripted server sends what no hub should: each bad frame or message is one error
    event; good messages around them (even inside the same batch) are delivered."""
    script = [
        b"{not json",
        orjson.dumps({"type": "martian"}),
        orjson.dumps(_update("7", {"i": 0})),  # seq as a string
        orjson.dumps(
            {"type": "batch", "messages": [_update(1, {"i": 1}), 17, _update(2, {"i": 2})]}
        ),
        orjson.dumps({"type": "status", "channel": TRADES, "state": "sleepy"}),
        orjson.dumps(_update(3, {"i": 3})),
    ]

    async def handler(ws: ServerConnection) -> None:
        request = orjson.loads(await ws.recv())
        await ws.send(
            orjson.dumps(
                {"type": "ack", "id": request["id"], "op": "subscribe", "channels": [TRADES]}
            ).decode()
        )
        for frame in script:
            await ws.send(frame.decode())
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with hub_client(port) as client:
            await client.subscribe([TRADES])
            events = await events_until(client, is_update(TRADES, 3))
    errors = [e for e in events if isinstance(e, ClientError)]
    assert [e.kind for e in errors] == [ErrorKind.MALFORMED] * 5
    assert "not valid JSON" in errors[0].message and errors[0].frame == "{not json"
    assert "martian" in errors[1].message
    assert "seq must be a positive integer" in errors[2].message
    assert "sleepy" in errors[4].message
    assert [(u.seq, u.data) for u in updates(events)] == [(n, {"i": n}) for n in (1, 2, 3)]
    assert client.stats.connects == 1


async def test_schema_invalid_payloads_are_error_events_and_advance_the_position() -> None:
    def validate(channel: str, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("px"), float):
            raise ValueError(f"{channel}: px must be a number")

    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub:
        config = ClientConfig(url=f"ws://127.0.0.1:{hub.port}/ws", **FAST)
        async with HubClient(config, validate=validate) as client:
            await client.subscribe([TRADES])
            for payload in ({"px": 1.5}, {"px": "1.5"}, {"px": 2.5}):
                bus.publish_nowait(TRADES, payload)
            events = await events_until(client, is_update(TRADES, 3))
    kinds = [(type(e).__name__, getattr(e, "seq", None)) for e in events[1:]]
    assert kinds == [("Update", 1), ("ClientError", None), ("Update", 3)]
    error = events[2]
    assert isinstance(error, ClientError) and error.kind is ErrorKind.SCHEMA
    assert error.channel == TRADES and "px must be a number" in error.message
    assert client.stats.gaps == 0 and client.positions()[TRADES].seq == 3


async def test_the_platforms_own_schemas_check_payloads_and_name_the_field() -> None:
    """``validate=check_payload``: a trade missing its price is an error event naming
    ``data.p``; the connection and the trades around it are untouched."""
    good = {"s": "SPY", "t": 1, "r": 1, "p": 430.25, "q": 100.0}
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub:
        config = ClientConfig(url=f"ws://127.0.0.1:{hub.port}/ws", **FAST)
        async with HubClient(config, validate=check_payload) as client:
            await client.subscribe(["trades.SPY"])
            for payload in (good, {k: v for k, v in good.items() if k != "p"}, good):
                bus.publish_nowait("trades.SPY", payload)
            events = await events_until(client, is_update("trades.SPY", 3))
    kinds = [(type(e).__name__, getattr(e, "seq", None)) for e in events[1:]]
    assert kinds == [("Update", 1), ("ClientError", None), ("Update", 3)]
    error = events[2]
    assert isinstance(error, ClientError) and error.kind is ErrorKind.SCHEMA
    assert error.channel == "trades.SPY" and "data.p: missing" in error.message


async def test_silent_hub_trips_the_heartbeat_watchdog_and_the_client_resumes() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with (
        running_hub(bus) as hub,  # heartbeats every 30 s: silent for this client
        hub_client(hub.port, heartbeat_interval_s=0.1, missed_heartbeats=2) as client,
    ):
        await client.subscribe([TRADES])
        publish_trades(bus, 1, 5)
        await events_until(client, is_update(TRADES, 5))
        publish_trades(bus, 6, 8)
        events = await events_until(
            client, lambda e: isinstance(e, Status) and e.state is StatusState.RECOVERED
        )
    disconnected = next(e for e in events if isinstance(e, Disconnected))
    assert disconnected.reason == "heartbeat timeout: no frame for 0.2 s"
    # 6..8 either arrived before the watchdog fired or were replayed after: each exactly once.
    assert [u.seq for u in updates(events)] == [6, 7, 8]
    tracker = client.tracker(TRADES)
    assert tracker is not None and (tracker.missing, tracker.duplicates) == (0, 0)


async def test_heartbeats_keep_a_quiet_connection_alive() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with (
        running_hub(bus, heartbeat_interval_s=0.02) as hub,
        hub_client(hub.port, heartbeat_interval_s=0.05, missed_heartbeats=3) as client,
    ):
        await until(lambda: client.stats.heartbeats >= 30)
        assert client.stats.connects == 1


async def test_a_full_queue_pushes_back_and_a_request_inside_the_loop_does_not_deadlock() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, hub_client(hub.port, max_queue=50) as client:
        await client.subscribe([TRADES])
        bus.publish_nowait(QUOTES, {"bid": 1.0})
        sent = []
        for chunk in range(100):  # 10,000 trades over 100 loop turns: many frames
            sent += publish_trades(bus, chunk * 100 + 1, chunk * 100 + 100)
            await asyncio.sleep(0)
        await until(lambda: client.blocked)
        # the client stopped reading: the rest waits in the socket and the hub, not here;
        # what is queued is the bound plus one frame (at most one hub tick of messages)
        assert client.stats.messages < len(sent)
        assert client.queued <= 50 + TICK_MAX_MESSAGES
        seen: list[Update] = []
        async with asyncio.timeout(10):
            async for event in client:
                if isinstance(event, Update) and event.channel == TRADES:
                    seen.append(event)
                    if event.seq == 10:  # a request while the queue is full
                        ack = await client.subscribe([QUOTES])
                        assert set(ack.channels) == {TRADES, QUOTES}
                    if event.seq == len(sent):
                        break
        assert [u.seq for u in seen] == [e.seq for e in sent]
        assert client.stats.connects == 1


async def test_command_line_prints_messages() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub:
        url = f"ws://127.0.0.1:{hub.port}/ws"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime.client", url, TRADES, "--count", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(20):
                while not (line := await proc.stderr.readline()).startswith(b"subscribed"):
                    assert line, "the client exited before subscribing"
            assert line.decode().split() == ["subscribed", TRADES]
            sent = publish_trades(bus, 1, 3)
            async with asyncio.timeout(20):
                out, err = await proc.communicate()
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines == [
        f"{TRADES} update {EPOCH}:{e.seq} {orjson.dumps(e.payload).decode()}" for e in sent
    ]
    assert format_event(Gap(TRADES, EPOCH, 4, 9)) == f"{TRADES} gap {EPOCH}:4..9"


def test_config_rejects_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        ClientConfig(url="http://127.0.0.1:8600/")
    with pytest.raises(ValueError, match="reconnect_min_s"):
        ClientConfig(reconnect_min_s=2.0, reconnect_max_s=1.0)
    with pytest.raises(ValueError, match="missed_heartbeats"):
        ClientConfig(missed_heartbeats=0)


async def test_list_channels_follows_every_page() -> None:
    bus = MemoryBus(epoch=EPOCH)
    names = [f"trades.S{n:03d}" for n in range(25)]
    async with running_hub(bus, max_list_channels=10) as hub, hub_client(hub.port) as client:
        hub.declare(names)
        listed = [i.name for i in await client.list_channels()]
        # three pages of at most 10, in name order, nothing twice, nothing left out
        assert listed == sorted({*names, TRADES, QUOTES})

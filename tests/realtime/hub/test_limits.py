"""The hub's remaining limits (issue 16): the hub-wide outbound budget over all slow clients, the
replay work a connection may cause, the paged ``list``.

Work is counted (bytes queued, messages replayed), never timed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime.bus import MemoryBus
from realtime.bus.base import Envelope
from realtime.clock import ManualClock
from realtime.hub import Hub, HubConfig
from realtime.hub.auth import ALLOW_ALL, issue_token
from realtime.hub.channels import ChannelRegistry
from realtime.hub.metrics import HubStats
from realtime.hub.session import Action, ReadHistory, Reply, Session
from tests.realtime.hub.conftest import Client, HubFactory, client, resume_flood
from tests.realtime.hub.test_client_js import browser_page, running_hub, start_client
from tests.support import until

PAD = "x" * 8000  # ~8 KB per message: sockets fill after a few hundred


@asynccontextmanager
async def non_reading(hub: Hub, channels: list[str]) -> AsyncIterator[ClientConnection]:
    """A client that subscribes, then never reads: a small receive buffer, reading paused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.port))
    async with connect(f"ws://127.0.0.1:{hub.port}/", sock=sock, max_queue=1) as ws:
        reader = Client(ws)
        ack = await reader.reply("subscribe", channels=channels, snapshot=False)
        assert ack["type"] == "ack"
        ws.transport.pause_reading()
        yield ws


async def publish(hub: Hub, bus: MemoryBus, channel: str, count: int, pad: str) -> None:
    """Publish ``count`` messages and wait until the hub has taken all of them."""
    target = hub.stats.messages_in + count
    for i in range(count):
        bus.publish_nowait(channel, {"i": i, "pad": pad})
    await until(lambda: hub.stats.messages_in >= target, timeout_s=10)


async def dropped(ws: ClientConnection, served: Callable[[dict[str, Any]], bool]) -> bool:
    """Read what the hub sent ``ws`` until it ends (``True``: the hub dropped it) or until a
    message ``served`` shows the hub kept serving it (``False``)."""
    ws.transport.resume_reading()
    try:
        async with asyncio.timeout(10):
            async for raw in ws:
                frame = orjson.loads(raw)
                for msg in frame["messages"] if frame["type"] == "batch" else [frame]:
                    if served(msg):
                        return False
    except ConnectionClosed:
        return True
    return True


# --- the hub-wide outbound budget ----------------------------------------------------------------


async def test_the_largest_slow_clients_are_dropped_past_the_outbound_budget(
    hub_factory: HubFactory,
) -> None:
    budget = 4 * 1024 * 1024
    async with (
        hub_factory(
            slow_write_buffer_bytes=64 * 1024,
            outbound_budget_bytes=budget,
            max_pending_messages=1_000_000,
        ) as (hub, bus),
        AsyncExitStack() as stack,
    ):
        hub.declare(["trades.IWM"])
        healthy = await stack.enter_async_context(client(hub))
        await healthy.reply("subscribe", channels=["trades.QQQ"])
        # ordered-lossless subscribers grow a backlog: 8 MB each on trades.SPY, 1 MB each on
        # trades.IWM; latest-value ones (quotes.SPY) keep one value each
        big = [await stack.enter_async_context(non_reading(hub, ["trades.SPY"])) for _ in range(3)]
        small = [
            await stack.enter_async_context(non_reading(hub, ["trades.IWM"])) for _ in range(3)
        ]
        latest = [
            await stack.enter_async_context(non_reading(hub, ["quotes.SPY"])) for _ in range(3)
        ]
        for _ in range(10):  # 10 x 100 x 8 KB on trades.SPY and quotes.SPY
            await publish(hub, bus, "trades.SPY", 100, PAD)
            await publish(hub, bus, "quotes.SPY", 100, PAD)
            await publish(hub, bus, "trades.IWM", 100, PAD[:1000])
            bus.publish_nowait("trades.QQQ", {"i": 0})
            await healthy.messages(1)  # the healthy client keeps receiving meanwhile
        await until(lambda: hub.stats.budget_disconnects >= len(big))
        # what the slow clients hold together is back within the budget
        await until(lambda: hub.health()["lag"]["slow_queued_bytes"] <= budget)
        assert hub.stats.budget_disconnects == len(big)
        assert hub.health()["connections"] == 1 + len(small) + len(latest)
        # the largest went; the smaller lossless backlogs are delivered in full, and the
        # latest-value clients were conflated, not dropped
        assert [await dropped(ws, lambda m: m.get("state") == "conflated") for ws in latest] == [
            False
        ] * len(latest)
        assert [await dropped(ws, lambda m: m.get("seq") == 1000) for ws in small] == [False] * len(
            small
        )
        assert [await dropped(ws, lambda m: False) for ws in big] == [True] * len(big)
        assert (await healthy.reply("ping"))["type"] == "pong"
        assert hub.stats.slow_disconnects == 0  # no backlog overflowed on its own


# --- replay work per connection ------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class Replays:
    """One session over a registry with ``trades.SPY`` (lossless) and ``quotes.SPY``
    (latest-value), each with ``published`` messages in its ring; time moved by hand."""

    def __init__(self, published: int = 1000, **overrides: Any) -> None:
        self.config = replace(HubConfig(), max_messages_per_second=10**6, **overrides)
        self.registry = ChannelRegistry(10_000)
        self.stats = HubStats()
        self.now = T0
        for name in ("trades.SPY", "quotes.SPY"):
            ch = self.registry.open(name)
            for seq in range(1, published + 1):
                ch.accept(Envelope(name, seq, "ep1", T0, T0, {"i": seq, "pad": "x" * 60}), T0)
        self.session = Session(self.config, self.registry, ALLOW_ALL, self.stats, self.now)
        self.next_id = 0

    def send(self, op: str, **fields: Any) -> list[Action]:
        self.next_id += 1
        frame = orjson.dumps({"op": op, "id": self.next_id, **fields}).decode()
        return self.session.receive(frame, self.now)

    def resume(self, channel: str, seq: int, epoch: str = "ep1") -> dict[str, Any]:
        """Subscribe with resume from ``seq``, unsubscribe; the channel's recovery entry, with
        the messages the reply carried."""
        actions = self.send(
            "subscribe", channels=[channel], resume={channel: {"epoch": epoch, "seq": seq}}
        )
        self.send("unsubscribe", channels=[channel])
        messages = unpacked(actions)
        ack = messages[0]
        assert ack["type"] == "ack", ack
        return {**ack["recovery"][channel], "messages": messages[1:]}


def unpacked(actions: list[Action]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for action in actions:
        if isinstance(action, Reply):
            frame = orjson.loads(action.payload)
            out.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    return out


def test_a_resume_over_the_request_cap_is_not_recovered_and_replays_nothing() -> None:
    h = Replays(max_replay_messages=100, replay_messages_per_second=100)
    over = h.resume("trades.SPY", 899)  # 101 messages
    assert (over["recovered"], over["reason"], over["replayed"]) == (False, "replay_limit", 0)
    (status,) = over["messages"]
    assert (status["state"], status["reason"], status["to_seq"]) == (
        "not_recovered",
        "replay_limit",
        1000,
    )
    within = h.resume("trades.SPY", 900)  # exactly 100
    assert (within["recovered"], within["replayed"]) == (True, 100)
    assert [m["seq"] for m in within["messages"][:-1]] == list(range(901, 1001))
    # a latest-value channel refused its replay gets its snapshot, as for any not_recovered
    h.now += 10**9
    latest = h.resume("quotes.SPY", 0)
    assert latest["reason"] == "replay_limit"
    assert [m["type"] for m in latest["messages"]] == ["status", "snapshot"]
    assert (h.stats.replays_refused, h.stats.replayed_messages) == (2, 100)


def test_a_resume_over_the_byte_cap_is_not_recovered() -> None:
    h = Replays(max_replay_bytes=20_000, replay_bytes_per_second=20_000)
    size = len(h.registry.by_name["quotes.SPY"].snapshot(T0) or b"")  # about one update
    assert h.resume("trades.SPY", 1000 - 2 * 20_000 // size)["reason"] == "replay_limit"
    within = h.resume("trades.SPY", 1000 - 20_000 // (2 * size))
    assert within["recovered"]
    assert h.stats.replayed_bytes <= 20_000


def test_replay_work_per_connection_is_bounded_by_its_budget() -> None:
    """The attack of issue 16: resume from 0, unsubscribe, again, under the request rate limit:
    the messages replayed are at most the burst plus the rate times the time elapsed."""
    rate, burst = 2_000, 3_000
    h = Replays(max_replay_messages=burst, replay_messages_per_second=rate)
    outcomes = []
    for _ in range(500):  # 500 requests over 10 s (20 ms apart)
        outcomes.append(h.resume("trades.SPY", 0))
        h.now += 20 * MS
    elapsed_s = 500 * 20 * MS / 1e9
    # without the budget: 500 x 1000 replayed; with it, at most the budget's allowance
    assert h.stats.replayed_messages <= burst + rate * elapsed_s
    recovered = sum(o["recovered"] for o in outcomes)
    assert recovered * 1000 == h.stats.replayed_messages
    assert recovered + h.stats.replays_refused == 500
    assert {o["reason"] for o in outcomes if not o["recovered"]} == {"replay_limit"}
    assert recovered >= (burst + rate * (elapsed_s - 1)) // 1000  # the budget is used, too
    # resumes that replay little keep working while the budget is spent on big ones
    assert h.resume("trades.SPY", 1000)["recovered"]


def test_a_resume_needing_the_bus_is_not_read_once_the_budget_is_spent() -> None:
    h = Replays(max_replay_messages=1_000, replay_messages_per_second=1)
    assert h.resume("trades.SPY", 0)["recovered"]  # spends the whole burst
    h.registry.open("trades.NEW")  # the hub holds nothing of it: a resume must read the bus
    actions = h.send(
        "subscribe", channels=["trades.NEW"], resume={"trades.NEW": {"epoch": "ep1", "seq": 5}}
    )
    assert not any(isinstance(a, ReadHistory) for a in actions)
    ack = unpacked(actions)[0]
    assert ack["recovery"]["trades.NEW"]["reason"] == "replay_limit"
    h.now += 10 * 10**9  # 10 messages' worth later, the bus is read again
    actions = h.send("subscribe", channels=["trades.SPY"], snapshot=False)
    h.send("unsubscribe", channels=["trades.NEW"])
    actions = h.send(
        "subscribe", channels=["trades.NEW"], resume={"trades.NEW": {"epoch": "ep1", "seq": 5}}
    )
    assert any(isinstance(a, ReadHistory) for a in actions)


async def test_a_client_looping_resume_from_0_without_reading_costs_bounded_work() -> None:
    """Over a real socket, a hub clock that never moves: the budget never refills, so the whole
    loop replays at most one burst, whatever it sends; once it reads, every request is answered
    (recovered while the budget lasted, then replay_limit)."""
    clock = ManualClock(T0)
    bus = MemoryBus(epoch="ep1", clock=clock)
    config = HubConfig(
        port=0,
        heartbeat_interval_s=30.0,
        max_messages_per_second=10_000,
        max_replay_messages=2_500,
        replay_messages_per_second=1_000,
    )
    hub = Hub(config, bus, clock=clock)
    await hub.start()
    hub.declare(["trades.SPY", "trades.QQQ"])
    try:
        for i in range(1000):
            bus.publish_nowait("trades.SPY", {"i": i, "pad": "x" * 200})
        await until(lambda: hub.stats.messages_in == 1000)
        loops = 200
        async with resume_flood(hub, loops) as (bad, healthy):
            await until(
                lambda: hub.stats.replays_refused + hub.stats.replayed_messages // 1000 == loops
            )
            bus.publish_nowait("trades.QQQ", {"i": 0})
            (update,) = await healthy.messages(1)
            assert update["channel"] == "trades.QQQ"
            # 200 resumes asked for 200,000 messages; 2 were replayed (the burst), none after
            assert hub.stats.replayed_messages == 2_000
            assert hub.stats.replays_refused == loops - 2
            bad.ws.transport.resume_reading()
            got = await bad.messages_until_reply(bad.next_id)
            recoveries = [
                m["recovery"]["trades.SPY"] for m in got if m["type"] == "ack" and "recovery" in m
            ]
            assert len(recoveries) == loops
            assert [r["recovered"] for r in recoveries] == [True, True] + [False] * (loops - 2)
    finally:
        await hub.stop()


# --- list, paged ---------------------------------------------------------------------------------

CHANNELS = [f"trades.S{i:03d}" for i in range(25)]


async def test_list_pages_by_name_with_after_and_limit(hub_factory: HubFactory) -> None:
    async with hub_factory(max_list_channels=10) as (hub, _bus), client(hub) as c:
        hub.declare(CHANNELS)
        every = sorted([*CHANNELS, "trades.SPY", "quotes.SPY", "trades.QQQ"])
        first = await c.reply("list", limit=4)
        assert [ch["name"] for ch in first["available"]] == every[:4]
        assert first["next"] == every[3]
        # a limit past max_list_channels is capped; pages follow one another with no overlap
        listed, after, pages = [], None, 0
        while True:
            page = await c.reply("list", limit=1000, **({} if after is None else {"after": after}))
            names = [ch["name"] for ch in page["available"]]
            assert len(names) <= 10
            listed += names
            pages += 1
            after = page.get("next")
            if after is None:
                break
            assert after == names[-1]
        assert (listed, pages) == (every, 3)
        # a cursor need not be a channel: names after it
        tail = await c.reply("list", after="trades.S02")
        assert tail["available"][0]["name"] == "trades.S020"
        last = await c.reply("list", after="trades.S024")
        assert [ch["name"] for ch in last["available"]] == ["trades.SPY"] and "next" not in last
        empty = await c.reply("list", after="zz")
        assert (empty["available"], "next" in empty) == ([], False)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"after": 5}, "after"),
        ({"after": "x" * 129}, "after"),
    ],
)
async def test_a_bad_page_is_a_bad_message(
    hub_factory: HubFactory, fields: dict[str, Any], field: str
) -> None:
    async with hub_factory() as (hub, _bus), client(hub) as c:
        err = await c.reply("list", **fields)
        assert (err["type"], err["code"], err["field"], err["id"]) == (
            "error",
            "bad_message",
            field,
            c.next_id,
        )


async def test_list_pages_only_over_granted_channels(hub_factory: HubFactory) -> None:
    secret = "limits-secret-of-at-least-32-bytes!"
    async with hub_factory(auth_secret=secret, max_list_channels=3) as (hub, _bus):
        hub.declare([*CHANNELS, "quotes.A", "quotes.Z"])
        token = issue_token(secret, ["quotes.*"], subject="ui", expires_at=int(time.time()) + 60)
        async with client(hub, f"/ws?token={token}") as c:
            first = await c.reply("list")
            assert [ch["name"] for ch in first["available"]] == [
                "quotes.A",
                "quotes.SPY",
                "quotes.Z",
            ]
            assert "next" not in first  # nothing granted follows, however many channels do
            second = await c.reply("list", limit=2)
            assert second["next"] == "quotes.SPY"
            rest = await c.reply("list", after=second["next"])
            assert [ch["name"] for ch in rest["available"]] == ["quotes.Z"]


async def test_the_js_client_lists_every_page() -> None:
    bus = MemoryBus(epoch="ep1")
    async with running_hub(bus, max_list_channels=4) as hub, browser_page(hub.port) as page:
        hub.declare(CHANNELS)
        await start_client(page, hub.port)
        listed = [c["name"] for c in await page.evaluate("c.list()")]
        assert listed == sorted([*CHANNELS, "trades.SPY", "quotes.SPY"])
        assert hub.stats.errors == {}

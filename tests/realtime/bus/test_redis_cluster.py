"""The Redis bus on a real Redis Cluster (issue 16, "past one machine"): three masters started by
``tests.support_cluster`` from the machine's ``redis-server``, sharded pub/sub, each channel's
keys hashed to one slot, a hub resuming a client from a stream on a node it did not connect to.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.backoff import Rng
from realtime.bus.base import BusUnavailable, Envelope
from realtime.bus.redis import RedisBus, RedisBusConfig, RedisKeys, RedisSubscription
from realtime.hub import Hub, HubConfig
from tests.realtime.hub.conftest import client
from tests.support import REDIS_URL, until
from tests.support_cluster import LocalCluster, local_redis_cluster

Buses = Callable[..., Any]


@pytest.fixture(scope="module")
def cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster(cluster_nodes: LocalCluster) -> Iterator[LocalCluster]:
    """The module's cluster, emptied after each test."""
    yield cluster_nodes
    cluster_nodes.flush()


@pytest.fixture
async def buses(cluster: LocalCluster) -> AsyncIterator[Buses]:
    """``make(node=i)`` opens a cluster bus entering the cluster at master ``i``."""
    prefix = f"nautilus-test:{secrets.token_hex(4)}:"
    opened: list[RedisBus] = []

    async def make(node: int = 0, rng: Rng | None = None, **overrides: Any) -> RedisBus:
        config = RedisBusConfig(url=cluster.node_url(node), key_prefix=prefix, cluster=True)
        bus = await RedisBus.connect(replace(config, **overrides), rng=rng)
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()


class Ceiling:
    """A jitter source that always draws the top of the range (the backoff's ceiling)."""

    def random(self) -> float:
        return 1.0


def channels_on_each_node(cluster: LocalCluster, keys: RedisKeys) -> list[str]:
    """One channel per master, in master order: the master serving the channel's stream."""
    found: dict[int, str] = {}
    for i in range(200):
        channel = f"trades.S{i}"
        found.setdefault(cluster.owner_of(keys.stream(channel)), channel)
        if len(found) == len(cluster.ports):
            return [found[node] for node in range(len(cluster.ports))]
    raise AssertionError(f"200 channels covered only masters {sorted(found)}")


async def take(sub: RedisSubscription, count: int, timeout: float = 10.0) -> list[Envelope]:
    out: list[Envelope] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.extend(await sub.next_batch(count - len(out)))
    return out


def slot(cluster: LocalCluster, key: str) -> int:
    with cluster.node(0) as admin:
        return int(admin.execute_command("CLUSTER KEYSLOT", key))


async def test_cluster_has_three_masters_that_split_the_slots(cluster: LocalCluster) -> None:
    with cluster.node(1) as admin:
        ranges = admin.execute_command("CLUSTER SLOTS")
        info = admin.execute_command("CLUSTER INFO")
    assert info["cluster_state"] == "ok" and info["cluster_size"] == "3"
    assert sorted(int(primary[1]) for _s, _e, primary, *_ in ranges) == sorted(cluster.ports)
    assert sum(end - start + 1 for start, end, *_ in ranges) == 16384


async def test_publish_and_subscribe_across_every_node(cluster: LocalCluster, buses: Buses) -> None:
    publisher = await buses(node=0)
    consumer = await buses(node=2)
    channels = channels_on_each_node(cluster, publisher.keys)
    everything = consumer.subscribe(">")
    trades = consumer.subscribe("trades.*")
    await consumer.wait_ready()
    # every master holds this bus's SSUBSCRIBE for the shard channels of its own slots
    for node, channel in enumerate(channels):
        with cluster.node(node) as admin:
            counts = admin.execute_command("PUBSUB SHARDNUMSUB", publisher.keys.pubsub(channel))
        # both subscriptions, each connected to this master
        assert counts == [(publisher.keys.pubsub(channel).encode(), 2)]
    sent = [await publisher.publish(ch, {"i": i}) for i in range(20) for ch in channels]
    got = await take(everything, len(sent))
    got_trades = await take(trades, len(sent))
    for channel in channels:
        mine = [e for e in got if e.channel == channel]
        assert [e.seq for e in mine] == list(range(1, 21))
        assert [e.payload for e in mine] == [{"i": i} for i in range(20)]
        assert [e.seq for e in got_trades if e.channel == channel] == list(range(1, 21))
    assert sorted((e.channel, e.seq, e.epoch) for e in sent) == sorted(
        (e.channel, e.seq, e.epoch) for e in got
    )
    assert everything.invalid == 0 and everything.dropped == 0


async def test_each_channels_keys_share_a_slot_and_channels_spread_over_nodes(
    cluster: LocalCluster, buses: Buses
) -> None:
    bus = await buses(node=0)
    channels = channels_on_each_node(cluster, bus.keys)
    for i in range(5):
        for channel in channels:
            await bus.publish(channel, {"i": i})
    slots = []
    for node, channel in enumerate(channels):
        keys = (bus.keys.meta(channel), bus.keys.stream(channel), bus.keys.pubsub(channel))
        assert len({slot(cluster, key) for key in keys}) == 1  # the script may touch all three
        slots.append(slot(cluster, bus.keys.stream(channel)))
        async with Redis(host="127.0.0.1", port=cluster.ports[node]) as owner:
            entries: Any = await owner.xrange(bus.keys.stream(channel))
            assert [entry_id for entry_id, _ in entries] == [f"{n}-0".encode() for n in range(1, 6)]
            assert await owner.hget(bus.keys.meta(channel), "s") == b"5"
        epoch, history = await bus.history(channel, 2, 10)
        assert [e.seq for e in history] == [3, 4, 5] and {e.epoch for e in history} == {epoch}
    assert len(set(slots)) == 3  # the streams live in different slots, on different masters


async def test_hub_resumes_a_client_from_a_stream_on_another_node(
    cluster: LocalCluster, buses: Buses
) -> None:
    """The hub's bus enters the cluster at master 0; the channel's stream lives on master 1 or 2,
    and the messages were published (through master 2) before the hub existed."""
    engine = await buses(node=2)
    channel = channels_on_each_node(cluster, engine.keys)[1]
    assert cluster.owner_of(engine.keys.stream(channel)) != 0
    sent = [await engine.publish(channel, {"i": n}) for n in range(30)]  # seq 1..30
    epoch = sent[0].epoch
    hub_bus = await buses(node=0)
    hub = Hub(HubConfig(port=0, heartbeat_interval_s=30.0, implicit_channels=True), hub_bus)
    await hub.start()
    try:
        async with client(hub) as c:
            position = {channel: {"epoch": epoch, "seq": 12}}
            await c.request("subscribe", channels=[channel], resume=position)
            ack, *replayed, status = await c.messages(18 + 2, timeout=10.0)
            for n in range(30, 35):
                await engine.publish(channel, {"i": n})
            live = await c.messages(5, timeout=10.0)
    finally:
        await hub.stop()
    assert ack["type"] == "ack"
    assert ack["recovery"][channel] == {
        "recovered": True,
        "replayed": 18,
        "epoch": epoch,
        "seq": 30,
    }
    assert [(m["seq"], m["data"]["i"]) for m in replayed] == [(n + 1, n) for n in range(12, 30)]
    assert status["state"] == "recovered" and status["to_seq"] == 30
    assert [(m["seq"], m["data"]["i"]) for m in live] == [(n + 1, n) for n in range(30, 35)]
    assert hub.stats.bus_resumes == {"recovered": 1}


async def test_a_node_connection_lost_is_reconnected_and_its_gap_read_from_the_stream(
    cluster: LocalCluster, buses: Buses
) -> None:
    publisher = await buses(node=0)
    # reconnects wait exactly 1 s (the ceiling): the publishes below land while it is down
    consumer = await buses(node=0, rng=Ceiling(), reconnect_min_s=1.0, reconnect_max_s=1.0)
    channels = channels_on_each_node(cluster, publisher.keys)
    sub = consumer.subscribe(">")
    await sub.wait_ready()
    for channel in channels:
        await publisher.publish(channel, {"i": 0})
    await take(sub, 3)
    victim = 1  # the master serving channels[1]
    async with Redis(host="127.0.0.1", port=cluster.ports[victim]) as admin:
        killed = 0
        for info in await admin.client_list():
            if info.get("name") == f"nautilus-bus-sub:{consumer.writer_id}":
                killed += int(await admin.client_kill_filter(_id=info["id"]))
        assert killed == 1
    await until(lambda: not sub.connected, 5.0)
    for i in range(1, 6):  # while every node's connection of the subscription is down
        for channel in channels:
            await publisher.publish(channel, {"i": i})
    got = await take(sub, 15)
    for channel in channels:
        assert [e.seq for e in got if e.channel == channel] == [2, 3, 4, 5, 6]
    assert sub.reconnects == 1 and sub.connected
    assert sub.recovered == 15 and sub.duplicates == 0 and sub.dropped == 0
    assert sub.last_error  # why it was lost is kept


async def test_cluster_setting_must_match_the_server(cluster: LocalCluster) -> None:
    plain_on_cluster = RedisBusConfig(url=cluster.url, key_prefix="nautilus-test:x:")
    with pytest.raises(BusUnavailable, match="NAUTILUS_BUS_CLUSTER=true"):
        await RedisBus.connect(plain_on_cluster)
    cluster_on_plain = RedisBusConfig(url=REDIS_URL, key_prefix="nautilus-test:x:", cluster=True)
    with pytest.raises(BusUnavailable, match="Cluster mode is not enabled"):
        await RedisBus.connect(cluster_on_plain)
    with pytest.raises(ValueError, match="database 0 only"):
        RedisBusConfig(url=f"redis://127.0.0.1:{cluster.ports[0]}/3", cluster=True)

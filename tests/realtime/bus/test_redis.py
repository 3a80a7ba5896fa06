"""The Redis bus against the real Redis at 127.0.0.1:6379 (issue 5, item 1)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from protocol.codec import encode_data
from realtime.bus.base import BusClosed, BusUnavailable, Envelope
from realtime.bus.redis import (
    PUBLISH_SCRIPT,
    RedisBus,
    RedisBusConfig,
    RedisSubscription,
    _buffered_replies,
    _Publish,
    decode_message,
    run_results,
)
from realtime.hub import Hub, HubConfig
from tests.realtime.bus.conftest import BusFactory, RedisRelay, TopDraw
from tests.realtime.hub.conftest import client


async def take(sub: RedisSubscription, count: int, timeout: float = 5.0) -> list[Envelope]:
    out: list[Envelope] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.extend(await sub.next_batch(count - len(out)))
    return out


async def kill_connections(admin: Redis, name: str) -> int:
    """``CLIENT KILL`` every connection whose name is ``name`` (what a Redis restart does)."""
    killed = 0
    for info in await admin.client_list():
        if info.get("name") == name:
            killed += int(await admin.client_kill_filter(_id=info["id"]))
    return killed


async def test_round_trip_numbers_each_channel_from_one(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus:
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        sent: list[Envelope] = []
        for i in range(60):
            sent.append(await bus.publish("trades.SPY", {"i": i, "px": 100.25}, event_ns=1000 + i))
            if i % 3 == 0:
                sent.append(await bus.publish("trades.QQQ", {"i": i}))
        got = await take(sub, len(sent))
    spy = [e for e in got if e.channel == "trades.SPY"]
    qqq = [e for e in got if e.channel == "trades.QQQ"]
    assert [e.seq for e in spy] == list(range(1, 61))
    assert [e.seq for e in qqq] == list(range(1, 21))
    assert [e.payload for e in spy] == [{"i": i, "px": 100.25} for i in range(60)]
    assert [e.event_ns for e in spy] == [1000 + i for i in range(60)]
    assert len({e.epoch for e in spy}) == 1 and len({e.epoch for e in qqq}) == 1
    # what publish returned is what subscribers saw (payload aside: a Fragment on the sender)
    assert [(e.channel, e.seq, e.epoch, e.publish_ns) for e in sent] == [
        (e.channel, e.seq, e.epoch, e.publish_ns) for e in got
    ]
    assert all(e.event_ns <= e.publish_ns <= time.time_ns() for e in qqq)


async def test_history_stream_ids_are_the_seqs(bus_factory: BusFactory, admin: Redis) -> None:
    async with bus_factory() as bus:
        for i in range(5):
            await bus.publish("trades.SPY", {"i": i})
        entries: Any = await admin.xrange(bus.keys.stream("trades.SPY"))
        meta = await admin.hgetall(bus.keys.meta("trades.SPY"))
    assert [entry_id for entry_id, _ in entries] == [f"{n}-0".encode() for n in range(1, 6)]
    assert meta[b"s"] == b"5"
    envelopes = [decode_message(fields[b"m"]) for _, fields in entries]
    assert [e.payload for e in envelopes] == [{"i": i} for i in range(5)]
    assert {e.epoch.encode() for e in envelopes} == {meta[b"e"]}


async def test_pattern_routing(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus:
        subs = {p: bus.subscribe(p) for p in ("trades.*", "bars.>", "bars.*", ">", "quotes.SPY")}
        await bus.wait_ready()
        names = ["trades.SPY", "bars.1m.SPY", "quotes.SPY", "trades.QQQ", "bars.5m.QQQ"]
        for name in names:
            await bus.publish(name, {"n": name})
        everything = await take(subs[">"], len(names))
        await asyncio.sleep(0.1)  # anything misrouted would have arrived with the rest
        seen = {
            p: [e.channel for e in await s.next_batch()] if s.pending else []
            for p, s in subs.items()
        }
    assert [e.channel for e in everything] == names
    assert seen["trades.*"] == ["trades.SPY", "trades.QQQ"]
    assert seen["bars.>"] == ["bars.1m.SPY", "bars.5m.QQQ"]
    assert seen["bars.*"] == []  # two segments after "bars": only ">" covers them
    assert seen["quotes.SPY"] == ["quotes.SPY"]


async def test_two_buses_share_one_numbering(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus_a, bus_factory() as bus_b:
        sub_b = bus_b.subscribe("trades.SPY")
        await sub_b.wait_ready()
        seqs = []
        for i in range(10):
            bus = bus_a if i % 2 == 0 else bus_b
            seqs.append((await bus.publish("trades.SPY", {"i": i})).seq)
        got = await take(sub_b, 10)
    assert seqs == list(range(1, 11))
    assert [e.seq for e in got] == list(range(1, 11))
    assert [e.payload["i"] for e in got] == list(range(10))
    assert len({e.epoch for e in got}) == 1


async def test_concurrent_publishers_get_unique_contiguous_seqs(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus_a, bus_factory(publish_batch=7) as bus_b:
        sub = bus_a.subscribe("trades.SPY")
        await sub.wait_ready()

        async def burst(bus: RedisBus, tag: str) -> list[int]:
            envs = await asyncio.gather(
                *(bus.publish("trades.SPY", {"by": tag, "i": i}) for i in range(300))
            )
            return [e.seq for e in envs]

        seqs_a, seqs_b = await asyncio.gather(burst(bus_a, "a"), burst(bus_b, "b"))
        got = await take(sub, 600)
    assert sorted(seqs_a + seqs_b) == list(range(1, 601))
    assert seqs_a == sorted(seqs_a) and seqs_b == sorted(seqs_b)  # each bus keeps its order
    assert [e.seq for e in got] == list(range(1, 601))
    by_a = [e.payload["i"] for e in got if e.payload["by"] == "a"]
    assert by_a == list(range(300))


async def test_publish_nowait_keeps_order(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus:
        sub = bus.subscribe("trades.SPY")
        await sub.wait_ready()
        for i in range(1000):
            bus.publish_nowait("trades.SPY", {"i": i})
        got = await take(sub, 1000)
    assert [e.seq for e in got] == list(range(1, 1001))
    assert [e.payload["i"] for e in got] == list(range(1000))


async def run_script(
    admin: Redis, prefix: str, writer: str, numbers: list[int], epoch: str = "ep1"
) -> list[Any]:
    """``PUBLISH_SCRIPT`` on one run of ``trades.SPY`` under ``prefix``: one message per number."""
    meta, stream = f"{prefix}meta:trades.SPY", f"{prefix}stream:trades.SPY"
    args: list[str | bytes] = [f"{prefix}p", "trades.SPY", "100", epoch, writer, "PUBLISH"]
    for number in numbers:
        args += [orjson.dumps({"n": number}), "1", "2", str(number)]
    reply: list[Any] = await admin.eval(PUBLISH_SCRIPT, 2, meta, stream, *args)
    return reply


async def test_repeated_script_call_appends_once(admin: Redis, prefix: str) -> None:
    """A retried publish (same writer id and number) returns the first seq and writes nothing."""
    meta, stream = f"{prefix}meta:trades.SPY", f"{prefix}stream:trades.SPY"
    assert await run_script(admin, prefix, "w1", [1]) == [b"ep1", b"", 1, 0]
    assert await run_script(admin, prefix, "w1", [1]) == [b"ep1", b"", 1, 1]  # the retry
    # another writer, same number: a new message
    assert await run_script(admin, prefix, "w2", [1], epoch="ep2") == [b"ep1", b"", 2, 0]
    assert await run_script(admin, prefix, "w1", [2]) == [b"ep1", b"", 3, 0]
    # an older retry finds its seq in the stream
    assert await run_script(admin, prefix, "w1", [1]) == [b"ep1", b"", 1, 1]
    assert await admin.xlen(stream) == 3
    assert await admin.hget(meta, "s") == b"3"


async def test_a_retried_run_answers_each_number_and_appends_only_the_new(
    admin: Redis, prefix: str
) -> None:
    """A run whose middle message repeats a number: that message alone is answered as a retry
    with its original seq; the messages around it are numbered as usual."""
    meta, stream = f"{prefix}meta:trades.SPY", f"{prefix}stream:trades.SPY"
    assert await run_script(admin, prefix, "w1", [1, 2]) == [b"ep1", b"", 1, 0, 2, 0]
    assert await run_script(admin, prefix, "w1", [3, 2, 4]) == [b"ep1", b"", 3, 0, 2, 1, 4, 0]
    # a whole batch again (a retry after a lost reply): all answered, nothing appended
    retried = await run_script(admin, prefix, "w1", [1, 2, 3, 4])
    assert retried == [b"ep1", b"", 1, 1, 2, 1, 3, 1, 4, 1]  # (seq, duplicate) per message
    entries: Any = await admin.xrange(stream)
    assert [decode_message(fields[b"m"]).payload["n"] for _, fields in entries] == [1, 2, 3, 4]
    assert await admin.hget(meta, "s") == b"4"
    assert await admin.hget(meta, "w:w1") == b"4"


async def test_stream_ahead_of_counter_is_refused(admin: Redis, prefix: str) -> None:
    """The explicit ``<seq>-0`` id: a stream that already holds a later seq rejects the append;
    the run stops there, and that message and the rest of the run are answered with the error."""
    meta, stream = f"{prefix}meta:trades.SPY", f"{prefix}stream:trades.SPY"
    await admin.hset(meta, mapping={"e": "ep1", "s": 0})
    await admin.xadd(stream, {"m": "x"}, id="5-0")
    epoch, error, *answers = await run_script(admin, prefix, "w", [1, 2], epoch="ep2")
    assert (epoch, answers) == (b"ep1", [])
    assert b"ahead of seq 1" in error
    assert await admin.hget(meta, "s") == b"0"
    assert await admin.hget(meta, "w:w") is None
    assert await admin.xlen(stream) == 1


def test_run_results_fail_the_unanswered_rest_of_a_run() -> None:
    assert run_results(2, [b"ep", b"", 7, 0, 3, 1]) == [(7, "ep", False), (3, "ep", True)]
    first, *rest = run_results(3, [b"ep", b"stream s is ahead of seq 8: ERR", 7, 0])
    assert first == (7, "ep", False)
    assert len(rest) == 2
    assert all(isinstance(e, ResponseError) and "ahead of seq 8" in str(e) for e in rest)
    lost = ConnectionError("gone")
    assert run_results(2, lost) == [lost, lost]


async def test_a_batch_sends_one_script_call_per_channel_run_in_order(
    bus_factory: BusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A A B A in one batch: three script calls, each channel numbered in order, and subscribers
    see the bus's order (the pipeline holds the runs in batch order)."""
    async with bus_factory() as bus:
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        calls: list[tuple[Any, ...]] = []
        pipeline = bus._client.pipeline

        def recording_pipeline(**options: Any) -> Any:
            pipe = pipeline(**options)
            send = pipe.execute_command

            def record(*args: Any) -> Any:
                calls.append(args)
                return send(*args)

            pipe.execute_command = record
            return pipe

        monkeypatch.setattr(bus._client, "pipeline", recording_pipeline)
        order = ["trades.A", "trades.A", "trades.B", "trades.A"]
        futures = [bus.publish(channel, {"i": i}) for i, channel in enumerate(order)]
        sent = await asyncio.gather(*futures)
        first_batch = list(calls)
        got = await take(sub, 4)
        again = await bus._pipeline(  # the same batch retried: answered, nothing appended
            [
                _Publish(e.channel, orjson.dumps({"i": i}), e.event_ns, e.publish_ns, i + 1, None)
                for i, e in enumerate(sent)
            ]
        )
        assert await bus.last_seq("trades.A") == 3
    assert [(c[0], c[3]) for c in first_batch] == [
        ("EVALSHA", bus.keys.meta("trades.A")),
        ("EVALSHA", bus.keys.meta("trades.B")),
        ("EVALSHA", bus.keys.meta("trades.A")),
    ]
    assert [(e.channel, e.seq) for e in sent] == [
        ("trades.A", 1),
        ("trades.A", 2),
        ("trades.B", 1),
        ("trades.A", 3),
    ]
    assert [(e.channel, e.seq, e.payload["i"]) for e in got] == [
        (e.channel, e.seq, i) for i, e in enumerate(sent)
    ]
    assert again == [(e.seq, e.epoch, True) for e in sent]


async def test_stream_ahead_fails_its_run_only(bus_factory: BusFactory, admin: Redis) -> None:
    """B A A B in one batch, A's stream ahead of its counter: both A publishes fail with the
    error, the B publishes around them are numbered and delivered."""
    async with bus_factory() as bus:
        await admin.hset(bus.keys.meta("trades.A"), mapping={"e": "ep1", "s": 0})
        await admin.xadd(bus.keys.stream("trades.A"), {"m": "x"}, id="5-0")
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        order = ["trades.B", "trades.A", "trades.A", "trades.B"]
        results = await asyncio.gather(
            *(bus.publish(channel, {"i": i}) for i, channel in enumerate(order)),
            return_exceptions=True,
        )
        got = await take(sub, 2)
        assert await bus.last_seq("trades.A") == 0
    first_b, *failed, second_b = results
    assert isinstance(first_b, Envelope) and isinstance(second_b, Envelope)
    assert (first_b.seq, second_b.seq) == (1, 2)
    assert [type(e) for e in failed] == [ResponseError, ResponseError]
    assert all("ahead of seq 1" in str(e) for e in failed)
    assert [(e.channel, e.seq) for e in got] == [("trades.B", 1), ("trades.B", 2)]


async def test_fragments_splice_the_published_bytes(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus:
        sub = bus.subscribe(">", payload_fragments=True)
        await sub.wait_ready()
        payload = {"px": 101.5, "sz": 3, "side": "buy"}
        await bus.publish("trades.SPY", payload)
        (env,) = await take(sub, 1)
    assert isinstance(env.payload, orjson.Fragment)
    frame = encode_data("update", env.channel, env.seq, env.epoch, 1, 2, 3, env.payload)
    assert orjson.loads(frame)["data"] == payload


async def test_idle_subscription_outlives_the_socket_timeout(bus_factory: BusFactory) -> None:
    """redis-py's socket timeout must not cut an idle pub/sub read (scaled down from 5 s)."""
    async with bus_factory(socket_timeout_s=0.2, health_check_interval_s=0.15) as bus:
        sub = bus.subscribe("trades.SPY")
        await sub.wait_ready()
        await asyncio.sleep(1.0)
        await bus.publish("trades.SPY", {"late": True})
        (env,) = await take(sub, 1)
    assert env.payload == {"late": True} and env.seq == 1
    assert sub.reconnects == 0


async def test_killed_connections_recover_every_message_in_order(
    bus_factory: BusFactory, admin: Redis, redis_relay: tuple[RedisRelay, str]
) -> None:
    relay, relay_url = redis_relay
    async with (
        bus_factory(reconnect_min_s=0.1, rng=TopDraw()) as bus,
        bus_factory(url=relay_url) as publisher,
    ):
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        total = 600

        async def produce() -> None:
            for i in range(total):
                await publisher.publish("trades.SPY" if i % 4 else "trades.QQQ", {"i": i})
                if i == 200:
                    assert await kill_connections(admin, f"nautilus-bus-sub:{bus.writer_id}") == 1
                if i == 399:  # the next publish runs in Redis, its answer is lost in a cut
                    relay.drop_next_reply()
                if i % 20 == 0:
                    await asyncio.sleep(0.005)

        await produce()
        got = await take(sub, total, timeout=10)
        await asyncio.sleep(0.1)
        extra = sub.pending
    assert extra == 0
    assert [e.payload["i"] for e in got if e.channel == "trades.SPY"] == [
        i for i in range(total) if i % 4
    ]
    assert [e.seq for e in got if e.channel == "trades.SPY"] == list(range(1, 451))
    assert [e.seq for e in got if e.channel == "trades.QQQ"] == list(range(1, 151))
    assert sub.reconnects >= 1
    assert relay.breaks == 1
    assert publisher.publish_retries >= 1  # its cut publish was retried, not duplicated
    assert sub.recovered > 0  # messages published while it was away came from the streams


async def test_lost_data_shows_as_a_new_epoch(bus_factory: BusFactory, admin: Redis) -> None:
    """Redis lost the channel (restart without persistence): the consumer sees the new epoch."""
    async with bus_factory(reconnect_min_s=0.3, rng=TopDraw()) as bus:
        sub = bus.subscribe("trades.SPY")
        await sub.wait_ready()
        for i in range(3):
            await bus.publish("trades.SPY", {"i": i})
        before = await take(sub, 3)
        await kill_connections(admin, f"nautilus-bus-sub:{bus.writer_id}")
        await admin.delete(bus.keys.meta("trades.SPY"), bus.keys.stream("trades.SPY"))
        for i in range(3, 5):  # while the subscriber is away
            await bus.publish("trades.SPY", {"i": i})
        after = await take(sub, 2)
        await bus.publish("trades.SPY", {"i": 5})
        live = await take(sub, 1)
    assert [e.seq for e in before] == [1, 2, 3]
    assert [(e.seq, e.payload["i"]) for e in after + live] == [(1, 3), (2, 4), (3, 5)]
    assert after[0].epoch != before[0].epoch
    assert {e.epoch for e in after + live} == {after[0].epoch}


async def test_trimmed_history_leaves_a_visible_hole(bus_factory: BusFactory, admin: Redis) -> None:
    async with bus_factory(reconnect_min_s=0.3, rng=TopDraw()) as bus:
        sub = bus.subscribe("trades.SPY")
        await sub.wait_ready()
        await bus.publish("trades.SPY", {"i": 0})
        await take(sub, 1)
        await kill_connections(admin, f"nautilus-bus-sub:{bus.writer_id}")
        for i in range(1, 6):
            await bus.publish("trades.SPY", {"i": i})
        await admin.delete(bus.keys.stream("trades.SPY"))  # history gone, numbering kept
        await bus.wait_ready()
        await asyncio.sleep(0.5)
        await bus.publish("trades.SPY", {"i": 6})
        (env,) = await take(sub, 1)
    assert env.seq == 7  # 2..6 are a hole the consumer reports as a gap, never a silent loss


async def test_foreign_and_corrupt_messages_are_counted_and_skipped(
    bus_factory: BusFactory, admin: Redis
) -> None:
    async with bus_factory(reconnect_min_s=0.3, rng=TopDraw()) as bus:
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        channel = bus.keys.pubsub("trades.SPY")
        for junk in (
            b"hello",
            b"n1 trades.SPY 1 ep 1 2\nnot json",
            b"n1 trades.SPY..x 1 ep 1 2\n{}",
            b"n1 trades.SPY 1 ep\n{}",
            b"n9 trades.SPY 1 ep 1 2\n{}",
            b"n1 trades.SPY one ep 1 2\n{}",
        ):
            await admin.publish(channel, junk)
        await bus.publish("trades.SPY", {"ok": 1})
        (first,) = await take(sub, 1)
        assert sub.invalid == 6
        # a corrupt stream entry met while recovering
        await kill_connections(admin, f"nautilus-bus-sub:{bus.writer_id}")
        await bus.publish("trades.SPY", {"ok": 2})
        await admin.xadd(bus.keys.stream("trades.SPY"), {"m": b"\xff\xfe garbage"}, id="3-0")
        await admin.hincrby(bus.keys.meta("trades.SPY"), "s", 1)
        await bus.publish("trades.SPY", {"ok": 4})
        rest = await take(sub, 2)
    assert first.payload == {"ok": 1} and first.seq == 1
    assert [(e.seq, e.payload) for e in rest] == [(2, {"ok": 2}), (4, {"ok": 4})]
    assert sub.invalid == 7


async def test_unreachable_redis_fails_fast_naming_the_url() -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"
    started = time.monotonic()
    with pytest.raises(BusUnavailable) as caught:
        await RedisBus.connect(RedisBusConfig(url=url, connect_timeout_s=1.0))
    assert time.monotonic() - started < 2.0
    assert "redis://:***@127.0.0.1:1/0" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_close_ends_subscriptions_and_refuses_publish(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus:
        sub = bus.subscribe("trades.SPY")
        await sub.wait_ready()
        await bus.publish("trades.SPY", {"i": 0})
        await bus.close()
        assert [e.seq for e in await sub.next_batch()] == [1]  # what arrived stays readable
        assert await sub.next_batch() == []
        with pytest.raises(BusClosed):
            await bus.publish("trades.SPY", {"i": 1})


async def test_sharded_pubsub_round_trip(bus_factory: BusFactory, admin: Redis) -> None:
    """SSUBSCRIBE/SPUBLISH on the standalone Redis 7 (Cluster itself is not tested here)."""
    async with bus_factory(sharded_pubsub=True, pubsub_shards=4) as bus:
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        for i in range(20):
            await bus.publish("trades.SPY" if i % 2 else "trades.QQQ", {"i": i})
            await bus.publish("bars.1m.SPY", {"i": i})
        got = await take(sub, 20)
        meta = bus.keys.meta("trades.SPY")
        assert meta.startswith(f"{bus.config.key_prefix}{{s") and await admin.exists(meta)
    assert [e.seq for e in got if e.channel == "trades.SPY"] == list(range(1, 11))
    assert [e.seq for e in got if e.channel == "trades.QQQ"] == list(range(1, 11))
    assert {e.channel for e in got} == {"trades.SPY", "trades.QQQ"}


async def test_client_resumes_on_another_hub_with_nothing_lost(bus_factory: BusFactory) -> None:
    async with bus_factory() as bus_a, bus_factory() as bus_b, bus_factory() as engine:
        hubs = [Hub(HubConfig(port=0, heartbeat_interval_s=30.0), b) for b in (bus_a, bus_b)]
        for hub in hubs:
            await hub.start()
            hub.declare(["trades.SPY"])
        await bus_a.wait_ready()
        await bus_b.wait_ready()
        try:
            async with client(hubs[0]) as c:
                await c.reply("subscribe", channels=["trades.SPY"])
                for i in range(10):
                    await engine.publish("trades.SPY", {"i": i})
                first = await c.messages(4)
            position = {"epoch": first[-1]["epoch"], "seq": first[-1]["seq"]}
            for i in range(10, 15):  # while the client is between hubs
                await engine.publish("trades.SPY", {"i": i})
            await asyncio.sleep(0.1)
            async with client(hubs[1]) as c:
                await c.request(
                    "subscribe", channels=["trades.SPY"], resume={"trades.SPY": position}
                )
                ack, *replayed, status = await c.messages(1 + 11 + 1)
                await engine.publish("trades.SPY", {"i": 15})
                (live,) = await c.messages(1)
        finally:
            for hub in hubs:
                await hub.stop()
    assert [m["seq"] for m in first] == [1, 2, 3, 4]
    assert ack["recovery"]["trades.SPY"]["recovered"] is True
    assert [m["data"]["i"] for m in replayed] == list(range(4, 15))
    assert [m["seq"] for m in replayed] == list(range(5, 16))
    assert status["state"] == "recovered"
    assert live["seq"] == 16 and live["epoch"] == position["epoch"]


# --- history: what a hub reads to resume a client it did not serve (issue 5) ------------------


async def test_history_reads_the_stream_after_a_seq(bus_factory: BusFactory, admin: Redis) -> None:
    async with bus_factory() as bus:
        sent = [await bus.publish("trades.SPY", {"i": i}) for i in range(10)]
        epoch, after_6 = await bus.history("trades.SPY", 6, 100)
        _, first_3 = await bus.history("trades.SPY", 0, 3)
        _, none_left = await bus.history("trades.SPY", 10, 100)
        _, zero_asked = await bus.history("trades.SPY", 0, 0)
        raw, fragments = await bus.history("trades.SPY", 8, 100, payload_fragments=True)
        unknown = await bus.history("trades.NEVER", 0, 100)
        stored_epoch = await admin.hget(bus.keys.meta("trades.SPY"), "e")
    assert epoch == raw == sent[0].epoch and epoch.encode() == stored_epoch
    assert [(e.seq, e.payload) for e in after_6] == [
        (7, {"i": 6}),
        (8, {"i": 7}),
        (9, {"i": 8}),
        (10, {"i": 9}),
    ]
    assert [e.seq for e in first_3] == [1, 2, 3]
    assert none_left == [] and zero_asked == []
    assert [(e.channel, e.seq, e.epoch, e.publish_ns) for e in after_6] == [
        (e.channel, e.seq, e.epoch, e.publish_ns) for e in sent[6:]
    ]
    assert all(isinstance(e.payload, orjson.Fragment) for e in fragments)
    assert [orjson.loads(orjson.dumps(e.payload)) for e in fragments] == [{"i": 8}, {"i": 9}]
    assert unknown == ("", [])


async def test_history_skips_and_counts_corrupt_entries(
    bus_factory: BusFactory, admin: Redis
) -> None:
    async with bus_factory() as bus:
        await bus.publish("trades.SPY", {"i": 0})
        stream = bus.keys.stream("trades.SPY")
        await admin.xadd(stream, {"m": b"\xff\xfe garbage"}, id="2-0")
        await admin.xadd(stream, {"m": b"n1 trades.QQQ 3 ep 1 2\n{}"}, id="3-0")  # wrong channel
        await admin.hincrby(bus.keys.meta("trades.SPY"), "s", 2)
        await bus.publish("trades.SPY", {"i": 3})
        _, got = await bus.history("trades.SPY", 0, 10)
    assert [(e.seq, e.payload) for e in got] == [(1, {"i": 0}), (4, {"i": 3})]  # the hole shows
    assert bus.history_invalid == 2


async def test_history_raises_bus_unavailable_when_redis_drops_the_connection(
    bus_factory: BusFactory, redis_relay: tuple[RedisRelay, str]
) -> None:
    relay, relay_url = redis_relay
    async with bus_factory(url=relay_url) as bus:
        await bus.publish("trades.SPY", {"i": 0})
        relay.refusing = True
        with pytest.raises(BusUnavailable) as caught:
            await bus.history("trades.SPY", 0, 10)
        assert "trades.SPY" in str(caught.value)
        assert relay.breaks >= 1
        relay.refusing = False
        _, again = await bus.history("trades.SPY", 0, 10)  # the next call reconnects
    assert [e.seq for e in again] == [1]


async def test_a_burst_is_taken_from_the_parser_buffer_in_order(bus_factory: BusFactory) -> None:
    """Replies already read off the socket are taken straight from redis-py's hiredis reader
    (``_buffered_replies``, private attributes: this fails if a redis-py upgrade moves them)."""
    async with bus_factory() as bus:
        probe = bus._pubsub_client.pubsub()
        await probe.subscribe("nautilus-test:probe")
        assert _buffered_replies(probe) is not None
        await probe.aclose()
        sub = bus.subscribe("trades.*")
        await sub.wait_ready()
        for i in range(3000):
            bus.publish_nowait("trades.SPY" if i % 3 else "trades.QQQ", {"i": i})
        got = await take(sub, 3000)
    spy = [e for e in got if e.channel == "trades.SPY"]
    assert [e.seq for e in spy] == list(range(1, 2001))
    assert [e.payload["i"] for e in spy] == [i for i in range(3000) if i % 3]
    assert sub.invalid == 0 and sub.recovered == 0 and sub.duplicates == 0

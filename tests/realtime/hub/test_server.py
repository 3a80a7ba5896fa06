"""The hub with real WebSocket clients on port 0 (issue 2, "Tests")."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.bus import MemoryBus
from realtime.hub import Hub, HubConfig, LosslessOverflow
from realtime.hub.auth import issue_token
from tests.realtime.hub.conftest import Client, HubFactory, client, settle


async def test_subscribe_ack_lists_effective_channels_and_limits(hub_factory: HubFactory) -> None:
    async with hub_factory(max_subscriptions=7) as (hub, _bus), client(hub) as c:
        ack = await c.reply("subscribe", channels=["trades.SPY", "quotes.SPY", "trades.SPY"])
        assert ack["type"] == "ack" and ack["id"] == 1 and ack["op"] == "subscribe"
        assert ack["channels"] == ["quotes.SPY", "trades.SPY"]
        assert ack["limits"]["max_subscriptions"] == 7
        ack = await c.reply("subscribe", channels=["trades.QQQ"])
        assert ack["channels"] == ["quotes.SPY", "trades.QQQ", "trades.SPY"]
        ack = await c.reply("unsubscribe", channels=["trades.SPY", "trades.NOPE"])
        assert ack["op"] == "unsubscribe" and ack["channels"] == ["quotes.SPY", "trades.QQQ"]


async def test_snapshot_then_updates_in_order(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus):
        for i in range(3):
            bus.publish_nowait("quotes.SPY", {"b": 100 + i})
        await settle()
        async with client(hub) as c:
            await c.request("subscribe", channels=["quotes.SPY"])
            ack, snap = await c.messages(2)
            assert ack["type"] == "ack"
            assert snap["type"] == "snapshot" and snap["seq"] == 3 and snap["data"] == {"b": 102}
            assert snap["epoch"] == "ep1"
            for i in range(3, 8):
                bus.publish_nowait("quotes.SPY", {"b": 100 + i})
            updates = await c.messages(5)
            assert [u["seq"] for u in updates] == [4, 5, 6, 7, 8]
            assert all(u["type"] == "update" for u in updates)
            ts = updates[-1]["ts"]
            assert ts["event"] <= ts["publish"] <= ts["hub"] <= time.time_ns()


async def test_snapshot_can_be_declined(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus):
        bus.publish_nowait("quotes.SPY", {"b": 1})
        await settle()
        async with client(hub) as c:
            await c.request("subscribe", channels=["quotes.SPY"], snapshot=False)
            await c.messages(1)
            bus.publish_nowait("quotes.SPY", {"b": 2})
            (update,) = await c.messages(1)
            assert update["type"] == "update" and update["seq"] == 2


async def test_lossless_stream_in_order_across_batches(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY", "trades.QQQ"])
        for i in range(500):
            bus.publish_nowait("trades.SPY", {"i": i})
            if i % 7 == 0:
                bus.publish_nowait("trades.QQQ", {"i": i})
            if i % 50 == 0:
                await asyncio.sleep(0)
        got = await c.messages(500 + 72)
        spy = [m["seq"] for m in got if m["channel"] == "trades.SPY"]
        qqq = [m["seq"] for m in got if m["channel"] == "trades.QQQ"]
        assert spy == list(range(1, 501))
        assert qqq == list(range(1, 73))


async def test_resume_recovered_replays_every_missed_message(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus):
        for i in range(10):
            bus.publish_nowait("trades.SPY", {"i": i})
        await settle()
        async with client(hub) as c:
            resume = {"trades.SPY": {"epoch": "ep1", "seq": 6}}
            await c.request("subscribe", channels=["trades.SPY"], resume=resume)
            ack, *replayed, status = await c.messages(6)
            assert ack["recovery"]["trades.SPY"] == {
                "recovered": True,
                "replayed": 4,
                "epoch": "ep1",
                "seq": 10,
            }
            assert [m["seq"] for m in replayed] == [7, 8, 9, 10]
            assert [m["data"]["i"] for m in replayed] == [6, 7, 8, 9]
            assert status == {
                "type": "status",
                "channel": "trades.SPY",
                "state": "recovered",
                "count": 4,
                "to_seq": 10,
                "epoch": "ep1",
            }
            bus.publish_nowait("trades.SPY", {"i": 10})
            (live,) = await c.messages(1)
            assert live["seq"] == 11


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        ({"epoch": "other", "seq": 3}, "epoch_changed"),
        ({"epoch": "ep1", "seq": 2}, "too_old"),
        ({"epoch": "ep1", "seq": 99}, "ahead_of_stream"),
    ],
)
async def test_resume_not_recovered_is_explicit(
    hub_factory: HubFactory, position: dict[str, Any], reason: str
) -> None:
    async with hub_factory(history_size=5) as (hub, bus):
        for i in range(10):
            bus.publish_nowait("trades.SPY", {"i": i})
            bus.publish_nowait("quotes.SPY", {"i": i})
        await settle()
        async with client(hub) as c:
            await c.request("subscribe", channels=["trades.SPY"], resume={"trades.SPY": position})
            ack, status = await c.messages(2)
            rec = ack["recovery"]["trades.SPY"]
            assert rec["recovered"] is False and rec["replayed"] == 0 and rec["reason"] == reason
            assert status["state"] == "not_recovered" and status["reason"] == reason
            # a latest-value channel that cannot be recovered gets a fresh snapshot instead
            resume = {"quotes.SPY": position}
            await c.request("subscribe", channels=["quotes.SPY"], resume=resume)
            ack, status, snap = await c.messages(3)
            assert status["state"] == "not_recovered"
            assert snap["type"] == "snapshot" and snap["seq"] == 10


async def test_unsubscribe_stops_delivery(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY", "trades.QQQ"])
        await c.reply("unsubscribe", channels=["trades.SPY"])
        bus.publish_nowait("trades.SPY", {"i": 1})
        bus.publish_nowait("trades.QQQ", {"i": 1})
        (only,) = await c.messages(1)
        assert only["channel"] == "trades.QQQ"
        await c.request("ping")
        (pong,) = await c.messages(1)
        assert pong["type"] == "pong"


async def test_list_channels(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus), client(hub) as c:
        bus.publish_nowait("trades.SPY", {"i": 1})
        await settle()
        await c.reply("subscribe", channels=["trades.SPY"])
        ack = await c.reply("list")
        assert ack["op"] == "list" and ack["channels"] == ["trades.SPY"]
        by_name = {info["name"]: info for info in ack["available"]}
        assert set(by_name) == {"trades.SPY", "quotes.SPY", "trades.QQQ"}
        assert by_name["trades.SPY"] == {
            "name": "trades.SPY",
            "delivery": "ordered-lossless",
            "epoch": "ep1",
            "seq": 1,
            "subscribers": 1,
        }
        assert by_name["quotes.SPY"]["delivery"] == "latest-value"


# --- bad input: each gets an error with a stable code; others are unaffected -------------------

BAD_REQUESTS = [
    ("{not json", "bad_json"),
    ('["a"]', "bad_message"),
    ('{"op":"subscribe"}', "bad_message"),
    ('{"op":"teleport","id":1}', "unknown_op"),
    ('{"op":"subscribe","id":1,"channels":["trades.NOPE"]}', "unknown_channel"),
    ('{"op":"subscribe","id":1,"channels":["nonsense"]}', "bad_channel"),
    (
        '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":{"trades.SPY":{"epoch":"x","seq":-5}}}',
        "bad_resume",
    ),
]


async def test_bad_input_gets_errors_and_the_connection_survives(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus), client(hub) as bystander, client(hub) as c:
        await bystander.reply("subscribe", channels=["trades.SPY"])
        for raw, code in BAD_REQUESTS:
            await c.ws.send(raw)
            (err,) = await c.messages(1)
            assert err["type"] == "error" and err["code"] == code, raw
            assert "message" in err
        await c.ws.send(b"\x00\x01binary")
        (err,) = await c.messages(1)
        assert err["code"] == "binary_not_supported"
        ack = await c.reply("subscribe", channels=["trades.SPY"])
        assert ack["type"] == "ack"
        bus.publish_nowait("trades.SPY", {"i": 1})
        assert (await c.messages(1))[0]["seq"] == 1
        assert (await bystander.messages(1))[0]["seq"] == 1


async def test_subscription_limits(hub_factory: HubFactory) -> None:
    async with (
        hub_factory(max_subscriptions=2, max_channels_per_request=3) as (hub, _),
        client(hub) as c,
    ):
        err = await c.reply("subscribe", channels=["trades.SPY", "quotes.SPY", "trades.QQQ"])
        assert err["code"] == "too_many_subscriptions" and err["id"] == 1
        hub.declare([f"trades.S{i}" for i in range(4)])
        err = await c.reply("subscribe", channels=[f"trades.S{i}" for i in range(4)])
        assert err["code"] == "too_many_subscriptions" and err["field"] == "channels"
        ack = await c.reply("subscribe", channels=["trades.SPY", "quotes.SPY"])
        assert ack["channels"] == ["quotes.SPY", "trades.SPY"]


async def test_oversized_frame_closes_with_1009(hub_factory: HubFactory) -> None:
    async with (
        hub_factory(max_frame_bytes=1024) as (hub, _),
        client(hub) as c,
        client(hub) as other,
    ):
        await c.ws.send("x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            await c.frame()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert (await other.reply("ping"))["type"] == "pong"


async def test_rate_flood_gets_errors_then_close_4029(hub_factory: HubFactory) -> None:
    async with (
        hub_factory(max_messages_per_second=5, rate_limit_strikes=20) as (hub, _),
        client(hub) as c,
        client(hub) as other,
    ):
        for i in range(60):
            await c.ws.send(orjson.dumps({"op": "ping", "id": i}).decode())
        codes: list[str] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                msg = (await c.messages(1))[0]
                codes.append(msg.get("code", msg["type"]))
        assert codes[:10] == ["pong"] * 10  # the burst allowance
        assert codes[10:] == ["rate_limited"] * 20
        assert info.value.rcvd is not None and info.value.rcvd.code == 4029
        assert (await other.reply("ping"))["type"] == "pong"


# --- slow consumers ----------------------------------------------------------------------------

BIG = {"pad": "x" * 4000}


async def _stall(hub_port: int) -> Any:
    """A client that subscribes and then never reads (its receive buffer fills)."""
    ws = await connect(f"ws://127.0.0.1:{hub_port}/", max_queue=1)
    return ws


async def test_slow_lossless_consumer_is_disconnected_others_keep_full_rate(
    hub_factory: HubFactory,
) -> None:
    cfg = dict(slow_write_buffer_bytes=64 * 1024, max_pending_messages=200)
    async with hub_factory(**cfg) as (hub, bus), client(hub) as fast:
        stalled = await _stall(hub.port)
        await stalled.send('{"op":"subscribe","id":1,"channels":["trades.SPY"]}')
        await fast.reply("subscribe", channels=["trades.SPY"])
        await asyncio.sleep(0.05)
        received = 0
        for i in range(3000):
            bus.publish_nowait("trades.SPY", BIG | {"i": i})
            if i % 20 == 0:
                received += len(await fast.messages(20 if i else 1, timeout=5))
        received += len(await fast.messages(3000 - received, timeout=5))
        assert received == 3000
        with pytest.raises(ConnectionClosed):  # it reads again: backlog, then the close frame
            while True:
                await asyncio.wait_for(stalled.recv(), 5)
        assert stalled.close_code == 4008
        assert hub.stats.slow_disconnects == 1


async def test_slow_consumer_gap_policy_announces_the_hole(hub_factory: HubFactory) -> None:
    cfg = dict(
        slow_write_buffer_bytes=64 * 1024,
        max_pending_messages=100,
        lossless_overflow=LosslessOverflow.GAP,
    )
    async with hub_factory(**cfg) as (hub, bus):
        stalled = await _stall(hub.port)
        await stalled.send('{"op":"subscribe","id":1,"channels":["trades.SPY"]}')
        await asyncio.sleep(0.05)
        for i in range(3000):
            bus.publish_nowait("trades.SPY", BIG | {"i": i})
            if i % 100 == 0:
                await asyncio.sleep(0.001)
        await settle()
        slow = Client(stalled)
        seen: list[dict[str, Any]] = []
        while not seen or 3000 not in (seen[-1].get("seq"), seen[-1].get("to_seq")):
            seen.extend(await slow.messages(1, timeout=5))
        gaps = [m for m in seen if m["type"] == "status" and m["state"] == "gap"]
        assert gaps, "a dropped backlog must be announced"
        seqs = [m["seq"] for m in seen if m["type"] == "update"]
        missing = sum(g["count"] for g in gaps)
        assert len(seqs) + missing == 3000 and seqs == sorted(seqs)
        assert any(m["type"] == "status" and m["state"] == "lagging" for m in seen)
        assert hub.stats.gap_dropped == missing
        await stalled.close()


async def test_slow_latest_value_consumer_is_conflated_and_told(hub_factory: HubFactory) -> None:
    async with hub_factory(slow_write_buffer_bytes=64 * 1024) as (hub, bus):
        stalled = await _stall(hub.port)
        await stalled.send('{"op":"subscribe","id":1,"channels":["quotes.SPY"]}')
        await asyncio.sleep(0.05)
        for i in range(2000):
            bus.publish_nowait("quotes.SPY", BIG | {"i": i})
            if i % 100 == 0:
                await asyncio.sleep(0.001)
        await settle()
        slow = Client(stalled)
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1].get("seq") != 2000:
            seen.extend(await slow.messages(1, timeout=5))
        conflated = [m for m in seen if m["type"] == "status" and m["state"] == "conflated"]
        updates = [m for m in seen if m["type"] == "update"]
        assert conflated and sum(m["count"] for m in conflated) + len(updates) == 2000
        assert hub.stats.conflated == sum(m["count"] for m in conflated)
        await stalled.close()


# --- auth --------------------------------------------------------------------------------------

SECRET = "test-secret-of-at-least-32-bytes-long"


async def test_auth_requires_a_valid_token(hub_factory: HubFactory) -> None:
    async with hub_factory(auth_secret=SECRET) as (hub, _):
        with pytest.raises(InvalidStatus) as info:
            async with client(hub):
                pass
        assert info.value.response.status_code == 401
        assert orjson.loads(info.value.response.body)["error"]["code"] == "unauthorized"
        expired = issue_token(SECRET, ["trades.*"], subject="ui", expires_at=int(time.time()) - 10)
        with pytest.raises(InvalidStatus):
            async with client(hub, f"/ws?token={expired}"):
                pass
        forged = issue_token(
            "another-secret-of-32-bytes-or-more",
            ["trades.*"],
            subject="ui",
            expires_at=int(time.time()) + 60,
        )
        with pytest.raises(InvalidStatus):
            async with client(hub, f"/ws?token={forged}"):
                pass
        assert hub.stats.auth_denied == 3


async def test_short_auth_secret_is_refused(hub_factory: HubFactory) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        async with hub_factory(auth_secret="short"):
            pass


async def test_auth_token_limits_channels(hub_factory: HubFactory) -> None:
    async with hub_factory(auth_secret=SECRET) as (hub, _):
        token = issue_token(SECRET, ["trades.*"], subject="ui", expires_at=int(time.time()) + 60)
        async with client(hub, f"/ws?token={token}") as c:
            err = await c.reply("subscribe", channels=["quotes.SPY"])
            assert err["code"] == "forbidden" and err["channel"] == "quotes.SPY"
            assert (await c.reply("subscribe", channels=["trades.SPY"]))["type"] == "ack"
        header = {"Authorization": f"Bearer {token}"}
        async with client(hub, additional_headers=header) as c:
            assert (await c.reply("subscribe", channels=["trades.QQQ"]))["type"] == "ack"


# --- heartbeats, staleness, HTTP, shutdown -------------------------------------------------------


async def test_heartbeat_stale_then_live(hub_factory: HubFactory) -> None:
    async with (
        hub_factory(heartbeat_interval_s=0.05, stale_after_s=0.1) as (hub, bus),
        client(hub) as c,
    ):
        bus.publish_nowait("trades.SPY", {"i": 0})
        await settle()
        await c.reply("subscribe", channels=["trades.SPY"])
        seen = await c.messages(3, skip_heartbeats=False)
        assert any(m["type"] == "heartbeat" for m in seen)
        while not any(m.get("state") == "stale" for m in seen):
            seen.extend(await c.messages(1))
        bus.publish_nowait("trades.SPY", {"i": 1})
        live, update = await c.messages(2)
        assert live == {"type": "status", "channel": "trades.SPY", "state": "live"}
        assert update["seq"] == 2


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


async def test_health_metrics_and_page_on_the_same_port(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY"])
        bus.publish_nowait("trades.SPY", {"i": 0})
        await c.messages(1)
        base = f"http://127.0.0.1:{hub.port}"
        status, ctype, body = await asyncio.to_thread(_get, base + "/health")
        health = orjson.loads(body)
        assert status == 200 and ctype == "application/json"
        assert health["status"] == "ok" and health["connections"] == 1 and health["channels"] == 3
        assert {"uptime_s", "version", "last_input_age_s", "lag"} <= set(health)
        status, ctype, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        sent = families["nautilus_hub_messages_sent"].samples[0].value
        assert sent >= 1
        assert "nautilus_stage_publish_to_hub_seconds" in families
        assert families["nautilus_hub_connections"].samples[0].value == 1
        status, ctype, body = await asyncio.to_thread(_get, base + "/")
        assert status == 200 and ctype.startswith("text/html") and b"<html" in body.lower()
        status, ctype, body = await asyncio.to_thread(_get, base + "/nope")
        assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"


async def test_shutdown_sends_going_away(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, _):
        ws = await connect(f"ws://127.0.0.1:{hub.port}/")
        await hub.stop()
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1001


async def test_foreign_channel_on_the_bus_is_counted_and_skipped(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, bus), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY"])
        bus.publish_nowait("not a channel", {"x": 1})
        bus.publish_nowait("trades.SPY", {"i": 1})
        (msg,) = await c.messages(1)
        assert msg["seq"] == 1
        assert hub.stats.foreign_messages == 1


async def test_implicit_channels_accept_any_well_formed_name(hub_factory: HubFactory) -> None:
    async with hub_factory(implicit_channels=True) as (hub, bus), client(hub) as c:
        ack = await c.reply("subscribe", channels=["trades.LATER"])
        assert ack["channels"] == ["trades.LATER"]
        assert (await c.reply("subscribe", channels=["nonsense"]))["code"] == "bad_channel"
        bus.publish_nowait("trades.LATER", {"i": 1})
        (msg,) = await c.messages(1)
        assert (msg["channel"], msg["seq"]) == ("trades.LATER", 1)


async def test_health_and_metrics_report_bus_losses() -> None:
    bus = MemoryBus(epoch="ep1", max_pending=10)
    hub = Hub(HubConfig(port=0), bus)
    await hub.start()
    try:
        bus.publish_nowait("trades.SPY", {"i": 0})
        await settle()
        for i in range(1, 51):  # no await: the hub's bus subscription keeps the newest 10
            bus.publish_nowait("trades.SPY", {"i": i})
        await settle()
        assert hub.health()["bus"] == {
            "dropped": 40, "invalid": 0, "recovered": 0, "duplicates": 0, "reconnects": 0,
        }  # fmt: skip
        assert hub.stats.bus_gaps == 40  # and the hole is announced to subscribers as a gap
        _, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{hub.port}/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        skipped = {
            s.labels["reason"]: s.value
            for s in families["nautilus_hub_bus_skipped_messages"].samples
            if s.name.endswith("_total")
        }
        assert skipped == {"overflow": 40, "invalid": 0, "duplicate": 0}
        assert "nautilus_hub_bus_reconnects" in families
    finally:
        await hub.stop()


async def test_batch_frames_stay_under_the_frame_bound(hub_factory: HubFactory) -> None:
    async with hub_factory(max_batch_bytes=64 * 1024) as (hub, bus), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY"])
        for i in range(500):  # one tick: ~2 MB for this connection
            bus.publish_nowait("trades.SPY", BIG | {"i": i})
        seqs: list[int] = []
        while len(seqs) < 500:
            raw = await asyncio.wait_for(c.ws.recv(), 5)
            assert len(raw) <= 64 * 1024 + 5000  # a batch frame, or one message alone
            frame = orjson.loads(raw)
            seqs += [m["seq"] for m in (frame["messages"] if frame["type"] == "batch" else [frame])]
        assert seqs == list(range(1, 501))

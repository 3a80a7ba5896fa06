"""The hub against what an attacker or a bad client does (issue 16, "Hardening").

Each test reproduces one defect found by attacking a running hub: it failed before the fix.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol.channels import ChannelPattern
from protocol.errors import CloseCode
from realtime.bus import MemoryBus
from realtime.hub import Hub, HubConfig
from realtime.hub.auth import Grant, issue_token
from realtime.hub.channels import ChannelRegistry
from realtime.hub.metrics import HubStats
from realtime.hub.server import HubServerConnection
from realtime.hub.session import Close, Detach, Session
from tests.realtime.hub.conftest import HubFactory, client, resume_flood, settle
from tests.support import until

SECRET = "hardening-secret-of-at-least-32-bytes"
SECOND = 1_000_000_000


class ShiftedClock:
    """Wall time moved by ``shift_ns``: a token's ``exp`` comes due in a fraction of a second."""

    def __init__(self, shift_ns: int) -> None:
        self.shift_ns = shift_ns

    def now_ns(self) -> int:
        return time.time_ns() + self.shift_ns


async def raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


HANDSHAKE = (
    b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


# --- security ------------------------------------------------------------------------------------


async def test_connection_is_closed_with_4001_when_its_token_expires() -> None:
    expires_at = int(time.time()) + 3600
    # the hub's clock says the token has 0.3 s left
    clock = ShiftedClock(expires_at * SECOND - 300_000_000 - time.time_ns())
    bus = MemoryBus(epoch="ep1", clock=clock)
    hub = Hub(HubConfig(port=0, heartbeat_interval_s=30.0, auth_secret=SECRET), bus, clock=clock)
    await hub.start()
    hub.declare(["trades.SPY"])
    token = issue_token(SECRET, ["trades.*"], subject="ui", expires_at=expires_at)
    try:
        async with client(hub, f"/ws?token={token}") as c:
            assert (await c.reply("subscribe", channels=["trades.SPY"]))["type"] == "ack"
            bus.publish_nowait("trades.SPY", {"i": 1})
            assert (await c.messages(1))[0]["seq"] == 1
            with pytest.raises(ConnectionClosed) as closed:
                await c.messages(1, timeout=5.0)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "token expired")
        assert clock.now_ns() >= expires_at * SECOND
        assert hub.stats.tokens_expired == 1
        # a token already expired on the hub's clock is refused at the handshake
        with pytest.raises(InvalidStatus) as refused:
            async with client(hub, f"/ws?token={token}"):
                pass
        assert refused.value.response.status_code == 401
    finally:
        await hub.stop()


def test_no_request_is_answered_after_the_token_expires() -> None:
    registry = ChannelRegistry(history_size=8)
    spy = registry.open("trades.SPY")
    grant = Grant("ui", (ChannelPattern.parse("trades.*"),), expires_ns=10 * SECOND)
    session = Session(HubConfig(), registry, grant, HubStats(), now_ns=SECOND)
    assert session.receive('{"op":"subscribe","id":1,"channels":["trades.SPY"]}', 2 * SECOND)
    actions = session.receive('{"op":"subscribe","id":2,"channels":["trades.QQQ"]}', 10 * SECOND)
    assert actions == [Detach((spy,)), Close(CloseCode.TOKEN_EXPIRED, "token expired")]
    assert session.closed and session.subscriptions == set()
    assert session.receive('{"op":"ping","id":3}', 11 * SECOND) == []


def _live_connections() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance dereferences a dead weakref.proxy (ReferenceError)
    return sum(type(o) is HubServerConnection for o in gc.get_objects())


async def test_failed_handshakes_with_a_valid_token_leave_nothing_behind(
    hub_factory: HubFactory,
) -> None:
    async with hub_factory(auth_secret=SECRET) as (hub, _bus):
        token = issue_token(SECRET, [">"], subject="ui", expires_at=int(time.time()) + 60)
        before = _live_connections()
        for _ in range(20):  # a valid token, but no Sec-WebSocket-Key: websockets refuses it
            reply = await raw_http(
                hub.port,
                b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n",
            )
            assert reply.startswith(b"HTTP/1.1 400")
        await until(lambda: _live_connections() <= before)
        async with client(hub, f"/ws?token={token}") as c:  # the hub still admits a good one
            assert (await c.reply("ping"))["type"] == "pong"


async def test_list_and_errors_reveal_no_ungranted_channel(hub_factory: HubFactory) -> None:
    async with hub_factory(auth_secret=SECRET) as (hub, bus):
        bus.publish_nowait("quotes.SPY", {"b": 1})
        await settle()
        token = issue_token(SECRET, ["trades.*"], subject="ui", expires_at=int(time.time()) + 60)
        async with client(hub, f"/ws?token={token}") as c:
            listed = await c.reply("list")
            assert [ch["name"] for ch in listed["available"]] == ["trades.QQQ", "trades.SPY"]
            carried = await c.reply("subscribe", channels=["quotes.SPY"])
            absent = await c.reply("subscribe", channels=["quotes.NOPE"])
            assert carried["code"] == absent["code"] == "forbidden"
            assert carried["message"].replace("SPY", "NOPE") == absent["message"]
            assert (carried["field"], absent["field"]) == ("channels[0]", "channels[0]")


# --- resource exhaustion -------------------------------------------------------------------------


async def test_implicit_channels_are_bounded_in_number(hub_factory: HubFactory) -> None:
    async with (
        hub_factory(implicit_channels=True, max_channels=5) as (hub, _bus),
        client(hub) as c,
    ):
        ack = await c.reply("subscribe", channels=["trades.A", "trades.B"])
        assert ack["type"] == "ack"
        err = await c.reply("subscribe", channels=["trades.C"])
        assert (err["code"], err["field"], err["channel"]) == (
            "unknown_channel",
            "channels[0]",
            "trades.C",
        )
        assert "maximum of 5 channels" in err["message"]
        assert hub.health()["channels"] == 5
        # all or nothing: a refused request creates none of its channels
        err = await c.reply("unsubscribe", channels=["trades.A"])
        assert err["type"] == "ack"


async def test_idle_implicit_channels_are_forgotten(hub_factory: HubFactory) -> None:
    async with (
        hub_factory(implicit_channels=True, heartbeat_interval_s=0.02, channel_idle_s=0.05) as (
            hub,
            bus,
        ),
        client(hub) as c,
    ):
        await c.reply("subscribe", channels=["trades.IDLE", "trades.PUB", "trades.HELD"])
        bus.publish_nowait("trades.PUB", {"i": 1})
        await c.messages(1)
        await c.reply("unsubscribe", channels=["trades.IDLE", "trades.PUB"])
        await until(lambda: hub.stats.channels_expired == 1, timeout_s=5)
        listed = {ch["name"] for ch in (await c.reply("list"))["available"]}
        # declared, published and still subscribed channels stay
        assert listed == {"trades.SPY", "quotes.SPY", "trades.QQQ", "trades.PUB", "trades.HELD"}


async def test_list_is_bounded(hub_factory: HubFactory) -> None:
    async with hub_factory(max_list_channels=2) as (hub, _bus), client(hub) as c:
        listed = await c.reply("list")
        assert [ch["name"] for ch in listed["available"]] == ["quotes.SPY", "trades.QQQ"]


async def test_a_client_that_sends_without_reading_stalls_only_itself(
    hub_factory: HubFactory,
) -> None:
    limit = 64 * 1024
    async with hub_factory(  # the replay budget (test_limits.py) is lifted to test the pause
        slow_write_buffer_bytes=limit,
        max_messages_per_second=10_000,
        history_size=1000,
        replay_messages_per_second=10**9,
        replay_bytes_per_second=10**12,
    ) as (hub, bus):
        for i in range(1000):
            bus.publish_nowait("trades.SPY", {"i": i, "pad": "x" * 200})
        await settle()
        replay_bytes = 1000 * 330  # one resume from 0 replays the whole ring
        loops = 40
        async with resume_flood(hub, loops) as (bad, healthy):  # the attacker never reads
            await until(lambda: hub.health()["lag"]["outbound_bytes"] > limit)
            bus.publish_nowait("trades.QQQ", {"i": 0})
            (update,) = await healthy.messages(1, timeout=2.0)
            assert update["channel"] == "trades.QQQ"
            await settle()
            # before: every replay queued in the socket's buffer (40 x 330 KB); now the hub stops
            # reading a client's requests while its replies wait
            assert hub.health()["lag"]["outbound_bytes"] < limit + 2 * replay_bytes
            bad.ws.transport.resume_reading()  # once it reads, every request is answered
            got = await bad.messages_until_reply(bad.next_id)
            acks = [m for m in got if m["type"] == "ack"]
            assert len(acks) == 2 * loops


async def test_connections_are_limited_with_503_then_admitted_again(
    hub_factory: HubFactory,
) -> None:
    async with hub_factory(max_connections=2) as (hub, _bus):
        async with client(hub), client(hub):
            await until(lambda: hub.health()["connections"] == 2)
            with pytest.raises(InvalidStatus) as refused:
                async with client(hub):
                    pass
            response = refused.value.response
            assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
            assert orjson.loads(response.body)["error"]["code"] == "too_many_connections"
        await until(lambda: hub.health()["connections"] == 0)
        async with client(hub) as c:
            assert (await c.reply("ping"))["type"] == "pong"
        assert hub.stats.connections_refused == 1


# --- HTTP on the hub's port ----------------------------------------------------------------------


async def test_two_upgrade_headers_are_a_400(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, _bus):
        reply = await raw_http(
            hub.port, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n" + HANDSHAKE + b"\r\n"
        )
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        assert orjson.loads(body)["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "request_head",
    [
        b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
async def test_methods_other_than_get_are_405(hub_factory: HubFactory, request_head: bytes) -> None:
    async with hub_factory() as (hub, _bus):
        reply = await raw_http(hub.port, request_head)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ")
        assert b"\r\nAllow: GET\r\n" in head
        assert orjson.loads(body)["error"]["code"] == "method_not_allowed"
        async with client(hub) as c:  # GET and the upgrade are untouched
            assert (await c.reply("ping"))["type"] == "pong"


# --- protocol edge cases -------------------------------------------------------------------------


async def test_out_of_range_numbers_are_named_out_of_range(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, _bus), client(hub) as c:
        await c.ws.send('{"op":"ping","id":1e30}')
        err = (await c.messages(1))[0]
        assert (err["code"], err["field"]) == ("bad_message", "id")
        assert "out of range" in err["message"]
        await c.ws.send(
            '{"op":"subscribe","id":2,"channels":["trades.SPY"],'
            '"resume":{"trades.SPY":{"epoch":"ep1","seq":18446744073709551615}}}'
        )
        err = (await c.messages(1))[0]
        assert (err["code"], err["field"], err["id"]) == ("bad_resume", "resume.trades.SPY.seq", 2)
        assert "18446744073709551615 is out of range" in err["message"]
        assert "must be >= 0" not in err["message"]


async def test_invalid_utf8_closes_with_1007_as_documented(hub_factory: HubFactory) -> None:
    async with hub_factory() as (hub, _bus):
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(b"GET / HTTP/1.1\r\n" + HANDSHAKE + b"\r\n")
        await reader.readuntil(b"\r\n\r\n")
        payload = b'{"op":"ping","id":"\xff"}'
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        close = await asyncio.wait_for(reader.readexactly(4), 5)
        writer.close()
        assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1007
    assert "| 1007 |" in (Path(__file__).parents[3] / "protocol" / "README.md").read_text()


# --- continuity after a bus restart --------------------------------------------------------------


async def test_an_epoch_change_mid_stream_is_told_to_the_subscriber(
    hub_factory: HubFactory,
) -> None:
    async with hub_factory() as (hub, bus), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY", "quotes.SPY"], snapshot=False)
        bus.publish_nowait("trades.SPY", {"i": 1})
        bus.publish_nowait("trades.SPY", {"i": 2})
        assert [m["seq"] for m in await c.messages(2)] == [1, 2]
        bus.epoch = "ep2"  # the bus restarted with a new numbering
        bus.publish_nowait("trades.SPY", {"i": 3})
        status, update = await c.messages(2)
        assert status == {
            "type": "status",
            "channel": "trades.SPY",
            "state": "not_recovered",
            "to_seq": 2,
            "epoch": "ep2",
            "reason": "epoch_changed",
            "previous_epoch": "ep1",
            "previous_seq": 2,
        }
        assert (update["epoch"], update["seq"]) == ("ep2", 3)
        # a channel's first epoch is no change
        bus.publish_nowait("quotes.SPY", {"b": 1})
        (first,) = await c.messages(1)
        assert first["type"] == "update" and first["epoch"] == "ep2"
        assert hub.stats.epoch_changes == 1

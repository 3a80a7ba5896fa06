"""``realtime.hub.session`` without sockets: frames in, actions out (issue 8).

Every expected answer is the wire contract of protocol/README.md ("Requests", "Errors", "Close
codes", "Resume rules"); replies are read back through ``protocol.codec.decode_server``.
"""

from __future__ import annotations

import ast
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

import realtime.hub.session as session_module
from protocol.channels import ChannelPattern
from protocol.codec import decode_server, join_batch
from protocol.errors import CloseCode
from protocol.messages import (
    Ack,
    Batch,
    Error,
    Pong,
    ResumePosition,
    ServerMessage,
    Snapshot,
    Status,
    StatusState,
    Update,
)
from realtime.bus.base import Envelope
from realtime.hub.auth import ALLOW_ALL, Grant, issue_token
from realtime.hub.channels import BusRead, ChannelRegistry, ChannelState
from realtime.hub.config import HubConfig
from realtime.hub.metrics import HubStats
from realtime.hub.session import (
    Action,
    Attach,
    Close,
    Detach,
    ReadHistory,
    Refusal,
    Reply,
    Session,
    TokenBucket,
    admit,
)

T0 = 1_700_000_000_000_000_000
DECLARED = ("trades.SPY", "quotes.SPY", "trades.QQQ")


class Harness:
    """One session over a registry of the declared channels, with the time moved by hand."""

    def __init__(self, config: HubConfig | None = None, grant: Grant = ALLOW_ALL) -> None:
        self.config = config or HubConfig()
        self.channels = ChannelRegistry(self.config.history_size)
        for name in DECLARED:
            self.channels.open(name)
        self.stats = HubStats()
        self.now = T0
        self.session = Session(self.config, self.channels, grant, self.stats, self.now)
        self.next_id = 0

    def ch(self, name: str) -> ChannelState:
        found = self.channels.get(name)
        assert found is not None
        return found

    def publish(self, name: str, count: int, epoch: str = "ep1") -> None:
        """``count`` more messages ``{"i": seq}`` on a channel, as the bus would number them."""
        ch = self.ch(name)
        for seq in range(ch.last_seq + 1, ch.last_seq + 1 + count):
            env = Envelope(name, seq, epoch, self.now - 2000, self.now - 1000, {"i": seq})
            ch.accept(env, self.now)

    def send(self, op: str, **fields: Any) -> list[Action]:
        self.next_id += 1
        self.now += 1_000_000  # 1 ms apart: inside the default rate limit
        frame = orjson.dumps({"op": op, "id": self.next_id, **fields}).decode()
        return self.session.receive(frame, self.now)

    def raw(self, frame: str | bytes) -> list[Action]:
        self.now += 1_000_000
        return self.session.receive(frame, self.now)


def replies(actions: list[Action]) -> list[ServerMessage]:
    """The messages the client would read, batches unpacked."""
    out: list[ServerMessage] = []
    for action in actions:
        if isinstance(action, Reply):
            msg = decode_server(action.payload)
            out.extend(msg.messages if isinstance(msg, Batch) else [msg])
    return out


def effects(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Reply)]


def only_error(actions: list[Action]) -> Error:
    assert effects(actions) == []
    (err,) = replies(actions)
    assert isinstance(err, Error)
    return err


# --- subscribe, unsubscribe, list, ping ---------------------------------------------------------


def test_subscribe_attaches_then_acks_with_the_effective_set_and_limits() -> None:
    h = Harness(replace(HubConfig(), max_subscriptions=7))
    actions = h.send("subscribe", channels=["trades.SPY", "quotes.SPY", "trades.SPY"])
    assert actions[0] == Attach((h.ch("trades.SPY"), h.ch("quotes.SPY")))
    (ack,) = replies(actions)
    assert isinstance(ack, Ack) and (ack.id, ack.op) == (1, "subscribe")
    assert ack.channels == ("quotes.SPY", "trades.SPY")
    assert ack.limits == h.config.limits() and ack.limits.max_subscriptions == 7
    assert ack.recovery is None
    assert h.session.live == h.session.subscriptions == {h.ch("trades.SPY"), h.ch("quotes.SPY")}
    # subscribing again to what is held attaches nothing and acks the same set
    again = h.send("subscribe", channels=["trades.SPY"])
    assert effects(again) == []
    assert replies(again)[0] == replace(ack, id=2)


def test_snapshot_of_a_latest_value_channel_follows_the_ack() -> None:
    h = Harness()
    h.publish("quotes.SPY", 3)
    h.publish("trades.SPY", 3)
    ack, snap = replies(h.send("subscribe", channels=["quotes.SPY", "trades.SPY"]))
    assert isinstance(ack, Ack)
    assert isinstance(snap, Snapshot)  # none for the ordered-lossless trades.SPY
    assert (snap.channel, snap.seq, snap.epoch, snap.data) == ("quotes.SPY", 3, "ep1", {"i": 3})
    assert snap.ts.hub == h.now  # stamped when sent, from the caller's clock
    assert h.stats.deliveries == 1


def test_snapshot_can_be_declined_and_is_absent_before_the_first_message() -> None:
    h = Harness()
    (ack,) = replies(h.send("subscribe", channels=["quotes.SPY"]))  # nothing published yet
    h.publish("quotes.SPY", 1)
    h.send("unsubscribe", channels=["quotes.SPY"])
    (ack,) = replies(h.send("subscribe", channels=["quotes.SPY"], snapshot=False))
    assert isinstance(ack, Ack) and ack.channels == ("quotes.SPY",)


def test_unsubscribe_detaches_and_ignores_channels_not_held() -> None:
    h = Harness()
    h.send("subscribe", channels=["trades.SPY", "trades.QQQ"])
    actions = h.send("unsubscribe", channels=["trades.SPY", "trades.NOPE", "quotes.SPY"])
    assert effects(actions) == [Detach((h.ch("trades.SPY"),))]
    (ack,) = replies(actions)
    assert isinstance(ack, Ack) and ack.op == "unsubscribe" and ack.channels == ("trades.QQQ",)
    actions = h.send("unsubscribe", channels=["trades.SPY"])
    assert effects(actions) == []
    assert h.session.live == h.session.subscriptions == {h.ch("trades.QQQ")}


def test_list_names_every_channel_and_the_sessions_own() -> None:
    h = Harness()
    h.publish("trades.SPY", 2)
    h.send("subscribe", channels=["trades.SPY"])
    (ack,) = replies(h.send("list"))
    assert isinstance(ack, Ack) and ack.op == "list" and ack.channels == ("trades.SPY",)
    assert ack.available is not None
    by_name = {info.name: info for info in ack.available}
    assert [info.name for info in ack.available] == sorted(DECLARED)
    spy = by_name["trades.SPY"]
    assert (spy.delivery, spy.epoch, spy.seq) == ("ordered-lossless", "ep1", 2)
    assert by_name["quotes.SPY"].delivery == "latest-value"


def test_ping_answers_pong_with_the_callers_time() -> None:
    h = Harness()
    (pong,) = replies(h.send("ping"))
    assert pong == Pong(1, h.now)


def test_implicit_channels_accept_any_well_formed_granted_name() -> None:
    h = Harness(replace(HubConfig(), implicit_channels=True))
    actions = h.send("subscribe", channels=["trades.LATER"])
    assert effects(actions) == [Attach((h.ch("trades.LATER"),))]
    assert only_error(h.send("subscribe", channels=["nonsense"])).code == "bad_channel"


# --- errors and close codes: one per code of protocol/README.md --------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{not json", "bad_json", None),
        ('["a"]', "bad_message", None),
        ('{"op":"subscribe"}', "bad_message", "id"),
        ('{"op":"subscribe","id":1,"channels":[]}', "bad_message", "channels"),
        ('{"op":"teleport","id":1}', "unknown_op", "op"),
        ('{"op":"subscribe","id":1,"channels":["nonsense"]}', "bad_channel", "channels[0]"),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY","trades.NOPE"]}',
            "unknown_channel",
            "channels[1]",
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],'
            '"resume":{"trades.SPY":{"epoch":"x","seq":-5}}}',
            "bad_resume",
            "resume.trades.SPY.seq",
        ),
    ],
)
def test_bad_requests_get_one_error_and_change_nothing(
    frame: str, code: str, field: str | None
) -> None:
    h = Harness()
    err = only_error(h.raw(frame))
    assert err.code == code and err.field == field and err.message
    assert h.session.subscriptions == set()
    assert h.stats.errors == {code: 1}


def test_binary_frames_are_refused() -> None:
    h = Harness()
    err = only_error(h.raw(b"\x00\x01binary"))
    assert err.code == "binary_not_supported" and err.id is None


def test_forbidden_channel_names_the_channel_and_subscribes_nothing() -> None:
    grant = Grant("ui", (ChannelPattern.parse("trades.*"),))
    h = Harness(grant=grant)
    err = only_error(h.send("subscribe", channels=["trades.SPY", "quotes.SPY"]))
    assert (err.code, err.id, err.field, err.channel) == (
        "forbidden",
        1,
        "channels[1]",
        "quotes.SPY",
    )
    assert h.session.subscriptions == set()
    assert effects(h.send("subscribe", channels=["trades.SPY"])) == [Attach((h.ch("trades.SPY"),))]


def test_forbidden_implicit_channel_is_not_created() -> None:
    grant = Grant("ui", (ChannelPattern.parse("trades.*"),))
    h = Harness(replace(HubConfig(), implicit_channels=True), grant=grant)
    err = only_error(h.send("subscribe", channels=["bars.1m.SPY"]))
    # ungranted: forbidden, as for a channel the hub carries (hardening: no probing)
    assert err.code == "forbidden" and h.channels.get("bars.1m.SPY") is None


def test_subscription_limits_per_request_and_per_connection() -> None:
    h = Harness(replace(HubConfig(), max_subscriptions=2, max_channels_per_request=3))
    for i in range(4):
        h.channels.open(f"trades.S{i}")
    err = only_error(h.send("subscribe", channels=[f"trades.S{i}" for i in range(4)]))
    assert (err.code, err.field, err.id) == ("too_many_subscriptions", "channels", 1)
    err = only_error(h.send("subscribe", channels=list(DECLARED)))
    assert (err.code, err.field, err.id) == ("too_many_subscriptions", "channels", 2)
    assert isinstance(replies(h.send("subscribe", channels=["trades.SPY", "quotes.SPY"]))[0], Ack)
    err = only_error(h.send("subscribe", channels=["trades.QQQ"]))
    assert err.code == "too_many_subscriptions"
    # held channels do not count twice
    assert isinstance(replies(h.send("subscribe", channels=["trades.SPY"]))[0], Ack)


def test_rate_limit_burst_then_errors_then_close_4029() -> None:
    h = Harness(replace(HubConfig(), max_messages_per_second=5, rate_limit_strikes=20))
    answers: list[str] = []
    for i in range(40):  # all at one instant: no refill
        actions = h.session.receive(orjson.dumps({"op": "ping", "id": i}).decode(), T0)
        for action in actions:
            if isinstance(action, Close):
                answers.append(f"close {action.code}")
            else:
                msg = replies([action])[0]
                answers.append(msg.code if isinstance(msg, Error) else type(msg).__name__)
    assert answers == ["Pong"] * 10 + ["rate_limited"] * 20 + [f"close {CloseCode.RATE_LIMIT}"]
    assert h.stats.rate_limit_disconnects == 1 and h.stats.errors == {"rate_limited": 20}
    assert h.session.closed


def test_a_rate_limited_request_is_answered_with_its_id() -> None:
    h = Harness(replace(HubConfig(), max_messages_per_second=1, rate_limit_strikes=10))
    ids: list[object] = []
    for frame in (
        '{"op":"ping","id":1}',
        '{"op":"ping","id":2}',  # the burst of 2
        '{"op":"subscribe","id":"sub-3","channels":["trades.SPY"]}',
        '{"op":"ping","id":4.5}',  # not a valid id: none to name
        "not json",
    ):
        (action,) = h.session.receive(frame, T0)
        msg = replies([action])[0]
        ids.append((msg.code, msg.id) if isinstance(msg, Error) else type(msg).__name__)
    assert ids == [
        "Pong",
        "Pong",
        ("rate_limited", "sub-3"),
        ("rate_limited", None),
        ("rate_limited", None),
    ]


def test_only_strikes_in_a_row_close() -> None:
    h = Harness(replace(HubConfig(), max_messages_per_second=1, rate_limit_strikes=2))

    def answer(now_ns: int) -> str:
        (action,) = h.session.receive('{"op":"ping","id":1}', now_ns)
        if isinstance(action, Close):
            return str(action.code.value)
        msg = replies([action])[0]
        return msg.code if isinstance(msg, Error) else "pong"

    second = T0 + 1_000_000_000  # one token back at 1/s
    answers = [answer(T0) for _ in range(4)] + [answer(second) for _ in range(4)]
    assert answers == [
        *("pong", "pong", "rate_limited", "rate_limited"),
        *("pong", "rate_limited", "rate_limited", "4029"),  # the pong reset the strikes
    ]


def test_a_hub_bug_is_an_internal_error_and_the_session_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()

    def broken(_self: ChannelRegistry) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ChannelRegistry, "infos", broken)
    err = only_error(h.send("list"))
    assert (err.code, err.id, err.message) == ("internal", None, "internal error")
    assert h.stats.errors == {"internal": 1}
    assert isinstance(replies(h.send("ping"))[0], Pong)


def test_close_detaches_everything_and_answers_nothing_more() -> None:
    h = Harness()
    h.send("subscribe", channels=["trades.SPY", "trades.QQQ"])
    (detach,) = h.session.close()
    assert isinstance(detach, Detach)
    assert set(detach.channels) == {h.ch("trades.SPY"), h.ch("trades.QQQ")}
    assert h.send("ping") == [] and h.session.close() == []
    assert h.session.subscriptions == h.session.live == set()


# --- resume from the ring ------------------------------------------------------------------------


def test_resume_recovered_replays_then_status_in_one_frame() -> None:
    h = Harness()
    h.publish("trades.SPY", 10)
    resume = {"trades.SPY": {"epoch": "ep1", "seq": 6}}
    actions = h.send("subscribe", channels=["trades.SPY"], resume=resume)
    assert [type(a) for a in actions] == [Attach, Reply, Reply]  # ack, then one batch frame
    ack, *replayed, status = replies(actions)
    assert isinstance(ack, Ack) and ack.recovery is not None
    rec = ack.recovery["trades.SPY"]
    assert (rec.recovered, rec.replayed, rec.epoch, rec.seq, rec.reason) == (
        True,
        4,
        "ep1",
        10,
        None,
    )
    assert [(m.seq, m.data) for m in replayed if isinstance(m, Update)] == [
        (n, {"i": n}) for n in range(7, 11)
    ]
    assert status == Status("trades.SPY", StatusState.RECOVERED, count=4, to_seq=10, epoch="ep1")
    assert h.stats.deliveries == 5 and h.stats.bus_resumes == {}


def test_resume_at_the_last_message_replays_nothing_and_recovers() -> None:
    h = Harness()
    h.publish("trades.SPY", 3)
    resume = {"trades.SPY": {"epoch": "ep1", "seq": 3}}
    ack, status = replies(h.send("subscribe", channels=["trades.SPY"], resume=resume))
    assert isinstance(ack, Ack) and ack.recovery is not None
    assert ack.recovery["trades.SPY"].recovered and ack.recovery["trades.SPY"].replayed == 0
    assert isinstance(status, Status) and status.state is StatusState.RECOVERED


def _trimmed_bus_answer(read: ReadHistory, first_stored: int) -> None:
    """Fill each read as ``Bus.history`` answers from a stream trimmed to ``first_stored..10``."""
    for ch, bus_read in read.reads.items():
        after, limit = bus_read.next_read()
        stored = range(max(after + 1, first_stored), 11)
        envs = [Envelope(ch.name, s, "ep1", T0, T0, {"i": s}) for s in stored][:limit]
        bus_read.take("ep1", envs)


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        (("other", 8), "epoch_changed"),
        (("ep1", 2), "too_old"),  # the ring of 5 holds 6..10, the bus's stream 6..10 too
        (("ep1", 99), "ahead_of_stream"),
    ],
)
def test_resume_not_recovered_is_explicit_with_a_fresh_snapshot_for_latest_value(
    position: tuple[str, int], reason: str
) -> None:
    h = Harness(replace(HubConfig(), history_size=5))
    h.publish("trades.SPY", 10)
    h.publish("quotes.SPY", 10)
    epoch, seq = position
    resume = {
        "trades.SPY": {"epoch": epoch, "seq": seq},
        "quotes.SPY": {"epoch": epoch, "seq": seq},
    }
    actions = h.send("subscribe", channels=["trades.SPY", "quotes.SPY"], resume=resume)
    if reason == "too_old":  # only a ring too short asks the bus
        (read,) = actions
        assert isinstance(read, ReadHistory)
        _trimmed_bus_answer(read, first_stored=6)
        actions = h.session.attach(read.request, read.channels, read.reads, h.now)
        assert h.stats.bus_resumes == {"too_old": 2}
    else:
        assert h.stats.bus_resumes == {}
    ack, *data = replies(actions)
    assert isinstance(ack, Ack) and ack.recovery is not None
    for name in ("trades.SPY", "quotes.SPY"):
        rec = ack.recovery[name]
        assert (rec.recovered, rec.replayed, rec.seq, rec.reason) == (False, 0, 10, reason)
    states = [
        (getattr(m, "channel", None), type(m).__name__, getattr(m, "state", None)) for m in data
    ]
    assert states == [
        ("trades.SPY", "Status", StatusState.NOT_RECOVERED),
        ("quotes.SPY", "Status", StatusState.NOT_RECOVERED),
        ("quotes.SPY", "Snapshot", None),
    ]
    assert all(m.reason == reason for m in data if isinstance(m, Status))


def test_a_large_replay_is_cut_into_bounded_batch_frames() -> None:
    h = Harness(replace(HubConfig(), max_batch_bytes=2048))
    h.publish("trades.SPY", 100)
    resume = {"trades.SPY": {"epoch": "ep1", "seq": 0}}
    actions = h.send("subscribe", channels=["trades.SPY"], resume=resume)
    frames = [a.payload for a in actions if isinstance(a, Reply)][1:]
    # the bound counts the messages and their commas, not the batch envelope around them
    envelope = len(join_batch([]))
    assert len(frames) > 1 and all(len(f) <= 2048 + envelope for f in frames)
    seqs = [m.seq for m in replies(actions) if isinstance(m, Update)]
    assert seqs == list(range(1, 101))


# --- resume from the bus's history: ReadHistory, then attach -------------------------------------


def test_resume_the_ring_cannot_answer_waits_for_the_bus() -> None:
    h = Harness(replace(HubConfig(), history_size=4, max_pending_messages=50))
    h.publish("trades.SPY", 10)  # the ring holds 7..10
    resume = {"trades.SPY": {"epoch": "ep1", "seq": 2}}
    (read,) = h.send("subscribe", channels=["trades.SPY"], resume=resume)
    assert isinstance(read, ReadHistory)
    spy = h.ch("trades.SPY")
    assert read.channels == (spy,) and read.request.id == 1
    bus_read = read.reads[spy]
    assert (bus_read.position, bus_read.limit) == (ResumePosition("ep1", 2), 50)
    # counted as subscribed already, but not live
    assert h.session.subscriptions == {spy} and h.session.live == set()
    assert replies(h.send("ping"))  # other requests are answered meanwhile
    # the bus answers with the anchor 2 and 3..10 (what ``Bus.history`` returns after seq 1)
    after, _limit = bus_read.next_read()
    stored = [Envelope("trades.SPY", s, "ep1", T0, T0, {"i": s}) for s in range(after + 1, 11)]
    bus_read.take("ep1", stored)
    actions = h.session.attach(read.request, read.channels, read.reads, h.now)
    assert actions[0] == Attach((spy,))
    ack, *replayed, status = replies(actions)
    assert isinstance(ack, Ack) and ack.recovery is not None
    assert ack.recovery["trades.SPY"].recovered and ack.recovery["trades.SPY"].replayed == 8
    assert [m.seq for m in replayed if isinstance(m, Update)] == list(range(3, 11))
    assert isinstance(status, Status) and status.state is StatusState.RECOVERED
    assert h.stats.bus_resumes == {"recovered": 1}


def _pending_read(h: Harness) -> ReadHistory:
    h.publish("trades.SPY", 10)
    resume = {"trades.SPY": {"epoch": "ep1", "seq": 2}}
    (read,) = h.send("subscribe", channels=["trades.SPY"], resume=resume)
    assert isinstance(read, ReadHistory)
    return read


def test_a_failed_bus_read_answers_bus_unavailable_and_subscribes_live() -> None:
    h = Harness(replace(HubConfig(), history_size=4))
    read = _pending_read(h)
    spy = h.ch("trades.SPY")
    read.reads[spy].failed = True
    actions = h.session.attach(read.request, read.channels, read.reads, h.now)
    assert actions[0] == Attach((spy,))
    ack, status = replies(actions)
    assert isinstance(ack, Ack) and ack.recovery is not None
    rec = ack.recovery["trades.SPY"]
    assert (rec.recovered, rec.replayed, rec.epoch, rec.seq, rec.reason) == (
        False,
        0,
        "ep1",
        10,
        "bus_unavailable",
    )
    assert isinstance(status, Status) and status.reason == "bus_unavailable"
    assert h.stats.bus_resumes == {"bus_unavailable": 1}


def test_unsubscribed_or_closed_while_the_bus_was_read() -> None:
    h = Harness(replace(HubConfig(), history_size=4))
    read = _pending_read(h)
    detach, _ack = h.send("unsubscribe", channels=["trades.SPY"])
    assert detach == Detach((h.ch("trades.SPY"),))
    read.reads[h.ch("trades.SPY")].failed = True
    actions = h.session.attach(read.request, read.channels, read.reads, h.now)
    (ack,) = replies(actions)
    assert effects(actions) == [] and isinstance(ack, Ack) and ack.channels == ()
    assert ack.recovery is None
    h.session.close()
    assert h.session.attach(read.request, read.channels, read.reads, h.now) == []


def test_subscribed_again_from_the_ring_while_the_bus_was_read() -> None:
    h = Harness(replace(HubConfig(), history_size=4))
    read = _pending_read(h)
    spy = h.ch("trades.SPY")
    h.send("unsubscribe", channels=["trades.SPY"])
    actions = h.send("subscribe", channels=["trades.SPY"])  # no resume: attached at once
    assert effects(actions) == [Attach((spy,))]
    read.reads[spy].failed = True
    late = h.session.attach(read.request, read.channels, read.reads, h.now)
    assert effects(late) == [] and h.stats.bus_resumes == {}  # attached once, not twice


def test_a_bug_while_attaching_after_the_read_echoes_the_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(replace(HubConfig(), history_size=4))
    read = _pending_read(h)

    def broken(*_args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ChannelState, "plan_bus_resume", broken)
    err = only_error(h.session.attach(read.request, read.channels, read.reads, h.now))
    assert (err.code, err.id) == ("internal", 1)
    assert h.session.live == set()


def test_reads_are_one_per_channel_the_ring_cannot_answer() -> None:
    h = Harness(replace(HubConfig(), history_size=4))
    h.publish("trades.SPY", 10)
    h.publish("trades.QQQ", 10)
    resume = {
        "trades.SPY": {"epoch": "ep1", "seq": 2},  # too old for the ring: the bus
        "trades.QQQ": {"epoch": "ep1", "seq": 8},  # in the ring
        "quotes.SPY": {"epoch": "ep1", "seq": 1},  # the hub holds nothing: the bus
    }
    (read,) = h.send("subscribe", channels=list(resume), resume=resume)
    assert isinstance(read, ReadHistory)
    assert set(read.reads) == {h.ch("trades.SPY"), h.ch("quotes.SPY")}
    assert all(isinstance(r, BusRead) for r in read.reads.values())
    assert set(read.channels) == {h.ch(n) for n in resume}


# --- admission and the inbound budget ------------------------------------------------------------

SECRET = "test-secret-of-at-least-32-bytes-long"


def test_admit_verifies_the_token_from_header_or_query() -> None:
    token = issue_token(SECRET, ["trades.*"], subject="ui", expires_at=int(time.time()) + 60)
    now = time.time_ns()
    grant = admit(SECRET, "/ws", f"Bearer {token}", now)
    assert isinstance(grant, Grant) and grant.subject == "ui"
    assert grant.allows("trades.SPY") and not grant.allows("quotes.SPY")
    assert admit(SECRET, f"/ws?token={token}", None, now) == grant
    missing = admit(SECRET, "/ws", None, now)
    assert missing == Refusal("missing token")
    assert missing.body == {"error": {"code": "unauthorized", "message": "missing token"}}
    forged = issue_token("x" * 40, ["trades.*"], subject="ui", expires_at=int(time.time()) + 60)
    assert isinstance(admit(SECRET, f"/ws?token={forged}", None, now), Refusal)


def test_token_bucket_bursts_twice_the_rate_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(5, T0)
    assert [bucket.take(T0) for _ in range(11)] == [True] * 10 + [False]
    assert bucket.take(T0 + 200_000_000)  # 0.2 s at 5/s: one token
    assert not bucket.take(T0 + 200_000_000)
    assert [bucket.take(T0 + 10_000_000_000) for _ in range(11)] == [True] * 10 + [False]


# --- purity -------------------------------------------------------------------------------------

IO_MODULES = ("asyncio", "websockets", "socket", "uvloop", "redis", "selectors", "time")


@pytest.mark.parametrize("module", ["session", "framing", "channels"])
def test_the_session_layer_imports_no_io(module: str) -> None:
    path = Path(session_module.__file__).with_name(f"{module}.py")
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert not roots & set(IO_MODULES), f"{module}.py imports {roots & set(IO_MODULES)}"
    assert "realtime.hub.server" not in imported
    if module != "channels":  # channels.py names ClientConnection for typing only
        assert "realtime.hub.connection" not in imported

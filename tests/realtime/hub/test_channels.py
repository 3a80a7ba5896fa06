"""``realtime.hub.channels`` without sockets: the ring, and resume from the bus's history.

The bus side is ``StoredBus``, a fake that answers ``Bus.history`` exactly as its contract in
``realtime/bus/base.py`` says (stored messages with ``seq > after_seq``, in order, at most
``limit``; the epoch; ``BusUnavailable`` when the server cannot answer), or the real in-memory
bus, which keeps no history. Reads are driven by the hub's own loop (``server.read_history``).
Expected outcomes are the resume rules of protocol/README.md: recovered, or not_recovered with
``epoch_changed``, ``too_old``, ``ahead_of_stream`` or ``bus_unavailable``, never a partial replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from protocol.messages import ResumePosition
from protocol.sequence import NotRecoveredReason, ResumePlan
from realtime.bus.base import BusUnavailable, Envelope
from realtime.bus.memory import MemoryBus
from realtime.hub.channels import (
    FRAME_OVERHEAD,
    BusRead,
    ChannelRegistry,
    ChannelState,
    HistoryBudget,
    undecided,
)
from realtime.hub.server import read_history

CHANNEL = "trades.SPY"
EPOCH = "ep1"
T0 = 1_700_000_000_000_000_000


def envelope(seq: int, epoch: str = EPOCH) -> Envelope:
    return Envelope(CHANNEL, seq, epoch, T0 + seq, T0 + seq + 1, {"i": seq})


class StoredBus:
    """The history side of a bus: a stream holding ``first..last`` of one channel."""

    def __init__(self, first: int, last: int, epoch: str = EPOCH) -> None:
        self.epoch = epoch
        self.stored = [envelope(seq, epoch) for seq in range(first, last + 1)]
        self.calls: list[tuple[int, int]] = []
        #: run inside each call, before answering (the hub receiving messages meanwhile)
        self.during: Callable[[], None] | None = None
        self.error: Exception | None = None
        self.hang = False

    async def history(
        self, channel: str, after_seq: int, limit: int, *, payload_fragments: bool = False
    ) -> tuple[str, list[Envelope]]:
        self.calls.append((after_seq, limit))
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        answer = [e for e in self.stored if e.channel == channel and e.seq > after_seq][:limit]
        if self.during is not None:
            self.during()
        return self.epoch, answer


def holding(first: int, last: int, ring: int) -> ChannelState:
    """A channel whose hub received ``first..last`` (a ring of ``ring``)."""
    ch = ChannelState(CHANNEL, ring)
    for seq in range(first, last + 1):
        ch.accept(envelope(seq), T0)
    return ch


async def resume(
    bus: object, ch: ChannelState, seq: int, epoch: str = EPOCH, limit: int = 1000
) -> tuple[ResumePlan, list[int], BusRead]:
    """What the hub does for a resume its ring cannot answer: read, decide, replay."""
    position = ResumePosition(epoch, seq)
    assert ch.needs_bus(ch.plan_resume(position))
    read = BusRead(position, limit)
    await read_history(bus, {ch: read}, timeout_s=0.2)  # type: ignore[arg-type]
    plan = ch.plan_bus_resume(read, final=True)
    assert plan is not None
    replayed = ch.replay_from_bus(read, plan, T0)
    return plan, [orjson.loads(p)["seq"] for p in replayed], read


def not_recovered(reason: NotRecoveredReason, ch: ChannelState) -> ResumePlan:
    return ResumePlan(False, ch.last_seq + 1, ch.last_seq, reason)


# --- the ring ------------------------------------------------------------------------------------


def test_ring_keeps_the_newest_and_restarts_after_a_hole_or_a_new_epoch() -> None:
    ch = holding(1, 10, ring=4)
    assert [seq for seq, _ in ch.history] == [7, 8, 9, 10] and ch.first_kept_seq == 7
    _, skipped = ch.accept(envelope(13), T0)  # the bus lost 11..12
    assert skipped == 2 and [seq for seq, _ in ch.history] == [13]
    assert ch.accept(envelope(12), T0) == (b"", -1)  # already past: never sent twice
    ch.accept(envelope(1, "ep2"), T0)
    assert (ch.epoch, ch.last_seq, [s for s, _ in ch.history]) == ("ep2", 1, [1])


def test_ring_resume_is_all_or_nothing() -> None:
    ch = holding(1, 10, ring=4)
    plan = ch.plan_resume(ResumePosition(EPOCH, 7))
    assert plan == ResumePlan(True, 8, 10)
    assert [orjson.loads(p)["seq"] for p in ch.replay(plan)] == [8, 9, 10]
    too_old = ch.plan_resume(ResumePosition(EPOCH, 5))
    assert too_old.reason is NotRecoveredReason.TOO_OLD and ch.replay(too_old) == []
    assert ch.needs_bus(too_old)  # the bus's history may still reach back
    ahead = ch.plan_resume(ResumePosition(EPOCH, 11))
    assert ahead.reason is NotRecoveredReason.AHEAD and not ch.needs_bus(ahead)
    other = ch.plan_resume(ResumePosition("ep0", 8))
    assert other.reason is NotRecoveredReason.EPOCH_CHANGED and not ch.needs_bus(other)
    # a hub that holds nothing of the channel asks the bus whatever the position
    empty = ChannelState(CHANNEL, 4)
    assert empty.needs_bus(empty.plan_resume(ResumePosition(EPOCH, 3)))


def test_registry_opens_once_and_lists_by_name() -> None:
    registry = ChannelRegistry(history_size=8)
    spy = registry.open("trades.SPY")
    assert registry.open("trades.SPY") is spy and registry.get("trades.QQQ") is None
    registry.open("quotes.SPY")
    assert len(registry) == 2 and set(registry) == {spy, registry.get("quotes.SPY")}
    assert [info.name for info in registry.infos(lambda _: True, 10)] == [
        "quotes.SPY",
        "trades.SPY",
    ]
    assert spy.budget is registry.budget and registry.budget.channel_messages == 8


def frame_of(ch: ChannelState) -> int:
    """What one kept frame of ``envelope(seq)`` costs (all have the same length here)."""
    return ch.history_bytes // len(ch.frames)


def test_ring_is_bounded_by_bytes_and_its_frames_are_compact() -> None:
    ch = holding(1, 3, ring=100)
    size = frame_of(ch)
    assert size == len(ch.frames[0]) + FRAME_OVERHEAD
    # orjson's own result keeps its working buffer; the ring keeps an exact-size copy
    assert all(type(frame) is bytes for frame in ch.frames)
    budget = HistoryBudget(channel_messages=100, channel_bytes=3 * size)
    ch = ChannelState(CHANNEL, 100, budget)
    for seq in range(1, 10):  # one-digit seqs: frames of one length
        ch.accept(envelope(seq), T0)
    assert [seq for seq, _ in ch.history] == [7, 8, 9] and ch.first_kept_seq == 7
    assert budget.used_bytes == ch.history_bytes == 3 * size and budget.holding == 1
    assert ch.replay(ch.plan_resume(ResumePosition(EPOCH, 7))) == list(ch.frames)[1:]
    ch.accept(envelope(1, "ep2"), T0)  # a new epoch empties the ring and its share
    assert budget.used_bytes == size and [seq for seq, _ in ch.history] == [1]


def test_a_ring_keeps_its_newest_frame_whatever_the_budget() -> None:
    ch = ChannelState(CHANNEL, 100, HistoryBudget(channel_bytes=1, total_bytes=1))
    for seq in range(1, 5):
        ch.accept(envelope(seq), T0)
    assert [seq for seq, _ in ch.history] == [4]
    assert ch.plan_resume(ResumePosition(EPOCH, 3)) == ResumePlan(True, 4, 4)


def test_total_budget_takes_from_the_busiest_channels_and_keeps_quiet_ones() -> None:
    probe = holding(1, 1, ring=10)
    size = frame_of(probe)
    registry = ChannelRegistry(history_size=1000, history_total_bytes=30 * size)
    busy = [registry.open(f"trades.B{i}") for i in range(2)]
    quiet = registry.open("trades.QUIET")

    def publish(ch: ChannelState) -> None:
        ch.accept(Envelope(ch.name, ch.last_seq + 1, EPOCH, T0, T0, {"i": 1}), T0)

    for _ in range(3):
        publish(quiet)
    for _ in range(100):
        for ch in busy:
            publish(ch)
    budget = registry.budget
    assert budget.used_bytes <= budget.total_bytes
    assert len(quiet.frames) == 3  # under the average: untouched by the busy channels
    counts = [len(ch.frames) for ch in busy]
    assert min(counts) >= 10 and abs(counts[0] - counts[1]) <= 2  # the rest, shared
    assert budget.total_bytes - budget.used_bytes < 2 * size  # and used
    assert all(ch.first_kept_seq == ch.last_seq - len(ch.frames) + 1 for ch in busy)
    # the quiet channel grows past the budget: the largest ring gives way, not the quiet one
    publish(quiet)
    assert len(quiet.frames) == 4 and budget.used_bytes <= budget.total_bytes
    assert sum(len(ch.frames) for ch in busy) < sum(counts)
    # a ring emptied (new epoch, forgotten channel) returns its share
    for ch in busy:
        ch.clear_history()
    assert budget.used_bytes == quiet.history_bytes and budget.holding == 1


# --- BusRead: the anchor ------------------------------------------------------------------------


def test_first_read_asks_for_the_anchor_then_one_more_than_fits() -> None:
    read = BusRead(ResumePosition(EPOCH, 5), limit=10)
    assert read.next_read() == (4, 12)  # seq 5 itself, 10 after it, and one to tell "cut"
    read.take(EPOCH, [envelope(s) for s in range(5, 9)])
    assert read.anchored and read.complete and [e.seq for e in read.run] == [6, 7, 8]
    assert read.next_read() == (8, 8)
    # from the start of the stream there is no anchor to ask for
    assert BusRead(ResumePosition(EPOCH, 0), limit=10).next_read() == (0, 11)


def test_a_missing_anchor_tells_trimmed_from_not_yet_published() -> None:
    trimmed = BusRead(ResumePosition(EPOCH, 5), limit=10)
    trimmed.take(EPOCH, [envelope(s) for s in range(7, 10)])
    assert not trimmed.anchored and trimmed.trimmed
    ahead = BusRead(ResumePosition(EPOCH, 5), limit=10)
    ahead.take(EPOCH, [])
    assert not ahead.anchored and not ahead.trimmed


def test_a_hole_in_the_stream_ends_the_run() -> None:
    read = BusRead(ResumePosition(EPOCH, 1), limit=10)
    read.take(EPOCH, [envelope(s) for s in (1, 2, 3, 5, 6)])
    assert [e.seq for e in read.run] == [2, 3] and not read.complete


# --- resume from the bus's history --------------------------------------------------------------


async def test_a_hub_that_holds_nothing_recovers_from_the_stream_and_is_seeded() -> None:
    bus = StoredBus(1, 30)
    ch = ChannelState(CHANNEL, 100)
    plan, replayed, _ = await resume(bus, ch, 12)
    assert plan == ResumePlan(True, 13, 30)
    assert replayed == list(range(13, 31))
    assert (ch.epoch, ch.last_seq, ch.first_kept_seq) == (EPOCH, 30, 13)
    assert ch.accept(envelope(30), T0) == (b"", -1)  # the live copy on its way: not sent again
    assert ch.accept(envelope(31), T0)[1] == 0
    assert bus.calls == [(11, 1002)]


async def test_a_small_ring_recovers_the_gap_from_the_stream() -> None:
    bus = StoredBus(1, 40)
    ch = holding(1, 40, ring=4)  # 37..40
    plan, replayed, _ = await resume(bus, ch, 5)
    assert plan == ResumePlan(True, 6, 40) and replayed == list(range(6, 41))


async def test_messages_the_hub_received_during_the_read_are_read_again() -> None:
    bus = StoredBus(1, 10)
    ch = holding(1, 10, ring=4)

    def hub_receives_more() -> None:  # 11..20 stored and received while the first read runs
        if len(bus.calls) == 1:
            bus.stored += [envelope(s) for s in range(11, 21)]
            for s in range(11, 21):
                ch.accept(envelope(s), T0)

    bus.during = hub_receives_more
    plan, replayed, _ = await resume(bus, ch, 2)
    assert plan == ResumePlan(True, 3, 20) and replayed == list(range(3, 21))
    assert len(bus.calls) == 2 and bus.calls[1][0] == 10


async def test_the_stream_ahead_of_the_hub_replays_only_what_the_hub_sent() -> None:
    bus = StoredBus(1, 15)  # 11..15 stored, still on their way to the hub
    ch = holding(1, 10, ring=4)
    plan, replayed, _ = await resume(bus, ch, 3)
    assert plan == ResumePlan(True, 4, 10) and replayed == list(range(4, 11))


@pytest.mark.parametrize("position", [9, 20], ids=["trimmed-away", "anchor-trimmed"])
async def test_a_stream_that_no_longer_reaches_back_is_too_old(position: int) -> None:
    bus = StoredBus(21, 30)
    ch = ChannelState(CHANNEL, 100)
    plan, replayed, _ = await resume(bus, ch, position)
    assert plan == not_recovered(NotRecoveredReason.TOO_OLD, ch) and replayed == []
    assert ch.epoch == "" and ch.last_seq == 0  # nothing seeded from a refused resume
    plan, replayed, _ = await resume(bus, ch, 21)  # from the oldest kept on
    assert plan.recovered and replayed == list(range(22, 31))


async def test_a_run_cut_at_the_limit_is_too_old_for_a_hub_that_holds_nothing() -> None:
    bus = StoredBus(1, 30)
    ch = ChannelState(CHANNEL, 100)
    plan, replayed, read = await resume(bus, ch, 2, limit=10)
    assert len(read.run) == 10 and not read.complete
    assert plan == not_recovered(NotRecoveredReason.TOO_OLD, ch) and replayed == []


async def test_a_position_beyond_the_stream_is_ahead() -> None:
    bus = StoredBus(1, 30)
    ch = ChannelState(CHANNEL, 100)
    plan, replayed, _ = await resume(bus, ch, 45)
    assert plan == not_recovered(NotRecoveredReason.AHEAD, ch) and replayed == []


async def test_a_hub_ahead_of_a_trimmed_stream_is_too_old_not_ahead() -> None:
    bus = StoredBus(8, 10)
    ch = holding(1, 10, ring=2)
    plan, _, _ = await resume(bus, ch, 3)
    assert plan == not_recovered(NotRecoveredReason.TOO_OLD, ch)


async def test_a_new_epoch_on_the_bus_is_epoch_changed() -> None:
    bus = StoredBus(1, 30, epoch="ep2")
    ch = ChannelState(CHANNEL, 100)
    plan, replayed, _ = await resume(bus, ch, 12)
    assert plan == not_recovered(NotRecoveredReason.EPOCH_CHANGED, ch) and replayed == []


@pytest.mark.parametrize("failure", ["unavailable", "bug", "hang"])
async def test_a_bus_that_cannot_answer_is_bus_unavailable(failure: str) -> None:
    bus = StoredBus(1, 30)
    if failure == "unavailable":
        bus.error = BusUnavailable("redis://127.0.0.1:6379/0", "connection refused")
    elif failure == "bug":
        bus.error = RuntimeError("a bus bug")
    else:
        bus.hang = True  # past ``timeout_s``
    ch = holding(1, 30, ring=4)
    plan, replayed, read = await resume(bus, ch, 5)
    assert read.failed
    assert plan == not_recovered(NotRecoveredReason.BUS_UNAVAILABLE, ch) and replayed == []


async def test_the_in_memory_bus_keeps_no_history() -> None:
    """Embedded mode: ``MemoryBus.history`` answers its epoch and nothing, so a hub that holds
    nothing of a channel recovers a client only from the start of the stream."""
    bus = MemoryBus(epoch=EPOCH)
    bus.publish_nowait(CHANNEL, {"i": 1})
    ch = ChannelState(CHANNEL, 100)
    plan, replayed, _ = await resume(bus, ch, 0)
    assert plan == ResumePlan(True, 1, 0) and replayed == []
    await bus.close()


def test_undecided_keeps_only_the_reads_to_repeat() -> None:
    ch = holding(1, 20, ring=4)  # 17..20
    short = BusRead(ResumePosition(EPOCH, 2), limit=100)
    short.take(EPOCH, [envelope(s) for s in range(2, 11)])  # complete up to 10: read again
    other = ChannelState("trades.QQQ", 4)
    failed = BusRead(ResumePosition(EPOCH, 2), limit=100)
    failed.failed = True
    assert undecided({ch: short, other: failed}) == {ch: short}

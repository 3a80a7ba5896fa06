"""Per-channel state in the hub: numbering, history ring, latest value, subscribers; resume
from the ring or the bus's history (``BusRead``); the registry of every channel the hub knows.

History is bounded by memory (``HistoryBudget``): each ring keeps at most ``channel_messages``
frames and ``channel_bytes`` bytes, and all rings together at most ``total_bytes``; the oldest
frames go first. A ring holds the encoded update frames themselves, compacted: ``orjson.dumps``
returns ``bytes`` whose allocation keeps its whole working buffer (4 KiB for a 300-byte
message, orjson >= 3.12), so a frame kept for resume is copied to its exact size once.
"""

from __future__ import annotations

import heapq
import itertools
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from protocol.channels import DeliveryClass, delivery_of
from protocol.codec import encode_data
from protocol.messages import ChannelInfo
from protocol.sequence import NotRecoveredReason, ResumePlan, plan_resume

if TYPE_CHECKING:
    from protocol.messages import ResumePosition
    from realtime.bus.base import Envelope
    from realtime.hub.connection import ClientConnection
    from realtime.hub.metrics import KindLatency


#: What one kept frame costs besides its bytes: the ``bytes`` header and its slot in the ring.
FRAME_OVERHEAD = sys.getsizeof(b"") + 8
DEFAULT_HISTORY_MESSAGES = 10_000
DEFAULT_HISTORY_BYTES = 4 * 1024 * 1024
DEFAULT_HISTORY_TOTAL_BYTES = 128 * 1024 * 1024


def compact(frame: bytes) -> bytes:
    """``frame`` in an allocation of its own size (see the module's docstring)."""
    return bytes(memoryview(frame))


def _not_recovered(reason: NotRecoveredReason, last_seq: int) -> ResumePlan:
    return ResumePlan(False, last_seq + 1, last_seq, reason)


class BusRead:
    """What a hub read of the bus's history (``Bus.history``) gave for one resume position.

    ``run`` holds the contiguous messages ``position.seq + 1 ...`` read so far, at most ``limit``.
    The first read starts one message early, at ``position.seq`` itself (the *anchor*): finding
    it proves the bus still holds the client's position, so an empty run means "nothing newer"
    rather than "trimmed away".
    """

    __slots__ = ("anchored", "complete", "epoch", "failed", "limit", "position", "run", "trimmed")

    def __init__(self, position: ResumePosition, limit: int) -> None:
        self.position = position
        self.limit = limit
        self.epoch = ""
        self.run: list[Envelope] = []
        self.anchored = False
        #: the bus holds messages after the position but not the position itself
        self.trimmed = False
        #: the last read reached the newest stored message, with no hole and within ``limit``
        self.complete = False
        self.failed = False

    @property
    def last_seq(self) -> int:
        return self.position.seq + len(self.run)

    def next_read(self) -> tuple[int, int]:
        """``(after_seq, limit)`` of the next ``Bus.history`` call: one more than still fits,
        to tell a full run from one cut at ``limit``; the first also asks for the anchor."""
        room = self.limit - len(self.run)
        if self.anchored or self.position.seq == 0:
            return self.last_seq, room + 1
        return self.position.seq - 1, room + 2

    def take(self, epoch: str, envelopes: list[Envelope]) -> None:
        """Add one read's answer (what ``next_read`` asked for)."""
        self.epoch = epoch
        start = 0
        if not self.anchored:
            if self.position.seq > 0:
                if not envelopes or envelopes[0].seq != self.position.seq:
                    self.trimmed = bool(envelopes) and envelopes[0].seq > self.position.seq
                    self.complete = False
                    return
                start = 1
            self.anchored = True
        room = self.limit - len(self.run)
        expected, wanted = self.last_seq + 1, self.position.epoch
        taken = 0
        for env in envelopes[start:]:
            if env.seq != expected or env.epoch != wanted or taken == room:
                break
            self.run.append(env)
            expected += 1
            taken += 1
        self.complete = start + taken == len(envelopes)


class HistoryBudget:
    """The bounds on the hub's resume history, and what all rings hold now.

    A ring over ``channel_messages`` frames or ``channel_bytes`` bytes drops its oldest. Over
    ``total_bytes`` across rings, the ring that just grew drops its oldest when it holds at least
    the average, else the largest ring does: busy channels share the budget, a quiet channel's
    few messages stay. A ring always keeps its newest frame, so the total can pass the budget by
    at most one frame per channel.
    """

    __slots__ = (
        "channel_bytes",
        "channel_messages",
        "holding",
        "largest",
        "rings",
        "total_bytes",
        "used_bytes",
    )

    def __init__(
        self,
        channel_messages: int = DEFAULT_HISTORY_MESSAGES,
        channel_bytes: int = DEFAULT_HISTORY_BYTES,
        total_bytes: int = DEFAULT_HISTORY_TOTAL_BYTES,
    ) -> None:
        if channel_messages < 1 or channel_bytes < 1 or total_bytes < 1:
            raise ValueError("history bounds must be positive")
        self.channel_messages = channel_messages
        self.channel_bytes = channel_bytes
        self.total_bytes = total_bytes
        #: bytes held by every ring (frames plus ``FRAME_OVERHEAD`` each)
        self.used_bytes = 0
        #: rings holding at least one frame
        self.holding = 0
        #: every ring under this budget (the registry's channels), scanned for the largest
        self.rings: Mapping[str, ChannelState] = {}
        #: the ring found largest by the last scan (rescanned once it falls to the average)
        self.largest: ChannelState | None = None

    def enforce(self, grown: ChannelState) -> None:
        """Bring the total back under ``total_bytes`` after ``grown`` received a frame."""
        while self.used_bytes > self.total_bytes:
            average = self.used_bytes / max(1, self.holding)
            victim = grown if grown.history_bytes >= average else self.largest
            if victim is None or len(victim.frames) < 2 or victim.history_bytes < average:
                victim = self.largest = max(self.rings.values(), key=_evictable_bytes, default=None)
            if victim is None or not victim.drop_oldest():
                return


def _evictable_bytes(ch: ChannelState) -> int:
    return ch.history_bytes if len(ch.frames) > 1 else -1


class ChannelState:
    """One channel as the hub holds it.

    ``frames`` keeps the newest encoded updates for resume (``seq`` ascending and contiguous from
    ``first_kept_seq``), within ``budget``. ``latest`` keeps the newest envelope of a latest-value
    channel so a snapshot can be encoded on subscribe.
    """

    __slots__ = (
        "active_ns",
        "budget",
        "declared",
        "delivery",
        "epoch",
        "first_seq",
        "frames",
        "history_bytes",
        "last_publish_ns",
        "last_seq",
        "latency",
        "latest",
        "name",
        "stale",
        "subscribers",
    )

    def __init__(self, name: str, history_size: int, budget: HistoryBudget | None = None) -> None:
        self.name = name
        self.delivery = delivery_of(name)
        self.epoch = ""
        self.last_seq = 0
        self.budget = budget or HistoryBudget(channel_messages=history_size)
        self.frames: deque[bytes] = deque()
        #: ``seq`` of ``frames[0]``
        self.first_seq = 0
        #: what ``frames`` holds, as the budget counts it
        self.history_bytes = 0
        self.latest: Envelope | None = None
        self.subscribers: set[ClientConnection] = set()
        self.last_publish_ns = 0
        self.stale = False
        #: declared by the operator (``Hub.declare``): kept whatever happens
        self.declared = False
        #: hub time of the last subscribe to the channel (idle expiry of implicit channels)
        self.active_ns = 0
        #: the stage histograms of the channel's stream kind, set by the hub on its first message
        self.latency: KindLatency | None = None

    @property
    def lossless(self) -> bool:
        return self.delivery is DeliveryClass.ORDERED_LOSSLESS

    @property
    def first_kept_seq(self) -> int:
        return self.first_seq if self.frames else self.last_seq + 1

    @property
    def history(self) -> list[tuple[int, bytes]]:
        """The kept frames with their ``seq`` (a copy: for inspection, not the hot path)."""
        return list(zip(itertools.count(self.first_seq), self.frames))

    def clear_history(self) -> None:
        budget = self.budget
        if self.frames:
            budget.holding -= 1
        budget.used_bytes -= self.history_bytes
        self.history_bytes = 0
        self.frames.clear()

    def keep(self, seq: int, frame: bytes) -> None:
        """Keep ``frame`` (compacted by the caller) as ``seq``, the successor of the newest
        kept; drop the oldest frames past the budget."""
        frames, budget = self.frames, self.budget
        if not frames:
            self.first_seq = seq
            budget.holding += 1
        frames.append(frame)
        size = len(frame) + FRAME_OVERHEAD
        self.history_bytes += size
        budget.used_bytes += size
        while len(frames) > 1 and (
            len(frames) > budget.channel_messages or self.history_bytes > budget.channel_bytes
        ):
            self.drop_oldest()
        if budget.used_bytes > budget.total_bytes:
            budget.enforce(self)

    def drop_oldest(self) -> bool:
        """Drop the oldest kept frame unless it is the newest; whether one was dropped."""
        frames = self.frames
        if len(frames) < 2:
            return False
        size = len(frames.popleft()) + FRAME_OVERHEAD
        self.first_seq += 1
        self.history_bytes -= size
        self.budget.used_bytes -= size
        return True

    def accept(self, envelope: Envelope, hub_ns: int) -> tuple[bytes, int]:
        """Record one bus message; return its encoded update and the count of skipped seqs.

        A new epoch resets history (the old numbering is gone). A hole in ``seq`` (the bus dropped
        messages) breaks contiguity, so history restarts after it: resume never spans a hole.
        A ``seq`` already recorded in this epoch (the channel was seeded from the bus's history
        while the message was on its way) returns ``(b"", -1)``: it must not be sent again.
        """
        skipped = 0
        if envelope.epoch != self.epoch:
            self.epoch = envelope.epoch
            self.clear_history()
        elif envelope.seq != self.last_seq + 1:
            if envelope.seq <= self.last_seq:
                return b"", -1
            skipped = envelope.seq - self.last_seq - 1
            self.clear_history()
        self.last_seq = envelope.seq
        self.last_publish_ns = envelope.publish_ns
        encoded = compact(self._encode(envelope, hub_ns))
        self.keep(envelope.seq, encoded)
        if not self.lossless:
            self.latest = envelope
        return encoded, skipped

    def _encode(self, envelope: Envelope, hub_ns: int) -> bytes:
        return encode_data(
            "update",
            self.name,
            envelope.seq,
            envelope.epoch,
            envelope.event_ns,
            envelope.publish_ns,
            hub_ns,
            envelope.payload,
        )

    def snapshot(self, hub_ns: int) -> bytes | None:
        env = self.latest
        if env is None:
            return None
        return encode_data(
            "snapshot",
            self.name,
            env.seq,
            env.epoch,
            env.event_ns,
            env.publish_ns,
            hub_ns,
            env.payload,
        )

    def plan_resume(self, position: ResumePosition) -> ResumePlan:
        return plan_resume(position, self.epoch, self.first_kept_seq, self.last_seq)

    def replay(self, plan: ResumePlan) -> list[bytes]:
        if not plan.recovered or plan.replay_count == 0:
            return []
        start = plan.replay_from - self.first_kept_seq
        return list(itertools.islice(self.frames, start, None))

    def needs_bus(self, plan: ResumePlan) -> bool:
        """Whether the bus's history might answer a resume this hub's ring cannot: the ring no
        longer reaches back, or the hub holds nothing of the channel (it started or joined late,
        or never carried the channel)."""
        return not plan.recovered and (
            plan.reason is NotRecoveredReason.TOO_OLD or self.epoch == ""
        )

    def plan_bus_resume(self, read: BusRead, *, final: bool) -> ResumePlan | None:
        """Decide a resume from the bus's history plus this hub's ring, as they are now.

        Recovered needs every message ``position.seq + 1`` up to what this hub has sent its
        subscribers (``last_seq``), from the read run, then the ring. Messages of the run beyond
        ``last_seq`` are not replayed: they are on their way to the hub and reach the client live.
        A hub holding nothing of the channel replays the whole run and is seeded with it
        (``replay_from_bus``); that needs a complete run. ``None``: the hub received more while
        the bus was read and its ring no longer reaches back to the run: read again (unless
        ``final``).
        """
        position, last = read.position, self.last_seq
        if read.failed:
            return _not_recovered(NotRecoveredReason.BUS_UNAVAILABLE, last)
        if read.epoch != position.epoch or self.epoch not in ("", position.epoch):
            return _not_recovered(NotRecoveredReason.EPOCH_CHANGED, last)
        if not read.anchored:
            hub_ahead = self.epoch == position.epoch and last > position.seq
            too_old = read.trimmed or hub_ahead
            return _not_recovered(
                NotRecoveredReason.TOO_OLD if too_old else NotRecoveredReason.AHEAD, last
            )
        if self.epoch == "":
            if not read.complete:
                return _not_recovered(NotRecoveredReason.TOO_OLD, last)
            return ResumePlan(True, position.seq + 1, read.last_seq)
        if position.seq > last:
            return _not_recovered(NotRecoveredReason.AHEAD, last)
        if read.last_seq >= last or self.first_kept_seq <= read.last_seq + 1:
            return ResumePlan(True, position.seq + 1, last)
        if read.complete and len(read.run) < read.limit and not final:
            return None
        return _not_recovered(NotRecoveredReason.TOO_OLD, last)

    def replay_from_bus(self, read: BusRead, plan: ResumePlan, hub_ns: int) -> list[bytes]:
        """The encoded replay of a plan from ``plan_bus_resume`` (decided in the same loop turn):
        the run up to ``plan.last_seq``, then the ring after the run. A channel the hub held
        nothing of is seeded with the run (numbering, ring, latest value), so that copies of
        these messages still on their way from the bus are recognised and not sent again."""
        if not plan.recovered:
            return []
        if self.epoch == "":
            encoded = [compact(self._encode(env, hub_ns)) for env in read.run]
            self.epoch, self.last_seq = read.epoch, read.last_seq
            self.clear_history()
            for env, frame in zip(read.run, encoded, strict=True):
                self.keep(env.seq, frame)
            if read.run:
                self.last_publish_ns = read.run[-1].publish_ns
                if not self.lossless:
                    self.latest = read.run[-1]
            return encoded
        replayed = [self._encode(env, hub_ns) for env in read.run if env.seq <= plan.last_seq]
        kept_after = max(0, read.last_seq + 1 - self.first_kept_seq)
        replayed.extend(itertools.islice(self.frames, kept_after, None))
        return replayed

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            self.name, self.delivery.value, self.epoch, self.last_seq, len(self.subscribers)
        )


class ChannelRegistry:
    """Every channel this hub knows: declared, seen on the bus, or subscribed implicitly.

    ``by_name`` is the plain dict the fan-out reads on every bus message (no method call there);
    everything else goes through ``get`` and ``open``.
    """

    __slots__ = ("budget", "by_name")

    def __init__(
        self,
        history_size: int = DEFAULT_HISTORY_MESSAGES,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        history_total_bytes: int = DEFAULT_HISTORY_TOTAL_BYTES,
    ) -> None:
        self.by_name: dict[str, ChannelState] = {}
        self.budget = HistoryBudget(history_size, history_bytes, history_total_bytes)
        self.budget.rings = self.by_name

    def __len__(self) -> int:
        return len(self.by_name)

    def __iter__(self) -> Iterator[ChannelState]:
        return iter(self.by_name.values())

    def get(self, name: str) -> ChannelState | None:
        return self.by_name.get(name)

    def open(self, name: str) -> ChannelState:
        """The channel named ``name`` (already validated), created empty if unknown."""
        ch = self.by_name.get(name)
        if ch is None:
            ch = self.by_name[name] = ChannelState(name, self.budget.channel_messages, self.budget)
        return ch

    def infos(self, allows: Callable[[str], bool], limit: int) -> tuple[ChannelInfo, ...]:
        """What ``list`` answers: the first ``limit`` channels by name that ``allows`` admits
        (a token's grant), so a reply neither shows ungranted channels nor grows without bound."""
        names = heapq.nsmallest(limit, (name for name in self.by_name if allows(name)))
        return tuple(self.by_name[name].info() for name in names)

    def expire_idle(self, now_ns: int, idle_ns: int) -> int:
        """Forget implicit channels nobody publishes or subscribes: not declared, never
        published (nor seeded from the bus), without subscribers, and last subscribed more than
        ``idle_ns`` ago. Returns how many were forgotten. A channel seen on the bus is kept:
        its ring and latest value answer resumes and snapshots."""
        idle = [
            name
            for name, ch in self.by_name.items()
            if not ch.declared
            and not ch.subscribers
            and ch.epoch == ""
            and now_ns - ch.active_ns > idle_ns
        ]
        for name in idle:
            self.by_name.pop(name).clear_history()
        if self.budget.largest is not None and self.budget.largest.name in idle:
            self.budget.largest = None
        return len(idle)


def undecided(reads: Mapping[ChannelState, BusRead]) -> dict[ChannelState, BusRead]:
    """The reads of the bus's history to repeat: those ``plan_bus_resume`` cannot decide yet
    (the hub received more than its ring keeps while the bus was read)."""
    return {ch: r for ch, r in reads.items() if ch.plan_bus_resume(r, final=False) is None}

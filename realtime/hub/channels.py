"""Per-channel state in the hub: numbering, history ring, latest value, subscribers; resume
from the ring or the bus's history (``BusRead``); the registry of every channel the hub knows."""

from __future__ import annotations

import heapq
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


class ChannelState:
    """One channel as the hub holds it.

    ``history`` keeps the last ``history_size`` encoded updates for resume (``seq`` ascending,
    contiguous). ``latest`` keeps the newest envelope of a latest-value channel so a snapshot can
    be encoded on subscribe.
    """

    __slots__ = (
        "active_ns",
        "declared",
        "delivery",
        "epoch",
        "history",
        "last_publish_ns",
        "last_seq",
        "latest",
        "name",
        "stale",
        "subscribers",
    )

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        self.delivery = delivery_of(name)
        self.epoch = ""
        self.last_seq = 0
        self.history: deque[tuple[int, bytes]] = deque(maxlen=history_size)
        self.latest: Envelope | None = None
        self.subscribers: set[ClientConnection] = set()
        self.last_publish_ns = 0
        self.stale = False
        #: declared by the operator (``Hub.declare``): kept whatever happens
        self.declared = False
        #: hub time of the last subscribe to the channel (idle expiry of implicit channels)
        self.active_ns = 0

    @property
    def lossless(self) -> bool:
        return self.delivery is DeliveryClass.ORDERED_LOSSLESS

    @property
    def first_kept_seq(self) -> int:
        return self.history[0][0] if self.history else self.last_seq + 1

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
            self.history.clear()
        elif envelope.seq != self.last_seq + 1:
            if envelope.seq <= self.last_seq:
                return b"", -1
            skipped = envelope.seq - self.last_seq - 1
            self.history.clear()
        self.last_seq = envelope.seq
        self.last_publish_ns = envelope.publish_ns
        encoded = self._encode(envelope, hub_ns)
        self.history.append((envelope.seq, encoded))
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
        return [encoded for _, encoded in list(self.history)[start:]]

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
            encoded = [self._encode(env, hub_ns) for env in read.run]
            self.epoch, self.last_seq = read.epoch, read.last_seq
            self.history.clear()
            self.history.extend(zip((env.seq for env in read.run), encoded, strict=True))
            if read.run:
                self.last_publish_ns = read.run[-1].publish_ns
                if not self.lossless:
                    self.latest = read.run[-1]
            return encoded
        replayed = [self._encode(env, hub_ns) for env in read.run if env.seq <= plan.last_seq]
        replayed.extend(encoded for seq, encoded in self.history if seq > read.last_seq)
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

    __slots__ = ("by_name", "history_size")

    def __init__(self, history_size: int) -> None:
        self.history_size = history_size
        self.by_name: dict[str, ChannelState] = {}

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
            ch = self.by_name[name] = ChannelState(name, self.history_size)
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
            del self.by_name[name]
        return len(idle)


def undecided(reads: Mapping[ChannelState, BusRead]) -> dict[ChannelState, BusRead]:
    """The reads of the bus's history to repeat: those ``plan_bus_resume`` cannot decide yet
    (the hub received more than its ring keeps while the bus was read)."""
    return {ch: r for ch, r in reads.items() if ch.plan_bus_resume(r, final=False) is None}

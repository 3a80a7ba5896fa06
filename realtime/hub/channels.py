"""Per-channel state in the hub: numbering, history ring, latest value, subscribers."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from protocol.channels import DeliveryClass, delivery_of
from protocol.codec import encode_data
from protocol.messages import ChannelInfo
from protocol.sequence import ResumePlan, plan_resume

if TYPE_CHECKING:
    from protocol.messages import ResumePosition
    from realtime.bus.base import Envelope
    from realtime.hub.connection import ClientConnection


class ChannelState:
    """One channel as the hub holds it.

    ``history`` keeps the last ``history_size`` encoded updates for resume (``seq`` ascending,
    contiguous). ``latest`` keeps the newest envelope of a latest-value channel so a snapshot can
    be encoded on subscribe.
    """

    __slots__ = (
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
        """
        skipped = 0
        if envelope.epoch != self.epoch:
            self.epoch = envelope.epoch
            self.history.clear()
        elif envelope.seq != self.last_seq + 1:
            skipped = max(0, envelope.seq - self.last_seq - 1)
            self.history.clear()
        self.last_seq = envelope.seq
        self.last_publish_ns = envelope.publish_ns
        encoded = encode_data(
            "update",
            self.name,
            envelope.seq,
            envelope.epoch,
            envelope.event_ns,
            envelope.publish_ns,
            hub_ns,
            envelope.payload,
        )
        self.history.append((envelope.seq, encoded))
        if not self.lossless:
            self.latest = envelope
        return encoded, skipped

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

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            self.name, self.delivery.value, self.epoch, self.last_seq, len(self.subscribers)
        )

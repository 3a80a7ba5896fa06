"""Sequence and epoch rules, shared by the hub (resume) and clients (gap detection).

Each channel numbers its messages ``seq = 1, 2, 3, ...`` within an ``epoch``, an opaque string
that changes whenever the numbering restarts (a publisher or bus lost its state). A position
``(epoch, seq)`` names the last message a client holds. Resume is all-or-nothing: either every
message after the position is still in history and is replayed in order (``recovered``), or
nothing is replayed and the client is told ``not_recovered`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.messages import ResumePosition


class NotRecoveredReason(StrEnum):
    EPOCH_CHANGED = "epoch_changed"
    TOO_OLD = "too_old"
    AHEAD = "ahead_of_stream"
    #: the hub had to read the bus's history and the bus did not answer (error or time bound)
    BUS_UNAVAILABLE = "bus_unavailable"
    #: the replay would exceed the hub's cap per request or the connection's replay budget
    REPLAY_LIMIT = "replay_limit"


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """``replay_from``..``last_seq`` inclusive when recovered; an empty range replays nothing."""

    recovered: bool
    replay_from: int
    last_seq: int
    reason: NotRecoveredReason | None = None

    @property
    def replay_count(self) -> int:
        return max(0, self.last_seq - self.replay_from + 1) if self.recovered else 0


def plan_resume(
    position: ResumePosition, epoch: str, first_kept_seq: int, last_seq: int
) -> ResumePlan:
    """Decide a resume against a channel whose history holds ``first_kept_seq..last_seq``.

    An empty history has ``first_kept_seq == last_seq + 1``.
    """
    if position.epoch != epoch:
        return ResumePlan(False, last_seq + 1, last_seq, NotRecoveredReason.EPOCH_CHANGED)
    if position.seq > last_seq:
        return ResumePlan(False, last_seq + 1, last_seq, NotRecoveredReason.AHEAD)
    if position.seq + 1 < first_kept_seq:
        return ResumePlan(False, last_seq + 1, last_seq, NotRecoveredReason.TOO_OLD)
    return ResumePlan(True, position.seq + 1, last_seq)


@dataclass(slots=True)
class SeqTracker:
    """Client-side check of one channel's numbering: counts gaps, duplicates and epoch changes."""

    epoch: str | None = None
    last_seq: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    epoch_changes: int = 0

    def observe(self, epoch: str, seq: int) -> int:
        """Record one message; return how many messages were skipped just before it."""
        if epoch != self.epoch:
            if self.epoch is not None:
                self.epoch_changes += 1
            self.epoch, self.last_seq = epoch, seq
            self.received += 1
            return 0
        if seq <= self.last_seq:
            self.duplicates += 1
            return 0
        gap = seq - self.last_seq - 1
        self.missing += gap
        self.last_seq = seq
        self.received += 1
        return gap

    def observe_run(self, epoch: str, first_seq: int, last_seq: int, count: int) -> int:
        """Record ``count`` in-order messages spanning ``first_seq..last_seq`` (a batch frame)."""
        gap = self.observe(epoch, first_seq)
        if count > 1:
            inner = last_seq - first_seq - (count - 1)
            self.missing += max(0, inner)
            self.received += count - 1
            self.last_seq = max(self.last_seq, last_seq)
            gap += max(0, inner)
        return gap

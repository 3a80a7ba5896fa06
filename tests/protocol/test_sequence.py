from __future__ import annotations

import pytest

from protocol.messages import ResumePosition
from protocol.sequence import NotRecoveredReason, SeqTracker, plan_resume


@pytest.mark.parametrize(
    ("position", "first", "last", "recovered", "replay", "reason"),
    [
        (ResumePosition("e1", 10), 1, 15, True, (11, 15), None),
        (ResumePosition("e1", 15), 1, 15, True, (16, 15), None),  # up to date: empty replay
        (ResumePosition("e1", 5), 6, 15, True, (6, 15), None),  # exactly at the window edge
        (ResumePosition("e1", 4), 6, 15, False, None, NotRecoveredReason.TOO_OLD),
        (ResumePosition("e0", 10), 1, 15, False, None, NotRecoveredReason.EPOCH_CHANGED),
        (ResumePosition("e1", 16), 1, 15, False, None, NotRecoveredReason.AHEAD),
        (ResumePosition("e1", 0), 1, 0, True, (1, 0), None),  # empty channel
    ],
)
def test_plan_resume(
    position: ResumePosition,
    first: int,
    last: int,
    recovered: bool,
    replay: tuple[int, int] | None,
    reason: NotRecoveredReason | None,
) -> None:
    plan = plan_resume(position, "e1", first, last)
    assert plan.recovered is recovered
    assert plan.reason is reason
    if replay is not None:
        assert (plan.replay_from, plan.last_seq) == replay
        assert plan.replay_count == replay[1] - replay[0] + 1
    else:
        assert plan.replay_count == 0


def test_tracker_counts_gaps_duplicates_and_epochs() -> None:
    t = SeqTracker()
    assert [t.observe("a", s) for s in (1, 2, 5, 5, 6)] == [0, 0, 2, 0, 0]
    assert (t.received, t.missing, t.duplicates) == (4, 2, 1)
    t.observe("b", 1)
    assert t.epoch_changes == 1 and t.last_seq == 1


def test_tracker_runs() -> None:
    t = SeqTracker()
    t.observe_run("a", 1, 10, 10)
    assert (t.received, t.missing, t.last_seq) == (10, 0, 10)
    t.observe_run("a", 12, 20, 8)  # 11 missing before, one missing inside
    assert (t.received, t.missing, t.last_seq) == (18, 2, 20)

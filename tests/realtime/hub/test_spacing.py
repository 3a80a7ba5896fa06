from __future__ import annotations

import pytest

from realtime.hub.config import HubConfig
from realtime.hub.spacing import TickSpacing


def run(
    spacing: TickSpacing, took: float, gap: float, seconds: float, other: float = 0.0
) -> list[float]:
    """Ticks of ``took`` seconds, each starting ``gap`` after the previous one's end plus the
    wait it asked for (a hub that always has messages when ``gap`` is 0); the loop also spends
    ``other`` of every gap and wait on other work (an embedded platform's engines and clients).
    The waits asked."""
    waits, now, cpu = [], 0.0, 0.0
    while now < seconds:
        start = now + gap
        end = start + took
        cpu += other * gap + took
        wait = spacing.after_tick(start, end, cpu)
        cpu += other * wait
        waits.append(wait)
        now = end + wait
    return waits


def test_short_ticks_never_wait() -> None:
    assert not any(run(TickSpacing(0.002, 0.005, 0.8), took=0.0015, gap=0.0, seconds=2.0))


def test_long_ticks_with_headroom_never_wait() -> None:
    """1,000 connections at 1,000 msg/s: 3.5 ms ticks, 1.5 ms idle between them (70 % busy).
    It starts as if saturated (a burst at start is spaced) and learns the headroom within
    a few of its 0.1 s windows."""
    waits = run(TickSpacing(0.002, 0.005, 0.8), took=0.0035, gap=0.0015, seconds=2.0)
    assert waits[0] == pytest.approx(0.0035)
    assert not any(waits[60:])  # 0.3 s on


def test_an_overloaded_hub_waits_until_its_loop_is_busy_at_about_the_share() -> None:
    spacing = TickSpacing(0.002, 0.005, 0.8)
    waits = run(spacing, took=0.0035, gap=0.0, seconds=2.0)
    late = waits[len(waits) // 2 :]
    assert all(w == 0.0 or w == pytest.approx(0.0035) for w in late)  # the tick's length or 0
    busy = 0.0035 * len(late) / (0.0035 * len(late) + sum(late))
    assert 0.7 < busy < 0.9
    assert 0.7 < spacing.busy < 0.9


def test_a_process_saturated_by_other_work_spaces_every_long_tick() -> None:
    """The hub's ticks are a third of the loop's time, the rest is busy too (embedded run)."""
    waits = run(TickSpacing(0.002, 0.005, 0.8), took=0.0035, gap=0.007, seconds=2.0, other=1.0)
    assert waits[len(waits) // 4 :] == pytest.approx([0.0035] * (len(waits) - len(waits) // 4))


def test_waits_are_bounded_by_max() -> None:
    waits = run(TickSpacing(0.002, 0.005, 0.8), took=0.02, gap=0.0, seconds=2.0)
    assert max(waits) == 0.005


def test_busy_share_zero_spaces_every_long_tick() -> None:
    """The earlier rule: every tick over ``after_s`` waits as long again (at most ``max_s``)."""
    waits = run(TickSpacing(0.002, 0.005, 0.0), took=0.0035, gap=0.0015, seconds=1.0)
    assert waits == pytest.approx([0.0035] * len(waits))


def test_max_zero_never_waits() -> None:
    assert not any(run(TickSpacing(0.002, 0.0, 0.0), took=0.02, gap=0.0, seconds=1.0))


@pytest.mark.parametrize(
    ("after_s", "max_s", "busy_share"),
    [(-1.0, 0.005, 0.8), (0.002, -1.0, 0.8), (0.002, 0.005, 1.5)],
)
def test_bad_settings_are_refused(after_s: float, max_s: float, busy_share: float) -> None:
    with pytest.raises(ValueError):
        TickSpacing(after_s, max_s, busy_share)
    with pytest.raises(ValueError, match="coalesce"):
        HubConfig(coalesce_after_s=after_s, coalesce_max_s=max_s, coalesce_busy_share=busy_share)

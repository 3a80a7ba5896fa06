from __future__ import annotations

import numpy as np
import pytest

from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from realtime.replay import MAX_EVENTS_PER_WAKE, Pacer, ReplayChunk, replay


def _chunk(times_ns: list[int], channel: str = "trades.SPY") -> ReplayChunk:
    return ReplayChunk(
        np.array(times_ns, dtype=np.int64), [channel] * len(times_ns), [{"i": t} for t in times_ns]
    )


def test_pacer_scales_recorded_time() -> None:
    pacer = Pacer(speed=10.0, first_event_ns=1_000, wall_start_ns=5_000)
    due = pacer.due_ns(np.array([1_000, 2_000, 11_000], dtype=np.int64))
    assert due.tolist() == [5_000, 5_100, 6_000]
    assert Pacer(0, 1_000, 7).due_ns(np.array([1_000, 9_999], dtype=np.int64)).tolist() == [7, 7]
    with pytest.raises(ValueError):
        Pacer(-1, 0, 0)


async def test_replay_publishes_at_due_times_with_replay_time_as_event_time() -> None:
    clock = ManualClock(1_000_000_000)
    bus = MemoryBus(clock=clock)
    sub = bus.subscribe("trades.*")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(int(seconds * 1e9))

    recorded = [0, 1_000_000_000, 3_000_000_000]  # 0 s, 1 s, 3 s
    stats = await replay(bus, lambda: [_chunk(recorded)], speed=2.0, clock=clock, sleep=sleep)
    got = await sub.next_batch()
    assert stats.published == 3 and stats.laps == 1
    assert [e.payload["i"] for e in got] == recorded
    # at 2x, events are due 0.5 s and 1.5 s after the start; event_ns is the replay time
    assert [e.event_ns for e in got] == [1_000_000_000, 1_500_000_000, 2_500_000_000]
    assert [s for s in slept if s] == [0.5, 1.0]


async def test_max_speed_yields_between_bounded_bursts() -> None:
    clock = ManualClock(0)
    bus = MemoryBus(clock=clock)
    sub = bus.subscribe(">")
    yields = 0

    async def sleep(seconds: float) -> None:
        nonlocal yields
        assert seconds == 0
        yields += 1

    n = 3 * MAX_EVENTS_PER_WAKE + 5
    stats = await replay(bus, lambda: [_chunk(list(range(n)))], speed=0, clock=clock, sleep=sleep)
    assert stats.published == n
    assert yields == 4  # never more than MAX_EVENTS_PER_WAKE between two yields
    assert sub.pending == n
    assert [e.seq for e in await sub.next_batch(n)] == list(range(1, n + 1))

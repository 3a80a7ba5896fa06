"""Paced replay of recorded (or simulated) events onto the bus.

A replay maps each event's recorded time to a wall-clock due time at ``speed`` (1.0 = as
recorded, 10.0 = ten times faster, 0 = as fast as the loop can publish) and publishes, at each
wake-up, every event that has come due. Published envelopes carry the *replay* time as
``event_ns`` so stage latencies stay meaningful; the recorded exchange time stays in the payload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from realtime.clock import Clock

#: Most events published per wake-up, so a max-speed replay never starves the event loop.
MAX_EVENTS_PER_WAKE = 2048


@dataclass(frozen=True, slots=True)
class ReplayChunk:
    """Consecutive events in recorded-time order: one channel and payload per event."""

    event_ns: npt.NDArray[np.int64]
    channels: Sequence[str]
    payloads: Sequence[Any]

    def __len__(self) -> int:
        return len(self.event_ns)


class Publisher(Protocol):
    def publish_nowait(self, channel: str, payload: Any, *, event_ns: int | None = None) -> Any: ...


@dataclass(slots=True)
class ReplayStats:
    published: int = 0
    laps: int = 0
    behind_ns: int = 0  # how late the last published event was against its due time


class Pacer:
    """Recorded time → wall time: ``due = wall_start + (event - first_event) / speed``."""

    def __init__(self, speed: float, first_event_ns: int, wall_start_ns: int) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed}")
        self.speed = speed
        self.first_event_ns = first_event_ns
        self.wall_start_ns = wall_start_ns

    def due_ns(self, event_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        if self.speed == 0:
            return np.full(len(event_ns), self.wall_start_ns, dtype=np.int64)
        offset = (event_ns - self.first_event_ns) / self.speed
        return (self.wall_start_ns + offset).astype(np.int64)


async def replay(
    bus: Publisher,
    chunks: Callable[[], Iterable[ReplayChunk]],
    *,
    speed: float,
    clock: Clock,
    loop_forever: bool = False,
    stats: ReplayStats | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ReplayStats:
    """Publish every event of ``chunks()`` at its due time; with ``loop_forever``, start again.

    Each lap restarts the pacing at the current wall time, so a looping demo never bursts.
    """
    stats = stats if stats is not None else ReplayStats()
    while True:
        pacer: Pacer | None = None
        for chunk in chunks():
            if len(chunk) == 0:
                continue
            if pacer is None:
                pacer = Pacer(speed, int(chunk.event_ns[0]), clock.now_ns())
            due = pacer.due_ns(chunk.event_ns)
            i, n = 0, len(chunk)
            while i < n:
                now = clock.now_ns()
                if due[i] > now:
                    await sleep((int(due[i]) - now) / 1e9)
                    continue
                end = min(n, i + MAX_EVENTS_PER_WAKE, int(np.searchsorted(due, now, "right")))
                end = max(end, i + 1)
                for k in range(i, end):
                    bus.publish_nowait(chunk.channels[k], chunk.payloads[k], event_ns=int(due[k]))
                stats.published += end - i
                stats.behind_ns = max(0, now - int(due[end - 1]))
                i = end
                await sleep(0)  # let the hub fan out what was just published
        stats.laps += 1
        if not loop_forever or pacer is None:
            return stats

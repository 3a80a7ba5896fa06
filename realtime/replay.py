"""Pacing of recorded (or simulated) events for replay onto the bus.

A replay maps each event's recorded time to a wall-clock due time at ``speed`` (1.0 = as
recorded, 10.0 = ten times faster, 0 = as fast as the loop can publish) and publishes, at each
wake-up, every event that has come due, at most ``MAX_EVENTS_PER_WAKE`` before yielding.
Published envelopes carry the *replay* time as ``event_ns`` so stage latencies stay meaningful;
the recorded exchange time stays in the payload.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Most events published per wake-up, so a max-speed replay never starves the event loop.
MAX_EVENTS_PER_WAKE = 2048


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

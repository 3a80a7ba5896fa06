"""When the fan-out waits between ticks: only while the hub's process has no CPU to spare.

A tick costs about one socket write per subscriber whatever it carries, so spacing ticks gathers
more messages per write and saves system calls, at the price of the wait in every message's
latency. Measured on 1,000 connections × 1,000 msg/s (``loadtest.fanout``): spacing every tick
longer than 2 ms by as long again cut the hub's CPU from 76 to 52 % of a core but doubled its
latency (publish → last write p99 5.3–7.5 → 12.4–14.8 ms), though the hub had a fifth of its core
to spare without it; at the maximum rate, where the clients' reads bound the hub, it changed
nothing measurable. Where the loop is saturated — an overloaded hub, or an embedded platform
whose engines and in-process clients share the hub's loop — the fewer, larger frames are what
keeps everyone up (without them an in-process client of a full-speed replay fell behind by
4 MB and was closed as a slow consumer).

So ``TickSpacing`` keeps a moving average of the process's CPU share (its CPU time over wall time
between ticks, ``time.process_time``, at most one core: the whole loop's work, not only the hub's,
and threads that hold the GIL while the loop waits) and spaces a tick longer than ``after_s`` only
while that share is at or above ``busy_share``. With headroom no message ever waits; a saturated
process gets the earlier rule.
"""

from __future__ import annotations

import math

#: the moving average's time constant: a few dozen ticks at 1,000 connections
BUSY_WINDOW_S = 0.1

__all__ = ["BUSY_WINDOW_S", "TickSpacing"]


class TickSpacing:
    """The wait after each tick (pure: the caller passes the clocks' readings, in seconds)."""

    def __init__(self, after_s: float, max_s: float, busy_share: float) -> None:
        if after_s < 0 or max_s < 0 or not 0 <= busy_share <= 1:
            raise ValueError("need after_s >= 0, max_s >= 0 and 0 <= busy_share <= 1")
        self.after_s, self.max_s, self.busy_share = after_s, max_s, busy_share
        #: moving average of the process's CPU share (one core = 1); it starts saturated (a
        #: burst at start is spaced as before) and learns the headroom within a few windows
        self.busy = 1.0
        self._last: tuple[float, float] | None = None  # (wall, CPU) at the previous tick's end

    def after_tick(self, started: float, ended: float, cpu: float) -> float:
        """Seconds to wait before the next tick, given this one's wall start and end and the
        process's CPU time at its end."""
        if self._last is not None:
            wall = ended - self._last[0]
            if wall > 0:
                share = min(1.0, max(0.0, (cpu - self._last[1]) / wall))
                self.busy += (1.0 - math.exp(-wall / BUSY_WINDOW_S)) * (share - self.busy)
        self._last = (ended, cpu)
        took = ended - started
        if self.max_s and took > self.after_s and self.busy >= self.busy_share:
            return min(took, self.max_s)
        return 0.0

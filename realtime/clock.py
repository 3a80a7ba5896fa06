"""Injected time. Components take a ``Clock`` so tests and replays control ``now``."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    """Wall-clock nanoseconds since the Unix epoch (comparable across processes on one host)."""

    def now_ns(self) -> int:
        return time.time_ns()


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        self._now += ns

    def set(self, ns: int) -> None:
        self._now = ns

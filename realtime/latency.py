"""Latency over the last minute, for status views (Prometheus keeps the long history).

Two shapes of the same question — "what were p50/p99 over the last ``window_s``?":

* ``RecentDurations``: individual durations (REST requests of an engine), a bounded ring of
  ``(time, seconds)``; quantiles are exact over the samples kept (at most ``max_samples``, the
  newest — stated in the answer as ``count``).
* ``HistogramWindow``: a cumulative fixed-bucket histogram (the hub's per-stage latency) sampled
  now and then; the quantile is taken over the difference between now and the oldest sample
  within the window, interpolated inside the bucket as Prometheus's ``histogram_quantile`` does.

Time is passed in (``now_ns``), never read here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

WINDOW_S = 60.0


class LatencySummary(TypedDict):
    count: int
    p50_ms: float | None
    p99_ms: float | None


def _empty() -> LatencySummary:
    return {"count": 0, "p50_ms": None, "p99_ms": None}


class RecentDurations:
    """The newest ``max_samples`` durations in two fixed numpy rings (times, seconds): an
    observation is two array stores, and a summary masks and takes quantiles without building
    Python objects (``/health`` asks for one per call: 125 µs at 4,096 samples, was 212 µs)."""

    __slots__ = ("_count", "_max", "_next", "_seconds", "_times", "_window_ns")

    def __init__(self, window_s: float = WINDOW_S, max_samples: int = 4096) -> None:
        self._window_ns = int(window_s * 1e9)
        self._max = max_samples
        self._times = np.zeros(max_samples, dtype=np.int64)
        self._seconds = np.zeros(max_samples, dtype=np.float64)
        self._next = 0  # the slot the next observation takes
        self._count = 0  # slots filled (≤ max_samples)

    def observe(self, now_ns: int, seconds: float) -> None:
        i = self._next
        self._times[i] = now_ns
        self._seconds[i] = seconds
        self._next = (i + 1) % self._max
        self._count = min(self._count + 1, self._max)

    def summary(self, now_ns: int) -> LatencySummary:
        filled = self._count
        times = self._times[:filled]
        values = self._seconds[:filled][times >= now_ns - self._window_ns]
        if values.size == 0:
            return _empty()
        p50, p99 = np.quantile(values, [0.5, 0.99])
        return {
            "count": int(values.size),
            "p50_ms": round(float(p50) * 1e3, 3),
            "p99_ms": round(float(p99) * 1e3, 3),
        }


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of per-bucket ``counts`` (``counts[i]`` observations ≤ ``bounds[i]``
    and > the bound before; one more count for +Inf), linear inside a bucket; a quantile in the
    +Inf bucket answers the highest finite bound (as Prometheus does). ``None`` without data."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    running = 0
    for i, n in enumerate(counts):
        if running + n >= rank and n > 0:
            if i == len(bounds):
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - running) / n
        running += n
    return float(bounds[-1])


class HistogramWindow:
    """Samples of one cumulative histogram's bucket counts; ``summary`` over the window."""

    __slots__ = ("_bounds", "_samples", "_window_ns")

    def __init__(self, bounds: Sequence[float], window_s: float = WINDOW_S) -> None:
        self._bounds = tuple(bounds)
        self._window_ns = int(window_s * 1e9)
        self._samples: deque[tuple[int, tuple[int, ...]]] = deque()

    def sample(self, now_ns: int, counts: Sequence[int]) -> None:
        """Record the cumulative counts now (call every few seconds; cheap)."""
        self._samples.append((now_ns, tuple(counts)))
        # keep one sample at or before the window's start as the baseline
        cutoff = now_ns - self._window_ns
        while len(self._samples) > 1 and self._samples[1][0] <= cutoff:
            self._samples.popleft()

    def summary(self, now_ns: int, counts: Sequence[int]) -> LatencySummary:
        """p50/p99 of what was observed since the oldest sample within the window (since start
        when no sample is that old yet)."""
        self.sample(now_ns, counts)
        base = self._samples[0][1]
        delta = [now - then for now, then in zip(counts, base, strict=True)]
        if len(self._samples) == 1:
            delta = list(counts)
        p50 = histogram_quantile(0.5, self._bounds, delta)
        p99 = histogram_quantile(0.99, self._bounds, delta)
        if p50 is None or p99 is None:
            return _empty()
        return {"count": sum(delta), "p50_ms": round(p50 * 1e3, 4), "p99_ms": round(p99 * 1e3, 4)}

"""ADWIN drift detection (Bifet & Gavaldà 2007, ADWIN2 with exponential histograms), pure, equal
to river's ``drift.ADWIN``.

The window is kept as rows of buckets: row ``i`` holds up to ``max_buckets`` summaries (sum and
variance) of 2ⁱ values each; a new value enters row 0 and a full row merges its two oldest
summaries into the next (Babcock et al. 2003 for the merged variance). Every ``clock`` values,
once the window is longer than ``grace_period``, every cut of the window between buckets into an
older part W₀ (n₀ values) and a newer W₁ (n₁) is tested, oldest bucket first:

    |μ₀ − μ₁| > sqrt(2·m·σ²·δ′) + (2/3)·δ′·m,   m = 1/(n₀ − L + 1) + 1/(n₁ − L + 1),
    δ′ = ln(2·ln(n)/δ),  σ² the window's variance, L = ``min_window_length`` (both parts ≥ L);

on the first cut that passes, the oldest bucket is dropped and the test starts over, until no cut
passes: a drift is reported, and (as river's wrapper does) the next value starts a new detector.

This is river 0.26's ``AdaptiveWindowing`` (its Rust ``rust_src/adwin.rs``, a port of the former
``adwin_c.pyx``) operation by operation, so the drift indices and the window statistics are
identical on the same stream. Limits: one value at a time; the window keeps
O(max_buckets · log n) summaries.
"""

from __future__ import annotations

import math


class _Row:
    """One row of the exponential histogram: up to ``max_buckets + 1`` (sum, variance) pairs,
    oldest first."""

    __slots__ = ("totals", "variances")

    def __init__(self) -> None:
        self.totals: list[float] = []
        self.variances: list[float] = []

    def add(self, total: float, variance: float) -> None:
        self.totals.append(total)
        self.variances.append(variance)

    def drop(self, count: int) -> None:
        del self.totals[:count]
        del self.variances[:count]


class Adwin:
    """river ``drift.ADWIN(delta, clock, max_buckets, min_window_length, grace_period)``."""

    __slots__ = ("clock", "delta", "detected", "grace_period", "max_buckets",
                 "min_window_length", "n_detections", "rows", "tick", "total", "variance",
                 "width")  # fmt: skip

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if clock < 1 or max_buckets < 2 or min_window_length < 1 or grace_period < 0:
            raise ValueError("clock >= 1, max_buckets >= 2, min_window_length >= 1, grace >= 0")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = float(min_window_length)
        self.grace_period = float(grace_period)
        self.n_detections = 0
        self.detected = False
        self._reset()

    def _reset(self) -> None:
        self.total = 0.0
        self.variance = 0.0
        self.width = 0.0
        self.tick = 0
        self.rows = [_Row()]

    @property
    def estimation(self) -> float:
        """The mean of the values in the window (0 when empty)."""
        return self.total / self.width if self.width else 0.0

    def update(self, value: float) -> bool:
        """Add ``value``; ``True`` when a change was detected (the window then shrank)."""
        if self.detected:
            self._reset()
        self._insert(float(value))
        self.detected = self._detect()
        if self.detected:
            self.n_detections += 1
        return self.detected

    def _insert(self, value: float) -> None:
        self.rows[0].add(value, 0.0)
        self.width += 1.0
        increment = 0.0
        if self.width > 1.0:
            dv = value - self.total / (self.width - 1.0)
            increment = (self.width - 1.0) * dv * dv / self.width
        self.variance += increment
        self.total += value
        self._compress()

    def _compress(self) -> None:
        i = 0
        while len(self.rows[i].totals) == self.max_buckets + 1:
            row = self.rows[i]
            n1 = float(1 << i)
            t0, t1 = row.totals[0], row.totals[1]
            mu1, mu2 = t0 / n1, t1 / n1
            temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
            merged_variance = row.variances[0] + row.variances[1] + temp
            if i + 1 >= len(self.rows):
                self.rows.append(_Row())
            self.rows[i + 1].add(t0 + t1, merged_variance)
            row.drop(2)
            if len(self.rows[i + 1].totals) <= self.max_buckets:
                break
            i += 1

    def _delete_oldest(self) -> None:
        last = len(self.rows) - 1
        n = float(1 << last)
        row = self.rows[last]
        u, v = row.totals[0], row.variances[0]
        mu = u / n
        self.width -= n
        self.total -= u
        mu_window = self.total / self.width
        self.variance -= v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width)
        row.drop(1)
        if not row.totals:
            self.rows.pop()

    def _detect(self) -> bool:
        change = False
        self.tick += 1
        if self.tick % self.clock != 0 or self.width <= self.grace_period:
            return False
        reduce = True
        while reduce:
            reduce = False
            n0, n1 = 0.0, self.width
            u0, u1 = 0.0, self.total
            done = False
            for i in range(len(self.rows) - 1, -1, -1):
                if done:
                    break
                size = float(1 << i)
                totals = self.rows[i].totals
                count = len(totals)
                for k in range(count):
                    n0 += size
                    n1 -= size
                    u0 += totals[k]
                    u1 -= totals[k]
                    if i == 0 and k == count - 1:
                        done = True
                        break
                    if (
                        n1 >= self.min_window_length
                        and n0 >= self.min_window_length
                        and self._cut(n0, n1, (u0 / n0) - (u1 / n1))
                    ):
                        reduce = change = True
                        if self.width > 0.0:
                            self._delete_oldest()
                            done = True
                            break
                # a cut that passes with an empty window keeps scanning, as river does
        return change

    def _cut(self, n0: float, n1: float, delta_mean: float) -> bool:
        delta_prime = math.log(2.0 * math.log(self.width) / self.delta)
        m = 1.0 / (n0 - self.min_window_length + 1.0) + 1.0 / (n1 - self.min_window_length + 1.0)
        epsilon = (
            math.sqrt(2.0 * m * (self.variance / self.width) * delta_prime)
            + 2.0 / 3.0 * delta_prime * m
        )
        return abs(delta_mean) > epsilon

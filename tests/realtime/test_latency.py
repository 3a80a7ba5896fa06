"""Last-minute latency: exact quantiles over kept samples; histogram quantiles as Prometheus's
``histogram_quantile`` computes them (linear inside the bucket) over the window's difference."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.latency import HistogramWindow, RecentDurations, histogram_quantile

S = 1_000_000_000


def test_recent_durations_are_numpy_quantiles_of_the_last_minute() -> None:
    recent = RecentDurations(window_s=60)
    for i in range(100):
        recent.observe(i * S, (i + 1) / 1000)  # 1..100 ms, one a second
    summary = recent.summary(100 * S)  # the first 40 are older than 60 s
    kept = np.arange(41, 101) / 1000
    assert summary["count"] == 60
    assert summary["p50_ms"] == pytest.approx(np.quantile(kept, 0.5) * 1e3, abs=1e-3)
    assert summary["p99_ms"] == pytest.approx(np.quantile(kept, 0.99) * 1e3, abs=1e-3)
    assert recent.summary(1_000 * S) == {"count": 0, "p50_ms": None, "p99_ms": None}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = (0.001, 0.002, 0.004)
    # 10 obs ≤ 1 ms, 30 in (1, 2] ms, 60 in (2, 4] ms
    counts = (10, 30, 60, 0)
    # rank 50 lies 10 observations into the third bucket (60 spread over 2..4 ms)
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.002 + 0.002 * 10 / 60)
    assert histogram_quantile(0.05, bounds, counts) == pytest.approx(0.001 * 5 / 10)
    assert histogram_quantile(0.99, bounds, (0, 0, 0, 5)) == 0.004  # +Inf: the top bound
    assert histogram_quantile(0.5, bounds, (0, 0, 0, 0)) is None


def test_histogram_window_reports_only_what_happened_within_it() -> None:
    bounds = (0.001, 0.01)
    window = HistogramWindow(bounds, window_s=60)
    window.sample(0, (1000, 0, 0))  # an old burst of fast observations
    window.sample(70 * S, (1000, 0, 0))
    # in the last minute: 10 slow ones only
    summary = window.summary(100 * S, (1000, 10, 0))
    assert summary["count"] == 10
    assert summary["p50_ms"] == pytest.approx((0.001 + 0.009 * 5 / 10) * 1e3)


def test_recent_durations_keep_only_the_newest_max_samples() -> None:
    recent = RecentDurations(window_s=60, max_samples=8)
    for i in range(20):  # the ring wraps twice and a half
        recent.observe(i * S, float(i))
    summary = recent.summary(20 * S)
    newest = np.arange(12, 20, dtype=float)
    assert summary["count"] == 8
    assert summary["p50_ms"] == pytest.approx(np.quantile(newest, 0.5) * 1e3)
    assert summary["p99_ms"] == pytest.approx(np.quantile(newest, 0.99) * 1e3)

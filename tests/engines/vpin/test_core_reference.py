"""VPIN against an independent implementation: ``flowrisk`` 0.3.0 (MIT, Xixuan Han).

flowrisk's ``RecursiveVPIN`` (``toxicity/vpin.py``) with ``RecursiveEWMAVol`` (``tools/vol.py``,
``value_type='pnl'``) and ``RecursiveBulkClassMABuckets`` (``toxicity/bulk.py``) is the same
ELO (2012) recipe on bars of (close price, volume). Conventions that differ, and how each test
lines them up rather than hiding them:

* σ timing. flowrisk updates its EWMA variance with the bar's own ΔP *before* classifying the
  bar (its σ_t includes ΔP_t, a look-ahead); ours is ex ante (σ_t knows bars < t). Same
  recursion otherwise, so flowrisk's σ_t must equal our σ_{t+1}: checked to 1e-12. The bucket
  checks then feed flowrisk's own σ sequence to our classifier, so both classify with equal σ.
* Integer buy volume. flowrisk floors ``Φ·piece`` to whole shares in every bar piece (bar or
  split-bar part); we keep fractions. So per bucket ``0 <= our V_B − its V_B < pieces`` where
  ``pieces`` is the number of bar pieces in the bucket — that is the stated tolerance, and its
  sign is checked too (a floor can only lose buy volume).
* VPIN's window. flowrisk's ring of ``N_BUCKET`` slots holds the bucket being filled; right
  after a bar completes a bucket exactly, that slot is empty, so with ``N_BUCKET = n + 1`` its
  ``Σ OI / Σ V`` is ours over the last n completed buckets (and, before n buckets exist, over
  those there are: the same rule as ours for a window longer than history).
* flowrisk 0.3.0 calls ``np.math`` (an alias of the standard ``math`` module that NumPy 2.0
  removed); the fixture restores that alias for the test's duration, nothing else is patched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from engines.marketdata import feeds
from engines.vpin.core import (
    InputCounts,
    TimeBars,
    VpinParams,
    bucket_series,
    bvc_buy_fraction,
    classify_bars,
)

NS_MINUTE = 60_000_000_000


@pytest.fixture
def flowrisk_vpin(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    monkeypatch.setattr(np, "math", math, raising=False)
    from flowrisk.toxicity.vpin import RecursiveVPIN

    yield RecursiveVPIN


def run_flowrisk(
    estimator_type: type,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    bucket_volume: float,
    n_slots: int,
    decay: float,
    sigma_seed: float,
) -> tuple[object, list[float], list[float]]:
    from flowrisk.toxicity.vpin import RecursiveVPINConfig

    class Config(RecursiveVPINConfig):
        VOL_DECAY = decay
        N_BUCKET_OR_BUCKET_DECAY = n_slots
        BUCKET_MAX_VOLUME = bucket_volume

    estimator = estimator_type(Config())
    estimator.initialize_vol_estimator(float(close[0]), float(sigma_seed))
    estimator.initialize_buckets(float(close[0]))
    sigmas, vpins = [], []
    for i, (price, size) in enumerate(zip(close.tolist(), volume.tolist(), strict=True)):
        bar = pd.Series({"time": i, "price": float(price), "volume": float(size)})
        vpins.append(float(estimator.update(bar)))
        sigmas.append(float(estimator.vol_estimator.get_latest_vol()))
    return estimator, sigmas, vpins


def lean_bars() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    days = [
        feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(d)) for d in feeds.lean_days()
    ]
    start = np.concatenate([d.start_ns for d in days])
    close = np.concatenate([d.close for d in days])
    volume = np.concatenate([d.volume for d in days])
    return start, close, volume


def test_ewma_sigma_equals_flowrisk_one_bar_later(flowrisk_vpin: type) -> None:
    start, close, volume = lean_bars()
    _, flowrisk_sigma, _ = run_flowrisk(
        flowrisk_vpin, close, volume, bucket_volume=1e6, n_slots=50, decay=0.9, sigma_seed=0.05
    )
    bars = TimeBars(start // NS_MINUTE, close.copy(), close, volume)  # open = close: ΔP_0 = 0
    _, ours, _ = classify_bars(bars, VpinParams(sigma_decay=0.9, sigma_seed=0.05))
    np.testing.assert_allclose(ours[1:], flowrisk_sigma[:-1], rtol=1e-12)
    assert ours[0] == 0.05


def test_buckets_equal_flowrisk_on_lean_minute_bars(flowrisk_vpin: type) -> None:
    """Five days of Lean's own SPY minute bars (4 000+ bars, about 800 buckets of 500 000 sh,
    many bars split across two or more buckets)."""
    start, close, volume = lean_bars()
    size = 500_000.0
    estimator, sigma, _ = run_flowrisk(
        flowrisk_vpin,
        close,
        volume,
        bucket_volume=size,
        n_slots=100_000,
        decay=0.94,
        sigma_seed=0.02,
    )
    buckets = estimator.buckets
    done = buckets.get_current_bucket_idx()
    their_buy = buckets.get_bucket_buy_volume()[:done]
    their_sell = buckets.get_bucket_sell_volume()[:done]
    assert np.all(buckets.get_bucket_volume()[:done] == size)

    dp = np.diff(close, prepend=close[0])
    fraction = np.array([bvc_buy_fraction(d, s) for d, s in zip(dp, sigma, strict=True)])
    params = VpinParams(bucket_volume=size, window=50)
    ours = bucket_series(
        start,
        start + NS_MINUTE,
        volume,
        volume * fraction,
        np.asarray(sigma),
        params,
        InputCounts(),
    )
    assert len(ours) == done > 700
    # pieces per bucket: bars whose minute overlaps the bucket's [start, end)
    pieces = np.searchsorted(start, ours.end_ns, "left") - np.searchsorted(start, ours.start_ns)
    gap = ours.buy - their_buy
    assert np.all(gap >= -1e-6) and np.all(gap < pieces + 1e-6)
    np.testing.assert_allclose(ours.buy + ours.sell, their_buy + their_sell)
    # VPIN from flowrisk's buckets by the paper's formula, against ours; bound from the floors
    their_oi = np.abs(their_buy - their_sell)
    window = params.window
    for k in range(done):
        lo = max(0, k - window + 1)
        theirs = their_oi[lo : k + 1].sum() / ((k + 1 - lo) * size)
        bound = 2 * pieces[lo : k + 1].sum() / ((k + 1 - lo) * size) + 1e-12
        assert abs(ours.vpin[k] - theirs) <= bound
    assert 0.05 < ours.vpin[-1] < 0.8


def test_vpin_value_equals_flowrisk_when_buckets_end_on_bars(flowrisk_vpin: type) -> None:
    """Bars of V/4 shares: every 4th bar completes a bucket exactly, where flowrisk's own
    VPIN (ring of n + 1 slots) is Σ OI / Σ V over the last n completed buckets."""
    rng = np.random.default_rng(7)
    n_bars, size, window = 4 * 120, 4_000_000.0, 50
    close = 100.0 + np.round(np.cumsum(rng.normal(0, 0.05, n_bars)), 2)
    volume = np.full(n_bars, size / 4)
    _, sigma, their_vpin = run_flowrisk(
        flowrisk_vpin,
        close,
        volume,
        bucket_volume=size,
        n_slots=window + 1,
        decay=0.9,
        sigma_seed=0.05,
    )
    start = np.arange(n_bars, dtype=np.int64) * NS_MINUTE
    dp = np.diff(close, prepend=close[0])
    fraction = np.array([bvc_buy_fraction(d, s) for d, s in zip(dp, sigma, strict=True)])
    ours = bucket_series(
        start,
        start + NS_MINUTE,
        volume,
        volume * fraction,
        np.asarray(sigma),
        VpinParams(bucket_volume=size, window=window),
        InputCounts(),
    )
    at_completion = np.asarray(their_vpin)[3::4]
    assert len(ours) == len(at_completion) == 120
    # 4 floored pieces per bucket: |ΔOI| <= 8 shares per bucket of 4e6
    np.testing.assert_allclose(ours.vpin, at_completion, rtol=0, atol=8 / size)
    assert np.all(ours.window[:window] == np.arange(1, window + 1))

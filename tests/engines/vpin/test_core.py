"""VPIN core: closed forms, invariants, realtime = batch, the bad-input rules, no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from engines.marketdata.records import TradeColumns
from engines.vpin.core import (
    CdfKind,
    InputCounts,
    VpinBucket,
    VpinCalculator,
    VpinParams,
    bucket_series,
    bvc_buy_fraction,
    compute_vpin,
    lognormal_cdf,
    normal_cdf,
)

SEC = 1_000_000_000
MIN = 60 * SEC


def realtime(event_ns: np.ndarray, price: np.ndarray, size: np.ndarray, params: VpinParams):
    calc = VpinCalculator(params)
    out: list[VpinBucket] = []
    for t, p, q in zip(event_ns.tolist(), price.tolist(), size.tolist(), strict=True):
        out += calc.add_trade(t, p, q)
    out += calc.flush()
    return out, calc.counts


def as_rows(buckets: list[VpinBucket]) -> np.ndarray:
    fields = ("start_ns", "end_ns", "volume", "buy", "sell", "oi", "vpin", "window")
    more = ("cdf_empirical", "cdf_lognormal", "alert", "events", "sigma")
    return np.array([[float(getattr(b, f)) for f in fields + more] for b in buckets])


def batch_rows(series) -> np.ndarray:
    return np.array([as_rows([series.bucket(i)])[0] for i in range(len(series))])


#: ``as_rows`` columns that are smooth functions of the trades, and the trailing-CDF ones.
SMOOTH = [0, 1, 2, 3, 4, 5, 6, 7, 12]
EMPIRICAL, LOGNORMAL, ALERT, EVENTS = 8, 9, 10, 11


def assert_realtime_matches_batch(buckets: list[VpinBucket], series, params: VpinParams) -> None:
    """Realtime and batch agree to rounding (rtol 1e-12) on everything that is a smooth
    function of the trades. They are not bit-identical: batch Φ is JAX's ``norm.cdf`` and the
    bar volumes ``np.add.reduceat``, realtime ``math.erfc`` and a running sum (≤ 1e-13
    relative apart). The trailing CDFs rank VPIN values, so where two VPINs of a window are
    equal up to rounding (a bar spanning several buckets at a saturated Φ = 1 gives several
    VPIN = 1), or the log spread of the window is rounding-sized, the rounding decides the
    rank; those buckets are not compared, every other one is (the alert and event count up
    to the first bucket whose alert sits on the threshold or such a bucket)."""
    rt, bt = as_rows(buckets), batch_rows(series)
    assert rt.shape == bt.shape
    np.testing.assert_allclose(rt[:, SMOOTH], bt[:, SMOOTH], rtol=1e-12, atol=1e-9)
    vpin = bt[:, 6]
    decided = np.ones(len(vpin), dtype=bool)
    for k in range(len(vpin)):
        window = vpin[max(0, k - params.cdf_window + 1) : k + 1]
        near = np.abs(window[:-1] - vpin[k]) <= 1e-9
        logs = np.log(window[window > 0])
        spread = logs.std(ddof=1) if len(logs) > 1 else math.inf
        decided[k] = not near.any() and (spread == 0.0 or spread >= 1e-3)
    np.testing.assert_array_equal(rt[decided, EMPIRICAL], bt[decided, EMPIRICAL])
    # |Δ ln VPIN| ~ 1e-13 moves (x − μ)/s by ≲ 1e-9 for s ≥ 1e-3
    np.testing.assert_allclose(rt[decided, LOGNORMAL], bt[decided, LOGNORMAL], atol=1e-6)
    chosen = EMPIRICAL if params.cdf_kind is CdfKind.EMPIRICAL else LOGNORMAL
    on_edge = ~decided | (np.abs(bt[:, chosen] - params.alert_threshold) <= 1e-6)
    clear = np.arange(len(vpin)) < (np.argmax(on_edge) if on_edge.any() else len(vpin))
    np.testing.assert_array_equal(rt[clear][:, [ALERT, EVENTS]], bt[clear][:, [ALERT, EVENTS]])


# ── closed forms ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("x", [-8.0, -1.959963984540054, -1.0, -0.1, 0.0, 0.3, 1.0, 2.5, 7.5])
def test_normal_cdf_matches_scipy(x: float) -> None:
    assert normal_cdf(x) == pytest.approx(norm.cdf(x), rel=1e-12, abs=1e-300)


def test_bvc_fraction_known_values_and_zero_sigma_limit() -> None:
    assert bvc_buy_fraction(0.0, 0.1) == 0.5
    assert bvc_buy_fraction(0.1, 0.1) == pytest.approx(0.8413447460685429, rel=1e-15)
    assert bvc_buy_fraction(-0.196, 0.1) == pytest.approx(0.025, rel=1e-4)
    assert (bvc_buy_fraction(0.01, 0.0), bvc_buy_fraction(-0.01, 0.0)) == (1.0, 0.0)
    assert bvc_buy_fraction(0.0, 0.0) == 0.5


def test_all_buy_flow_gives_vpin_one() -> None:
    # bar 0 rises with σ = 0 (sign limit: all buy); then each bar's ΔP is 30x the previous, so
    # ΔP/σ = 30 with λ = 0 (σ = |previous ΔP|) and Φ(30) == 1.0 in float64
    n = 6
    t = np.concatenate([[0, SEC], np.arange(1, n, dtype=np.int64) * MIN])
    close = 1.0 + np.concatenate([[0.0], np.cumsum(30.0 ** np.arange(n))])
    size = np.concatenate([[500.0, 500.0], np.full(n - 1, 1000.0)])
    params = VpinParams(bucket_volume=500.0, window=3, sigma_decay=0.0, sigma_seed=0.0)
    series = compute_vpin(t, close, size, params)
    assert len(series) == 2 * n
    np.testing.assert_array_equal(series.vpin, 1.0)
    np.testing.assert_array_equal(series.sell, 0.0)


def test_symmetric_flow_gives_vpin_near_zero() -> None:
    # up and down bars of equal size alternate; λ = 0 keeps σ = 0.05 from bar 1 on, and a
    # bucket holds one down and one up bar: Φ(−1) + Φ(1) = 1, so OI = 0. Bucket 0 is bars 0
    # (ΔP = 0: ½) and 1 (σ still 0: all buy), OI = 1000, which leaves the window after 50.
    n = 200
    close = 100.0 + 0.05 * (np.arange(n) % 2)
    t = np.arange(n, dtype=np.int64) * MIN
    params = VpinParams(bucket_volume=2000.0, window=50, sigma_seed=0.0, sigma_decay=0.0)
    series = compute_vpin(t, close, np.full(n, 1000.0), params)
    assert len(series) == n // 2
    np.testing.assert_allclose(series.vpin[:50], 0.5 / np.arange(1, 51), rtol=1e-12)
    assert np.all(series.vpin[50:] < 1e-12)


def test_lognormal_cdf_against_scipy() -> None:
    values = np.array([0.2, 0.25, 0.31, 0.4, 0.22])
    logs = np.log(values)
    expected = norm.cdf((math.log(0.3) - logs.mean()) / logs.std(ddof=1))
    assert lognormal_cdf(0.3, logs) == pytest.approx(expected, rel=1e-13)
    assert lognormal_cdf(0.0, logs) == 0.0
    assert lognormal_cdf(0.3, np.log([0.3])) == 1.0  # one value: the documented step


# ── invariants on a real day ────────────────────────────────────────────────────────────────


def test_invariants_on_a_spy_day(spy_day: TradeColumns) -> None:
    params = VpinParams(bucket_volume=150_000.0)
    series = compute_vpin(spy_day.event_ns, spy_day.price, spy_day.size, params)
    total = float(spy_day.size.sum())  # 97 062 721 shares (shared/data/README.md)
    assert total == 97_062_721
    assert len(series) == int(total // 150_000.0)
    np.testing.assert_allclose(series.buy + series.sell, series.volume, rtol=0, atol=1e-6)
    assert np.all((series.vpin >= 0) & (series.vpin <= 1))
    assert np.all(np.isfinite(series.vpin)) and np.all(np.isfinite(series.cdf_lognormal))
    # conservation: completed buckets + the partial one = every share, split bars included
    assert series.volume.sum() + total % 150_000.0 == pytest.approx(total, rel=1e-14)
    assert np.all(series.start_ns[1:] >= series.start_ns[:-1])
    assert np.all(series.end_ns > series.start_ns)
    assert series.window[-1] == 50 and series.window[0] == 1


def test_realtime_equals_batch_with_bad_input_and_trailing_adv(spy_day: TradeColumns) -> None:
    rng = np.random.default_rng(3)
    t, p, q = spy_day.event_ns.copy(), spy_day.price.copy(), spy_day.size.copy()
    bad = rng.choice(len(t), 300, replace=False)
    p[bad[:100]] = np.nan
    q[bad[100:200]] = 0.0
    t[bad[200:]] -= 5 * MIN  # late: from a bar already closed (mostly)
    # a second "day": the same trades shifted by 24 h, so the ADV rule changes V on day two
    t2, p2, q2 = (np.concatenate([a, b]) for a, b in ((t, t + 86_400 * SEC), (p, p), (q, q)))
    params = VpinParams(
        bucket_volume=400_000.0,
        adv_days=1,
        buckets_per_day=200,
        cdf_kind=CdfKind.EMPIRICAL,
        alert_threshold=0.8,
        sigma_seed=0.01,
    )
    series = compute_vpin(t2, p2, q2, params)
    buckets, counts = realtime(t2, p2, q2, params)
    assert counts == series.counts
    assert (counts.bad_price, counts.bad_size) == (200, 200) and counts.late > 150
    np.testing.assert_allclose(as_rows(buckets), batch_rows(series), rtol=1e-12, atol=1e-9)
    day_two = series.start_ns >= t[0] + 86_400 * SEC
    assert set(series.volume[~day_two]) == {400_000.0}
    assert series.volume[day_two][-1] == pytest.approx(q[np.isfinite(p)].sum() / 200, rel=1e-3)
    assert series.events[-1] >= 1


# ── properties ──────────────────────────────────────────────────────────────────────────────

trades = st.lists(
    st.tuples(
        st.integers(0, 40 * MIN),
        st.floats(99.0, 101.0),
        st.floats(1.0, 5_000.0),
    ),
    min_size=1,
    max_size=300,
)


def sorted_trades(rows: list[tuple[int, float, float]]) -> tuple[np.ndarray, ...]:
    rows = sorted(rows)
    return (
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
    )


@settings(max_examples=60, deadline=None)
@given(trades, st.floats(500.0, 20_000.0), st.integers(1, 20))
# 2 499.999 999 999 999 shares hold 4 buckets of 500, not 5 (the old assertion's round-up)
@example(rows=[(0, 99.0, 2499.999999999999)], bucket_volume=500.0, window=1)
# a 4 732-share bar at Φ = ½ then a 1 639-share bar at Φ = 1: buckets of VPIN 1 that batch
# (np.add.reduceat bar volume) makes a few ulps under 1: the empirical rank is rounding's call
@example(
    rows=[
        (0, 99.0, 1.1),
        (0, 99.0, 1023.1888244050465),
        (0, 99.0, 3708.0453455236134),
        (MIN, 100.0, 1639.2828554765333),
    ],
    bucket_volume=500.0,
    window=1,
)
def test_invariants_hold_for_any_flow(rows, bucket_volume: float, window: int) -> None:
    t, p, q = sorted_trades(rows)
    params = VpinParams(bucket_volume=bucket_volume, window=window, sigma_seed=0.01)
    series = compute_vpin(t, p, q, params)
    assert np.all((series.vpin >= 0) & (series.vpin <= 1))
    np.testing.assert_allclose(series.buy + series.sell, series.volume, rtol=1e-12)
    # ⌊ΣV / V⌋ complete buckets, up to rounding in either direction: the core's positions are
    # running sums (bar volumes, then bucket ends start + V), q.sum() is pairwise; a slack
    # that only rounds up demands a bucket the volume does not fill when ΣV/V is a hair
    # under an integer (test_bucket_count_at_an_exact_boundary pins the exact count)
    buckets_of_volume = q.sum() / bucket_volume
    assert (
        math.floor(buckets_of_volume * (1 - 1e-12))
        <= len(series)
        <= math.floor(buckets_of_volume * (1 + 1e-12))
    )
    assert series.volume.sum() <= q.sum() * (1 + 1e-12)
    buckets, counts = realtime(t, p, q, params)
    assert counts == series.counts
    if buckets:
        assert_realtime_matches_batch(buckets, series, params)


@pytest.mark.parametrize("shares", [2500.0, np.nextafter(2500.0, 0.0), 2499.999999999999])
def test_bucket_count_at_an_exact_boundary(shares: float) -> None:
    """A bucket completes when the volume reaches V exactly, not a rounding error earlier:
    5·500 shares make 5 buckets, any float below 2 500 makes 4 (ELO 2012 §2, step 3)."""
    t = np.array([0], dtype=np.int64)
    params = VpinParams(bucket_volume=500.0, window=1, sigma_seed=0.01)
    series = compute_vpin(t, np.array([99.0]), np.array([shares]), params)
    buckets, _ = realtime(t, np.array([99.0]), np.array([shares]), params)
    assert len(series) == len(buckets) == (5 if shares == 2500.0 else 4)
    np.testing.assert_array_equal(series.volume, 500.0)


@settings(max_examples=60, deadline=None)
@given(trades, trades, st.integers(1, 40 * MIN))
def test_changing_trades_after_t_never_changes_values_published_before_t(
    rows, other_rows, cut_ns: int
) -> None:
    """Values of buckets ending at or before t are the same whatever trades follow t."""
    params = VpinParams(bucket_volume=3_000.0, window=5, sigma_seed=0.02)
    t, p, q = sorted_trades(rows)
    t2, p2, q2 = sorted_trades(other_rows)
    before = t < cut_ns
    later = t2 >= cut_ns
    mixed = tuple(np.concatenate([a[before], b[later]]) for a, b in ((t, t2), (p, p2), (q, q2)))
    first, _ = realtime(t, p, q, params)
    second, _ = realtime(*mixed, params)
    early_first = [b for b in first if b.end_ns <= cut_ns]
    early_second = [b for b in second if b.end_ns <= cut_ns]
    assert early_first == early_second


# ── bad input ──────────────────────────────────────────────────────────────────────────────


def test_bad_trades_are_counted_and_never_make_nan() -> None:
    calc = VpinCalculator(VpinParams(bucket_volume=100.0, window=2))
    for args in [(MIN, math.nan, 10.0), (MIN, -1.0, 10.0), (MIN, 100.0, 0.0), (MIN, 100.0, -5.0)]:
        assert calc.add_trade(*args) == []
    calc.add_trade(MIN, 100.0, math.inf)
    calc.add_trade(2 * MIN, 100.0, 250.0)
    assert calc.add_trade(MIN, 100.0, 10.0) == []  # late
    out = calc.add_trade(3 * MIN, 100.0, 1.0) + calc.flush()
    assert calc.counts == InputCounts(
        accepted=2, bad_size=3, bad_price=2, late=1, zero_sigma_bars=2
    )
    # zero σ and ΔP = 0: half and half, VPIN 0, no NaN anywhere
    assert [b.vpin for b in out] == [0.0, 0.0]
    assert all(math.isfinite(v) for b in out for v in as_rows([b])[0])


def test_params_reject_nonsense() -> None:
    for bad in ({"bucket_volume": 0.0}, {"window": 0}, {"sigma_decay": 1.0}, {"bar_ns": 0}):
        with pytest.raises(ValueError):
            VpinParams(**bad)
    with pytest.raises(ValueError, match="unknown"):
        VpinParams.from_payload({"windw": 3})
    assert VpinParams.from_payload({"window": 3}).window == 3


def test_window_longer_than_history_uses_the_buckets_there_are() -> None:
    units = np.arange(3, dtype=np.int64) * MIN
    series = bucket_series(
        units,
        units + MIN,
        np.full(3, 10.0),
        np.array([10.0, 0.0, 5.0]),
        np.ones(3),
        VpinParams(bucket_volume=10.0, window=50),
        InputCounts(),
    )
    np.testing.assert_allclose(series.vpin, [1.0, 1.0, 20 / 30])
    assert list(series.window) == [1, 2, 3] and not series.alert.any()


def test_trailing_cdfs_and_alert_events_against_scipy(spy_day: TradeColumns) -> None:
    from scipy.stats import percentileofscore

    params = VpinParams(bucket_volume=150_000.0, window=20, cdf_window=30, alert_threshold=0.9)
    series = compute_vpin(spy_day.event_ns, spy_day.price, spy_day.size, params)
    for k in range(len(series)):
        trailing = series.vpin[max(0, k - 29) : k + 1]
        assert series.cdf_empirical[k] == pytest.approx(
            percentileofscore(trailing, series.vpin[k], kind="weak") / 100, rel=1e-12
        )
        if k >= 1:
            logs = np.log(trailing)
            expected = norm.cdf((logs[-1] - logs.mean()) / logs.std(ddof=1))
            assert series.cdf_lognormal[k] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    alert = (series.window >= 20) & (series.cdf_lognormal >= 0.9)
    np.testing.assert_array_equal(series.alert, alert)
    starts = alert & ~np.concatenate([[False], alert[:-1]])
    np.testing.assert_array_equal(series.events, np.cumsum(starts))
    assert series.events[-1] >= 2

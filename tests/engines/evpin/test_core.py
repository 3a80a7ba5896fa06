"""Enhanced VPIN core: classifier accuracy on Binance's true aggressor flag, OFI closed forms,
Student-t pieces against scipy, daily restart, shared buckets across classifiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from engines.evpin.core import (
    CLASSIFIERS,
    EnhancedParams,
    EnhancedVpinCalculator,
    classifier_accuracy,
    fit_t_df,
    ofi_increment,
    order_flow_imbalance,
    run_enhanced,
    student_t_buy_fraction,
)
from engines.marketdata import feeds
from engines.marketdata.records import Quote, TradeColumns
from engines.vpin.core import NS_PER_DAY, VpinCalculator, VpinParams, compute_vpin

SEC = 1_000_000_000


@pytest.fixture(scope="module")
def binance() -> tuple[TradeColumns, tuple[np.ndarray, ...]]:
    events = list(feeds.read_binance_feed())
    trades = feeds.binance_trade_columns(events)
    quotes = [e for e in events if isinstance(e, Quote)]
    columns = tuple(
        np.array([getattr(q, f) for q in quotes])
        for f in ("receive_ns", "bid", "bid_size", "ask", "ask_size")
    )
    return trades, columns


def test_tick_rule_accuracy_matches_the_data_readme(binance) -> None:
    """shared/data/README.md, measured independently: 96.4 % of trades, 94.6 % of volume."""
    trades, (qt, bid, _, ask, _) = binance
    params = EnhancedParams(base=VpinParams(bar_ns=SEC, bucket_volume=5.0))
    report = {
        a.classifier: a
        for a in classifier_accuracy(
            trades.receive_ns,
            trades.price,
            trades.size,
            trades.aggressor,
            (qt, bid, ask),
            params,
            quote_lag_ns=50_000_000,
        )
    }
    assert report["tick"].trades == pytest.approx(0.964, abs=0.0005)
    assert report["tick"].volume == pytest.approx(0.946, abs=0.0005)
    assert report["quote"].trades > 0.9  # lagged quotes: Lee–Ready works
    assert report["bvc_normal"].trades is None and 0.5 < report["bvc_normal"].volume < 1.0


def test_aggressor_classifier_reproduces_the_true_taker_share(binance) -> None:
    """The aggressor classifier's buy volume is the exchange's: taker-buy share 46.7 % of the
    volume in whole buckets (shared/data/README.md gives 46.7 % for the whole file)."""
    trades, _ = binance
    params = EnhancedParams(base=VpinParams(bar_ns=SEC, bucket_volume=5.0, adv_days=0))
    buckets, counts = run_enhanced(
        trades.event_ns, trades.price, trades.size, params, aggressor=trades.aggressor
    )
    buy = sum(b.buy["aggressor"] for b in buckets)
    assert buy / sum(b.volume for b in buckets) == pytest.approx(0.467, abs=0.01)
    assert buckets[-1].vpin["quote"] is None  # no quotes given: unavailable, not a number
    assert counts.discarded_volume > 0  # the UTC day changes at 00:00: partial bucket dropped


def test_ofi_closed_forms() -> None:
    # bid size grows at the same price: +Δq; ask price falls: −new ask size
    assert ofi_increment(100, 7, 101, 5, 100, 4, 101, 5) == 3
    assert ofi_increment(100, 4, 100.5, 2, 100, 4, 101, 5) == -2
    # bid price up: + new bid size; ask price up: + old ask size
    assert ofi_increment(100.5, 1, 101.5, 9, 100, 4, 101, 5) == 1 + 5
    bid = np.array([100, 100, 100.5, 100.5])
    bq = np.array([4.0, 7, 1, 1])
    ask = np.array([101, 101, 101.5, 101.0])
    aq = np.array([5.0, 5, 9, 2])
    e = order_flow_imbalance(bid, bq, ask, aq)
    expected = [0.0] + [
        ofi_increment(*row)
        for row in zip(
            bid[1:], bq[1:], ask[1:], aq[1:], bid[:-1], bq[:-1], ask[:-1], aq[:-1], strict=True
        )
    ]
    np.testing.assert_array_equal(e, expected)
    assert list(e) == [0.0, 3.0, 6.0, -2.0]


@pytest.mark.parametrize(("x", "df"), [(0.3, 3.0), (-1.2, 5.0), (2.0, 30.0)])
def test_student_t_fraction_against_scipy(x: float, df: float) -> None:
    scale = math.sqrt(df / (df - 2))
    assert student_t_buy_fraction(x, 1.0, df) == pytest.approx(stats.t.cdf(x * scale, df))
    assert student_t_buy_fraction(0.0, 0.0, df) == 0.5


def test_t_df_fit_recovers_the_tail() -> None:
    rng = np.random.default_rng(11)
    assert fit_t_df(rng.standard_t(6.0, 400_000), 4.0) == pytest.approx(6.0, rel=0.15)
    assert fit_t_df(rng.normal(size=100_000), 4.0) > 50
    assert fit_t_df(np.ones(3), 4.0) == 4.0


def test_buckets_shared_by_classifiers_and_bvc_normal_is_plain_vpin(spy_day) -> None:
    """On one SPY day without restarts the bvc_normal column is the VPIN engine's number."""
    base = VpinParams(bucket_volume=400_000.0, sigma_seed=0.01)
    params = EnhancedParams(base=base, fit_t_df=False)
    buckets, _ = run_enhanced(spy_day.event_ns, spy_day.price, spy_day.size, params)
    plain = compute_vpin(spy_day.event_ns, spy_day.price, spy_day.size, base)
    assert len(buckets) == len(plain)
    np.testing.assert_allclose([b.vpin["bvc_normal"] for b in buckets], plain.vpin, rtol=1e-12)
    for b in buckets:
        assert b.volume == 400_000.0
        for c in ("bvc_normal", "bvc_t", "tick"):
            assert 0 <= b.buy[c] <= b.volume and 0 <= b.vpin[c] <= 1
            assert -1 <= b.signed_vpin[c] <= 1
        assert b.band_low <= b.vpin["bvc_normal"] <= b.band_high
        assert b.vpin["aggressor"] is None and b.vpin["quote"] is None
    assert {c.value for c in CLASSIFIERS} == set(buckets[0].vpin)


def test_bar_and_bucket_stepping_is_vpins_own(spy_day) -> None:
    """Enhanced VPIN holds VPIN's ``BarStepper`` and ``VolumeBucketer`` (one buy volume per
    classifier): on a day without restarts its bvc_normal buckets are ``VpinCalculator``'s,
    bit for bit, and so are the input counts."""
    n = 60_000
    t, p, q = spy_day.event_ns[:n], spy_day.price[:n], spy_day.size[:n] * 1.37  # inexact sums
    base = VpinParams(bucket_volume=90_000.0, sigma_seed=0.01)
    enhanced, counts = run_enhanced(t, p, q, EnhancedParams(base=base, fit_t_df=False))
    plain = VpinCalculator(base)
    expected = []
    for args in zip(t.tolist(), p.tolist(), q.tolist(), strict=True):
        expected += plain.add_trade(*args)
    expected += plain.flush()
    assert len(enhanced) == len(expected) > 50
    assert [(b.start_ns, b.end_ns, b.volume, b.buy["bvc_normal"], b.sigma) for b in enhanced] == [
        (b.start_ns, b.end_ns, b.volume, b.buy, b.sigma) for b in expected
    ]
    assert counts == plain.counts


def test_daily_restart_uses_yesterdays_volume_and_drops_the_partial_bucket() -> None:
    calc = EnhancedVpinCalculator(
        EnhancedParams(base=VpinParams(bucket_volume=100.0, adv_days=1, buckets_per_day=4))
    )
    out = []
    for i in range(10):  # day 0: 10 bars of 35 = 350 shares, 3 buckets, 50 left over
        out += calc.add_trade(i * 60 * SEC, 100.0 + i % 3, 35.0)
    out += calc.add_trade(NS_PER_DAY, 100.0, 10.0)  # day 1 opens
    out += calc.add_trade(NS_PER_DAY + 60 * SEC, 100.0, 200.0)
    out += calc.flush()
    assert calc.counts.discarded_volume == 50.0
    assert [b.volume for b in out] == [100.0, 100.0, 100.0, 87.5, 87.5]  # 350 / 4
    assert [b.day for b in out] == [0, 0, 0, 1, 1]
    assert all(math.isfinite(b.ofi) for b in out)

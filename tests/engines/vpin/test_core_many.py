"""``compute_vpin_many`` (one vmapped σ/BVC scan for many symbols) against ``compute_vpin`` per
symbol and against the realtime ``VpinCalculator`` fed trade by trade.

Tolerance: bit-for-bit (``np.array_equal``) against ``compute_vpin``. The vmapped scan does the
same float64 operations per element as the one-symbol scan (XLA on CPU reassociates nothing
here), and everything after it is the same numpy code; a GPU or a future XLA could change that,
and this test is what would say so. Against the realtime path (pure Python floats, scalar erfc)
the tolerance is the existing realtime-vs-batch one: rtol 1e-12, atol 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.marketdata import feeds
from engines.vpin import core
from engines.vpin.core import (
    MAX_PADDED_SYMBOLS,
    BucketSeries,
    CdfKind,
    VpinCalculator,
    VpinParams,
    compute_vpin,
    compute_vpin_many,
    padded_symbols,
    warm_up,
)

SEC = 1_000_000_000
MIN = 60 * SEC
COLUMNS = (
    "start_ns", "end_ns", "volume", "buy", "sell", "oi", "vpin", "window",
    "cdf_empirical", "cdf_lognormal", "alert", "events", "sigma",
)  # fmt: skip
Trades = tuple[np.ndarray, np.ndarray, np.ndarray]


def synthetic(seed: int, n: int, mean_size: float, vol: float, hours: float) -> Trades:
    """A seeded random walk: ``n`` trades over ``hours``, log-returns of std ``vol`` a trade."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, int(hours * 3600 * SEC), n)).astype(np.int64) + 10**18
    p = np.round(100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n))), 2)
    q = rng.geometric(1.0 / mean_size, n).astype(np.float64)
    return t, p, q


def with_bad_input(trades: Trades, seed: int) -> Trades:
    """NaN prices, zero sizes and late trades, each handled by a counted rule."""
    t, p, q = (a.copy() for a in trades)
    bad = np.random.default_rng(seed).choice(len(t), 30, replace=False)
    p[bad[:10]] = np.nan
    q[bad[10:20]] = 0.0
    t[bad[20:]] -= 30 * MIN
    return t, p, q


@pytest.fixture(scope="module")
def symbols() -> dict[str, Trades]:
    """The five SPY days as five symbols, synthetic ones of other volumes and volatilities, one
    empty and one with a single trade."""
    out: dict[str, Trades] = {}
    for day in feeds.lean_days():
        cols = feeds.read_lean_trade_ticks(feeds.lean_tick_path(day))
        out[f"SPY{day:%m%d}"] = (cols.event_ns, cols.price, cols.size)
    out["CALM"] = synthetic(1, 30_000, 50.0, 2e-5, 6.5)
    out["WILD"] = with_bad_input(synthetic(2, 20_000, 400.0, 8e-4, 6.5), 5)
    out["THIN"] = synthetic(3, 400, 2_000.0, 1e-3, 30.0)  # 30 h: crosses days, many empty bars
    out["LONG"] = synthetic(4, 50_000, 100.0, 1e-4, 40.0)  # 2 400 bars: a 4 096 padded shape
    out["EMPTY"] = (np.empty(0, dtype=np.int64), np.empty(0), np.empty(0))
    out["ONE"] = (np.array([10**18], dtype=np.int64), np.array([101.25]), np.array([300.0]))
    return out


def assert_same(got: BucketSeries, want: BucketSeries, symbol: str) -> None:
    assert got.counts == want.counts, symbol
    for name in COLUMNS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{symbol}.{name}"


@pytest.mark.parametrize(
    "params",
    [
        VpinParams(bucket_volume=150_000.0, window=20, sigma_seed=0.01),
        VpinParams(
            bucket_volume=80_000.0,
            adv_days=1,
            buckets_per_day=40,
            cdf_kind=CdfKind.EMPIRICAL,
            alert_threshold=0.8,
            cdf_window=200,
        ),
    ],
    ids=["fixed-V", "trailing-ADV"],
)
def test_many_equals_one_by_one_bit_for_bit(symbols: dict[str, Trades], params: VpinParams) -> None:
    many = compute_vpin_many(symbols, params)
    assert list(many) == list(symbols)
    for symbol, (t, p, q) in symbols.items():
        assert_same(many[symbol], compute_vpin(t, p, q, params), symbol)
    # the cases are not vacuous: real buckets, bad input counted, empty and one-trade symbols
    assert all(len(many[s]) > 20 for s in symbols if s.startswith("SPY"))
    assert len(many["THIN"]) > 0 and len(many["LONG"]) > 30
    assert many["WILD"].counts.bad_price == 10 and many["WILD"].counts.bad_size == 10
    assert many["WILD"].counts.late > 0
    assert len(many["EMPTY"]) == 0 and many["EMPTY"].counts.accepted == 0
    assert len(many["ONE"]) == 0 and many["ONE"].counts.accepted == 1


def test_many_equals_realtime_trade_by_trade(symbols: dict[str, Trades]) -> None:
    params = VpinParams(bucket_volume=60_000.0, window=10, sigma_seed=0.02)
    picked = {s: symbols[s] for s in ("WILD", "THIN", "ONE")}
    many = compute_vpin_many(picked, params)
    for symbol, (t, p, q) in picked.items():
        calc = VpinCalculator(params)
        buckets = [b for row in zip(t.tolist(), p.tolist(), q.tolist(), strict=True)
                   for b in calc.add_trade(*row)]  # fmt: skip
        buckets += calc.flush()
        assert calc.counts == many[symbol].counts
        rows = np.array([[float(getattr(b, c)) for c in COLUMNS] for b in buckets])
        want = np.array([[float(getattr(many[symbol], c)[i]) for c in COLUMNS]
                         for i in range(len(many[symbol]))])  # fmt: skip
        assert rows.shape == want.shape, symbol
        if len(rows):
            np.testing.assert_allclose(rows, want, rtol=1e-12, atol=1e-9)


def test_more_symbols_than_one_call_are_split_and_still_equal() -> None:
    params = VpinParams(bucket_volume=5_000.0, window=5, sigma_seed=0.01)
    many_symbols = {
        f"S{k}": synthetic(100 + k, 200 + 37 * k, 10.0 + k, 1e-4 * (1 + k % 7), 2.0)
        for k in range(MAX_PADDED_SYMBOLS + 6)
    }
    many = compute_vpin_many(many_symbols, params)
    for symbol, (t, p, q) in many_symbols.items():
        assert_same(many[symbol], compute_vpin(t, p, q, params), symbol)
    assert compute_vpin_many({}, params) == {}


def test_symbol_axis_is_padded_to_powers_of_two_up_to_the_call_size() -> None:
    assert [padded_symbols(n) for n in (1, 2, 3, 4, 5, 33, 64, 65, 1000)] == [
        1, 2, 4, 4, 8, 64, 64, 64, 64,
    ]  # fmt: skip


def test_warm_up_compiles_every_shape_a_call_meets() -> None:
    warm_up(max_bars=1 << 11, max_symbols=8)
    compiled = core._classify_many_jax._cache_size()  # type: ignore[attr-defined]
    params = VpinParams(bucket_volume=5_000.0, sigma_seed=0.01)
    for count, hours in ((1, 1.0), (3, 20.0), (7, 30.0), (8, 2.0)):  # 60 .. 1 800 bars
        trades = {f"S{k}": synthetic(k, 300, 10.0, 1e-4, hours) for k in range(count)}
        compute_vpin_many(trades, params)
    assert core._classify_many_jax._cache_size() == compiled  # type: ignore[attr-defined]

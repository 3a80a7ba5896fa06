"""Analytics core against empyrical (its own test vectors), quantstats, and closed forms.

The vectors below are empyrical-reloaded's test inputs (``tests/conftest.py``, Apache-2.0,
rebuilt here from the same RandomState(1337) draws); every expected number is computed in the
test by the reference library, never typed in.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import empyrical
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from engines.analytics import core

REL = 1e-12


def same(ours: float, ref: float, rel: float = REL, abs_tol: float = 0.0) -> bool:
    """Equal to ``rel`` relative, NaN == NaN, inf == inf of the same sign."""
    ours, ref = float(ours), float(ref)
    if math.isnan(ref) or math.isnan(ours):
        return math.isnan(ref) and math.isnan(ours)
    if math.isinf(ref) or math.isinf(ours):
        return ours == ref
    return abs(ours - ref) <= rel * max(abs(ours), abs(ref)) + abs_tol


def assert_same(ours: float, ref: float, what: str, rel: float = REL, abs_tol: float = 0.0) -> None:
    assert same(ours, ref, rel, abs_tol), f"{what}: ours {ours!r} != reference {ref!r}"


def _vectors() -> dict[str, np.ndarray]:
    rand = np.random.RandomState(1337)
    noise = rand.normal(0, 0.001, 1000)
    noise_uniform = rand.uniform(-0.01, 0.01, 1000)
    rand.randn(100_000)  # random_100k, drawn to keep the stream of draws aligned
    replace = rand.choice(np.arange(1000), rand.randint(1, 10))
    sparse_noise = noise.copy()
    sparse_noise[replace] = np.nan
    flat_1 = np.linspace(0.01, 0.01, num=1000)
    sparse_flat = flat_1.copy()
    sparse_flat[replace] = np.nan
    return {
        "simple_benchmark": np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]) / 100,
        "positive_returns": np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) / 100,
        "negative_returns": np.array([0.0, -6.0, -7.0, -1.0, -9.0, -2.0, -6.0, -8.0, -5.0]) / 100,
        "all_negative_returns": np.array([-2.0, -6, -7, -1, -9, -2, -6, -8, -5]) / 100,
        "mixed_returns": np.array([np.nan, 1.0, 10.0, -4.0, 2.0, 3.0, 2.0, 1.0, -10.0]) / 100,
        "weekly_returns": np.array([0.0, 1.0, 10.0, -4.0, 2.0, 3.0, 2.0, 1.0, -10.0]) / 100,
        "one_return": np.array([1.0]) / 100,
        "udu_returns": np.array([10, -10, 10]) / 100,
        "empty_returns": np.array([]),
        "noise": noise,
        "noise_uniform": noise_uniform,
        "inv_noise": -noise,
        "flat_line_0": np.linspace(0, 0, num=1000),
        "flat_line_1": np.array([1.0] * 9) / 100,
        "flat_line_1_tz": flat_1,
        "flat_line_yearly": np.array([3.0, 3.0, 3.0]) / 100,
        "pos_line": np.linspace(0, 1, num=1000),
        "neg_line": np.linspace(0, -1, num=1000),
        "sparse_noise": sparse_noise,
        "sparse_flat_line_1_tz": sparse_flat,
        "one": np.array(
            [
                -0.00171614,
                0.01322056,
                0.03063862,
                -0.01422057,
                -0.00489779,
                0.01268925,
                -0.03357711,
                0.01797036,
            ]
        ),
        "two": np.array(
            [
                0.01846232,
                0.00793951,
                -0.01448395,
                0.00422537,
                -0.00339611,
                0.03756813,
                0.0151531,
                0.03549769,
            ]
        ),
    }


VECTORS = _vectors()
UNARY: dict[str, tuple[Callable[..., float], Callable[..., Any], dict[str, Any]]] = {
    "cum_returns_final": (core.cum_returns_final, empyrical.cum_returns_final, {}),
    "cum_returns_final_100": (
        core.cum_returns_final,
        empyrical.cum_returns_final,
        {"starting_value": 100},
    ),
    "annual_return": (core.annual_return, empyrical.annual_return, {}),
    "annual_return_weekly": (core.annual_return, empyrical.annual_return, {"period": "weekly"}),
    "annual_return_monthly": (core.annual_return, empyrical.annual_return, {"period": "monthly"}),
    "annual_volatility": (core.annual_volatility, empyrical.annual_volatility, {}),
    "annual_volatility_monthly": (
        core.annual_volatility,
        empyrical.annual_volatility,
        {"period": "monthly"},
    ),
    "sharpe_ratio": (core.sharpe_ratio, empyrical.sharpe_ratio, {}),
    "sharpe_ratio_rf": (core.sharpe_ratio, empyrical.sharpe_ratio, {"risk_free": 0.001}),
    "sortino_ratio": (core.sortino_ratio, empyrical.sortino_ratio, {}),
    "sortino_ratio_req": (core.sortino_ratio, empyrical.sortino_ratio, {"required_return": 0.001}),
    "downside_risk": (core.downside_risk, empyrical.downside_risk, {}),
    "downside_risk_req": (core.downside_risk, empyrical.downside_risk, {"required_return": 0.002}),
    "calmar_ratio": (core.calmar_ratio, empyrical.calmar_ratio, {}),
    "omega_ratio": (core.omega_ratio, empyrical.omega_ratio, {}),
    "omega_ratio_req": (
        core.omega_ratio,
        empyrical.omega_ratio,
        {"risk_free": 0.0001, "required_return": 0.05, "annualization": 12},
    ),
    "max_drawdown": (core.max_drawdown, empyrical.max_drawdown, {}),
    "tail_ratio": (core.tail_ratio, empyrical.tail_ratio, {}),
    "stability": (core.stability_of_timeseries, empyrical.stability_of_timeseries, {}),
    "value_at_risk": (core.value_at_risk, empyrical.value_at_risk, {}),
    "value_at_risk_10": (core.value_at_risk, empyrical.value_at_risk, {"cutoff": 0.1}),
    "cvar": (core.conditional_value_at_risk, empyrical.conditional_value_at_risk, {}),
    "cvar_10": (
        core.conditional_value_at_risk,
        empyrical.conditional_value_at_risk,
        {"cutoff": 0.1},
    ),
    # empyrical's SIMPLE_STAT_FUNCS use scipy.stats.skew / kurtosis directly.
    "skew": (core.skew, sps.skew, {}),
    "kurtosis": (core.kurtosis, sps.kurtosis, {}),
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """References warn on empty/constant input (that is the case being tested)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _ref(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    with _quiet():
        return float(fn(*args, **kwargs))


@pytest.mark.parametrize("stat", sorted(UNARY))
@pytest.mark.parametrize("name", sorted(VECTORS))
def test_unary_statistics_equal_empyrical_on_its_vectors(stat: str, name: str) -> None:
    ours_fn, ref_fn, kwargs = UNARY[stat]
    r = VECTORS[name]
    assert_same(ours_fn(r, **kwargs), _ref(ref_fn, r.copy(), **kwargs), f"{stat}({name})")


def test_cum_returns_and_drawdown_series_equal_empyrical() -> None:
    for name, r in VECTORS.items():
        for start in (0, 100):
            ref = np.asarray(empyrical.cum_returns(r.copy(), starting_value=start))
            np.testing.assert_allclose(core.cum_returns(r, start), ref, rtol=REL, err_msg=name)


PAIRS = [
    ("noise", "inv_noise"),
    ("noise_uniform", "noise"),
    ("noise", "noise_uniform"),
    ("sparse_noise", "noise"),
    ("noise", "sparse_noise"),
    ("flat_line_1_tz", "noise"),
    ("noise", "flat_line_1_tz"),
    ("pos_line", "noise"),
    ("simple_benchmark", "positive_returns"),
    ("positive_returns", "simple_benchmark"),
    ("negative_returns", "simple_benchmark"),
    ("mixed_returns", "simple_benchmark"),
    ("all_negative_returns", "mixed_returns"),
    ("one", "two"),
    ("two", "one"),
    ("empty_returns", "empty_returns"),
    ("one_return", "one_return"),
]
BINARY: dict[str, tuple[Callable[..., float], Callable[..., Any], dict[str, Any]]] = {
    "beta": (core.beta, empyrical.beta, {}),
    "alpha": (core.alpha, empyrical.alpha, {}),
    "alpha_rf": (core.alpha, empyrical.alpha, {"risk_free": 0.0001}),
    "alpha_monthly": (core.alpha, empyrical.alpha, {"period": "monthly"}),
    "information_ratio": (core.information_ratio, empyrical.excess_sharpe, {}),
    "up_capture": (core.up_capture, empyrical.up_capture, {}),
    "down_capture": (core.down_capture, empyrical.down_capture, {}),
}


@pytest.mark.parametrize("stat", sorted(BINARY))
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_benchmark_statistics_equal_empyrical(stat: str, a: str, b: str) -> None:
    ours_fn, ref_fn, kwargs = BINARY[stat]
    r, f = VECTORS[a], VECTORS[b]
    assert_same(ours_fn(r, f, **kwargs), _ref(ref_fn, r.copy(), f.copy(), **kwargs), stat)


@pytest.mark.parametrize("window", [1, 2, 12, 100, 5000])
@pytest.mark.parametrize("name", ["noise", "sparse_noise", "flat_line_1_tz", "mixed_returns"])
def test_rolling_windows_equal_empyrical(name: str, window: int) -> None:
    r = VECTORS[name]
    with _quiet():
        ref_sharpe = np.asarray(empyrical.roll_sharpe_ratio(r.copy(), window))
        ref_vol = np.asarray(empyrical.roll_annual_volatility(r.copy(), window))
        ref_beta = np.asarray(empyrical.roll_beta(r.copy(), VECTORS["noise"][: r.size], window))
    ours = [
        core.roll_sharpe_ratio(r, window),
        core.roll_annual_volatility(r, window),
        core.roll_beta(r, VECTORS["noise"][: r.size], window),
    ]
    for got, ref in zip(ours, [ref_sharpe, ref_vol, ref_beta], strict=True):
        assert got.shape == ref.shape
        for x, y in zip(got.tolist(), ref.tolist(), strict=True):
            assert_same(x, y, "rolling", rel=1e-10)


def test_monthly_returns_equal_empyrical_aggregate() -> None:
    pd = pytest.importorskip("pandas")
    r = VECTORS["noise_uniform"]
    dates = np.datetime64("2000-01-30") + np.arange(1000)
    ref = empyrical.aggregate_returns(pd.Series(r, index=pd.DatetimeIndex(dates)), "monthly")
    got = core.monthly_returns(r, dates)
    for (year, month), value in ref.items():
        assert_same(got.values[year - got.years[0], month - 1], value, f"{year}-{month}")
    assert np.isfinite(got.values).sum() == len(ref)


# ------------------------------------------------------------------------------------------
# Streaming == batch


def _stats_close(a: core.Stats, b: core.Stats, rel: float = 1e-9, abs_tol: float = 1e-12) -> None:
    for field, x, y in zip(core.Stats._fields, a, b, strict=True):
        assert same(x, y, rel, abs_tol), f"{field}: streaming {x!r} != batch {y!r} (n={a.n})"


bp_returns = st.lists(st.integers(-900, 900).map(lambda k: k / 10_000), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(-900, 900), st.integers(-900, 900)), min_size=1, max_size=60
    ),
    convention=st.sampled_from(["empyrical", "quantstats"]),
)
def test_streaming_equals_batch_on_every_prefix(
    data: list[tuple[int, int]], convention: core.Convention
) -> None:
    r = np.array([a / 10_000 for a, _ in data])
    b = np.array([x / 10_000 for _, x in data])
    params = core.AnalyticsParams(convention=convention, risk_free=0.0001, required_return=0.0002)
    stream = core.StreamingStats(params, benchmark=True)
    for i in range(r.size):
        got = stream.update(float(r[i]), float(b[i]))
        with _quiet():
            ref = core.compute_stats(r[: i + 1], b[: i + 1], params)
        _stats_close(got, ref)


def test_streaming_equals_batch_on_long_noise() -> None:
    r, b = VECTORS["noise_uniform"], VECTORS["noise"]
    stream = core.StreamingStats(benchmark=True)
    for i in range(r.size):
        got = stream.update(float(r[i]), float(b[i]))
        if i % 97 == 0 or i == r.size - 1:
            _stats_close(got, core.compute_stats(r[: i + 1], b[: i + 1]))


def test_batch_full_set_equals_empyrical() -> None:
    r, b = VECTORS["noise_uniform"], VECTORS["noise"]
    s = core.compute_stats(r, b)
    assert_same(s.sharpe_ratio, empyrical.sharpe_ratio(r), "sharpe")
    assert_same(s.alpha, empyrical.alpha(r, b), "alpha")
    assert_same(s.conditional_value_at_risk, empyrical.conditional_value_at_risk(r), "cvar")


# ------------------------------------------------------------------------------------------
# Probabilistic / Deflated Sharpe


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_psr_hand_computed() -> None:
    # SR = 0.1 per period, n = 253, γ3 = −0.5, γ4 = 6, SR* = 0.05:
    # σ² = 1 + 0.5·0.1 + (6 − 1)/4·0.01 = 1.0625; z = 0.05·√252/√1.0625 = 0.770046…
    z = 0.05 * math.sqrt(252) / math.sqrt(1.0625)
    got = core.probabilistic_sharpe_ratio(0.1, 253, -0.5, 6.0, 0.05)
    assert_same(got, _phi(z), "psr", rel=1e-14)
    # Normal returns, SR* = SR: exactly one half.
    assert core.probabilistic_sharpe_ratio(0.2, 100, 0.0, 3.0, 0.2) == 0.5


def test_dsr_hand_computed() -> None:
    # N = 100 trials, V[SR] = 0.5/252 per period, then PSR at SR0 = E[max SR].
    from statistics import NormalDist

    nd = NormalDist()
    n_trials, var = 100, 0.5 / 252
    g = 0.5772156649015329
    sr0 = math.sqrt(var) * (
        (1 - g) * nd.inv_cdf(1 - 1 / n_trials) + g * nd.inv_cdf(1 - 1 / (n_trials * math.e))
    )
    assert_same(core.expected_max_sharpe(n_trials, var), sr0, "sr0", rel=1e-12)
    sr, n, g3, g4 = 2.5 / math.sqrt(252), 1250, -3.0, 10.0
    z = (sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr * sr)
    got = core.deflated_sharpe_ratio(sr, n, n_trials, var, g3, g4)
    assert_same(got, _phi(z), "dsr", rel=1e-12)
    assert core.expected_max_sharpe(1, var) == 0.0


# ------------------------------------------------------------------------------------------
# Drawdown table, trades, errors


def test_drawdown_table_hand_case() -> None:
    # wealth 1 → 1.1 → 0.99 → 0.891 → 1.0692 → 1.176 (recovers at index 4) → 1.0584 (open)
    r = np.array([0.10, -0.10, -0.10, 0.20, 0.10, -0.10])
    dates = np.datetime64("2020-01-01") + np.arange(6)
    table = core.drawdown_table(r, dates)
    assert [(e.peak, e.start, e.trough, e.end, e.recovery) for e in table] == [
        (0, 1, 2, 3, 4),
        (4, 5, 5, 5, None),
    ]
    assert_same(table[0].depth, 0.891 / 1.1 - 1, "depth")
    assert table[0].days == 3 and table[0].periods == 3
    assert table[0].peak_date == dates[0] and table[0].recovery_date == dates[4]
    assert_same(table[0].depth, core.max_drawdown(r), "max dd")


def test_drawdown_table_matches_quantstats_details() -> None:
    qs = pytest.importorskip("quantstats")
    pd = pytest.importorskip("pandas")
    r = VECTORS["noise_uniform"]
    idx = pd.date_range("2000-01-03", periods=r.size, freq="D")
    with _quiet():
        ref = qs.stats.drawdown_details(qs.stats.to_drawdown_series(pd.Series(r, index=idx)))
    ours = sorted(core.drawdown_table(r, idx.values), key=lambda e: e.start)
    assert len(ours) == len(ref)
    for e, (_, row) in zip(ours, ref.iterrows(), strict=True):
        assert str(idx[e.start].date()) == row["start"]
        assert str(idx[e.end].date()) == row["end"]
        assert str(idx[e.trough].date()) == row["valley"]
        assert e.days == row["days"]
        assert_same(e.depth * 100, row["max drawdown"], "depth", rel=1e-12)


def test_trade_stats_match_quantstats() -> None:
    qs = pytest.importorskip("quantstats")
    pd = pytest.importorskip("pandas")
    pnl = np.array([120.0, -40.0, 0.0, 75.5, -10.25, -60.0, 300.0, 0.0, 15.0])
    s = core.trade_stats(pnl)
    series = pd.Series(pnl)
    with _quiet():
        assert_same(s.win_rate, qs.stats.win_rate(series, prepare_returns=False), "win_rate")
        assert_same(s.avg_win, qs.stats.avg_win(series, prepare_returns=False), "avg_win")
        assert_same(s.avg_loss, qs.stats.avg_loss(series, prepare_returns=False), "avg_loss")
        assert_same(
            s.profit_factor, qs.stats.profit_factor(series, prepare_returns=False), "profit_factor"
        )
        assert_same(s.payoff_ratio, qs.stats.payoff_ratio(series, prepare_returns=False), "payoff")
    assert_same(s.expectancy, pnl.mean(), "expectancy")
    assert (s.trades, s.wins, s.losses) == (9, 4, 3)
    assert core.trade_stats(np.array([5.0, 0.0])).profit_factor == math.inf
    assert core.trade_stats(np.array([0.0])).profit_factor == 0.0


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: core.sharpe_ratio(np.array([0.01, np.inf])), "returns"),
        (lambda: core.beta(np.zeros(3), np.zeros(4)), "benchmark"),
        (lambda: core.sharpe_ratio(np.zeros((2, 2))), "returns"),
        (lambda: core.annual_return(np.zeros(3), period="fortnightly"), "period"),
        (lambda: core.roll_sharpe_ratio(np.zeros(3), 0), "window"),
        (lambda: core.probabilistic_sharpe_ratio(0.1, 1), "n_obs"),
        (lambda: core.deflated_sharpe_ratio(0.1, 100, 0, 0.1), "n_trials"),
        (lambda: core.compute_stats(np.array([0.01, np.nan])), "returns"),
        (lambda: core.StreamingStats().update(math.nan), "ret"),
        (lambda: core.StreamingStats(benchmark=True).update(0.01), "benchmark_ret"),
        (lambda: core.StreamingStats().update(0.01, 0.02), "benchmark_ret"),
        (lambda: core.trade_stats(np.array([1.0, np.nan])), "pnl"),
        (lambda: core.AnalyticsParams(convention="pyfolio"), "convention"),  # type: ignore[arg-type]
        (lambda: core.value_at_risk(np.zeros(3), cutoff=1.5), "cutoff"),
        (lambda: core.drawdown_table(np.zeros(3), np.arange(2)), "dates"),
    ],
)
def test_bad_input_raises_naming_the_parameter(call: Callable[[], object], parameter: str) -> None:
    with pytest.raises(core.AnalyticsInputError) as info:
        call()
    assert info.value.parameter == parameter
    assert isinstance(info.value, ValueError)


def test_infer_period() -> None:
    days = np.datetime64("2020-01-06") + np.array([0, 1, 2, 3, 4, 7, 8, 9, 10, 11])
    assert core.infer_period(days) == "daily"
    minutes = np.datetime64("2020-01-06T09:30") + np.arange(30)
    assert core.infer_period(minutes) == "minute"
    months = np.arange("2000-01", "2003-01", dtype="datetime64[M]").astype("datetime64[D]")
    assert core.infer_period(months) == "monthly"


# ------------------------------------------------------------------------------------------
# The 13 bundled daily series (total-return adjusted by MarketData's Lean factor files)


def _daily_returns() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    daily = pytest.importorskip("engines.marketdata.daily")
    out = {}
    for ticker in daily.daily_tickers():
        bars = daily.read_daily_bars(ticker, "total")
        out[ticker] = (bars.date[1:], bars.close[1:] / bars.close[:-1] - 1.0)
    return out


@pytest.fixture(scope="module")
def daily_returns() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return _daily_returns()


def test_thirteen_daily_series_equal_empyrical(
    daily_returns: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    assert len(daily_returns) == 13
    spy_dates, spy = daily_returns["SPY"]
    for ticker, (dates, r) in daily_returns.items():
        for stat, (ours_fn, ref_fn, kwargs) in UNARY.items():
            assert_same(ours_fn(r, **kwargs), _ref(ref_fn, r.copy(), **kwargs), f"{ticker} {stat}")
        common, i, j = np.intersect1d(dates, spy_dates, return_indices=True)
        assert common.size > 250
        for stat, (ours_fn, ref_fn, kwargs) in BINARY.items():
            ref = _ref(ref_fn, r[i].copy(), spy[j].copy(), **kwargs)
            assert_same(ours_fn(r[i], spy[j], **kwargs), ref, f"{ticker} {stat} vs SPY")
        for got, ref in (
            (core.roll_sharpe_ratio(r, 126), empyrical.roll_sharpe_ratio(r, 126)),
            (core.roll_beta(r[i], spy[j], 126), empyrical.roll_beta(r[i], spy[j], 126)),
        ):
            np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-10, err_msg=ticker)


def test_streaming_equals_batch_on_aapl_vs_spy(
    daily_returns: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    dates, r = daily_returns["AAPL"]
    spy_dates, spy = daily_returns["SPY"]
    _, i, j = np.intersect1d(dates, spy_dates, return_indices=True)
    r, b = r[i], spy[j]
    stream = core.StreamingStats(benchmark=True)
    for k in range(r.size):
        got = stream.update(float(r[k]), float(b[k]))
        if k % 500 == 0 or k == r.size - 1:
            _stats_close(got, core.compute_stats(r[: k + 1], b[: k + 1]))


# ------------------------------------------------------------------------------------------
# convention="quantstats" against quantstats, and the formulas the two libraries share


def test_quantstats_convention_equals_quantstats() -> None:
    qs = pytest.importorskip("quantstats")
    pd = pytest.importorskip("pandas")
    r, b = VECTORS["noise_uniform"], VECTORS["noise"]
    idx = pd.date_range("2000-01-03", periods=r.size, freq="B")
    rs, bs = pd.Series(r, index=idx), pd.Series(b, index=idx)
    qc: core.Convention = "quantstats"
    with _quiet():
        checks = [
            ("skew", core.skew(r, qc), qs.stats.skew(rs)),
            ("kurtosis", core.kurtosis(r, qc), qs.stats.kurtosis(rs)),
            ("var", core.value_at_risk(r, 0.05, qc), qs.stats.value_at_risk(rs, confidence=0.95)),
            ("cvar", core.conditional_value_at_risk(r, 0.05, qc), qs.stats.cvar(rs)),
            ("alpha", core.alpha(r, b, convention=qc), qs.stats.greeks(rs, bs)["alpha"]),
            ("beta", core.beta(r, b), qs.stats.greeks(rs, bs)["beta"]),
            # Shared formulas: one implementation serves both conventions.
            ("sharpe", core.sharpe_ratio(r), qs.stats.sharpe(rs)),
            ("sortino", core.sortino_ratio(r), qs.stats.sortino(rs)),
            ("volatility", core.annual_volatility(r), qs.stats.volatility(rs)),
            ("cagr", core.annual_return(r), qs.stats.cagr(rs)),
            ("max_drawdown", core.max_drawdown(r), qs.stats.max_drawdown(rs)),
            ("calmar", core.calmar_ratio(r), qs.stats.calmar(rs)),
            ("omega", core.omega_ratio(r), qs.stats.omega(rs)),
            ("tail_ratio", core.tail_ratio(r), qs.stats.tail_ratio(rs)),
            ("information_ratio", core.information_ratio(r, b), qs.stats.information_ratio(rs, bs)),
        ]
    for what, ours, ref in checks:
        assert_same(ours, float(ref), what, rel=1e-12)

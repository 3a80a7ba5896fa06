"""Factor core against outside references on the bundled daily universe (1998–2021):
statsmodels ``RollingOLS``/``RollingWLS``/``WLS``/``OLS`` (params, bse, R², residual variance,
HAC with and without its lag rule) to ≤ 1e-9; linearmodels ``FamaMacBeth`` (OLS, WLS, kernel)
to ≤ 1e-8 on the universe's characteristics panel and on the French data linearmodels ships;
``scipy.stats.spearmanr`` per date for the IC; ``pandas.qcut`` for quantiles; pandas rolling
windows for the characteristics. No look-ahead: changing data after t changes no estimate
before t (streaming and batch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from linearmodels import FamaMacBeth as LmFamaMacBeth
from linearmodels.datasets import french
from scipy.stats import spearmanr
from statsmodels.regression.rolling import RollingOLS, RollingWLS

from engines.factor import core
from tests.engines.factor.conftest import Universe, paired_returns

REL = 1e-9


def assert_close(got: np.ndarray, want: np.ndarray, rel: float = REL, label: str = "") -> None:
    """Same NaN mask; |got − want| ≤ rel · max(|want|, median |want|) (the floor matters only
    where an estimate crosses zero)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=label)
    m = np.isfinite(want)
    assert m.any(), label
    floor = float(np.median(np.abs(want[m])))
    err = np.abs(got[m] - want[m]) / np.maximum(np.abs(want[m]), floor)
    assert err.max() <= rel, f"{label}: max rel err {err.max():.3g}"


def stream(
    y: np.ndarray, x: np.ndarray, **kwargs: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[core.Fit]]:
    """Feed one series bar by bar; params, bse, r2, resid_vol per bar and the fits."""
    ols = core.RollingOls(x.shape[1], **kwargs)  # type: ignore[arg-type]
    slot = np.array([ols.add_series()])
    fits = [ols.update(slot, y[t : t + 1], x[t : t + 1]) for t in range(len(y))]
    return (
        np.vstack([f.params for f in fits]),
        np.vstack([f.bse for f in fits]),
        np.concatenate([f.r2 for f in fits]),
        np.concatenate([f.resid_vol for f in fits]),
        fits,
    )


UNIVERSE_PAIRS = ["AAPL", "AIG", "BAC", "EEM", "FB", "GOOG", "GOOGL", "IWM", "QQQ", "USO", "WM"]


# ── time series: rolling, expanding, EWMA, HAC ─────────────────────────────────────────────


@pytest.mark.parametrize("symbol", UNIVERSE_PAIRS)
def test_rolling_market_beta_equals_statsmodels_rolling_ols(
    universe: Universe, symbol: str
) -> None:
    y, x = paired_returns(universe, symbol, ["SPY"])
    assert len(y) > 1000
    ref = RollingOLS(y, sm.add_constant(x), window=60).fit()
    params, bse, r2, vol, _ = stream(y, x, window=60)
    assert_close(params, ref.params, label="params")
    assert_close(bse, ref.bse, label="bse")
    assert_close(r2, ref.rsquared, label="r2")
    assert_close(vol**2, ref.mse_resid, label="resid var")
    # the batch path: same numbers
    batch = core.rolling_ols_many(y[None], x, window=60)
    assert_close(batch.params[0], ref.params, label="batch params")
    assert_close(batch.bse[0], ref.bse, label="batch bse")
    assert_close(batch.r2[0], ref.rsquared, label="batch r2")
    np.testing.assert_allclose(batch.params[0][59:], params[59:], rtol=1e-11, atol=1e-13)


def test_three_factor_rolling_and_expanding_equal_statsmodels(universe: Universe) -> None:
    y, x = paired_returns(universe, "AAPL", ["SPY", "QQQ", "IWM"])
    design = sm.add_constant(x)
    ref = RollingOLS(y, design, window=120).fit()
    params, bse, r2, _, _ = stream(y, x, window=120)
    assert_close(params, ref.params, label="params")
    assert_close(bse, ref.bse, label="bse")
    assert_close(r2, ref.rsquared, label="r2")
    # expanding from 5 rows (statsmodels: expanding=True over a window of every row)
    ref = RollingOLS(y, design, window=len(y), expanding=True, min_nobs=5).fit()
    params, bse, r2, _, _ = stream(y, x, window=0, min_obs=5)
    assert_close(params, ref.params, label="expanding params")
    assert_close(bse, ref.bse, label="expanding bse")
    batch = core.rolling_ols_many(y[None], x, window=0, min_obs=5)
    assert_close(batch.params[0], ref.params, label="expanding batch params")
    assert_close(batch.bse[0], ref.bse, label="expanding batch bse")
    # the full sample: the expanding path's last row is statsmodels' OLS
    ols = sm.OLS(y, design).fit()
    assert_close(params[-1], ols.params, label="full-sample params")
    assert_close(r2[-1:], np.array([ols.rsquared]), label="full-sample r2")


def test_ewma_weights_equal_statsmodels_wls(universe: Universe) -> None:
    y, x = paired_returns(universe, "BAC", ["SPY", "IWM"])
    y, x = y[-2000:], x[-2000:]
    lam, window = 0.97, 250
    params, bse, r2, vol, _ = stream(y, x, window=window, decay=lam)
    design = sm.add_constant(x)
    # WLS is invariant to rescaling the weights: λ^(−t) is λ^(T−t) of every window times λ^(−T)
    ref = RollingWLS(y, design, window=window, weights=lam ** -np.arange(len(y), dtype=float))
    fit = ref.fit()
    assert_close(params, fit.params, label="params")
    assert_close(bse, fit.bse, label="bse")
    assert_close(r2, fit.rsquared, label="r2")
    for end in (window, 777, len(y)):  # one window at a time, weights relative to its end
        rows = slice(end - window, end)
        w = lam ** np.arange(window - 1, -1, -1, dtype=float)
        wls = sm.WLS(y[rows], design[rows], weights=w).fit()
        assert_close(params[end - 1], wls.params, label=f"wls params {end}")
        assert_close(bse[end - 1], wls.bse, label=f"wls bse {end}")
        assert vol[end - 1] ** 2 == pytest.approx(wls.mse_resid, rel=REL)
    batch = core.rolling_ols_many(y[None], x, window=window, decay=lam)
    assert_close(batch.params[0], fit.params, label="batch params")
    assert_close(batch.bse[0], fit.bse, label="batch bse")
    # expanding with forgetting: every past row weighted λ^(T−t)
    params, bse, _, _, _ = stream(y, x, window=0, decay=lam)
    w = lam ** np.arange(len(y) - 1, -1, -1, dtype=float)
    wls = sm.WLS(y, design, weights=w).fit()
    assert_close(params[-1], wls.params, label="expanding ewma params")
    assert_close(bse[-1], wls.bse, label="expanding ewma bse")


@pytest.mark.parametrize("lags", [None, 0, 5])
def test_hac_standard_errors_equal_statsmodels_hac(universe: Universe, lags: int | None) -> None:
    y, x = paired_returns(universe, "QQQ", ["SPY", "EEM"])
    window = 100
    _, _, _, _, fits = stream(y, x, window=window, hac=True, hac_lags=lags)
    design = sm.add_constant(x)
    assert all(np.isnan(f.hac_bse).all() for f in fits[: window - 1])  # type: ignore[arg-type]
    for end in (window, len(y) // 3, 2 * len(y) // 3, len(y)):
        rows = slice(end - window, end)
        ref = sm.OLS(y[rows], design[rows]).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
        got = fits[end - 1]
        assert got.hac_bse is not None
        assert_close(got.hac_bse[0], ref.bse, label=f"hac bse {end}")
        assert_close(got.hac_tvalues[0], ref.tvalues, label=f"hac t {end}")  # type: ignore[index]
    assert core.hac_lag_rule(window) == 4  # floor(4 · 1^(2/9))
    full = core.full_sample_ols(y, x, hac_lags=lags)
    ref = sm.OLS(y, design).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    assert_close(full.params[0], ref.params, label="full params")
    assert_close(full.hac_bse[0], ref.bse, label="full hac bse")  # type: ignore[index]


def test_hac_with_ewma_weights_equals_statsmodels_wls_hac(universe: Universe) -> None:
    y, x = paired_returns(universe, "IWM", ["SPY"])
    window, lam = 80, 0.95
    _, _, _, _, fits = stream(y, x, window=window, decay=lam, hac=True, hac_lags=3)
    rows = slice(len(y) - window, len(y))
    w = lam ** np.arange(window - 1, -1, -1, dtype=float)
    ref = sm.WLS(y[rows], sm.add_constant(x[rows]), weights=w).fit(
        cov_type="HAC", cov_kwds={"maxlags": 3}
    )
    assert_close(fits[-1].hac_bse[0], ref.bse, label="wls hac")  # type: ignore[index]


@pytest.mark.parametrize(("decay", "lags"), [(1.0, None), (0.97, 3)])
def test_hac_of_many_slots_in_one_call_equals_hac_cov_per_slot(
    universe: Universe, decay: float, lags: int | None
) -> None:
    """``RollingOls._hac_bse`` is vectorized across the slots of one call: it equals
    ``hac_cov`` (the statsmodels-checked per-regression Newey–West) slot by slot to 1e-12, and a
    slot's numbers are bit-identical whatever else is in the call (the engine's batches)."""
    tickers = ["AAPL", "AIG", "BAC", "IWM", "QQQ", "EEM", "WM", "USO"]
    cols = [universe.column(t) for t in ["SPY", "EEM", *tickers]]
    both = np.all([np.isfinite(c) for c in cols], axis=0)
    rets = np.array([c[both][-400:][1:] / c[both][-400:][:-1] - 1.0 for c in cols])
    x, y = rets[:2].T, rets[2:]
    window, m = 60, len(tickers)
    together = core.RollingOls(2, window=window, decay=decay, hac=True, hac_lags=lags)
    apart = core.RollingOls(2, window=window, decay=decay, hac=True, hac_lags=lags)
    slots = np.array([together.add_series() for _ in tickers])
    for _ in tickers:
        apart.add_series()
    rng = np.random.default_rng(5)
    root_w = np.sqrt(decay ** np.arange(window - 1, -1, -1, dtype=float))
    checked = 0
    for t in range(len(x)):
        fit = together.update(slots, y[:, t], np.repeat(x[t][None], m, axis=0))
        for part in np.array_split(rng.permutation(m), rng.integers(1, 4)):
            alone = apart.update(part, y[part, t], np.repeat(x[t][None], len(part), axis=0))
            assert alone.hac_bse is not None and fit.hac_bse is not None
            np.testing.assert_array_equal(alone.hac_bse, fit.hac_bse[part])
        if t + 1 < window:
            assert np.isnan(fit.hac_bse).all()  # type: ignore[arg-type]
            continue
        for i in range(m):
            order = (together.head[i] + np.arange(window)) % window
            xw = together.ring_x[i, order] * root_w[:, None]
            yw = together.ring_y[i, order] * root_w
            inv = np.linalg.inv(together.xx[i])
            cov = core.hac_cov(xw, yw - xw @ fit.params[i], inv, lags)
            want = np.sqrt(np.diagonal(cov))
            np.testing.assert_allclose(fit.hac_bse[i], want, rtol=1e-12, atol=0)  # type: ignore[index]
            checked += 1
    assert checked == m * (len(x) - window + 1)


def test_many_symbols_at_once_equal_one_at_a_time(universe: Universe) -> None:
    """The vectorized streaming update of many slots and the vmapped batch equal per-symbol
    RollingOLS on a common panel."""
    tickers = ["AAPL", "AIG", "BAC", "IWM", "QQQ", "EEM", "WM"]
    cols = [universe.column(t) for t in ["SPY", *tickers]]
    both = np.all([np.isfinite(c) for c in cols], axis=0)
    rets = np.array([c[both][1:] / c[both][:-1] - 1.0 for c in cols])
    x, y = rets[:1].T, rets[1:]
    ols = core.RollingOls(1, window=60, capacity=2)  # grows
    slots = np.array([ols.add_series() for _ in tickers])
    streamed = np.stack(
        [
            ols.update(slots, y[:, t], np.repeat(x[t : t + 1], len(tickers), 0)).params
            for t in range(y.shape[1])
        ],
        axis=1,
    )
    batch = core.rolling_ols_many(y, x, window=60)
    for i in range(len(tickers)):
        ref = RollingOLS(y[i], sm.add_constant(x), window=60).fit()
        assert_close(streamed[i], ref.params, label=tickers[i])
        assert_close(batch.params[i], ref.params, label=f"batch {tickers[i]}")
        assert_close(batch.tvalues[i], ref.tvalues, label=f"batch t {tickers[i]}")
    assert batch.nobs[0] == 1 and batch.nobs[-1] == 60


def test_bad_settings_are_refused() -> None:
    for kwargs in (
        {"window": 2},
        {"window": -1},
        {"decay": 0.0},
        {"decay": 1.5},
        {"window": 10, "min_obs": 11},
        {"window": 10, "min_obs": 2},
        {"window": 0, "hac": True},
        {"window": 10, "hac": True, "hac_lags": 10},
    ):
        with pytest.raises(ValueError):
            core.RollingOls(1, **kwargs)
    with pytest.raises(ValueError):
        core.RollingOls(0)
    with pytest.raises(ValueError):
        core.rolling_ols_many(np.zeros((2, 10)), np.zeros((9, 1)), window=5)


def test_a_singular_window_is_nan_not_an_error() -> None:
    ols = core.RollingOls(1, window=5)
    a, b = np.array([ols.add_series()]), np.array([ols.add_series()])
    for t in range(6):
        flat = ols.update(np.concatenate([a, b]), np.array([0.1 * t, 0.2]), np.array([[0.0], [t]]))
    assert np.isnan(flat.params[0]).all()  # constant factor: X'X singular
    assert flat.params[1] == pytest.approx([0.2, 0.0], abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    cut=st.integers(min_value=1, max_value=299),
    seed=st.integers(min_value=0, max_value=2**31),
    decay=st.sampled_from([1.0, 0.9]),
    window=st.sampled_from([0, 20]),
)
def test_no_look_ahead(cut: int, seed: int, decay: float, window: int) -> None:
    """Changing every bar from ``cut`` on changes no estimate before ``cut``: exactly, in both
    the streaming and the batch path."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, (300, 2))
    y = x @ np.array([1.2, -0.4]) + rng.normal(0, 0.01, 300)
    y2, x2 = y.copy(), x.copy()
    y2[cut:] = rng.normal(0, 1.0, 300 - cut)
    x2[cut:] = rng.normal(0, 1.0, (300 - cut, 2))
    kwargs = {"window": window, "decay": decay, "min_obs": 5}
    a, b = stream(y, x, **kwargs)[0], stream(y2, x2, **kwargs)[0]
    np.testing.assert_array_equal(a[:cut], b[:cut])
    assert not np.array_equal(a[cut:], b[cut:])
    ba = core.rolling_ols_many(y[None], x, **kwargs).params  # type: ignore[arg-type]
    bb = core.rolling_ols_many(y2[None], x2, **kwargs).params  # type: ignore[arg-type]
    np.testing.assert_array_equal(ba[0, :cut], bb[0, :cut])


# ── cross-section: Fama–MacBeth, characteristics, quantile sorts ───────────────────────────


@pytest.fixture(scope="module")
def panel(universe: Universe) -> dict[str, np.ndarray]:
    """Characteristics at month ends (every 21st date) and the next 21 days' return."""
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    fwd = core.forward_returns(universe.close, 21)
    rows = np.arange(260, len(universe.dates) - 21, 21)
    stacked = np.stack(
        [chars[k][rows] for k in ("size", "momentum", "reversal", "volatility", "beta")], axis=-1
    )
    dollar = universe.close[rows] * universe.volume[rows]
    return {"y": fwd[rows], "x": stacked, "w": dollar, "rows": rows}


def linearmodels_fm(panel: dict[str, np.ndarray], *, weights: bool = False, **fit: Any) -> Any:
    d, n, k = panel["x"].shape
    index = pd.MultiIndex.from_product([range(n), range(d)], names=["entity", "time"])
    x = panel["x"].transpose(1, 0, 2).reshape(n * d, k)
    frame = pd.DataFrame(x, index=index, columns=["size", "mom", "rev", "vol", "beta"])
    frame.insert(0, "const", 1.0)
    frame["y"] = panel["y"].T.reshape(-1)
    frame["w"] = panel["w"].T.reshape(-1)
    frame = frame.dropna()
    exog = frame[["const", "size", "mom", "rev", "vol", "beta"]]
    model = LmFamaMacBeth(frame["y"], exog, weights=frame["w"] if weights else None)
    return model.fit(**fit)


@pytest.mark.parametrize(
    ("weights", "lags"), [(False, 0), (True, 0), (False, 3)], ids=["ols", "wls", "kernel"]
)
def test_fama_macbeth_equals_linearmodels(
    panel: dict[str, np.ndarray], weights: bool, lags: int
) -> None:
    section = core.cross_section_regressions(
        panel["y"], panel["x"], panel["w"] if weights else None
    )
    ours = core.fama_macbeth(section.slopes, lags=lags)
    fit: dict[str, Any] = (
        {"cov_type": "kernel", "bandwidth": lags} if lags else {"cov_type": "unadjusted"}
    )
    ref = linearmodels_fm(panel, weights=weights, **fit)
    assert ours.periods == int(np.isfinite(ref.all_params).all(axis=1).sum()) > 200
    np.testing.assert_allclose(ours.params, ref.params.values, rtol=1e-8, atol=0)
    np.testing.assert_allclose(ours.bse, ref.std_errors.values, rtol=1e-8, atol=0)
    np.testing.assert_allclose(ours.tvalues, ref.tstats.values, rtol=1e-8, atol=0)
    per_date = ref.all_params.reindex(range(len(panel["rows"]))).values
    np.testing.assert_allclose(section.slopes, per_date, rtol=1e-8, atol=1e-12)


def test_fama_macbeth_on_the_french_data_equals_linearmodels() -> None:
    """25 size/value portfolios, monthly: per month, excess returns on full-sample betas of
    the three Fama–French factors (the classic second pass)."""
    data = french.load()
    factors = data[["MktRF", "SMB", "HML"]].to_numpy()
    ports = [c for c in data.columns if c.startswith("S") and c[1].isdigit()]
    excess = data[ports].to_numpy() - data[["RF"]].to_numpy()
    betas = np.array(
        [core.full_sample_ols(excess[:, j], factors).params[0, 1:] for j in range(len(ports))]
    )
    chars = np.broadcast_to(betas, (len(data), *betas.shape))
    ours = core.fama_macbeth(core.cross_section_regressions(excess, chars).slopes)
    t, n = len(data), len(ports)
    index = pd.MultiIndex.from_product([range(n), range(t)])
    exog = pd.DataFrame(np.repeat(betas, t, axis=0), index=index, columns=["m", "s", "h"])
    exog.insert(0, "const", 1.0)
    ref = LmFamaMacBeth(pd.Series(excess.T.reshape(-1), index=index), exog).fit()
    np.testing.assert_allclose(ours.params, ref.params.values, rtol=1e-8)
    np.testing.assert_allclose(ours.bse, ref.std_errors.values, rtol=1e-8)


def test_characteristics_equal_pandas_rolling_windows(universe: Universe) -> None:
    close = universe.close[:, :4]
    volume = universe.volume[:, :4]
    spy = universe.column("SPY")
    chars = core.characteristics(close, volume, spy)
    c, v, m = pd.DataFrame(close), pd.DataFrame(volume), pd.Series(spy)
    r, mr = c.pct_change(fill_method=None), m.pct_change(fill_method=None)
    want = {
        "size": np.log((c * v).rolling(20).mean()),
        "momentum": c.shift(21) / c.shift(252) - 1,
        "reversal": c / c.shift(21) - 1,
        "volatility": r.rolling(60).std(),
        "beta": r.rolling(252).cov(mr) / mr.rolling(252).var().to_numpy()[:, None],
    }
    for name, frame in want.items():
        expected = frame.to_numpy()
        got = chars[name]
        both = np.isfinite(expected) & np.isfinite(got)
        assert both.sum() > 5000, name
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected), err_msg=name)
        np.testing.assert_allclose(got[both], expected[both], rtol=1e-9, atol=1e-12, err_msg=name)


def test_quantile_labels_equal_pandas_qcut_and_spread_is_top_minus_bottom() -> None:
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(40, 12))
    signal[3, 2] = np.nan
    labels = core.quantile_labels(signal, 4)
    for d in range(40):
        ok = np.isfinite(signal[d])
        want = pd.qcut(signal[d, ok], 4, labels=False)
        np.testing.assert_array_equal(labels[d, ok], want)
    assert np.isnan(labels[3, 2])
    fwd = rng.normal(size=(40, 12))
    q = core.quantile_returns(labels, fwd, 4)
    frame = pd.DataFrame({"q": labels.ravel(), "r": fwd.ravel(), "d": np.repeat(range(40), 12)})
    means = frame.dropna().groupby(["d", "q"])["r"].mean().unstack().to_numpy()
    np.testing.assert_allclose(q, means, rtol=1e-14)
    turnover = core.quantile_turnover(labels, 4)
    for d in range(1, 40):
        for k in range(4):
            now = set(np.flatnonzero(labels[d] == k))
            before = set(np.flatnonzero(labels[d - 1] == k))
            assert turnover[d, k] == pytest.approx(len(now - before) / len(now))


# ── signal evaluation ──────────────────────────────────────────────────────────────────────


def test_ic_equals_scipy_spearman_per_date_on_momentum(universe: Universe) -> None:
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    signal = chars["momentum"]
    evaluated = core.evaluate_signal(signal, universe.close, quantiles=3)
    assert set(evaluated) == {1, 5, 20}
    for h, result in evaluated.items():
        fwd = core.forward_returns(universe.close, h)
        ic = result["ic"]
        checked = 0
        for d in range(0, len(ic), 7):
            ok = np.isfinite(signal[d]) & np.isfinite(fwd[d])
            if ok.sum() < 3:
                assert np.isnan(ic[d])
                continue
            want = spearmanr(signal[d, ok], fwd[d, ok]).statistic
            assert ic[d] == pytest.approx(want, abs=1e-12)
            checked += 1
        assert checked > 500
        v = ic[np.isfinite(ic)]
        s = result["summary"]
        assert s.n == len(v) and s.mean == pytest.approx(v.mean(), rel=1e-12)
        assert s.std == pytest.approx(np.std(v, ddof=1), rel=1e-12)
        assert s.t == pytest.approx(v.mean() / np.std(v, ddof=1) * math.sqrt(len(v)), rel=1e-12)
        running = core.RunningIc()
        for value in v:
            running.add(float(value))
        assert running.summary().mean == pytest.approx(s.mean, rel=1e-12)
        assert running.summary().std == pytest.approx(s.std, rel=1e-10)
        assert result["spread_mean"] == pytest.approx(
            float(np.nanmean(result["quantile_returns"][:, -1] - result["quantile_returns"][:, 0]))
        )


def test_spearman_handles_ties_like_scipy() -> None:
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0])
    b = np.array([0.3, 0.1, 0.2, 0.2, 0.9, 0.4])
    assert core.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-15)
    assert math.isnan(core.spearman(np.ones(4), b[:4]))


# ── alphalens tear-sheet tables ────────────────────────────────────────────────────────────


def test_factor_tables_equal_alphalens(universe: Universe) -> None:
    """One signal (21-day reversal) on the 13 names of the daily universe, on the dates all have
    bars: quantiles, per-date IC, mean return by quantile (raw and demeaned) with standard
    errors, the top-minus-bottom spread, quantile turnover and rank autocorrelation equal
    alphalens-reloaded's (``get_clean_factor_and_forward_returns``, ``performance.*``) to 1e-12."""
    import alphalens as al

    complete = np.isfinite(universe.close).all(axis=1)
    close = universe.close[complete]
    dates = pd.DatetimeIndex(universe.dates[complete].astype("datetime64[ns]"))
    signal = np.full(close.shape, np.nan)
    signal[21:] = -(close[21:] / close[:-21] - 1.0)
    horizons, q = (1, 5, 20), 5
    ours = core.factor_tables(signal, close, horizons=horizons, quantiles=q)

    prices = pd.DataFrame(close, index=dates, columns=universe.tickers)
    factor = pd.DataFrame(signal, index=dates, columns=universe.tickers).stack().dropna()
    factor.index.names = ["date", "asset"]
    clean = al.utils.get_clean_factor_and_forward_returns(
        factor, prices, quantiles=q, periods=horizons, max_loss=1.0
    )
    row = {d: i for i, d in enumerate(dates)}
    col = {t: j for j, t in enumerate(universe.tickers)}
    d_idx = np.array([row[d] for d in clean.index.get_level_values("date")])
    a_idx = np.array([col[a] for a in clean.index.get_level_values("asset")])
    assert ours["rows"].sum() == len(clean) > 20_000
    np.testing.assert_array_equal(ours["labels"][d_idx, a_idx] + 1, clean["factor_quantile"])

    ic = al.performance.factor_information_coefficient(clean)
    on = np.array([row[d] for d in ic.index])
    mean_ret, std_err = al.performance.mean_return_by_quantile(clean, demeaned=False)
    mean_dm, std_dm = al.performance.mean_return_by_quantile(clean, demeaned=True)
    by_date, se_by_date = al.performance.mean_return_by_quantile(
        clean, by_date=True, demeaned=False
    )
    for h in horizons:
        name = f"{h}D"
        got = ours["horizons"][h]
        np.testing.assert_allclose(got["ic"][on], ic[name], rtol=1e-12, atol=1e-14)
        table = got["quantiles"]
        np.testing.assert_allclose(table.mean, mean_ret[name], rtol=1e-12)
        np.testing.assert_allclose(table.std_error, std_err[name], rtol=1e-10)
        np.testing.assert_allclose(table.mean_demeaned, mean_dm[name], rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(table.std_error_demeaned, std_dm[name], rtol=1e-10)
        spread, _ = al.performance.compute_mean_returns_spread(
            by_date[name], q, 1, se_by_date[name]
        )
        np.testing.assert_allclose(table.spread[on], spread.to_numpy(), rtol=1e-12, atol=1e-15)
        assert table.spread_mean == pytest.approx(spread.mean(), rel=1e-12)
        # compute_mean_returns_spread's formula on the table over dates (it takes by-date input)
        mean_spread = (mean_ret.loc[q, name] - mean_ret.loc[1, name]) / 2.0
        mean_spread_se = np.sqrt(std_err.loc[q, name] ** 2 + std_err.loc[1, name] ** 2) / 2.0
        assert table.spread_mean == pytest.approx(mean_spread, rel=1e-10)
        assert table.spread_std_error == pytest.approx(mean_spread_se, rel=1e-10)
        assert got["ic_summary"].mean == pytest.approx(ic[name].mean(), rel=1e-12)
        assert got["ic_summary"].std == pytest.approx(ic[name].std(), rel=1e-10)
    for k in range(1, q + 1):
        turnover = al.performance.quantile_turnover(clean["factor_quantile"], k, 1)
        at = np.array([row[d] for d in turnover.index])
        np.testing.assert_allclose(ours["turnover"][at, k - 1], turnover.to_numpy(), rtol=1e-12)
    autocorr = al.performance.factor_rank_autocorrelation(clean, 1)
    at = np.array([row[d] for d in autocorr.index])
    np.testing.assert_allclose(ours["rank_autocorrelation"][at], autocorr.to_numpy(), rtol=1e-12)

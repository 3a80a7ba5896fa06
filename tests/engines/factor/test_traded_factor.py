"""The traded-factor model against linearmodels ``TradedFactorModel``: alphas, betas, their
standard errors and t-stats, risk premia with theirs, the full covariance, the J statistic and its
p-value, R² and the kernel bandwidth, ≤ 1e-8 relative — on the French data linearmodels ships (25
size/momentum portfolios, Fama–French factors) and on the daily universe (single stocks on the
SPY/IWM/EEM ETFs as traded factors), robust and kernel, debiased or not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from linearmodels.asset_pricing import TradedFactorModel
from linearmodels.datasets import french

from engines.factor.traded_factor import optimal_bandwidth, traded_factor_model
from tests.engines.factor.conftest import Universe

RTOL = 1e-8


def french_panel() -> tuple[np.ndarray, np.ndarray]:
    data = french.load()
    ports = [c for c in data.columns if c.startswith("S") and c[1].isdigit()]
    excess = data[ports].to_numpy() - data[["RF"]].to_numpy()
    return excess, data[["MktRF", "SMB", "HML"]].to_numpy()


def universe_panel(universe: Universe) -> tuple[np.ndarray, np.ndarray]:
    names = ["AAPL", "AIG", "BAC", "WM", "USO", "GOOG"]
    factors = ["SPY", "IWM", "EEM"]
    cols = np.column_stack([universe.column(t) for t in (*names, *factors)])
    cols = cols[np.isfinite(cols).all(axis=1)]
    rets = cols[1:] / cols[:-1] - 1.0
    return rets[:, : len(names)], rets[:, len(names) :]


CASES: dict[str, dict[str, Any]] = {
    "robust-debiased": {"cov_type": "robust", "debiased": True},
    "robust": {"cov_type": "robust", "debiased": False},
    "kernel-auto-bandwidth": {"cov_type": "kernel", "debiased": True},
    "kernel-bandwidth-6": {"cov_type": "kernel", "debiased": False, "bandwidth": 6},
}


def check(portfolios: np.ndarray, factors: np.ndarray, kw: dict[str, Any]) -> None:
    ours = traded_factor_model(portfolios, factors, **kw)
    ref = TradedFactorModel(portfolios, factors).fit(**kw)
    np.testing.assert_allclose(ours.params, ref.params.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(ours.std_errors, ref.std_errors.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(ours.tstats, ref.tstats.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(ours.risk_premia, ref.risk_premia.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(ours.risk_premia_se, ref.risk_premia_se.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(
        ours.risk_premia_tstats, ref.risk_premia_tstats.to_numpy(), rtol=RTOL
    )
    scale = np.abs(ref.cov.to_numpy()).max()
    np.testing.assert_allclose(ours.cov, ref.cov.to_numpy(), rtol=RTOL, atol=RTOL * scale)
    assert ours.j_stat == pytest.approx(ref.j_statistic.stat, rel=RTOL)
    assert ours.j_pvalue == pytest.approx(ref.j_statistic.pval, rel=RTOL, abs=1e-300)
    assert ours.rsquared == pytest.approx(ref.rsquared, rel=RTOL)
    assert ours.nobs == ref.nobs
    if kw["cov_type"] == "kernel":
        # "KernelCovariance, Kernel: bartlett, Bandwidth: 6"
        assert ours.bandwidth == float(ref.cov_estimator.rsplit(":", 1)[1])
        assert ours.bandwidth == kw.get("bandwidth", ours.bandwidth) and ours.bandwidth > 0


@pytest.mark.parametrize("kw", CASES.values(), ids=CASES.keys())
def test_french_portfolios_equal_linearmodels(kw: dict[str, Any]) -> None:
    check(*french_panel(), kw)


@pytest.mark.parametrize("kw", CASES.values(), ids=CASES.keys())
def test_daily_universe_equals_linearmodels(universe: Universe, kw: dict[str, Any]) -> None:
    portfolios, factors = universe_panel(universe)
    assert len(portfolios) > 1_500
    check(portfolios, factors, kw)


def test_automatic_bandwidth_equals_linearmodels_rule() -> None:
    from linearmodels.iv.covariance import kernel_optimal_bandwidth

    rng = np.random.default_rng(4)
    for n in (4, 30, 500, 5_000):
        x = np.convolve(rng.normal(size=n + 5), np.ones(6) / 6, mode="valid")[:n]
        assert optimal_bandwidth(x) == kernel_optimal_bandwidth(x, "bartlett")
    with pytest.raises(ValueError):
        optimal_bandwidth(np.zeros(50))  # zero long-run variance
    with pytest.raises(ValueError):
        optimal_bandwidth(np.ones(3))  # too short for the pilot lags


def test_bad_input_is_refused() -> None:
    p, f = french_panel()
    with pytest.raises(ValueError, match="rows"):
        traded_factor_model(p[:-1], f)
    bad = p.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        traded_factor_model(bad, f)
    with pytest.raises(ValueError, match="cov_type"):
        traded_factor_model(p, f, cov_type="clustered")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bandwidth"):
        traded_factor_model(p, f, bandwidth=3)
    with pytest.raises(ValueError, match="observations"):
        traded_factor_model(p[:4], f[:4])

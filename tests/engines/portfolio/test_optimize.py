"""Portfolio optimisation against PyPortfolioOpt, scikit-learn, closed forms and KKT conditions.

References (none of the expected numbers is produced by the code under test): PyPortfolioOpt
(``EfficientFrontier`` solved by cvxpy, ``HRPOpt``, ``expected_returns``, ``risk_models``,
``CovarianceShrinkage``), ``sklearn.covariance.LedoitWolf``, the closed forms of the unconstrained
mean–variance problems (Merton 1972) and of risk parity for uncorrelated assets and two assets,
and KKT conditions checked here with multipliers fitted independently of the solver's. Data: the
13 bundled Lean daily tickers, total-return adjusted closes, simple daily returns on the 1,761
sessions all 13 share (2014-04-03 … 2021-03-31; GOOG class C starts 2014-04-03).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pypfopt import EfficientFrontier, HRPOpt, expected_returns, risk_models
from pypfopt.exceptions import OptimizationError
from scipy.optimize import nnls
from sklearn.covariance import LedoitWolf

from engines.marketdata.daily import daily_tickers, read_daily_bars
from engines.portfolio import optimize as opt
from engines.portfolio.optimize import OptimizeError, OptimizeRequest

pytestmark = pytest.mark.pure

WEIGHT_TOLERANCE = 1e-4  # the "weights equal PyPortfolioOpt within 1e-4"
KKT_TOLERANCE = 1e-8
BOUNDS = [(0.0, 1.0), (0.02, 0.25), (-0.3, 0.6)]
ESTIMATORS = ["sample", "ledoit_wolf"]


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    """Simple daily total returns of the 13 tickers on their common sessions."""
    tickers = daily_tickers()
    bars = [read_daily_bars(t, adjustment="total") for t in tickers]
    common = bars[0].date
    for b in bars[1:]:
        common = np.intersect1d(common, b.date)
    closes = np.column_stack([b.close[np.searchsorted(b.date, common)] for b in bars])
    assert closes.shape == (1761, 13)
    return pd.DataFrame(closes[1:] / closes[:-1] - 1.0, index=common[1:], columns=tickers)


def reference_inputs(daily: pd.DataFrame, estimator: str) -> tuple[pd.Series, pd.DataFrame]:
    mu = expected_returns.mean_historical_return(daily, returns_data=True)
    if estimator == "sample":
        return mu, risk_models.sample_cov(daily, returns_data=True)
    shrunk = risk_models.CovarianceShrinkage(daily, returns_data=True).ledoit_wolf()
    return mu, shrunk


def request(daily: pd.DataFrame, method: str, **fields: Any) -> OptimizeRequest:
    return OptimizeRequest(
        method=method, assets=tuple(daily.columns), returns=daily.to_numpy(), **fields
    )


# --- independent KKT check -------------------------------------------------------------------


def fitted_kkt(
    gradient: np.ndarray,
    eq_rows: np.ndarray,
    eq_values: np.ndarray,
    in_rows: np.ndarray,
    in_values: np.ndarray,
) -> dict[str, float]:
    """KKT residuals of min f s.t. h = 0, g ≥ 0 with multipliers fitted here, not taken from the
    solver: free equality multipliers and non-negative ones on the inequalities active at the
    point (slack ≤ 1e-9), zero on the others, by non-negative least squares (equality multipliers
    split in ±). Returns stationarity, feasibility and complementary slackness residuals; dual
    feasibility holds by construction, so a KKT point is one whose stationarity residual is ~0."""
    active = in_values <= 1e-9
    basis = np.hstack([eq_rows.T, -eq_rows.T, in_rows[active].T])
    multipliers, _ = nnls(basis, gradient)
    in_multipliers = multipliers[2 * eq_rows.shape[0] :]
    return {
        "stationarity": float(np.abs(gradient - basis @ multipliers).max()),
        "primal": float(max(np.abs(eq_values).max(), (-in_values).max(initial=0.0))),
        "complementary": float(np.abs(in_multipliers * in_values[active]).max(initial=0.0)),
    }


def check_kkt(
    method: str,
    w: np.ndarray,
    cov: np.ndarray,
    mu: np.ndarray,
    lower: float,
    upper: float,
    *,
    budget: float = 1.0,
    target_return: float | None = None,
    target_volatility: float | None = None,
    risk_free_rate: float = 0.0,
) -> None:
    n = w.size
    eye = np.eye(n)
    eq_rows, eq_values = np.ones((1, n)), np.array([w.sum() - budget])
    in_rows, in_values = np.vstack([eye, -eye]), np.concatenate([w - lower, upper - w])
    if method == "min_variance":
        gradient = cov @ w
    elif method == "efficient_return":
        assert target_return is not None
        gradient = cov @ w
        in_rows = np.vstack([in_rows, mu])
        in_values = np.append(in_values, mu @ w - target_return)
    elif method == "efficient_risk":
        assert target_volatility is not None
        gradient = -mu
        in_rows = np.vstack([in_rows, -2 * cov @ w])
        in_values = np.append(in_values, target_volatility**2 - w @ cov @ w)
    else:  # max_sharpe in w-space: minimise −S(w), S pseudo-concave where it is positive
        excess = mu - risk_free_rate
        sigma = np.sqrt(w @ cov @ w)
        gradient = -(excess / sigma - (excess @ w) * (cov @ w) / sigma**3)
    residuals = fitted_kkt(gradient, eq_rows, eq_values, in_rows, in_values)
    assert max(residuals.values()) <= KKT_TOLERANCE, residuals


# --- estimators ------------------------------------------------------------------------------


def test_ledoit_wolf_equals_sklearn_on_the_13_tickers(daily: pd.DataFrame) -> None:
    fitted = LedoitWolf().fit(daily.to_numpy())
    cov, shrinkage = opt.ledoit_wolf(daily.to_numpy())
    np.testing.assert_allclose(cov, fitted.covariance_, rtol=1e-12, atol=0)
    assert shrinkage == pytest.approx(fitted.shrinkage_, abs=1e-12)
    assert 0 < shrinkage < 1
    pypfopt = risk_models.CovarianceShrinkage(daily, returns_data=True).ledoit_wolf()
    np.testing.assert_allclose(cov * 252, pypfopt.to_numpy(), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(2, 60), st.integers(1, 12)),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-4, 10.0),
)
def test_ledoit_wolf_equals_sklearn_on_random_data(
    shape: tuple[int, int], seed: int, scale: float
) -> None:
    """Any shape, including fewer samples than features (where shrinkage is largest)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(4, size=shape) @ rng.normal(size=(shape[1], shape[1])) * scale
    fitted = LedoitWolf().fit(x)
    cov, shrinkage = opt.ledoit_wolf(x)
    np.testing.assert_allclose(
        cov, fitted.covariance_, rtol=1e-12, atol=1e-12 * np.abs(fitted.covariance_).max()
    )
    assert shrinkage == pytest.approx(fitted.shrinkage_, abs=1e-12)


def test_estimates_equal_pypfopt(daily: pd.DataFrame) -> None:
    r = daily.to_numpy()
    np.testing.assert_allclose(
        opt.sample_covariance(r, 252),
        risk_models.sample_cov(daily, returns_data=True).to_numpy(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        opt.expected_returns(r, opt.ReturnEstimator.GEOMETRIC, 252),
        expected_returns.mean_historical_return(daily, returns_data=True).to_numpy(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        opt.expected_returns(r, opt.ReturnEstimator.MEAN, 252),
        expected_returns.mean_historical_return(
            daily, returns_data=True, compounding=False
        ).to_numpy(),
        rtol=1e-12,
    )


# --- mean–variance on the 13 tickers ----------------------------------------------------------


def frontier_targets(
    mu: pd.Series, cov: pd.DataFrame, bounds: tuple[float, float]
) -> tuple[float, float]:
    """A return target and a volatility target strictly inside the frontier, from PyPortfolioOpt:
    midway between its min-volatility portfolio and its max-return portfolio."""
    low = EfficientFrontier(mu, cov, weight_bounds=bounds)
    low.min_volatility()
    low_return, low_vol, _ = low.portfolio_performance()
    top = EfficientFrontier(mu, cov, weight_bounds=bounds)
    top._max_return()
    top_return, top_vol, _ = top.portfolio_performance()
    return (low_return + top_return) / 2, (low_vol + top_vol) / 2


REFERENCE: dict[str, Callable[[EfficientFrontier, float, float], object]] = {
    "min_variance": lambda ef, _r, _s: ef.min_volatility(),
    "max_sharpe": lambda ef, _r, _s: ef.max_sharpe(),
    "efficient_return": lambda ef, r, _s: ef.efficient_return(r),
    "efficient_risk": lambda ef, _r, s: ef.efficient_risk(s),
}


@pytest.mark.parametrize("bounds", BOUNDS, ids=str)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("method", list(REFERENCE))
def test_mean_variance_equals_pypfopt_on_the_13_tickers(
    daily: pd.DataFrame, method: str, estimator: str, bounds: tuple[float, float]
) -> None:
    mu, cov = reference_inputs(daily, estimator)
    target_return, target_volatility = frontier_targets(mu, cov, bounds)
    ef = EfficientFrontier(mu, cov, weight_bounds=bounds)
    REFERENCE[method](ef, target_return, target_volatility)
    result = opt.optimize(
        request(
            daily,
            method,
            covariance_estimator=estimator,
            lower=bounds[0],
            upper=bounds[1],
            target_return=target_return,
            target_volatility=target_volatility,
        )
    )
    np.testing.assert_allclose(result.weights, ef.weights, rtol=0, atol=WEIGHT_TOLERANCE)
    expected_return, volatility, sharpe = ef.portfolio_performance()
    assert result.expected_return == pytest.approx(expected_return, abs=1e-6)
    assert result.volatility == pytest.approx(volatility, abs=1e-6)
    assert result.sharpe_ratio == pytest.approx(sharpe, abs=1e-5)
    assert result.kkt is not None and result.kkt.worst <= KKT_TOLERANCE
    assert result.converged
    check_kkt(
        method,
        result.weights,
        cov.to_numpy(),
        mu.to_numpy(),
        *bounds,
        target_return=target_return,
        target_volatility=target_volatility,
    )
    assert result.risk_contributions.sum() == pytest.approx(1.0, abs=1e-12)
    if estimator == "ledoit_wolf":
        assert result.shrinkage is not None and 0 < result.shrinkage < 1


def test_efficient_risk_at_its_ends(daily: pd.DataFrame) -> None:
    """A volatility target at the minimum gives the min-variance portfolio; one above the
    max-return portfolio's volatility gives the max-return portfolio (the limit does not bind)."""
    mu, cov = reference_inputs(daily, "sample")
    low = opt.optimize(request(daily, "min_variance"))
    at_low = opt.optimize(request(daily, "efficient_risk", target_volatility=low.volatility))
    np.testing.assert_allclose(at_low.weights, low.weights, atol=1e-7)
    loose = opt.optimize(request(daily, "efficient_risk", target_volatility=5.0))
    ef = EfficientFrontier(mu, cov)
    ef.efficient_risk(5.0)
    np.testing.assert_allclose(loose.weights, ef.weights, atol=WEIGHT_TOLERANCE)
    assert loose.weights[daily.columns.get_loc("AAPL")] == 1.0  # the highest μ, all in
    assert loose.kkt is not None and loose.kkt.worst <= KKT_TOLERANCE
    check_kkt(
        "efficient_risk", loose.weights, cov.to_numpy(), mu.to_numpy(), 0, 1, target_volatility=5.0
    )


def test_efficient_return_below_the_minimum_variance_return_is_min_variance(
    daily: pd.DataFrame,
) -> None:
    low = opt.optimize(request(daily, "min_variance"))
    below = opt.optimize(request(daily, "efficient_return", target_return=-0.5))
    np.testing.assert_allclose(below.weights, low.weights, atol=1e-12)


def test_budget_scales_the_problem(daily: pd.DataFrame) -> None:
    """Σw = b with bounds b·(l, u) is the b-multiple of the Σw = 1 problem (homogeneity)."""
    for method in ("min_variance", "max_sharpe", "risk_parity", "hrp"):
        unit = opt.optimize(request(daily, method))
        bounds = {} if method in ("risk_parity", "hrp") else {"lower": 0.0, "upper": 0.6}
        scaled = opt.optimize(request(daily, method, budget=0.6, **bounds))
        np.testing.assert_allclose(scaled.weights, 0.6 * unit.weights, atol=1e-12)


# --- a hand case -----------------------------------------------------------------------------

HAND_MU = np.array([0.08, 0.12, 0.15])
HAND_COV = np.array([[0.04, 0.006, 0.002], [0.006, 0.09, 0.018], [0.002, 0.018, 0.16]])
HAND = ("A", "B", "C")


def hand(method: str, **fields: Any) -> opt.OptimizeResult:
    return opt.optimize(
        OptimizeRequest(
            method=method, assets=HAND, expected_returns=HAND_MU, covariance=HAND_COV, **fields
        )
    )


def test_unconstrained_hand_case_equals_closed_forms() -> None:
    """Wide bounds: min variance Σ⁻¹1/(1ᵀΣ⁻¹1), tangency Σ⁻¹(μ − r_f)/(1ᵀΣ⁻¹(μ − r_f)), and the
    two-fund frontier point of return r (Merton 1972, "An analytic derivation of the efficient
    portfolio frontier", eqs. 7–9)."""
    wide = {"lower": -10.0, "upper": 10.0}
    inv = np.linalg.inv(HAND_COV)
    ones = np.ones(3)
    gmv = inv @ ones / (ones @ inv @ ones)
    np.testing.assert_allclose(hand("min_variance", **wide).weights, gmv, atol=1e-14)
    excess = HAND_MU - 0.03
    tangency = inv @ excess / (ones @ inv @ excess)
    np.testing.assert_allclose(
        hand("max_sharpe", risk_free_rate=0.03, **wide).weights, tangency, atol=1e-13
    )
    a, b, c = ones @ inv @ ones, ones @ inv @ HAND_MU, HAND_MU @ inv @ HAND_MU
    r = 0.14
    merton = ((c - b * r) * (inv @ ones) + (a * r - b) * (inv @ HAND_MU)) / (a * c - b * b)
    np.testing.assert_allclose(
        hand("efficient_return", target_return=r, **wide).weights, merton, atol=1e-13
    )
    sigma = np.sqrt(merton @ HAND_COV @ merton)
    np.testing.assert_allclose(
        hand("efficient_risk", target_volatility=sigma, **wide).weights, merton, atol=1e-10
    )


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (0.1, 0.5), (0.0, 0.45)], ids=str)
@pytest.mark.parametrize("method", list(REFERENCE))
def test_hand_case_with_binding_bounds_equals_pypfopt(
    method: str, bounds: tuple[float, float]
) -> None:
    mu = pd.Series(HAND_MU, index=HAND)
    cov = pd.DataFrame(HAND_COV, index=HAND, columns=HAND)
    ef = EfficientFrontier(mu, cov, weight_bounds=bounds)
    REFERENCE[method](ef, 0.12, 0.22)
    result = hand(
        method, lower=bounds[0], upper=bounds[1], target_return=0.12, target_volatility=0.22
    )
    np.testing.assert_allclose(result.weights, ef.weights, atol=WEIGHT_TOLERANCE)
    check_kkt(
        method,
        result.weights,
        HAND_COV,
        HAND_MU,
        *bounds,
        target_return=0.12,
        target_volatility=0.22,
    )


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    n = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(n, n)) * rng.uniform(0.05, 0.4, size=n)[:, None]
    cov = factor @ factor.T + np.diag(rng.uniform(1e-4, 0.02, size=n))
    mu = rng.normal(0.06, 0.08, size=n)
    mu[rng.integers(n)] = abs(mu).max() + 0.01  # one asset beats r_f = 0
    lower = draw(st.sampled_from([0.0, -0.2, 0.05 / n]))
    upper = draw(st.sampled_from([1.0, 0.6, 2.0 / n]))
    return cov, mu, lower, max(upper, 1.0 / n + 0.05), n


@settings(max_examples=30, deadline=None)
@given(problem=problems(), fraction=st.floats(0.05, 0.95))
def test_random_problems_equal_pypfopt_and_satisfy_kkt(
    problem: tuple[np.ndarray, np.ndarray, float, float, int], fraction: float
) -> None:
    cov, mu, lower, upper, n = problem
    assets = tuple(f"X{i}" for i in range(n))
    mu_s, cov_df = pd.Series(mu, index=assets), pd.DataFrame(cov, index=assets, columns=assets)
    base = OptimizeRequest(
        method="min_variance",
        assets=assets,
        expected_returns=mu,
        covariance=cov,
        lower=lower,
        upper=upper,
    )
    low = opt.optimize(base)
    assert low.expected_return is not None
    top_weights = EfficientFrontier(mu_s, cov_df, weight_bounds=(lower, upper))
    top_weights._max_return()
    top_return = float(mu @ top_weights.weights)
    assume(top_return - low.expected_return > 1e-6)  # else the frontier is one point
    target_return = low.expected_return + fraction * (top_return - low.expected_return)
    top_vol = float(np.sqrt(top_weights.weights @ cov @ top_weights.weights))
    target_vol = low.volatility + fraction * (top_vol - low.volatility)
    for method in REFERENCE:
        result = opt.optimize(
            dataclasses.replace(
                base, method=method, target_return=target_return, target_volatility=target_vol
            )
        )
        ef = EfficientFrontier(mu_s, cov_df, weight_bounds=(lower, upper))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                REFERENCE[method](ef, target_return, target_vol)
        except OptimizationError:
            pass  # cvxpy's solver gave up (seen: Clarabel "user_limit"); the KKT check remains
        else:
            close = np.abs(result.weights - ef.weights).max() <= WEIGHT_TOLERANCE
            if method == "efficient_risk" and not close:
                # Seen where the frontier is flat: cvxpy's SOCP answer stops inside the risk
                # limit, 1e-4 away in weights for 3e-9 of return. Ours must then be better.
                assert mu @ result.weights >= mu @ ef.weights
                assert result.volatility <= target_vol * (1 + 1e-12)
            else:
                assert close, (method, result.weights, ef.weights)
        assert result.kkt is not None and result.kkt.worst <= KKT_TOLERANCE, (method, result.kkt)
        check_kkt(
            method,
            result.weights,
            cov,
            mu,
            lower,
            upper,
            target_return=target_return,
            target_volatility=target_vol,
        )


# --- risk parity and HRP ---------------------------------------------------------------------


def pypfopt_risk_parity(cov: pd.DataFrame) -> np.ndarray:
    """Spinu's convex problem posed to cvxpy through PyPortfolioOpt's convex_objective."""
    n = cov.shape[0]
    ef = EfficientFrontier(None, cov, weight_bounds=(None, None))
    ef.convex_objective(
        lambda w: 0.5 * cp.quad_form(w, cov.to_numpy()) - cp.sum(cp.log(w)) / n,  # type: ignore[attr-defined]
        weights_sum_to_one=False,
    )
    return np.asarray(ef.weights / ef.weights.sum())


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_risk_parity_on_the_13_tickers(daily: pd.DataFrame, estimator: str) -> None:
    _, cov = reference_inputs(daily, estimator)
    result = opt.optimize(request(daily, "risk_parity", covariance_estimator=estimator))
    rc = result.risk_contributions
    np.testing.assert_allclose(rc, np.full(13, 1 / 13), rtol=1e-8, atol=0)
    w = result.weights
    absolute = w * (cov.to_numpy() @ w)
    assert np.ptp(absolute) <= 1e-8 * absolute.mean()
    assert (w > 0).all() and w.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(w, pypfopt_risk_parity(cov), atol=WEIGHT_TOLERANCE)
    assert result.kkt is not None and result.kkt.stationarity <= KKT_TOLERANCE


def test_risk_parity_closed_forms() -> None:
    """Uncorrelated assets, and any two assets: wᵢ ∝ 1/σᵢ (Maillard, Roncalli & Teïletche 2010,
    "The properties of equally weighted risk contribution portfolios", §2.2)."""
    sigma = np.array([0.1, 0.2, 0.25, 0.4])
    diagonal = np.diag(sigma**2)
    w, _, _ = opt.risk_parity_weights(diagonal)
    np.testing.assert_allclose(w, (1 / sigma) / (1 / sigma).sum(), rtol=1e-13)
    two = np.array([[0.04, -0.018], [-0.018, 0.09]])
    w2, _, _ = opt.risk_parity_weights(two)
    np.testing.assert_allclose(w2, np.array([1 / 0.2, 1 / 0.3]) / (1 / 0.2 + 1 / 0.3), rtol=1e-13)


@settings(max_examples=40, deadline=None)
@given(problem=problems())
def test_risk_parity_contributions_are_equal(
    problem: tuple[np.ndarray, np.ndarray, float, float, int],
) -> None:
    cov, _, _, _, n = problem
    w, kkt, _ = opt.risk_parity_weights(cov)
    contributions = w * (cov @ w)
    np.testing.assert_allclose(contributions / contributions.sum(), 1 / n, rtol=1e-8)
    assert kkt.stationarity <= KKT_TOLERANCE


def test_hrp_equals_pypfopt_on_the_13_tickers(daily: pd.DataFrame) -> None:
    reference = HRPOpt(daily)
    reference.optimize("single")
    result = opt.optimize(request(daily, "hrp"))
    np.testing.assert_allclose(result.weights, reference.weights, rtol=1e-12, atol=0)
    assert result.kkt is None and result.converged
    # The same clusters over the Ledoit–Wolf covariance (HRPOpt from a covariance matrix).
    shrunk = risk_models.CovarianceShrinkage(daily, returns_data=True).ledoit_wolf()
    from_cov = HRPOpt(cov_matrix=shrunk)
    from_cov.optimize("single")
    lw = opt.optimize(request(daily, "hrp", covariance_estimator="ledoit_wolf"))
    np.testing.assert_allclose(lw.weights, from_cov.weights, rtol=1e-10, atol=0)


def test_hrp_of_two_assets_is_inverse_variance() -> None:
    """One bisection: α = 1 − σ₁²/(σ₁² + σ₂²), i.e. inverse-variance weights (LdP 2016, §4)."""
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    np.testing.assert_allclose(opt.hrp_weights(cov), np.array([0.09, 0.04]) / 0.13, rtol=1e-15)


@settings(max_examples=40, deadline=None)
@given(problem=problems())
def test_hrp_equals_pypfopt_on_random_covariances(
    problem: tuple[np.ndarray, np.ndarray, float, float, int],
) -> None:
    cov, _, _, _, n = problem
    assets = [f"X{i}" for i in range(n)]
    std = np.sqrt(np.diag(cov))
    corr = cov / np.outer(std, std)
    # HRPOpt rounds a covariance's correlation to 6 decimals: give it one that is already round.
    cov = np.round(corr, 6) * np.outer(std, std)
    reference = HRPOpt(cov_matrix=pd.DataFrame(cov, index=assets, columns=assets))
    reference.optimize("single")
    np.testing.assert_allclose(opt.hrp_weights(cov), reference.weights, rtol=1e-10)


# --- bad requests ----------------------------------------------------------------------------


def raises(parameter: str, **fields: Any) -> None:
    base: dict[str, Any] = {
        "method": "min_variance",
        "assets": HAND,
        "expected_returns": HAND_MU,
        "covariance": HAND_COV,
    }
    with pytest.raises(OptimizeError) as caught:
        opt.optimize(OptimizeRequest(**(base | fields)))
    assert caught.value.parameter == parameter, caught.value
    assert str(caught.value).startswith(f"{parameter}: ")


def test_bad_requests_name_the_parameter() -> None:
    not_psd = np.array([[0.04, 0.09, 0.0], [0.09, 0.04, 0.0], [0.0, 0.0, 0.01]])
    raises("covariance", covariance=not_psd)
    raises("covariance", covariance=HAND_COV + np.triu(np.full((3, 3), 0.001), 1))  # asymmetric
    raises("covariance", covariance=np.ones((2, 2)))
    raises("covariance", covariance=np.full((3, 3), 0.04))  # PSD but singular
    raises("method", method="max_return")
    raises("assets", assets=("A", "A", "B"))
    raises("lower", lower=0.4)  # 3 × 0.4 > 1
    raises("upper", upper=0.3)  # 3 × 0.3 < 1
    raises("upper", lower=(0.0, 0.5, 0.0), upper=(1.0, 0.4, 1.0))
    raises("lower", lower=-np.inf)
    raises("budget", budget=0.0)
    raises("target_return", method="efficient_return")
    raises("target_return", method="efficient_return", target_return=0.2)  # max is 0.15
    raises("target_volatility", method="efficient_risk", target_volatility=0.1)  # below min
    raises("target_volatility", method="efficient_risk", target_volatility=-1.0)
    raises("risk_free_rate", method="max_sharpe", risk_free_rate=0.2)
    raises("upper", method="risk_parity", upper=0.5)
    raises("lower", method="hrp", lower=0.1)
    raises("expected_returns", method="max_sharpe", expected_returns=None)
    raises("expected_returns", expected_returns=np.array([0.1, np.nan, 0.1]))
    raises("returns", covariance=None, expected_returns=None)
    raises("returns", covariance=None, returns=np.ones((10, 2)))
    raises("returns", covariance=None, returns=np.full((10, 3), np.nan))
    raises("returns", covariance=None, returns=np.random.default_rng(0).normal(size=(2, 3)) / 100)
    raises(
        "covariance_estimator",
        covariance=None,
        returns=np.eye(4, 3) / 100,
        covariance_estimator="shrunk",
    )
    raises("periods_per_year", periods_per_year=0)


def test_result_is_read_only_and_keyed_by_asset() -> None:
    result = hand("min_variance")
    assert set(result.weights_by_asset()) == set(HAND)
    with pytest.raises(ValueError):
        result.weights[0] = 1.0

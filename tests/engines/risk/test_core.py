"""Risk core against closed forms, numpy, scipy, arch and MathWorks' documented varbacktest figures.

References used (none of the expected numbers below were produced by the code under test):
closed forms (scipy.stats), ``numpy.percentile``, ``arch`` 8 (``EWMAVariance``, ``StudentsT``,
its FHS recipe), scipy's G-tests (``power_divergence``, ``chi2_contingency``), scipy's geometric
distribution, JAX autodiff, numerical integration (``scipy.integrate.quad``), the Basel
Committee's 1996 backtesting table, and MATLAB's ``varbacktest`` example (1,043 days, 57
failures at 95 %). ``arch`` has no VaR backtests (no Kupiec, Christoffersen or traffic light).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arch.univariate import EWMAVariance, Normal, StudentsT, ZeroMean
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate, stats

from engines.marketdata.daily import DailyBars, read_daily_bars
from engines.risk import core
from engines.risk.core import RiskInputError, VarMethod

LEVELS = (0.95, 0.975, 0.99)
#: One path count for every Monte Carlo test: one compile per distribution.
N_PATHS = 100_000


@pytest.fixture(scope="module")
def book() -> tuple[np.ndarray, np.ndarray]:
    """Five assets, 1,500 days of fat-tailed correlated returns, a long/short book."""
    rng = np.random.default_rng(7)
    mix = np.array(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.6, 0.8, 0.0, 0.0, 0.0],
            [0.3, 0.2, 0.9, 0.0, 0.0],
            [0.5, -0.1, 0.1, 0.8, 0.0],
            [0.1, 0.1, 0.1, 0.1, 0.9],
        ]
    )
    r = 0.01 * rng.standard_t(6, size=(1500, 5)) @ mix.T
    w = np.array([1_000_000.0, -250_000.0, 400_000.0, 300_000.0, 150_000.0])
    return w, r


# ------------------------------------------------------------------------- closed forms


def test_normal_quantile_and_es_factor_match_published_constants() -> None:
    var99, _ = core.normal_var_es(0.0, 1.0, 0.99)
    _, es975 = core.normal_var_es(0.0, 1.0, 0.975)
    assert round(var99, 6) == 2.326348
    assert round(es975, 6) == 2.337803


@pytest.mark.parametrize("level", LEVELS)
def test_normal_var_es_equal_closed_forms(level: float) -> None:
    mu, sd = 1234.5, 98_765.4
    var, es = core.normal_var_es(mu, sd, level)
    z = stats.norm.ppf(level)
    assert var == pytest.approx(-mu + sd * z, rel=1e-10, abs=0)
    assert es == pytest.approx(-mu + sd * stats.norm.pdf(z) / (1 - level), rel=1e-10, abs=0)


def test_portfolio_normal_var_is_closed_form_on_ewma_covariance(
    book: tuple[np.ndarray, np.ndarray],
) -> None:
    w, r = book
    sd = math.sqrt(w @ core.ewma_covariance(r) @ w)
    got = core.portfolio_risk(w, r, methods=[VarMethod.NORMAL])
    for est in got:
        z = stats.norm.ppf(est.level)
        assert est.var == pytest.approx(sd * z, rel=1e-10, abs=0)
        assert est.es == pytest.approx(sd * stats.norm.pdf(z) / (1 - est.level), rel=1e-10, abs=0)


# ------------------------------------------------------------------------- historical


finite_pnl = hnp.arrays(
    np.float64,
    st.integers(1, 400),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(pnl=finite_pnl, level=st.sampled_from((*LEVELS, 0.5, 0.999)))
def test_historical_var_is_numpy_percentile_default(pnl: np.ndarray, level: float) -> None:
    var, es = core.historical_var_es(pnl, level)
    expected = -np.percentile(pnl, 100 * (1 - level))
    assert var == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert es >= var - 1e-9 * max(1.0, abs(var))  # ES is never below VaR under these rules


@pytest.mark.parametrize(("n", "level"), [(1000, 0.99), (1000, 0.975), (400, 0.95)])
def test_historical_es_is_mean_of_k_largest_losses_when_k_is_whole(n: int, level: float) -> None:
    pnl = np.random.default_rng(n).standard_normal(n)
    k = round(n * (1 - level))
    _, es = core.historical_var_es(pnl, level)
    assert es == pytest.approx(np.mean(np.sort(-pnl)[::-1][:k]), rel=1e-12)


def test_portfolio_historical_uses_pnl_history(book: tuple[np.ndarray, np.ndarray]) -> None:
    w, r = book
    for est in core.portfolio_risk(w, r, methods=[VarMethod.HISTORICAL]):
        assert est.var == pytest.approx(-np.percentile(r @ w, 100 * (1 - est.level)), rel=1e-12)


# ------------------------------------------------------------------------- EWMA vs arch


def _arch_ewma(y: np.ndarray) -> tuple[np.ndarray, float]:
    res = ZeroMean(y, volatility=EWMAVariance(0.94), distribution=Normal()).fix([])
    forecast = float(res.forecast(horizon=1, reindex=False).variance.iloc[-1, 0])
    return np.asarray(res.conditional_volatility) ** 2, forecast


def test_ewma_variance_equals_arch(book: tuple[np.ndarray, np.ndarray]) -> None:
    w, r = book
    pnl = r @ w / 1e6
    path = core.ewma_variance_path(pnl)
    arch_path, arch_forecast = _arch_ewma(pnl)
    np.testing.assert_allclose(path[:-1], arch_path, rtol=1e-12)
    assert path[-1] == pytest.approx(arch_forecast, rel=1e-12)


def test_ewma_covariance_is_consistent_with_the_portfolio_recursion(
    book: tuple[np.ndarray, np.ndarray],
) -> None:
    """wᵀΣ_T w equals the univariate EWMA of the P&L (the recursion is linear in r rᵀ)."""
    w, r = book
    cov = core.ewma_covariance(r)
    assert w @ cov @ w == pytest.approx(core.ewma_variance_path(r @ w)[-1], rel=1e-12)
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=0)


# ------------------------------------------------------------------------- Student-t


@pytest.mark.parametrize("nu", [2.5, 4.0, 7.3, 30.0])
@pytest.mark.parametrize("level", LEVELS)
def test_student_t_factors_match_arch_ppf_and_tail_integral(nu: float, level: float) -> None:
    fv, fe = core.student_t_factors(nu, level)
    assert fv == pytest.approx(-StudentsT().ppf(1 - level, np.array([nu])), rel=1e-10)
    tail, _ = integrate.quad(
        lambda u: -StudentsT().ppf(u, np.array([nu])), 0, 1 - level, limit=200, epsabs=1e-13
    )
    assert fe == pytest.approx(tail / (1 - level), rel=1e-7)


def test_standardized_t_loglik_matches_arch_and_fit_is_a_maximum() -> None:
    z = stats.t.rvs(5, size=4000, random_state=3) / math.sqrt(5 / 3)
    for nu in (3.0, 5.0, 12.0):
        ref = StudentsT().loglikelihood(np.array([nu]), z, np.ones_like(z))
        assert core.standardized_t_loglik(z, nu) == pytest.approx(ref, rel=1e-12)
    nu_hat = core.fit_student_t_nu(z)
    best = core.standardized_t_loglik(z, nu_hat)
    for other in (nu_hat * 0.97, nu_hat * 1.03):
        assert StudentsT().loglikelihood(np.array([other]), z, np.ones_like(z)) < best
    assert 4.0 < nu_hat < 6.5


# ------------------------------------------------------------------------- Cornish–Fisher


@pytest.mark.parametrize("level", LEVELS)
def test_cornish_fisher_reduces_to_normal_without_skew_or_kurtosis(level: float) -> None:
    assert core.cornish_fisher_var_es(0.1, 2.0, 0.0, 0.0, level) == pytest.approx(
        core.normal_var_es(0.1, 2.0, level), rel=1e-12
    )


@pytest.mark.parametrize(("skew", "kurt"), [(-0.8, 3.0), (0.4, 1.2), (-0.2, 6.0)])
@pytest.mark.parametrize("level", LEVELS)
def test_cornish_fisher_es_is_the_tail_mean_of_the_expanded_quantile(
    skew: float, kurt: float, level: float
) -> None:
    def zcf(u: float) -> float:
        z = stats.norm.ppf(u)
        return float(
            z
            + (z**2 - 1) * skew / 6
            + (z**3 - 3 * z) * kurt / 24
            - (2 * z**3 - 5 * z) * skew**2 / 36
        )

    mu, sd = 0.0003, 0.012
    var, es = core.cornish_fisher_var_es(mu, sd, skew, kurt, level)
    assert var == pytest.approx(-mu - sd * zcf(1 - level), rel=1e-12)
    tail, _ = integrate.quad(zcf, 0, 1 - level, limit=200, epsabs=1e-13)
    assert es == pytest.approx(-mu - sd * tail / (1 - level), rel=1e-8)


# ------------------------------------------------------------------------- FHS vs arch's recipe


def test_filtered_historical_simulation_matches_arch_recipe(
    book: tuple[np.ndarray, np.ndarray],
) -> None:
    """arch's documentation ("Value-at-Risk Forecasting", filtered historical simulation):
    standardized residuals of the volatility model, their empirical quantile, scaled by the
    one-step variance forecast."""
    w, r = book
    pnl = r @ w
    res = ZeroMean(pnl, volatility=EWMAVariance(0.94), distribution=Normal()).fix([])
    std_resid = pnl / np.asarray(res.conditional_volatility)
    sd_next = math.sqrt(float(res.forecast(horizon=1, reindex=False).variance.iloc[-1, 0]))
    for est in core.portfolio_risk(w, r, methods=[VarMethod.FILTERED_HISTORICAL]):
        q = np.percentile(std_resid, 100 * (1 - est.level))
        assert est.var == pytest.approx(-sd_next * q, rel=1e-10)
        assert est.es >= est.var


# ------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize(
    "nu",
    [None, pytest.param(5.0, marks=pytest.mark.slow)],  # the t sampler compiles for ~3 s
)
def test_monte_carlo_converges_to_parametric_within_three_standard_errors(
    book: tuple[np.ndarray, np.ndarray], nu: float | None
) -> None:
    w, r = book
    cov = core.ewma_covariance(r)
    sd = math.sqrt(w @ cov @ w)
    got = core.monte_carlo_var_es(
        w, cov, LEVELS, key=jax.random.key(20240808), n_paths=N_PATHS, nu=nu
    )
    for est in got:
        if nu is None:
            var, es = core.normal_var_es(0.0, sd, est.level)
        else:
            var, es = core.student_t_var_es(0.0, sd, nu, est.level)
        assert est.std_error is not None
        assert abs(est.var - var) < 3 * est.std_error
        assert est.es == pytest.approx(es, rel=0.02)


def test_monte_carlo_is_reproducible_from_its_key(book: tuple[np.ndarray, np.ndarray]) -> None:
    w, r = book
    cov = core.ewma_covariance(r)
    a = core.monte_carlo_var_es(w, cov, [0.99], key=jax.random.key(1), n_paths=N_PATHS)
    b = core.monte_carlo_var_es(w, cov, [0.99], key=jax.random.key(1), n_paths=N_PATHS)
    c = core.monte_carlo_var_es(w, cov, [0.99], key=jax.random.key(2), n_paths=N_PATHS)
    assert a == b
    assert a[0].var != c[0].var


@pytest.mark.slow
def test_portfolio_risk_runs_every_method_and_level(book: tuple[np.ndarray, np.ndarray]) -> None:
    w, r = book
    got = core.portfolio_risk(w, r, key=jax.random.key(0), n_paths=N_PATHS)
    assert {(e.method, e.level) for e in got} == {(m, a) for m in VarMethod for a in LEVELS}
    for e in got:
        assert 0 < e.var < e.es, e
        assert (e.std_error is not None) == e.method.value.startswith("monte_carlo")


# ------------------------------------------------------------------------- Euler


@pytest.mark.parametrize("nu", [None, 6.0])
@pytest.mark.parametrize("level", LEVELS)
def test_euler_components_sum_to_total_and_marginals_are_gradients(
    book: tuple[np.ndarray, np.ndarray], nu: float | None, level: float
) -> None:
    w, r = book
    cov = core.ewma_covariance(r)
    eu = core.euler_contributions(w, cov, level, nu=nu)
    assert eu.component_var.sum() == pytest.approx(eu.var, rel=1e-12)
    assert eu.component_es.sum() == pytest.approx(eu.es, rel=1e-12)
    fv, fe = (
        core.normal_var_es(0.0, 1.0, level) if nu is None else core.student_t_factors(nu, level)
    )
    cj = jnp.asarray(cov)

    def sd(x: jax.Array) -> jax.Array:
        return jnp.sqrt(x @ cj @ x)

    grad = np.asarray(jax.grad(sd)(jnp.asarray(w)))
    np.testing.assert_allclose(eu.marginal_var, fv * grad, rtol=1e-10)
    np.testing.assert_allclose(eu.marginal_es, fe * grad, rtol=1e-10)
    assert eu.var == pytest.approx(fv * math.sqrt(w @ cov @ w), rel=1e-12)


# ------------------------------------------------------------------------- stress


def _dates_returns(spy: DailyBars) -> tuple[np.ndarray, np.ndarray]:
    return spy.date[1:], (spy.close[1:] / spy.close[:-1] - 1.0)[:, None]


def test_stress_window_equals_price_ratio_over_the_window(spy: DailyBars) -> None:
    """Replaying the window's returns on a SPY position is the price ratio across the window."""
    dates, r = _dates_returns(spy)
    for window in core.DEFAULT_WINDOWS:
        got = core.stress_window(np.array([1e6]), dates, r, window)
        first = int(np.searchsorted(spy.date, window.start))
        last = int(np.searchsorted(spy.date, window.end, side="right")) - 1
        ratio = spy.close[last] / spy.close[first - 1] - 1.0
        assert got.pnl == pytest.approx(1e6 * ratio, rel=1e-10)
        assert got.days == last - first + 1
        assert got.trough_pnl <= min(got.pnl, 0.0)
        daily = 1e6 * (spy.close[first : last + 1] / spy.close[first - 1] - 1.0)
        worst = int(np.argmin(np.diff(np.concatenate([[0.0], daily]))))
        assert got.worst_day == spy.date[first + worst]
        assert got.pnl < 0  # both windows lost money for SPY holders


def test_stress_flags_assets_without_history_in_the_window() -> None:
    dates = np.arange(np.datetime64("2008-09-10"), np.datetime64("2008-09-20"))
    r = np.full((dates.size, 2), np.nan)
    r[:, 0] = -0.01
    got = core.stress_window(np.array([100.0, 50.0]), dates, r, core.LEHMAN_2008)
    assert got.uncovered == (1,)
    assert got.pnl == pytest.approx(100.0 * (0.99**got.days - 1.0), rel=1e-12)


def test_uniform_shock() -> None:
    got = core.stress_shock(np.array([100.0, -40.0, 10.0]), core.SHOCK_DOWN_10)
    assert got.pnl == pytest.approx(-7.0, rel=1e-12)
    np.testing.assert_allclose(got.asset_pnl, [-10.0, 4.0, -1.0])


def test_stress_scenarios_default_set(spy: DailyBars) -> None:
    dates, r = _dates_returns(spy)
    names = [s.scenario for s in core.stress_scenarios(np.array([1.0]), dates, r)]
    assert names == [core.LEHMAN_2008.name, core.COVID_2020_03.name, core.SHOCK_DOWN_10.name]


# ------------------------------------------------------------------------- backtests


def test_matlab_varbacktest_example() -> None:
    """MathWorks, ``varbacktest`` documentation example (EquityIndex, Normal95): 1,043 days,
    57 failures at 95 % → TL green, Probability 0.77913, TypeI 0.26396, LRatioPOF 0.4615."""
    tl = core.traffic_light(57, 1043, 0.95)
    assert tl.zone is core.TrafficLightZone.GREEN
    assert round(tl.probability, 5) == 0.77913
    assert round(tl.type_i, 5) == 0.26396
    pof = core.kupiec_pof(57, 1043, 0.95)
    assert round(pof.statistic, 4) == 0.4615
    assert not pof.rejected(0.05)


def test_basel_traffic_light_table() -> None:
    """Basel Committee (1996), Table 2: 250 days at 99 %; cumulative probabilities in percent."""
    published = [8.11, 28.58, 54.32, 75.81, 89.22, 95.88, 98.63, 99.60, 99.89, 99.97, 99.99]
    zones = ["green"] * 5 + ["yellow"] * 5 + ["red"]
    for x, (prob, zone) in enumerate(zip(published, zones, strict=True)):
        tl = core.traffic_light(x, 250, 0.99)
        assert round(100 * tl.probability, 2) == prob
        assert tl.zone.value == zone


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 3000), frac=st.floats(0, 1), level=st.sampled_from(LEVELS))
def test_kupiec_pof_is_the_g_test_of_the_failure_rate(n: int, frac: float, level: float) -> None:
    x = round(frac * n)
    p = 1 - level
    ref = stats.power_divergence([n - x, x], f_exp=[n * (1 - p), n * p], lambda_="log-likelihood")
    got = core.kupiec_pof(x, n, level)
    assert got.statistic == pytest.approx(max(ref.statistic, 0.0), rel=1e-9, abs=1e-9)
    assert got.p_value == pytest.approx(stats.chi2.sf(got.statistic, 1), rel=1e-12)


@pytest.mark.parametrize("first", [1, 2, 7, 20, 58, 400])
@pytest.mark.parametrize("level", LEVELS)
def test_kupiec_tuff_is_the_geometric_likelihood_ratio(first: int, level: float) -> None:
    p = 1 - level
    ref = -2 * (stats.geom.logpmf(first, p) - stats.geom.logpmf(first, 1 / first))
    assert core.kupiec_tuff(first, 1000, level).statistic == pytest.approx(ref, rel=1e-10)


hit_series = hnp.arrays(np.bool_, st.integers(2, 600), elements=st.booleans())


@settings(max_examples=200, deadline=None)
@given(hits=hit_series)
def test_christoffersen_independence_is_the_g_test_of_the_transition_table(
    hits: np.ndarray,
) -> None:
    h = hits.astype(int)
    table = np.zeros((2, 2))
    np.add.at(table, (h[:-1], h[1:]), 1)
    got = core.christoffersen_ind(hits)
    if np.all(table.sum(axis=0) > 0) and np.all(table.sum(axis=1) > 0):
        g, _, _, _ = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
        assert got.statistic == pytest.approx(g, rel=1e-9, abs=1e-9)
    else:  # one state never seen (or never left): no evidence against independence
        assert got.statistic == pytest.approx(0.0, abs=1e-12)
    cc = core.christoffersen_cc(hits, 0.95)
    pof = core.kupiec_pof(int(hits.sum()), hits.size, 0.95)
    assert cc.statistic == pytest.approx(pof.statistic + got.statistic, rel=1e-12, abs=1e-12)
    assert cc.p_value == pytest.approx(stats.chi2.sf(cc.statistic, 2), rel=1e-12)


def test_backtest_report_collects_the_tests() -> None:
    hits = np.zeros(500, dtype=bool)
    hits[[30, 31, 200, 201, 202, 450]] = True
    rep = core.backtest(hits, 0.99)
    assert (rep.observations, rep.failures) == (500, 6)
    assert rep.expected == pytest.approx(5.0)
    assert rep.tuff == core.kupiec_tuff(31, 500, 0.99)
    assert rep.cci.rejected()  # clustered failures
    assert not rep.passes()


# ------------------------------------------------------------------------- rolling VaR


@pytest.mark.parametrize("method", core.ROLLING_METHODS)
def test_rolling_var_uses_only_the_past(method: VarMethod) -> None:
    r = 0.01 * np.random.default_rng(11).standard_t(5, size=700)
    base = core.rolling_var(r, method, 0.99, window=250, refit_every=50)
    bumped = r.copy()
    bumped[500:] *= 3.0
    again = core.rolling_var(bumped, method, 0.99, window=250, refit_every=50)
    assert np.all(np.isnan(base[:250]))
    assert np.all(np.isfinite(base[250:]))
    np.testing.assert_array_equal(base[:501], again[:501])  # VaR_t sees days < t only
    assert not np.array_equal(base[501:], again[501:])


def test_rolling_historical_and_normal_match_their_definitions() -> None:
    r = 0.01 * np.random.default_rng(5).standard_normal(400)
    hist = core.rolling_var(r, VarMethod.HISTORICAL, 0.95, window=100)
    norm = core.rolling_var(r, VarMethod.NORMAL, 0.95, window=100)
    arch_var, _ = _arch_ewma(r)
    for t in (100, 250, 399):
        assert hist[t] == pytest.approx(-np.percentile(r[t - 100 : t], 5), rel=1e-12)
        assert norm[t] == pytest.approx(stats.norm.ppf(0.95) * math.sqrt(arch_var[t]), rel=1e-12)


@pytest.mark.slow
def test_spy_backtest_table_structure(spy_returns: np.ndarray) -> None:
    """The goal beyond the anchors: every method at 95/99 % on SPY 1998–2021 (figures in the
    report; this checks the table is complete and self-consistent, not who passes)."""
    rows = core.var_backtest_table(spy_returns, levels=(0.95, 0.99), window=250)
    assert [(row.method, row.report.level) for row in rows] == [
        (m, a) for m in core.ROLLING_METHODS for a in (0.95, 0.99)
    ]
    for row in rows:
        rep = row.report
        assert rep.observations == spy_returns.size - 250
        assert 0 < rep.failures < rep.observations
        assert rep.expected == pytest.approx(rep.observations * (1 - rep.level))
        assert row.passes == (
            rep.pof.p_value >= 0.05 and rep.cci.p_value >= 0.05 and rep.cc.p_value >= 0.05
        )


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: core.historical_var_es([1.0, 2.0], 1.0), "level"),
        (lambda: core.historical_var_es([1.0, np.nan], 0.99), "pnl"),
        (lambda: core.student_t_factors(2.0, 0.99), "nu"),
        (lambda: core.ewma_variance_path([0.01, 0.02], lam=1.0), "lam"),
        (lambda: core.portfolio_risk([1.0, 2.0], np.zeros((10, 3))), "returns"),
        (lambda: core.portfolio_risk([np.inf], np.zeros((10, 1))), "positions"),
        (
            lambda: core.portfolio_risk(
                [1.0], np.full((10, 1), 0.01), methods=[VarMethod.MONTE_CARLO_NORMAL]
            ),
            "key",
        ),
        (
            lambda: core.monte_carlo_var_es(
                [1.0, 1.0], np.ones((2, 2)), [0.99], key=jax.random.key(0)
            ),
            "cov",
        ),
        (lambda: core.kupiec_pof(11, 10, 0.99), "failures"),
        (lambda: core.kupiec_tuff(0, 10, 0.99), "first_failure"),
        (lambda: core.christoffersen_ind([0, 2, 1]), "hits"),
        (lambda: core.rolling_var(np.zeros(100), "historical", 0.99, window=50), "window"),
        (lambda: core.rolling_var(np.zeros(300), "monte_carlo_t", 0.99), "method"),
        (lambda: core.var_failures([0.1, 0.2], [0.1]), "var"),
        (lambda: core.stress_shock([1.0], core.UniformShock("x", -1.5)), "shock"),
        (
            lambda: core.stress_window(
                [1.0], np.array(["2001-01-02"], "datetime64[D]"), [[0.0]], core.LEHMAN_2008
            ),
            "window",
        ),
    ],
)
def test_bad_input_names_the_parameter(call: object, parameter: str) -> None:
    with pytest.raises(RiskInputError) as info:
        call()  # type: ignore[operator]
    assert info.value.parameter == parameter
    assert isinstance(info.value, ValueError)


def _window_ratio(bars: DailyBars, window: core.StressWindow) -> float:
    """Buy-and-hold return across ``window``: last close inside over the close before it."""
    first = int(np.searchsorted(bars.date, window.start))
    last = int(np.searchsorted(bars.date, window.end, side="right")) - 1
    return float(bars.close[last] / bars.close[first - 1] - 1.0)


def test_stress_matrix_aligns_histories_and_replays_each_assets_price_ratio(
    spy: DailyBars,
) -> None:
    aig = read_daily_bars("AIG", adjustment="total")
    series = [(b.date[1:], b.close[1:] / b.close[:-1] - 1.0) for b in (spy, aig)]
    dates, r = core.stress_matrix([series[0], None, series[1]])
    assert r.shape == (dates.size, 3) and np.all(np.isnan(r[:, 1]))
    for j, (d, x) in zip((0, 2), series, strict=True):
        at = np.searchsorted(d, dates)
        np.testing.assert_array_equal(r[:, j], x[at])  # every date of the windows, both traded
    w = np.array([1e6, 3e5, -5e5])
    for window in core.DEFAULT_WINDOWS:
        got = core.stress_window(w, dates, r, window)
        want = 1e6 * _window_ratio(spy, window) - 5e5 * _window_ratio(aig, window)
        assert got.pnl == pytest.approx(want, rel=1e-10)
        assert got.uncovered == (1,)  # held, no history: 0 and flagged


def test_daily_pnl_and_var_pairs_consecutive_equity_days_with_a_var() -> None:
    equity = [(3, 95.0), (1, 100.0), (2, 90.0), (5, 80.0)]
    var = [(1, 5.0), (3, 20.0), (5, 1.0)]
    pnl, forecast = core.daily_pnl_and_var(equity, var)
    # (1→2): −10 against 5, a failure; (2→3) has no VaR on day 2; (3→5): −15 against 20
    np.testing.assert_array_equal(pnl, [-10.0, -15.0])
    np.testing.assert_array_equal(forecast, [5.0, 20.0])
    np.testing.assert_array_equal(core.var_failures(pnl, forecast), [True, False])
    empty, _ = core.daily_pnl_and_var([(1, 100.0)], var)
    assert empty.size == 0

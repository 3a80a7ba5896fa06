"""Portfolio risk, pure: VaR and ES by seven methods, Euler contributions, stress, VaR backtests.

Conventions (every function below):

* ``positions`` are the money amounts held per asset (currency, signed: short < 0); ``returns``
  are *simple* daily returns, rows = days (oldest first), columns = assets. The portfolio P&L of
  a day is ``positions · r`` (linear, delta-one positions).
* ``level`` is the confidence level α (0.95, 0.975, 0.99). VaR and ES are reported as positive
  *losses* (a loss of 3 % on 1,000,000 is VaR = 30,000).
* Historical quantile rule: VaR_α = −Q(P&L, 1 − α) with Q the linear-interpolation sample
  quantile (Hyndman & Fan 1996, definition 7), which is ``numpy.percentile``'s default
  (``method="linear"``). Historical ES is the Acerbi & Tasche (2002, "On the coherence of expected
  shortfall", J. Banking & Finance 26(7), eq. (3.3)) estimator: the mean of the k = n(1 − α)
  largest losses, the last one weighted by the fractional part of k.
* EWMA covariance (RiskMetrics Technical Document, 4th ed. 1996, §5.2.1, λ = 0.94, zero mean):
  ``Σ_t = λ Σ_{t−1} + (1 − λ) r_{t−1} r_{t−1}ᵀ``; ``Σ_0`` is the 0.94-weighted mean of
  ``r rᵀ`` over the first min(75, T) days, the backcast ``arch`` uses for its ``EWMAVariance``
  (``arch.univariate.volatility.VolatilityProcess.backcast``), so a one-asset EWMA variance here
  equals ``arch``'s. The forecast for the day after the history is ``Σ_T``.
* Randomness is injected: Monte Carlo takes a JAX key; nothing here reads a clock.

Methods (``VarMethod``): historical; parametric normal and Student-t on the EWMA covariance;
Cornish–Fisher; filtered historical simulation; Monte Carlo normal and t (JAX, Cholesky).
Backtests: Kupiec (1995) POF and TUFF, Christoffersen (1998) independence and conditional
coverage, Basel (1996) traffic light, on a rolling one-day VaR series of a return history or
on an account's own day-end equity against the VaR it was given (``daily_pnl_and_var``).
Stress: historical windows replayed on today's positions (``stress_matrix`` aligns the
assets' histories) and uniform shocks.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]

#: RiskMetrics decay for daily data (RiskMetrics Technical Document 1996, §5.3.2, table 5.9).
RISKMETRICS_LAMBDA = 0.94
#: The levels the platform publishes.
DEFAULT_LEVELS = (0.95, 0.975, 0.99)
#: Days of the backcast window (``arch``'s ``VolatilityProcess.backcast``: τ = min(75, T)).
BACKCAST_DAYS = 75
#: Basel traffic-light boundaries on the cumulative binomial probability (Basel Committee 1996,
#: "Supervisory framework for the use of backtesting", §III: yellow from 95 %, red from 99.99 %).
BASEL_YELLOW = 0.95
BASEL_RED = 0.9999
#: Bounds of the Student-t degrees-of-freedom fit (ν > 2 for a finite variance).
NU_BOUNDS = (2.05, 500.0)


class RiskInputError(ValueError):
    """Bad input to a risk computation; ``parameter`` names the argument at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class VarMethod(StrEnum):
    HISTORICAL = "historical"
    NORMAL = "normal"
    STUDENT_T = "student_t"
    CORNISH_FISHER = "cornish_fisher"
    FILTERED_HISTORICAL = "filtered_historical"
    MONTE_CARLO_NORMAL = "monte_carlo_normal"
    MONTE_CARLO_T = "monte_carlo_t"


#: Methods the rolling backtest runs (Monte Carlo converges to the parametric ones; re-simulating
#: 100k paths per day of 23 years tests the random numbers, not the model).
ROLLING_METHODS = (
    VarMethod.HISTORICAL,
    VarMethod.NORMAL,
    VarMethod.STUDENT_T,
    VarMethod.CORNISH_FISHER,
    VarMethod.FILTERED_HISTORICAL,
)


@dataclass(frozen=True, slots=True)
class RiskEstimate:
    """One VaR/ES figure. ``std_error`` is the Monte Carlo standard error of the VaR, else None."""

    method: VarMethod
    level: float
    var: float
    es: float
    std_error: float | None = None


# --------------------------------------------------------------------------------------------
# Validation


def _level(level: float) -> float:
    if not (isinstance(level, int | float) and 0.5 <= float(level) < 1.0):
        raise RiskInputError("level", f"confidence level must be in [0.5, 1), got {level!r}")
    return float(level)


def _lam(lam: float) -> float:
    if not (isinstance(lam, int | float) and 0.0 < float(lam) < 1.0):
        raise RiskInputError("lam", f"EWMA decay must be in (0, 1), got {lam!r}")
    return float(lam)


def _nu(nu: float) -> float:
    if not (isinstance(nu, int | float) and math.isfinite(nu) and nu > 2.0):
        raise RiskInputError("nu", f"degrees of freedom must be finite and > 2, got {nu!r}")
    return float(nu)


def _method(method: VarMethod | str) -> VarMethod:
    try:
        return VarMethod(method)
    except ValueError:
        known = ", ".join(m.value for m in VarMethod)
        raise RiskInputError("method", f"unknown method {method!r} (one of {known})") from None


def _series(x: npt.ArrayLike, name: str, min_len: int = 1) -> F64:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < min_len:
        raise RiskInputError(name, f"need a 1-D series of at least {min_len} values")
    if not np.all(np.isfinite(a)):
        raise RiskInputError(name, "values must be finite")
    return a


def _portfolio(
    positions: npt.ArrayLike, returns: npt.ArrayLike, min_days: int = 2
) -> tuple[F64, F64]:
    w = np.asarray(positions, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] == 0 or not np.all(np.isfinite(w)):
        raise RiskInputError("positions", "need a non-empty 1-D vector of finite amounts")
    if r.ndim != 2 or r.shape[1] != w.shape[0]:
        raise RiskInputError("returns", f"need a (days, {w.shape[0]}) matrix, got shape {r.shape}")
    if r.shape[0] < min_days:
        raise RiskInputError("returns", f"need at least {min_days} days, got {r.shape[0]}")
    if not np.all(np.isfinite(r)):
        raise RiskInputError("returns", "values must be finite (align dates before)")
    return w, r


# --------------------------------------------------------------------------------------------
# Distribution pieces (closed forms)


def sample_quantile(x: npt.ArrayLike, p: float) -> float:
    """Linear-interpolation sample quantile (Hyndman & Fan 1996, definition 7).

    ``h = (n − 1) p``; ``Q = x_(⌊h⌋) + (h − ⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋))`` on the sorted sample. This
    is ``numpy.percentile(x, 100 p)`` with its default method, written out so the rule is ours.
    """
    s = np.sort(_series(x, "x"))
    return float(_quantile_sorted(s[np.newaxis, :], p)[0])


def _quantile_sorted(s: F64, p: float) -> F64:
    """Definition-7 quantile of each row of an already sorted (rows, n) array."""
    n = s.shape[1]
    h = (n - 1) * p
    lo = min(math.floor(h), n - 1)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    out: F64 = s[:, lo] + frac * (s[:, hi] - s[:, lo])
    return out


def _tail_mean_sorted(losses_desc: F64, tail: float) -> F64:
    """Acerbi–Tasche ES of each row of losses sorted largest first (eq. 3.3 of their 2002 paper).

    ``ES = (Σ_{i<⌊k⌋} L_(i) + (k − ⌊k⌋) L_(⌊k⌋)) / k`` with ``k = n·(1 − α)``.
    """
    n = losses_desc.shape[1]
    k = n * tail
    whole = min(math.floor(k), n)
    frac = k - whole
    total = losses_desc[:, :whole].sum(axis=1)
    if frac > 0.0 and whole < n:
        total = total + frac * losses_desc[:, whole]
    out: F64 = total / k
    return out


def historical_var_es(pnl: npt.ArrayLike, level: float) -> tuple[float, float]:
    """VaR (definition-7 quantile of the P&L at 1 − α, negated) and Acerbi–Tasche ES."""
    a = _level(level)
    p = np.sort(_series(pnl, "pnl"))
    var = -float(_quantile_sorted(p[np.newaxis, :], 1.0 - a)[0])
    es = float(_tail_mean_sorted(-p[np.newaxis, :], 1.0 - a)[0])
    return var, es


def normal_var_es(mean: float, std: float, level: float) -> tuple[float, float]:
    """Normal P&L: VaR = −μ + σ z_α, ES = −μ + σ φ(z_α)/(1 − α) (Jorion 2007, Value at Risk,
    3rd ed., §5.2; McNeil, Frey & Embrechts 2005, QRM, Example 2.18)."""
    a = _level(level)
    z = float(stats.norm.ppf(a))
    return -mean + std * z, -mean + std * float(stats.norm.pdf(z)) / (1.0 - a)


def student_t_factors(nu: float, level: float) -> tuple[float, float]:
    """VaR and ES multipliers of a Student-t scaled to unit variance.

    With q = t_ν⁻¹(α): VaR factor ``√((ν−2)/ν) q``; ES factor
    ``√((ν−2)/ν) · f_ν(q)/(1−α) · (ν + q²)/(ν − 1)`` (McNeil, Frey & Embrechts 2005, QRM,
    Example 2.19). The unit-variance scaling makes σ the P&L's standard deviation, as in
    ``arch.univariate.StudentsT``.
    """
    a, v = _level(level), _nu(nu)
    q = float(stats.t.ppf(a, v))
    scale = math.sqrt((v - 2.0) / v)
    es = float(stats.t.pdf(q, v)) / (1.0 - a) * (v + q * q) / (v - 1.0)
    return scale * q, scale * es


def student_t_var_es(mean: float, std: float, nu: float, level: float) -> tuple[float, float]:
    """Student-t P&L with standard deviation ``std``: −μ + σ × the unit-variance factors."""
    fv, fe = student_t_factors(nu, level)
    return -mean + std * fv, -mean + std * fe


def standardized_t_loglik(z: npt.ArrayLike, nu: float) -> float:
    """Log-likelihood of a unit-variance Student-t (Bollerslev 1987, eq. 2; ``arch``'s
    ``StudentsT.loglikelihood`` with σ² = 1)."""
    x = _series(z, "z")
    v = _nu(nu)
    c = special.gammaln((v + 1) / 2) - special.gammaln(v / 2) - 0.5 * math.log(math.pi * (v - 2))
    return float(x.size * c - (v + 1) / 2 * np.sum(np.log1p(x * x / (v - 2))))


def fit_student_t_nu(z: npt.ArrayLike) -> float:
    """Maximum-likelihood ν of a unit-variance Student-t for standardized residuals ``z``.

    Bounded scalar search over ``NU_BOUNDS`` (a sample close to normal ends at the upper bound).
    """
    x = _series(z, "z", min_len=2)
    res = optimize.minimize_scalar(
        lambda v: -standardized_t_loglik(x, v), bounds=NU_BOUNDS, method="bounded"
    )
    return float(res.x)


def cornish_fisher_z(level: float, skew: float, excess_kurtosis: float) -> float:
    """Cornish–Fisher quantile of the P&L's lower tail, in standard deviations (negative).

    ``z_cf = z + (z² − 1)S/6 + (z³ − 3z)K/24 − (2z³ − 5z)S²/36`` at z = Φ⁻¹(1 − α)
    (Zangari 1996, RiskMetrics Monitor Q2; Favre & Galeano 2002, J. Alternative Investments 5(2)).
    """
    z = float(stats.norm.ppf(1.0 - _level(level)))
    s, k = skew, excess_kurtosis
    return z + (z * z - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s * s / 36


def cornish_fisher_var_es(
    mean: float, std: float, skew: float, excess_kurtosis: float, level: float
) -> tuple[float, float]:
    """Modified VaR and ES from the Cornish–Fisher expansion.

    ES is the mean of the expanded quantile over the tail, ``(1/p)∫₀ᵖ z_cf(u) du`` with
    p = 1 − α, integrated in closed form with the normal partial moments
    ``M_k = ∫_{−∞}^{c} x^k φ(x) dx``: M₀ = Φ(c), M₁ = −φ(c), M₂ = Φ(c) − cφ(c),
    M₃ = −(c² + 2)φ(c) (Boudt, Peterson & Croux 2008, "Estimation and decomposition of downside
    risk for portfolios with non-normal returns", J. Risk 11(2), §2).
    """
    a = _level(level)
    p = 1.0 - a
    c = float(stats.norm.ppf(p))
    phi, cdf = float(stats.norm.pdf(c)), p
    m0, m1, m2, m3 = cdf, -phi, cdf - c * phi, -(c * c + 2) * phi
    s, k = skew, excess_kurtosis
    tail_z = (m1 + s / 6 * (m2 - m0) + k / 24 * (m3 - 3 * m1) - s * s / 36 * (2 * m3 - 5 * m1)) / p
    return -mean - std * cornish_fisher_z(a, s, k), -mean - std * tail_z


# --------------------------------------------------------------------------------------------
# EWMA


def _backcast_weights(days: int) -> F64:
    tau = min(BACKCAST_DAYS, days)
    w = RISKMETRICS_LAMBDA ** np.arange(tau, dtype=np.float64)
    out: F64 = w / w.sum()
    return out


def ewma_covariance(returns: npt.ArrayLike, lam: float = RISKMETRICS_LAMBDA) -> F64:
    """RiskMetrics EWMA covariance forecast for the day after ``returns`` (zero mean).

    Unrolled recursion: ``Σ_T = λ^T Σ_0 + (1 − λ) Σ_s λ^{T−1−s} r_s r_sᵀ`` (one weighted
    product instead of T rank-one updates; same numbers).
    """
    lam = _lam(lam)
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or not np.all(np.isfinite(r)):
        raise RiskInputError("returns", "need a finite (days, assets) matrix")
    t = r.shape[0]
    b = _backcast_weights(t)
    head = r[: b.size]
    sigma0 = (head * b[:, None]).T @ head
    w = (1.0 - lam) * lam ** np.arange(t - 1, -1, -1, dtype=np.float64)
    cov = lam**t * sigma0 + (r * w[:, None]).T @ r
    out: F64 = 0.5 * (cov + cov.T)  # exactly symmetric (the products differ in the last bit)
    return out


def ewma_variance_path(x: npt.ArrayLike, lam: float = RISKMETRICS_LAMBDA) -> F64:
    """Ex-ante EWMA variances σ²_0..σ²_T of a series (T + 1 values; the last is the forecast).

    σ²_t only uses x_0..x_{t−1}, except the backcast σ²_0 (first min(75, T) values), as in
    ``arch``'s ``EWMAVariance``.
    """
    lam = _lam(lam)
    a = _series(x, "x")
    b = _backcast_weights(a.size)
    out = np.empty(a.size + 1, dtype=np.float64)
    out[0] = float(np.sum(b * a[: b.size] ** 2))
    sq = (1.0 - lam) * a * a
    for t in range(a.size):
        out[t + 1] = lam * out[t] + sq[t]
    return out


# --------------------------------------------------------------------------------------------
# Monte Carlo (JAX)


@functools.partial(jax.jit, static_argnames=("n_paths", "student"))
def _mc_pnl(
    key: jax.Array,
    chol: jax.Array,
    positions: jax.Array,
    nu: jax.Array,
    n_paths: int,
    student: bool,
) -> jax.Array:
    """P&L of ``n_paths`` draws r = L z (normal) or L z √((ν − 2)/W), W ~ χ²_ν (multivariate t
    with covariance LLᵀ; McNeil, Frey & Embrechts 2005, QRM, §3.2.1 normal mixtures)."""
    k_z, k_w = jax.random.split(key)
    z = jax.random.normal(k_z, (n_paths, chol.shape[0]), dtype=jnp.float64)
    r = z @ chol.T
    if student:
        w = 2.0 * jax.random.gamma(k_w, nu / 2.0, (n_paths,), dtype=jnp.float64)
        r = r * jnp.sqrt((nu - 2.0) / w)[:, None]
    return r @ positions


def monte_carlo_var_es(
    positions: npt.ArrayLike,
    cov: npt.ArrayLike,
    levels: Sequence[float],
    *,
    key: jax.Array,
    n_paths: int = 100_000,
    nu: float | None = None,
) -> list[RiskEstimate]:
    """Monte Carlo VaR/ES of a zero-mean multivariate normal (``nu`` None) or t P&L.

    Draws through the Cholesky factor of ``cov``; VaR/ES of the simulated P&L by the historical
    rules. ``std_error`` is the asymptotic standard error of a sample quantile,
    ``√(p(1−p)/n) / f(−VaR)`` with f the model's P&L density (Glasserman 2004, Monte Carlo
    Methods in Financial Engineering, §9.1.2).
    """
    w = np.asarray(positions, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)):
        raise RiskInputError("positions", "need a 1-D vector of finite amounts")
    if c.shape != (w.size, w.size) or not np.all(np.isfinite(c)):
        raise RiskInputError("cov", f"need a finite ({w.size}, {w.size}) matrix")
    if not isinstance(n_paths, int) or n_paths < 100:
        raise RiskInputError("n_paths", f"need at least 100 paths, got {n_paths!r}")
    try:
        chol = np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        raise RiskInputError("cov", "covariance is not positive definite") from None
    student = nu is not None
    v = _nu(nu) if nu is not None else 0.0
    pnl = np.asarray(
        _mc_pnl(key, jnp.asarray(chol), jnp.asarray(w), jnp.asarray(v), n_paths, student)
    )
    s = np.sort(pnl)[np.newaxis, :]
    sd = math.sqrt(float(w @ c @ w))
    method = VarMethod.MONTE_CARLO_T if student else VarMethod.MONTE_CARLO_NORMAL
    out = []
    for level in levels:
        a = _level(level)
        var = -float(_quantile_sorted(s, 1.0 - a)[0])
        es = float(_tail_mean_sorted(-s, 1.0 - a)[0])
        if student:
            q = float(stats.t.ppf(a, v))
            dens = float(stats.t.pdf(q, v)) / (sd * math.sqrt((v - 2.0) / v))
        else:
            dens = float(stats.norm.pdf(stats.norm.ppf(a))) / sd
        se = math.sqrt(a * (1.0 - a) / n_paths) / dens if sd > 0 else 0.0
        out.append(RiskEstimate(method, a, var, es, se))
    return out


# --------------------------------------------------------------------------------------------
# Portfolio VaR


def portfolio_risk(
    positions: npt.ArrayLike,
    returns: npt.ArrayLike,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    methods: Sequence[VarMethod] = tuple(VarMethod),
    lam: float = RISKMETRICS_LAMBDA,
    nu: float | None = None,
    key: jax.Array | None = None,
    n_paths: int = 100_000,
) -> list[RiskEstimate]:
    """One-day VaR and ES of the portfolio by each method and level.

    * historical: the P&L history ``returns @ positions`` under the stated rules;
    * normal / Student-t: σ² = wᵀ Σ_T w with the EWMA covariance, zero mean (RiskMetrics);
      ν is ``nu`` or fitted by maximum likelihood to the EWMA-standardized P&L;
    * Cornish–Fisher: mean, standard deviation (ddof 1), skewness and excess kurtosis (moment
      estimators) of the P&L history;
    * filtered historical simulation (Barone-Adesi, Giannopoulos & Vosper 1999, "VaR without
      correlations for portfolios of derivative securities", J. Futures Markets 19(5)): P&L
      standardized by its ex-ante EWMA σ_t, the historical VaR/ES of those, times σ_{T};
    * Monte Carlo normal / t: ``monte_carlo_var_es`` on the EWMA covariance (``key`` required).
    """
    w, r = _portfolio(positions, returns)
    lv = [_level(a) for a in levels]
    pnl = r @ w
    cov: F64 | None = None
    sigma2 = ewma_variance_path(pnl, lam)
    sd = math.sqrt(sigma2[-1])
    z = pnl / np.sqrt(sigma2[:-1]) if np.all(sigma2[:-1] > 0) else None
    fitted_nu: float | None = nu
    out: list[RiskEstimate] = []
    for m in methods:
        method = _method(m)
        if method in (VarMethod.MONTE_CARLO_NORMAL, VarMethod.MONTE_CARLO_T):
            if key is None:
                raise RiskInputError("key", "Monte Carlo needs an explicit JAX key")
            if cov is None:
                cov = ewma_covariance(r, lam)
            t_nu = None
            if method is VarMethod.MONTE_CARLO_T:
                fitted_nu = fitted_nu if fitted_nu is not None else _fit_nu(z)
                t_nu = fitted_nu
            out.extend(monte_carlo_var_es(w, cov, lv, key=key, n_paths=n_paths, nu=t_nu))
            continue
        if method is VarMethod.STUDENT_T and fitted_nu is None:
            fitted_nu = _fit_nu(z)
        for a in lv:
            if method is VarMethod.HISTORICAL:
                var, es = historical_var_es(pnl, a)
            elif method is VarMethod.NORMAL:
                var, es = normal_var_es(0.0, sd, a)
            elif method is VarMethod.STUDENT_T:
                assert fitted_nu is not None
                var, es = student_t_var_es(0.0, sd, fitted_nu, a)
            elif method is VarMethod.CORNISH_FISHER:
                var, es = cornish_fisher_var_es(
                    float(pnl.mean()),
                    float(pnl.std(ddof=1)),
                    float(stats.skew(pnl)),
                    float(stats.kurtosis(pnl)),
                    a,
                )
            else:  # FILTERED_HISTORICAL
                if z is None:
                    raise RiskInputError("returns", "EWMA variance is zero: nothing to filter")
                zv, ze = historical_var_es(z, a)
                var, es = sd * zv, sd * ze
            out.append(RiskEstimate(method, a, var, es))
    return out


def _fit_nu(z: F64 | None) -> float:
    if z is None:
        raise RiskInputError("returns", "EWMA variance is zero: cannot fit ν")
    return fit_student_t_nu(z)


@dataclass(frozen=True, slots=True)
class EulerContributions:
    """Euler allocation of a parametric VaR/ES: ``component_*`` sum to ``var``/``es``."""

    level: float
    var: float
    es: float
    marginal_var: F64
    component_var: F64
    marginal_es: F64
    component_es: F64


def euler_contributions(
    positions: npt.ArrayLike,
    cov: npt.ArrayLike,
    level: float,
    *,
    nu: float | None = None,
) -> EulerContributions:
    """Marginal and component VaR/ES of a zero-mean normal (or unit-variance-scaled t) P&L.

    VaR(w) = c·√(wᵀΣw) is homogeneous of degree one, so by Euler's theorem
    VaR = Σ_i w_i ∂VaR/∂w_i with ∂VaR/∂w_i = c (Σw)_i / σ_p (Tasche 1999, "Risk contributions and
    performance measurement", §4; Jorion 2007, Value at Risk, §7.2). The same holds for ES with
    its factor.
    """
    w = np.asarray(positions, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)):
        raise RiskInputError("positions", "need a 1-D vector of finite amounts")
    if c.shape != (w.size, w.size) or not np.all(np.isfinite(c)):
        raise RiskInputError("cov", f"need a finite ({w.size}, {w.size}) matrix")
    a = _level(level)
    if nu is None:
        fv, fe = normal_var_es(0.0, 1.0, a)
    else:
        fv, fe = student_t_factors(nu, a)
    cw = c @ w
    sd = math.sqrt(float(w @ cw))
    if sd <= 0.0:
        raise RiskInputError("positions", "portfolio variance is zero: no contributions")
    grad = cw / sd
    return EulerContributions(
        level=a,
        var=fv * sd,
        es=fe * sd,
        marginal_var=fv * grad,
        component_var=fv * w * grad,
        marginal_es=fe * grad,
        component_es=fe * w * grad,
    )


# --------------------------------------------------------------------------------------------
# Stress


@dataclass(frozen=True, slots=True)
class StressWindow:
    """A historical scenario: the dates ``start``…``end`` (both included) replayed on today's
    positions."""

    name: str
    start: np.datetime64
    end: np.datetime64


@dataclass(frozen=True, slots=True)
class UniformShock:
    """Every asset's price moves by ``shock`` (a simple return) at once."""

    name: str
    shock: float


LEHMAN_2008 = StressWindow(
    "2008-09-15..2008-10-31", np.datetime64("2008-09-15"), np.datetime64("2008-10-31")
)
COVID_2020_03 = StressWindow("2020-03", np.datetime64("2020-03-01"), np.datetime64("2020-03-31"))
SHOCK_DOWN_10 = UniformShock("shock -10%", -0.10)
DEFAULT_WINDOWS = (LEHMAN_2008, COVID_2020_03)
DEFAULT_SHOCKS = (SHOCK_DOWN_10,)


@dataclass(frozen=True, slots=True)
class StressResult:
    """P&L of a scenario. ``pnl`` is the end-of-window P&L of holding today's positions through
    it (no rebalancing); ``trough_pnl`` the lowest cumulative P&L on the way; ``worst_day_*`` the
    worst one-day change. ``uncovered`` lists assets held but without any return in the window
    (not listed then): they contribute 0 and are flagged, not guessed."""

    scenario: str
    pnl: float
    asset_pnl: F64
    trough_pnl: float
    worst_day_pnl: float
    worst_day: np.datetime64 | None
    days: int
    uncovered: tuple[int, ...]


def stress_window(
    positions: npt.ArrayLike,
    dates: npt.ArrayLike,
    returns: npt.ArrayLike,
    window: StressWindow,
) -> StressResult:
    """Replay the simple returns dated inside ``window`` on ``positions`` (buy and hold).

    Asset value path ``v_i(t) = w_i Π_{s≤t}(1 + r_{i,s})``; a NaN return (asset not trading that
    day) counts as 0.
    """
    w = np.asarray(positions, dtype=np.float64)
    d = np.asarray(dates).astype("datetime64[D]")
    r = np.asarray(returns, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)):
        raise RiskInputError("positions", "need a non-empty 1-D vector of finite amounts")
    if d.ndim != 1 or r.shape != (d.size, w.size):
        raise RiskInputError("returns", f"need a ({d.size}, {w.size}) matrix matching dates")
    if np.any(np.isinf(r)):
        raise RiskInputError("returns", "values must be finite or NaN (no data)")
    if window.end < window.start:
        raise RiskInputError("window", f"{window.name}: end before start")
    inside = (d >= window.start.astype("datetime64[D]")) & (d <= window.end.astype("datetime64[D]"))
    if not np.any(inside):
        raise RiskInputError("window", f"{window.name}: no dates of the history inside it")
    rw = r[inside]
    dw = d[inside]
    covered = ~np.all(np.isnan(rw), axis=0)
    uncovered = tuple(int(i) for i in np.flatnonzero(~covered & (w != 0.0)))
    growth = np.cumprod(1.0 + np.nan_to_num(rw, nan=0.0), axis=0)
    value = growth @ w
    path = value - w.sum()
    daily = np.diff(np.concatenate([[w.sum()], value]))
    worst = int(np.argmin(daily))
    return StressResult(
        scenario=window.name,
        pnl=float(path[-1]),
        asset_pnl=w * (growth[-1] - 1.0),
        trough_pnl=float(min(0.0, path.min())),
        worst_day_pnl=float(daily[worst]),
        worst_day=dw[worst],
        days=int(dw.size),
        uncovered=uncovered,
    )


def stress_shock(positions: npt.ArrayLike, shock: UniformShock) -> StressResult:
    """Instant uniform price move: P&L = shock × Σ w_i."""
    w = np.asarray(positions, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)):
        raise RiskInputError("positions", "need a non-empty 1-D vector of finite amounts")
    if not (math.isfinite(shock.shock) and shock.shock > -1.0):
        raise RiskInputError("shock", f"a price move must be > −100 %, got {shock.shock!r}")
    asset = w * shock.shock
    total = float(asset.sum())
    return StressResult(shock.name, total, asset, min(0.0, total), total, None, 1, ())


def stress_scenarios(
    positions: npt.ArrayLike,
    dates: npt.ArrayLike,
    returns: npt.ArrayLike,
    windows: Sequence[StressWindow] = DEFAULT_WINDOWS,
    shocks: Sequence[UniformShock] = DEFAULT_SHOCKS,
) -> list[StressResult]:
    """The standard scenario set: each historical window, then each shock."""
    out = [stress_window(positions, dates, returns, win) for win in windows]
    out.extend(stress_shock(positions, s) for s in shocks)
    return out


def stress_matrix(
    series: Sequence[tuple[npt.ArrayLike, npt.ArrayLike] | None],
    windows: Sequence[StressWindow] = DEFAULT_WINDOWS,
) -> tuple[npt.NDArray[np.datetime64], F64]:
    """The (dates, assets) return matrix ``stress_window`` replays: every date inside a window
    on which any asset traded, NaN where an asset did not (or has no history: ``None``)."""
    dated = [
        (np.asarray(d).astype("datetime64[D]"), np.asarray(r, dtype=np.float64))
        for d, r in (s for s in series if s is not None)
    ]
    inside = np.zeros(0, dtype="datetime64[D]")
    for win in windows:
        lo, hi = win.start.astype("datetime64[D]"), win.end.astype("datetime64[D]")
        for d, _ in dated:
            inside = np.union1d(inside, d[(d >= lo) & (d <= hi)])
    out = np.full((inside.size, len(series)), np.nan)
    for j, s in enumerate(series):
        if s is None:
            continue
        d = np.asarray(s[0]).astype("datetime64[D]")
        r = np.asarray(s[1], dtype=np.float64)
        found = np.isin(d, inside)
        out[np.searchsorted(inside, d[found]), j] = r[found]
    return inside, out


# --------------------------------------------------------------------------------------------
# Backtests


@dataclass(frozen=True, slots=True)
class LikelihoodRatioTest:
    """A likelihood-ratio test: statistic, χ² degrees of freedom and p-value."""

    name: str
    statistic: float
    df: int
    p_value: float

    def rejected(self, significance: float = 0.05) -> bool:
        return self.p_value < significance


def _hits(hits: npt.ArrayLike) -> B1:
    h = np.asarray(hits)
    if h.ndim != 1 or h.size == 0:
        raise RiskInputError("hits", "need a non-empty 1-D series of failures")
    if h.dtype != np.bool_:
        if not np.all(np.isin(h, (0, 1))):
            raise RiskInputError("hits", "failures must be booleans or 0/1")
        h = h.astype(np.bool_)
    return h


def _lr(name: str, statistic: float, df: int) -> LikelihoodRatioTest:
    stat = max(0.0, statistic)  # rounding can give −1e−13 at the optimum
    return LikelihoodRatioTest(name, stat, df, float(stats.chi2.sf(stat, df)))


def var_failures(returns: npt.ArrayLike, var: npt.ArrayLike) -> B1:
    """A failure (exception) is a day whose loss exceeds its VaR: ``−r_t > VaR_t``."""
    r = _series(returns, "returns")
    v = _series(var, "var")
    if r.shape != v.shape:
        raise RiskInputError("var", f"need one VaR per return, got {v.shape} for {r.shape}")
    out: B1 = -r > v
    return out


def kupiec_pof(failures: int, observations: int, level: float) -> LikelihoodRatioTest:
    """Kupiec (1995, "Techniques for verifying the accuracy of risk measurement models",
    J. Derivatives 3(2)) proportion of failures: with p = 1 − α and x of N failures,
    ``LR = −2 ln[(1−p)^{N−x} p^x] + 2 ln[(1−x/N)^{N−x} (x/N)^x]`` ~ χ²(1)."""
    n, x, p = _counts(failures, observations, level)
    ph = x / n
    stat = -2.0 * (special.xlogy(n - x, 1 - p) + special.xlogy(x, p)) + 2.0 * (
        special.xlogy(n - x, 1 - ph) + special.xlogy(x, ph)
    )
    return _lr("pof", float(stat), 1)


def kupiec_tuff(first_failure: int | None, observations: int, level: float) -> LikelihoodRatioTest:
    """Kupiec (1995) time until first failure; ``first_failure`` is 1-based (day n).

    ``LR = −2 ln[p(1−p)^{n−1}] + 2 ln[(1/n)(1−1/n)^{n−1}]`` ~ χ²(1). With no failure in N days
    the time is censored at N: the likelihood is (1−p)^N against its maximum 1 (p̂ = 0), so
    ``LR = −2N ln(1−p)`` (our rule; Kupiec's paper treats only an observed failure).
    """
    n_obs, _, p = _counts(0, observations, level)
    if first_failure is None:
        return _lr("tuff", float(-2.0 * n_obs * math.log1p(-p)), 1)
    if not isinstance(first_failure, int) or not 1 <= first_failure <= n_obs:
        raise RiskInputError("first_failure", f"need 1..{n_obs}, got {first_failure!r}")
    n = float(first_failure)
    stat = -2.0 * (math.log(p) + (n - 1) * math.log1p(-p)) + 2.0 * (
        -math.log(n) + float(special.xlogy(n - 1, 1 - 1 / n))
    )
    return _lr("tuff", stat, 1)


def _counts(failures: int, observations: int, level: float) -> tuple[int, int, float]:
    a = _level(level)
    if not isinstance(observations, int | np.integer) or observations < 1:
        raise RiskInputError("observations", f"need a positive count, got {observations!r}")
    if not isinstance(failures, int | np.integer) or not 0 <= failures <= observations:
        raise RiskInputError("failures", f"need 0..{observations}, got {failures!r}")
    return int(observations), int(failures), 1.0 - a


def christoffersen_ind(hits: npt.ArrayLike) -> LikelihoodRatioTest:
    """Christoffersen (1998, "Evaluating interval forecasts", Int. Economic Review 39(4), §3.2)
    independence: first-order Markov chain of failures against an i.i.d. one.

    With n_ij the count of days in state j after a day in state i, π₀₁ = n₀₁/(n₀₀+n₀₁),
    π₁₁ = n₁₁/(n₁₀+n₁₁), π = (n₀₁+n₁₁)/(N−1):
    ``LR = −2 ln[(1−π)^{n₀₀+n₁₀} π^{n₀₁+n₁₁}]
    + 2 ln[(1−π₀₁)^{n₀₀} π₀₁^{n₀₁} (1−π₁₁)^{n₁₀} π₁₁^{n₁₁}]`` ~ χ²(1) (0·ln 0 = 0).
    """
    h = _hits(hits).astype(np.int64)
    if h.size < 2:
        raise RiskInputError("hits", "need at least 2 days for transitions")
    prev, cur = h[:-1], h[1:]
    n = np.bincount(prev * 2 + cur, minlength=4).astype(np.float64)
    n00, n01, n10, n11 = n
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    pi01 = n01 / (n00 + n01) if n00 + n01 > 0 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 > 0 else 0.0
    restricted = special.xlogy(n00 + n10, 1 - pi) + special.xlogy(n01 + n11, pi)
    unrestricted = (
        special.xlogy(n00, 1 - pi01)
        + special.xlogy(n01, pi01)
        + special.xlogy(n10, 1 - pi11)
        + special.xlogy(n11, pi11)
    )
    return _lr("cci", float(-2.0 * (restricted - unrestricted)), 1)


def christoffersen_cc(hits: npt.ArrayLike, level: float) -> LikelihoodRatioTest:
    """Conditional coverage: ``LR_cc = LR_pof + LR_ind`` ~ χ²(2) (Christoffersen 1998, §3.3).

    POF here is over all N days, as MATLAB's ``varbacktest.cc`` does (Christoffersen's paper
    counts it on the N − 1 transitions; the difference is one day).
    """
    h = _hits(hits)
    pof = kupiec_pof(int(h.sum()), int(h.size), level)
    ind = christoffersen_ind(h)
    return _lr("cc", pof.statistic + ind.statistic, 2)


class TrafficLightZone(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


@dataclass(frozen=True, slots=True)
class TrafficLight:
    """Basel traffic light: ``probability`` = P(X ≤ x), ``type_i`` = P(X ≥ x) for
    X ~ Binomial(N, 1 − α) — the chance of rejecting a correct model with x or more failures."""

    zone: TrafficLightZone
    probability: float
    type_i: float


def traffic_light(failures: int, observations: int, level: float) -> TrafficLight:
    """Basel Committee (1996), "Supervisory framework for the use of 'backtesting' in conjunction
    with the internal models approach", Table 1–2: green while the binomial cumulative probability
    of the failures is below 95 %, yellow below 99.99 %, red from there (MATLAB ``varbacktest.tl``
    applies the same boundaries to any N and α)."""
    n, x, p = _counts(failures, observations, level)
    prob = float(stats.binom.cdf(x, n, p))
    type_i = float(stats.binom.sf(x - 1, n, p))
    if prob < BASEL_YELLOW:
        zone = TrafficLightZone.GREEN
    elif prob < BASEL_RED:
        zone = TrafficLightZone.YELLOW
    else:
        zone = TrafficLightZone.RED
    return TrafficLight(zone, prob, type_i)


@dataclass(frozen=True, slots=True)
class BacktestReport:
    """All backtests of one VaR series at one level."""

    level: float
    observations: int
    failures: int
    expected: float
    pof: LikelihoodRatioTest
    tuff: LikelihoodRatioTest
    cci: LikelihoodRatioTest
    cc: LikelihoodRatioTest
    traffic_light: TrafficLight

    def passes(self, significance: float = 0.05) -> bool:
        """Kupiec POF and Christoffersen independence and conditional coverage all accepted."""
        return not (
            self.pof.rejected(significance)
            or self.cci.rejected(significance)
            or self.cc.rejected(significance)
        )


def backtest(hits: npt.ArrayLike, level: float) -> BacktestReport:
    """Run every test on a failure series (True = the loss exceeded the VaR)."""
    h = _hits(hits)
    n, x = int(h.size), int(h.sum())
    first = int(np.argmax(h)) + 1 if x > 0 else None
    return BacktestReport(
        level=_level(level),
        observations=n,
        failures=x,
        expected=n * (1.0 - level),
        pof=kupiec_pof(x, n, level),
        tuff=kupiec_tuff(first, n, level),
        cci=christoffersen_ind(h),
        cc=christoffersen_cc(h, level),
        traffic_light=traffic_light(x, n, level),
    )


# --------------------------------------------------------------------------------------------
# Rolling one-day VaR


def rolling_var(
    returns: npt.ArrayLike,
    method: VarMethod | str,
    level: float,
    *,
    window: int = 250,
    lam: float = RISKMETRICS_LAMBDA,
    refit_every: int = 21,
) -> F64:
    """One-day VaR forecast for each day t ≥ ``window`` of a return series, from days < t only.

    Returns an array the length of ``returns`` with NaN for the first ``window`` days.

    * historical: the previous ``window`` returns; Cornish–Fisher: their sample moments;
    * normal / Student-t: the EWMA σ_t (zero mean); Student-t ν refitted every ``refit_every``
      days by maximum likelihood on all EWMA-standardized returns before t;
    * filtered historical: the previous ``window`` EWMA-standardized returns, times σ_t.

    ``window`` ≥ 75 so the EWMA backcast (first 75 days) is in the past of every forecast.
    """
    r = _series(returns, "returns")
    m = _method(method)
    a = _level(level)
    if not isinstance(window, int) or window < BACKCAST_DAYS:
        raise RiskInputError("window", f"need an integer ≥ {BACKCAST_DAYS}, got {window!r}")
    if r.size <= window:
        raise RiskInputError("returns", f"need more than {window} days, got {r.size}")
    if not isinstance(refit_every, int) or refit_every < 1:
        raise RiskInputError("refit_every", f"need a positive integer, got {refit_every!r}")
    out = np.full(r.size, np.nan)
    sigma = np.sqrt(ewma_variance_path(r, lam))[:-1]  # σ_t for day t, from days < t
    past = np.lib.stride_tricks.sliding_window_view(r[:-1], window)  # row j: days j..j+window−1
    if m is VarMethod.HISTORICAL:
        out[window:] = -_quantile_sorted(np.sort(past, axis=1), 1.0 - a)
    elif m is VarMethod.NORMAL:
        out[window:] = float(stats.norm.ppf(a)) * sigma[window:]
    elif m is VarMethod.STUDENT_T:
        if np.any(sigma <= 0):
            raise RiskInputError("returns", "EWMA variance is zero: cannot standardize")
        z = r / sigma
        for start in range(window, r.size, refit_every):
            fv, _ = student_t_factors(fit_student_t_nu(z[:start]), a)
            stop = min(start + refit_every, r.size)
            out[start:stop] = fv * sigma[start:stop]
    elif m is VarMethod.CORNISH_FISHER:
        mean = past.mean(axis=1)
        sd = past.std(axis=1, ddof=1)
        skew = stats.skew(past, axis=1)
        kurt = stats.kurtosis(past, axis=1)
        zc = np.array(
            [cornish_fisher_z(a, float(s), float(k)) for s, k in zip(skew, kurt, strict=True)]
        )
        out[window:] = -mean - sd * zc
    elif m is VarMethod.FILTERED_HISTORICAL:
        if np.any(sigma <= 0):
            raise RiskInputError("returns", "EWMA variance is zero: cannot standardize")
        zpast = np.lib.stride_tricks.sliding_window_view((r / sigma)[:-1], window)
        out[window:] = -_quantile_sorted(np.sort(zpast, axis=1), 1.0 - a) * sigma[window:]
    else:
        raise RiskInputError("method", f"{m.value} has no rolling form (use the parametric one)")
    return out


def daily_pnl_and_var(
    equity: Sequence[tuple[int, float]], var: Sequence[tuple[int, float]]
) -> tuple[F64, F64]:
    """An account's realized one-day P&L and the VaR that forecast it, from its day-end
    equity ``(day, equity)`` and the VaR in force at the end of each day ``(day, VaR)`` (a
    positive loss, money): for each pair of consecutive equity days d₀ < d₁ with a VaR on d₀,
    ``(E(d₁) − E(d₀), VaR(d₀))``. ``var_failures`` then counts the exceptions. The account has
    no deposits or withdrawals (a paper account), so the equity change is its P&L."""
    made = dict(var)
    days = sorted(equity)
    pnl, forecast = [], []
    for (d0, e0), (_, e1) in itertools.pairwise(days):
        if d0 in made:
            pnl.append(e1 - e0)
            forecast.append(made[d0])
    return np.array(pnl, dtype=np.float64), np.array(forecast, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class BacktestRow:
    """One line of the method comparison: a method at a level and its backtests."""

    method: VarMethod
    report: BacktestReport

    @property
    def passes(self) -> bool:
        return self.report.passes()


def var_backtest_table(
    returns: npt.ArrayLike,
    *,
    levels: Sequence[float] = (0.95, 0.99),
    methods: Sequence[VarMethod] = ROLLING_METHODS,
    window: int = 250,
    lam: float = RISKMETRICS_LAMBDA,
) -> list[BacktestRow]:
    """Rolling one-day VaR of each method at each level over a daily return series, backtested
    on the days after the first ``window`` (which method passes Kupiec and Christoffersen)."""
    r = _series(returns, "returns")
    rows = []
    for m in methods:
        for a in levels:
            var = rolling_var(r, m, a, window=window, lam=lam)
            hits = var_failures(r[window:], var[window:])
            rows.append(BacktestRow(_method(m), backtest(hits, a)))
    return rows

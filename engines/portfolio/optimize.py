"""Portfolio optimisation, pure: covariance estimators, mean–variance, risk parity and HRP.

One entry point, ``optimize(OptimizeRequest) -> OptimizeResult``, which ``POST
/portfolio/optimize`` calls; arrays in, arrays out, no I/O, no clock. Conventions:

* ``returns`` are *simple* periodic (daily) returns, rows = periods (oldest first), columns =
  assets. Expected returns and covariances are annualised with ``periods_per_year`` (252), as
  PyPortfolioOpt does (``expected_returns.mean_historical_return``: geometric by default,
  ``(Π(1 + r))^(252/T) − 1``; ``risk_models.sample_cov``: ``cov(ddof=1) × 252``).
* Ledoit–Wolf shrinkage towards the constant-variance target ``μI``, ``μ = tr(S)/p``, with ``S``
  the *maximum-likelihood* (1/T) covariance of the de-meaned returns: Ledoit & Wolf (2004, "A
  well-conditioned estimator for large-dimensional covariance matrices", J. Multivariate Anal.
  88(2), lemma 3.1 and §3.3), computed exactly as ``sklearn.covariance.LedoitWolf`` (which is what
  PyPortfolioOpt's ``CovarianceShrinkage.ledoit_wolf()`` calls), then annualised.
* Constraints: ``lower ≤ w ≤ upper`` (box; ``(0, 1)`` is long-only) and ``Σw = budget``; bounds
  must be finite (use wide ones, e.g. ``(−10, 10)``, for an unconstrained frontier).

Methods (``Method``), following PyPortfolioOpt's ``EfficientFrontier`` formulations:

* ``min_variance``: min ``½wᵀΣw``;
* ``efficient_return``: min ``½wᵀΣw`` s.t. ``μᵀw ≥ target_return``;
* ``max_sharpe``: max ``(μ − r_f)ᵀw / √(wᵀΣw)`` via the Cornuéjols & Tütüncü (2007, "Optimization
  Methods in Finance", §8.2) homogenisation: min ``½yᵀΣy`` s.t. ``(μ − r_f)ᵀy = 1``,
  ``l·κ ≤ y ≤ u·κ``, ``κ = Σy / budget ≥ 0``; ``w = y/κ``;
* ``efficient_risk``: max ``μᵀw`` s.t. ``wᵀΣw ≤ target_volatility²`` — solved on the frontier: the
  efficient-return target ``r`` with ``σ(r) = target`` (Brent), then exactly on that active set,
  where ``w(r)`` is affine and ``σ(r)² = target²`` a quadratic in ``r``;
* ``risk_parity`` (equal risk contribution): Spinu (2013, "An algorithm for computing risk parity
  weights", SSRN 2297383): Newton on the strictly convex ``½yᵀΣy − (1/n)Σ log yᵢ``, ``w = y/Σy``;
  long-only by construction, so box bounds are refused;
* ``hrp``: López de Prado (2016, "Building diversified portfolios that outperform out of sample",
  J. Portfolio Mgmt 42(4)): distance ``√((1 − ρ)/2)``, single linkage (``scipy``'s, as in the
  paper's code, but on the condensed distances as PyPortfolioOpt's ``HRPOpt`` does — the paper's
  snippet clusters the rows of the distance matrix as if they were observations),
  quasi-diagonalisation (the tree's leaf order), recursive bisection with inverse-variance cluster
  variances. Long-only by construction.

The quadratic programmes are solved here by the Goldfarb & Idnani (1983, "A numerically stable
dual method for solving strictly convex quadratic programs", Math. Programming 27) dual
active-set method, then polished by one exact KKT solve on the final active set, so the KKT
residuals of the returned weights are at rounding level; they are returned with the result.
Limits: Σ must be positive definite for the mean–variance methods and risk parity (a singular
sample covariance — fewer periods than assets, or collinear assets — is refused; Ledoit–Wolf is
the fix); each active-set step refactorises (O(n³)), fine for hundreds of assets, not thousands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy import linalg
from scipy import optimize as scipy_optimize
from scipy.cluster import hierarchy
from scipy.spatial import distance

__all__ = [
    "CovarianceEstimator",
    "KktResiduals",
    "Method",
    "OptimizeError",
    "OptimizeRequest",
    "OptimizeResult",
    "QpInfeasible",
    "QpSolution",
    "ReturnEstimator",
    "expected_returns",
    "hrp_weights",
    "ledoit_wolf",
    "optimize",
    "risk_parity_weights",
    "sample_covariance",
    "solve_qp",
]

F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]
_E = TypeVar("_E", bound=StrEnum)

#: Symmetry and positive-definiteness tolerance on a given covariance (relative to its scale).
PSD_TOLERANCE = 1e-12
#: Newton stops for risk parity once ``max|yᵢ(Σy)ᵢ − 1/n|`` is below this (times 1/n).
RISK_PARITY_TOLERANCE = 1e-13
RISK_PARITY_MAX_STEPS = 100


class OptimizeError(ValueError):
    """A request that cannot be optimised; ``parameter`` names the request field at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class Method(StrEnum):
    MIN_VARIANCE = "min_variance"
    MAX_SHARPE = "max_sharpe"
    EFFICIENT_RETURN = "efficient_return"
    EFFICIENT_RISK = "efficient_risk"
    RISK_PARITY = "risk_parity"
    HRP = "hrp"


class CovarianceEstimator(StrEnum):
    SAMPLE = "sample"
    LEDOIT_WOLF = "ledoit_wolf"


class ReturnEstimator(StrEnum):
    GEOMETRIC = "geometric"  # PyPortfolioOpt's mean_historical_return default (compounding)
    MEAN = "mean"  # arithmetic mean × periods_per_year


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class OptimizeRequest:
    """What to optimise. Either ``returns`` (periods × assets) or ``covariance`` (annualised)
    must be given; ``expected_returns``/``covariance`` override the estimates from ``returns``.
    ``target_return`` is needed by ``efficient_return``, ``target_volatility`` by
    ``efficient_risk`` (both annualised); ``lower``/``upper`` are one number or one per asset."""

    method: Method | str
    assets: tuple[str, ...]
    returns: F64 | None = None
    expected_returns: F64 | None = None
    covariance: F64 | None = None
    covariance_estimator: CovarianceEstimator | str = CovarianceEstimator.SAMPLE
    return_estimator: ReturnEstimator | str = ReturnEstimator.GEOMETRIC
    periods_per_year: float = 252.0
    risk_free_rate: float = 0.0
    target_return: float | None = None
    target_volatility: float | None = None
    lower: float | tuple[float, ...] = 0.0
    upper: float | tuple[float, ...] = 1.0
    budget: float = 1.0


@dataclass(frozen=True, slots=True)
class KktResiduals:
    """Karush–Kuhn–Tucker residuals (∞-norms) of the problem the method solved, at the returned
    point and multipliers: ``stationarity`` ‖∇f − Σλᵢ∇gᵢ‖, ``primal_feasibility`` worst
    constraint violation, ``dual_feasibility`` most negative inequality multiplier,
    ``complementary_slackness`` max |λᵢ gᵢ|. All zero up to rounding at an exact optimum."""

    stationarity: float
    primal_feasibility: float
    dual_feasibility: float
    complementary_slackness: float

    @property
    def worst(self) -> float:
        return max(
            self.stationarity,
            self.primal_feasibility,
            self.dual_feasibility,
            self.complementary_slackness,
        )


@dataclass(frozen=True, slots=True, eq=False)
class OptimizeResult:
    """Weights (in ``assets`` order, summing to the budget) and their annualised figures.

    ``kkt`` is the optimality certificate of the problem solved (the homogenised QP for
    ``max_sharpe``, the QCQP for ``efficient_risk``, Spinu's convex problem for ``risk_parity``;
    ``None`` for ``hrp``, which is a construction, not an optimisation). ``risk_contributions``
    are ``wᵢ(Σw)ᵢ / wᵀΣw`` (they sum to 1). ``expected_return`` and ``sharpe_ratio`` are ``None``
    when no expected returns were available (covariance-only requests for risk parity or HRP).
    """

    method: Method
    assets: tuple[str, ...]
    weights: F64
    expected_return: float | None
    volatility: float
    sharpe_ratio: float | None
    risk_contributions: F64
    shrinkage: float | None
    kkt: KktResiduals | None
    iterations: int
    converged: bool

    def weights_by_asset(self) -> dict[str, float]:
        return {asset: float(w) for asset, w in zip(self.assets, self.weights, strict=True)}


# --- estimators ------------------------------------------------------------------------------


def sample_covariance(returns: F64, periods_per_year: float = 1.0) -> F64:
    """Unbiased (ddof = 1) sample covariance × ``periods_per_year`` (``risk_models.sample_cov``)."""
    return np.asarray(np.cov(returns, rowvar=False, ddof=1), dtype=np.float64) * periods_per_year


def ledoit_wolf(returns: F64) -> tuple[F64, float]:
    """Ledoit–Wolf shrunk covariance (per period, not annualised) and the shrinkage δ.

    The arithmetic of ``sklearn.covariance.LedoitWolf().fit(returns)`` (``ledoit_wolf_shrinkage``
    with ``assume_centered=True`` on the de-meaned data, unblocked): ``S = XᵀX/T``,
    ``μ = tr(S)/p``, ``δ = min(β̄, d²)/d²`` with ``d² = ‖S − μI‖²_F / p`` and
    ``β̄ = (Σ‖xₜxₜᵀ − S‖²_F / T²) / p``; ``(1 − δ)S + δμI``.
    """
    x = returns - returns.mean(axis=0)
    n_samples, n_features = x.shape
    if n_features == 1:
        return np.atleast_2d((x**2).mean()), 0.0
    x2 = x**2
    emp_cov_trace = np.sum(x2, axis=0) / n_samples
    mu = np.sum(emp_cov_trace) / n_features
    beta_ = float(np.sum(x2.T @ x2))
    delta_ = float(np.sum((x.T @ x) ** 2)) / n_samples**2
    beta = 1.0 / (n_features * n_samples) * (beta_ / n_samples - delta_)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + n_features * mu**2) / n_features
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else float(beta / delta)
    emp_cov = x.T @ x / n_samples
    shrunk = (1.0 - shrinkage) * emp_cov
    shrunk.flat[:: n_features + 1] += shrinkage * np.trace(emp_cov) / n_features
    return shrunk, shrinkage


def expected_returns(
    returns: F64,
    estimator: ReturnEstimator = ReturnEstimator.GEOMETRIC,
    periods_per_year: float = 1,
) -> F64:
    """Annualised expected returns: geometric ``(Π(1 + r))^(ppy/T) − 1`` or ``mean × ppy``."""
    if estimator is ReturnEstimator.MEAN:
        return np.asarray(returns.mean(axis=0) * periods_per_year, dtype=np.float64)
    growth = np.prod(1.0 + returns, axis=0)
    return np.asarray(growth ** (periods_per_year / returns.shape[0]) - 1.0, dtype=np.float64)


# --- the QP solver ---------------------------------------------------------------------------


class QpInfeasible(Exception):
    """``solve_qp`` proved the constraints inconsistent (raised with the culprit row's index)."""


@dataclass(frozen=True, slots=True, eq=False)
class QpSolution:
    """``x`` and the multipliers of ``min ½xᵀGx + aᵀx`` s.t. ``A_eq x = b_eq``, ``A_in x ≥ b_in``
    (Lagrangian ``f − λᵀ(A_eq x − b_eq) − μᵀ(A_in x − b_in)``, ``μ ≥ 0``)."""

    x: F64
    eq_multipliers: F64
    in_multipliers: F64
    active: tuple[int, ...]  # indices into the stacked [A_eq; A_in] rows
    iterations: int


def solve_qp(
    g: F64, a: F64, a_eq: F64, b_eq: F64, a_in: F64, b_in: F64, *, max_iterations: int = 0
) -> QpSolution:
    """Strictly convex QP by Goldfarb & Idnani's dual active-set method (1983, §3, "Algorithm").

    Starts at the unconstrained minimum ``−G⁻¹a``, adds the equalities and then the most violated
    inequality one at a time, dropping active inequalities whose multiplier would turn negative;
    the primal/dual step directions use ``J = L⁻ᵀQ`` with ``L⁻¹N = Q[R; 0]`` (recomputed at every
    step: simple and exact for the sizes a portfolio has). Ends with one exact solve of the KKT
    system on the final active set. Raises ``numpy.linalg.LinAlgError`` when ``G`` is not
    positive definite and ``QpInfeasible`` when the constraints are inconsistent.
    """
    n = g.shape[0]
    chol = np.linalg.cholesky(g)
    l_inv = linalg.solve_triangular(chol, np.eye(n), lower=True)
    rows = np.vstack([a_eq.reshape(-1, n), a_in.reshape(-1, n)])
    rhs = np.concatenate([b_eq, b_in])
    m_eq, m = b_eq.size, rhs.size
    limit = max_iterations or 20 * (m + n) + 50
    sign = np.ones(m)
    u = np.zeros(m)
    active: list[int] = []
    x = -(l_inv.T @ (l_inv @ a))
    row_scale = np.abs(rows).sum(axis=1)
    iterations = 0
    while True:
        pending = [i for i in range(m_eq) if i not in active]
        if pending:
            p = pending[0]
            sign[p] = -1.0 if rows[p] @ x - rhs[p] > 0 else 1.0
        else:
            slack = rows[m_eq:] @ x - rhs[m_eq:]
            slack[[i - m_eq for i in active if i >= m_eq]] = np.inf
            tolerance = 1e-13 * (1.0 + np.abs(rhs[m_eq:]) + row_scale[m_eq:] * np.abs(x).max())
            violation = slack / (1.0 + row_scale[m_eq:])
            violation[slack >= -tolerance] = np.inf
            if m == m_eq or not np.isfinite(violation).any():
                break
            p = m_eq + int(np.argmin(violation))
        normal, target = sign[p] * rows[p], sign[p] * rhs[p]
        u_new = 0.0
        while True:
            iterations += 1
            if iterations > limit:
                raise RuntimeError(f"no convergence in {limit} active-set steps")
            z, r = _directions(l_inv, (sign[active, None] * rows[active]), normal)
            step_dual, drop = math.inf, -1
            r_floor = 1e-14 * (1.0 + float(np.abs(r).max(initial=0.0)))
            for k, c in enumerate(active):
                if c >= m_eq and r[k] > r_floor and u[c] / r[k] < step_dual:
                    step_dual, drop = u[c] / r[k], k
            curvature = float(z @ normal)
            reference = float(np.sum((l_inv @ normal) ** 2))
            if curvature <= 1e-13 * reference:  # the new normal depends on the active ones
                if drop < 0:
                    raise QpInfeasible(p)
                u[active] -= step_dual * r
                u_new += step_dual
                u[active[drop]] = 0.0
                del active[drop]
                continue
            step_primal = -(normal @ x - target) / curvature
            step = min(step_dual, step_primal)
            x = x + step * z
            u[active] -= step * r
            u_new += step
            if step_primal <= step_dual:
                active.append(p)
                u[p] = u_new
                break
            u[active[drop]] = 0.0
            del active[drop]
    x, multipliers = _polish(g, a, sign[active, None] * rows[active], sign[active] * rhs[active])
    full = np.zeros(m)
    full[active] = multipliers * sign[active]
    return QpSolution(
        x=x,
        eq_multipliers=full[:m_eq],
        in_multipliers=full[m_eq:],
        active=tuple(sorted(active)),
        iterations=iterations,
    )


def _directions(l_inv: F64, normals: F64, normal: F64) -> tuple[F64, F64]:
    """Goldfarb–Idnani's primal step ``z = J₂J₂ᵀn`` and dual step ``r = R⁻¹J₁ᵀn``."""
    q = normals.shape[0]
    if q == 0:
        return l_inv.T @ (l_inv @ normal), np.zeros(0)
    basis, upper = np.linalg.qr(l_inv @ normals.T, mode="complete")
    j = l_inv.T @ basis
    d = j.T @ normal
    z = j[:, q:] @ d[q:]
    r = linalg.solve_triangular(upper[:q, :q], d[:q], lower=False)
    return z, r


def _polish(g: F64, a: F64, normals: F64, targets: F64) -> tuple[F64, F64]:
    """Exact solve of ``Gx − Nᵀu = −a``, ``Nx = b`` on the final active set."""
    n, q = g.shape[0], normals.shape[0]
    kkt = np.block([[g, -normals.T], [normals, np.zeros((q, q))]])
    solution = np.linalg.solve(kkt, np.concatenate([-a, targets]))
    return solution[:n], solution[n:]


def _residuals(
    gradient: F64,
    eq_gradients: F64,
    eq_values: F64,
    eq_multipliers: F64,
    in_gradients: F64,
    in_values: F64,
    in_multipliers: F64,
) -> KktResiduals:
    """KKT residuals of ``min f`` s.t. ``hⱼ = 0``, ``gᵢ ≥ 0`` from ∇f, the constraints' gradients
    (rows) and values at the point, and the multipliers (Lagrangian ``f − λᵀh − μᵀg``)."""
    return KktResiduals(
        stationarity=float(
            np.abs(
                gradient - eq_gradients.T @ eq_multipliers - in_gradients.T @ in_multipliers
            ).max()
        ),
        primal_feasibility=float(
            max(np.abs(eq_values).max(initial=0.0), (-in_values).max(initial=0.0))
        ),
        dual_feasibility=float(max(0.0, (-in_multipliers).max(initial=0.0))),
        complementary_slackness=float(np.abs(in_multipliers * in_values).max(initial=0.0)),
    )


def _qp_residuals(
    g: F64, a_eq: F64, b_eq: F64, a_in: F64, b_in: F64, qp: QpSolution
) -> KktResiduals:
    """KKT residuals of ``min ½xᵀGx`` on linear constraints at a ``solve_qp`` solution."""
    x = qp.x
    return _residuals(
        g @ x, a_eq, a_eq @ x - b_eq, qp.eq_multipliers, a_in, a_in @ x - b_in, qp.in_multipliers
    )


# --- mean–variance methods --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Box:
    """``lower ≤ w ≤ upper``, ``Σw = budget`` as QP rows."""

    lower: F64
    upper: F64
    budget: float

    @property
    def a_eq(self) -> F64:
        return np.ones((1, self.lower.size))

    @property
    def b_eq(self) -> F64:
        return np.array([self.budget])

    @property
    def a_in(self) -> F64:
        eye = np.eye(self.lower.size)
        return np.vstack([eye, -eye])

    @property
    def b_in(self) -> F64:
        return np.concatenate([self.lower, -self.upper])


@dataclass(frozen=True, slots=True, eq=False)
class _Solved:
    weights: F64
    kkt: KktResiduals
    iterations: int


def _min_variance(cov: F64, box: _Box, target_return: tuple[F64, float] | None = None) -> _Solved:
    """min ½wᵀΣw on the box and budget, optionally with ``μᵀw ≥ target``."""
    a_eq, b_eq, a_in, b_in = box.a_eq, box.b_eq, box.a_in, box.b_in
    if target_return is not None:
        mu, target = target_return
        a_in, b_in = np.vstack([mu, a_in]), np.concatenate([[target], b_in])
    n = cov.shape[0]
    solution = solve_qp(cov, np.zeros(n), a_eq, b_eq, a_in, b_in)
    kkt = _qp_residuals(cov, a_eq, b_eq, a_in, b_in, solution)
    return _Solved(solution.x, kkt, solution.iterations)


def _max_return(mu: F64, box: _Box) -> F64:
    """The LP max μᵀw on the box and budget, greedily: everything at its lower bound, then the
    remaining budget to the highest expected returns, each up to its upper bound."""
    w = box.lower.copy()
    left = box.budget - w.sum()
    for i in np.argsort(-mu, kind="stable"):
        add = min(box.upper[i] - box.lower[i], left)
        w[i] += add
        left -= add
        if left <= 0:
            break
    return w


def _max_sharpe(cov: F64, mu: F64, risk_free_rate: float, box: _Box) -> _Solved:
    """Tangency portfolio by the homogenised QP in ``y`` (κ = Σy/budget eliminated)."""
    n = cov.shape[0]
    excess = mu - risk_free_rate
    ones, eye = np.ones(n), np.eye(n)
    a_eq = excess[None, :]
    b_eq = np.ones(1)
    a_in = np.vstack(
        [
            eye - np.outer(box.lower / box.budget, ones),
            np.outer(box.upper / box.budget, ones) - eye,
            ones[None, :],
        ]
    )
    b_in = np.zeros(2 * n + 1)
    solution = solve_qp(cov, np.zeros(n), a_eq, b_eq, a_in, b_in)
    y = solution.x
    kappa = y.sum() / box.budget
    if kappa <= 0:
        raise QpInfeasible(0)
    kkt = _qp_residuals(cov, a_eq, b_eq, a_in, b_in, solution)
    return _Solved(y / kappa, kkt, solution.iterations)


def _efficient_risk(cov: F64, mu: F64, target_volatility: float, box: _Box) -> _Solved:
    """max μᵀw s.t. wᵀΣw ≤ σ*², on the box and budget (see the module docstring)."""
    target_variance = target_volatility**2
    low = _min_variance(cov, box)
    low_variance = float(low.weights @ cov @ low.weights)
    if target_variance < low_variance * (1 - 1e-12):
        raise OptimizeError(
            "target_volatility",
            f"{target_volatility:.6g} is below the minimum volatility "
            f"{math.sqrt(low_variance):.6g} the constraints allow",
        )
    top = _max_return(mu, box)
    top_variance = float(top @ cov @ top)
    low_return, top_return = float(mu @ low.weights), float(mu @ top)
    iterations = low.iterations
    if target_variance >= top_variance or top_return - low_return <= 1e-15 * abs(top_return):
        w = top  # the risk limit does not bind: the highest return (an LP vertex) is reachable
    elif target_variance <= low_variance:
        w = low.weights
    else:

        def excess_volatility(r: float) -> float:
            nonlocal iterations
            if r >= top_return:
                return math.sqrt(top_variance) - target_volatility
            solved = _min_variance(cov, box, (mu, r))
            iterations += solved.iterations
            return math.sqrt(float(solved.weights @ cov @ solved.weights)) - target_volatility

        root = scipy_optimize.brentq(
            excess_volatility, low_return, top_return, xtol=1e-15, rtol=4 * np.finfo(float).eps
        )
        w = _exact_on_active_set(cov, mu, target_variance, box, float(root))
    return _Solved(w, _efficient_risk_kkt(cov, mu, target_variance, box, w), iterations)


def _active_bounds(box: _Box, w: F64) -> tuple[B1, B1]:
    """Masks of the lower and upper bounds ``w`` sits on (to 1e-9 of the box's width)."""
    width = np.maximum(box.upper - box.lower, 1.0)
    at_lower = w - box.lower <= 1e-9 * width
    return at_lower, (box.upper - w <= 1e-9 * width) & ~at_lower


def _exact_on_active_set(
    cov: F64, mu: F64, target_variance: float, box: _Box, target_return: float
) -> F64:
    """Efficient-return weights at the return whose variance is exactly σ*².

    On the active bounds of the QP solution at ``target_return`` (Brent's root), the KKT system
    is linear with the return target on its right-hand side, so ``w(r) = w₀ + r·w₁`` and
    ``w(r)ᵀΣw(r) = σ*²`` is a quadratic in ``r``; its root nearest Brent's is the answer (or
    Brent's own point, should that root leave the active set's region).
    """
    approx = _min_variance(cov, box, (mu, target_return)).weights
    n = cov.shape[0]
    at_lower, at_upper = _active_bounds(box, approx)
    eye = np.eye(n)
    normals = np.vstack([np.ones((1, n)), mu[None, :], eye[at_lower], -eye[at_upper]])
    base = np.concatenate([[box.budget, 0.0], box.lower[at_lower], -box.upper[at_upper]])
    unit = np.zeros_like(base)
    unit[1] = 1.0
    q = normals.shape[0]
    kkt = np.block([[cov, -normals.T], [normals, np.zeros((q, q))]])
    fixed = np.linalg.solve(kkt, np.concatenate([np.zeros(n), base]))
    slope = np.linalg.solve(kkt, np.concatenate([np.zeros(n), unit]))
    w0, w1 = fixed[:n], slope[:n]
    roots = np.roots([w1 @ cov @ w1, 2 * w0 @ cov @ w1, w0 @ cov @ w0 - target_variance]).real
    r = float(roots[np.argmin(np.abs(roots - target_return))])
    w = w0 + r * w1
    multipliers = fixed[n:] + r * slope[n:]
    inside = (w >= box.lower - 1e-12).all() and (w <= box.upper + 1e-12).all()
    if multipliers[1] <= 0 or (multipliers[2:] < 0).any() or not inside:
        return approx
    return np.asarray(w, dtype=np.float64)


def _efficient_risk_kkt(
    cov: F64, mu: F64, target_variance: float, box: _Box, w: F64
) -> KktResiduals:
    """KKT residuals of min −μᵀw s.t. Σw = b, l ≤ w ≤ u, σ*² − wᵀΣw ≥ 0 at ``w``, with the
    multipliers of the budget, the bounds ``w`` sits on and (when it binds) the risk limit fitted
    by non-negative least squares to the stationarity condition ``−μ = η·1 + Σζᵢ∇gᵢ``."""
    n = cov.shape[0]
    at_lower, at_upper = _active_bounds(box, w)
    eye = np.eye(n)
    in_gradients = np.vstack([eye, -eye, -2 * (cov @ w)[None, :]])
    in_values = np.concatenate([w - box.lower, box.upper - w, [target_variance - w @ cov @ w]])
    binding = np.concatenate([at_lower, at_upper, [in_values[-1] <= 1e-10 * target_variance]])
    # η = η⁺ − η⁻ free, ζ ≥ 0: non-negative least squares (a vertex of the LP case has more
    # active constraints than assets, where plain least squares may pick negative multipliers).
    ones = np.ones((n, 1))
    basis = np.hstack([ones, -ones, in_gradients[binding].T])
    fitted, _ = scipy_optimize.nnls(basis, -mu)
    in_multipliers = np.zeros(2 * n + 1)
    in_multipliers[binding] = fitted[2:]
    return _residuals(
        -mu,
        np.ones((1, n)),
        np.array([w.sum() - box.budget]),
        fitted[:1] - fitted[1:2],
        in_gradients,
        in_values,
        in_multipliers,
    )


# --- risk parity and HRP ----------------------------------------------------------------------


def risk_parity_weights(cov: F64) -> tuple[F64, KktResiduals, int]:
    """Equal-risk-contribution weights (summing to 1) by damped Newton on Spinu's problem.

    ``F(y) = ½yᵀΣy − (1/n)Σ log yᵢ``; ``∇F = Σy − 1/(ny)``, ``∇²F = Σ + diag(1/(ny²))``. At the
    minimum ``yᵢ(Σy)ᵢ = 1/n`` for all i, so the risk contributions of ``w = y/Σy`` are equal.
    The residuals reported are those of ``∇F = 0`` (an unconstrained problem; ``y > 0`` is kept
    by the step rule).
    """
    n = cov.shape[0]
    share = 1.0 / n
    y = 1.0 / np.sqrt(np.diag(cov))
    y /= math.sqrt(float(y @ cov @ y))  # at the optimum yᵀΣy = Σ yᵢ(Σy)ᵢ = 1

    def objective(v: F64) -> float:
        return float(0.5 * v @ cov @ v - share * np.log(v).sum())

    iterations = 0
    while np.abs(y * (cov @ y) - share).max() > RISK_PARITY_TOLERANCE * share:
        iterations += 1
        if iterations > RISK_PARITY_MAX_STEPS:
            raise RuntimeError(f"risk parity: no convergence in {RISK_PARITY_MAX_STEPS} steps")
        gradient = cov @ y - share / y
        step = -np.linalg.solve(cov + np.diag(share / y**2), gradient)
        decrement = float(-gradient @ step)  # the squared Newton decrement, ≥ 0
        t = 1.0
        while (y + t * step <= 0).any():
            t *= 0.5
        current = objective(y)
        if decrement > 1e-12 * (1.0 + abs(current)):  # Armijo backtracking, far from the optimum
            while objective(y + t * step) > current - 1e-4 * t * decrement:
                t *= 0.5
        y = y + t * step
    kkt = KktResiduals(
        stationarity=float(np.abs(cov @ y - share / y).max()),
        primal_feasibility=0.0,
        dual_feasibility=0.0,
        complementary_slackness=0.0,
    )
    return y / y.sum(), kkt, iterations


def hrp_weights(cov: F64) -> F64:
    """Hierarchical risk parity weights (summing to 1); López de Prado (2016), §3–§4 and
    appendix code, with PyPortfolioOpt ``HRPOpt.optimize(linkage_method="single")``'s details."""
    std = np.sqrt(np.diag(cov))
    corr = cov / np.outer(std, std)
    dist = np.sqrt(np.clip((1.0 - corr) / 2.0, 0.0, 1.0))
    link = hierarchy.linkage(distance.squareform(dist, checks=False), "single")
    order = hierarchy.to_tree(link, rd=False).pre_order()
    w = np.ones(cov.shape[0])
    clusters = [np.asarray(order)]
    while clusters:
        clusters = [
            part
            for cluster in clusters
            if cluster.size > 1
            for part in (cluster[: cluster.size // 2], cluster[cluster.size // 2 :])
        ]
        for first, second in zip(clusters[::2], clusters[1::2], strict=True):
            first_variance = _inverse_variance_variance(cov, first)
            second_variance = _inverse_variance_variance(cov, second)
            alpha = 1.0 - first_variance / (first_variance + second_variance)
            w[first] *= alpha
            w[second] *= 1.0 - alpha
    return w


def _inverse_variance_variance(cov: F64, items: npt.NDArray[np.intp]) -> float:
    block = cov[np.ix_(items, items)]
    ivp = 1.0 / np.diag(block)
    ivp /= ivp.sum()
    return float(ivp @ block @ ivp)


# --- the entry point --------------------------------------------------------------------------


def optimize(request: OptimizeRequest) -> OptimizeResult:
    """Validate ``request``, estimate μ and Σ, run its method; ``OptimizeError`` names the bad
    field (unknown method, non-PSD or singular covariance, infeasible target, bounds that cannot
    meet the budget)."""
    method = _enum(Method, request.method, "method")
    assets = tuple(request.assets)
    n = len(assets)
    if n < 2 or len(set(assets)) != n:
        raise OptimizeError("assets", "need at least two distinct assets")
    if not (math.isfinite(request.periods_per_year) and request.periods_per_year > 0):
        raise OptimizeError("periods_per_year", "must be a positive number")
    ppy = float(request.periods_per_year)
    mu, cov, shrinkage = _estimates(request, n, ppy)
    box = _box(request, n)
    needs_mu = method in (Method.MAX_SHARPE, Method.EFFICIENT_RETURN, Method.EFFICIENT_RISK)
    if needs_mu and mu is None:
        raise OptimizeError("expected_returns", f"{method} needs returns or expected_returns")
    if method in (Method.RISK_PARITY, Method.HRP):
        for name, bound, default in (("lower", box.lower, 0.0), ("upper", box.upper, 1.0)):
            if (bound != default).any():
                raise OptimizeError(name, f"{method} is long-only by construction: no box bounds")
    if method is not Method.HRP:
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            source = "covariance" if request.covariance is not None else "returns"
            raise OptimizeError(
                source,
                "the covariance is singular (fewer periods than assets, or collinear assets); "
                "use covariance_estimator=ledoit_wolf",
            ) from None

    kkt: KktResiduals | None = None
    iterations = 0
    if method is Method.HRP:
        weights = hrp_weights(cov) * box.budget
    elif method is Method.RISK_PARITY:
        unit, kkt, iterations = risk_parity_weights(cov)
        weights = unit * box.budget
    else:
        assert mu is not None or method is Method.MIN_VARIANCE
        solved = _mean_variance(method, request, cov, mu, box)
        weights, kkt, iterations = solved.weights, solved.kkt, solved.iterations

    variance = float(weights @ cov @ weights)
    volatility = math.sqrt(max(variance, 0.0))
    contributions = weights * (cov @ weights) / variance if variance > 0 else np.zeros(n)
    expected = float(mu @ weights) if mu is not None else None
    sharpe = (
        (expected - request.risk_free_rate) / volatility
        if expected is not None and volatility > 0
        else None
    )
    return OptimizeResult(
        method=method,
        assets=assets,
        weights=_frozen(weights),
        expected_return=expected,
        volatility=volatility,
        sharpe_ratio=sharpe,
        risk_contributions=_frozen(contributions),
        shrinkage=shrinkage,
        kkt=kkt,
        iterations=iterations,
        converged=kkt is None or kkt.worst <= 1e-8,
    )


def _mean_variance(
    method: Method, request: OptimizeRequest, cov: F64, mu: F64 | None, box: _Box
) -> _Solved:
    try:
        if method is Method.MIN_VARIANCE:
            return _min_variance(cov, box)
        assert mu is not None
        if method is Method.MAX_SHARPE:
            rf = _finite(request.risk_free_rate, "risk_free_rate")
            if mu.max() <= rf:
                raise OptimizeError(
                    "risk_free_rate", "no asset's expected return exceeds the risk-free rate"
                )
            return _max_sharpe(cov, mu, rf, box)
        if method is Method.EFFICIENT_RETURN:
            if request.target_return is None:
                raise OptimizeError("target_return", "efficient_return needs a target_return")
            target = _finite(request.target_return, "target_return")
            highest = float(mu @ _max_return(mu, box))
            if target > highest + 1e-12 * max(1.0, abs(highest)):
                raise OptimizeError(
                    "target_return",
                    f"{target:.6g} is above the highest return {highest:.6g} the bounds allow",
                )
            return _min_variance(cov, box, (mu, min(target, highest)))
        if request.target_volatility is None:
            raise OptimizeError("target_volatility", "efficient_risk needs a target_volatility")
        sigma = _finite(request.target_volatility, "target_volatility")
        if sigma <= 0:
            raise OptimizeError("target_volatility", "must be positive")
        return _efficient_risk(cov, mu, sigma, box)
    except QpInfeasible:
        parameter = {
            Method.MAX_SHARPE: "risk_free_rate",
            Method.EFFICIENT_RETURN: "target_return",
            Method.EFFICIENT_RISK: "target_volatility",
        }.get(method, "lower")
        raise OptimizeError(parameter, "the constraints have no feasible point") from None


def _estimates(
    request: OptimizeRequest, n: int, ppy: float
) -> tuple[F64 | None, F64, float | None]:
    returns = None
    if request.returns is not None:
        returns = np.asarray(request.returns, dtype=np.float64)
        if returns.ndim != 2 or returns.shape[1] != n:
            raise OptimizeError("returns", f"must be periods × {n} assets, got {returns.shape}")
        if returns.shape[0] < 2 or not np.isfinite(returns).all():
            raise OptimizeError("returns", "need at least two periods of finite returns")
        if (returns <= -1).any():
            raise OptimizeError("returns", "a simple return of −100 % or less")
    shrinkage: float | None = None
    if request.covariance is not None:
        cov = _checked_covariance(request.covariance, n)
    elif returns is not None:
        estimator = _enum(CovarianceEstimator, request.covariance_estimator, "covariance_estimator")
        if estimator is CovarianceEstimator.LEDOIT_WOLF:
            shrunk, shrinkage = ledoit_wolf(returns)
            cov = shrunk * ppy
        else:
            cov = sample_covariance(returns, ppy)
    else:
        raise OptimizeError("returns", "give returns or a covariance")
    mu: F64 | None = None
    if request.expected_returns is not None:
        mu = np.asarray(request.expected_returns, dtype=np.float64)
        if mu.shape != (n,) or not np.isfinite(mu).all():
            raise OptimizeError("expected_returns", f"must be {n} finite numbers")
    elif returns is not None:
        estimator_mu = _enum(ReturnEstimator, request.return_estimator, "return_estimator")
        mu = expected_returns(returns, estimator_mu, ppy)
    return mu, cov, shrinkage


def _checked_covariance(given: F64, n: int) -> F64:
    cov = np.asarray(given, dtype=np.float64)
    if cov.shape != (n, n) or not np.isfinite(cov).all():
        raise OptimizeError("covariance", f"must be a finite {n} × {n} matrix")
    scale = float(np.abs(cov).max())
    if scale == 0 or np.abs(cov - cov.T).max() > PSD_TOLERANCE * scale:
        raise OptimizeError("covariance", "must be symmetric and non-zero")
    cov = (cov + cov.T) / 2
    smallest = float(np.linalg.eigvalsh(cov)[0])
    if smallest < -PSD_TOLERANCE * scale or (np.diag(cov) <= 0).any():
        raise OptimizeError(
            "covariance", f"not positive semi-definite (smallest eigenvalue {smallest:.3g})"
        )
    return cov


def _box(request: OptimizeRequest, n: int) -> _Box:
    budget = _finite(request.budget, "budget")
    if budget <= 0:
        raise OptimizeError("budget", "must be positive")
    lower = np.broadcast_to(np.asarray(request.lower, dtype=np.float64), (n,)).copy()
    upper = np.broadcast_to(np.asarray(request.upper, dtype=np.float64), (n,)).copy()
    if not np.isfinite(lower).all():
        raise OptimizeError("lower", "bounds must be finite")
    if not np.isfinite(upper).all():
        raise OptimizeError("upper", "bounds must be finite")
    if (lower > upper).any():
        raise OptimizeError("upper", "an upper bound below its lower bound")
    slack = 1e-12 * max(1.0, abs(budget))
    if lower.sum() > budget + slack:
        raise OptimizeError("lower", f"lower bounds sum to {lower.sum():.6g} > budget {budget:g}")
    if upper.sum() < budget - slack:
        raise OptimizeError("upper", f"upper bounds sum to {upper.sum():.6g} < budget {budget:g}")
    return _Box(lower=lower, upper=upper, budget=budget)


def _finite(value: float, parameter: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise OptimizeError(parameter, "must be a finite number")
    return float(value)


def _enum(kind: type[_E], value: object, parameter: str) -> _E:
    try:
        return kind(str(value))
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise OptimizeError(parameter, f"{value!r} is not one of {choices}") from None


def _frozen(array: F64) -> F64:
    array = np.ascontiguousarray(array, dtype=np.float64)
    array.setflags(write=False)
    return array

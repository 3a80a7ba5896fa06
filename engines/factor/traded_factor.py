"""Linear factor model with traded factors, pure: time-series regressions, risk premia as factor
means, GMM covariance, the J test of zero alphas — linearmodels' ``TradedFactorModel``.

For test portfolios ``r_it`` (excess returns, T × N) and traded factors ``f_t`` (T × K):

* ``r_it = α_i + β_i·f_t + ε_it`` by OLS per portfolio; risk premia ``λ = mean(f)``;
* the estimates solve the just-identified moment conditions ``E[(1, f_t) ⊗ ε_t] = 0`` and
  ``E[f_t − λ] = 0``; their covariance is the sandwich ``J⁻¹ S J⁻¹′ / (T − d)`` with
  ``J⁻¹ = blockdiag(I_N ⊗ (F′F/T)⁻¹, I_K)``, ``S`` the (uncentred) covariance of the moments:
  heteroskedasticity-robust (``xe′xe/T``) or Bartlett-kernel HAC (Newey & West 1987) with the
  bandwidth given or chosen by Newey & West's (1994) rule on the sum of the standardised moments
  (``linearmodels.iv.covariance.kernel_optimal_bandwidth``: pilot lags ⌈4(T/100)^(2/9)⌉,
  ``m = 1.1447·((ŝ₁/ŝ₀)²)^(1/3)·T^(1/3)``, ⌈m⌉ capped at T − 1);
* ``debiased``: ``d = K + 1`` for the regression block; the risk-premia block uses T − 1 and the
  cross block the geometric mean of the two scales (linearmodels 7.1's rule);
* ``J = α′ V_α⁺ α ~ χ²_N`` with ``V_α`` the alphas' block (pseudo-inverse);
* R² = 1 − SSR/TSS pooled over the portfolios (TSS about each portfolio's mean).

This is linearmodels 7.1 ``asset_pricing.model.TradedFactorModel.fit`` step by step; the tests
hold every output to 1e-8 relative (``rtol``) on the French data it ships and on the daily
universe. Limits: a balanced panel of finite returns (drop dates first); the Bartlett kernel only
(linearmodels also offers Parzen and quadratic-spectral); no formula interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

Array = npt.NDArray[np.float64]
CovType = Literal["robust", "kernel"]
#: A variance negative by at most this share of the largest is rounding: standard error 0
#: (linearmodels ``asset_pricing.results._VARIANCE_RTOL``).
VARIANCE_RTOL = 1e-10


@dataclass(frozen=True, slots=True)
class TradedFactorFit:
    """``params[i]`` = (α_i, β_i1..β_iK) per portfolio, with standard errors and t-stats;
    risk premia with theirs; the full covariance (params portfolio by portfolio, then λ)."""

    params: Array  # (N, K+1)
    std_errors: Array  # (N, K+1)
    tstats: Array  # (N, K+1), NaN where the standard error is 0
    risk_premia: Array  # (K,)
    risk_premia_se: Array  # (K,)
    risk_premia_tstats: Array  # (K,)
    cov: Array  # (N(K+1)+K, N(K+1)+K)
    j_stat: float
    j_pvalue: float
    rsquared: float
    nobs: int
    bandwidth: float | None  # the kernel's, when ``cov_type="kernel"``

    @property
    def alphas(self) -> Array:
        return self.params[:, 0]

    @property
    def betas(self) -> Array:
        return self.params[:, 1:]


def bartlett_kernel_weights(bandwidth: float) -> Array:
    """``1 − j/(⌊b⌋ + 1)``, j = 0..⌊b⌋ (``kernel_weight_bartlett``)."""
    m = int(bandwidth)
    return 1.0 - np.arange(m + 1) / (m + 1)


def kernel_covariance(z: Array, weights: Array) -> Array:
    """``(Σ z′z + Σ_j w_j (Γ_j + Γ_j′)) / n`` (``linearmodels.shared.covariance.cov_kernel``)."""
    n = z.shape[0]
    if len(weights) > n:
        raise ValueError(f"{len(weights)} kernel weights for {n} observations")
    s = z.T @ z
    for i in range(1, len(weights)):
        op = z[i:].T @ z[:-i]
        s += weights[i] * (op + op.T)
    s /= n
    return np.asarray((s + s.T) / 2, dtype=np.float64)


def optimal_bandwidth(x: Array) -> int:
    """Newey & West (1994) automatic Bartlett bandwidth, as ``kernel_optimal_bandwidth``."""
    t = int(x.shape[0])
    pilot = math.ceil(4 * (t / 100) ** (2 / 9))
    if pilot >= t - 1:
        raise ValueError(f"the automatic bandwidth needs more than {t} observations")
    sigma = np.empty(pilot + 1)
    sigma[0] = x.T @ x / t
    for i in range(1, pilot + 1):
        sigma[i] = x[i:].T @ x[:-i] / t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s0 = sigma[0] + 2 * sigma[1:].sum()
        sq = 2 * np.sum(sigma[1:] * np.arange(1, pilot + 1))
        m = 1.1447 * ((sq / s0) ** 2) ** (1 / 3) * t ** (1 / 3)
    if not math.isfinite(m):
        raise ValueError("the automatic bandwidth is not finite (constant or zero moments)")
    return min(math.ceil(float(m)), t - 1)


def standard_errors(cov: Array) -> Array:
    variances = np.array(np.diag(cov), dtype=np.float64)
    tol = VARIANCE_RTOL * np.max(np.abs(variances))
    variances[(variances < 0) & (variances >= -tol)] = 0.0
    with np.errstate(invalid="ignore"):
        return np.asarray(np.sqrt(variances), dtype=np.float64)


def _sandwich(moments: Array, inv_jacobian: Array, scale: float, weights: Array | None) -> Array:
    n = moments.shape[0]
    if weights is None:
        s = moments.T @ moments / n
        s = (s + s.T) / 2
    else:
        s = kernel_covariance(moments, weights)
        s = (s + s.T) / 2
    out = inv_jacobian @ s @ inv_jacobian.T
    return np.asarray((scale / 2) * (out + out.T), dtype=np.float64)


def traded_factor_model(
    portfolios: npt.ArrayLike,
    factors: npt.ArrayLike,
    *,
    cov_type: CovType = "robust",
    debiased: bool = True,
    bandwidth: float | None = None,
) -> TradedFactorFit:
    """Fit the traded-factor model (see the module docstring) to ``portfolios`` (T, N) and
    ``factors`` (T, K), finite; ``bandwidth`` only with ``cov_type="kernel"`` (``None``: the
    automatic rule)."""
    p = np.asarray(portfolios, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if f.ndim == 1:
        f = f[:, None]
    nobs, nfactor = f.shape
    nportfolio = p.shape[1]
    if p.shape[0] != nobs:
        raise ValueError(f"portfolios have {p.shape[0]} rows, factors {nobs}")
    if not (np.isfinite(p).all() and np.isfinite(f).all()):
        raise ValueError("returns must be finite (drop incomplete dates first)")
    if cov_type not in ("robust", "kernel"):
        raise ValueError(f"cov_type must be robust or kernel, got {cov_type!r}")
    if bandwidth is not None and (cov_type != "kernel" or not bandwidth >= 0):
        raise ValueError("bandwidth must be >= 0 and needs cov_type='kernel'")
    if debiased and nobs <= nfactor + 1:
        raise ValueError(f"debiased needs more than {nfactor + 1} observations, got {nobs}")
    fc = np.c_[np.ones((nobs, 1)), f]
    rp = f.mean(0)
    fe = f - f.mean(0)
    b = np.linalg.pinv(fc) @ p
    eps = p - fc @ b
    nloading = (nfactor + 1) * nportfolio
    inv_jac = np.eye(nloading + nfactor)
    inv_jac[:nloading, :nloading] = np.kron(np.eye(nportfolio), np.linalg.pinv(fc.T @ fc / nobs))
    # moment (portfolio i, regressor j) is fc[:, j]·eps[:, i], portfolio by portfolio
    xe = np.c_[np.tile(fc, (1, nportfolio)) * np.repeat(eps, nfactor + 1, axis=1), fe]
    weights = None
    used_bandwidth: float | None = None
    if cov_type == "kernel":
        if bandwidth is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                standardized = (xe / xe.std(0)[None, :]).sum(1)
            used_bandwidth = float(optimal_bandwidth(standardized))
        else:
            used_bandwidth = float(bandwidth)
        weights = bartlett_kernel_weights(used_bandwidth)
    full = _sandwich(xe, inv_jac, 1 / (nobs - int(debiased) * fc.shape[1]), weights)
    rp_cov = _sandwich(fe, np.eye(nfactor), 1 / (nobs - int(debiased)), weights)
    if debiased:
        adj = np.ones(nloading + nfactor)
        adj[nloading:] = np.sqrt((nobs - fc.shape[1]) / (nobs - 1))
        full = full * np.outer(adj, adj)
    alpha_idx = np.arange(nportfolio) * (nfactor + 1)
    alpha_vcv = full[np.ix_(alpha_idx, alpha_idx)]
    alphas = b[0]
    j_stat = float(alphas @ np.linalg.pinv(alpha_vcv) @ alphas)
    se = standard_errors(full)[:nloading].reshape(nportfolio, nfactor + 1)
    params = b.T
    rp_se = standard_errors(rp_cov)
    residual_ss = float((eps**2).sum())
    total_ss = float(((p - p.mean(0)[None, :]) ** 2).sum())
    rsquared = _r_squared(residual_ss, total_ss, float((p**2).sum()), nobs)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstats = np.where(se != 0, params / se, np.nan)
        rp_t = np.where(rp_se != 0, rp / rp_se, np.nan)
    return TradedFactorFit(
        params=params,
        std_errors=se,
        tstats=tstats,
        risk_premia=rp,
        risk_premia_se=rp_se,
        risk_premia_tstats=rp_t,
        cov=full,
        j_stat=j_stat,
        j_pvalue=float(chi2.sf(j_stat, nportfolio)),
        rsquared=rsquared,
        nobs=nobs,
        bandwidth=used_bandwidth,
    )


def _r_squared(residual_ss: float, total_ss: float, y_ss: float, nobs: int) -> float:
    """1 − SSR/TSS, NaN when TSS is rounding noise (linearmodels ``shared.rsquared``: at most
    ``(max(n, 100)·eps)²·Σy²``)."""
    limit = (max(nobs, 100) * np.finfo(np.float64).eps) ** 2 * y_ss
    if total_ss <= limit:
        return math.nan
    return 1 - residual_ss / total_ss

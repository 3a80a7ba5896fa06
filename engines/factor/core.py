"""Factor models, pure: time-series exposures, cross-sectional regressions, signal evaluation.

Time series (per symbol, ``y_t = α + β·x_t + ε_t`` on factor returns ``x_t``):

* ``RollingOls`` — the streaming path: per bar, O(k²) updates of the window's sums
  ``X'WX, X'Wy, y'Wy`` (add the new row, remove the one leaving the window; with EWMA weights
  ``λ`` every sum decays by ``λ`` first and the leaving row is removed with weight ``λ^W``), then
  one (k+1)×(k+1) solve: alpha, betas, t-stats, R², residual volatility. Rolling (``window`` > 0)
  or expanding (``window`` = 0). Many series are updated in one vectorized call. Newey–West (HAC)
  standard errors are computed from the window's rows (O(W·k²) per bar, rolling windows only).
  The estimates equal statsmodels ``RollingOLS``/``RollingWLS``/``WLS`` (weights ``λ^(T−t)``,
  which WLS is invariant to rescaling), HAC equals ``OLS.fit(cov_type="HAC",
  cov_kwds={"maxlags": L})`` (its default: no small-sample correction); ``hac_lags=None`` is
  statsmodels' rule ``floor(4·(n/100)^(2/9))`` (``sandwich_covariance.S_hac_simple``).
* ``rolling_ols_many`` — the batch path: every symbol's rolling regressions on one shared factor
  matrix in one jitted JAX call (x64): one ``lax.scan`` of the same add/remove recurrences for the
  shared ``X'WX`` (inverted once per bar), a ``jax.vmap`` over symbols for ``X'Wy, y'Wy`` and the
  estimates. Shapes are padded (bars and symbols to the next 2ʲ·(1, 1.25, 1.5, 1.75), at least 256
  bars and 8 symbols) so a
  handful of compiles serve every request; ``warm_up`` compiles them at start.

Cross-section (per date, across symbols):

* ``cross_section_regressions`` — OLS or WLS of returns on characteristics with an intercept;
  ``fama_macbeth`` — the time-series average of the slopes, standard errors from their
  dispersion (Fama & MacBeth 1973; with ``lags`` a Bartlett-kernel HAC of the slope series),
  equal to linearmodels ``FamaMacBeth(...).fit(cov_type="unadjusted"|"kernel")``;
* ``characteristics`` — size (log 20-day dollar volume), momentum 12-1, short-term reversal
  (1 month), volatility (60 days), beta (252 days), each from data up to its date only;
* ``quantile_labels`` (``pandas.qcut`` per date, as alphalens), ``quantile_returns`` and the
  factor-mimicking long-short spread (top minus bottom quantile, equal weights).

Signal evaluation (alphalens-style): ``forward_returns``, per-date Spearman ``information_
coefficient`` (average ranks, as ``scipy.stats.spearmanr``), ``ic_summary`` (mean, std, IR, t),
``quantile_turnover``, and ``evaluate_signal`` over horizons 1/5/20 (IC by horizon is its decay).

Limits: normal equations (not QR), fine for factor returns (condition numbers ~10⁴) but not for
nearly collinear factors; a singular window gives NaN. Sliding sums accumulate rounding at
~1e-16 of the largest sum seen per add/remove, far below the 1e-9 the reference tests hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_A = TypeVar("_A", Array, IntArray)

#: Smallest padded shapes of the batch path (bars, symbols).
MIN_PADDED_BARS = 256
MIN_PADDED_SYMBOLS = 8
DEFAULT_HORIZONS = (1, 5, 20)
#: SSR = y'Wy − β·X'Wy below this share of y'Wy is rounding noise of the subtraction: a perfect
#: fit (a factor regressed on itself), given as SSR 0 (standard errors 0, t-stats infinite).
NOISE = 64 * float(np.finfo(np.float64).eps)


def hac_lag_rule(nobs: int) -> int:
    """statsmodels' default Newey–West lag count: ``floor(4·(nobs/100)^(2/9))``."""
    return int(4.0 * (nobs / 100.0) ** (2.0 / 9.0))  # floor: the value is positive


def bartlett_weights(lags: int) -> Array:
    """Newey–West (Bartlett) weights ``1 − j/(L+1)``, j = 0..L."""
    return 1.0 - np.arange(lags + 1, dtype=np.float64) / (lags + 1.0)


def check_params(n_factors: int, window: int, decay: float, min_obs: int) -> int:
    """Validate the regression settings; the effective ``min_obs`` (0 → window, or k+2 when
    expanding: at least one residual degree of freedom)."""
    if n_factors < 1:
        raise ValueError(f"need at least one factor, got {n_factors}")
    p = n_factors + 1
    if window < 0 or (window and window <= p):
        raise ValueError(f"window must be 0 (expanding) or > {p} (factors + 1), got {window}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    effective = min_obs or window or p + 1
    if effective <= p or (window and effective > window):
        raise ValueError(f"min_obs must be in ({p}, window], got {min_obs}")
    return effective


# ── estimates from sums (shared by the streaming and the batch path) ─────────────────────────


@dataclass(frozen=True, slots=True)
class Fit:
    """Estimates of ``m`` regressions; ``params[:, 0]`` is alpha, ``params[:, 1:]`` the betas.
    NaN where a regression has fewer than ``min_obs`` rows or a singular ``X'WX``."""

    params: Array  # (m, p)
    bse: Array  # (m, p)
    r2: Array  # (m,)
    resid_vol: Array  # (m,)  sqrt(SSR / (n − p)), per bar
    nobs: IntArray  # (m,)
    hac_bse: Array | None = None  # (m, p) Newey–West standard errors when asked for

    @property
    def tvalues(self) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.bse

    @property
    def hac_tvalues(self) -> Array | None:
        if self.hac_bse is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.hac_bse

    def row(self, i: int, factors: tuple[str, ...]) -> dict[str, Any]:
        """Regression ``i`` as JSON-ready numbers (non-finite → ``None``)."""
        hac = self.hac_tvalues
        return _row(
            factors,
            int(self.nobs[i]),
            [finite_or_none(v) for v in self.params[i]],
            [finite_or_none(v) for v in self.tvalues[i]],
            finite_or_none(self.r2[i]),
            finite_or_none(self.resid_vol[i]),
            None if hac is None else [finite_or_none(v) for v in hac[i]],
        )

    def rows(self, factors: tuple[str, ...]) -> list[dict[str, Any]]:
        """Every regression's ``row`` (the same dicts), the t-stats computed once for all."""
        t = _none_if_not_finite(self.tvalues)
        params = _none_if_not_finite(self.params)
        r2, vol = _none_if_not_finite(self.r2), _none_if_not_finite(self.resid_vol)
        hac = None if self.hac_tvalues is None else _none_if_not_finite(self.hac_tvalues)
        return [
            _row(factors, n, params[i], t[i], r2[i], vol[i], None if hac is None else hac[i])
            for i, n in enumerate(self.nobs.tolist())
        ]


def _row(
    factors: tuple[str, ...],
    n: int,
    params: list[Any],
    t: list[Any],
    r2: Any,
    resid_vol: Any,
    hac: list[Any] | None,
) -> dict[str, Any]:
    """One regression's published numbers (``Fit.row``), from values already JSON-ready."""
    out: dict[str, Any] = {
        "n": n,
        "alpha": params[0],
        "betas": dict(zip(factors, params[1:], strict=True)),
        "t_alpha": t[0],
        "t_betas": dict(zip(factors, t[1:], strict=True)),
        "r2": r2,
        "resid_vol": resid_vol,
    }
    if hac is not None:
        out["hac_t_alpha"] = hac[0]
        out["hac_t_betas"] = dict(zip(factors, hac[1:], strict=True))
    return out


def _none_if_not_finite(a: Array) -> list[Any]:
    """``a.tolist()`` with every non-finite value ``None``."""
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()  # type: ignore[no-any-return]


def finite_or_none(value: float) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def _inverse(xx: Array) -> Array:
    """Batched inverse; a singular matrix gives a NaN inverse instead of failing the batch."""
    try:
        return np.asarray(np.linalg.inv(xx), dtype=np.float64)
    except np.linalg.LinAlgError:
        out = np.full_like(xx, np.nan)
        for i, a in enumerate(xx):
            try:
                out[i] = np.linalg.inv(a)
            except np.linalg.LinAlgError:
                continue
        return out


def fit_from_sums(xx: Array, xy: Array, yy: Array, nobs: IntArray, min_obs: int) -> Fit:
    """OLS/WLS estimates from the sums ``X'WX (m,p,p)``, ``X'Wy (m,p)``, ``y'Wy (m,)`` with the
    constant first: β = (X'WX)⁻¹X'Wy, SSR = y'Wy − β·X'Wy, s² = SSR/(n−p), cov = s²(X'WX)⁻¹,
    R² = 1 − SSR/TSS with TSS = y'Wy − (Σwy)²/Σw (statsmodels ``WLS`` ``rsquared``)."""
    p = xx.shape[-1]
    ok = nobs >= min_obs
    safe = np.where(ok[:, None, None], xx, np.eye(p))
    inv = _inverse(safe)
    params = np.einsum("mij,mj->mi", inv, xy)
    ssr = yy - np.einsum("mi,mi->m", params, xy)
    ssr = np.where(ssr > NOISE * yy, ssr, 0.0)
    dof = np.maximum(nobs - p, 1)
    s2 = ssr / dof
    with np.errstate(invalid="ignore", divide="ignore"):
        bse = np.sqrt(s2[:, None] * np.diagonal(inv, axis1=1, axis2=2))
        tss = yy - xy[:, 0] ** 2 / xx[:, 0, 0]
        r2 = 1.0 - ssr / tss
    nan = ~ok[:, None]
    return Fit(
        params=np.where(nan, np.nan, params),
        bse=np.where(nan, np.nan, bse),
        r2=np.where(ok, r2, np.nan),
        resid_vol=np.where(ok, np.sqrt(s2), np.nan),
        nobs=nobs.astype(np.int64),
    )


def hac_cov(x: Array, resid: Array, xx_inv: Array, lags: int | None) -> Array:
    """Newey–West covariance of one regression's params, as statsmodels ``cov_type="HAC"``
    (``cov_hac_simple``: Bartlett weights, ``use_correction=False``). ``x`` (n,p) and
    ``resid`` (n,) are the (weighted) regressors and residuals, ``xx_inv`` = (X'X)⁻¹."""
    n = x.shape[0]
    lags = hac_lag_rule(n) if lags is None else lags
    xu = x * resid[:, None]
    weights = bartlett_weights(lags)
    meat = xu.T @ xu
    for j in range(1, lags + 1):
        gamma = xu[j:].T @ xu[:-j]
        meat += weights[j] * (gamma + gamma.T)
    return xx_inv @ meat @ xx_inv


# ── streaming: many series, O(k²) per bar ───────────────────────────────────────────────────


class RollingOls:
    """Rolling (``window`` > 0) or expanding (0) regressions of many series on ``[1, x]``,
    updated one bar at a time; a series is a slot (``add_series``). EWMA weights with ``decay``
    λ < 1 (newest weight 1). ``hac=True`` adds Newey–West standard errors (rolling only,
    ``hac_lags=None``: statsmodels' rule on the window length), once a window is full."""

    def __init__(
        self,
        n_factors: int,
        *,
        window: int = 60,
        decay: float = 1.0,
        min_obs: int = 0,
        hac: bool = False,
        hac_lags: int | None = None,
        capacity: int = 8,
    ) -> None:
        self.min_obs = check_params(n_factors, window, decay, min_obs)
        if hac and not window:
            raise ValueError("HAC standard errors need a rolling window (window > 0)")
        if hac_lags is not None and not 0 <= hac_lags < max(window, 1):
            raise ValueError(f"hac_lags must be in [0, window), got {hac_lags}")
        self.k = n_factors
        self.p = n_factors + 1
        self.window = window
        self.decay = decay
        self.hac = hac
        self.hac_lags = hac_lags
        self._drop = decay**window if window else 0.0
        self.size = 0
        self.capacity = max(capacity, 1)
        c, p, w = self.capacity, self.p, max(window, 1)
        self.xx: Array = np.zeros((c, p, p))
        self.xy: Array = np.zeros((c, p))
        self.yy: Array = np.zeros(c)
        self.nobs: IntArray = np.zeros(c, dtype=np.int64)
        self.head: IntArray = np.zeros(c, dtype=np.int64)
        self.ring_x: Array = np.zeros((c, w, p))
        self.ring_y: Array = np.zeros((c, w))

    def _grow(self) -> None:
        self.capacity *= 2
        self.xx, self.xy, self.yy = _grown(self.xx), _grown(self.xy), _grown(self.yy)
        self.nobs, self.head = _grown(self.nobs), _grown(self.head)
        self.ring_x, self.ring_y = _grown(self.ring_x), _grown(self.ring_y)

    def add_series(self) -> int:
        """A new series (all sums zero); returns its slot."""
        if self.size == self.capacity:
            self._grow()
        self.size += 1
        return self.size - 1

    def update(self, slots: IntArray, y: Array, x: Array) -> Fit:
        """Add one bar to each series in ``slots`` (distinct): ``y`` (m,), ``x`` (m, k) finite.
        Returns the estimates after the bar."""
        slots = np.asarray(slots, dtype=np.int64)
        m = slots.shape[0]
        row = np.empty((m, self.p))
        row[:, 0] = 1.0
        row[:, 1:] = x
        y = np.asarray(y, dtype=np.float64)
        lam = self.decay
        xx, xy, yy = self.xx[slots], self.xy[slots], self.yy[slots]
        if lam != 1.0:
            xx, xy, yy = lam * xx, lam * xy, lam * yy
        nobs = self.nobs[slots]
        if self.window:
            head = self.head[slots]
            full = nobs >= self.window
            if full.any():
                d = np.where(full, self._drop, 0.0)
                ox, oy = self.ring_x[slots, head], self.ring_y[slots, head]
                xx = xx - d[:, None, None] * (ox[:, :, None] * ox[:, None, :])
                xy = xy - (d * oy)[:, None] * ox
                yy = yy - d * oy * oy
            self.ring_x[slots, head] = row
            self.ring_y[slots, head] = y
            self.head[slots] = (head + 1) % self.window
            nobs = np.minimum(nobs + 1, self.window)
        else:
            nobs = nobs + 1
        xx = xx + row[:, :, None] * row[:, None, :]
        xy = xy + y[:, None] * row
        yy = yy + y * y
        self.xx[slots], self.xy[slots], self.yy[slots], self.nobs[slots] = xx, xy, yy, nobs
        fit = fit_from_sums(xx, xy, yy, nobs, self.min_obs)
        if self.hac:
            return Fit(
                fit.params, fit.bse, fit.r2, fit.resid_vol, fit.nobs, self._hac_bse(slots, fit)
            )
        return fit

    def _hac_bse(self, slots: IntArray, fit: Fit) -> Array:
        """Newey–West standard errors of every full window among ``slots`` at once: the rows
        oldest first (weighted by √λ^age), residuals, the scores' Bartlett-weighted
        autocovariances summed over the window — one stacked numpy product per lag for all
        slots (``hac_cov``'s numbers, the same for a slot whatever else is in the call)."""
        m, w = slots.shape[0], self.window
        out = np.full((m, self.p), np.nan)
        use = (fit.nobs >= w) & np.isfinite(fit.params).all(axis=1)
        if not use.any():
            return out
        rows = np.flatnonzero(use)
        chosen = slots[rows]
        root_w = np.sqrt(self.decay ** np.arange(w - 1, -1, -1, dtype=np.float64))
        order = (self.head[chosen][:, None] + np.arange(w)) % w  # (n, w) oldest first
        x = self.ring_x[chosen[:, None], order] * root_w[:, None]  # (n, w, p)
        y = self.ring_y[chosen[:, None], order] * root_w  # (n, w)
        resid = y - np.matmul(x, fit.params[rows][:, :, None])[:, :, 0]
        xu = x * resid[:, :, None]
        xu_t = np.swapaxes(xu, 1, 2)  # (n, p, w)
        lags = hac_lag_rule(w) if self.hac_lags is None else self.hac_lags
        weights = bartlett_weights(lags)
        meat = np.matmul(xu_t, xu)
        for j in range(1, lags + 1):
            gamma = np.matmul(xu_t[:, :, j:], xu[:, :-j])
            meat += weights[j] * (gamma + np.swapaxes(gamma, 1, 2))
        inv = _inverse(self.xx[chosen])
        cov = np.matmul(np.matmul(inv, meat), inv)
        out[rows] = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        return out


def _grown(a: _A) -> _A:
    """``a`` with its first axis doubled (zeros appended)."""
    return np.concatenate([a, np.zeros_like(a)])


# ── batch: all symbols in one vmapped JAX call ───────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class RollingSeries:
    """Rolling estimates of ``S`` symbols over ``T`` bars (row ``t`` uses bars ≤ t only)."""

    params: Array  # (S, T, p)
    bse: Array  # (S, T, p)
    r2: Array  # (S, T)
    resid_vol: Array  # (S, T)
    nobs: IntArray  # (T,)

    @property
    def tvalues(self) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.bse


def _outer(a: jax.Array, b: jax.Array) -> jax.Array:
    return a[..., :, None] * b[..., None, :]


def _rolling_kernel(
    y: jax.Array,  # (S, T)
    y_old: jax.Array,  # (S, T): the row leaving the window at t (0 when none)
    x: jax.Array,  # (T, p) with the constant column
    x_old: jax.Array,  # (T, p)
    leave: jax.Array,  # (T,) weight of the leaving row: λ^W or 0
    lam: jax.Array,  # () decay
    nobs: jax.Array,  # (T,)
    min_obs: jax.Array,  # ()
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    def shared_step(xx: jax.Array, item: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        xt, xo, d = item
        xx = lam * xx - d * _outer(xo, xo) + _outer(xt, xt)
        return xx, xx

    p = x.shape[1]
    _, xx = jax.lax.scan(shared_step, jnp.zeros((p, p)), (x, x_old, leave))
    ok = nobs >= min_obs
    inv = jnp.linalg.inv(jnp.where(ok[:, None, None], xx, jnp.eye(p)))
    diag = jnp.diagonal(inv, axis1=1, axis2=2)

    def one_symbol(ys: jax.Array, yo: jax.Array) -> tuple[jax.Array, ...]:
        def step(
            carry: tuple[jax.Array, jax.Array], item: tuple[jax.Array, ...]
        ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
            xy, yy = carry
            xt, xo, yt, yot, d = item
            xy = lam * xy - d * yot * xo + yt * xt
            yy = lam * yy - d * yot * yot + yt * yt
            return (xy, yy), (xy, yy)

        _, (xy, yy) = jax.lax.scan(step, (jnp.zeros(p), jnp.zeros(())), (x, x_old, ys, yo, leave))
        params = jnp.einsum("tij,tj->ti", inv, xy)
        ssr = yy - jnp.einsum("ti,ti->t", params, xy)
        ssr = jnp.where(ssr > NOISE * yy, ssr, 0.0)
        s2 = ssr / jnp.maximum(nobs - p, 1)
        bse = jnp.sqrt(s2[:, None] * diag)
        r2 = 1.0 - ssr / (yy - xy[:, 0] ** 2 / xx[:, 0, 0])
        nan = jnp.nan
        return (
            jnp.where(ok[:, None], params, nan),
            jnp.where(ok[:, None], bse, nan),
            jnp.where(ok, r2, nan),
            jnp.where(ok, jnp.sqrt(s2), nan),
        )

    params, bse, r2, vol = jax.vmap(one_symbol)(y, y_old)
    return params, bse, r2, vol


_rolling_jit = jax.jit(_rolling_kernel)


def padded(n: int, minimum: int) -> int:
    """The padded length for ``n``: the next of 2ʲ·(1, 1.25, 1.5, 1.75), at least ``minimum``
    (at most 25 % padding, four shapes per doubling)."""
    if n <= minimum:
        return minimum
    base = 1 << (n - 1).bit_length() - 1  # the power of two below n
    return next(base * q // 4 for q in (5, 6, 7, 8) if base * q // 4 >= n)


def rolling_ols_many(
    y: Array, x: Array, *, window: int = 60, decay: float = 1.0, min_obs: int = 0
) -> RollingSeries:
    """Rolling (``window`` > 0) or expanding (0) regressions of every row of ``y`` (S, T) on
    ``[1, x]`` with ``x`` (T, k) shared, EWMA ``decay``; finite inputs. The same recurrences as
    ``RollingOls``, so the two paths agree to rounding."""
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    s, t = y.shape
    k = x.shape[1]
    effective = check_params(k, window, decay, min_obs)
    if x.shape[0] != t:
        raise ValueError(f"x has {x.shape[0]} rows, y {t} columns")
    tp, sp = padded(t, MIN_PADDED_BARS), padded(s, MIN_PADDED_SYMBOLS)
    xc = np.zeros((tp, k + 1))
    xc[:t, 0] = 1.0
    xc[:t, 1:] = x
    yp = np.zeros((sp, tp))
    yp[:s, :t] = y
    idx = np.arange(tp)
    if window:
        x_old = np.zeros_like(xc)
        x_old[window:] = xc[:-window]
        y_old = np.zeros_like(yp)
        y_old[:, window:] = yp[:, :-window]
        leave = np.where(idx >= window, decay**window, 0.0)
        nobs = np.minimum(idx + 1, window)
    else:
        x_old, y_old = np.zeros_like(xc), np.zeros_like(yp)
        leave = np.zeros(tp)
        nobs = idx + 1
    nobs = np.where(idx < t, nobs, 0)
    out = _rolling_jit(
        jnp.asarray(yp),
        jnp.asarray(y_old),
        jnp.asarray(xc),
        jnp.asarray(x_old),
        jnp.asarray(leave),
        jnp.asarray(decay, dtype=jnp.float64),
        jnp.asarray(nobs),
        jnp.asarray(effective),
    )
    params, bse, r2, vol = (np.asarray(a)[:s, :t] for a in out)
    return RollingSeries(params, bse, r2, vol, nobs[:t].astype(np.int64))


def warm_up(bars: int = 4096, symbols: int = 8, n_factors: int = 1) -> None:
    """Compile the batch path for ``symbols`` × ``bars`` (padded) at start, never on a request."""
    rng = np.random.default_rng(0)
    rolling_ols_many(
        rng.normal(size=(symbols, bars)), rng.normal(size=(bars, n_factors)), window=n_factors + 2
    )


def full_sample_ols(y: Array, x: Array, *, hac_lags: int | None = None) -> Fit:
    """One OLS over all rows with Newey–West standard errors (statsmodels ``OLS(...).fit(
    cov_type="HAC", cov_kwds={"maxlags": L})``; ``None``: its lag rule on n)."""
    y = np.asarray(y, dtype=np.float64)
    xc = np.column_stack([np.ones(len(y)), np.asarray(x, dtype=np.float64)])
    p = xc.shape[1]
    xx, xy = xc.T @ xc, xc.T @ y
    fit = fit_from_sums(xx[None], xy[None], np.array([y @ y]), np.array([len(y)]), p + 1)
    hac = np.full((1, p), np.nan)
    if np.isfinite(fit.params).all():
        cov = hac_cov(xc, y - xc @ fit.params[0], _inverse(xx[None])[0], hac_lags)
        hac[0] = np.sqrt(np.diagonal(cov))
    return Fit(fit.params, fit.bse, fit.r2, fit.resid_vol, fit.nobs, hac)


# ── cross-section ──────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class CrossSection:
    """Per-date regressions: ``slopes[d]`` = (intercept, characteristics…), NaN for a date with
    fewer complete rows than parameters or a rank-deficient design."""

    slopes: Array  # (D, K+1)
    r2: Array  # (D,)
    nobs: IntArray  # (D,)


def cross_section_regressions(
    returns: Array, chars: Array, weights: Array | None = None
) -> CrossSection:
    """Per date ``d``: OLS (or WLS with ``weights``) of ``returns[d]`` (N,) on
    ``[1, chars[d]]`` (N, K) over the symbols with finite values (and positive weight)."""
    d_count, _, k = chars.shape
    p = k + 1
    slopes = np.full((d_count, p), np.nan)
    r2 = np.full(d_count, np.nan)
    nobs = np.zeros(d_count, dtype=np.int64)
    for d in range(d_count):
        y, x = returns[d], chars[d]
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
        w = np.ones_like(y)
        if weights is not None:
            w = weights[d]
            ok &= np.isfinite(w) & (w > 0)
        n = int(ok.sum())
        nobs[d] = n
        if n < p:
            continue
        root = np.sqrt(w[ok])
        design = np.column_stack([np.ones(n), x[ok]]) * root[:, None]
        target = y[ok] * root
        beta, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
        if rank < p:
            continue
        slopes[d] = beta
        resid = target - design @ beta
        mean = np.sum(w[ok] * y[ok]) / np.sum(w[ok])
        tss = np.sum(w[ok] * (y[ok] - mean) ** 2)
        r2[d] = 1.0 - float(resid @ resid) / tss if tss > 0 else np.nan
    return CrossSection(slopes, r2, nobs)


@dataclass(frozen=True, slots=True)
class FamaMacBeth:
    """Time-series averages of the per-date slopes and their standard errors."""

    params: Array  # (K+1,)
    bse: Array
    tvalues: Array
    periods: int


def fama_macbeth(slopes: Array, *, lags: int = 0) -> FamaMacBeth:
    """Fama–MacBeth (1973): mean of the per-date slopes over the dates that were estimated;
    cov = Γ/(T(T−1)) with Γ = Σ e e' (+ Bartlett-weighted autocovariances up to ``lags``), the
    estimator of linearmodels ``FamaMacBethCovariance`` (``debiased=True``)."""
    used = slopes[np.isfinite(slopes).all(axis=1)]
    t = used.shape[0]
    if t < 2:
        nan = np.full(slopes.shape[1], np.nan)
        return FamaMacBeth(nan, nan, nan, t)
    params = used.mean(axis=0)
    e = used - params
    weights = bartlett_weights(lags)
    gamma = e.T @ e
    for j in range(1, lags + 1):
        g = e[j:].T @ e[:-j]
        gamma += weights[j] * (g + g.T)
    bse = np.sqrt(np.diagonal(gamma) / t / (t - 1))
    return FamaMacBeth(params, bse, params / bse, t)


def _rolling_sum(a: Array, n: int) -> Array:
    """Trailing sums over ``n`` rows (NaN for the first n−1 and where a NaN is inside)."""
    bad = ~np.isfinite(a)
    zero = np.zeros((1, *a.shape[1:]))
    c = np.cumsum(np.vstack([zero, np.where(bad, 0.0, a)]), axis=0)
    holes = np.cumsum(np.vstack([zero, bad]), axis=0)
    out = np.full(a.shape, np.nan)
    out[n - 1 :] = np.where(holes[n:] - holes[:-n] > 0, np.nan, c[n:] - c[:-n])
    return out


def characteristics(close: Array, volume: Array, market: Array) -> dict[str, Array]:
    """Per date and symbol (D, N), from prices and volumes up to that date only: ``size`` =
    log of the 20-day mean dollar volume, ``momentum`` 12-1 = close[t−21]/close[t−252] − 1,
    ``reversal`` = close[t]/close[t−21] − 1, ``volatility`` = 60-day std (ddof 1) of daily
    returns, ``beta`` = 252-day OLS beta of daily returns on ``market``'s (D,)."""
    d = close.shape[0]
    ret = np.full(close.shape, np.nan)
    ret[1:] = close[1:] / close[:-1] - 1.0
    mret = np.full(d, np.nan)
    mret[1:] = market[1:] / market[:-1] - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.log(_rolling_sum(close * volume, 20) / 20.0)
    momentum = np.full(close.shape, np.nan)
    momentum[252:] = close[231:-21] / close[:-252] - 1.0
    reversal = np.full(close.shape, np.nan)
    reversal[21:] = close[21:] / close[:-21] - 1.0
    n = 60
    s1, s2 = _rolling_sum(ret, n), _rolling_sum(ret * ret, n)
    volatility = np.sqrt(np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1))
    m = 252
    mm = mret[:, None] * np.ones_like(ret)
    sxy = _rolling_sum(ret * mm, m)
    sx, sy, sxx = _rolling_sum(mm, m), _rolling_sum(ret, m), _rolling_sum(mm * mm, m)
    beta = (sxy - sx * sy / m) / (sxx - sx * sx / m)
    return {
        "size": size,
        "momentum": momentum,
        "reversal": reversal,
        "volatility": volatility,
        "beta": beta,
    }


# ── signal evaluation ──────────────────────────────────────────────────────────────────────


def forward_returns(close: Array, horizon: int) -> Array:
    """``close[t+h]/close[t] − 1`` per date and symbol (D, N); NaN for the last ``h`` dates."""
    out = np.full(close.shape, np.nan)
    out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def spearman(a: Array, b: Array) -> float:
    """Spearman rank correlation of two equal-length finite vectors (average ranks for ties);
    NaN when either is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else math.nan


def information_coefficient(signal: Array, fwd: Array, *, min_names: int = 3) -> Array:
    """Per-date Spearman IC of ``signal`` vs ``fwd`` (D, N) over the symbols where both are
    finite; NaN for a date with fewer than ``min_names``."""
    out = np.full(signal.shape[0], np.nan)
    for d in range(signal.shape[0]):
        ok = np.isfinite(signal[d]) & np.isfinite(fwd[d])
        if ok.sum() >= min_names:
            out[d] = spearman(signal[d, ok], fwd[d, ok])
    return out


@dataclass(frozen=True, slots=True)
class IcSummary:
    n: int
    mean: float
    std: float
    ir: float
    t: float

    def to_payload(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": finite_or_none(self.mean),
            "std": finite_or_none(self.std),
            "ir": finite_or_none(self.ir),
            "t": finite_or_none(self.t),
        }


def ic_summary(ic: Array) -> IcSummary:
    """Mean, std (ddof 1), IR = mean/std and t = IR·√n over the finite per-date ICs."""
    v = ic[np.isfinite(ic)]
    n = int(v.size)
    if n < 2:
        return IcSummary(n, float(v.mean()) if n else math.nan, math.nan, math.nan, math.nan)
    mean, std = float(v.mean()), float(v.std(ddof=1))
    ir = mean / std if std > 0 else math.nan
    return IcSummary(n, mean, std, ir, ir * math.sqrt(n))


@dataclass(slots=True)
class RunningIc:
    """Streaming ``ic_summary``: Welford's mean and variance of the per-date ICs."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    last: float = math.nan
    history: list[float] = field(default_factory=list)

    def add(self, ic: float) -> None:
        self.last = ic
        self.n += 1
        delta = ic - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (ic - self.mean)

    def summary(self) -> IcSummary:
        if self.n < 2:
            return IcSummary(self.n, self.mean if self.n else math.nan, *([math.nan] * 3))
        std = math.sqrt(self.m2 / (self.n - 1))
        ir = self.mean / std if std > 0 else math.nan
        return IcSummary(self.n, self.mean, std, ir, ir * math.sqrt(self.n))


def quantile_labels(signal: Array, quantiles: int) -> Array:
    """Per date, the quantile (0 = lowest) of each finite value, as ``pandas.qcut(values,
    quantiles, labels=False)`` (linear-interpolated edges, right-closed bins, lowest included);
    NaN where the value is NaN or the date has fewer finite values than quantiles."""
    out = np.full(signal.shape, np.nan)
    for d in range(signal.shape[0]):
        ok = np.isfinite(signal[d])
        if ok.sum() < quantiles:
            continue
        v = signal[d, ok]
        edges = np.quantile(v, np.linspace(0.0, 1.0, quantiles + 1))
        out[d, ok] = np.clip(np.searchsorted(edges, v, side="left") - 1, 0, quantiles - 1)
    return out


def quantile_returns(labels: Array, fwd: Array, quantiles: int) -> Array:
    """Equal-weighted mean forward return per date and quantile (D, q); NaN when empty."""
    out = np.full((labels.shape[0], quantiles), np.nan)
    for q in range(quantiles):
        member = (labels == q) & np.isfinite(fwd)
        count = member.sum(axis=1)
        total = np.where(member, fwd, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, q] = np.where(count > 0, total / count, np.nan)
    return out


def quantile_turnover(labels: Array, quantiles: int) -> Array:
    """Per date and quantile, the share of its names that were not in it on the previous date
    (alphalens ``quantile_turnover``, period 1); NaN on the first date or an empty quantile."""
    out = np.full((labels.shape[0], quantiles), np.nan)
    for q in range(quantiles):
        member = labels == q
        new = member[1:] & ~member[:-1]
        count = member[1:].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[1:, q] = np.where(count > 0, new.sum(axis=1) / count, np.nan)
    return out


def evaluate_signal(
    signal: Array,
    close: Array,
    *,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
    quantiles: int = 5,
    min_names: int = 3,
) -> dict[int, dict[str, Any]]:
    """Per horizon: the IC series and its summary, quantile mean returns, the top-minus-bottom
    spread per date and its mean, and the quantiles' mean turnover. ``signal`` and ``close``
    are (D, N); the signal at date d is compared with the return from d to d+h."""
    labels = quantile_labels(signal, quantiles)
    turnover = quantile_turnover(labels, quantiles)
    out: dict[int, dict[str, Any]] = {}
    for h in horizons:
        fwd = forward_returns(close, h)
        ic = information_coefficient(signal, fwd, min_names=min_names)
        q_ret = quantile_returns(labels, fwd, quantiles)
        spread = q_ret[:, -1] - q_ret[:, 0]
        out[h] = {
            "ic": ic,
            "summary": ic_summary(ic),
            "quantile_returns": q_ret,
            "quantile_mean": np.nanmean(q_ret, axis=0),
            "spread": spread,
            "spread_mean": float(np.nanmean(spread)),
            "turnover": np.nanmean(turnover, axis=0),
        }
    return out


def factor_rank_autocorrelation(signal: Array) -> Array:
    """Per date, the Pearson correlation of the signal's per-date ranks (average ranks over the
    finite values) with the previous date's, over the names ranked on both dates (alphalens
    ``factor_rank_autocorrelation``, period 1: high values mean slow turnover); NaN on the first
    date or with fewer than two common names."""
    ranks = np.full(signal.shape, np.nan)
    for d in range(signal.shape[0]):
        ok = np.isfinite(signal[d])
        ranks[d, ok] = rankdata(signal[d, ok])
    out = np.full(signal.shape[0], np.nan)
    for d in range(1, signal.shape[0]):
        both = np.isfinite(ranks[d]) & np.isfinite(ranks[d - 1])
        if both.sum() < 2:
            continue
        a, b = (
            ranks[d, both] - ranks[d, both].mean(),
            ranks[d - 1, both] - ranks[d - 1, both].mean(),
        )
        denom = math.sqrt(float(a @ a) * float(b @ b))
        out[d] = float(a @ b) / denom if denom > 0 else np.nan
    return out


@dataclass(frozen=True, slots=True)
class QuantileTable:
    """alphalens ``mean_return_by_quantile`` for one horizon: the mean over dates of each
    quantile's per-date mean forward return, its standard error (std over dates, ddof 1, / √n),
    the same with returns demeaned per date, and alphalens' spread (``compute_mean_returns_
    spread``: a dollar-neutral book at 100 % gross, (top − bottom)/2) per date, its mean, and
    the standard error of the mean spread √(se_top² + se_bottom²)/2."""

    mean: Array  # (q,)
    std_error: Array  # (q,)
    mean_demeaned: Array  # (q,)
    std_error_demeaned: Array  # (q,)
    spread: Array  # (D,)
    spread_mean: float
    spread_std_error: float


def _mean_and_error(per_date: Array) -> tuple[Array, Array]:
    count = np.isfinite(per_date).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(per_date, axis=0)
        std = np.nanstd(per_date, axis=0, ddof=1)
        return mean, std / np.sqrt(count)


def quantile_table(labels: Array, fwd: Array, quantiles: int) -> QuantileTable:
    """``labels`` and ``fwd`` (D, N) over the same rows (NaN where a row is not used)."""
    per_date = quantile_returns(labels, fwd, quantiles)
    used = np.isfinite(labels) & np.isfinite(fwd)
    with np.errstate(invalid="ignore", divide="ignore"):
        day_mean = np.where(used, fwd, 0.0).sum(axis=1) / used.sum(axis=1)
    demeaned = quantile_returns(labels, fwd - day_mean[:, None], quantiles)
    mean, error = _mean_and_error(per_date)
    mean_dm, error_dm = _mean_and_error(demeaned)
    spread = (per_date[:, -1] - per_date[:, 0]) / 2.0
    with np.errstate(invalid="ignore"):
        spread_error = float(np.sqrt(error[-1] ** 2 + error[0] ** 2) / 2.0)
    return QuantileTable(mean, error, mean_dm, error_dm, spread, float(np.nanmean(spread)),
                         spread_error)  # fmt: skip


def factor_tables(
    signal: Array,
    close: Array,
    *,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
    quantiles: int = 5,
) -> dict[str, Any]:
    """alphalens' tear-sheet tables for one signal (D, N) on closes (D, N), on alphalens' clean
    rows (``get_clean_factor_and_forward_returns``: a row is used when the signal and the
    forward return of *every* horizon are finite, so the last ``max(horizons)`` dates drop):
    ``labels`` (0-based quantile per row), per horizon ``ic`` (per-date Spearman), ``ic_summary``
    and a ``QuantileTable``; ``turnover`` (D, q) and ``rank_autocorrelation`` (D,)."""
    fwd = {h: forward_returns(close, h) for h in horizons}
    used = np.isfinite(signal)
    for f in fwd.values():
        used &= np.isfinite(f)
    clean = np.where(used, signal, np.nan)
    labels = quantile_labels(clean, quantiles)
    turnover = quantile_turnover(labels, quantiles)
    turnover[1:][~np.isfinite(labels[:-1]).any(axis=1)] = np.nan  # no previous date to turn over
    out: dict[str, Any] = {
        "rows": used,
        "labels": labels,
        "turnover": turnover,
        "rank_autocorrelation": factor_rank_autocorrelation(clean),
        "horizons": {},
    }
    for h, f in fwd.items():
        f = np.where(used, f, np.nan)
        ic = information_coefficient(clean, f, min_names=2)
        out["horizons"][h] = {"ic": ic, "ic_summary": ic_summary(ic),
                              "quantiles": quantile_table(labels, f, quantiles)}  # fmt: skip
    return out

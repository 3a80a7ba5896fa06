"""Analytics: performance statistics of a return stream, streaming and batch, same numbers.

Conventions are empyrical's (``empyrical-reloaded`` 0.7, ``empyrical/stats.py``) by default, so a
number here can be checked against the library a quant already trusts:

* returns are simple, non-cumulative, one per period; annualisation multiplies by a stated
  number of periods per year (``PERIODS_PER_YEAR``: daily 252, weekly 52, monthly 12,
  quarterly 4, yearly 1, and minute 252 × 390 for the US regular session), never guessed
  silently: ``infer_period`` names the periodicity it read from the dates and the caller passes it;
* NaN in a batch array means "no observation" exactly as empyrical treats it (``nanmean``,
  ``nanstd``, ``nanprod`` ignore it, ``cum_returns`` counts it as 0, ``annual_return`` still
  counts its period, ``value_at_risk`` and ``skew``/``kurtosis`` propagate it); ±inf is rejected
  with ``AnalyticsInputError``. The streaming accumulator accepts finite returns only;
* statistics of a series too short for them are NaN (empyrical's length rules), not errors.

``convention="quantstats"`` (quantstats 0.0.86, ``quantstats/stats.py``) changes only the
statistics whose formulas differ there:

* ``skew``/``kurtosis``: pandas' bias-corrected G1 and excess G2 (``Series.skew``/``kurtosis``)
  instead of scipy's biased moment ratios;
* ``value_at_risk``: parametric, ``μ + σ·Φ⁻¹(cutoff)`` (σ with ddof 1), instead of the historical
  percentile; ``conditional_value_at_risk``: the normal expected shortfall
  ``μ − σ·φ(Φ⁻¹(α))/α`` instead of the mean of the worst ``⌊(n−1)α⌋+1`` returns;
* ``alpha``: arithmetic, ``(mean(r) − β·mean(b))·periods`` (``qs.stats.greeks``), instead of the
  compounded ``(1 + mean(r − β·b))^periods − 1``.

Sharpe, Sortino, volatility, CAGR, max drawdown, Calmar, Omega and tail ratio agree between the
two libraries for finite input (checked in the tests), so there is one formula for each.

Beyond empyrical: the Probabilistic Sharpe Ratio (Bailey & López de Prado 2012, "The Sharpe
Ratio Efficient Frontier", J. of Risk 15(2), eq. 9) and the Deflated Sharpe Ratio (Bailey &
López de Prado 2014, "The Deflated Sharpe Ratio", J. Portfolio Management 40(5), eqs. 2 and 5),
a drawdown table, rolling windows, monthly returns, and trade statistics of closed trades' PnL.

``StreamingStats.update`` keeps O(1) moment state (Welford/Pébay updates) plus one sorted list
for the percentile statistics (O(log n) search, one memmove insert), and returns after each
return the same ``Stats`` that ``compute_stats`` gives on the prefix (to rounding: the batch side
sums pairwise as numpy does, the streaming side sums sequentially).
"""

from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import special

F64 = npt.NDArray[np.float64]
Convention = Literal["empyrical", "quantstats"]

#: Periods per year for each periodicity name (empyrical ``periods.ANNUALIZATION_FACTORS`` plus
#: minute bars: 252 sessions × 390 regular-session minutes).
PERIODS_PER_YEAR: dict[str, float] = {
    "minute": 252.0 * 390.0,
    "daily": 252.0,
    "weekly": 52.0,
    "monthly": 12.0,
    "quarterly": 4.0,
    "yearly": 1.0,
}

#: scipy's linregress / empyrical's beta: a benchmark variance under this is "no variance".
_MIN_BENCHMARK_VARIANCE = 1.0e-30
#: pandas ``nanops._zero_out_fperr``: sums of moments under this are taken as 0 (quantstats).
_PANDAS_FPERR = 1.0e-14
_EULER_GAMMA = 0.5772156649015329
_EPS = float(np.finfo(np.float64).eps)


class AnalyticsInputError(ValueError):
    """Bad input to an analytics function; ``parameter`` names the argument at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


# ----------------------------------------------------------------------------------------------
# Input checks and periodicity


def as_returns(values: npt.ArrayLike, parameter: str = "returns", *, allow_nan: bool = True) -> F64:
    """A 1-D float64 copy-free view of ``values``; ±inf (and NaN unless allowed) rejected."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnalyticsInputError(parameter, f"not an array of numbers ({exc})") from exc
    if arr.ndim != 1:
        raise AnalyticsInputError(parameter, f"must be 1-D, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise AnalyticsInputError(parameter, "contains ±inf")
    if not allow_nan and np.isnan(arr).any():
        raise AnalyticsInputError(parameter, "contains NaN")
    return arr


def _aligned(returns: npt.ArrayLike, benchmark: npt.ArrayLike) -> tuple[F64, F64]:
    r = as_returns(returns, "returns")
    b = as_returns(benchmark, "benchmark")
    if r.shape != b.shape:
        raise AnalyticsInputError(
            "benchmark", f"length {b.shape[0]} does not match returns length {r.shape[0]}"
        )
    return r, b


def annualization_factor(period: str = "daily", annualization: float | None = None) -> float:
    """Periods per year: ``annualization`` when given, else the table entry for ``period``."""
    if annualization is not None:
        if not (math.isfinite(annualization) and annualization > 0):
            raise AnalyticsInputError("annualization", "must be a positive finite number")
        return float(annualization)
    try:
        return PERIODS_PER_YEAR[period]
    except KeyError:
        names = ", ".join(PERIODS_PER_YEAR)
        raise AnalyticsInputError("period", f"unknown period {period!r} (one of {names})") from None


def infer_period(dates: npt.ArrayLike) -> str:
    """The periodicity name of a date/time index from its median spacing (≥ 2 stamps).

    Calendar gaps (weekends, holidays) are why the median, not the mean, is used: daily bars
    have a median gap of one day, weekly seven, monthly 28–31, quarterly 90–92, yearly 365–366.
    """
    stamps = np.asarray(dates).astype("datetime64[s]").astype(np.int64)
    if stamps.ndim != 1 or stamps.size < 2:
        raise AnalyticsInputError("dates", "need at least 2 time stamps to infer a periodicity")
    gaps = np.diff(stamps)
    if (gaps <= 0).any():
        raise AnalyticsInputError("dates", "must be strictly increasing")
    days = float(np.median(gaps)) / 86_400.0
    if days < 0.5:
        return "minute"
    for name, upper in (("daily", 4.0), ("weekly", 10.0), ("monthly", 45.0), ("quarterly", 200.0)):
        if days <= upper:
            return name
    return "yearly"


def _div(a: float, b: float) -> float:
    """IEEE division as numpy does it (x/0 → ±inf, 0/0 → NaN), without the warning."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _pow(base: float, exponent: float) -> float:
    """``np.power`` for floats: NaN (not a complex number) for a negative base and a fraction."""
    if base < 0.0 and not float(exponent).is_integer():
        return math.nan
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan


def _check_convention(convention: str) -> None:
    if convention not in ("empyrical", "quantstats"):
        raise AnalyticsInputError("convention", "must be 'empyrical' or 'quantstats'")


# ----------------------------------------------------------------------------------------------
# Batch statistics (empyrical.stats, same names and NaN rules)


def cum_returns(returns: npt.ArrayLike, starting_value: float = 0.0) -> F64:
    """Compounded cumulative returns (``empyrical.cum_returns``); NaN counts as a 0 return."""
    r = as_returns(returns)
    out = np.add(np.where(np.isnan(r), 0.0, r), 1.0).cumprod()
    return out - 1.0 if starting_value == 0 else out * starting_value


def cum_returns_final(returns: npt.ArrayLike, starting_value: float = 0.0) -> float:
    """Total compounded return (``empyrical.cum_returns_final``, ``nanprod`` of 1 + r)."""
    r = as_returns(returns)
    if r.size == 0:
        return math.nan
    total = float(np.nanprod(r + 1.0))
    return total - 1.0 if starting_value == 0 else total * starting_value


def annual_return(
    returns: npt.ArrayLike, period: str = "daily", annualization: float | None = None
) -> float:
    """CAGR: ``(Π(1 + r))^(periods/n) − 1`` with n counting NaN periods (``annual_return``)."""
    r = as_returns(returns)
    if r.size < 1:
        return math.nan
    years = r.size / annualization_factor(period, annualization)
    return _pow(float(np.nanprod(r + 1.0)), 1.0 / years) - 1.0


def annual_volatility(
    returns: npt.ArrayLike, period: str = "daily", annualization: float | None = None
) -> float:
    """Sample standard deviation (ddof 1) × √periods (``annual_volatility``, α = 2)."""
    r = as_returns(returns)
    if r.size < 2:
        return math.nan
    ann = annualization_factor(period, annualization)
    return _nanstd1(r) * math.pow(ann, 1.0 / 2.0)


def _seqsum(x: F64, axis: int = -1) -> F64:
    """Sums in index order, as bottleneck's reductions (empyrical's ``nanmean``/``nanstd`` when
    bottleneck is installed) add them; numpy's pairwise ``sum`` rounds differently."""
    if x.shape[axis] == 0:
        empty: F64 = np.sum(x, axis=axis)
        return empty
    if x.ndim == 2 and axis in (1, -1):
        # Row sums of a window matrix: add whole columns in order — the same roundings as
        # ``cumsum`` along each row (bit-equal), 3–15× faster (a column of a sliding-window
        # view is contiguous, and numpy's row-wise cumsum has no vectorized inner loop).
        acc: F64 = x[:, 0].copy()
        for j in range(1, x.shape[1]):
            acc += x[:, j]
        return acc
    out: F64 = np.take(np.cumsum(x, axis=axis), -1, axis=axis)
    return out


def _nanmean(r: F64) -> float:
    """``bottleneck.nanmean``: sequential sum of the non-NaN values over their count."""
    valid = r[~np.isnan(r)]
    return float(_seqsum(valid)) / valid.size if valid.size else math.nan


def _nanstd1(r: F64) -> float:
    """``bottleneck.nanstd(ddof=1)``: two passes, sequential sums; NaN under 2 values."""
    valid = r[~np.isnan(r)]
    if valid.size < 2:
        return math.nan
    dev = valid - float(_seqsum(valid)) / valid.size
    return math.sqrt(float(_seqsum(dev * dev)) / (valid.size - 1))


def _zero_dispersion_std(values: F64, std: float) -> float:
    """empyrical ``_zero_dispersion_std``: a constant series has σ = 0 exactly, not rounding."""
    valid = values[~np.isnan(values)]
    if valid.size and math.isfinite(std) and valid.max() == valid.min():
        return 0.0
    return std


def sharpe_ratio(
    returns: npt.ArrayLike,
    risk_free: float = 0.0,
    period: str = "daily",
    annualization: float | None = None,
) -> float:
    """``mean(r − rf) / std(r − rf) · √periods`` (``empyrical.sharpe_ratio``, = quantstats)."""
    r = as_returns(returns)
    if r.size < 2:
        return math.nan
    adj = r - risk_free if risk_free != 0 else r
    std = _zero_dispersion_std(adj, _nanstd1(adj))
    return _div(_nanmean(adj), std) * math.sqrt(annualization_factor(period, annualization))


def downside_risk(
    returns: npt.ArrayLike,
    required_return: float = 0.0,
    period: str = "daily",
    annualization: float | None = None,
) -> float:
    """``√mean(min(r − req, 0)²) · √periods`` (``empyrical.downside_risk``)."""
    r = as_returns(returns)
    if r.size < 1:
        return math.nan
    diff = np.clip(r - required_return, -np.inf, 0.0)
    mean_sq = _nanmean(np.square(diff))
    return math.sqrt(mean_sq) * math.sqrt(annualization_factor(period, annualization))


def sortino_ratio(
    returns: npt.ArrayLike,
    required_return: float = 0.0,
    period: str = "daily",
    annualization: float | None = None,
) -> float:
    """``mean(r − req)·periods / downside_risk`` (``empyrical.sortino_ratio``)."""
    r = as_returns(returns)
    if r.size < 2:
        return math.nan
    ann = annualization_factor(period, annualization)
    adj = r - required_return if required_return != 0 else r
    return _div(_nanmean(adj) * ann, downside_risk(r, required_return, period, annualization))


def max_drawdown(returns: npt.ArrayLike) -> float:
    """Most negative ``wealth / running peak − 1`` (``empyrical.max_drawdown``, ≤ 0)."""
    r = as_returns(returns)
    if r.size < 1:
        return math.nan
    return float(np.nanmin(drawdown_series(r)))


def drawdown_series(returns: npt.ArrayLike) -> F64:
    """Drawdown after each return, the starting wealth counting as a peak (empyrical)."""
    r = as_returns(returns)
    wealth = np.empty(r.size + 1)
    wealth[0] = 100.0
    wealth[1:] = cum_returns(r, starting_value=100.0)
    peak = np.fmax.accumulate(wealth)
    out: F64 = ((wealth - peak) / peak)[1:]
    return out


def calmar_ratio(
    returns: npt.ArrayLike, period: str = "daily", annualization: float | None = None
) -> float:
    """CAGR / |max drawdown|; NaN without a drawdown or for an infinite ratio (empyrical)."""
    mdd = max_drawdown(returns)
    if not mdd < 0:
        return math.nan
    ratio = annual_return(returns, period, annualization) / abs(mdd)
    return math.nan if math.isinf(ratio) else ratio


def omega_ratio(
    returns: npt.ArrayLike,
    risk_free: float = 0.0,
    required_return: float = 0.0,
    annualization: float = 252.0,
) -> float:
    """Gains over losses around the per-period threshold ``(1 + req)^(1/periods) − 1``.

    ``empyrical.omega_ratio`` (Keating & Shadwick 2002); its ``annualization`` defaults to 252
    whatever the periodicity, so the caller passes the periods per year explicitly.
    """
    r = as_returns(returns)
    if r.size < 2:
        return math.nan
    if annualization == 1:
        threshold = required_return
    elif required_return <= -1:
        return math.nan
    else:
        threshold = (1.0 + required_return) ** (1.0 / annualization) - 1.0
    less = r - risk_free - threshold
    numer = sum(less[less > 0.0].tolist())
    denom = -1.0 * sum(less[less < 0.0].tolist())
    return numer / denom if denom > 0.0 else math.nan


def tail_ratio(returns: npt.ArrayLike) -> float:
    """|95th percentile| / |5th percentile| of the non-NaN returns (``empyrical.tail_ratio``)."""
    r = as_returns(returns)
    r = r[~np.isnan(r)]
    if r.size < 1:
        return math.nan
    return _div(abs(float(np.percentile(r, 95))), abs(float(np.percentile(r, 5))))


def stability_of_timeseries(returns: npt.ArrayLike) -> float:
    """R² of a linear fit of cumulative log returns on time (``stability_of_timeseries``)."""
    r = as_returns(returns)
    if r.size < 2:
        return math.nan
    r = r[~np.isnan(r)]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a −100 % return: log1p = −inf
        y = np.log1p(r).cumsum()
        if y.size < 2:
            return math.nan
        # scipy.stats.linregress's r, without its p-value and wrapper overhead.
        ssxm, ssxym, _, ssym = np.cov(np.arange(y.size), y, bias=True).flat
    if ssxm == 0.0 or ssym == 0.0:
        return math.nan if ssxym == 0 else 0.0
    rv = float(ssxym / np.sqrt(ssxm * ssym))
    return min(1.0, rv * rv) if math.isfinite(rv) else math.nan


def skew(returns: npt.ArrayLike, convention: Convention = "empyrical") -> float:
    """Skewness: scipy's biased ``m3/m2^1.5`` (empyrical), pandas' G1 (quantstats)."""
    _check_convention(convention)
    r = as_returns(returns)
    if convention == "quantstats":
        return _pandas_skew(r[~np.isnan(r)])
    if r.size == 0 or np.isnan(r).any():
        return math.nan
    m2, m3, _ = _scipy_moments(r)
    return math.nan if m2 <= 0.0 else m3 / m2**1.5


def kurtosis(returns: npt.ArrayLike, convention: Convention = "empyrical") -> float:
    """Excess kurtosis: scipy's biased ``m4/m2² − 3`` (empyrical), pandas' G2 (quantstats)."""
    _check_convention(convention)
    r = as_returns(returns)
    if convention == "quantstats":
        return _pandas_kurtosis(r[~np.isnan(r)])
    if r.size == 0 or np.isnan(r).any():
        return math.nan
    m2, _, m4 = _scipy_moments(r)
    return math.nan if m2 <= 0.0 else m4 / m2**2 - 3.0


def _scipy_moments(r: F64) -> tuple[float, float, float]:
    """Central moments m2, m3, m4 as ``scipy.stats.skew``/``kurtosis`` (bias=True) form them
    (``_moment``: exponentiation by squares of ``r − mean``, then ``mean``); m2 is returned as
    0 when scipy calls the variance zero (``m2 ≤ (eps·mean)²``) and skew/kurtosis are NaN."""
    mean = float(np.mean(r))
    dev = r - mean
    sq = dev**2
    m2 = float(np.mean(sq))
    m3 = float(np.mean(sq * dev))
    m4 = float(np.mean(sq**2))
    if m2 <= (_EPS * mean) ** 2:
        m2 = 0.0
    return m2, m3, m4


def _pandas_skew(r: F64) -> float:
    """pandas ``nanops.nanskew``: ``n√(n−1)/(n−2) · m3/m2^1.5`` over sums of deviations."""
    n = r.size
    if n < 3:
        return math.nan
    adj = r - r.sum() / n
    m2 = float((adj**2).sum())
    m3 = float((adj**3).sum())
    return _g1(n, m2, m3)


def _g1(n: int, m2: float, m3: float) -> float:
    m2 = 0.0 if abs(m2) < _PANDAS_FPERR else m2
    m3 = 0.0 if abs(m3) < _PANDAS_FPERR else m3
    if m2 == 0:
        return 0.0
    return (n * math.sqrt(n - 1) / (n - 2)) * (m3 / math.pow(m2, 1.5))


def _pandas_kurtosis(r: F64) -> float:
    """pandas ``nanops.nankurt``: the unbiased excess kurtosis G2."""
    n = r.size
    if n < 4:
        return math.nan
    adj = r - r.sum() / n
    sq = adj**2
    return _g2(n, float(sq.sum()), float((sq**2).sum()))


def _g2(n: int, m2: float, m4: float) -> float:
    adj = 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    numer = n * (n + 1) * (n - 1) * m4
    denom = (n - 2) * (n - 3) * m2**2
    numer = 0.0 if abs(numer) < _PANDAS_FPERR else numer
    denom = 0.0 if abs(denom) < _PANDAS_FPERR else denom
    if denom == 0:
        return 0.0
    return numer / denom - adj


def value_at_risk(
    returns: npt.ArrayLike, cutoff: float = 0.05, convention: Convention = "empyrical"
) -> float:
    """Historical VaR = the ``cutoff`` percentile (empyrical); normal ``μ + σΦ⁻¹`` (quantstats)."""
    _check_convention(convention)
    r = as_returns(returns)
    _check_cutoff(cutoff)
    if convention == "quantstats":
        valid = r[~np.isnan(r)]
        if valid.size < 2:
            return math.nan
        return float(special.ndtri(cutoff)) * float(np.std(valid, ddof=1)) + float(valid.mean())
    if r.size < 1:
        return math.nan
    return float(np.percentile(r, 100 * cutoff))


def conditional_value_at_risk(
    returns: npt.ArrayLike, cutoff: float = 0.05, convention: Convention = "empyrical"
) -> float:
    """Mean of the worst ``⌊(n−1)·cutoff⌋ + 1`` returns (empyrical ``conditional_value_at_risk``);
    quantstats: the normal expected shortfall ``μ − σ·φ(Φ⁻¹(α))/α``."""
    _check_convention(convention)
    r = as_returns(returns)
    _check_cutoff(cutoff)
    r = r[~np.isnan(r)]
    if convention == "quantstats":
        if r.size < 2:
            return float(r.mean()) if r.size else math.nan
        return _normal_es(float(r.mean()), float(np.std(r, ddof=1)), cutoff)
    if r.size == 0:
        return math.nan
    k = int((r.size - 1) * cutoff)
    return float(np.mean(np.partition(r, k)[: k + 1]))


def _normal_es(mu: float, sd: float, alpha: float) -> float:
    if sd == 0 or math.isnan(sd):
        return mu
    z = float(special.ndtri(alpha))
    return mu - sd * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) / alpha


def _check_cutoff(cutoff: float) -> None:
    if not (0.0 < cutoff < 1.0):
        raise AnalyticsInputError("cutoff", "must be in (0, 1)")


def beta(returns: npt.ArrayLike, benchmark: npt.ArrayLike) -> float:
    """``cov(r, b) / var(b)`` over pairs where r is not NaN (``empyrical.beta_aligned``)."""
    r, b = _aligned(returns, benchmark)
    if r.size < 2:
        return math.nan
    ind = np.where(np.isnan(r), np.nan, b)
    res = ind - _nanmean(ind)
    cov = _nanmean(res * r)
    var = _nanmean(np.square(res))
    if not var >= _MIN_BENCHMARK_VARIANCE:
        return math.nan
    return cov / var


def alpha(
    returns: npt.ArrayLike,
    benchmark: npt.ArrayLike,
    risk_free: float = 0.0,
    period: str = "daily",
    annualization: float | None = None,
    convention: Convention = "empyrical",
) -> float:
    """Jensen's alpha, annualised by compounding (empyrical) or by ×periods (quantstats)."""
    _check_convention(convention)
    r, b = _aligned(returns, benchmark)
    if r.size < 2:
        return math.nan
    ann = annualization_factor(period, annualization)
    bt = beta(r, b)
    if convention == "quantstats":
        ok = ~(np.isnan(r) | np.isnan(b))
        return (float(r[ok].mean()) - bt * float(b[ok].mean())) * ann
    series = (r - risk_free) - bt * (b - risk_free)
    return _pow(_nanmean(series) + 1.0, ann) - 1.0


def information_ratio(returns: npt.ArrayLike, benchmark: npt.ArrayLike) -> float:
    """Mean active return over tracking error, per period (``empyrical.excess_sharpe``)."""
    r, b = _aligned(returns, benchmark)
    if r.size < 2:
        return math.nan
    active = r - b
    return _div(_nanmean(active), _zero_dispersion_std(active, _nanstd1(active)))


def _capture(
    returns: F64, benchmark: F64, mask: npt.NDArray[np.bool_], period: str, ann: float | None
) -> float:
    ok = mask & ~(np.isnan(returns) | np.isnan(benchmark))
    return annual_return(returns[ok], period, ann) / annual_return(benchmark[ok], period, ann)


def up_capture(
    returns: npt.ArrayLike,
    benchmark: npt.ArrayLike,
    period: str = "daily",
    annualization: float | None = None,
) -> float:
    """CAGR of r over CAGR of b on periods where b > 0 (``empyrical.up_capture``)."""
    r, b = _aligned(returns, benchmark)
    return _capture(r, b, b > 0, period, annualization)


def down_capture(
    returns: npt.ArrayLike,
    benchmark: npt.ArrayLike,
    period: str = "daily",
    annualization: float | None = None,
) -> float:
    """CAGR of r over CAGR of b on periods where b < 0 (``empyrical.down_capture``)."""
    r, b = _aligned(returns, benchmark)
    return _capture(r, b, b < 0, period, annualization)


# ----------------------------------------------------------------------------------------------
# Probabilistic and Deflated Sharpe ratio


def probabilistic_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    skewness: float = 0.0,
    kurtosis_pearson: float = 3.0,
    benchmark_sharpe: float = 0.0,
) -> float:
    """PSR(SR*) = Φ((SR − SR*)·√(n−1) / √(1 − γ3·SR + (γ4 − 1)/4·SR²)).

    Bailey & López de Prado (2012), eq. 9. SR and SR* are per period (not annualised),
    γ3 the skewness and γ4 the (non-excess, Pearson) kurtosis of the returns; a normal
    distribution has γ3 = 0, γ4 = 3.
    """
    if n_obs < 2:
        raise AnalyticsInputError("n_obs", "needs at least 2 observations")
    for name, value in (
        ("sharpe", sharpe),
        ("skewness", skewness),
        ("kurtosis_pearson", kurtosis_pearson),
        ("benchmark_sharpe", benchmark_sharpe),
    ):
        if not math.isfinite(value):
            raise AnalyticsInputError(name, "must be finite")
    var = 1.0 - skewness * sharpe + (kurtosis_pearson - 1.0) / 4.0 * sharpe * sharpe
    if not var > 0:
        return math.nan
    z = (sharpe - benchmark_sharpe) * math.sqrt(n_obs - 1) / math.sqrt(var)
    return float(special.ndtr(z))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """E[max SR] of N trials with true SR 0: ``√V·((1−γ)Φ⁻¹(1−1/N) + γΦ⁻¹(1−1/(N·e)))``.

    Bailey & López de Prado (2014), eq. 2 (γ the Euler–Mascheroni constant). One trial: 0.
    """
    if n_trials < 1:
        raise AnalyticsInputError("n_trials", "must be at least 1")
    if not (math.isfinite(sharpe_variance) and sharpe_variance >= 0):
        raise AnalyticsInputError("sharpe_variance", "must be finite and ≥ 0")
    if n_trials == 1:
        return 0.0
    a = float(special.ndtri(1.0 - 1.0 / n_trials))
    b = float(special.ndtri(1.0 - 1.0 / (n_trials * math.e)))
    return math.sqrt(sharpe_variance) * ((1.0 - _EULER_GAMMA) * a + _EULER_GAMMA * b)


def deflated_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    n_trials: int,
    sharpe_variance: float,
    skewness: float = 0.0,
    kurtosis_pearson: float = 3.0,
) -> float:
    """DSR = PSR(SR₀) with SR₀ = E[max SR] over the trials (Bailey & López de Prado 2014, eq. 5).

    ``sharpe_variance`` is the variance of the trials' per-period Sharpe ratios.
    """
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, n_obs, skewness, kurtosis_pearson, sr0)


# ----------------------------------------------------------------------------------------------
# Drawdown table, rolling windows, monthly returns


@dataclass(frozen=True, slots=True)
class Drawdown:
    """One drawdown episode, as indices into the returns (and dates when given).

    ``peak`` is the last period at the high before the fall (−1: the starting wealth),
    ``start``/``end`` the first and last periods under water (quantstats ``drawdown_details``),
    ``trough`` the lowest period, ``recovery`` the first period back at the peak (None while
    still under water). ``periods`` counts periods under water, ``days`` calendar days from
    ``start`` to ``end`` inclusive (quantstats' "days"), when dates are given.
    """

    peak: int
    start: int
    trough: int
    end: int
    recovery: int | None
    depth: float
    periods: int
    peak_date: np.datetime64 | None = None
    trough_date: np.datetime64 | None = None
    recovery_date: np.datetime64 | None = None
    days: int | None = None


def drawdown_table(
    returns: npt.ArrayLike, dates: npt.ArrayLike | None = None, top: int | None = None
) -> list[Drawdown]:
    """Every drawdown episode of the compounded wealth, deepest first (``top`` of them)."""
    r = as_returns(returns)
    d = None
    if dates is not None:
        d = np.asarray(dates).astype("datetime64[D]")
        if d.shape != r.shape:
            raise AnalyticsInputError("dates", f"length {d.size} does not match returns {r.size}")
    if top is not None and top < 1:
        raise AnalyticsInputError("top", "must be at least 1")
    dd = drawdown_series(r)
    under = dd < 0
    episodes: list[Drawdown] = []
    i, n = 0, r.size
    while i < n:
        if not under[i]:
            i += 1
            continue
        start = i
        while i < n and under[i]:
            i += 1
        end = i - 1
        trough = start + int(np.argmin(dd[start : end + 1]))
        recovery = i if i < n else None
        days = None if d is None else int((d[end] - d[start]).astype(np.int64)) + 1
        episodes.append(
            Drawdown(
                peak=start - 1,
                start=start,
                trough=trough,
                end=end,
                recovery=recovery,
                depth=float(dd[trough]),
                periods=end - start + 1,
                peak_date=None if d is None or start == 0 else d[start - 1],
                trough_date=None if d is None else d[trough],
                recovery_date=None if d is None or recovery is None else d[recovery],
                days=days,
            )
        )
    episodes.sort(key=lambda e: (e.depth, e.start))
    return episodes if top is None else episodes[:top]


def _windows(r: F64, window: int) -> F64:
    if window < 1:
        raise AnalyticsInputError("window", "must be at least 1")
    out: F64 = np.lib.stride_tricks.sliding_window_view(r, min(window, r.size))
    return out


def _row_nanmean(w: F64) -> F64:
    """Each row's ``bottleneck.nanmean`` (sequential sum over the non-NaN count)."""
    count = (~np.isnan(w)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = _seqsum(np.where(np.isnan(w), 0.0, w), axis=1) / count
    return out


def _row_nanstd1(w: F64) -> F64:
    """Each row's ``bottleneck.nanstd(ddof=1)``; NaN under two values."""
    count = (~np.isnan(w)).sum(axis=1)
    dev = np.where(np.isnan(w), 0.0, w - _row_nanmean(w)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = np.sqrt(_seqsum(dev * dev, axis=1) / (count - 1))
    out[count < 2] = np.nan
    return out


def roll_annual_volatility(
    returns: npt.ArrayLike,
    window: int,
    period: str = "daily",
    annualization: float | None = None,
) -> F64:
    """Annual volatility of each trailing window (``empyrical.roll_annual_volatility``):
    ``n − window + 1`` values, the first for the first full window (one value, over all of
    them, when the series is shorter than the window)."""
    r = as_returns(returns)
    if r.size == 0:
        return np.empty(0)
    w = _windows(r, window)
    ann = annualization_factor(period, annualization)
    out: F64 = _row_nanstd1(w) * math.pow(ann, 1.0 / 2.0)
    return out


def roll_sharpe_ratio(
    returns: npt.ArrayLike,
    window: int,
    risk_free: float = 0.0,
    period: str = "daily",
    annualization: float | None = None,
) -> F64:
    """Sharpe ratio of each trailing window (``empyrical.roll_sharpe_ratio``)."""
    r = as_returns(returns)
    if r.size == 0:
        return np.empty(0)
    w = _windows(r - risk_free if risk_free != 0 else r, window)
    ann = annualization_factor(period, annualization)
    std = _row_nanstd1(w)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window
        const = (np.nanmax(w, axis=1) == np.nanmin(w, axis=1)) & np.isfinite(std)
    std = np.where(const, 0.0, std)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = _row_nanmean(w) / std * math.sqrt(ann)
    if w.shape[1] < 2:
        out[:] = np.nan
    return out


def roll_beta(returns: npt.ArrayLike, benchmark: npt.ArrayLike, window: int) -> F64:
    """Beta of each trailing window (``empyrical.roll_beta``)."""
    r, b = _aligned(returns, benchmark)
    if r.size == 0:
        return np.empty(0)
    wr, wb = _windows(r, window), _windows(b, window)
    if wr.shape[1] < 2:
        return np.full(wr.shape[0], np.nan)
    ind = np.where(np.isnan(wr), np.nan, wb)
    res = ind - _row_nanmean(ind)[:, None]
    cov = _row_nanmean(res * wr)
    var = _row_nanmean(np.square(res))
    with np.errstate(invalid="ignore", divide="ignore"):
        var[var < _MIN_BENCHMARK_VARIANCE] = np.nan
        out: F64 = cov / var
    return out


class MonthlyReturns(NamedTuple):
    """Compounded return per calendar month: ``values[i, m]`` for ``years[i]``, month m + 1."""

    years: npt.NDArray[np.int64]
    values: F64


def monthly_returns(returns: npt.ArrayLike, dates: npt.ArrayLike) -> MonthlyReturns:
    """Compound returns within each calendar month (``empyrical.aggregate_returns(.., 'monthly')``);
    months without data are NaN."""
    r = as_returns(returns)
    d = np.asarray(dates).astype("datetime64[M]")
    if d.shape != r.shape:
        raise AnalyticsInputError("dates", f"length {d.size} does not match returns {r.size}")
    if r.size == 0:
        return MonthlyReturns(np.empty(0, dtype=np.int64), np.empty((0, 12)))
    months = d.astype(np.int64)  # months since 1970-01
    first_year = int(months.min()) // 12
    years = np.arange(first_year, int(months.max()) // 12 + 1, dtype=np.int64)
    values = np.full((years.size, 12), np.nan)
    growth = np.where(np.isnan(r), 0.0, r) + 1.0
    order = np.argsort(months, kind="stable")
    m_sorted = months[order]
    bounds = np.flatnonzero(np.diff(m_sorted)) + 1
    for idx in np.split(np.arange(r.size), bounds):
        m = int(m_sorted[idx[0]])
        values[m // 12 - first_year, m % 12] = float(np.prod(growth[order[idx]])) - 1.0
    return MonthlyReturns(years + 1970, values)


# ----------------------------------------------------------------------------------------------
# Trade statistics


class TradeStats(NamedTuple):
    """Statistics of closed trades' PnL (one number per round trip, in account currency).

    Definitions are quantstats' (``win_rate``, ``avg_win``, ``avg_loss``, ``profit_factor``,
    ``payoff_ratio`` applied to the PnL series): break-even trades count in neither the
    winners nor the losers of ``win_rate``, and in the gains of ``profit_factor``.
    """

    trades: int
    wins: int
    losses: int
    win_rate: float  # wins / (wins + losses)
    avg_win: float  # mean PnL of winners
    avg_loss: float  # mean PnL of losers (negative)
    payoff_ratio: float  # avg_win / |avg_loss|
    profit_factor: float  # Σ PnL ≥ 0 / |Σ PnL < 0|; inf without losses, 0 without either
    expectancy: float  # mean PnL per trade
    total: float


def trade_stats(pnl: npt.ArrayLike) -> TradeStats:
    """Win rate, profit factor, expectancy, average win/loss of closed trades' PnL."""
    p = as_returns(pnl, "pnl", allow_nan=False)
    wins, losses = p[p > 0], p[p < 0]
    gains, lost = float(p[p >= 0].sum()), abs(float(losses.sum()))
    decided = wins.size + losses.size
    avg_win = float(wins.mean()) if wins.size else math.nan
    avg_loss = float(losses.mean()) if losses.size else math.nan
    profit_factor = (0.0 if gains == 0 else math.inf) if lost == 0 else gains / lost
    return TradeStats(
        trades=int(p.size),
        wins=int(wins.size),
        losses=int(losses.size),
        win_rate=wins.size / decided if decided else math.nan,
        avg_win=avg_win,
        avg_loss=avg_loss,
        payoff_ratio=_div(avg_win, abs(avg_loss)) if losses.size else math.nan,
        profit_factor=profit_factor,
        expectancy=float(p.mean()) if p.size else math.nan,
        total=float(p.sum()),
    )


# ----------------------------------------------------------------------------------------------
# The full statistic set: batch and streaming


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalyticsParams:
    """Everything a statistic depends on besides the returns (the 'parameters in force').

    ``periods_per_year`` is the stated annualisation (``annualization_factor(period)``);
    ``risk_free`` and ``required_return`` are per period (Sharpe/Omega and Sortino/downside
    risk), ``required_return`` of Omega is annual as in empyrical's ``omega_ratio``.
    """

    period: str = "daily"
    annualization: float | None = None
    risk_free: float = 0.0
    required_return: float = 0.0
    omega_required_return: float = 0.0
    cutoff: float = 0.05
    convention: Convention = "empyrical"

    def __post_init__(self) -> None:
        annualization_factor(self.period, self.annualization)
        _check_convention(self.convention)
        _check_cutoff(self.cutoff)
        for name in ("risk_free", "required_return", "omega_required_return"):
            if not math.isfinite(getattr(self, name)):
                raise AnalyticsInputError(name, "must be finite")

    @property
    def periods_per_year(self) -> float:
        return annualization_factor(self.period, self.annualization)


class Stats(NamedTuple):
    """The full statistic set after ``n`` returns (NaN where a statistic is undefined)."""

    n: int
    cum_return: float
    annual_return: float
    annual_volatility: float
    sharpe_ratio: float
    sortino_ratio: float
    downside_risk: float
    calmar_ratio: float
    omega_ratio: float
    max_drawdown: float
    drawdown: float  # current: wealth / running peak − 1
    tail_ratio: float
    stability: float
    value_at_risk: float
    conditional_value_at_risk: float
    skew: float
    kurtosis: float
    probabilistic_sharpe: float  # PSR vs SR* = 0, per-period SR, sample γ3, γ4
    alpha: float
    beta: float
    information_ratio: float
    up_capture: float
    down_capture: float


def compute_stats(
    returns: npt.ArrayLike,
    benchmark: npt.ArrayLike | None = None,
    params: AnalyticsParams | None = None,
) -> Stats:
    """The full statistic set of a finite return series (and benchmark), by the batch formulas."""
    p = params or AnalyticsParams()
    r = as_returns(returns, allow_nan=False)
    b = None
    if benchmark is not None:
        r, b = _aligned(r, benchmark)
        as_returns(b, "benchmark", allow_nan=False)
    per, ann, conv = p.period, p.annualization, p.convention
    sharpe = sharpe_ratio(r, p.risk_free, per, ann)
    sk = skew(r)
    ku = kurtosis(r)
    nan = math.nan
    return Stats(
        n=int(r.size),
        cum_return=cum_returns_final(r),
        annual_return=annual_return(r, per, ann),
        annual_volatility=annual_volatility(r, per, ann),
        sharpe_ratio=sharpe,
        sortino_ratio=sortino_ratio(r, p.required_return, per, ann),
        downside_risk=downside_risk(r, p.required_return, per, ann),
        calmar_ratio=calmar_ratio(r, per, ann),
        omega_ratio=omega_ratio(r, p.risk_free, p.omega_required_return, p.periods_per_year),
        max_drawdown=max_drawdown(r),
        drawdown=float(drawdown_series(r)[-1]) if r.size else nan,
        tail_ratio=tail_ratio(r),
        stability=stability_of_timeseries(r),
        value_at_risk=value_at_risk(r, p.cutoff, conv),
        conditional_value_at_risk=conditional_value_at_risk(r, p.cutoff, conv),
        skew=sk if conv == "empyrical" else skew(r, conv),
        kurtosis=ku if conv == "empyrical" else kurtosis(r, conv),
        probabilistic_sharpe=_psr_or_nan(sharpe, r.size, p.periods_per_year, sk, ku),
        alpha=nan if b is None else alpha(r, b, p.risk_free, per, ann, conv),
        beta=nan if b is None else beta(r, b),
        information_ratio=nan if b is None else information_ratio(r, b),
        up_capture=nan if b is None else up_capture(r, b, per, ann),
        down_capture=nan if b is None else down_capture(r, b, per, ann),
    )


def _psr_or_nan(sharpe_annual: float, n: int, ann: float, sk: float, excess_ku: float) -> float:
    """PSR vs 0 from the annualised Sharpe and scipy's biased moments; NaN when undefined."""
    if n < 2 or not (
        math.isfinite(sharpe_annual) and math.isfinite(sk) and math.isfinite(excess_ku)
    ):
        return math.nan
    return probabilistic_sharpe_ratio(sharpe_annual / math.sqrt(ann), n, sk, excess_ku + 3.0)


class StreamingStats:
    """Incremental ``Stats`` of one return stream (one instance per key).

    State per update, all O(1) except the sorted list (O(log n) search + memmove insert):
    Pébay's one-pass central moments M2..M4 (Pébay 2008, SAND2008-6212, eqs. 2.1–2.3),
    Welford co-moments with the benchmark and of (time, cumulative log return) for stability,
    the running wealth and its peak, sums for Omega and downside risk, products for up/down
    capture, and the sum of the ``⌊(n−1)·cutoff⌋ + 1`` lowest returns for CVaR.
    """

    __slots__ = (
        "_active_m2",
        "_active_max",
        "_active_mean",
        "_active_min",
        "_ann",
        "_b_m2",
        "_b_mean",
        "_cov",
        "_cvar_k",
        "_cvar_sum",
        "_down_b",
        "_down_n",
        "_down_r",
        "_down_sq",
        "_has_benchmark",
        "_m2",
        "_m3",
        "_m4",
        "_max",
        "_max_dd",
        "_mean",
        "_min",
        "_n",
        "_omega_neg",
        "_omega_pos",
        "_omega_threshold",
        "_peak",
        "_prod",
        "_sorted",
        "_sqrt_ann",
        "_stab_cov",
        "_stab_mean_y",
        "_stab_syy",
        "_up_b",
        "_up_n",
        "_up_r",
        "_y",
        "_z_cutoff",
        "params",
    )

    def __init__(self, params: AnalyticsParams | None = None, *, benchmark: bool = False) -> None:
        self.params = params or AnalyticsParams()
        self._has_benchmark = benchmark
        self._ann = self.params.periods_per_year
        self._sqrt_ann = math.sqrt(self._ann)
        self._z_cutoff = float(special.ndtri(self.params.cutoff))
        req = self.params.omega_required_return
        if self._ann == 1:
            self._omega_threshold = req
        elif req <= -1:
            self._omega_threshold = math.nan
        else:
            self._omega_threshold = (1.0 + req) ** (1.0 / self._ann) - 1.0
        self._n = 0
        self._mean = self._m2 = self._m3 = self._m4 = 0.0
        self._min, self._max = math.inf, -math.inf
        self._prod = 1.0
        self._peak = 100.0
        self._max_dd = math.inf
        self._down_sq = 0.0
        self._omega_pos = self._omega_neg = 0.0
        self._y = self._stab_mean_y = self._stab_syy = self._stab_cov = 0.0
        self._sorted: list[float] = []
        self._cvar_k = 0
        self._cvar_sum = 0.0
        self._b_mean = self._b_m2 = self._cov = 0.0
        self._active_mean = self._active_m2 = 0.0
        self._active_min, self._active_max = math.inf, -math.inf
        self._up_r = self._up_b = self._down_r = self._down_b = 1.0
        self._up_n = self._down_n = 0

    @property
    def n(self) -> int:
        return self._n

    def update(self, ret: float, benchmark_ret: float | None = None) -> Stats:
        """Add one period's return (and the benchmark's) and return the statistics so far."""
        if not math.isfinite(ret):
            raise AnalyticsInputError("ret", "must be finite")
        if self._has_benchmark:
            if benchmark_ret is None or not math.isfinite(benchmark_ret):
                raise AnalyticsInputError("benchmark_ret", "must be a finite number")
        elif benchmark_ret is not None:
            raise AnalyticsInputError("benchmark_ret", "this stream was created without one")
        n1 = self._n
        n = n1 + 1
        self._n = n
        # Pébay one-pass moments.
        delta = ret - self._mean
        delta_n = delta / n
        delta_n2 = delta_n * delta_n
        term1 = delta * delta_n * n1
        m2, m3 = self._m2, self._m3
        self._mean += delta_n
        self._m4 += (
            term1 * delta_n2 * (n * n - 3 * n + 3) + 6.0 * delta_n2 * m2 - 4.0 * delta_n * m3
        )
        self._m3 = m3 + term1 * delta_n * (n - 2) - 3.0 * delta_n * m2
        self._m2 = m2 + term1
        if ret < self._min:
            self._min = ret
        if ret > self._max:
            self._max = ret
        # Wealth (empyrical: 100 · cumprod(1 + r), the start counting as a peak).
        self._prod *= ret + 1.0
        wealth = self._prod * 100.0
        if wealth > self._peak:
            self._peak = wealth
        drawdown = (wealth - self._peak) / self._peak
        if drawdown < self._max_dd:
            self._max_dd = drawdown
        # Downside risk and Omega.
        low = ret - self.params.required_return
        if low < 0.0:
            self._down_sq += low * low
        less = ret - self.params.risk_free - self._omega_threshold
        if less > 0.0:
            self._omega_pos += less
        elif less < 0.0:
            self._omega_neg += less
        # Stability: co-moments of (t, y), t = 0, 1, ..., y = Σ log1p(r).
        self._y += math.log1p(ret)
        dy = self._y - self._stab_mean_y
        self._stab_mean_y += dy / n
        dy2 = self._y - self._stab_mean_y
        self._stab_syy += dy * dy2
        self._stab_cov += (n / 2.0) * dy2  # t = n − 1 minus the mean of 0..n − 2 is n/2
        # Sorted returns for the percentiles and CVaR's lowest-k sum.
        srt = self._sorted
        pos = bisect.bisect_right(srt, ret)
        srt.insert(pos, ret)
        k = self._cvar_k
        if pos < k:
            self._cvar_sum += ret - srt[k]
        k_new = int(n1 * self.params.cutoff) + 1
        while k < k_new:
            self._cvar_sum += srt[k]
            k += 1
        self._cvar_k = k
        if self._has_benchmark:
            assert benchmark_ret is not None
            self._update_benchmark(ret, benchmark_ret, n)
        return self._stats(drawdown)

    def _update_benchmark(self, ret: float, b: float, n: int) -> None:
        db = b - self._b_mean
        self._b_mean += db / n
        self._b_m2 += db * (b - self._b_mean)
        self._cov += db * (ret - self._mean)
        a = ret - b
        da = a - self._active_mean
        self._active_mean += da / n
        self._active_m2 += da * (a - self._active_mean)
        if a < self._active_min:
            self._active_min = a
        if a > self._active_max:
            self._active_max = a
        if b > 0.0:
            self._up_r *= ret + 1.0
            self._up_b *= b + 1.0
            self._up_n += 1
        elif b < 0.0:
            self._down_r *= ret + 1.0
            self._down_b *= b + 1.0
            self._down_n += 1

    def _percentile(self, q: float) -> float:
        """numpy's 'linear' percentile (``_lerp``) of the sorted returns."""
        srt = self._sorted
        n = len(srt)
        virtual = (n - 1) * q
        lo = math.floor(virtual)
        hi = min(lo + 1, n - 1)
        g = virtual - lo
        a, b = srt[lo], srt[hi]
        diff = b - a
        return b - diff * (1.0 - g) if g >= 0.5 else a + diff * g

    def _cagr(self, prod: float, n: int) -> float:
        if n < 1:
            return math.nan
        return _pow(prod, 1.0 / (n / self._ann)) - 1.0

    def _stats(self, drawdown: float) -> Stats:
        p = self.params
        n = self._n
        ann, sqrt_ann = self._ann, self._sqrt_ann
        nan = math.nan
        mean = self._mean
        conv = p.convention
        cagr = self._cagr(self._prod, n)
        max_dd = self._max_dd
        if n >= 2:
            std = math.sqrt(self._m2 / (n - 1))
            zero_std = 0.0 if self._max == self._min else std
            vol = std * ann ** (1.0 / 2.0)
            sharpe = _div(mean - p.risk_free, zero_std) * sqrt_ann
            down = math.sqrt(self._down_sq / n) * sqrt_ann
            sortino = _div((mean - p.required_return) * ann, down)
            omega = self._omega_pos / -self._omega_neg if self._omega_neg < 0.0 else nan
            syy, scov = self._stab_syy, self._stab_cov
            stt = n * (n * n - 1) / 12.0
            if syy == 0.0:
                stability = nan  # scipy.stats.linregress: r is NaN for a constant y
            else:
                rv = max(-1.0, min(1.0, scov / math.sqrt(stt * syy)))
                stability = rv * rv
        else:
            std = vol = sharpe = sortino = omega = stability = nan
            down = math.sqrt(self._down_sq / n) * sqrt_ann
        calmar = nan
        if max_dd < 0:
            calmar = cagr / -max_dd
            if math.isinf(calmar):
                calmar = nan
        m2n = self._m2 / n
        if conv == "empyrical":
            if m2n <= (_EPS * mean) ** 2:  # scipy.stats.skew/kurtosis: "zero" variance
                sk = ku = nan
            else:
                sk = (self._m3 / n) / m2n**1.5
                ku = (self._m4 / n) / (m2n * m2n) - 3.0
            var = self._percentile(p.cutoff)
            cvar = self._cvar_sum / self._cvar_k
        else:
            sk = _g1(n, self._m2, self._m3) if n >= 3 else nan
            ku = _g2(n, self._m2, self._m4) if n >= 4 else nan
            var = self._z_cutoff * std + mean if n >= 2 else nan
            cvar = _normal_es(mean, std, p.cutoff) if n >= 2 else mean
        tail = _div(abs(self._percentile(0.95)), abs(self._percentile(0.05)))
        if conv == "empyrical":
            psr = _psr_from(sharpe, n, ann, sk, ku)
        else:
            m2n_ok = m2n > (_EPS * mean) ** 2
            bsk = (self._m3 / n) / m2n**1.5 if m2n_ok else nan
            bku = (self._m4 / n) / (m2n * m2n) - 3.0 if m2n_ok else nan
            psr = _psr_from(sharpe, n, ann, bsk, bku)
        alpha_ = beta_ = ir = up = dn = nan
        if self._has_benchmark:
            up = self._cagr(self._up_r, self._up_n) / self._cagr(self._up_b, self._up_n)
            dn = self._cagr(self._down_r, self._down_n) / self._cagr(self._down_b, self._down_n)
            if n >= 2:
                if self._b_m2 / n >= _MIN_BENCHMARK_VARIANCE:
                    beta_ = self._cov / self._b_m2
                    if conv == "empyrical":
                        rf = p.risk_free
                        alpha_ = _pow((mean - rf) - beta_ * (self._b_mean - rf) + 1.0, ann) - 1.0
                    else:
                        alpha_ = (mean - beta_ * self._b_mean) * ann
                te = math.sqrt(self._active_m2 / (n - 1))
                if self._active_max == self._active_min:
                    te = 0.0
                ir = _div(self._active_mean, te)
        return Stats(
            n=n,
            cum_return=self._prod - 1.0,
            annual_return=cagr,
            annual_volatility=vol,
            sharpe_ratio=sharpe,
            sortino_ratio=sortino,
            downside_risk=down,
            calmar_ratio=calmar,
            omega_ratio=omega,
            max_drawdown=max_dd,
            drawdown=drawdown,
            tail_ratio=tail,
            stability=stability,
            value_at_risk=var,
            conditional_value_at_risk=cvar,
            skew=sk,
            kurtosis=ku,
            probabilistic_sharpe=psr,
            alpha=alpha_,
            beta=beta_,
            information_ratio=ir,
            up_capture=up,
            down_capture=dn,
        )


def _psr_from(sharpe_annual: float, n: int, ann: float, sk: float, excess_ku: float) -> float:
    if n < 2 or not (
        math.isfinite(sharpe_annual) and math.isfinite(sk) and math.isfinite(excess_ku)
    ):
        return math.nan
    sr = sharpe_annual / math.sqrt(ann)
    var = 1.0 - sk * sr + (excess_ku + 2.0) / 4.0 * sr * sr
    if not var > 0:
        return math.nan
    return float(special.ndtr(sr * math.sqrt(n - 1) / math.sqrt(var)))

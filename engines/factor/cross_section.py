"""Cross-sectional regressions as an answer: a (dates × symbols) panel of returns and
characteristics, posted or built from the bundled daily history, regressed date by date
(``core.cross_section_regressions``, OLS or WLS), averaged à la Fama–MacBeth
(``core.fama_macbeth``: plain standard errors, or Newey–West/Bartlett with ``nw_lags``, as
linearmodels ``FamaMacBeth.fit(cov_type="unadjusted"|"kernel")``), and the factor-mimicking
long–short return of each characteristic from quantile sorts (``core.quantile_labels``,
``core.quantile_returns``: top minus bottom quantile, equal weights).

The universe form (``universe_panel``): the calendar is the market's (SPY, also the ``beta``
benchmark) sessions; per symbol the total-return-adjusted closes and volumes of
``engines.marketdata.daily.read_daily_bars`` (NaN on a session without a bar), the five
``core.characteristics`` from data up to each date only (the look-back reaches before ``from``),
rebalanced every ``horizon`` sessions from the first session on or after ``from``; the return
regressed at date d is the forward return d → d + ``horizon`` sessions, and the last such
return ends on or before ``to``. WLS weights there are close × volume on date d of those
series: the dollar volume scaled by the symbol's dividend adjustment factor at d (the size
characteristic is measured the same way), not the raw traded value.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.factor import core
from engines.marketdata.daily import Adjustment, read_daily_bars
from engines.shell import ValidationError

Array = npt.NDArray[np.float64]

#: The characteristics the universe form computes (``core.characteristics``).
CHARACTERISTICS = ("size", "momentum", "reversal", "volatility", "beta")
#: The market series of ``beta`` and the session calendar of the universe form.
MARKET = "SPY"
#: Sessions between rebalance dates (and the forward-return horizon) unless asked otherwise.
DEFAULT_HORIZON = 21
MAX_HORIZON = 252
#: Most dates × symbols cells one request regresses (each date is one least-squares solve).
MAX_PANEL_CELLS = 1_000_000
#: Most characteristics one request regresses on.
MAX_CHARACTERISTICS = 16
INTERCEPT = "intercept"


@dataclass(frozen=True, slots=True)
class Panel:
    """``returns`` and each characteristic (D, N), NaN where missing; ``weights`` (D, N) or
    ``None`` (OLS)."""

    dates: list[str]
    symbols: list[str]
    returns: Array
    characteristics: dict[str, Array]
    weights: Array | None = None


def rebalance_rows(
    calendar: npt.NDArray[np.datetime64], first: dt.date, last: dt.date, horizon: int
) -> npt.NDArray[np.int64]:
    """Rows of ``calendar`` regressed: every ``horizon``-th session from the first one on or
    after ``first``, while the session ``horizon`` rows later is on or before ``last``."""
    lo = int(np.searchsorted(calendar, np.datetime64(first, "D"), side="left"))
    hi = int(np.searchsorted(calendar, np.datetime64(last, "D"), side="right")) - 1
    return np.arange(lo, hi - horizon + 1, horizon, dtype=np.int64)


def universe_panel(
    symbols: list[str],
    first: dt.date,
    last: dt.date,
    *,
    horizon: int = DEFAULT_HORIZON,
    names: tuple[str, ...] = CHARACTERISTICS,
    weighted: bool = False,
) -> Panel:
    """The panel of the universe form (module docstring) for bundled ``symbols``."""
    market = read_daily_bars(MARKET, Adjustment.TOTAL)
    calendar = market.date
    close = np.full((len(calendar), len(symbols)), np.nan)
    volume = np.full_like(close, np.nan)
    for j, symbol in enumerate(symbols):
        bars = read_daily_bars(symbol, Adjustment.TOTAL)
        at = np.searchsorted(calendar, bars.date)
        on = at < len(calendar)
        on[on] &= calendar[at[on]] == bars.date[on]
        close[at[on], j] = bars.close[on]
        volume[at[on], j] = bars.volume[on]
    rows = rebalance_rows(calendar, first, last, horizon)
    chars = core.characteristics(close, volume, market.close)
    fwd = core.forward_returns(close, horizon)
    return Panel(
        dates=[str(d) for d in calendar[rows]],
        symbols=list(symbols),
        returns=fwd[rows],
        characteristics={name: chars[name][rows] for name in names},
        weights=(close * volume)[rows] if weighted else None,
    )


def _floats(values: Array) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _mean_error_t(series: Array) -> dict[str, Any]:
    """Mean, standard error (std ddof 1 / √n) and t of a series' finite values."""
    v = series[np.isfinite(series)]
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    t = mean / se if n > 1 and se > 0 else math.nan
    return {
        "periods": n,
        "mean": core.finite_or_none(mean),
        "std_error": core.finite_or_none(se),
        "t": core.finite_or_none(t),
    }


def long_short(returns: Array, characteristic: Array, quantiles: int) -> dict[str, Any]:
    """Per date the top-minus-bottom quantile return (equal weights) of a sort on
    ``characteristic`` over the symbols where it and the return are finite; the mean quantile
    returns, and the spread's mean, standard error and t over the dates with a spread."""
    clean = np.where(np.isfinite(returns), characteristic, np.nan)
    labels = core.quantile_labels(clean, quantiles)
    per_quantile = core.quantile_returns(labels, returns, quantiles)
    spread = per_quantile[:, -1] - per_quantile[:, 0]
    with warnings.catch_warnings():  # "mean of empty slice": a quantile never filled is null
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(per_quantile, axis=0)
    return {"returns": _floats(spread), "quantile_means": _floats(means),
            **_mean_error_t(spread)}  # fmt: skip


def cross_section_payload(panel: Panel, *, quantiles: int, nw_lags: int | None) -> dict[str, Any]:
    """Per-date slopes, R² and counts; Fama–MacBeth averages with standard errors and t-stats;
    per characteristic the long–short quantile return series. Non-finite numbers are null."""
    names = list(panel.characteristics)
    x = np.stack([panel.characteristics[n] for n in names], axis=-1)
    section = core.cross_section_regressions(panel.returns, x, panel.weights)
    fm = core.fama_macbeth(section.slopes, lags=nw_lags or 0)
    columns = [INTERCEPT, *names]
    r2 = section.r2[np.isfinite(section.r2)]
    return {
        "dates": panel.dates,
        "symbols": panel.symbols,
        "characteristics": names,
        "estimator": "ols" if panel.weights is None else "wls",
        "std_errors": "plain" if nw_lags is None else "newey_west",
        "nw_lags": nw_lags,
        "slopes": {c: _floats(section.slopes[:, i]) for i, c in enumerate(columns)},
        "r2": _floats(section.r2),
        "nobs": section.nobs.tolist(),
        "fama_macbeth": {
            "periods": fm.periods,
            "mean_r2": core.finite_or_none(float(r2.mean())) if r2.size else None,
            "params": dict(zip(columns, _floats(fm.params), strict=True)),
            "std_error": dict(zip(columns, _floats(fm.bse), strict=True)),
            "t": dict(zip(columns, _floats(fm.tvalues), strict=True)),
        },
        "quantiles": quantiles,
        "long_short": {
            n: long_short(panel.returns, panel.characteristics[n], quantiles) for n in names
        },
    }


def check_cells(dates: int, symbols: int, parameter: str) -> None:
    """400 naming ``parameter`` past ``MAX_PANEL_CELLS`` dates × symbols."""
    if dates * symbols > MAX_PANEL_CELLS:
        raise ValidationError(
            f"{dates} dates × {symbols} symbols = {dates * symbols} cells, "
            f"at most {MAX_PANEL_CELLS}",
            parameter=parameter,
        )

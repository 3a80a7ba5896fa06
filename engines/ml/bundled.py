"""The bundled Lean daily files as a walk-forward panel: what the ML tests and
``loadtest/ml_bench`` fit, built as ``POST /ml/walkforward`` builds stored daily bars
(``core.pooled_daily_design``), with times in days since the epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.marketdata.daily import Adjustment, daily_tickers, read_daily_bars
from engines.ml import core


def bundled_daily_design(tickers: Sequence[str] | None = None, horizon: int = 5) -> core.Design:
    """Total-return adjusted closes of ``tickers`` (default: every bundled ticker, in
    ``daily_tickers`` order), ``core.pooled_daily_design`` at ``horizon`` days."""
    series = {}
    for ticker in daily_tickers() if tickers is None else tickers:
        bars = read_daily_bars(ticker, Adjustment.TOTAL)
        series[ticker] = (bars.close, bars.date.astype("datetime64[D]").astype(np.int64))
    return core.pooled_daily_design(series, horizon)

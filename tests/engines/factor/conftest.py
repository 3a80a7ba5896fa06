"""The daily universe as aligned arrays (MarketData's bundled Lean daily files, total-return
adjusted), loaded once per session."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from engines.marketdata.daily import Adjustment, daily_tickers, read_daily_bars


@dataclass(frozen=True)
class Universe:
    """Every bundled ticker on the union of their dates (NaN where a ticker has no bar)."""

    tickers: list[str]
    dates: np.ndarray  # (D,) datetime64[D]
    close: np.ndarray  # (D, N)
    volume: np.ndarray  # (D, N)

    def column(self, ticker: str) -> np.ndarray:
        return self.close[:, self.tickers.index(ticker)]


def load_universe() -> Universe:
    tickers = daily_tickers()
    bars = {t: read_daily_bars(t, Adjustment.TOTAL) for t in tickers}
    dates = np.unique(np.concatenate([b.date for b in bars.values()]))
    close = np.full((len(dates), len(tickers)), np.nan)
    volume = np.full_like(close, np.nan)
    for j, t in enumerate(tickers):
        at = np.searchsorted(dates, bars[t].date)
        close[at, j] = bars[t].close
        volume[at, j] = bars[t].volume
    return Universe(tickers, dates, close, volume)


def paired_returns(universe: Universe, symbol: str, factors: list[str]) -> tuple[np.ndarray, ...]:
    """Daily close-to-close returns of ``symbol`` and ``factors`` on the dates all have bars."""
    cols = [universe.column(t) for t in (symbol, *factors)]
    both = np.all([np.isfinite(c) for c in cols], axis=0)
    prices = [c[both] for c in cols]
    rets = [p[1:] / p[:-1] - 1.0 for p in prices]
    return rets[0], np.column_stack(rets[1:])


@pytest.fixture(scope="session")
def universe() -> Universe:
    return load_universe()

"""Risk core tests: the ``slow`` marker (the SPY 1998–2021 backtest table) and shared data."""

from __future__ import annotations

import numpy as np
import pytest

from engines.marketdata.daily import DailyBars, read_daily_bars


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than ~2 s")


@pytest.fixture(scope="session")
def spy() -> DailyBars:
    """SPY total-return-adjusted daily bars 1998–2021 (bundled Lean data)."""
    return read_daily_bars("SPY", adjustment="total")


@pytest.fixture(scope="session")
def spy_returns(spy: DailyBars) -> np.ndarray:
    """Close-to-close simple returns of SPY (one fewer than the bars)."""
    return spy.close[1:] / spy.close[:-1] - 1.0

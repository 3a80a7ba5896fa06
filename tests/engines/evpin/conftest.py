"""Session-scoped loads of the bundled SPY files (parsed once per test session)."""

from __future__ import annotations

import pytest

from engines.marketdata import feeds
from engines.marketdata.records import TradeColumns


@pytest.fixture(scope="session")
def spy_day() -> TradeColumns:
    """2013-10-07, all 250 601 trades of the Lean tick file."""
    return feeds.read_lean_trade_ticks(feeds.lean_tick_path(feeds.lean_days()[0]))


@pytest.fixture(scope="session")
def spy_minute_bars() -> list[feeds.LeanMinuteBars]:
    """Lean's own minute bars for the five days: bars built by someone else than us."""
    return [
        feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(day))
        for day in feeds.lean_days()
    ]

"""Session-scoped loads of the bundled data: each file is parsed once per test session."""

from __future__ import annotations

from datetime import date

import pytest

from engines.marketdata import feeds
from engines.marketdata.records import TradeColumns


@pytest.fixture(scope="session")
def spy_days() -> list[date]:
    return feeds.lean_days()


@pytest.fixture(scope="session")
def spy_ticks(spy_days: list[date]) -> dict[date, TradeColumns]:
    return {day: feeds.read_lean_trade_ticks(feeds.lean_tick_path(day)) for day in spy_days}


@pytest.fixture(scope="session")
def spy_minutes(spy_days: list[date]) -> dict[date, feeds.LeanMinuteBars]:
    return {
        day: feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(day)) for day in spy_days
    }


@pytest.fixture(scope="session")
def binance_events() -> list[feeds.BinanceEvent]:
    return list(feeds.read_binance_feed())

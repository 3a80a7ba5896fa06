"""Lean tick quotes (AIG, BAC, 7–11 Oct 2013) against the raw files and the same days' trades.

Column layout: Lean ``Tick(config, line, date)`` for equity ``TickType.Quote`` reads
``time, bid, bid size, ask, ask size, exchange, condition, suspicious`` (QuantConnect/Lean @
24863901, ``Common/Data/Market/Tick.cs``); the README's example row
``14400152,0,0,494100,300,Q,1,0`` is an ask-only update.
"""

from __future__ import annotations

import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from engines.marketdata import feeds

BAC_DAY = date(2013, 10, 7)
WEEK = [date(2013, 10, d) for d in range(7, 12)]
#: 04:00 and 20:00 New York (EDT, UTC−4 in Oct 2013) on the day, as UTC ns.
_H = 3_600_000_000_000


def session_bounds(day: date) -> tuple[int, int]:
    midnight_utc = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9
    return midnight_utc + 8 * _H, midnight_utc + 24 * _H


def file_lines(path: Path) -> list[bytes]:
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        return archive.read(name).splitlines()


@pytest.fixture(scope="module")
def bac() -> feeds.QuoteTickColumns:
    return feeds.read_lean_quote_ticks(feeds.lean_tick_quote_path(BAC_DAY, "bac"))


def test_aig_and_bac_days_are_bundled() -> None:
    for symbol in ("aig", "bac"):
        assert feeds.lean_days(symbol) == WEEK
        for day in WEEK:
            assert feeds.lean_tick_quote_path(day, symbol).is_file()
            assert feeds.lean_tick_path(day, symbol).is_file()


def test_rows_match_the_file_line_by_line(bac: feeds.QuoteTickColumns) -> None:
    lines = file_lines(feeds.lean_tick_quote_path(BAC_DAY, "bac"))
    assert len(bac) == len(lines)
    assert bac.symbol == "BAC"
    np.testing.assert_array_equal(bac.sequence, np.arange(1, len(lines) + 1))
    start, _ = session_bounds(BAC_DAY)
    for k in (0, 1, 2, len(lines) // 2, len(lines) - 1):
        ms, bid, bid_size, ask, ask_size, exchange, _, _ = lines[k].split(b",")
        assert bac.event_ns[k] == start - 4 * _H + int(ms) * 1_000_000
        assert bac.exchange[k] == exchange
        if int(bid):
            assert (bac.bid[k], bac.bid_size[k]) == (int(bid) / 10_000, int(bid_size))
            assert np.isnan(bac.ask[k]) and np.isnan(bac.ask_size[k])
        else:
            assert (bac.ask[k], bac.ask_size[k]) == (int(ask) / 10_000, int(ask_size))
            assert np.isnan(bac.bid[k]) and np.isnan(bac.bid_size[k])


def test_every_row_quotes_exactly_one_side(bac: feeds.QuoteTickColumns) -> None:
    has_bid, has_ask = ~np.isnan(bac.bid), ~np.isnan(bac.ask)
    assert np.all(has_bid != has_ask)
    assert (bac.bid_size[has_bid] > 0).all() and (bac.ask_size[has_ask] > 0).all()
    assert abs(int(has_bid.sum()) - int(has_ask.sum())) <= 1
    assert not bac.suspicious.any()


def test_times_are_ordered_and_inside_the_session(bac: feeds.QuoteTickColumns) -> None:
    start, end = session_bounds(BAC_DAY)
    assert np.all(np.diff(bac.event_ns) >= 0)
    assert bac.event_ns[0] >= start
    assert bac.event_ns[-1] < end + 1_000_000_000  # a few closing prints at 20:00:00.xxx
    assert np.mean(bac.event_ns < end) > 0.9999


def test_filled_quote_matches_a_row_by_row_replay(bac: feeds.QuoteTickColumns) -> None:
    n = 5_000
    filled = bac.filled()
    bid = ask = bid_size = ask_size = np.nan
    for k in range(n):
        if not np.isnan(bac.bid[k]):
            bid, bid_size = bac.bid[k], bac.bid_size[k]
        if not np.isnan(bac.ask[k]):
            ask, ask_size = bac.ask[k], bac.ask_size[k]
        np.testing.assert_array_equal(
            [filled.bid[k], filled.bid_size[k], filled.ask[k], filled.ask_size[k]],
            [bid, bid_size, ask, ask_size],
        )


def test_spreads(bac: feeds.QuoteTickColumns) -> None:
    """Measured: BAC 10-07 98.0 % of rows positive, 2.0 % locked (bid = ask), none crossed."""
    filled = bac.filled()
    both = ~np.isnan(filled.bid) & ~np.isnan(filled.ask)
    spread = (filled.ask - filled.bid)[both]
    assert np.mean(spread >= 0) >= 0.999
    assert np.mean(spread > 0) >= 0.95
    assert np.median(spread) == pytest.approx(0.01)  # one tick on a $14 stock


def test_trades_print_inside_the_quote(bac: feeds.QuoteTickColumns) -> None:
    """The same day's trade file (read by the trade reader) against the quote in force: regular
    hours trades print within a cent of [bid, ask] — a cross-check of the column order."""
    trades = feeds.read_lean_trade_ticks(feeds.lean_tick_path(BAC_DAY, "bac"), symbol="BAC")
    filled = bac.filled()
    at = np.searchsorted(bac.event_ns, trades.event_ns, side="right") - 1
    start, _ = session_bounds(BAC_DAY)
    regular = (trades.event_ns >= start + 5 * _H + _H // 2) & (trades.event_ns < start + 12 * _H)
    regular &= at >= 0
    bid, ask, price = filled.bid[at[regular]], filled.ask[at[regular]], trades.price[regular]
    inside = (price >= bid - 0.01 + 1e-9) & (price <= ask + 0.01 + 1e-9)
    assert regular.sum() > 10_000
    assert np.mean(inside) >= 0.99


@pytest.mark.slow
def test_aig_row_count_matches_the_readme() -> None:
    """The data README: ~1.08M quote rows for AIG on 10-07 (≈3 s to parse)."""
    path = feeds.lean_tick_quote_path(BAC_DAY, "aig")
    quotes = feeds.read_lean_quote_ticks(path)
    assert quotes.symbol == "AIG"
    assert len(quotes) == len(file_lines(path))
    assert len(quotes) == pytest.approx(1_080_000, rel=0.005)
    # the README's example row is the first line: an ask-only update on NASDAQ (Q) at 04:00:00.152
    start, _ = session_bounds(BAC_DAY)
    assert quotes.event_ns[0] == start + 152_000_000
    assert (quotes.ask[0], quotes.ask_size[0], quotes.exchange[0]) == (49.41, 300.0, b"Q")
    assert np.isnan(quotes.bid[0])


@pytest.mark.slow
def test_every_bundled_quote_file() -> None:
    """≈30 s (``slow``: ``-m 'not slow'`` leaves it out). Every file: one row per line, times in the session, spreads ≥ 0 on ≥ 99.9 % of rows and
    positive on ≥ 95 % (measured 95.6–98.0 %; locked markets, bid = ask, the rest)."""
    for symbol in ("aig", "bac"):
        for day in WEEK:
            path = feeds.lean_tick_quote_path(day, symbol)
            quotes = feeds.read_lean_quote_ticks(path)
            assert len(quotes) == len(file_lines(path))
            start, end = session_bounds(day)
            assert quotes.event_ns[0] >= start and quotes.event_ns[-1] < end + 10**9
            filled = quotes.filled()
            both = ~np.isnan(filled.bid) & ~np.isnan(filled.ask)
            spread = (filled.ask - filled.bid)[both]
            assert np.mean(spread >= 0) >= 0.999, (symbol, day)
            assert np.mean(spread > 0) >= 0.95, (symbol, day)

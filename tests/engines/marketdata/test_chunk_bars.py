"""Chunked bar builders against the whole-day vectorized bars of ``core`` (tested against Lean)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from engines.marketdata import feeds
from engines.marketdata.chunk_bars import ChunkThresholdBars, ChunkTimeBars, chunk_bar_builder
from engines.marketdata.core import SaleConditionFilter, threshold_bars, time_bars
from engines.marketdata.records import Bar, TradeColumns

DAY = date(2013, 10, 7)


@pytest.fixture(scope="module")
def day_ticks() -> TradeColumns:
    return feeds.read_lean_trade_ticks(feeds.lean_tick_path(DAY))


def feed_in_chunks(
    builder: ChunkTimeBars | ChunkThresholdBars, ticks: TradeColumns, seed: int
) -> list[Bar]:
    """Feed ``ticks`` in random chunk sizes (1 to 5000 rows, some empty)."""
    rng = np.random.default_rng(seed)
    out: list[Bar] = []
    start = 0
    while start < len(ticks):
        size = int(rng.integers(0, 5000))
        out += builder.add(ticks.select(slice(start, start + size)))
        start += size
    return out


@pytest.mark.parametrize("spec", ["1s", "1m", "5m", "1h"])
@pytest.mark.parametrize("lean_filter", [False, True])
def test_time_bars_equal_the_whole_day_bars(
    day_ticks: TradeColumns, spec: str, lean_filter: bool
) -> None:
    sale_filter = SaleConditionFilter.lean_default() if lean_filter else SaleConditionFilter.none()
    builder = ChunkTimeBars("SPY", spec, sale_filter)
    chunked = feed_in_chunks(builder, day_ticks, seed=len(spec))
    assert builder.close_until(int(day_ticks.event_ns[-1])) == []  # the last bar is still open
    chunked += builder.flush()
    assert chunked == time_bars(day_ticks, spec, sale_filter)


def test_unfiltered_time_bars_conserve_volume(day_ticks: TradeColumns) -> None:
    builder = chunk_bar_builder("SPY", "1m")
    bars = feed_in_chunks(builder, day_ticks, seed=3) + builder.flush()
    assert sum(b.volume for b in bars) == day_ticks.size.sum()
    assert sum(b.trades for b in bars) == len(day_ticks)


def test_close_until_completes_a_quiet_bar(day_ticks: TradeColumns) -> None:
    builder = ChunkTimeBars("SPY", "1m", SaleConditionFilter.none())
    first = day_ticks.select(slice(0, 1))
    assert builder.add(first) == []
    start = int(first.event_ns[0]) - int(first.event_ns[0]) % 60_000_000_000
    assert builder.close_until(start + 59_999_999_999) == []
    (bar,) = builder.close_until(start + 60_000_000_000)
    assert (bar.start_ns, bar.volume, bar.trades) == (start, float(first.size[0]), 1)


@pytest.mark.parametrize("spec", ["tick500", "volume50000", "volume777"])
def test_threshold_bars_equal_the_whole_day_bars(day_ticks: TradeColumns, spec: str) -> None:
    builder = ChunkThresholdBars("SPY", spec, SaleConditionFilter.none())
    chunked = feed_in_chunks(builder, day_ticks, seed=7)
    # Integer share sizes: cumulative sums are exact, so the bars are bit-equal.
    assert chunked == threshold_bars(day_ticks, spec)
    assert builder.flush() == []
    threshold = float(spec.removeprefix("tick").removeprefix("volume"))
    if spec.startswith("volume"):
        assert all(b.volume == threshold for b in chunked)
        assert len(chunked) == int(day_ticks.size.sum() // threshold)


def test_dollar_bars_match_to_rounding(day_ticks: TradeColumns) -> None:
    builder = ChunkThresholdBars("SPY", "dollar5000000", SaleConditionFilter.none())
    chunked = feed_in_chunks(builder, day_ticks, seed=11)
    whole = threshold_bars(day_ticks, "dollar5000000")
    assert len(chunked) == len(whole)
    for mine, reference in zip(chunked, whole, strict=True):
        assert (mine.start_ns, mine.end_ns, mine.open, mine.close) == (
            reference.start_ns,
            reference.end_ns,
            reference.open,
            reference.close,
        )
        assert mine.dollar_volume == pytest.approx(5_000_000, rel=1e-9)
        assert mine.volume == pytest.approx(reference.volume, rel=1e-9)


def test_filtered_threshold_bars_leave_out_auction_prints(day_ticks: TradeColumns) -> None:
    sale_filter = SaleConditionFilter.lean_default()
    builder = ChunkThresholdBars("SPY", "volume50000", sale_filter)
    chunked = feed_in_chunks(builder, day_ticks, seed=5)
    counted = day_ticks.select(sale_filter.counts_volume(day_ticks.condition))
    assert len(counted) < len(day_ticks)  # the day has auction prints
    assert chunked == threshold_bars(counted, "volume50000")

"""Replay sources built from the bundled data: chunks of (time, channel, payload) for the bus.

``realtime.replay.replay`` paces them; the MarketData engine and ``nautilus up`` pick one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, time

import numpy as np

from engines.marketdata.feeds import (
    SimulatorConfig,
    SyntheticMarket,
    lean_days,
    lean_tick_path,
    local_ms_to_utc_ns,
    read_lean_trade_ticks,
)
from engines.marketdata.records import TradeColumns
from protocol.channels import quotes, trades
from realtime.replay import ReplayChunk

CHUNK = 4096


def trade_chunks(columns: TradeColumns, chunk: int = CHUNK) -> Iterator[ReplayChunk]:
    channel = trades(columns.symbol)
    for start in range(0, len(columns), chunk):
        part = columns.select(slice(start, start + chunk))
        payloads = [t.to_payload(columns.price_precision) for t in part.trades()]
        yield ReplayChunk(part.event_ns, [channel] * len(part), payloads)


def spy_trade_chunks(
    days: Sequence[date] | None = None, start: time | None = time(9, 30)
) -> Iterator[ReplayChunk]:
    """The bundled SPY trades of 7–11 Oct 2013, day after day, from ``start`` (New York time)."""
    for day in days or lean_days("spy"):
        columns = read_lean_trade_ticks(lean_tick_path(day), symbol="SPY")
        if start is not None:
            ms = (start.hour * 3600 + start.minute * 60 + start.second) * 1000
            first_ns = int(local_ms_to_utc_ns(day, np.array([ms], dtype=np.int64))[0])
            columns = columns.select(columns.event_ns >= first_ns)
        yield from trade_chunks(columns)


def simulated_chunks(config: SimulatorConfig, chunk: int = CHUNK) -> Iterator[ReplayChunk]:
    """An endless seeded synthetic market: ``trades.SIMnn`` and ``quotes.SIMnn``."""
    market = SyntheticMarket(config)
    trade_channel = [trades(s) for s in market.symbols]
    quote_channel = [quotes(s) for s in market.symbols]
    while True:
        events = market.next_chunk(chunk)
        is_trade = events.is_trade.tolist()
        index = events.symbol_index.tolist()
        channels = [
            (trade_channel if t else quote_channel)[s] for t, s in zip(is_trade, index, strict=True)
        ]
        payloads = [r.to_payload() for r in events.records()]
        yield ReplayChunk(events.event_ns, channels, payloads)

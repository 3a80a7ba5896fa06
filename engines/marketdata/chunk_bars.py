"""Bars built chunk by chunk: the vectorized ``core`` bar functions made incremental.

The engine replays trades in chunks of a few thousand; building bars one trade at a time
(``core.TimeBarBuilder``) costs microseconds per trade per spec, too slow for a max-speed replay.
These builders keep the trades of the bar still open and run ``core.time_bars`` /
``core.threshold_bars`` over *open trades + new chunk*, emitting every bar that chunk completes.
They produce the bars of the ``core`` functions over the whole stream (conventions in ``core``'s
module docstring), because a complete bar never depends on trades after it. Cost per chunk is
O(chunk + trades of the open bar).

Pure: arrays in, bars out, no I/O, no clock (``close_until`` takes the caller's event time).
"""

from __future__ import annotations

import numpy as np

from engines.marketdata.core import BarSpec, SaleConditionFilter, threshold_bars, time_bars
from engines.marketdata.records import Bar, TradeColumns

__all__ = ["ChunkBarBuilder", "ChunkThresholdBars", "ChunkTimeBars", "chunk_bar_builder", "concat"]


def concat(first: TradeColumns, second: TradeColumns) -> TradeColumns:
    """Rows of ``first`` then ``second`` (same symbol)."""
    if not len(first):
        return second
    if not len(second):
        return first
    return TradeColumns(
        first.symbol,
        first.price_precision,
        np.concatenate((first.event_ns, second.event_ns)),
        np.concatenate((first.receive_ns, second.receive_ns)),
        np.concatenate((first.price, second.price)),
        np.concatenate((first.size, second.size)),
        np.concatenate((first.aggressor, second.aggressor)),
        np.concatenate((first.sequence, second.sequence)),
        np.concatenate((first.exchange, second.exchange)),
        np.concatenate((first.condition, second.condition)),
    )


class ChunkTimeBars:
    """Time bars of one symbol and spec, fed chunk by chunk (same bars as ``core.time_bars``).

    The sale-condition filter applies as in ``core.time_bars``: volume-excluded prints are left
    out, price-excluded prints count in volume but set no price.
    """

    def __init__(self, symbol: str, spec: str, sale_filter: SaleConditionFilter) -> None:
        self.symbol = symbol
        self.spec = spec
        self.interval_ns = BarSpec.parse(spec).interval_ns
        self.sale_filter = sale_filter
        self._open: TradeColumns | None = None  # trades of the bar not yet complete

    def add(self, trades: TradeColumns) -> list[Bar]:
        kept = trades.select(self.sale_filter.counts_volume(trades.condition))
        pending = kept if self._open is None else concat(self._open, kept)
        if not len(pending):
            return []
        bucket = pending.event_ns - pending.event_ns % self.interval_ns
        bucket = np.maximum.accumulate(bucket)  # late trades join the bar being built (core)
        split = int(np.searchsorted(bucket, bucket[-1], side="left"))
        self._open = pending.select(slice(split, None))
        if split == 0:
            return []
        return time_bars(pending.select(slice(0, split)), self.spec, self.sale_filter)

    def open_start_ns(self) -> int | None:
        """Start of the bar being built, or ``None``."""
        if self._open is None or not len(self._open):
            return None
        first = int(self._open.event_ns[0])
        return first - first % self.interval_ns

    def close_until(self, event_ns: int) -> list[Bar]:
        """Complete the open bar once the stream's time ``event_ns`` has passed its end."""
        start = self.open_start_ns()
        if start is not None and event_ns >= start + self.interval_ns:
            return self.flush()
        return []

    def flush(self) -> list[Bar]:
        """Complete the open bar now (end of the data)."""
        if self._open is None or not len(self._open):
            return []
        bars = time_bars(self._open, self.spec, self.sale_filter)
        self._open = None
        return bars


class ChunkThresholdBars:
    """Tick / volume / dollar bars of one symbol, fed chunk by chunk (``core.threshold_bars``).

    The remainder of a trade split at the last complete bar's boundary is carried into the next
    chunk as the same trade with the remaining size (the pro-rata split of ``core``). With a
    sale-condition filter, volume-excluded prints are left out (they are not market volume).
    """

    def __init__(self, symbol: str, spec: str, sale_filter: SaleConditionFilter) -> None:
        parsed = BarSpec.parse(spec)
        if parsed.kind == "time":
            raise ValueError(f"{spec} is a time-bar spec; use ChunkTimeBars")
        self.symbol = symbol
        self.spec = spec
        self.kind = parsed.kind
        self.threshold = float(parsed.size)
        self.sale_filter = sale_filter
        self._open: TradeColumns | None = None

    def add(self, trades: TradeColumns) -> list[Bar]:
        kept = trades.select(self.sale_filter.counts_volume(trades.condition))
        pending = kept if self._open is None else concat(self._open, kept)
        if not len(pending):
            return []
        if self.kind == "tick":
            measure = np.ones(len(pending))
        elif self.kind == "volume":
            measure = pending.size.astype(np.float64)
        else:
            measure = pending.price * pending.size
        edges = np.concatenate(([0.0], np.cumsum(measure)))  # as core.threshold_bars does
        n_full = int(edges[-1] // self.threshold)
        if n_full == 0:
            self._open = pending
            return []
        bars = threshold_bars(pending, self.spec)
        cut = n_full * self.threshold
        first = int(np.searchsorted(edges, cut, side="right")) - 1  # trade holding the cut
        if first >= len(pending):
            self._open = None
            return bars
        rest = pending.select(slice(first, None))
        remaining = edges[first + 1] - cut  # measure of that trade after the cut
        if remaining <= 0:
            rest = rest.select(slice(1, None))
        elif self.kind != "tick":
            size = rest.size.copy()
            size[0] = remaining if self.kind == "volume" else size[0] * remaining / measure[first]
            rest = TradeColumns(
                rest.symbol,
                rest.price_precision,
                rest.event_ns,
                rest.receive_ns,
                rest.price,
                size,
                rest.aggressor,
                rest.sequence,
                rest.exchange,
                rest.condition,
            )
        self._open = rest if len(rest) else None
        return bars

    def close_until(self, event_ns: int) -> list[Bar]:
        """Threshold bars complete on volume, never on time."""
        return []

    def flush(self) -> list[Bar]:
        """Nothing: an incomplete threshold bar is not a bar (it stays open)."""
        return []


ChunkBarBuilder = ChunkTimeBars | ChunkThresholdBars


def chunk_bar_builder(
    symbol: str, spec: str, sale_filter: SaleConditionFilter | None = None
) -> ChunkBarBuilder:
    """The builder for ``spec`` (``1m`` → time bars, ``volume50000`` → threshold bars)."""
    chosen = sale_filter if sale_filter is not None else SaleConditionFilter.none()
    if BarSpec.parse(spec).kind == "time":
        return ChunkTimeBars(symbol, spec, chosen)
    return ChunkThresholdBars(symbol, spec, chosen)

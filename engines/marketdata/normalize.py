"""Normalized records → bus payloads and storage rows, column-wise where the data is columnar.

Payload keys are ``records``' (``Trade.to_payload`` etc.); storage rows are
``realtime.storage``'s. Trades arrive as ``TradeColumns``: payloads and rows are built from
whole-column ``tolist()`` conversions, one dict / row per trade and no intermediate ``Trade``.
Prices of the bundled feeds lie on their instrument's grid already (``records``), so payloads
carry them as read, without a per-trade ``round``.
"""

from __future__ import annotations

from typing import Any

from engines.marketdata.feeds import BINANCE_PRICE_PRECISION, LEAN_PRICE_PRECISION
from engines.marketdata.records import Bar, Quote, TradeColumns
from realtime.storage import BarRow, InstrumentRow, QuoteRow, TradeRow

__all__ = [
    "BINANCE_INSTRUMENT",
    "SPY_INSTRUMENT",
    "bar_row",
    "quote_row",
    "sim_instrument",
    "trade_payloads",
    "trade_rows",
]

#: SPY from Lean's consolidated US equity tape (prices ×10000 in the files).
SPY_INSTRUMENT = InstrumentRow("SPY", "US", "equity", LEAN_PRICE_PRECISION, 0, "USD")
#: BTCUSDT spot: tick 0.01, lot 0.00001 (Binance exchangeInfo PRICE_FILTER / LOT_SIZE).
BINANCE_INSTRUMENT = InstrumentRow(
    "BTCUSDT", "BINANCE", "crypto", BINANCE_PRICE_PRECISION, 5, "USDT"
)

_SIDE = {1: "buy", -1: "sell", 0: None}


def sim_instrument(symbol: str, price_precision: int) -> InstrumentRow:
    return InstrumentRow(symbol, "SIM", "synthetic", price_precision, 0, "USD")


def trade_payloads(trades: TradeColumns) -> list[dict[str, Any]]:
    """The ``trades.SYM`` payloads of every row (keys of ``records.Trade.to_payload``)."""
    symbol = trades.symbol
    return [
        {
            "s": symbol,
            "t": t,
            "r": r,
            "p": p,
            "q": q,
            "a": _SIDE[a],
            "i": i if i >= 0 else None,
            "x": x,
            "c": c,
        }
        for t, r, p, q, a, i, x, c in zip(
            trades.event_ns.tolist(),
            trades.receive_ns.tolist(),
            trades.price.tolist(),
            trades.size.tolist(),
            trades.aggressor.tolist(),
            trades.sequence.tolist(),
            trades.exchange.astype("U1").tolist(),
            trades.condition.tolist(),
            strict=True,
        )
    ]


def trade_rows(trades: TradeColumns, *, with_conditions: bool) -> list[TradeRow]:
    """Storage rows of every row: aggressor ±1 or ``None``; ``trade_id`` the venue id (or the
    source file's line number); ``condition`` the sale-condition flags in hex when the feed has
    them (``with_conditions``, Lean), else ``None``; ``exchange`` ``None`` when unknown."""
    symbol = trades.symbol
    conditions: list[str | None] = (
        [format(c, "x") for c in trades.condition.tolist()]
        if with_conditions
        else [None] * len(trades)
    )
    return [
        TradeRow(symbol, t, r, p, q, a or None, str(i) if i >= 0 else None, x or None, c)
        for t, r, p, q, a, i, x, c in zip(
            trades.event_ns.tolist(),
            trades.receive_ns.tolist(),
            trades.price.tolist(),
            trades.size.tolist(),
            trades.aggressor.tolist(),
            trades.sequence.tolist(),
            trades.exchange.astype("U1").tolist(),
            conditions,
            strict=True,
        )
    ]


def quote_row(quote: Quote) -> QuoteRow:
    return QuoteRow(
        quote.symbol,
        quote.event_ns,
        quote.receive_ns,
        quote.bid,
        quote.bid_size,
        quote.ask,
        quote.ask_size,
    )


def bar_row(bar: Bar) -> BarRow:
    return BarRow(
        bar.symbol,
        bar.spec,
        bar.start_ns,
        bar.end_ns,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.dollar_volume,
        bar.trades,
    )

"""The bundled feeds' instruments, and trade payloads built column-wise from ``TradeColumns``.

Payload keys are ``records``' (``encode(Trade)``): built from whole-column ``tolist()``
conversions, one dict per trade and no intermediate ``Trade`` (``encode`` of a record is slower
than a dict built directly; ``loadtest.records_bench``). Storage takes the records themselves
(``TradeColumns.trades()``). Prices of the bundled feeds lie on their instrument's grid already
(``records``), so payloads carry them as read, without a per-trade ``round``.
"""

from __future__ import annotations

from typing import Any

from engines.marketdata.feeds import BINANCE_PRICE_PRECISION, LEAN_PRICE_PRECISION
from engines.marketdata.records import TradeColumns
from realtime.storage import InstrumentRow

__all__ = [
    "BINANCE_INSTRUMENT",
    "SPY_INSTRUMENT",
    "sim_instrument",
    "trade_payloads",
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

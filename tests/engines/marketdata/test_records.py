"""Records: payloads are JSON for the bus, columns round-trip to records and back."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from engines.marketdata.records import (
    TRADE_DTYPE,
    Bar,
    BookDelta,
    Quote,
    Side,
    Trade,
    TradeColumns,
)


def test_payloads_are_json_with_short_names() -> None:
    trade = Trade("BTCUSDT", 2, 3, 61837.63, 0.02, Side.SELL, 3735683259)
    assert orjson.loads(orjson.dumps(trade.to_payload())) == {
        "s": "BTCUSDT",
        "t": 2,
        "r": 3,
        "p": 61837.63,
        "q": 0.02,
        "a": "sell",
        "i": 3735683259,
        "x": "",
        "c": 0,
    }
    assert Trade("X", 1, 1, 1.23456, 1).to_payload(price_precision=2)["p"] == 1.23
    quote = Quote("X", 1, 2, 9.99, 5, 10.01, 7, 42)
    assert orjson.loads(orjson.dumps(quote.to_payload()))["k"] == 10.01
    delta = BookDelta("X", 1, 2, 10, 12, ((9.0, 1.0),), ((11.0, 0.0),))
    assert orjson.loads(orjson.dumps(delta.to_payload()))["asks"] == [[11.0, 0.0]]
    bar = Bar("X", "1m", 0, 60, 1.0, 2.0, 0.5, 1.5, 10.0, 12.0, 3)
    assert set(bar.to_payload()) == {"s", "spec", "t", "te", "o", "h", "l", "c", "v", "dv", "n"}


def test_records_are_immutable() -> None:
    trade = Trade("X", 1, 1, 1.0, 1.0)
    with pytest.raises(AttributeError):
        trade.price = 2.0  # type: ignore[misc]


def test_columns_round_trip() -> None:
    trades = [
        Trade("X", 1, 2, 10.5, 100.0, Side.BUY, 7, "P", 0x20),
        Trade("X", 3, 4, 10.25, 50.0, None, None, "Q", 0),
    ]
    columns = TradeColumns.from_trades("X", 2, trades)
    assert columns.trades() == trades
    assert columns.trade(1) == trades[1]
    rows = columns.to_structured()
    assert rows.dtype == TRADE_DTYPE
    again = TradeColumns.from_structured("X", 2, rows)
    assert again.trades() == trades
    assert columns.select(np.array([False, True])).trades() == trades[1:]


def test_columns_reject_ragged_arrays() -> None:
    with pytest.raises(ValueError, match="price"):
        TradeColumns(
            "X",
            2,
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
            np.zeros(1),
            np.zeros(2),
            np.zeros(2, np.int8),
            np.zeros(2, np.int64),
            np.zeros(2, "S1"),
            np.zeros(2, np.uint32),
        )

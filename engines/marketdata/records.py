"""Normalized market-data records: what every feed produces and every consumer reads.

Time. Every record carries ``event_ns`` (when the venue says the event happened, Unix epoch ns,
UTC) and ``receive_ns`` (when our side received it; for replayed files the capture time the file
recorded, or ``event_ns`` when the file has none, as for Lean ticks).

Prices. Prices and sizes are ``float`` (numpy ``float64`` in columns). Each instrument declares
its ``price_precision`` (decimal places of its price grid: SPY 4 in Lean's ×10000 integers,
BTCUSDT 2); a price is always the exact decimal ``ticks / 10**precision`` rounded to the nearest
double, so equal ticks give bit-equal floats and comparisons against a reference that divides the
same integers are exact. Payloads round prices to the instrument's precision.

The record types themselves (``Trade``, ``Quote``, ``Bar``, ``BookTop``, ``BookDelta``,
``Instrument``) are the platform's, in ``protocol.records`` (one encoder, one validating decoder);
this module adds the columnar and feed-side forms. Payload field names (JSON for the bus, kept
short because they are sent per message to every subscriber):

========  =========================================================================
``s``     symbol
``t``     event time, ns (bars: start of the bar, ns)
``r``     receive time, ns
``p``     trade price                ``q``   trade size
``a``     aggressor side ``"buy"``/``"sell"`` or ``null`` when the venue does not say
``i``     trade id / sequence number (``null`` when unknown)
``x``     exchange code (``""`` when unknown)  ``c``   sale-condition flags (int, 0 = none)
``b``/``bq``  best bid price / size  ``k``/``kq``  best ask price / size
``U``/``u``   first / last update id of a book delta; ``bids``/``asks`` lists ``[price, size]``
``spec``  bar spec (``1m``, ``tick100``, ``volume5000``, ``dollar1000000``)
``te``    bar end, ns (exclusive)
``o h l c``   bar open / high / low / close  ``v`` volume  ``dv`` dollar volume  ``n`` trades
========  =========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.records import Bar, BookDelta, BookTop, Instrument, Quote, Side, Trade

__all__ = [
    "TRADE_DTYPE",
    "Bar",
    "BookDelta",
    "BookSnapshot",
    "BookTop",
    "Instrument",
    "Quote",
    "Side",
    "Trade",
    "TradeColumns",
]


Levels = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A full L2 book at ``last_update_id`` (Binance REST ``GET /api/v3/depth``)."""

    symbol: str
    receive_ns: int
    last_update_id: int
    bids: Levels
    asks: Levels


#: Row layout of a whole-day trade load (one numpy structured record per trade).
TRADE_DTYPE = np.dtype(
    [
        ("event_ns", np.int64),
        ("receive_ns", np.int64),
        ("price", np.float64),
        ("size", np.float64),
        ("aggressor", np.int8),  # +1 buy, -1 sell, 0 unknown
        ("sequence", np.int64),  # venue trade id, or row number in the source file
        ("exchange", "S1"),
        ("condition", np.uint32),
    ]
)

_AGGRESSOR_CODE: dict[int, Side | None] = {1: Side.BUY, -1: Side.SELL, 0: None}


@dataclass(frozen=True, slots=True, eq=False)
class TradeColumns:
    """Trades of one symbol as parallel arrays (columnar form for replay and batch bars).

    All arrays have the same length, in feed order. ``aggressor`` is +1 buy, -1 sell, 0 unknown;
    ``sequence`` is the venue's trade id (Binance ``t``) or the row number in the source file;
    ``exchange`` is one ASCII byte per trade; ``condition`` the feed's sale-condition flags.
    ``price`` lies on the ``10**-price_precision`` grid.
    """

    symbol: str
    price_precision: int
    event_ns: npt.NDArray[np.int64]
    receive_ns: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    aggressor: npt.NDArray[np.int8]
    sequence: npt.NDArray[np.int64]
    exchange: npt.NDArray[np.bytes_]
    condition: npt.NDArray[np.uint32]

    def __post_init__(self) -> None:
        n = len(self.event_ns)
        for name in (
            "receive_ns",
            "price",
            "size",
            "aggressor",
            "sequence",
            "exchange",
            "condition",
        ):
            if len(getattr(self, name)) != n:
                rows = len(getattr(self, name))
                raise ValueError(f"TradeColumns.{name} has {rows} rows, not {n}")

    def __len__(self) -> int:
        return len(self.event_ns)

    def select(self, mask_or_index: npt.NDArray[Any] | slice) -> TradeColumns:
        """The rows picked by a boolean mask, an index array or a slice."""
        return TradeColumns(
            self.symbol,
            self.price_precision,
            self.event_ns[mask_or_index],
            self.receive_ns[mask_or_index],
            self.price[mask_or_index],
            self.size[mask_or_index],
            self.aggressor[mask_or_index],
            self.sequence[mask_or_index],
            self.exchange[mask_or_index],
            self.condition[mask_or_index],
        )

    def to_structured(self) -> npt.NDArray[np.void]:
        """One structured array (``TRADE_DTYPE``) with the same rows."""
        out = np.empty(len(self), dtype=TRADE_DTYPE)
        for name in TRADE_DTYPE.names or ():
            out[name] = getattr(self, name)
        return out

    @classmethod
    def from_structured(
        cls, symbol: str, price_precision: int, rows: npt.NDArray[np.void]
    ) -> TradeColumns:
        return cls(
            symbol,
            price_precision,
            np.ascontiguousarray(rows["event_ns"]),
            np.ascontiguousarray(rows["receive_ns"]),
            np.ascontiguousarray(rows["price"]),
            np.ascontiguousarray(rows["size"]),
            np.ascontiguousarray(rows["aggressor"]),
            np.ascontiguousarray(rows["sequence"]),
            np.ascontiguousarray(rows["exchange"]),
            np.ascontiguousarray(rows["condition"]),
        )

    @classmethod
    def from_trades(cls, symbol: str, price_precision: int, trades: list[Trade]) -> TradeColumns:
        """Columns from records (all of ``symbol``); the inverse of ``trades()``."""
        side_code = {Side.BUY: 1, Side.SELL: -1, None: 0}
        return cls(
            symbol,
            price_precision,
            np.array([t.event_ns for t in trades], dtype=np.int64),
            np.array([t.receive_ns for t in trades], dtype=np.int64),
            np.array([t.price for t in trades], dtype=np.float64),
            np.array([t.size for t in trades], dtype=np.float64),
            np.array([side_code[t.aggressor] for t in trades], dtype=np.int8),
            np.array([-1 if t.sequence is None else t.sequence for t in trades], dtype=np.int64),
            np.array([t.exchange.encode("ascii") for t in trades], dtype="S1"),
            np.array([t.condition for t in trades], dtype=np.uint32),
        )

    def trade(self, i: int) -> Trade:
        """Row ``i`` as a ``Trade`` record."""
        return Trade(
            self.symbol,
            int(self.event_ns[i]),
            int(self.receive_ns[i]),
            float(self.price[i]),
            float(self.size[i]),
            _AGGRESSOR_CODE[int(self.aggressor[i])],
            _sequence_or_none(int(self.sequence[i])),
            self.exchange[i].decode("ascii"),
            int(self.condition[i]),
        )

    def trades(self) -> list[Trade]:
        """Every row as a ``Trade`` (what the store keeps; the bus payloads are built from the
        columns directly, ``normalize.trade_payloads``). Whole-column conversions, then one
        ``Trade`` per row and nothing else per row: the replay's storage hot path."""
        symbol = self.symbol
        return [
            Trade(symbol, t, r, p, q, a, None if i < 0 else i, x, c)
            for t, r, p, q, a, i, x, c in zip(
                self.event_ns.tolist(),
                self.receive_ns.tolist(),
                self.price.tolist(),
                self.size.tolist(),
                map(_AGGRESSOR_CODE.__getitem__, self.aggressor.tolist()),
                self.sequence.tolist(),
                self.exchange.astype("U1").tolist(),
                self.condition.tolist(),
                strict=True,
            )
        ]


def _sequence_or_none(value: int) -> int | None:
    return None if value < 0 else value

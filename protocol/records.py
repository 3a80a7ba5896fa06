"""Typed records: everything that crosses the bus between engines, one type each.

Each record is a ``msgspec.Struct``: the type declaration *is* the codec. ``encode`` turns a
record into the JSON-ready payload the bus carries; ``decode`` validates a payload (a dict from
the in-process bus, or JSON bytes) into the record and raises ``BadInput`` naming the field at
fault. Chosen over slots dataclasses with hand-written codecs by measurement
(``python -m loadtest.records_bench``): msgspec builds records ~2.5× faster, encodes them to JSON
~2× faster and decodes JSON bytes ~2× faster; decoding a dict is on par; turning a record into a
payload dict (``encode``) is slower than a hand-written dict, so hot market-data paths that never
hold a record (the replay publishing from columns) keep building payload dicts directly.

Wire names. Market data (trade, quote, book, bar) keeps the documented short keys, sent once per
message to every subscriber (``s`` symbol, ``t`` event time ns, ``r`` receive time ns, ``p``/``q``
price/size, ``a`` aggressor, ``i`` id, ``x`` exchange, ``c`` condition flags, ``b``/``bq``/``k``/
``kq`` bid/size/ask/size, ``U``/``u`` update ids, ``spec``, ``te`` bar end, ``o h l c v dv n``).
Trading records (signal, intent, order, fill, position) use full words: they are few per second
and read by people. Quantities and prices of the trading records are ``Decimal`` (sent as
strings): the ledger is exact; floats are for analytics only (docs/architecture.md, "The
trading pipeline").

Lineage. Every trading record carries the event time of the market data that caused it and the
ids of what it came from (signal → intent → order → fill), so a number on a screen can be traced
back to the trades behind it. Ids are deterministic from their inputs (``client_order_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import msgspec

__all__ = [
    "AccountPositions",
    "AccountState",
    "BadInput",
    "Bar",
    "BookDelta",
    "BookTop",
    "Fill",
    "Instrument",
    "Intent",
    "Liquidity",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "Position",
    "Quote",
    "Record",
    "Side",
    "Signal",
    "StrategyPnl",
    "TimeInForce",
    "Trade",
    "decode",
    "encode",
    "encode_many",
    "error_path",
]


class BadInput(ValueError):
    """A payload that is not the record it claims to be. ``reason`` is a stable code counted per
    stream (``malformed``, ``wrong_type``, ``missing_field``, ``invalid_value``); ``field`` is the
    JSON path at fault (``$.q``) when known."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


class Record(msgspec.Struct, frozen=True, gc=False):
    """Base of every record. ``KIND`` names the record in stores and error messages."""

    KIND: ClassVar[str] = "record"
    #: Fields holding ``[price, size]`` levels: sent as JSON arrays (lists) on every bus alike.
    LEVEL_FIELDS: ClassVar[tuple[str, ...]] = ()


class Side(StrEnum):
    """Aggressor (taker) side of a trade."""

    BUY = "buy"
    SELL = "sell"


Level = tuple[float, float]


class Instrument(Record, frozen=True, gc=False):
    """What is traded and on which grids: prices in ``10**-price_precision`` steps, sizes in
    ``10**-size_precision`` lots, ``multiplier`` units of underlying per unit."""

    KIND: ClassVar[str] = "instrument"
    symbol: str = msgspec.field(name="s")
    price_precision: int
    size_precision: int = 0
    venue: str = ""
    asset_class: str = ""
    currency: str = "USD"
    multiplier: int = 1
    #: the order price grid, when coarser than the data's (US equities: 0.01 on a 4-dp tape)
    tick_size: Decimal | None = None
    #: the order size grid, when coarser than ``10**-size_precision``
    lot_size: Decimal | None = None
    #: the smallest order value (price × quantity × multiplier) a venue accepts
    min_notional: Decimal = Decimal(0)

    @property
    def tick(self) -> Decimal:
        """The order price increment."""
        return (
            self.tick_size
            if self.tick_size is not None
            else Decimal(1).scaleb(-self.price_precision)
        )

    @property
    def lot(self) -> Decimal:
        """The order quantity increment."""
        return (
            self.lot_size if self.lot_size is not None else Decimal(1).scaleb(-self.size_precision)
        )

    def market_price(self, value: float) -> Decimal:
        """A market-data price (a float) as the exact decimal on the data's grid
        (``price_precision``): how the simulated venue and the strategies read a print."""
        return Decimal(repr(value)).quantize(Decimal(1).scaleb(-self.price_precision))


class Trade(Record, frozen=True, gc=False):
    """One trade print. ``aggressor`` is ``None`` when the feed does not say (Lean)."""

    KIND: ClassVar[str] = "trade"
    symbol: str = msgspec.field(name="s")
    event_ns: int = msgspec.field(name="t")
    receive_ns: int = msgspec.field(name="r")
    price: float = msgspec.field(name="p")
    size: float = msgspec.field(name="q")
    aggressor: Side | None = msgspec.field(name="a", default=None)
    sequence: int | None = msgspec.field(name="i", default=None)
    exchange: str = msgspec.field(name="x", default="")
    condition: int = msgspec.field(name="c", default=0)

    @property
    def aggressor_sign(self) -> int:
        """+1 buyer-initiated, −1 seller-initiated, 0 not reported."""
        return 1 if self.aggressor is Side.BUY else -1 if self.aggressor is Side.SELL else 0

    def to_payload(self, price_precision: int | None = None) -> dict[str, Any]:
        """The bus payload; ``price_precision`` rounds the price to the instrument's grid."""
        payload = encode(self)
        if price_precision is not None:
            payload["p"] = round(self.price, price_precision)
        return payload


class Quote(Record, frozen=True, gc=False):
    """Best bid and offer (L1)."""

    KIND: ClassVar[str] = "quote"
    symbol: str = msgspec.field(name="s")
    event_ns: int = msgspec.field(name="t")
    receive_ns: int = msgspec.field(name="r")
    bid: float = msgspec.field(name="b")
    bid_size: float = msgspec.field(name="bq")
    ask: float = msgspec.field(name="k")
    ask_size: float = msgspec.field(name="kq")
    sequence: int | None = msgspec.field(name="i", default=None)

    def to_payload(self) -> dict[str, Any]:
        return encode(self)


class BookDelta(Record, frozen=True, gc=False):
    """An L2 diff: absolute sizes at price levels (size 0 deletes the level). ``U``/``u`` are
    Binance's first/last update ids: the next diff must start at ``u + 1``."""

    KIND: ClassVar[str] = "book_delta"
    LEVEL_FIELDS: ClassVar[tuple[str, ...]] = ("bids", "asks")
    symbol: str = msgspec.field(name="s")
    event_ns: int = msgspec.field(name="t")
    receive_ns: int = msgspec.field(name="r")
    first_update_id: int = msgspec.field(name="U")
    last_update_id: int = msgspec.field(name="u")
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def to_payload(self) -> dict[str, Any]:
        return encode(self)


class BookTop(Record, frozen=True, gc=False):
    """Top levels of a rebuilt book (the ``book.SYM`` payload). Bids best first."""

    KIND: ClassVar[str] = "book"
    LEVEL_FIELDS: ClassVar[tuple[str, ...]] = ("bids", "asks")
    symbol: str = msgspec.field(name="s")
    event_ns: int = msgspec.field(name="t")
    last_update_id: int = msgspec.field(name="u")
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def to_payload(self) -> dict[str, Any]:
        return encode(self)


class Bar(Record, frozen=True, gc=False):
    """An OHLCV bar over ``[start_ns, end_ns)``, stamped by its start. ``dollar_volume`` is
    Σ price·size; ``trades`` counts the prints that contributed (a split trade counts in each
    bar it contributes to)."""

    KIND: ClassVar[str] = "bar"
    symbol: str = msgspec.field(name="s")
    spec: str
    start_ns: int = msgspec.field(name="t")
    end_ns: int = msgspec.field(name="te")
    open: float = msgspec.field(name="o")
    high: float = msgspec.field(name="h")
    low: float = msgspec.field(name="l")
    close: float = msgspec.field(name="c")
    volume: float = msgspec.field(name="v")
    dollar_volume: float = msgspec.field(name="dv")
    trades: int = msgspec.field(name="n")

    def to_payload(self) -> dict[str, Any]:
        return encode(self)


# ── the trading pipeline ─────────────────────────────────────────────────────────────────────


class Signal(Record, frozen=True, kw_only=True, gc=False):
    """A value a compute engine derived from market data (features, VPIN, ML, factor scores).

    ``source`` is the producing stream kind (``vpin``, ``features``), ``values`` the named
    numbers (``None`` while warming up), ``event_ns`` the time of the newest input behind them.
    """

    KIND: ClassVar[str] = "signal"
    source: str
    symbol: str
    event_ns: int
    values: dict[str, float | bool | None]


class Intent(Record, frozen=True, kw_only=True, gc=False):
    """A strategy's wish: hold ``target_quantity`` of ``symbol`` in ``account``."""

    KIND: ClassVar[str] = "intent"
    intent_id: str
    strategy: str
    account: str
    symbol: str
    event_ns: int
    target_quantity: Decimal
    reason: str = ""
    signal_ids: tuple[str, ...] = ()


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    DAY = "day"


class OrderStatus(StrEnum):
    """The order state machine's states (issue 11): initialized → submitted → accepted →
    partially_filled → filled, or canceled / rejected / expired / denied (by pre-trade risk)."""

    INITIALIZED = "initialized"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DENIED = "denied"


class Order(Record, frozen=True, kw_only=True, gc=False):
    """One order's state after a transition; published on every transition (lossless)."""

    KIND: ClassVar[str] = "order"
    client_order_id: str
    account: str
    strategy: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    status: OrderStatus
    event_ns: int
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    filled_quantity: Decimal = Decimal(0)
    average_price: Decimal | None = None
    intent_id: str | None = None
    parent_order_id: str | None = None
    reason: str = ""


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class Fill(Record, frozen=True, kw_only=True, gc=False):
    """One execution. ``fill_id`` is deterministic from the order and the fill's sequence."""

    KIND: ClassVar[str] = "fill"
    fill_id: str
    client_order_id: str
    account: str
    strategy: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    event_ns: int


class Position(Record, frozen=True, kw_only=True, gc=False):
    """An account's holding of one instrument after an event (netting: one per instrument).
    ``mark_price`` is ``None`` when the instrument cannot be priced yet (``unpriceable``)."""

    KIND: ClassVar[str] = "position"
    account: str
    symbol: str
    quantity: Decimal
    average_price: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal | None
    mark_price: Decimal | None
    currency: str
    event_ns: int


class AccountPositions(Record, frozen=True, kw_only=True, gc=False):
    """Every open position of an account after an event (``positions.<account>``, latest-value:
    one message is the whole book, so a conflated client still sees a consistent state)."""

    KIND: ClassVar[str] = "positions"
    account: str
    event_ns: int
    positions: tuple[Position, ...]


class StrategyPnl(Record, frozen=True, kw_only=True, gc=False):
    """One strategy's share of an account (``AccountState.strategies``), from the fills that
    carry its name, in the account currency. ``cash_flow`` is the net cash of its fills and
    fees, ``market_value`` its positions at the account's marks (at cost when unpriceable); its
    identity is ``realized_pnl + unrealized_pnl - fees == cash_flow + market_value``, and the
    strategies' ``cash_flow + market_value`` sum to the account's ``equity - starting_cash``."""

    KIND: ClassVar[str] = "strategy_pnl"
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    cash_flow: Decimal
    market_value: Decimal
    gross_exposure: Decimal
    net_exposure: Decimal
    unpriceable: tuple[str, ...] = ()


class AccountState(Record, frozen=True, kw_only=True, gc=False):
    """An account's money after an event (``pnl.<account>``, latest-value): the ledger's
    identity ``realized_pnl + unrealized_pnl - fees == equity - starting_cash`` holds in it.
    Amounts in the account currency; ``unpriceable`` names instruments without a mark (their
    unrealized PnL is left out and flagged, never guessed). ``leverage`` is gross exposure /
    equity (6 decimals, half-even), ``None`` when equity ≤ 0 (no meaningful ratio);
    ``strategies`` is the per-strategy attribution by strategy name (each identity holds)."""

    KIND: ClassVar[str] = "account"
    account: str
    currency: str
    starting_cash: Decimal
    cash: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    gross_exposure: Decimal
    net_exposure: Decimal
    event_ns: int
    unpriceable: tuple[str, ...] = ()
    leverage: Decimal | None = None
    strategies: dict[str, StrategyPnl] = {}


# ── the codec ────────────────────────────────────────────────────────────────────────────────

R = TypeVar("R", bound=Record)

_REASONS = (
    ("Object missing required field", "missing_field"),
    ("Expected", "wrong_type"),
)


def error_path(error: msgspec.ValidationError) -> str | None:
    """The JSON path msgspec names in ``error`` (``$.trades[3].q``), or ``None``."""
    message = str(error)
    return message.rpartition(" - at `")[2].rstrip("`") if " - at `" in message else None


def encode(record: Record) -> dict[str, Any]:
    """The record as its bus payload (a JSON-ready dict; ``Decimal`` as a string)."""
    payload: dict[str, Any] = msgspec.to_builtins(record)
    for name in record.LEVEL_FIELDS:
        payload[name] = [list(level) for level in payload[name]]
    return payload


def encode_many(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Each record as ``encode`` gives it, converted in one call (a REST page of records)."""
    payloads: list[dict[str, Any]] = msgspec.to_builtins(records)
    for record, payload in zip(records, payloads, strict=True):
        for name in record.LEVEL_FIELDS:
            payload[name] = [list(level) for level in payload[name]]
    return payloads


def decode(record_type: type[R], payload: Any) -> R:
    """Validate ``payload`` (a dict from the bus, or JSON ``bytes``/``str``) into
    ``record_type``; ``BadInput`` names what is wrong and where."""
    try:
        if isinstance(payload, bytes | bytearray | memoryview | str):
            return msgspec.json.decode(payload, type=record_type)
        return msgspec.convert(payload, record_type)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = error_path(exc)
        reason = next((code for prefix, code in _REASONS if message.startswith(prefix)), None)
        raise BadInput(
            reason or "invalid_value", f"not a {record_type.KIND}: {message}", field
        ) from None
    except msgspec.DecodeError as exc:
        raise BadInput("malformed", f"not JSON: {exc}") from None

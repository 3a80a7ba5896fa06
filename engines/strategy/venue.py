"""The simulated venue, pure, and the ``VenueAdapter`` interface every venue implements.

Execution hands a venue ``submitted`` orders and the market data of their symbols; the venue
answers with order transitions (``accepted``, ``partially_filled``, ``filled``, ``canceled``,
``expired``, ``rejected``) and ``Fill``s. A live adapter (a broker's API) would implement the
same four calls (and ``restore``, taking back the working orders of a previous run at restart);
only the simulated one exists.

The simulated venue fills against the stream, in one of two modes (``VenueConfig.fill_on``):

* ``quotes`` (L1): a buy takes the ask, a sell the bid, at most the displayed size; the size is
  used up by the orders it fills on that quote (FIFO by arrival), never counted twice.
* ``trades``: an order fills against the next trade prints, bounded by their sizes, shared by
  orders FIFO. A *resting* limit fills only on a print strictly **through** its price (a print at
  the price says nothing of the queue ahead), at its limit price as maker.

Rules common to both. An order is live ``latency_ns`` after its event time (event time: market
data older than that cannot fill it). At its first market event after going live (for a stop:
the event that triggers it) a market order, or a limit already marketable, takes liquidity at the
touch/print price (taker); later a resting limit fills at its own price (maker). Stops trigger
when the touch (quotes: the ask for a buy, the bid for a sell) or the print reaches the stop
price, then act as a market (``stop``) or limit (``stop_limit``) order on the same event. IOC: what
the first opportunity fills, the rest canceled (``ioc_remainder``); FOK: all of it on the first
opportunity or nothing (``fok_unfilled``); DAY: expired at the first event of a later day
(``(t + day_offset_ns) // 1 day``); GTC rests. Fees: ``bps`` of the notional (maker or taker)
plus ``per_share`` × quantity, rounded half-even to ``fee_decimals``, on the fill price.
Slippage (``slippage_bps``, 0 by default): a taker fill pays ``bps`` of the touch/print price
against its side (a buy ``price × (1 + bps/10⁴)``, a sell ``price × (1 − bps/10⁴)``, exact
decimals, off the tick grid), never past a limit order's own price; a maker fill is at its limit
and does not slip. It is the vectorized backtest's cost (``engines.backtesting.core``), so the two
modes agree on it. Fill ids: ``<order>-f<k>``.

Limits: no queue position, no market impact, no book depth beyond L1; fees in the instrument's
currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Protocol

from engines.strategy.core import (
    TERMINAL,
    apply_fill,
    fill_id,
    floor_to_lot,
    transition,
)
from protocol.records import (
    Fill,
    Instrument,
    Liquidity,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Quote,
    TimeInForce,
    Trade,
)

__all__ = [
    "DAY_NS",
    "FillOn",
    "SimulatedVenue",
    "VenueAdapter",
    "VenueConfig",
    "VenueEvent",
    "known",
]

DAY_NS = 86_400 * 1_000_000_000
_BPS = Decimal(10_000)
#: What a venue answers: order transitions and fills, in the order they happened.
VenueEvent = Order | Fill


class VenueAdapter(Protocol):
    """One venue: submit and cancel orders, see the market data their fills depend on."""

    def submit(self, order: Order) -> list[VenueEvent]:
        """Take a ``submitted`` order: ``accepted`` (working) or ``rejected`` with a code."""
        ...

    def cancel(self, client_order_id: str, event_ns: int) -> list[VenueEvent]:
        """Cancel a working order (nothing when it is not working)."""
        ...

    def restore(self, order: Order, fills: int) -> None:
        """Take back a working order of a previous run (newest state, fills so far)."""
        ...

    def on_trade(self, trade: Trade) -> list[VenueEvent]: ...

    def on_quote(self, quote: Quote) -> list[VenueEvent]: ...


class FillOn(StrEnum):
    TRADES = "trades"
    QUOTES = "quotes"


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueConfig:
    fill_on: FillOn = FillOn.TRADES
    latency_ns: int = 0
    taker_fee_bps: Decimal = Decimal(0)
    maker_fee_bps: Decimal = Decimal(0)
    fee_per_share: Decimal = Decimal(0)
    fee_decimals: int = 2
    day_offset_ns: int = 0
    slippage_bps: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.latency_ns < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency_ns}")
        if min(self.taker_fee_bps, self.maker_fee_bps, self.fee_per_share) < 0:
            raise ValueError("fees must be >= 0")
        if not 0 <= self.slippage_bps < 10_000:
            raise ValueError(f"slippage must be in [0, 10000) bps, got {self.slippage_bps}")
        if not 0 <= self.fee_decimals <= 12:
            raise ValueError("fee_decimals must be in [0, 12]")


@dataclass(slots=True)
class _Working:
    order: Order
    live_ns: int
    triggered: bool
    tried: bool = False
    fills: int = 0


@dataclass(slots=True)
class _Side:
    """The liquidity one side of one market event offers: price and size left."""

    price: Decimal
    size: Decimal
    through: bool  # a resting limit needs a print strictly through its price


@dataclass(slots=True)
class SimulatedVenue:
    """Fills orders against ``quotes.*`` (L1) or ``trades.*``; see the module doc."""

    config: VenueConfig
    instruments: Mapping[str, Instrument]
    working: dict[str, list[_Working]] = field(default_factory=dict)

    # ── VenueAdapter ─────────────────────────────────────────────────────────────────────────

    def submit(self, order: Order) -> list[VenueEvent]:
        reason = self._refusal(order)
        live_ns = order.event_ns + self.config.latency_ns
        if reason:
            return [transition(order, OrderStatus.REJECTED, event_ns=live_ns, reason=reason)]
        accepted = transition(order, OrderStatus.ACCEPTED, event_ns=live_ns)
        stop = order.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        self.working.setdefault(order.symbol, []).append(
            _Working(accepted, live_ns, triggered=not stop)
        )
        return [accepted]

    def restore(self, order: Order, fills: int) -> None:
        """Take back a working (``accepted``/``partially_filled``) order of a previous run, its
        newest state and the number of fills it had (fill ids go on from there). It is live
        from its newest event time and has had its first chance (later fills are maker for a
        resting limit); a stop counts as triggered once it has filled (limit: a stop-limit that
        triggered but never filled before the restart waits for its trigger again)."""
        stop = order.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        triggered = not stop or order.filled_quantity > 0
        self.working.setdefault(order.symbol, []).append(
            _Working(order, order.event_ns, triggered=triggered, tried=True, fills=fills)
        )

    def cancel(self, client_order_id: str, event_ns: int) -> list[VenueEvent]:
        for symbol, orders in self.working.items():
            for w in orders:
                if w.order.client_order_id == client_order_id:
                    orders.remove(w)
                    if not orders:
                        del self.working[symbol]
                    done = transition(w.order, OrderStatus.CANCELED, event_ns=event_ns)
                    return [done]
        return []

    def on_trade(self, trade: Trade) -> list[VenueEvent]:
        if self.config.fill_on is not FillOn.TRADES or trade.symbol not in self.working:
            return []
        instrument = self.instruments[trade.symbol]
        price = instrument.market_price(trade.price)
        size = _size(trade.size)
        both = _Side(price, size, through=True)
        return self._match(
            trade.symbol, trade.event_ns, {OrderSide.BUY: both, OrderSide.SELL: both}
        )

    def on_quote(self, quote: Quote) -> list[VenueEvent]:
        if self.config.fill_on is not FillOn.QUOTES or quote.symbol not in self.working:
            return []
        instrument = self.instruments[quote.symbol]
        sides = {
            OrderSide.BUY: _Side(instrument.market_price(quote.ask), _size(quote.ask_size), False),
            OrderSide.SELL: _Side(instrument.market_price(quote.bid), _size(quote.bid_size), False),
        }  # fmt: skip
        return self._match(quote.symbol, quote.event_ns, sides)

    # ── matching ─────────────────────────────────────────────────────────────────────────────

    def _refusal(self, order: Order) -> str:
        """Why the venue refuses ``order`` outright ("" when it takes it)."""
        if not known(self.instruments, order.symbol):
            return "unknown_instrument"
        instrument = self.instruments[order.symbol]
        if order.quantity <= 0 or order.quantity % instrument.lot:
            return "off_lot"
        needs_price = order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = order.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if (needs_price and order.price is None) or (needs_stop and order.stop_price is None):
            return "missing_price"
        for price in (order.price, order.stop_price):
            if price is not None and (price <= 0 or price % instrument.tick):
                return "off_tick"
        return ""

    def _match(self, symbol: str, t: int, sides: dict[OrderSide, _Side]) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        orders = self.working[symbol]
        for w in list(orders):
            if t < w.live_ns:
                continue
            order = w.order
            if order.time_in_force is TimeInForce.DAY and self._day(t) != self._day(w.live_ns):
                events.append(self._end(orders, w, OrderStatus.EXPIRED, t, "day_end"))
                continue
            side = sides[order.side]
            buy = order.side is OrderSide.BUY
            if not w.triggered:
                stop = order.stop_price
                assert stop is not None
                if not (side.price >= stop if buy else side.price <= stop):
                    continue
                w.triggered = True
            first, w.tried = not w.tried, True
            fill_price, liquidity = self._price_for(order, side, first, buy)
            remaining = order.quantity - order.filled_quantity
            quantity = (
                min(remaining, floor_to_lot(side.size, self.instruments[symbol].lot))
                if fill_price is not None
                else Decimal(0)
            )
            tif = order.time_in_force
            if tif is TimeInForce.FOK and quantity < remaining:
                events.append(self._end(orders, w, OrderStatus.CANCELED, t, "fok_unfilled"))
                continue
            if quantity > 0 and fill_price is not None:
                side.size -= quantity
                events += self._fill(w, quantity, fill_price, liquidity, t)
            if w.order.status in TERMINAL:
                orders.remove(w)
            elif tif is TimeInForce.IOC:
                events.append(self._end(orders, w, OrderStatus.CANCELED, t, "ioc_remainder"))
        if not orders:
            del self.working[symbol]
        return events

    def _price_for(
        self, order: Order, side: _Side, first: bool, buy: bool
    ) -> tuple[Decimal | None, Liquidity]:
        """The price ``order`` fills at on this event (``None``: it does not fill)."""
        limit = order.price if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
        if limit is None:
            return self._slipped(side.price, buy), Liquidity.TAKER
        if first and (side.price <= limit if buy else side.price >= limit):
            slipped = self._slipped(side.price, buy)
            return (min(slipped, limit) if buy else max(slipped, limit)), Liquidity.TAKER
        if side.through:
            reached = side.price < limit if buy else side.price > limit
        else:
            reached = side.price <= limit if buy else side.price >= limit
        return (limit if reached else None), Liquidity.MAKER

    def _slipped(self, price: Decimal, buy: bool) -> Decimal:
        """A taker's price after slippage: ``bps`` of it against the order's side."""
        bps = self.config.slippage_bps
        if not bps:
            return price
        move = price * bps / _BPS
        return price + move if buy else price - move

    def _fill(
        self, w: _Working, quantity: Decimal, price: Decimal, liquidity: Liquidity, t: int
    ) -> list[VenueEvent]:
        order = w.order
        instrument = self.instruments[order.symbol]
        w.fills += 1
        w.order = apply_fill(order, quantity, price, event_ns=t)
        fill = Fill(
            fill_id=fill_id(order.client_order_id, w.fills),
            client_order_id=order.client_order_id,
            account=order.account,
            strategy=order.strategy,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            fee=self.fee(quantity, price, instrument, liquidity),
            fee_currency=instrument.currency,
            liquidity=liquidity,
            event_ns=t,
        )
        return [w.order, fill]

    def fee(
        self, quantity: Decimal, price: Decimal, instrument: Instrument, liquidity: Liquidity
    ) -> Decimal:
        """bps of the notional (maker or taker) + per share, rounded half-even."""
        c = self.config
        bps = c.maker_fee_bps if liquidity is Liquidity.MAKER else c.taker_fee_bps
        notional = quantity * price * instrument.multiplier
        raw = notional * bps / _BPS + c.fee_per_share * quantity
        return raw.quantize(Decimal(1).scaleb(-c.fee_decimals), rounding=ROUND_HALF_EVEN)

    @staticmethod
    def _end(
        orders: list[_Working], w: _Working, status: OrderStatus, t: int, reason: str
    ) -> Order:
        orders.remove(w)
        return transition(w.order, status, event_ns=t, reason=reason)

    def _day(self, t: int) -> int:
        return (t + self.config.day_offset_ns) // DAY_NS


def known(instruments: Mapping[str, Instrument], symbol: str) -> bool:
    """``symbol`` is in the table (an ``InstrumentTable`` raises ``UnknownInstrument``, a
    ``LookupError`` that ``in`` and ``get`` do not catch)."""
    try:
        instruments[symbol]
    except LookupError:
        return False
    return True


def _size(value: float) -> Decimal:
    """A displayed or printed size as an exact decimal (floored to the lot where it is used)."""
    return Decimal(repr(value)) if value > 0 else Decimal(0)

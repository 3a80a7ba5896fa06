"""Pre-trade risk checks, pure: one order against an account's limits and book → approve or deny.

``check(order, book)`` answers ``Approved`` (the quantity to submit, possibly scaled down by the
VPIN throttle) or ``Denied(code, detail)`` with a stable ``DenialCode``. It reads the book and
changes nothing; the caller commits an approval with ``AccountBook.record_submitted`` (which
takes the rate-limit slot and counts the order as pending). No clock is read: the rate limit
runs on the order's event time, so a replay denies exactly what the live run denied.

Checks, in this order (the first that fails names the denial):

1. the order itself: ``invalid_quantity`` (not finite or ≤ 0), ``unknown_instrument``,
   ``invalid_price`` (a limit/stop order without a finite positive limit/stop price),
   ``off_lot`` (quantity not a whole number of lots), ``off_tick`` (limit or stop price off the
   instrument's tick);
2. the account's trading state: ``halted`` denies every order; ``reducing_only`` denies every
   order that is not exposure-reducing (below);
3. ``rate_limit``: at most ``max_orders_per_second`` orders per second with bursts of
   ``order_burst``, a token bucket on event time, written as its exact integer equivalent, the
   generic cell rate algorithm (ITU-T I.371 "virtual scheduling"): emission interval
   T = 1 s / rate, tolerance τ = (burst − 1)·T, an order at t is allowed iff TAT − t ≤ τ, and
   an approval moves TAT to max(TAT, t) + T. Only approved orders take a slot;
4. price: ``no_reference_price`` (no last trade for the symbol, needed by a market order's
   notional and by the collar), ``price_collar`` (limit price more than ``price_collar_bps``
   away from the last trade; stop prices are not collared: a protective stop is far from the
   market on purpose), ``below_min_notional`` (the instrument's venue minimum);
5. ``vpin_alert``: while the VPIN CDF alert of the symbol is on, an order that adds exposure is
   denied (``VpinThrottle.REDUCE_ONLY``, the default) or its quantity scaled by ``vpin_scale``
   and rounded down to the lot (``SCALE``; denied when that leaves nothing). Easley, López de
   Prado & O'Hara (2011, "The Microstructure of the Flash Crash") argue liquidity providers
   withdraw when order flow turns toxic; the throttle cuts what we add to it;
6. sizes: ``max_quantity`` and ``max_notional`` per order, ``max_position`` per instrument,
   ``max_gross_exposure`` and ``max_net_exposure`` per account.

Exposure-reducing orders skip 5 and the position and exposure limits of 6 (a limit must never
trap a position it is meant to shrink); the grid, state, rate, price and per-order size checks
still apply. An order is reducing when it moves the position toward zero without crossing it,
counting the pending orders on its side: a buy with ``position + pending buys + q ≤ 0`` on a
short, a sell with ``position − pending sells − q ≥ 0`` on a long.

An execution algorithm's child (``parent_order_id`` set: a slice of an approved TWAP/POV parent)
gets the checks that apply to one order reaching the venue — 1, 2, 3, 4 and the per-order
``max_quantity``/``max_notional`` of 6 — and skips 5 and the position and exposure limits: the
parent's approval covered those, and its unfilled remainder is already pending (so the child is
*not* added to the pending orders again, and its own transitions on ``orders.<account>`` are
ignored; ``reducing`` for a child is read from the position and the pending orders as they are,
the child inside its parent). An approved child takes a rate-limit slot
(``AccountBook.record_child``).

Pending orders (submitted, not yet filled, canceled, rejected or expired) count toward the
position and exposure limits, each side at its worst: with ``hi = position + pending buys`` and
``lo = position − pending sells`` per instrument (the order added to its side), the position is
``max(|hi|, |lo|)``, gross exposure ``Σ max(|hi|, |lo|)·p·m`` and net exposure
``max(|Σ hi·p·m|, |Σ lo·p·m|)`` (p the last trade, else the position's mark, else the price the
pending order was approved at; m the multiplier). Limits: ``None`` is no limit. Positions come
from Portfolio and lag fills by one message: an order update that arrives before the position
it caused undercounts for that moment, the reverse overcounts (the safe side).

Amounts are ``Decimal`` (the records' type): the limit boundaries are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from protocol.records import Instrument, Order, OrderSide, OrderStatus, OrderType

__all__ = [
    "AccountBook",
    "Approved",
    "Decision",
    "DenialCode",
    "Denied",
    "InstrumentLimits",
    "MarketState",
    "PendingOrder",
    "PreTradeLimits",
    "RateLimiter",
    "TradingState",
    "VpinThrottle",
    "check",
]

NS_PER_S: Final = 1_000_000_000
_ZERO: Final = Decimal(0)
_BPS: Final = Decimal(10_000)


class DenialCode(StrEnum):
    """Stable reason codes of a denial (``Order.reason`` on ``orders.<account>`` and
    ``risk.denials.<account>``, the ``reason`` label of the denial counter)."""

    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"
    UNKNOWN_ACCOUNT = "unknown_account"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    OFF_LOT = "off_lot"
    OFF_TICK = "off_tick"
    HALTED = "halted"
    REDUCING_ONLY = "reducing_only"
    RATE_LIMIT = "rate_limit"
    NO_REFERENCE_PRICE = "no_reference_price"
    PRICE_COLLAR = "price_collar"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    VPIN_ALERT = "vpin_alert"
    MAX_QUANTITY = "max_quantity"
    MAX_NOTIONAL = "max_notional"
    MAX_POSITION = "max_position"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_NET_EXPOSURE = "max_net_exposure"
    #: an intent found unanswered at Risk's start older than ``max_intent_age_s`` (the
    #: service's, never ``check``'s: ``engines.risk.service``, "Restart")
    STALE_INTENT = "stale_intent"


class TradingState(StrEnum):
    """An account's trading state (switchable over REST)."""

    ACTIVE = "active"
    REDUCING_ONLY = "reducing_only"
    HALTED = "halted"


class VpinThrottle(StrEnum):
    """What the VPIN alert does to an exposure-adding order: nothing, deny it, or scale it."""

    OFF = "off"
    REDUCE_ONLY = "reduce_only"
    SCALE = "scale"


def _positive(name: str, value: Decimal | None) -> None:
    if value is not None and not (value.is_finite() and value > 0):
        raise ValueError(f"{name} must be a finite amount > 0 (or None: no limit), got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentLimits:
    """Per-instrument limits (quantities in units, notional in the instrument's currency)."""

    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_position: Decimal | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            _positive(f.name, getattr(self, f.name))

    def over(self, base: InstrumentLimits) -> InstrumentLimits:
        """These limits, each unset one taken from ``base``."""
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        return InstrumentLimits(
            **{name: getattr(base, name) if own is None else own for name, own in merged.items()}
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreTradeLimits:
    """One account's pre-trade limits. ``instruments`` override ``default`` field by field."""

    default: InstrumentLimits = InstrumentLimits()
    instruments: Mapping[str, InstrumentLimits] = field(default_factory=dict)
    max_gross_exposure: Decimal | None = None
    max_net_exposure: Decimal | None = None
    price_collar_bps: Decimal | None = None
    max_orders_per_second: int | None = None
    order_burst: int = 1
    vpin_throttle: VpinThrottle = VpinThrottle.REDUCE_ONLY
    vpin_scale: Decimal = Decimal("0.5")
    _merged: Mapping[str, InstrumentLimits] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        _positive("max_gross_exposure", self.max_gross_exposure)
        _positive("max_net_exposure", self.max_net_exposure)
        _positive("price_collar_bps", self.price_collar_bps)
        if self.max_orders_per_second is not None and not (
            0 < self.max_orders_per_second <= NS_PER_S
        ):
            raise ValueError(
                f"max_orders_per_second must be in 1..1e9, got {self.max_orders_per_second}"
            )
        if self.order_burst < 1:
            raise ValueError(f"order_burst must be >= 1, got {self.order_burst}")
        if not (self.vpin_scale.is_finite() and 0 < self.vpin_scale < 1):
            raise ValueError(f"vpin_scale must be in (0, 1), got {self.vpin_scale}")
        merged = {s: own.over(self.default) for s, own in self.instruments.items()}
        object.__setattr__(self, "instruments", MappingProxyType(dict(self.instruments)))
        object.__setattr__(self, "_merged", MappingProxyType(merged))

    def for_instrument(self, symbol: str) -> InstrumentLimits:
        """The limits in force for ``symbol``."""
        return self._merged.get(symbol, self.default)

    def to_payload(self) -> dict[str, object]:
        """JSON-ready (amounts as strings, ``None`` = no limit)."""

        def text(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        def one(limits: InstrumentLimits) -> dict[str, str | None]:
            return {f.name: text(getattr(limits, f.name)) for f in fields(limits)}

        return {
            "default": one(self.default),
            "instruments": {s: one(self.for_instrument(s)) for s in self.instruments},
            "max_gross_exposure": text(self.max_gross_exposure),
            "max_net_exposure": text(self.max_net_exposure),
            "price_collar_bps": text(self.price_collar_bps),
            "max_orders_per_second": self.max_orders_per_second,
            "order_burst": self.order_burst,
            "vpin_throttle": self.vpin_throttle.value,
            "vpin_scale": str(self.vpin_scale),
        }


class RateLimiter:
    """Token bucket on event time as the generic cell rate algorithm (integer ns, exact)."""

    __slots__ = ("interval_ns", "tat_ns", "tolerance_ns")

    def __init__(self, per_second: int | None, burst: int) -> None:
        self.interval_ns = 0 if per_second is None else NS_PER_S // per_second
        self.tolerance_ns = (burst - 1) * self.interval_ns
        #: theoretical arrival time of the next conforming order
        self.tat_ns: int | None = None

    def allows(self, now_ns: int) -> bool:
        tat = self.tat_ns
        return self.interval_ns == 0 or tat is None or tat - now_ns <= self.tolerance_ns

    def take(self, now_ns: int) -> None:
        if self.interval_ns:
            tat = self.tat_ns
            self.tat_ns = (now_ns if tat is None or tat < now_ns else tat) + self.interval_ns


@dataclass(slots=True)
class MarketState:
    """What every account's checks share: last trade prices and the symbols in VPIN alert."""

    last_price: dict[str, Decimal] = field(default_factory=dict)
    vpin_alert: set[str] = field(default_factory=set)


@dataclass(slots=True)
class PendingOrder:
    """The unfilled rest of a submitted order and the price it was approved at."""

    symbol: str
    side: OrderSide
    remaining: Decimal
    price: Decimal


#: Statuses after which an order no longer counts as pending.
TERMINAL: Final = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.DENIED,
    }
)


class AccountBook:
    """One account's state as the checks see it: limits, trading state, positions, pending
    orders and their per-symbol sums, marks, the rate limiter. Mutated only by its methods."""

    def __init__(
        self,
        account: str,
        limits: PreTradeLimits,
        instruments: Mapping[str, Instrument],
        market: MarketState,
        *,
        state: TradingState = TradingState.ACTIVE,
    ) -> None:
        self.account = account
        self.limits = limits
        self.instruments = dict(instruments)  # a plain dict: ``.get`` is the hot path
        self.market = market
        self.state = state
        self.positions: dict[str, Decimal] = {}
        self.marks: dict[str, Decimal] = {}
        self.pending: dict[str, PendingOrder] = {}
        self.pending_buy: dict[str, Decimal] = {}
        self.pending_sell: dict[str, Decimal] = {}
        self.approved_price: dict[str, Decimal] = {}
        #: per symbol held or pending: (hi, lo, max(|hi|, |lo|), multiplier), kept current so a
        #: check's exposure sum is three products per symbol
        self.rows: dict[str, tuple[Decimal, Decimal, Decimal, int]] = {}
        self.rate = RateLimiter(limits.max_orders_per_second, limits.order_burst)

    # ── what the checks read ────────────────────────────────────────────────────────────────

    def price(self, symbol: str) -> Decimal | None:
        """Exposure price: the last trade, else the position's mark, else the approval price."""
        price = self.market.last_price.get(symbol)
        if price is None:
            price = self.marks.get(symbol)
            if price is None:
                price = self.approved_price.get(symbol)
        return price

    def _refresh(self, symbol: str) -> None:
        """Recompute ``rows[symbol]`` after its position or pending orders changed."""
        at = self.positions.get(symbol, _ZERO)
        hi = at + self.pending_buy.get(symbol, _ZERO)
        lo = at - self.pending_sell.get(symbol, _ZERO)
        if hi == 0 and lo == 0:
            self.rows.pop(symbol, None)
            return
        instrument = self.instruments.get(symbol)
        multiplier = instrument.multiplier if instrument is not None else 1
        self.rows[symbol] = (hi, lo, max(abs(hi), abs(lo)), multiplier)

    # ── what changes it ─────────────────────────────────────────────────────────────────────

    def set_positions(
        self, quantities: Mapping[str, Decimal], marks: Mapping[str, Decimal]
    ) -> bool:
        """Replace the positions (Portfolio's whole book); ``True`` when a quantity changed."""
        held = {s: q for s, q in quantities.items() if q != 0}
        changed = held != self.positions
        touched = {*held, *self.positions}
        self.positions = held
        for symbol in touched:
            self._refresh(symbol)
        self.marks = dict(marks)
        return changed

    def record_submitted(
        self, client_order_id: str, symbol: str, side: OrderSide, quantity: Decimal,
        price: Decimal, event_ns: int,
    ) -> None:  # fmt: skip
        """Commit an approval: take the rate slot, count the order as pending."""
        self.rate.take(event_ns)
        self.approved_price[symbol] = price
        self._add_pending(client_order_id, PendingOrder(symbol, side, quantity, price))

    def record_child(self, symbol: str, price: Decimal, event_ns: int) -> None:
        """Commit an algorithm child's approval: the rate slot only (its parent is pending)."""
        self.rate.take(event_ns)
        self.approved_price[symbol] = price

    def restore_approval(self, order: Order) -> None:
        """Replay one stored approval (``submitted``, as published) at a restart, in approval
        order: the rate slot it took and, for a strategy's order, its whole quantity as pending
        (the order transitions replayed after it release what was filled or ended). Its approval
        price is its limit or stop price, else the exposure price known now (a market order's
        checked price is not on the order)."""
        self.rate.take(order.event_ns)
        price = order.price or order.stop_price or self.price(order.symbol)
        if price is not None:
            self.approved_price[order.symbol] = price
        if order.parent_order_id is None:
            pending = PendingOrder(order.symbol, order.side, order.quantity, price or _ZERO)
            self._add_pending(order.client_order_id, pending)

    def on_order(self, order: Order) -> None:
        """An order transition from ``orders.<account>``: pending = quantity − filled while the
        order is live, nothing once it is terminal. Idempotent (echoes of our own are fine).
        An algorithm's children are skipped: their parent's remainder counts for them."""
        if order.parent_order_id is not None:
            return
        if order.status in TERMINAL:
            self._drop_pending(order.client_order_id)
            return
        if order.status is OrderStatus.INITIALIZED:
            return
        remaining = order.quantity - order.filled_quantity
        known = self.pending.get(order.client_order_id)
        if known is not None:
            if remaining != known.remaining:
                self._drop_pending(order.client_order_id)
                self._add_pending(order.client_order_id, replace(known, remaining=remaining))
            return
        if remaining > 0:  # submitted by another process (or before a restart)
            price = order.price or order.stop_price or self.price(order.symbol) or _ZERO
            self._add_pending(
                order.client_order_id, PendingOrder(order.symbol, order.side, remaining, price)
            )

    def _add_pending(self, client_order_id: str, pending: PendingOrder) -> None:
        if pending.remaining <= 0:
            return
        self.pending[client_order_id] = pending
        sums = self.pending_buy if pending.side is OrderSide.BUY else self.pending_sell
        sums[pending.symbol] = sums.get(pending.symbol, _ZERO) + pending.remaining
        self._refresh(pending.symbol)

    def _drop_pending(self, client_order_id: str) -> None:
        pending = self.pending.pop(client_order_id, None)
        if pending is None:
            return
        sums = self.pending_buy if pending.side is OrderSide.BUY else self.pending_sell
        left = sums[pending.symbol] - pending.remaining
        if left > 0:
            sums[pending.symbol] = left
        else:
            del sums[pending.symbol]
        self._refresh(pending.symbol)


@dataclass(frozen=True, slots=True)
class Approved:
    """Go: submit ``quantity`` (the order's, or less when ``scaled_by`` names the throttle);
    ``price`` is the price its notional was checked at."""

    quantity: Decimal
    price: Decimal
    scaled_by: str = ""


@dataclass(frozen=True, slots=True)
class Denied:
    code: DenialCode
    detail: str


Decision = Approved | Denied

_LIMIT_TYPES: Final = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_STOP_TYPES: Final = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})


def _bad_price(value: Decimal | None) -> bool:
    return value is None or not value.is_finite() or value <= 0


def check(order: Order, book: AccountBook) -> Decision:
    """Run every pre-trade check on ``order`` (see the module docstring); reads only."""
    quantity = order.quantity
    if not quantity.is_finite() or quantity <= 0:
        return Denied(DenialCode.INVALID_QUANTITY, f"quantity must be > 0, got {quantity}")
    symbol = order.symbol
    instrument = book.instruments.get(symbol)
    if instrument is None:
        return Denied(DenialCode.UNKNOWN_INSTRUMENT, f"no instrument {symbol!r} in the table")
    kind = order.type
    limit_price = order.price if kind in _LIMIT_TYPES else None
    stop_price = order.stop_price if kind in _STOP_TYPES else None
    if kind in _LIMIT_TYPES and _bad_price(limit_price):
        return Denied(DenialCode.INVALID_PRICE, f"a {kind} order needs a limit price > 0")
    if kind in _STOP_TYPES and _bad_price(stop_price):
        return Denied(DenialCode.INVALID_PRICE, f"a {kind} order needs a stop price > 0")
    lot = instrument.lot
    if quantity % lot:
        return Denied(DenialCode.OFF_LOT, f"quantity {quantity} is not a multiple of lot {lot}")
    tick = instrument.tick
    for name, value in (("limit", limit_price), ("stop", stop_price)):
        if value is not None and value % tick:
            return Denied(DenialCode.OFF_TICK, f"{name} price {value} is off tick {tick}")

    buy = order.side is OrderSide.BUY
    child = order.parent_order_id is not None
    own_quantity = _ZERO if child else quantity  # a child is pending inside its parent
    position = book.positions.get(symbol, _ZERO)
    if buy:
        projected = position + book.pending_buy.get(symbol, _ZERO) + own_quantity
        reducing = position < 0 and projected <= 0
    else:
        projected = position - book.pending_sell.get(symbol, _ZERO) - own_quantity
        reducing = position > 0 and projected >= 0

    state = book.state
    if state is not TradingState.ACTIVE:
        if state is TradingState.HALTED:
            return Denied(DenialCode.HALTED, f"account {book.account} is halted")
        if not reducing:
            return Denied(
                DenialCode.REDUCING_ONLY,
                f"account {book.account} is reducing-only; position {position} {symbol}",
            )
    if not book.rate.allows(order.event_ns):
        limits = book.limits
        return Denied(
            DenialCode.RATE_LIMIT,
            f"more than {limits.max_orders_per_second} orders/s (burst {limits.order_burst})",
        )

    limits = book.limits
    last = book.market.last_price.get(symbol)
    collar = limits.price_collar_bps
    if limit_price is not None:
        price = limit_price
        if collar is not None:
            if last is None:
                return Denied(DenialCode.NO_REFERENCE_PRICE, f"no trade of {symbol} yet")
            away = abs(limit_price - last) * _BPS / last
            if away > collar:
                return Denied(
                    DenialCode.PRICE_COLLAR,
                    f"limit {limit_price} is {away:.1f} bps from the last trade {last} "
                    f"(collar {collar} bps)",
                )
    elif stop_price is not None:
        price = stop_price
    elif last is None:
        return Denied(DenialCode.NO_REFERENCE_PRICE, f"no trade of {symbol} yet to price it")
    else:
        price = last
    unit_value = price * instrument.multiplier
    if instrument.min_notional and quantity * unit_value < instrument.min_notional:
        return Denied(
            DenialCode.BELOW_MIN_NOTIONAL,
            f"notional {quantity * unit_value} below the minimum {instrument.min_notional}",
        )

    scaled_by = ""
    if not reducing and not child and symbol in book.market.vpin_alert:
        throttle = limits.vpin_throttle
        if throttle is VpinThrottle.REDUCE_ONLY:
            return Denied(DenialCode.VPIN_ALERT, f"VPIN alert on {symbol}: reducing orders only")
        if throttle is VpinThrottle.SCALE:
            scaled = (quantity * limits.vpin_scale / lot).to_integral_value(ROUND_FLOOR) * lot
            if scaled <= 0:
                return Denied(
                    DenialCode.VPIN_ALERT, f"VPIN alert on {symbol}: {quantity} scales to 0"
                )
            projected += scaled - quantity if buy else quantity - scaled
            quantity, scaled_by = scaled, DenialCode.VPIN_ALERT.value

    own = limits.for_instrument(symbol)
    if own.max_order_quantity is not None and quantity > own.max_order_quantity:
        return Denied(
            DenialCode.MAX_QUANTITY, f"quantity {quantity} > max {own.max_order_quantity}"
        )
    notional = quantity * unit_value
    if own.max_order_notional is not None and notional > own.max_order_notional:
        return Denied(
            DenialCode.MAX_NOTIONAL, f"notional {notional} > max {own.max_order_notional}"
        )
    if reducing or child:
        return Approved(quantity, price, scaled_by)

    if own.max_position is not None and abs(projected) > own.max_position:
        return Denied(
            DenialCode.MAX_POSITION,
            f"{symbol} position could reach {projected} (max {own.max_position})",
        )
    gross_limit, net_limit = limits.max_gross_exposure, limits.max_net_exposure
    if gross_limit is None and net_limit is None:
        return Approved(quantity, price, scaled_by)
    if buy:  # the other side's worst case, with the order on its own side
        hi, lo = projected, position - book.pending_sell.get(symbol, _ZERO)
    else:
        hi, lo = position + book.pending_buy.get(symbol, _ZERO), projected
    gross = max(abs(hi), abs(lo)) * unit_value
    net_hi = hi * unit_value
    net_lo = lo * unit_value
    last_price, marks, approved = book.market.last_price, book.marks, book.approved_price
    for held, (held_hi, held_lo, extent, multiplier) in book.rows.items():
        if held == symbol:
            continue
        value = last_price.get(held) or marks.get(held) or approved.get(held)
        if value is None:
            continue
        if multiplier != 1:
            value *= multiplier
        gross += extent * value
        net_hi += held_hi * value
        net_lo += held_lo * value
    if gross_limit is not None and gross > gross_limit:
        return Denied(
            DenialCode.MAX_GROSS_EXPOSURE, f"gross exposure could reach {gross} (max {gross_limit})"
        )
    net = max(abs(net_hi), abs(net_lo))
    if net_limit is not None and net > net_limit:
        return Denied(
            DenialCode.MAX_NET_EXPOSURE, f"net exposure could reach {net} (max {net_limit})"
        )
    return Approved(quantity, price, scaled_by)

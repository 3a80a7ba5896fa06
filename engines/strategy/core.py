"""Strategy core, pure: the strategy API, its context, target → order delta, the order state
machine, deterministic ids and the incremental indicators the shipped strategies read.

Nothing here reads a clock or does I/O: the engine (``service.py``) passes every time in, so the
same objects run live on the bus and under ``engines.shell.driver.DeterministicDriver``
(docs/architecture.md, "Live and backtest are one code path").

* **State machine** (issue 11): ``initialized → submitted → accepted → partially_filled →
  filled``, or ``denied`` (pre-trade risk, from initialized), ``rejected`` / ``canceled`` /
  ``expired``. ``transition`` refuses any other step (``IllegalTransition``); ``apply_fill``
  moves the filled quantity and the volume-weighted average price and refuses an overfill.
* **Ids** are deterministic from their inputs: ``client_order_id = <strategy>-<signal ns>-<seq>``
  with ``seq`` the strategy's order counter of this run (so a looping replay, whose signal times
  repeat, never reuses an id, and a re-run of the same data gives the same ids); a child order is
  ``<parent>-c<k>``; a fill ``<order>-f<k>``.
* **Target → order**: the delta between the target and the strategy's position *plus its open
  orders* (so a target already on its way sends nothing), rounded toward zero to the lot, dropped
  below the instrument's min notional; a target equal to the last one asked sends nothing (no
  churn). Limit prices round to the tick on the passive side (a buy down, a sell up); stop
  triggers round away from the market (a buy stop up, a sell stop down).
* **Indicators**: ``SimpleMovingAverage`` and Wilder's ``AverageTrueRange`` — incremental, equal
  to TA-Lib's ``SMA`` and ``ATR`` (``tests/engines/strategy/test_core.py``).

Limits: one position per (strategy, symbol) from the strategy's own fills (the account's book is
Portfolio's); a target that was denied or expired is not re-sent until the target changes.
"""

from __future__ import annotations

import importlib
import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from protocol.records import (
    Bar,
    Fill,
    Instrument,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Quote,
    Signal,
    TimeInForce,
    Trade,
    error_path,
)

__all__ = [
    "CALLBACKS",
    "TERMINAL",
    "TRANSITIONS",
    "AlgoSpec",
    "AverageTrueRange",
    "IllegalTransition",
    "LastPrices",
    "NoParams",
    "SimpleMovingAverage",
    "Strategy",
    "StrategyContext",
    "StrategySpec",
    "StrategyState",
    "apply_fill",
    "child_order_id",
    "client_order_id",
    "defined_callbacks",
    "fill_id",
    "floor_to_lot",
    "load_strategy_class",
    "order_delta",
    "parse_strategy_specs",
    "round_limit_price",
    "round_stop_price",
    "signed",
    "supersedes",
    "transition",
]

ZERO = Decimal(0)

# ── the order state machine ──────────────────────────────────────────────────────────────────

S = OrderStatus
#: Every legal step. Terminal states have none. ``denied`` is pre-trade risk's answer to an
#: intent, so it only follows ``initialized``; a fill moves ``accepted``/``partially_filled`` on.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.INITIALIZED: frozenset({S.SUBMITTED, S.DENIED, S.REJECTED, S.CANCELED}),
    S.SUBMITTED: frozenset({S.ACCEPTED, S.REJECTED, S.CANCELED}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.DENIED: frozenset(),
}
TERMINAL = frozenset(status for status, nexts in TRANSITIONS.items() if not nexts)
_FILL_STATES = frozenset({S.PARTIALLY_FILLED, S.FILLED})


def supersedes(order: Order, before: Order) -> bool:
    """Whether transition ``order`` is a newer state of the same order than ``before``, both
    read back from storage in its order (event time, then arrival; what a restart rebuilds
    from): a terminal state is final, a fill never goes back, otherwise the later stored wins."""
    if before.status in TERMINAL:
        return False
    return order.filled_quantity >= before.filled_quantity


class IllegalTransition(ValueError):
    """A step the state machine does not allow (``canceled → filled``); ``status``/``to`` name
    it."""

    def __init__(self, order: Order, to: OrderStatus, why: str = "") -> None:
        super().__init__(
            f"order {order.client_order_id}: {order.status} → {to} is not allowed"
            + (f" ({why})" if why else "")
        )
        self.status = order.status
        self.to = to


def transition(order: Order, to: OrderStatus, *, event_ns: int, reason: str = "") -> Order:
    """``order`` after the step to ``to`` (not a fill: fills go through ``apply_fill``)."""
    if to not in TRANSITIONS[order.status]:
        raise IllegalTransition(order, to)
    if to in _FILL_STATES:
        raise IllegalTransition(order, to, "fills change state through apply_fill")
    return msgspec.structs.replace(order, status=to, event_ns=event_ns, reason=reason)


def apply_fill(order: Order, quantity: Decimal, price: Decimal, *, event_ns: int) -> Order:
    """``order`` after a fill of ``quantity`` at ``price``: filled quantity, average price, and
    ``partially_filled`` or ``filled``. Refuses a non-positive or over-filling quantity."""
    filled = order.filled_quantity + quantity
    to = S.FILLED if filled == order.quantity else S.PARTIALLY_FILLED
    if to not in TRANSITIONS[order.status]:
        raise IllegalTransition(order, to)
    if quantity <= 0 or filled > order.quantity:
        raise IllegalTransition(
            order, to, f"fill of {quantity} on {order.quantity - order.filled_quantity} open"
        )
    paid = (order.average_price or ZERO) * order.filled_quantity + price * quantity
    return msgspec.structs.replace(
        order, status=to, event_ns=event_ns, filled_quantity=filled, average_price=paid / filled
    )


# ── ids ──────────────────────────────────────────────────────────────────────────────────────


def client_order_id(strategy: str, signal_ns: int, sequence: int) -> str:
    """The order id of a strategy's ``sequence``-th order, caused by data of time ``signal_ns``."""
    return f"{strategy}-{signal_ns}-{sequence}"


def child_order_id(parent: str, k: int) -> str:
    """The ``k``-th (1-based) child an execution algorithm slices from ``parent``."""
    return f"{parent}-c{k}"


def fill_id(client_order_id: str, k: int) -> str:
    """The ``k``-th (1-based) fill of an order."""
    return f"{client_order_id}-f{k}"


# ── grids ────────────────────────────────────────────────────────────────────────────────────


def signed(side: OrderSide, quantity: Decimal) -> Decimal:
    return quantity if side is OrderSide.BUY else -quantity


def floor_to_lot(quantity: Decimal, lot: Decimal) -> Decimal:
    """``quantity`` (≥ 0) rounded down to a whole number of lots."""
    return (quantity / lot).to_integral_value(rounding=ROUND_DOWN) * lot


def round_limit_price(price: Decimal, tick: Decimal, side: OrderSide) -> Decimal:
    """A limit price on the tick grid, never more aggressive than asked (buy down, sell up)."""
    rounding = ROUND_FLOOR if side is OrderSide.BUY else ROUND_CEILING
    return (price / tick).to_integral_value(rounding=rounding) * tick


def round_stop_price(price: Decimal, tick: Decimal, side: OrderSide) -> Decimal:
    """A stop trigger on the tick grid, never triggering earlier than asked (buy up, sell down)."""
    rounding = ROUND_CEILING if side is OrderSide.BUY else ROUND_FLOOR
    return (price / tick).to_integral_value(rounding=rounding) * tick


def order_delta(
    current: Decimal, target: Decimal, instrument: Instrument, price: Decimal | None
) -> Decimal:
    """The signed quantity taking ``current`` to ``target``: toward zero on the lot grid, zero
    when below the instrument's min notional at ``price`` (or with no price to check it by)."""
    raw = target - current
    quantity = floor_to_lot(abs(raw), instrument.lot)
    if quantity == 0:
        return ZERO
    if instrument.min_notional > 0 and (
        price is None or quantity * price * instrument.multiplier < instrument.min_notional
    ):
        return ZERO
    return quantity if raw > 0 else -quantity


# ── indicators ───────────────────────────────────────────────────────────────────────────────


class SimpleMovingAverage:
    """Mean of the last ``period`` values (TA-Lib ``SMA``); ``None`` until ``period`` seen."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self._window: deque[float] = deque(maxlen=period)
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        self._window.append(x)
        if len(self._window) == self.period:
            # fsum of a bar window (tens of values) is cheap and never drifts
            self.value = math.fsum(self._window) / self.period
        return self.value


class AverageTrueRange:
    """Wilder's ATR (TA-Lib ``ATR``): true range from the second bar on; the first value is the
    mean of ``period`` true ranges, then ``ATR = (ATR·(n−1) + TR) / n``."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self._previous_close: float | None = None
        self._seed: list[float] = []
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        previous, self._previous_close = self._previous_close, close
        if previous is None:
            return None
        true_range = max(high - low, abs(high - previous), abs(low - previous))
        if self.value is None:
            self._seed.append(true_range)
            if len(self._seed) == self.period:
                self.value = sum(self._seed) / self.period
        else:
            self.value = (self.value * (self.period - 1) + true_range) / self.period
        return self.value


# ── configuration ────────────────────────────────────────────────────────────────────────────

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,40}")


class AlgoSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How execution works a strategy's orders: ``twap`` (``slices`` market children every
    ``interval_s``) or ``pov`` (children of ``rate`` × the market's traded volume)."""

    kind: str
    slices: int = 5
    interval_s: float = 60.0
    rate: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("twap", "pov"):
            raise ValueError("kind must be 'twap' or 'pov'")
        if self.slices < 1 or self.interval_s < 0:
            raise ValueError("slices must be >= 1 and interval_s >= 0")
        if not 0 < self.rate <= 1:
            raise ValueError("rate must be in (0, 1]")


class StrategySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One configured strategy: which class (``module:Class`` or ``module.Class``), its
    parameters (validated by the class's ``params_type``), account, symbols and bar spec."""

    name: str
    path: str
    account: str = "paper"
    symbols: list[str] = msgspec.field(default_factory=lambda: ["SPY"])
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    bar_spec: str = "1m"
    algo: AlgoSpec | None = None
    enabled: bool = True


def parse_strategy_specs(text: str) -> list[tuple[StrategySpec, Any]]:
    """The ``strategies`` setting (a JSON list) as specs with their validated parameters;
    ``ValueError`` names the field at fault (``strategies[1].params.fast: ...``)."""
    try:
        specs = msgspec.json.decode(text, type=list[StrategySpec])
    except msgspec.ValidationError as exc:
        raise ValueError(f"{_where('strategies', error_path(exc))}: {_what(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"strategies: not a JSON list ({exc})") from None
    seen: set[str] = set()
    parsed: list[tuple[StrategySpec, Any]] = []
    for i, spec in enumerate(specs):
        where = f"strategies[{i}]"
        for label, value in (("name", spec.name), ("account", spec.account)):
            if not _NAME.fullmatch(value):
                raise ValueError(f"{where}.{label}: {value!r} must be 1-40 of A-Z a-z 0-9 _ -")
        if spec.name in seen:
            raise ValueError(f"{where}.name: {spec.name!r} is configured twice")
        seen.add(spec.name)
        if not spec.symbols:
            raise ValueError(f"{where}.symbols: name at least one symbol")
        for k, symbol in enumerate(spec.symbols):
            if not _NAME.fullmatch(symbol):
                raise ValueError(f"{where}.symbols[{k}]: {symbol!r} is not a symbol")
        try:
            cls = load_strategy_class(spec.path)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}.path: {exc}") from None
        try:
            params = msgspec.convert(spec.params, cls.params_type)
        except msgspec.ValidationError as exc:
            raise ValueError(
                f"{_where(where + '.params', error_path(exc))}: {_what(exc)}"
            ) from None
        parsed.append((spec, params))
    return parsed


def _where(prefix: str, path: str | None) -> str:
    rest = (path or "$").removeprefix("$")
    return prefix + rest


def _what(exc: msgspec.ValidationError) -> str:
    return str(exc).partition(" - at `")[0]


def load_strategy_class(path: str) -> type[Strategy[Any]]:
    """The ``Strategy`` subclass a dotted path names (``pkg.module:Class`` or
    ``pkg.module.Class``)."""
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not a dotted path to a class")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except ModuleNotFoundError:
        raise ValueError(f"no module {module_name!r}") from None
    except AttributeError:
        raise ValueError(f"{module_name} has no {attribute!r}") from None
    if not (isinstance(found, type) and issubclass(found, Strategy)):
        raise ValueError(f"{path} is not a Strategy subclass")
    return found


# ── the strategy API ─────────────────────────────────────────────────────────────────────────


class NoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A strategy without parameters."""


P = TypeVar("P")


class Strategy(Generic[P]):
    """A trading strategy: callbacks in, ``ctx.target`` / ``ctx.order`` out; no I/O, no clock.

    ``params_type`` is the typed, frozen parameter struct (``msgspec.Struct``, unknown fields
    refused); the engine validates the configured ``params`` into it. Callbacks default to
    doing nothing. Indicators warm up from stored bars: ``on_bar`` runs over them first with a
    context that discards orders (``ctx.warming_up``).
    """

    params_type: ClassVar[type[Any]] = NoParams

    def __init__(self, name: str, params: P) -> None:
        self.name = name
        self.params = params

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        """A completed bar of one of the strategy's symbols (its ``bar_spec``)."""

    def on_trade(self, trade: Trade, ctx: StrategyContext) -> None:
        """A trade print of one of the strategy's symbols."""

    def on_quote(self, quote: Quote, ctx: StrategyContext) -> None:
        """A best bid/offer of one of the strategy's symbols."""

    def on_signal(self, signal: Signal, ctx: StrategyContext) -> None:
        """A signal about one of its symbols: ``source`` ``vpin`` or ``ml.<model>``."""

    def on_fill(self, fill: Fill, ctx: StrategyContext) -> None:
        """A fill of one of its orders (its position is already updated)."""

    def on_timer(self, name: str, ctx: StrategyContext) -> None:
        """A timer set with ``ctx.set_timer`` came due (by market event time)."""


#: the data callbacks the engine calls (``on_timer`` runs when a timer is due, whatever came in)
CALLBACKS = ("on_bar", "on_trade", "on_quote", "on_signal", "on_fill")


def defined_callbacks(strategy: Strategy[Any]) -> dict[str, Callable[[Any, StrategyContext], None]]:
    """The data callbacks ``strategy`` defines itself, bound, by name. The others are
    ``Strategy``'s, which do nothing: the engine neither calls them nor builds a context for
    them (a bar strategy is sent four prints a bar), and only checks the timers at such an
    event. Decided once, when the strategy is loaded."""
    defined: dict[str, Callable[[Any, StrategyContext], None]] = {}
    for name in CALLBACKS:
        bound = getattr(strategy, name)
        if getattr(bound, "__func__", None) is not getattr(Strategy, name):
            defined[name] = bound
    return defined


@dataclass(slots=True)
class StrategyState:
    """What the engine knows of one strategy: positions from its own fills, its open orders,
    the targets it last asked for, its order counter and timers."""

    name: str
    account: str
    algo: AlgoSpec | None = None
    enabled: bool = True
    sequence: int = 0
    positions: dict[str, Decimal] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    targets: dict[str, Decimal] = field(default_factory=dict)
    timers: dict[str, int] = field(default_factory=dict)
    orders_sent: int = 0
    fills: int = 0

    def position(self, symbol: str) -> Decimal:
        return self.positions.get(symbol, ZERO)

    def pending(self, symbol: str) -> Decimal:
        """Signed quantity still open in the strategy's orders of ``symbol``."""
        return sum(
            (
                signed(o.side, o.quantity - o.filled_quantity)
                for o in self.open_orders.values()
                if o.symbol == symbol
            ),
            ZERO,
        )

    def track(self, order: Order) -> None:
        """Keep the strategy's view of one of its orders current (dropped once terminal). An
        algorithm's child is execution's, not the strategy's: its parent counts for it."""
        if order.parent_order_id is not None:
            return
        if order.status in TERMINAL:
            self.open_orders.pop(order.client_order_id, None)
        elif order.client_order_id in self.open_orders or order.status is S.INITIALIZED:
            self.open_orders[order.client_order_id] = order

    def add_fill(self, fill: Fill) -> None:
        self.positions[fill.symbol] = self.position(fill.symbol) + signed(fill.side, fill.quantity)
        self.fills += 1

    def timer_due(self, now_ns: int) -> bool:
        """Whether a timer is due at ``now_ns``."""
        return bool(self.timers) and min(self.timers.values()) <= now_ns

    def due_timers(self, now_ns: int) -> list[str]:
        """Timers due at ``now_ns`` (removed), in due-time then name order."""
        if not self.timers:
            return []
        due = sorted((at, name) for name, at in self.timers.items() if at <= now_ns)
        for _, name in due:
            del self.timers[name]
        return [name for _, name in due]


class LastPrices(Mapping[str, Decimal]):
    """Each symbol's last market price, as the exact decimal on its instrument's grid
    (``Instrument.market_price``: the simulated venue's reading of a print). A print stores only its
    float; the decimal is made when something reads it, once per price: most prints are never
    read (a bar strategy reads a price only when it sends an order). A price that is not positive
    and finite, or a symbol outside ``instruments``, is not stored."""

    def __init__(self, instruments: Mapping[str, Instrument]) -> None:
        self._instruments = dict(instruments)
        self._floats: dict[str, float] = {}
        self._exact: dict[str, tuple[float, Decimal]] = {}

    def set(self, symbol: str, price: float) -> None:
        if 0 < price < math.inf and symbol in self._instruments:
            self._floats[symbol] = price

    def __getitem__(self, symbol: str) -> Decimal:
        price = self._floats[symbol]
        made = self._exact.get(symbol)
        if made is not None and made[0] == price:
            return made[1]
        exact = self._instruments[symbol].market_price(price)
        self._exact[symbol] = (price, exact)
        return exact

    def __iter__(self) -> Iterator[str]:
        return iter(self._floats)

    def __len__(self) -> int:
        return len(self._floats)


class StrategyContext:
    """What a strategy sees and does during one callback. ``target``/``order`` build orders
    (``status=initialized``) the engine publishes after the callback returns."""

    def __init__(
        self,
        state: StrategyState,
        instruments: dict[str, Instrument] | Any,
        *,
        now_ns: int,
        event_ns: int,
        last_prices: Mapping[str, Decimal],
        warming_up: bool = False,
    ) -> None:
        self.state = state
        self._instruments = instruments
        self.now_ns = now_ns
        #: the event time of the data being handled: the signal time of any order it causes
        self.event_ns = event_ns
        self._last_prices = last_prices
        self.warming_up = warming_up
        self.orders: list[Order] = []

    @property
    def strategy(self) -> str:
        return self.state.name

    @property
    def account(self) -> str:
        return self.state.account

    def instrument(self, symbol: str) -> Instrument:
        """The instrument's grids (``UnknownInstrument`` for a symbol outside the table)."""
        instrument: Instrument = self._instruments[symbol]
        return instrument

    def position(self, symbol: str) -> Decimal:
        """The strategy's filled position in ``symbol``."""
        return self.state.position(symbol)

    def last_price(self, symbol: str) -> Decimal | None:
        return self._last_prices.get(symbol)

    def target(self, symbol: str, quantity: Decimal | int, *, reason: str = "") -> Order | None:
        """Hold ``quantity`` of ``symbol``: a market order for the lot-rounded delta between it
        and the position plus open orders; nothing when the target is unchanged or the delta
        rounds to nothing. Returns the order, if one was made."""
        wanted = Decimal(quantity)
        if self.warming_up or self.state.targets.get(symbol) == wanted:
            return None
        self.state.targets[symbol] = wanted
        current = self.position(symbol) + self.state.pending(symbol)
        delta = order_delta(current, wanted, self.instrument(symbol), self.last_price(symbol))
        if delta == 0:
            return None
        side = OrderSide.BUY if delta > 0 else OrderSide.SELL
        return self._make(symbol, side, abs(delta), OrderType.MARKET, None, None,
                          TimeInForce.GTC, reason)  # fmt: skip

    def order(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal | int,
        *,
        type: OrderType = OrderType.MARKET,
        price: Decimal | None = None,
        stop_price: Decimal | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        reason: str = "",
    ) -> Order | None:
        """An explicit order: quantity rounded down to the lot, prices to the tick (passive
        side); ``ValueError`` when the type's prices are missing. ``None`` when it rounds to
        nothing or while warming up."""
        instrument = self.instrument(symbol)
        if type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and price is None:
            raise ValueError(f"a {type} order needs a price")
        if type in (OrderType.STOP, OrderType.STOP_LIMIT) and stop_price is None:
            raise ValueError(f"a {type} order needs a stop_price")
        quantity = floor_to_lot(Decimal(quantity), instrument.lot)
        if self.warming_up or quantity <= 0:
            return None
        limit = None if price is None else round_limit_price(price, instrument.tick, side)
        stop = None if stop_price is None else round_stop_price(stop_price, instrument.tick, side)
        reference = limit or stop or self.last_price(symbol)
        if instrument.min_notional > 0 and (
            reference is None
            or quantity * reference * instrument.multiplier < instrument.min_notional
        ):
            return None
        return self._make(symbol, side, quantity, type, limit, stop, time_in_force, reason)

    def set_timer(self, name: str, at_ns: int) -> None:
        """Call ``on_timer(name)`` once market event time reaches ``at_ns`` (replaces a timer
        of the same name)."""
        self.state.timers[name] = at_ns

    def cancel_timer(self, name: str) -> None:
        self.state.timers.pop(name, None)

    def _make(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        type: OrderType,
        price: Decimal | None,
        stop_price: Decimal | None,
        time_in_force: TimeInForce,
        reason: str,
    ) -> Order:
        state = self.state
        state.sequence += 1
        order_id = client_order_id(state.name, self.event_ns, state.sequence)
        order = Order(
            client_order_id=order_id,
            account=state.account,
            strategy=state.name,
            symbol=symbol,
            side=side,
            type=type,
            quantity=quantity,
            status=S.INITIALIZED,
            event_ns=self.event_ns,
            price=price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            intent_id=f"intent-{order_id}",
            reason=reason,
        )
        state.track(order)
        state.orders_sent += 1
        self.orders.append(order)
        return order

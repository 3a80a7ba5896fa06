"""Strategy engine (port 8700): signals → intents → (Risk) → orders → simulated venue → fills.

Inputs, per configured symbol and account: ``bars.<spec>.<SYM>``, ``trades.<SYM>``,
``quotes.<SYM>``, ``vpin.<SYM>`` and ``ml.*.<SYM>`` (turned into ``Signal``s: ``source`` ``vpin`` /
``ml.<model>``), ``orders.<account>``. Strategies (``strategies``: a JSON list, loaded by dotted
path) get callbacks with a ``StrategyContext``; the orders they make are published as
``Order(status=initialized)`` on ``intents.<strategy>`` for Risk. Risk's ``submitted`` orders on
``orders.<account>`` go to the ``Execution`` (TWAP/POV parents, the simulated venue), whose
transitions are published on ``orders.<account>`` and fills on ``fills.<account>``; ``denied``
orders close the strategy's open order. An algorithm's children are intents too: published on
``intents.<strategy>`` (``parent_order_id`` set), checked by Risk, sent to the venue on approval;
a denied child cancels its parent's remainder (``child_denied``). The engine ignores the
transitions it publishes itself and a ``submitted`` order it already took (idempotent).

Time: market event time drives everything (order event times, venue latency, timers, DAY
expiry); ``self.clock`` only stamps ``ctx.now_ns``. So the engine runs the same live and under
``DeterministicDriver``. At start each strategy warms up on the newest ``warmup_bars`` stored
bars of its symbols before the clock's now (an empty or unreachable store is tolerated).

Crash-only restart: every order transition the engine applies is stored (``orders.<account>``; fills
are Portfolio's to store, and each fill is also its order's ``partially_filled``/``filled``
transition). ``on_start`` rebuilds from them before warming up: the newest state of each order
(REST's book), each strategy's position (its orders' filled quantities), open orders, order and fill
counts and its order sequence (the next id goes on from the highest stored, so a restart never
reuses an id), and the execution's working orders (``Execution.restore``: resting orders back at the
venue with their fill counts, algorithm parents with their workers and children); orders Risk
approved that never reached the venue are submitted again. An intent still ``initialized`` there may
have been answered while the engine was down (the bus keeps no history to resume from in-process,
and Redis's is trimmed): Risk stores every answer (``risk.approvals.<account>``,
``risk.denials.<account>``, the intent's event time), so those answers are read from the intent's
time on and go through ``on_order`` as if they had just arrived (an approval to the venue, a denial
closes the intent, a denied child ends its parent). An answer published after the engine subscribed
arrives live too and is ignored as a redelivery. Then the strategies warm up on stored bars as at
any start. Limits: one process owns each account's execution; Risk's store must be the engine's (the
platform's shared one, not a ``db_dsn`` of its own); an answer published before the engine
subscribed and still queued for PostgreSQL when ``on_start`` reads (the writer's flush delay) is
missed and its intent stays ``initialized``; ``targets`` are not stored (the first target after a
restart is compared with the position plus open orders, so an unchanged one still sends nothing);
timers fire on the next market event of a strategy's symbols.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter
from typing import Any

import msgspec
from prometheus_client import Counter

from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.instruments import load_instruments
from engines.shell.lifecycle import Input, on
from engines.strategy.algos import Execution
from engines.strategy.core import (
    TERMINAL,
    LastPrices,
    Strategy,
    StrategyContext,
    StrategySpec,
    StrategyState,
    defined_callbacks,
    load_strategy_class,
    parse_strategy_specs,
    signed,
    supersedes,
)
from engines.strategy.venue import FillOn, SimulatedVenue, VenueConfig, VenueEvent
from protocol.channels import DeliveryClass
from protocol.records import (
    BadInput,
    Bar,
    Fill,
    Order,
    OrderStatus,
    Quote,
    Signal,
    Trade,
    decode,
    encode,
)
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import MAX_PAGE_ROWS, RecordStore, Storage

DEFAULT_STRATEGIES = json.dumps(
    [
        {
            "name": "ma_cross",
            "path": "engines.strategy.strategies:MovingAverageCross",
            "account": "paper",
            "symbols": ["SPY"],
            "params": {"fast": 10, "slow": 30, "quantity": 100, "atr_period": 14, "atr_stop": 3.0},
        },
        {
            "name": "vpin_guard",
            "path": "engines.strategy.strategies:VpinGuard",
            "account": "paper",
            "symbols": ["SPY"],
            "params": {"quantity": 100, "alert_fraction": 0.0},
        },
        {
            "name": "ml_bet",
            "path": "engines.strategy.strategies:MlBet",
            "account": "paper",
            "symbols": ["SPY"],
            "params": {"model": "", "field": "bet_size", "max_quantity": 100},
        },
    ],
    separators=(",", ":"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyConfig(EngineConfig):
    """Strategy settings (``NAUTILUS_STRATEGY_<FIELD>``)."""

    name: str = field(default="strategy", metadata={"help": "engine name", "env": False})
    strategies: str = field(
        default=DEFAULT_STRATEGIES,
        metadata=described(
            "JSON list of {name, path (module:Class), account, symbols, params, bar_spec, "
            "algo {kind: twap|pov, slices, interval_s, rate}, enabled}"
        ),
    )
    instruments: str = field(
        default="", metadata=described("instrument table JSON file ('' = bundled)")
    )
    fill_on: FillOn = field(
        default=FillOn.TRADES,
        metadata=described("simulated venue fills against: trades or quotes (L1)"),
    )
    latency_ms: float = field(
        default=0.0, metadata=described("simulated venue latency, ms of market event time")
    )
    taker_fee_bps: float = field(default=0.0, metadata=described("taker fee, bps of notional"))
    maker_fee_bps: float = field(default=0.0, metadata=described("maker fee, bps of notional"))
    fee_per_share: float = field(default=0.0, metadata=described("fee per unit traded"))
    fee_decimals: int = field(default=2, metadata=described("fees rounded to this many decimals"))
    slippage_bps: float = field(
        default=0.0,
        metadata=described("slippage of a taker fill, bps of the price against its side"),
    )
    day_offset_ns: int = field(
        default=0, metadata=described("shift of UTC midnight to the DAY-order cut, ns")
    )
    warmup_bars: int = field(
        default=300, metadata=described("stored bars per symbol replayed into strategies at start")
    )
    max_orders: int = field(
        default=100_000,
        metadata=described("orders kept in memory for REST (oldest done first out)"),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        self.specs()  # validates: a bad strategy config names its field
        if not 0 <= self.slippage_bps < 10_000:
            raise ValueError(f"slippage_bps must be in [0, 10000), got {self.slippage_bps}")
        self.venue()
        if self.warmup_bars < 0 or self.max_orders < 1:
            raise ValueError("warmup_bars must be >= 0 and max_orders >= 1")

    def specs(self) -> list[tuple[StrategySpec, Any]]:
        return parse_strategy_specs(self.strategies)

    def venue(self) -> VenueConfig:
        return VenueConfig(
            fill_on=self.fill_on,
            latency_ns=round(self.latency_ms * 1e6),
            taker_fee_bps=Decimal(repr(self.taker_fee_bps)),
            maker_fee_bps=Decimal(repr(self.maker_fee_bps)),
            fee_per_share=Decimal(repr(self.fee_per_share)),
            fee_decimals=self.fee_decimals,
            day_offset_ns=self.day_offset_ns,
            slippage_bps=Decimal(repr(self.slippage_bps)),
        )


@dataclass(slots=True)
class Running:
    """One configured strategy in the engine: its spec, object, state and the data callbacks
    it defines (``defined_callbacks``: only those are called)."""

    spec: StrategySpec
    strategy: Strategy[Any]
    state: StrategyState
    callbacks: dict[str, Callable[[Any, StrategyContext], None]] = field(init=False)

    def __post_init__(self) -> None:
        self.callbacks = defined_callbacks(self.strategy)


class StrategyEngine(Engine[StrategyConfig]):
    config_type = StrategyConfig

    def __init__(
        self, config: StrategyConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.instruments = load_instruments(config.instruments)
        self.strategies: dict[str, Running] = {}
        for spec, params in config.specs():
            cls = load_strategy_class(spec.path)
            for symbol in spec.symbols:
                self.instruments[symbol]  # UnknownInstrument names a symbol outside the table
            self.strategies[spec.name] = Running(
                spec,
                cls(spec.name, params),
                StrategyState(spec.name, spec.account, algo=spec.algo, enabled=spec.enabled),
            )
        self.accounts = sorted({r.spec.account for r in self.strategies.values()})
        self.symbols = sorted({s for r in self.strategies.values() for s in r.spec.symbols})
        self.bar_specs = sorted({r.spec.bar_spec for r in self.strategies.values()})
        self.execution = Execution(
            SimulatedVenue(config.venue(), self.instruments), self.instruments
        )
        #: every order by id (strategy orders and children), newest transition; bounded
        self.orders: collections.OrderedDict[str, Order] = collections.OrderedDict()
        self.last_prices = LastPrices(self.instruments)
        #: the strategies each (symbol, bar spec or None) goes to, found once each
        self._subscribers: dict[tuple[str, str | None], list[Running]] = {}
        self.order_records: RecordStore[Order] = self.records(
            "orders", Order, key=lambda o: o.account, time=lambda o: o.event_ns
        )
        #: where Risk stores its answers to intents (read at restart, never written here)
        self.risk_answers = tuple(
            self.storage.records(
                self.name, stream, Order, key=lambda o: o.account, time=lambda o: o.event_ns
            )
            for stream in RISK_ANSWER_STREAMS
        )
        registry = self.metrics.registry
        self.intents_total = Counter(
            "nautilus_strategy_intents", "orders strategies asked for", ["strategy"],
            registry=registry,
        )  # fmt: skip
        self.transitions_total = Counter(
            "nautilus_strategy_order_transitions", "order transitions published", ["status"],
            registry=registry,
        )  # fmt: skip
        self.fills_total = Counter(
            "nautilus_strategy_fills", "fills published", ["account"], registry=registry
        )
        #: the counters' labelled children, looked up once per label value (a hot path)
        self._transitions: dict[str, Any] = {}
        self._fills: dict[str, Any] = {}
        self._intents: dict[str, Any] = {}
        self.warmed_bars: dict[str, int] = {}

    # ── hooks ────────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        found: dict[str, Input[Any]] = {}
        for symbol in self.symbols:
            for spec in self.bar_specs:
                found[f"bars.{spec}.{symbol}"] = on(Bar, self.on_bar)
            found[f"trades.{symbol}"] = on(Trade, self.on_trade)
            found[f"quotes.{symbol}"] = on(Quote, self.on_quote)
            found[f"vpin.{symbol}"] = on(dict, self.on_vpin)
            found[f"ml.*.{symbol}"] = on(dict, self.on_ml)
        for account in self.accounts:
            found[f"orders.{account}"] = on(dict, self.on_order_payload)
        return found

    def streams(self) -> list[StreamInfo]:
        lossless = DeliveryClass.ORDERED_LOSSLESS
        return [
            *(StreamInfo(f"intents.{name}", lossless, "orders (initialized) for Risk")
              for name in self.strategies),
            *(StreamInfo(f"orders.{a}", lossless, "order transitions (accepted … filled)")
              for a in self.accounts),
            *(StreamInfo(f"fills.{a}", lossless, "fills of the simulated venue")
              for a in self.accounts),
        ]  # fmt: skip

    def health_extra(self) -> Mapping[str, object]:
        return {
            "strategies": {n: r.state.enabled for n, r in self.strategies.items()},
            "open_orders": sum(len(r.state.open_orders) for r in self.strategies.values()),
            "warmed_bars": dict(self.warmed_bars),
        }

    async def on_start(self) -> None:
        await self.recover()
        await self.warm_up()

    # ── crash-only restart ───────────────────────────────────────────────────────────────────

    async def recover(self) -> None:
        """Rebuild orders, strategy states and working orders from the stored transitions
        (see the module docstring); then resubmit what Risk approved but the venue never saw."""
        newest: dict[str, Order] = {}
        first_ns: dict[str, int] = {}
        filled_at: dict[str, set[Decimal]] = {}
        for account in self.accounts:
            async for order in self.order_records.scan(account):
                if order.strategy not in self.strategies:
                    continue
                coid = order.client_order_id
                before = newest.get(coid)
                first_ns.setdefault(coid, order.event_ns)
                if order.status in _FILL_STATES:  # each fill moved the filled quantity
                    filled_at.setdefault(coid, set()).add(order.filled_quantity)
                if before is None or supersedes(order, before):
                    newest[coid] = order
        if not newest:
            return
        fills = {coid: len(quantities) for coid, quantities in filled_at.items()}
        parents = {o.parent_order_id for o in newest.values() if o.parent_order_id is not None}
        for order in newest.values():
            self.orders[order.client_order_id] = order
            state = self.strategies[order.strategy].state
            if order.parent_order_id is None:
                state.sequence = max(state.sequence, _sequence_of(order.client_order_id))
                state.orders_sent += 1
                if order.filled_quantity:
                    state.positions[order.symbol] = state.position(order.symbol) + signed(
                        order.side, order.filled_quantity
                    )
                if order.status not in TERMINAL:
                    state.open_orders[order.client_order_id] = order
            if order.client_order_id not in parents:  # fills are published for leaves only
                state.fills += fills.get(order.client_order_id, 0)
        while len(self.orders) > self.config.max_orders:
            oldest = next((k for k, o in self.orders.items() if o.status in TERMINAL), None)
            if oldest is None:
                break
            del self.orders[oldest]
        again = self.execution.restore(
            list(newest.values()), fills, first_ns, lambda o: self.strategies[o.strategy].spec.algo
        )
        self.log.info(
            "recovered %d orders (%d open) from storage",
            len(newest), sum(len(r.state.open_orders) for r in self.strategies.values()),
        )  # fmt: skip
        for order in again:
            algo = None if order.parent_order_id else self.strategies[order.strategy].spec.algo
            await self._handle_events(self.execution.submit(order, algo), None)
        waiting = [o for o in newest.values() if o.status is OrderStatus.INITIALIZED]
        missed = await self.missed_answers(waiting)
        if missed:
            self.log.info("took %d answers Risk published while down", len(missed))
        for answer in missed:  # the live path: a denied child ends its parent as it would have
            await self.on_order(answer, None)

    async def missed_answers(self, waiting: Sequence[Order]) -> list[Order]:
        """Risk's stored answers (approvals, denials) to the intents in ``waiting``, whose newest
        stored state is ``initialized``: what Risk published while this engine was down, in
        event time (an answer keeps its intent's)."""
        found: list[Order] = []
        for account in sorted({o.account for o in waiting}):
            ids = {o.client_order_id for o in waiting if o.account == account}
            since = min(o.event_ns for o in waiting if o.account == account)
            for answers in self.risk_answers:
                found += [a async for a in answers.scan(account, since) if a.client_order_id in ids]
        return sorted(found, key=attrgetter("event_ns"))

    # ── warm-up ──────────────────────────────────────────────────────────────────────────────

    async def warm_up(self) -> None:
        """Replay the newest stored bars into the strategies (orders discarded)."""
        if self.config.warmup_bars == 0:
            return
        now = self.clock.now_ns()
        for symbol in self.symbols:
            for spec in self.bar_specs:
                try:
                    bars = await self._stored_bars(symbol, spec, now)
                except Exception as exc:  # a store down or empty must not stop trading
                    self.log.warning("warm-up of %s %s skipped: %r", symbol, spec, exc)
                    continue
                self.warmed_bars[f"{spec}.{symbol}"] = len(bars)
                warming = [r for r in self._subscribed(symbol, spec) if "on_bar" in r.callbacks]
                for bar in bars:
                    self.last_prices.set(bar.symbol, bar.close)
                    for running in warming:
                        ctx = self._context(running, bar.end_ns, warming_up=True)
                        running.callbacks["on_bar"](bar, ctx)

    async def _stored_bars(self, symbol: str, spec: str, now_ns: int) -> list[Bar]:
        kept: collections.deque[Bar] = collections.deque(maxlen=self.config.warmup_bars)
        cursor: str | None = None
        while True:
            page = await self.storage.store.fetch_bars(
                symbol, spec, 0, now_ns, MAX_PAGE_ROWS, cursor
            )
            kept.extend(bar for bar in page.items if bar.end_ns <= now_ns)
            cursor = page.next_cursor
            if cursor is None:
                return list(kept)

    # ── market data and signals ──────────────────────────────────────────────────────────────

    async def on_bar(self, bar: Bar, envelope: Envelope) -> None:
        self.last_prices.set(bar.symbol, bar.close)
        for running in self._subscribed(bar.symbol, bar.spec):
            await self._call(running, bar.end_ns, envelope, "on_bar", bar)

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        self.last_prices.set(trade.symbol, trade.price)
        events = self.execution.on_trade(trade)
        if events:
            await self._handle_events(events, envelope)
        for running in self._subscribed(trade.symbol):
            await self._call(running, trade.event_ns, envelope, "on_trade", trade)

    async def on_quote(self, quote: Quote, envelope: Envelope) -> None:
        events = self.execution.on_quote(quote)
        if events:
            await self._handle_events(events, envelope)
        for running in self._subscribed(quote.symbol):
            await self._call(running, quote.event_ns, envelope, "on_quote", quote)

    async def on_vpin(self, payload: dict[str, Any], envelope: Envelope) -> None:
        symbol = envelope.channel.rpartition(".")[2]
        await self._signal(
            signal_of("vpin", symbol, payload, envelope, time_key="end_ns"), envelope
        )

    async def on_ml(self, payload: dict[str, Any], envelope: Envelope) -> None:
        _, model, symbol = envelope.channel.split(".")
        await self._signal(signal_of(f"ml.{model}", symbol, payload, envelope), envelope)

    async def _signal(self, signal: Signal, envelope: Envelope) -> None:
        for running in self._subscribed(signal.symbol):
            await self._call(running, signal.event_ns, envelope, "on_signal", signal)

    # ── orders ───────────────────────────────────────────────────────────────────────────────

    async def on_order_payload(self, payload: dict[str, Any], envelope: Envelope) -> None:
        """``orders.<account>``: only Risk's answers (``submitted``, ``denied``) concern the
        engine; every other status is a transition it published itself, skipped undecoded
        (two of the three messages an order sends here). Anything else is decoded, so bad
        input is counted."""
        if isinstance(payload, dict) and payload.get("status") in _ECHOES:
            return
        await self.on_order(decode(Order, payload), envelope)

    async def on_order(self, order: Order, envelope: Envelope | None) -> None:
        """Risk's answers: ``submitted`` goes to execution, ``denied`` closes the intent; the
        transitions this engine publishes itself come back here and are ignored."""
        known = self.orders.get(order.client_order_id)
        if order.status is OrderStatus.DENIED:
            if known is None or known.status is OrderStatus.INITIALIZED:
                await self._apply(order)
                if order.parent_order_id is not None:  # an algorithm's child: end its parent
                    await self._handle_events(self.execution.deny(order), envelope)
            return
        if order.status is not OrderStatus.SUBMITTED:
            return
        if known is not None and known.status is not OrderStatus.INITIALIZED:
            return  # already taken (a redelivery)
        running = self.strategies.get(order.strategy)
        if known is not None:
            # the venue's latency runs from the signal time of the intent
            order = _with_event_ns(order, known.event_ns)
        await self._apply(order)
        algo = running.spec.algo if running is not None else None
        await self._handle_events(self.execution.submit(order, algo), envelope)

    async def cancel(self, client_order_id: str, event_ns: int) -> bool:
        """Cancel a working order (REST, strategies); ``False`` when none is working."""
        events = self.execution.cancel(client_order_id, event_ns)
        await self._handle_events(events, None)
        return bool(events)

    async def _handle_events(self, events: Sequence[VenueEvent], envelope: Envelope | None) -> None:
        fills: list[Fill] = []
        for event in events:
            if isinstance(event, Fill):
                await self._publish_fill(event, envelope)
                fills.append(event)
            elif event.status is OrderStatus.INITIALIZED:  # an algorithm's child: to Risk
                await self._apply_and_publish(f"intents.{event.strategy}", event, envelope)
            else:
                await self._apply_and_publish(f"orders.{event.account}", event, envelope)
                _child(self._transitions, self.transitions_total, event.status.value).inc()
        for fill in fills:  # after every state change of the batch (a parent moves after its child)
            running = self.strategies.get(fill.strategy)
            if running is not None:
                await self._call(running, fill.event_ns, envelope, "on_fill", fill)

    async def _publish_fill(self, fill: Fill, envelope: Envelope | None) -> None:
        await self._publish(f"fills.{fill.account}", encode(fill), envelope)
        _child(self._fills, self.fills_total, fill.account).inc()
        running = self.strategies.get(fill.strategy)
        if running is not None:
            running.state.add_fill(fill)

    async def _apply(self, order: Order, payload: dict[str, Any] | None = None) -> None:
        """Keep the book and the owning strategy's view current (``payload``: the order
        already encoded, stored as is)."""
        self.orders[order.client_order_id] = order
        self.orders.move_to_end(order.client_order_id)
        self.order_records.append([order], payloads=None if payload is None else [payload])
        running = self.strategies.get(order.strategy)
        if running is not None:
            running.state.track(order)
        if len(self.orders) > self.config.max_orders:
            for key, kept in self.orders.items():
                if kept.status in TERMINAL:
                    del self.orders[key]
                    break

    async def _apply_and_publish(
        self, channel: str, order: Order, envelope: Envelope | None
    ) -> None:
        """``_apply`` an order of the engine's own and publish it, encoded once for both."""
        payload = encode(order)
        await self._apply(order, payload)
        await self._publish(channel, payload, envelope)

    async def _publish(
        self, channel: str, payload: dict[str, Any], envelope: Envelope | None
    ) -> None:
        await self.publish(channel, payload, event_ns=envelope.event_ns if envelope else None)

    # ── strategies ───────────────────────────────────────────────────────────────────────────

    def _subscribed(self, symbol: str, bar_spec: str | None = None) -> list[Running]:
        """The strategies of ``symbol`` (and of ``bar_spec``, for a bar)."""
        found = self._subscribers.get((symbol, bar_spec))
        if found is None:
            found = self._subscribers[(symbol, bar_spec)] = [
                r for r in self.strategies.values()
                if symbol in r.spec.symbols and (bar_spec is None or r.spec.bar_spec == bar_spec)
            ]  # fmt: skip
        return found

    def _context(
        self, running: Running, event_ns: int, *, warming_up: bool = False
    ) -> StrategyContext:
        return StrategyContext(
            running.state,
            self.instruments,
            now_ns=self.clock.now_ns(),
            event_ns=event_ns,
            last_prices=self.last_prices,
            warming_up=warming_up,
        )

    async def _call(
        self, running: Running, event_ns: int, envelope: Envelope | None, callback: str, arg: Any
    ) -> None:
        """Run one callback (then any timers now due) and publish the orders it made; a
        strategy that raises is counted and logged, the others go on. A callback the strategy
        does not define is skipped, and the event costs only the timer check."""
        state = running.state
        if not state.enabled:
            return
        defined = running.callbacks.get(callback)
        if defined is None and not state.timer_due(event_ns):
            return
        ctx = self._context(running, event_ns)
        try:
            if defined is not None:
                defined(arg, ctx)
            for name in state.due_timers(event_ns):
                running.strategy.on_timer(name, ctx)
        except Exception:
            self.record_error(f"strategy {running.spec.name} {callback} failed")
        for order in ctx.orders:
            await self._apply_and_publish(f"intents.{order.strategy}", order, envelope)
            _child(self._intents, self.intents_total, order.strategy).inc()

    # ── REST views ───────────────────────────────────────────────────────────────────────────

    def describe(self) -> list[dict[str, Any]]:
        """Configured strategies and their state (``GET /strategy/strategies``)."""
        return [
            {
                "name": r.spec.name,
                "path": r.spec.path,
                "account": r.spec.account,
                "symbols": r.spec.symbols,
                "bar_spec": r.spec.bar_spec,
                "params": r.spec.params,
                "algo": None if r.spec.algo is None else msgspec.to_builtins(r.spec.algo),
                "enabled": r.state.enabled,
                "positions": {s: str(q) for s, q in r.state.positions.items()},
                "targets": {s: str(q) for s, q in r.state.targets.items()},
                "open_orders": sorted(r.state.open_orders),
                "orders_sent": r.state.orders_sent,
                "fills": r.state.fills,
            }
            for r in self.strategies.values()
        ]


def _child(children: dict[str, Any], counter: Counter, label: str) -> Any:
    """``counter.labels(label)``, remembered in ``children``."""
    found = children.get(label)
    if found is None:
        found = children[label] = counter.labels(label)
    return found


def _with_event_ns(order: Order, event_ns: int) -> Order:
    return msgspec.structs.replace(order, event_ns=event_ns)


_FILL_STATES = frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED})
#: the streams Risk stores its answers on (``engines.risk.service``), keyed by account
RISK_ANSWER_STREAMS = ("risk.approvals", "risk.denials")
#: statuses on ``orders.<account>`` that only this engine publishes (its own transitions)
_ECHOES = frozenset(s.value for s in OrderStatus) - {"submitted", "denied"}


def _sequence_of(client_order_id: str) -> int:
    """The sequence number of a strategy's order id (``<strategy>-<signal ns>-<seq>``)."""
    tail = client_order_id.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


_SCALAR = (int, float, bool)


def signal_of(
    source: str,
    symbol: str,
    payload: dict[str, Any],
    envelope: Envelope,
    *,
    time_key: str = "event_ns",
) -> Signal:
    """A ``vpin``/``ml`` payload as a ``Signal``: its scalar fields (numbers, flags, nulls) as
    values, its own event time (``time_key``) or else the envelope's."""
    if not isinstance(payload, dict):
        raise BadInput("wrong_type", f"{source} payload must be an object")
    when = payload.get(time_key, envelope.event_ns)
    if isinstance(when, bool) or not isinstance(when, int):
        raise BadInput("invalid_value", f"{source} {time_key} must be an integer", f"$.{time_key}")
    values = {k: v for k, v in payload.items() if v is None or isinstance(v, _SCALAR)}
    return Signal(source=source, symbol=symbol, event_ns=when, values=values)

"""The trading loop's figures (issue 11, "Done when"): signal → order latency, orders/s.

    .venv/bin/python -m loadtest.trading_bench [--signals 2000] [--orders 10000] [--pin 0]

1. **signal → order on the bus** (target p99 ≤ 1 ms embedded). ``StrategyEngine`` and
   ``RiskEngine`` started as the embedded platform starts them: one in-process ``MemoryBus``, a
   ``SystemClock``, uvloop, default configs (Risk's limits, its VaR worker and Monte Carlo
   warm-up; memory storage instead of PostgreSQL), the three default strategies on SPY plus
   ``Flip``, which flips its SPY target (+q / −q) on every bar, so every bar is a signal that
   becomes an order. Per signal: a ``bars.1m.SPY`` ``Bar`` is published; timed until the
   ``submitted`` ``Order`` of ``Flip`` appears on ``orders.paper`` (Strategy's consumer →
   ``intents.bench`` → Risk's consumer → check → publish). Two clocks: the bus's own stamps
   (``publish_ns`` of the submitted order − that of the bar: what the bus saw) and
   ``perf_counter_ns`` from before the bar's publish to a subscriber of ``orders.paper`` holding
   it (one more consumer wake-up, as a hub adds). Between signals, untimed, a trade print fills
   the order (venue → ``fills.paper``) and Risk releases it, so the books stay at their working
   size. The first ``--warmup`` signals are not counted.
2. **orders/s through risk + simulated venue + ledger**, one thread, per order: an intent (a
   market order on SPY, alternately buy and sell, 50 ms of event time apart so Risk's default
   rate limit approves all) is checked, submitted to the venue, filled by the next trade print
   and folded into the account's ledger. Two ways:

   * ``cores``: ``engines.risk.pretrade.check`` + ``AccountBook.record_submitted`` →
     ``engines.strategy.algos.Execution`` over ``SimulatedVenue`` (``submit``, ``on_trade``) →
     ``AccountBook.on_order`` of the transitions → ``engines.portfolio.core.Ledger.apply``;
   * ``engines``: the engines' own objects (``RiskEngine``, ``StrategyEngine``,
     ``PortfolioEngine``) each on its ``MemoryBus`` and one ``ManualClock``, driven by
     ``engines.shell.driver.DeterministicDriver`` and routed as ``engines/backtesting/replay.py``
     routes (each published message to every engine whose inputs match, breadth first): decode,
     checks, every published transition and fill, Portfolio's ``positions``/``pnl`` per fill,
     Risk re-reading the positions. The intents enter on ``intents.bench``. Each message is
     its own batch (one handler call, then the engine's ``after_batch``): the worst case, a
     consumer woken for every message;
   * ``engines, batched``: the same engines, fed ``--block`` orders at a time (their intents
     as one batch, then their prints), each hop's messages handed to each engine as one batch
     — what a consumer takes in one wake-up when messages queue up under load. Portfolio then
     publishes the book once per batch of fills (latest-value streams), not once per fill.

   Reported as orders per second of wall time and of the process's CPU time (``--pin N`` pins
   the process to core N first).

Prints a table and writes ``loadtest/results/trading_bench.json`` (``report.write_results``)
with the CPU it ran on. About 20 s. Limits: memory storage, not PostgreSQL (its writes are
batched off the hot path in the platform); no WebSocket hub in the measured path.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import time
from collections import deque
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np

from engines.portfolio.core import Ledger, parse_account
from engines.portfolio.service import PortfolioConfig, PortfolioEngine
from engines.risk.pretrade import AccountBook, Approved, MarketState, check
from engines.risk.service import RiskConfig, RiskEngine
from engines.shell.driver import DeterministicDriver
from engines.shell.instruments import load_instruments
from engines.shell.lifecycle import Engine
from engines.strategy.algos import Execution
from engines.strategy.core import Strategy, StrategyContext
from engines.strategy.service import DEFAULT_STRATEGIES, StrategyConfig, StrategyEngine
from engines.strategy.venue import SimulatedVenue
from loadtest.pretrade_bench import cpu_model, summary
from loadtest.report import RESULTS, aligned, write_results
from protocol.channels import ChannelPattern
from protocol.records import (
    Bar,
    Fill,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Trade,
    encode,
)
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock, SystemClock

T = TypeVar("T")

SIGNAL_TARGET_P99_US = 1_000.0
ORDERS_TARGET_PER_S = 10_000.0
#: 2013-10-07 09:30 New York, the replay's day
START_NS = 1381152600_000_000_000
MINUTE_NS = 60_000_000_000
#: intents 50 ms of event time apart: 20/s, under Risk's default 50/s rate limit
INTENT_SPACING_NS = 50_000_000
BENCH = "bench"
PRICE = 168.0


class FlipParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    quantity: int = 100


class Flip(Strategy[FlipParams]):
    """Targets +quantity, then −quantity, … on each bar: every bar is a signal to trade."""

    params_type = FlipParams

    def __init__(self, name: str, params: FlipParams) -> None:
        super().__init__(name, params)
        self.sign = 1

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        ctx.target(bar.symbol, self.sign * self.params.quantity, reason="flip")
        self.sign = -self.sign


def strategies_json() -> str:
    """The default strategies plus ``Flip`` as ``bench`` on SPY, account ``paper``."""
    bench = {"name": BENCH, "path": f"{__name__}:Flip", "account": "paper", "symbols": ["SPY"]}
    return json.dumps([*json.loads(DEFAULT_STRATEGIES), bench], separators=(",", ":"))


def bar_at(i: int) -> Bar:
    """Minute bar ``i`` of a deterministic SPY walk (±0.05 around ``PRICE``)."""
    close = PRICE + 0.05 * ((i * 7919) % 3 - 1)
    end = START_NS + (i + 1) * MINUTE_NS
    return Bar(symbol="SPY", spec="1m", start_ns=end - MINUTE_NS, end_ns=end, open=close,
               high=close + 0.02, low=close - 0.02, close=close, volume=10_000.0,
               dollar_volume=close * 10_000.0, trades=100)  # fmt: skip


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop, as the platform does (the standard loop where it is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


# ── 1. signal → order ────────────────────────────────────────────────────────────────────────


async def signal_to_order(
    signals: int, warmup: int, risk_config: RiskConfig | None = None
) -> dict[str, Any]:
    """Latency of bar → ``submitted`` order on the bus, Strategy and Risk running embedded
    (``risk_config``: Risk's defaults unless given)."""
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    strategy = StrategyEngine(
        StrategyConfig(strategies=strategies_json(), warmup_bars=0), bus=bus, clock=clock
    )
    risk = RiskEngine(risk_config or RiskConfig(), bus=bus, clock=clock)
    orders = bus.subscribe("orders.paper")
    loop = asyncio.get_running_loop()
    submitted: asyncio.Future[tuple[Envelope, int]] = loop.create_future()
    filled: asyncio.Future[None] = loop.create_future()

    async def watch() -> None:
        nonlocal submitted, filled
        while batch := await orders.next_batch(1024):
            seen = time.perf_counter_ns()
            for envelope in batch:
                order = envelope.payload
                if order["strategy"] != BENCH:
                    continue
                if order["status"] == "submitted" and not submitted.done():
                    submitted.set_result((envelope, seen))
                elif order["status"] == "denied" and not submitted.done():
                    submitted.set_exception(RuntimeError(f"denied: {order['reason']}"))
                elif order["status"] == "filled" and not filled.done():
                    filled.set_result(None)

    started = time.perf_counter()
    await risk.start()
    await strategy.start()
    start_s = time.perf_counter() - started
    watcher = asyncio.create_task(watch())
    first = Trade(symbol="SPY", event_ns=START_NS, receive_ns=START_NS, price=PRICE, size=1.0)
    await bus.publish("trades.SPY", encode(first), event_ns=START_NS)  # Risk's reference price
    bus_ns = np.empty(signals, dtype=np.int64)
    seen_ns = np.empty(signals, dtype=np.int64)
    book = risk.books["paper"]
    cpu_started = time.process_time()
    try:
        for i in range(warmup + signals):
            bar = bar_at(i)
            began = time.perf_counter_ns()
            sent = await bus.publish("bars.1m.SPY", encode(bar), event_ns=bar.end_ns)
            envelope, seen = await asyncio.wait_for(submitted, 10)
            if i >= warmup:
                bus_ns[i - warmup] = envelope.publish_ns - sent.publish_ns
                seen_ns[i - warmup] = seen - began
            submitted = loop.create_future()
            # untimed: a print fills the order, Risk releases it
            t = bar.end_ns + 1_000_000
            trade = Trade(symbol="SPY", event_ns=t, receive_ns=t, price=bar.close, size=10_000.0)
            await bus.publish("trades.SPY", encode(trade), event_ns=t)
            await asyncio.wait_for(filled, 10)
            filled = loop.create_future()
            while book.pending:
                await asyncio.sleep(0)
        cpu_s = time.process_time() - cpu_started
        health = {e.name: e.health() for e in (strategy, risk)}
    finally:
        orders.close()
        watcher.cancel()
        await strategy.stop()
        await risk.stop()
        await bus.close()
    for name, h in health.items():
        if h["errors"] or h["bad_input"]:
            raise RuntimeError(f"{name} reported errors during the run: {h}")
    return {
        "signals": signals,
        "warmup": warmup,
        "engines_start_s": start_s,
        "bus_stamps": summary(bus_ns),
        "at_subscriber": summary(seen_ns),
        "cpu_s": cpu_s,
        "approved": risk.approved_counts["paper"],
        "denied": dict(risk.denial_counts["paper"]),
    }


# ── 2. orders/s through risk + venue + ledger ───────────────────────────────────────────────


def intents(n: int, quantity: int = 100) -> list[Order]:
    """Market orders on SPY, buy/sell alternating, ``INTENT_SPACING_NS`` apart."""
    return [
        Order(
            client_order_id=f"{BENCH}-{i}", account="paper", strategy=BENCH, symbol="SPY",
            side=OrderSide.BUY if i % 2 == 0 else OrderSide.SELL, type=OrderType.MARKET,
            quantity=Decimal(quantity), status=OrderStatus.INITIALIZED,
            event_ns=START_NS + i * INTENT_SPACING_NS, intent_id=f"intent-{BENCH}-{i}",
        )
        for i in range(n)
    ]  # fmt: skip


def print_after(order: Order) -> Trade:
    """The trade print that fills ``order`` (1 ms after it, big enough for all of it)."""
    t = order.event_ns + 1_000_000
    return Trade(symbol="SPY", event_ns=t, receive_ns=t, price=PRICE, size=10_000.0)


def through_cores(batch: list[Order]) -> tuple[float, float, Ledger]:
    """(wall s, CPU s, ledger) of ``batch`` through check → venue → ledger, the cores alone."""
    instruments = load_instruments()
    limits = RiskConfig().limits()
    book = AccountBook(
        "paper", limits, instruments, MarketState(last_price={"SPY": Decimal(PRICE)})
    )
    execution = Execution(SimulatedVenue(StrategyConfig().venue(), instruments), instruments)
    ledger = Ledger(parse_account("paper:1000000:USD"), instruments)
    prints = [print_after(o) for o in batch]
    wall, cpu = time.perf_counter(), time.process_time()
    for order, trade in zip(batch, prints, strict=True):
        decision = check(order, book)
        if not isinstance(decision, Approved):
            raise RuntimeError(f"{order.client_order_id} denied: {decision}")
        book.record_submitted(
            order.client_order_id, order.symbol, order.side, decision.quantity, decision.price,
            order.event_ns,
        )  # fmt: skip
        submitted = msgspec.structs.replace(order, status=OrderStatus.SUBMITTED)
        events = [*execution.submit(submitted), *execution.on_trade(trade)]
        for event in events:
            if isinstance(event, Fill):
                ledger.apply(event)
            else:
                book.on_order(event)
    return time.perf_counter() - wall, time.process_time() - cpu, ledger


class _Routed:
    """Risk, Portfolio and Strategy under ``DeterministicDriver``, routed as the backtest's
    replay routes (every published message to each engine whose inputs match, breadth first)."""

    def __init__(self) -> None:
        self.clock = ManualClock(START_NS)
        strategies = json.dumps([{"name": BENCH, "path": f"{__name__}:Flip", "account": "paper",
                                  "symbols": ["SPY"]}])  # fmt: skip
        self.risk = RiskEngine(RiskConfig(name="bench-risk"), bus=self._bus(), clock=self.clock)
        self.portfolio = PortfolioEngine(
            PortfolioConfig(name="bench-portfolio"), bus=self._bus(), clock=self.clock
        )
        self.strategy = StrategyEngine(
            StrategyConfig(name="bench-strategy", strategies=strategies, warmup_bars=0),
            bus=self._bus(), clock=self.clock,
        )  # fmt: skip
        engines: list[Engine[Any]] = [self.risk, self.portfolio, self.strategy]
        self.drivers = [
            (DeterministicDriver(e), [ChannelPattern.parse(p) for p in e.inputs()]) for e in engines
        ]
        self._routes: dict[str, list[DeterministicDriver]] = {}
        self.fills = 0
        #: CPU ns (this thread's) per (engine, input channel kind), outputs collected included
        self.spent_ns: dict[tuple[str, str], int] = {}

    def _bus(self) -> MemoryBus:
        return MemoryBus(clock=self.clock, max_pending=1 << 20)

    def routes(self, channel: str) -> list[DeterministicDriver]:
        found = self._routes.get(channel)
        if found is None:
            found = self._routes[channel] = [
                d for d, patterns in self.drivers if any(p.matches(channel) for p in patterns)
            ]
        return found

    async def deliver(self, envelope: Envelope) -> None:
        queue = deque([envelope])
        while queue:
            message = queue.popleft()
            kind = message.channel.rpartition(".")[0]
            for driver in self.routes(message.channel):
                began = time.thread_time_ns()
                produced = await driver.run([message])
                where = (driver.engine.name.removeprefix("bench-"), kind)
                self.spent_ns[where] = self.spent_ns.get(where, 0) + time.thread_time_ns() - began
                self.fills += sum(out.channel.startswith("fills.") for out in produced)
                queue.extend(produced)

    async def deliver_batch(self, envelopes: list[Envelope]) -> None:
        """``envelopes`` as one batch per engine, then what they publish, hop by hop: each
        engine gets the messages of a hop routed to it in one ``run`` (one consumer batch)."""
        hop = envelopes
        while hop:
            batches: dict[int, tuple[DeterministicDriver, list[Envelope]]] = {}
            for message in hop:
                for driver in self.routes(message.channel):
                    batches.setdefault(id(driver), (driver, []))[1].append(message)
            hop = []
            for driver, _ in self.drivers:
                found = batches.get(id(driver))
                if found is None:
                    continue
                began = time.thread_time_ns()
                produced = await driver.run(found[1])
                where = (driver.engine.name.removeprefix("bench-"), "batch")
                self.spent_ns[where] = self.spent_ns.get(where, 0) + time.thread_time_ns() - began
                self.fills += sum(out.channel.startswith("fills.") for out in produced)
                hop.extend(produced)


async def through_engines(batch: list[Order], block: int = 1) -> tuple[float, float, _Routed]:
    """(wall s, CPU s, pipeline) of ``batch`` as ``intents.bench`` messages through the engines:
    one message per consumer batch (``block`` 1), or ``block`` orders' intents as one batch,
    then their prints as one."""
    pipeline = _Routed()
    first = Trade(symbol="SPY", event_ns=START_NS - 1, receive_ns=START_NS - 1, price=PRICE,
                  size=1.0)  # fmt: skip
    await pipeline.deliver(_envelope("trades.SPY", first))  # Risk's last price (market orders)
    messages = []
    for order in batch:
        messages.append(_envelope(f"intents.{BENCH}", order))
        messages.append(_envelope("trades.SPY", print_after(order)))
    blocks = [
        (
            [_envelope(f"intents.{BENCH}", o) for o in batch[i : i + block]],
            [_envelope("trades.SPY", print_after(o)) for o in batch[i : i + block]],
        )
        for i in range(0, len(batch), block)
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    if block == 1:
        for envelope in messages:
            await pipeline.deliver(envelope)
    else:
        for intents_block, prints in blocks:
            await pipeline.deliver_batch(intents_block)
            await pipeline.deliver_batch(prints)
    return time.perf_counter() - wall, time.process_time() - cpu, pipeline


def _envelope(channel: str, record: Order | Trade) -> Envelope:
    return Envelope(channel, 0, "bench", record.event_ns, record.event_ns, encode(record))


def throughput(
    orders: int, block: int = 64
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The three ways' rates, and the engines' CPU time per order by (engine, input) in µs
    (one message per batch)."""
    batch = intents(orders)
    through_cores(intents(min(orders, 2_000)))  # warm caches
    wall, cpu, ledger = through_cores(batch)
    if ledger.fills != orders:
        raise RuntimeError(f"cores: {ledger.fills} fills for {orders} orders")
    rows = {"cores (check, venue, ledger)": _rate(orders, wall, cpu)}
    wall, cpu, pipeline = run_loop(lambda: through_engines(batch))
    if pipeline.fills != orders or pipeline.portfolio.ledgers["paper"].fills != orders:
        raise RuntimeError(f"engines: {pipeline.fills} fills for {orders} orders")
    rows["engines (DeterministicDriver)"] = _rate(orders, wall, cpu)
    spent = sorted(pipeline.spent_ns.items(), key=lambda item: -item[1])
    breakdown = {f"{engine} ← {kind}": ns / orders / 1e3 for (engine, kind), ns in spent}
    wall, cpu, batched = run_loop(lambda: through_engines(batch, block))
    if batched.fills != orders or batched.portfolio.ledgers["paper"].fills != orders:
        raise RuntimeError(f"engines, batched: {batched.fills} fills for {orders} orders")
    rows[f"engines, batched ({block} orders a batch)"] = _rate(orders, wall, cpu)
    return rows, breakdown


def _rate(orders: int, wall: float, cpu: float) -> dict[str, float]:
    return {
        "orders": orders,
        "wall_s": wall,
        "cpu_s": cpu,
        "orders_per_s": orders / wall,
        "orders_per_cpu_s": orders / cpu if cpu > 0 else float("inf"),
        "us_per_order": wall / orders * 1e6,
    }


# ── report ───────────────────────────────────────────────────────────────────────────────────


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def document(
    latency: dict[str, Any], rates: dict[str, dict[str, float]], breakdown: dict[str, float]
) -> dict[str, Any]:
    """The JSON written: both figures, their targets and whether they pass, the machine."""
    p99 = latency["bus_stamps"]["p99_us"]
    best = max(r["orders_per_s"] for r in rates.values())
    return {
        "signal_to_order": latency,
        "signal_to_order_target_p99_us": SIGNAL_TARGET_P99_US,
        "signal_to_order_passes": p99 <= SIGNAL_TARGET_P99_US,
        "throughput": rates,
        "throughput_target_orders_per_s": ORDERS_TARGET_PER_S,
        "throughput_passes": {
            n: r["orders_per_s"] >= ORDERS_TARGET_PER_S for n, r in rates.items()
        },
        "throughput_best_orders_per_s": best,
        "engines_us_per_order": breakdown,
        "machine": machine(),
    }


def table(doc: dict[str, Any]) -> str:
    lat = doc["signal_to_order"]
    rows = [
        [f"signal → submitted, {name}", f"{s['p50_us']:.0f} µs", f"{s['p99_us']:.0f} µs",
         f"≤ {SIGNAL_TARGET_P99_US:.0f} µs p99"]
        for name, s in (("bus stamps", lat["bus_stamps"]), ("at subscriber", lat["at_subscriber"]))
    ]  # fmt: skip
    rows += [
        [f"orders/s, {name}", f"{r['orders_per_s']:,.0f}", f"{r['orders_per_cpu_s']:,.0f}/cpu-s",
         f"≥ {ORDERS_TARGET_PER_S:,.0f}/s"]
        for name, r in doc["throughput"].items()
    ]  # fmt: skip
    return aligned(["figure", "p50 / wall", "p99 / cpu", "target"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--signals", type=int, default=2_000, help="timed signals")
    parser.add_argument("--warmup", type=int, default=200, help="signals before timing")
    parser.add_argument("--orders", type=int, default=10_000, help="orders per throughput run")
    parser.add_argument("--block", type=int, default=64, help="orders per batch, batched way")
    parser.add_argument("--pin", type=int, default=None, help="pin the process to this core")
    parser.add_argument("--out", type=Path, default=RESULTS / "trading_bench.json")
    args = parser.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    started = dt.datetime.now(dt.UTC)
    latency = run_loop(lambda: signal_to_order(args.signals, args.warmup))
    doc = document(latency, *throughput(args.orders, args.block))
    print(table(doc))
    print("engines, CPU µs per order by (engine ← input):")
    print(
        aligned(["where", "µs"], [[k, f"{v:.1f}"] for k, v in doc["engines_us_per_order"].items()])
    )
    m = doc["machine"]
    print(f"cpu: {m['cpu']} (cores {m['affinity']}, load average {m['load_average_1m']:.1f})")
    print(f"wrote {write_results('trading_bench', doc, started, out=args.out)}")


if __name__ == "__main__":
    main()

"""Event-driven backtest: history through the live Strategy, Risk and Portfolio engines.

The engines are the live platform's own classes (``StrategyEngine`` with its execution and
simulated venue, ``RiskEngine``'s pre-trade checks, ``PortfolioEngine``'s ledger), each on its own
``MemoryBus`` and one ``ManualClock``, each driven by ``engines.shell.driver.DeterministicDriver``:
the same decoding, handlers and bad-input rules as live. This module is the composition root of a
backtest, as ``engines/shell/platform.py`` is of the live platform, so it imports the engines'
``service`` modules (the one exception ``tests/test_layering.py`` allows).

Routing: a message goes to every engine whose ``inputs()`` match its channel, in a fixed order
(Risk, Portfolio, Strategy); what each publishes is routed the same way, breadth first, until
nothing is left; then the next recorded message. So an intent reaches Risk, its approval reaches
Strategy's execution (and Risk's pending book), fills reach Portfolio, before the next print —
an execution algorithm's children too (``EventRun.algo``): each is an intent Risk checks before
the venue sees it, as live.

Market data: each bar becomes four trade prints on ``trades.<SYM>`` (``core.print_path``:
O→H→L→C, or O→L→H→C when the open is nearer the low; each carries a quarter of the bar's volume)
and the bar itself on ``bars.<spec>.<SYM>`` at its end. ``next_open``: the prints lie inside the
bar's span, before the bar, so an order made on bar *t* (event time = its end) fills on bar
*t+1*'s prints (the open first). ``close``: the closing print comes right after the bar at its
end time (a market-on-close order joins it). The equity is Portfolio's, sampled after each bar
time (marked at the close); conservation (``realized + unrealized − fees == equity − cash₀``,
and cash = cash₀ − Σ signed notional − Σ fees of the fills) is checked at every sample.

A strategy callback that raises fails the run (``StrategyFailed`` with the logged traceback):
a backtest must not quietly carry on after its strategy broke. Costs: fees and slippage in bps
(``EventRun``), the venue's (slippage on taker fills, against the side: the vectorized mode's, so
the two agree trade for trade with it). Limits: one account; risk limits are Risk's defaults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np

from engines.backtesting.core import BarArrays, FillRule, print_path, sha256_hex
from engines.portfolio.service import PortfolioConfig, PortfolioEngine
from engines.risk.service import RiskConfig, RiskEngine
from engines.shell.driver import DeterministicDriver
from engines.shell.lifecycle import Engine
from engines.strategy.service import StrategyConfig, StrategyEngine
from protocol.channels import ChannelPattern
from protocol.records import Bar, Fill, Order, OrderSide, OrderStatus, Trade
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock

__all__ = [
    "MESSAGES_PER_BAR",
    "Cancelled",
    "EventResult",
    "EventRun",
    "Progress",
    "StrategyFailed",
    "market_envelopes",
    "run_event",
]

#: Portfolio republishes on marks at most once a day of event time: the run samples the equity
#: itself, and every fill still publishes the book (what Risk's limits read).
MARK_THROTTLE_MS = 86_400_000
#: a bar is replayed as its four prints and itself
MESSAGES_PER_BAR = 5
#: ``progress(fraction done, simulated ns, fills so far)``
Progress = Callable[[float, int, int], None]


class Cancelled(Exception):
    """The run was cancelled (its job's ``DELETE``)."""


class StrategyFailed(Exception):
    """A strategy callback (or another engine's handler) raised; the message is the log."""


class ConservationError(AssertionError):
    """The ledger's identity or the cash of the fills broke at an event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRun:
    """One event-driven run: which strategy (``module:Class``) with which parameters."""

    strategy_path: str
    params: dict[str, Any] = field(default_factory=dict)
    strategy_name: str = "backtest"
    account: str = "paper"
    cash: Decimal = Decimal(1_000_000)
    fill: FillRule = FillRule.NEXT_OPEN
    fee_bps: float = 0.0
    #: the venue's slippage on taker fills, bps against the side (the vectorized mode's)
    slippage_bps: float = 0.0
    latency_ms: float = 0.0
    fee_decimals: int = 12
    run_id: str = "run"
    #: the strategy's execution algorithm (``{"kind": "twap"|"pov", ...}``, ``AlgoSpec``'s
    #: fields), ``None`` for plain orders; its children go through Risk as live
    algo: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class EventResult:
    fills: list[Fill]
    orders: list[Order]  # every intent and order transition published, in order
    equity_ns: np.ndarray[Any, np.dtype[np.int64]]
    equity: list[Decimal]
    hash: str

    def equity_floats(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([float(e) for e in self.equity])


def market_envelopes(bars: Sequence[BarArrays], fill: FillRule) -> Iterator[tuple[Envelope, bool]]:
    """The recorded market: ``(envelope, sample equity after it)`` in replay order (event time,
    then bar before closing print before other prints, then symbol, then print number),
    ``MESSAGES_PER_BAR`` per bar. The order is sorted up front as arrays; each envelope is made
    as the replay reaches it, so a long history is never held as objects (nor walked by the
    garbage collector: holding them made the run collect its whole heap). The payloads are the
    records themselves, what the engines' decoding gives back unchanged: the history was never
    JSON, so nothing encodes it to decode it again."""
    close_fill = fill is FillRule.CLOSE
    # per message: (time, rank, symbol, print number 0-3 or 4 for the bar), then which series
    times, ranks, symbol_ranks, number, series_of, row_of = [], [], [], [], [], []
    symbol_rank = {s: r for r, s in enumerate(sorted({b.symbol for b in bars}))}
    for which, series in enumerate(bars):
        n = len(series)
        start, end = series.start_ns.astype(np.int64), series.end_ns.astype(np.int64)
        span = end - start
        at = np.stack((start, start + span // 4, start + span // 2, end - 1, end), axis=1)
        rank = np.full((n, MESSAGES_PER_BAR), 2, dtype=np.int64)
        rank[:, 4] = 0  # the bar, at its end
        if close_fill:  # the closing print comes right after the bar, at its end
            at[:, 3], rank[:, 3] = end, 1
        times.append(at.ravel())
        ranks.append(rank.ravel())
        size = n * MESSAGES_PER_BAR
        symbol_ranks.append(np.full(size, symbol_rank[series.symbol], dtype=np.int64))
        number.append(np.tile(np.arange(MESSAGES_PER_BAR, dtype=np.int64), n))
        series_of.append(np.full(size, which, dtype=np.int64))
        row_of.append(np.repeat(np.arange(n, dtype=np.int64), MESSAGES_PER_BAR))
    if not times:
        return
    keys = [np.concatenate(k) for k in (number, symbol_ranks, ranks, times)]
    order = np.lexsort(keys).tolist()  # the last key is the first sort key
    t_of, k_of = keys[3].tolist(), keys[0].tolist()
    which_of, i_of = np.concatenate(series_of).tolist(), np.concatenate(row_of).tolist()
    # each series' fields as Python lists (one conversion, not one per element)
    columns = [
        (b.symbol, f"trades.{b.symbol}", f"bars.{b.spec}.{b.symbol}", b.spec,
         b.start_ns.tolist(), b.end_ns.tolist(), b.open.tolist(), b.high.tolist(),
         b.low.tolist(), b.close.tolist(), b.volume.tolist(),
         print_path(b.open, b.high, b.low, b.close).T.tolist())
        for b in bars
    ]  # fmt: skip
    for j in order:
        t, k, i = t_of[j], k_of[j], i_of[j]
        symbol, trades, bar_channel, spec, starts, ends, o, h, lo, c, v, path = columns[which_of[j]]
        if k == 4:
            bar = Bar(symbol=symbol, spec=spec, start_ns=starts[i], end_ns=ends[i], open=o[i],
                      high=h[i], low=lo[i], close=c[i], volume=v[i], dollar_volume=0.0,
                      trades=4)  # fmt: skip
            yield Envelope(bar_channel, 0, "history", t, t, bar), not close_fill
        else:  # each print carries a quarter of the bar's volume
            trade = Trade(symbol=symbol, event_ns=t, receive_ns=t, price=path[k][i],
                          size=v[i] / 4.0)  # fmt: skip
            yield Envelope(trades, 0, "history", t, t, trade), close_fill and k == 3


#: market messages between two writes of the engines' records in a run (each engine holds
#: them meanwhile, as a live consumer holds a batch's; reads see held rows)
WRITE_EVERY = 4096


class _ErrorLog(logging.Handler):
    """Collects the errors an engine logs (with tracebacks) during a run."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _Pipeline:
    def __init__(self, run: EventRun, symbols: list[str], spec: str, start_ns: int) -> None:
        self.run = run
        self.clock = ManualClock(start_ns)
        strategies = json.dumps([{
            "name": run.strategy_name, "path": run.strategy_path, "account": run.account,
            "symbols": symbols, "params": run.params, "bar_spec": spec, "algo": run.algo,
        }])  # fmt: skip
        prefix = f"bt-{run.run_id}"
        self.strategy = StrategyEngine(
            StrategyConfig(
                name=f"{prefix}-strategy", strategies=strategies, warmup_bars=0,
                taker_fee_bps=run.fee_bps, maker_fee_bps=run.fee_bps,
                fee_decimals=run.fee_decimals, latency_ms=run.latency_ms,
                slippage_bps=run.slippage_bps,
            ),
            bus=self._bus(), clock=self.clock,
        )  # fmt: skip
        self.risk = RiskEngine(
            RiskConfig(name=f"{prefix}-risk", accounts=(run.account,)),
            bus=self._bus(),
            clock=self.clock,
        )
        self.portfolio = PortfolioEngine(
            PortfolioConfig(
                name=f"{prefix}-portfolio",
                accounts=(f"{run.account}:{run.cash}:USD",),
                mark_throttle_ms=MARK_THROTTLE_MS,
            ),
            bus=self._bus(),
            clock=self.clock,
        )
        self.engines: list[Engine[Any]] = [self.risk, self.portfolio, self.strategy]
        # the replay holds the engines' record writes itself (``hold_writes``)
        self.drivers = [DeterministicDriver(e, hold_writes=False) for e in self.engines]
        self.patterns = [
            [ChannelPattern.parse(p) for p in engine.inputs()] for engine in self.engines
        ]
        self._routes: dict[str, list[DeterministicDriver]] = {}
        self.errors = _ErrorLog()
        for engine in self.engines:
            engine.log.addHandler(self.errors)

    def _bus(self) -> MemoryBus:
        return MemoryBus(clock=self.clock, epoch="backtest", max_pending=1 << 20)

    def hold_writes(self) -> None:
        """Hold every engine's record writes (``Engine.write_hold``) until ``release_writes``."""
        for engine in self.engines:
            engine.write_hold.hold()

    def release_writes(self) -> None:
        """Write what the engines appended since ``hold_writes``: one store call per stream."""
        for engine in self.engines:
            engine.write_hold.release()

    def close(self) -> None:
        for engine in self.engines:
            engine.log.removeHandler(self.errors)

    def routes(self, channel: str) -> list[DeterministicDriver]:
        found = self._routes.get(channel)
        if found is None:
            found = self._routes[channel] = [
                driver
                for driver, patterns in zip(self.drivers, self.patterns, strict=True)
                if any(p.matches(channel) for p in patterns)
            ]
        return found

    async def deliver(self, envelope: Envelope, fills: list[Fill], orders: list[Order]) -> None:
        queue = deque([envelope])
        while queue:
            message = queue.popleft()
            for driver in self.routes(message.channel):
                produced = await driver.run([message])
                for out in produced:
                    if out.channel.startswith("fills."):
                        fills.append(msgspec.convert(out.payload, Fill))
                    elif out.channel.startswith(("intents.", "orders.")):
                        orders.append(msgspec.convert(out.payload, Order))
                queue.extend(produced)
        if self.errors.lines:
            raise StrategyFailed("\n".join(self.errors.lines))


async def _replay(
    run: EventRun,
    bars: Sequence[BarArrays],
    progress: Progress | None,
    cancel: threading.Event | None,
) -> EventResult:
    symbols = sorted({b.symbol for b in bars})
    specs = {b.spec for b in bars}
    if len(specs) != 1:
        raise ValueError(f"one bar spec per run, got {sorted(specs)}")
    start = min((int(b.start_ns.min()) for b in bars if len(b)), default=0)  # the first print
    messages = sum(len(b) for b in bars) * MESSAGES_PER_BAR
    pipeline = _Pipeline(run, symbols, specs.pop(), start)
    fills: list[Fill] = []
    orders: list[Order] = []
    equity: dict[int, Decimal] = {}
    cash = run.cash
    counted = 0
    step = max(1, messages // 200)
    pipeline.hold_writes()
    try:
        for i, (envelope, sample) in enumerate(market_envelopes(bars, run.fill)):
            if cancel is not None and i % 64 == 0 and cancel.is_set():
                raise Cancelled(f"cancelled at {envelope.event_ns}")
            if i % WRITE_EVERY == 0:  # the engines' records, written in a few big batches
                pipeline.release_writes()
                pipeline.hold_writes()
            await pipeline.deliver(envelope, fills, orders)
            if len(fills) > counted:
                for fill in fills[counted:]:
                    notional = fill.quantity * fill.price
                    cash -= (notional if fill.side is OrderSide.BUY else -notional) + fill.fee
                counted = len(fills)
            if sample:
                equity[envelope.event_ns] = _checked_equity(
                    pipeline.portfolio, run.account, cash, envelope.event_ns
                )
            if progress is not None and (i % step == 0 or i == messages - 1):
                progress((i + 1) / messages, envelope.event_ns, len(fills))
    finally:
        pipeline.release_writes()
        pipeline.close()
    times = np.array(sorted(equity), dtype=np.int64)
    values = [equity[t] for t in times.tolist()]
    digest = sha256_hex(
        [msgspec.json.encode(f) for f in fills]
        + [f"{t}:{v}".encode() for t, v in zip(times.tolist(), values, strict=True)]
    )
    return EventResult(fills, orders, times, values, digest)


def _checked_equity(portfolio: PortfolioEngine, account: str, cash: Decimal, t: int) -> Decimal:
    totals = portfolio.ledgers[account].headline(portfolio.marks)
    if totals.total_pnl != totals.equity - totals.starting_cash:
        raise ConservationError(
            f"realized + unrealized - fees = {totals.total_pnl} but equity - cash0 = "
            f"{totals.equity - totals.starting_cash} at {t}"
        )
    if totals.cash != cash:
        raise ConservationError(f"ledger cash {totals.cash} but the fills say {cash} at {t}")
    return totals.equity


def run_event(
    run: EventRun,
    bars: Sequence[BarArrays],
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> EventResult:
    """Replay ``bars`` (one ``BarArrays`` per symbol, one spec) through the engines; blocking
    (its own event loop: call it from a worker thread)."""
    return asyncio.run(_replay(run, bars, progress, cancel))


def denied(orders: list[Order]) -> list[Order]:
    return [o for o in orders if o.status is OrderStatus.DENIED]

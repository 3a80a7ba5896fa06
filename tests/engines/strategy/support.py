"""What the strategy engine's service tests share: SPY minute bars from the bundled Lean file as
bus envelopes, a print after each bar to fill against, a stand-in for Risk, ``TargetOnce``
(a strategy that asks for one position on its first bar: what an execution algorithm works),
``Ladder`` (resting limits) and ``Alarm`` (a timer and no ``on_trade``)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from engines.marketdata import feeds
from engines.shell.driver import DeterministicDriver
from engines.strategy.core import Strategy, StrategyContext
from engines.strategy.service import StrategyConfig, StrategyEngine
from protocol.records import Bar, OrderSide, OrderType, encode
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock

MINUTE = 60_000_000_000
MA = "engines.strategy.strategies:MovingAverageCross"
GUARD = "engines.strategy.strategies:VpinGuard"
STRATEGIES = json.dumps([
    {"name": "ma_cross", "path": MA, "params": {"fast": 3, "slow": 8, "quantity": 100,
                                                "atr_period": 5, "atr_stop": 2.0}},
    {"name": "vpin_guard", "path": GUARD, "params": {"quantity": 50, "alert_fraction": 0.2}},
])  # fmt: skip


def spy_bars(count: int, first: int = 0) -> list[Bar]:
    """Lean's own 1-minute SPY bars of 2013-10-07 from the ``first``-th on."""
    day = feeds.lean_days()[0]
    lean = feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(day))
    return [
        Bar(symbol="SPY", spec="1m", start_ns=int(lean.start_ns[i]),
            end_ns=int(lean.start_ns[i]) + MINUTE, open=float(lean.open[i]),
            high=float(lean.high[i]), low=float(lean.low[i]), close=float(lean.close[i]),
            volume=float(lean.volume[i]), dollar_volume=0.0, trades=1)
        for i in range(first, first + count)
    ]  # fmt: skip


def market(bars: list[Bar]) -> list[Envelope]:
    """Each bar, then a print at its close one microsecond after its end (what fills orders)."""
    out: list[Envelope] = []
    for bar in bars:
        t = bar.end_ns
        out.append(Envelope("bars.1m.SPY", len(out) + 1, "e", t, t, encode(bar)))
        trade = {"s": "SPY", "t": t + 1_000, "r": t + 1_000, "p": bar.close, "q": 10_000.0}
        out.append(Envelope("trades.SPY", len(out) + 1, "e", t + 1_000, t + 1_000, trade))
    return out


def approved(intent: Envelope) -> Envelope:
    """Risk's answer to an intent, as the stand-in gives it: the order, ``submitted``."""
    payload: dict[str, Any] = {**intent.payload, "status": "submitted"}
    return Envelope(f"orders.{payload['account']}", intent.seq, "risk", intent.event_ns,
                    intent.publish_ns, payload)  # fmt: skip


def engine(config: StrategyConfig | None = None) -> StrategyEngine:
    clock = ManualClock()
    config = config or StrategyConfig(strategies=STRATEGIES, warmup_bars=0)
    return StrategyEngine(config, bus=MemoryBus(clock=clock), clock=clock)


async def drive(strategy: StrategyEngine, recorded: list[Envelope]) -> list[Envelope]:
    """Run ``recorded`` through the engine under the deterministic driver, answering each
    intent as Risk would (at once); every envelope the engine published, in order."""
    driver = DeterministicDriver(strategy)
    outputs: list[Envelope] = []
    for envelope in recorded:
        pending = [envelope]
        while pending:
            produced = await driver.run(pending)
            outputs += produced
            pending = [approved(e) for e in produced if e.channel.startswith("intents.")]
    return outputs


class TargetOnceParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    quantity: int = 100


class TargetOnce(Strategy[TargetOnceParams]):
    """Targets ``quantity`` on its first bar, then holds it (one parent order)."""

    params_type = TargetOnceParams

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        ctx.target(bar.symbol, self.params.quantity, reason="once")


TARGET_ONCE = f"{__name__}:TargetOnce"


class LadderParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    every: int = 3
    offset: str = "0.05"
    quantity: int = 10


class Ladder(Strategy[LadderParams]):
    """Every ``every``-th bar, a GTC buy limit ``offset`` below the close: orders that rest
    (working across many bars) and fill when a later print goes through them."""

    params_type = LadderParams

    def __init__(self, name: str, params: LadderParams) -> None:
        super().__init__(name, params)
        self.bars = 0

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        self.bars += 1
        if self.bars % self.params.every == 0:
            price = Decimal(repr(bar.close)) - Decimal(self.params.offset)
            ctx.order(bar.symbol, OrderSide.BUY, self.params.quantity, type=OrderType.LIMIT,
                      price=price, reason="ladder")  # fmt: skip


LADDER = f"{__name__}:Ladder"


class AlarmParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    after_ns: int = 1_000
    quantity: int = 10


class Alarm(Strategy[AlarmParams]):
    """Sets a timer ``after_ns`` after the end of its first bar and targets ``quantity`` when it
    fires. It defines no ``on_trade``: a print reaches it only through the engine's timer
    check."""

    params_type = AlarmParams

    def __init__(self, name: str, params: AlarmParams) -> None:
        super().__init__(name, params)
        self.armed = False

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        if not self.armed:
            self.armed = True
            ctx.set_timer("alarm", bar.end_ns + self.params.after_ns)

    def on_timer(self, name: str, ctx: StrategyContext) -> None:
        ctx.target("SPY", self.params.quantity, reason=name)


ALARM = f"{__name__}:Alarm"

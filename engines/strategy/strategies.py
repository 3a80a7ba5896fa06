"""The three strategies shipped and configured by default on the SPY replay (account ``paper``).

Each declares a *target* on every relevant event and lets the context turn it into the minimal
order (an unchanged target sends nothing), so warming up from stored bars and then trading live
is the same code: the first live bar after warm-up sends the target the history implies.

* ``MovingAverageCross`` — long when the fast SMA of closes is above the slow one, short (or
  flat, ``allow_short=false``) below; an ATR stop (Wilder ATR at entry × ``atr_stop`` away from
  the close at the crossover) takes the position flat until the next crossover.
* ``VpinGuard`` — holds ``quantity`` long and cuts it to ``alert_fraction`` of that while the
  VPIN engine's CDF alert (``vpin.<SYM>`` ``alert``) is on: Easley, López de Prado & O'Hara
  (2012, "Flow Toxicity and Liquidity in a High-Frequency World", RFS 25(5)) argue high VPIN
  preceded the 2010 flash crash, so a liquidity taker should cut exposure while flow is toxic.
  Trades once it has seen a bar of the symbol.
* ``MlBet`` — targets ``bet_size`` × ``max_quantity`` (bet clamped to [−1, 1], rounded toward
  zero to the lot) from ``ml.<model>.<SYM>`` when the ML engine publishes; no signal, no trade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from engines.strategy.core import (
    AverageTrueRange,
    SimpleMovingAverage,
    Strategy,
    StrategyContext,
    floor_to_lot,
)
from protocol.records import Bar, Signal

__all__ = ["MlBet", "MlBetParams", "MovingAverageCross", "MovingAverageCrossParams",
           "VpinGuard", "VpinGuardParams"]  # fmt: skip


class MovingAverageCrossParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fast: int = 10
    slow: int = 30
    quantity: int = 100
    atr_period: int = 14
    atr_stop: float = 3.0
    allow_short: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise ValueError("need 1 <= fast < slow")
        if self.quantity < 0 or self.atr_period < 1 or self.atr_stop <= 0:
            raise ValueError("need quantity >= 0, atr_period >= 1, atr_stop > 0")


@dataclass(slots=True)
class _Trend:
    fast: SimpleMovingAverage
    slow: SimpleMovingAverage
    atr: AverageTrueRange
    regime: int = 0
    entry: float = 0.0
    entry_atr: float | None = None
    stopped: bool = False


class MovingAverageCross(Strategy[MovingAverageCrossParams]):
    params_type = MovingAverageCrossParams

    def __init__(self, name: str, params: MovingAverageCrossParams) -> None:
        super().__init__(name, params)
        self.trends: dict[str, _Trend] = {}

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        p = self.params
        trend = self.trends.get(bar.symbol)
        if trend is None:
            trend = self.trends[bar.symbol] = _Trend(
                SimpleMovingAverage(p.fast), SimpleMovingAverage(p.slow),
                AverageTrueRange(p.atr_period),
            )  # fmt: skip
        fast, slow = trend.fast.update(bar.close), trend.slow.update(bar.close)
        atr = trend.atr.update(bar.high, bar.low, bar.close)
        if fast is None or slow is None:
            return
        regime = 1 if fast > slow else -1 if fast < slow else trend.regime
        if regime < 0 and not p.allow_short:
            regime = 0
        if regime != trend.regime:
            trend.regime, trend.entry, trend.entry_atr, trend.stopped = (
                regime,
                bar.close,
                atr,
                False,
            )
        elif trend.regime and trend.entry_atr is not None and not trend.stopped:
            distance = p.atr_stop * trend.entry_atr
            stop = trend.entry - distance if trend.regime > 0 else trend.entry + distance
            trend.stopped = bar.close <= stop if trend.regime > 0 else bar.close >= stop
        wanted = 0 if trend.stopped else trend.regime * p.quantity
        reason = "atr_stop" if trend.stopped else f"ma_cross fast={fast:.4f} slow={slow:.4f}"
        ctx.target(bar.symbol, wanted, reason=reason)


class VpinGuardParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    quantity: int = 100
    alert_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.quantity < 0 or not 0.0 <= self.alert_fraction <= 1.0:
            raise ValueError("need quantity >= 0 and alert_fraction in [0, 1]")


class VpinGuard(Strategy[VpinGuardParams]):
    params_type = VpinGuardParams

    def __init__(self, name: str, params: VpinGuardParams) -> None:
        super().__init__(name, params)
        self.alert: dict[str, bool] = {}
        self.seen: set[str] = set()

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        self.seen.add(bar.symbol)
        self._hold(bar.symbol, ctx)

    def on_signal(self, signal: Signal, ctx: StrategyContext) -> None:
        if signal.source != "vpin":
            return
        self.alert[signal.symbol] = bool(signal.values.get("alert"))
        if signal.symbol in self.seen:
            self._hold(signal.symbol, ctx)

    def _hold(self, symbol: str, ctx: StrategyContext) -> None:
        alert = self.alert.get(symbol, False)
        scale = Decimal(repr(self.params.alert_fraction)) if alert else Decimal(1)
        wanted = floor_to_lot(self.params.quantity * scale, ctx.instrument(symbol).lot)
        ctx.target(symbol, wanted, reason="vpin_alert" if alert else "vpin_clear")


class MlBetParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str = ""
    field: str = "bet_size"
    max_quantity: int = 100

    def __post_init__(self) -> None:
        if self.max_quantity < 0:
            raise ValueError("max_quantity must be >= 0")


class MlBet(Strategy[MlBetParams]):
    params_type = MlBetParams

    def on_signal(self, signal: Signal, ctx: StrategyContext) -> None:
        model = signal.source.removeprefix("ml.")
        if model == signal.source or (self.params.model and model != self.params.model):
            return
        bet = signal.values.get(self.params.field)
        if isinstance(bet, bool) or not isinstance(bet, int | float) or not math.isfinite(bet):
            return
        bet = max(-1.0, min(1.0, float(bet)))
        size = floor_to_lot(
            abs(Decimal(repr(bet))) * self.params.max_quantity, ctx.instrument(signal.symbol).lot
        )
        ctx.target(signal.symbol, size if bet >= 0 else -size, reason=f"ml {model} bet={bet:.4f}")

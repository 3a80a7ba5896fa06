"""A strategy that breaks, for the failure tests (configured by path, like any strategy)."""

from __future__ import annotations

from engines.strategy.core import Strategy, StrategyContext
from protocol.records import Bar


class Exploding(Strategy[object]):
    """Raises on its fifth bar."""

    def __init__(self, name: str, params: object) -> None:
        super().__init__(name, params)
        self.seen = 0

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> None:
        self.seen += 1
        if self.seen == 5:
            raise RuntimeError("boom in on_bar")

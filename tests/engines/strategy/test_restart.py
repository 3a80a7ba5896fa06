"""Crash-only restart of the strategy engine on real PostgreSQL: stopped mid-run and started again
on the same schema, it rebuilds its working orders (resting limits, a TWAP parent with its
children), positions and order sequence from the stored transitions, never reuses an order id,
and ends exactly where an uninterrupted run of the same input ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from engines.strategy.service import StrategyConfig, StrategyEngine
from protocol.records import Fill, Order, OrderStatus, decode
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock
from realtime.storage import Storage, StorageConfig
from tests.engines.strategy.support import LADDER, MA, approved, market, spy_bars
from tests.support import TEST_DSN, migrated_schema, until

#: a trend follower worked by TWAP (parents with children live across bars) and a ladder of
#: resting buy limits (working orders that fill later, or never)
STRATEGIES = json.dumps([
    {"name": "trend", "path": MA, "params": {"fast": 3, "slow": 8, "quantity": 300,
                                             "atr_period": 5, "atr_stop": 2.0},
     "algo": {"kind": "twap", "slices": 3, "interval_s": 150}},
    {"name": "ladder", "path": LADDER, "params": {"every": 3, "offset": "0.03", "quantity": 10}},
])  # fmt: skip


@pytest.fixture
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_strategy_restart") as name:
        yield name


class Run:
    """A started strategy engine on a MemoryBus with a stand-in for Risk (approving every
    intent), fed one recorded envelope at a time, each handled (round trip included) before
    the next; what it published is recorded."""

    def __init__(self, start_ns: int, schema: str | None) -> None:
        self.clock = ManualClock(start_ns)
        settings: dict[str, Any] = {"db_dsn": TEST_DSN, "db_schema": schema} if schema else {}
        config = StrategyConfig(strategies=STRATEGIES, warmup_bars=300, **settings)
        self.bus = MemoryBus(clock=self.clock)
        self.engine = StrategyEngine(config, bus=self.bus, clock=self.clock)
        self.intents = self.bus.subscribe("intents.*")
        self.outputs = self.bus.subscribe("fills.paper")
        self.published: list[Envelope] = []

    async def __aenter__(self) -> Run:
        await self.engine.start()
        self.risk = asyncio.create_task(self._risk())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.risk.cancel()
        await self.engine.stop()

    async def _risk(self) -> None:
        async for envelope in self.intents:
            self.published.append(envelope)
            answer = approved(envelope)
            await self.bus.publish(answer.channel, answer.payload, event_ns=envelope.event_ns)

    def settled(self) -> bool:
        return (
            self.engine.backlog() == 0
            and not self.intents.pending
            and all(o.status is not OrderStatus.INITIALIZED for o in self.engine.orders.values())
        )

    async def feed(self, recorded: list[Envelope]) -> None:
        for envelope in recorded:
            self.clock.set(envelope.publish_ns)
            await self.bus.publish(envelope.channel, envelope.payload, event_ns=envelope.event_ns)
            await until(self.settled)  # the bus queued it at once: backlog until handled

    async def fills(self) -> list[Fill]:
        got = []
        while self.outputs.pending:
            got += [decode(Fill, e.payload) for e in await self.outputs.next_batch(10_000)]
        return got


def working(engine: StrategyEngine) -> dict[str, Any]:
    """Everything that is still working: the strategies' open orders, positions and order
    counters, the algorithm parents with their children, the venue's resting orders."""
    venue = engine.execution.venue
    return {
        "open": {
            name: sorted(
                (o.client_order_id, o.status, o.filled_quantity)
                for o in r.state.open_orders.values()
            )
            for name, r in engine.strategies.items()
        },
        "positions": {n: dict(r.state.positions) for n, r in engine.strategies.items()},
        "sequence": {n: r.state.sequence for n, r in engine.strategies.items()},
        "parents": {
            coid: (p.order.filled_quantity, sorted(p.children), type(p.algo).__name__)
            for coid, p in engine.execution.parents.items()
        },
        "venue": sorted(
            (w.order.client_order_id, w.order.filled_quantity, w.fills)
            for orders in venue.working.values()  # type: ignore[attr-defined]
            for w in orders
        ),
    }


async def test_a_restart_rebuilds_the_working_orders_and_never_duplicates_an_id(
    schema: str,
) -> None:
    bars = spy_bars(90)
    recorded = market(bars)
    start = bars[0].start_ns
    # the bars MarketData would have stored: what the restarted engine warms up on
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=ManualClock(start))
    await storage.open()
    try:
        storage.store.write_bars(bars)
    finally:
        await storage.close(5.0)

    async with Run(start, None) as whole:  # one uninterrupted run (memory storage)
        await whole.feed(recorded)
        expected = working(whole.engine)
        expected_intents = [e.payload["client_order_id"] for e in whole.published]
        expected_fills = await whole.fills()

    cut = len(recorded) // 2  # after a print: orders resting, a TWAP parent mid-way
    async with Run(start, schema) as first:
        await first.feed(recorded[:cut])
        before = working(first.engine)
        fills = await first.fills()
    assert before["parents"] and before["venue"], "the cut must leave orders working"

    async with Run(recorded[cut - 1].publish_ns, schema) as second:
        assert working(second.engine) == before  # rebuilt from the stored transitions
        assert second.engine.health()["warmed_bars"] == {"1m.SPY": cut // 2}
        await second.feed(recorded[cut:])
        after = working(second.engine)
        fills += await second.fills()
        intents = [e.payload["client_order_id"] for e in first.published + second.published]
        assert second.engine.health()["errors"] == 0

    assert len(intents) == len(set(intents))  # no id reused across the restart
    assert intents == expected_intents  # the same orders, the same ids
    assert after == expected
    assert [(f.fill_id, f.quantity, f.price) for f in fills] == [
        (f.fill_id, f.quantity, f.price) for f in expected_fills
    ]
    children = [i for i in intents if "-c" in i]
    assert children and any(f.client_order_id.startswith("ladder") for f in fills)
    assert {decode(Order, e.payload).status for e in second.published} == {OrderStatus.INITIALIZED}

"""Intents sent while Risk is down are answered when it starts: the real Strategy engine stays up
on PostgreSQL and sends two intents (one inside Risk's 1 000-unit order limit, one over it) while
no Risk runs; Risk started afterwards on the same schema answers both through its live path (the
small one reaches the venue and fills on the next print, the big one is closed), gives one decision
per intent (a repeated intent gets the same answer again, unchecked and unstored), and denies an
intent older than ``max_intent_age_s`` ``stale_intent`` without taking a rate slot."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter

import pytest

from engines.risk.core import VarMethod
from engines.risk.service import RiskConfig, RiskEngine
from engines.strategy.service import StrategyConfig, StrategyEngine
from protocol.records import Fill, Order, OrderStatus, Trade, decode, encode
from realtime.bus import Envelope, MemoryBus, Subscription
from realtime.clock import ManualClock
from realtime.storage import Storage, StorageConfig
from tests.engines.strategy.support import TARGET_ONCE, market, spy_bars
from tests.support import TEST_DSN, migrated_schema, store_trades, take, until

#: one strategy inside Risk's 1 000-unit order limit, one over it
STRATEGIES = json.dumps([
    {"name": "small", "path": TARGET_ONCE, "params": {"quantity": 100}},
    {"name": "big", "path": TARGET_ONCE, "params": {"quantity": 5000}},
])  # fmt: skip
ANSWERS = (OrderStatus.SUBMITTED, OrderStatus.DENIED)
SECOND = 1_000_000_000


@pytest.fixture
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_risk_missed") as name:
        yield name


def risk_answers(envelopes: list[Envelope]) -> list[Order]:
    """Risk's answers among the messages of ``orders.<account>`` (Strategy's are the rest)."""
    orders = [decode(Order, e.payload) for e in envelopes]
    return [o for o in orders if o.status in ANSWERS]


@dataclass
class SentWhileDown:
    """A running Strategy whose two intents no Risk has seen, and the shared bus and clock."""

    strategy: StrategyEngine
    bus: MemoryBus
    clock: ManualClock
    intents: list[Order]
    trade: Envelope
    orders: Subscription
    fills: Subscription


@asynccontextmanager
async def sent_while_down(schema: str) -> AsyncIterator[SentWhileDown]:
    bar, trade = market(spy_bars(1))
    clock = ManualClock(bar.publish_ns)
    bus = MemoryBus(clock=clock)
    config = StrategyConfig(strategies=STRATEGIES, warmup_bars=0, db_dsn=TEST_DSN, db_schema=schema)
    strategy = StrategyEngine(config, bus=bus, clock=clock)
    intents, orders, fills = (bus.subscribe(p) for p in ("intents.*", "orders.paper", "fills.*"))
    await strategy.start()
    try:
        await bus.publish(bar.channel, bar.payload, event_ns=bar.event_ns)
        sent = [decode(Order, e.payload) for e in await take(intents, 2)]
        await bus.publish(trade.channel, trade.payload, event_ns=trade.event_ns)
        await store_trades(schema, [decode(Trade, trade.payload)])  # as MarketData stores it
        # Risk reads what Strategy stored: both intents, flushed
        await until(lambda: strategy.storage.store.stats().rows_written >= 2)
        yield SentWhileDown(strategy, bus, clock, sent, trade, orders, fills)
    finally:
        await strategy.stop()


def risk(schema: str, run: SentWhileDown) -> RiskEngine:
    config = RiskConfig(
        db_dsn=TEST_DSN, db_schema=schema, max_order_quantity=1_000.0,
        var_methods=(VarMethod.NORMAL,), var_interval_s=3600.0,
    )  # fmt: skip
    return RiskEngine(config, bus=run.bus, clock=run.clock)


async def stored_answers(schema: str) -> list[Order]:
    """Every answer Risk stored for ``paper`` (approvals, then denials)."""
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=ManualClock())
    await storage.open()
    try:
        found: list[Order] = []
        for stream in ("risk.approvals", "risk.denials"):
            records = storage.records(
                "risk", stream, Order, key=attrgetter("account"), time=attrgetter("event_ns")
            )
            found += [o async for o in records.scan("paper")]
        return found
    finally:
        await storage.close(5.0)


async def test_intents_sent_while_down_are_answered_once_at_start(schema: str) -> None:
    async with sent_while_down(schema) as run:
        ids = {o.strategy: o.client_order_id for o in run.intents}
        run.clock.advance(SECOND)  # Risk comes up a second later
        engine = risk(schema, run)
        await engine.start()
        try:
            strategy = run.strategy
            await until(lambda: strategy.orders[ids["small"]].status is OrderStatus.ACCEPTED)
            await until(lambda: strategy.orders[ids["big"]].status is OrderStatus.DENIED)
            first = risk_answers(await take(run.orders, run.orders.pending))
            assert [(o.strategy, o.status, o.reason) for o in first] == [
                ("small", OrderStatus.SUBMITTED, ""),
                ("big", OrderStatus.DENIED, "max_quantity"),
            ]  # in the intents' order
            assert engine.books["paper"].pending.keys() == {ids["small"]}
            assert not strategy.strategies["big"].state.open_orders

            # the same intents again (a copy still buffered at start, a redelivery)
            for intent in run.intents:
                await run.bus.publish(f"intents.{intent.strategy}", encode(intent))
            again = risk_answers(await take(run.orders, 2))
            assert again == first  # the same answers, not new decisions
            assert engine.approved_counts["paper"] == 1
            assert engine.denial_counts["paper"] == {"max_quantity": 1}
            assert engine.books["paper"].pending.keys() == {ids["small"]}

            later = run.trade.event_ns + 1_000
            print_ = {**run.trade.payload, "t": later, "r": later}
            await run.bus.publish(run.trade.channel, print_, event_ns=later)
            [filled] = [decode(Fill, e.payload) for e in await take(run.fills, 1)]
            assert (filled.client_order_id, filled.quantity) == (ids["small"], Decimal(100))
            assert engine.health()["errors"] == 0
            assert strategy.health()["errors"] == 0
        finally:
            await engine.stop()  # its answers flushed
        assert not run.fills.pending  # the denied 5 000 never traded
    stored = sorted((o.client_order_id, o.status) for o in await stored_answers(schema))
    assert stored == sorted(
        [(ids["small"], OrderStatus.SUBMITTED), (ids["big"], OrderStatus.DENIED)]
    )  # one stored decision per intent


async def test_an_intent_older_than_the_max_age_is_denied_stale(schema: str) -> None:
    async with sent_while_down(schema) as run:
        sent_ns = max(o.event_ns for o in run.intents)
        run.clock.set(sent_ns + 61 * SECOND)  # the default max_intent_age_s is 60
        engine = risk(schema, run)
        await engine.start()
        try:
            answers = risk_answers(await take(run.orders, 2))
            assert [(o.strategy, o.status, o.reason) for o in answers] == [
                ("small", OrderStatus.DENIED, "stale_intent"),
                ("big", OrderStatus.DENIED, "stale_intent"),
            ]
            book = engine.books["paper"]
            assert (book.pending, book.rate.tat_ns) == ({}, None)  # no slot, nothing pending
            strategy = run.strategy
            await until(lambda: not any(r.state.open_orders for r in strategy.strategies.values()))
            assert {o.status for o in strategy.orders.values()} == {OrderStatus.DENIED}
        finally:
            await engine.stop()

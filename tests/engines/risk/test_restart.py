"""Crash-only restart of the Risk engine on real PostgreSQL: stopped and started again on the same
schema, it rebuilds each account's book (positions, pending orders, the rate limiter's state, the
trading state) and the VPIN alerts from what it and its neighbours stored, equal to the book it
had, so the limits deny after the restart exactly what they denied before it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any

import pytest
from msgspec.structs import replace

from engines.risk.core import VarMethod
from engines.risk.pretrade import AccountBook, TradingState
from engines.risk.service import RiskConfig, RiskEngine
from protocol.records import (
    AccountPositions,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    decode,
    encode,
)
from realtime.bus import MemoryBus, Subscription
from realtime.clock import ManualClock
from realtime.storage import Storage, StorageConfig
from tests.support import TEST_DSN, migrated_schema, until

D = Decimal
#: 2013-10-07 09:30 New York, the replay's day
START_NS = 1381152600_000_000_000


@pytest.fixture
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_risk_restart") as name:
        yield name


def config(schema: str) -> RiskConfig:
    """A position limit of 1 000 SPY and a burst of 4 orders at one instant (1/s after)."""
    return RiskConfig(
        db_dsn=TEST_DSN, db_schema=schema, accounts=("paper", "other"), var_methods=(VarMethod.NORMAL,),
        var_interval_s=3600.0, max_order_quantity=1_000.0, max_position=1_000.0,
        max_orders_per_second=1, order_burst=4,
    )  # fmt: skip


def order(oid: str, qty: str, side: str = "buy", **changes: Any) -> Order:
    return Order(
        client_order_id=oid, account="paper", strategy="ma", symbol="SPY", side=OrderSide(side),
        type=OrderType.MARKET, quantity=D(qty), status=OrderStatus.INITIALIZED,
        event_ns=START_NS, intent_id=f"i-{oid}", **changes,
    )  # fmt: skip


def book_state(book: AccountBook) -> dict[str, Any]:
    """Everything of a book the checks read, but the shared market state."""
    return {
        "state": book.state,
        "positions": dict(book.positions),
        "pending": {k: (p.symbol, p.side, p.remaining) for k, p in book.pending.items()},
        "pending_buy": dict(book.pending_buy),
        "pending_sell": dict(book.pending_sell),
        "rows": dict(book.rows),
        "rate_tat_ns": book.rate.tat_ns,
    }


async def answers(sub: Subscription, n: int) -> list[Order]:
    got: list[Order] = []
    while len(got) < n:
        batch = await asyncio.wait_for(sub.next_batch(n - len(got)), 10)
        got += [decode(Order, e.payload) for e in batch]
    return got


async def store_neighbours(
    schema: str,
    *,
    positions: Sequence[AccountPositions] = (),
    orders: Sequence[Order] = (),
    vpin: Sequence[dict[str, Any]] = (),
) -> None:
    """Write what Portfolio, Strategy and VPIN store on their streams, flushed."""
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=ManualClock(START_NS))
    await storage.open()
    try:
        account, event_ns = attrgetter("account"), attrgetter("event_ns")
        storage.records(
            "portfolio", "positions", AccountPositions, key=account, time=event_ns
        ).append(positions)
        storage.records("strategy", "orders", Order, key=account, time=event_ns).append(orders)
        storage.records(
            "vpin", "vpin", dict, key=itemgetter("symbol"), time=itemgetter("end_ns")
        ).append(vpin)
    finally:
        await storage.close(5.0)


async def priced(risk: RiskEngine) -> None:
    """A SPY print through ``risk``'s bus, once it is its collar reference."""
    await risk.bus.publish("trades.SPY", {"s": "SPY", "t": START_NS, "r": START_NS,
                                          "p": 168.2, "q": 100.0}, event_ns=START_NS)  # fmt: skip
    await until(lambda: "SPY" in risk.market.last_price)


async def test_a_restart_rebuilds_the_books_and_the_limits_still_hold(schema: str) -> None:
    held = Position(
        account="paper", symbol="SPY", quantity=D(300), average_price=D("168.00"),
        realized_pnl=D(0), unrealized_pnl=D(60), mark_price=D("168.20"), currency="USD",
        event_ns=START_NS,
    )  # fmt: skip
    alert = {"symbol": "QQQ", "end_ns": START_NS, "alert": True, "vpin": 0.9}
    calm = {"symbol": "AAPL", "end_ns": START_NS, "alert": False, "vpin": 0.1}
    book = AccountPositions(account="paper", event_ns=START_NS, positions=(held,))
    await store_neighbours(schema, positions=[book], vpin=[alert, calm])

    clock = ManualClock(START_NS)
    first = RiskEngine(config(schema), bus=MemoryBus(clock=clock), clock=clock)
    await first.start()
    try:
        bus = first.bus
        out = bus.subscribe("orders.paper")
        await priced(first)
        # a: approved while Strategy is down (no transition of it stored); b: partly filled;
        # c: a sell, filled
        for intent in (order("a", "400"), order("b", "200"), order("c", "100", "sell")):
            await bus.publish("intents.ma", encode(intent), event_ns=START_NS)
        approved = await answers(out, 3)
        assert [o.status for o in approved] == [OrderStatus.SUBMITTED] * 3
        _, b, c = approved
        strategy_rows = [
            b, replace(b, status=OrderStatus.ACCEPTED),
            replace(b, status=OrderStatus.PARTIALLY_FILLED, filled_quantity=D(50)),
            c, replace(c, status=OrderStatus.ACCEPTED),
            replace(c, status=OrderStatus.FILLED, filled_quantity=D(100)),
        ]  # fmt: skip
        for row in strategy_rows:
            await bus.publish("orders.paper", encode(row), event_ns=START_NS)
        await answers(out, len(strategy_rows))
        await until(lambda: "c" not in first.books["paper"].pending)
        first.set_state("other", TradingState.HALTED)
        before = {a: book_state(book) for a, book in first.books.items()}
        assert before["paper"]["pending"] == {
            "a": ("SPY", OrderSide.BUY, D(400)), "b": ("SPY", OrderSide.BUY, D(150)),
        }  # fmt: skip
        assert before["paper"]["positions"] == {"SPY": D(300)}
        assert first.market.vpin_alert == {"QQQ"}
    finally:
        await first.stop()
    await store_neighbours(schema, orders=strategy_rows)  # what Strategy stored meanwhile

    second = RiskEngine(config(schema), bus=MemoryBus(clock=clock), clock=clock)
    await second.start()
    try:
        assert {a: book_state(book) for a, book in second.books.items()} == before
        assert second.books["other"].state is TradingState.HALTED
        assert second.market.vpin_alert == {"QQQ"}
        bus = second.bus
        out = bus.subscribe("orders.paper")
        await priced(second)
        # d: 300 held + 550 pending + 200 > 1 000; e: 950, the burst's 4th slot; f: a reducing
        # sell, but a 5th order in the same instant
        for intent in (order("d", "200"), order("e", "100"), order("f", "10", "sell")):
            await bus.publish("intents.ma", encode(intent), event_ns=START_NS)
        after = await answers(out, 3)
        assert [(o.client_order_id, o.status, o.reason) for o in after] == [
            ("d", OrderStatus.DENIED, "max_position"),
            ("e", OrderStatus.SUBMITTED, ""),
            ("f", OrderStatus.DENIED, "rate_limit"),
        ]
        assert second.health()["errors"] == 0
    finally:
        await second.stop()


async def test_a_fresh_engine_would_approve_what_the_rebuilt_one_denies(schema: str) -> None:
    """The control: on an empty store the same intent d is approved (the rebuild is what
    denies it above)."""
    clock = ManualClock(START_NS)
    engine = RiskEngine(config(schema), bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    try:
        out = engine.bus.subscribe("orders.paper")
        await engine.bus.publish("trades.SPY", {"s": "SPY", "t": START_NS, "r": START_NS,
                                                "p": 168.2, "q": 100.0}, event_ns=START_NS)  # fmt: skip
        await until(lambda: "SPY" in engine.market.last_price)
        await engine.bus.publish("intents.ma", encode(order("d", "200")), event_ns=START_NS)
        [d] = await answers(out, 1)
        assert d.status is OrderStatus.SUBMITTED
        assert engine.books["paper"].pending.keys() == {"d"}
    finally:
        await engine.stop()

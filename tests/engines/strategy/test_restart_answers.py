"""Risk's answers published while the strategy engine is down are not lost: the real Risk engine
answers intents the stopped engine sent (one approved, one denied over its quantity limit), and the
engine started again on the same PostgreSQL schema takes both at start, as the live path would
have (the approved order to the venue, where the next print fills it; the denied one closed), sends
no intent twice, and never trades the denied quantity."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from engines.risk.core import VarMethod
from engines.risk.service import RiskConfig, RiskEngine
from engines.strategy.service import StrategyConfig, StrategyEngine
from protocol.records import Fill, Order, OrderStatus, Trade, decode
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock
from tests.engines.strategy.support import TARGET_ONCE, market, spy_bars
from tests.support import TEST_DSN, migrated_schema, store_trades, take

#: one strategy inside Risk's 1 000-unit order limit, one over it
STRATEGIES = json.dumps([
    {"name": "small", "path": TARGET_ONCE, "params": {"quantity": 100}},
    {"name": "big", "path": TARGET_ONCE, "params": {"quantity": 5000}},
])  # fmt: skip


@pytest.fixture
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_strategy_answers") as name:
        yield name


async def test_answers_published_while_down_are_taken_at_restart(schema: str) -> None:
    bar, trade = market(spy_bars(1))
    clock = ManualClock(bar.publish_ns)
    bus = MemoryBus(clock=clock)
    strategy_config = StrategyConfig(
        strategies=STRATEGIES, warmup_bars=0, db_dsn=TEST_DSN, db_schema=schema
    )
    intents = bus.subscribe("intents.*")
    first = StrategyEngine(strategy_config, bus=bus, clock=clock)
    await first.start()
    try:
        await bus.publish(bar.channel, bar.payload, event_ns=bar.event_ns)
        sent = [decode(Order, e.payload) for e in await take(intents, 2)]
    finally:
        await first.stop()  # down before Risk answers
    assert {o.strategy: o.quantity for o in sent} == {"small": Decimal(100), "big": Decimal(5000)}

    risk = RiskEngine(
        RiskConfig(
            db_dsn=TEST_DSN, db_schema=schema, max_order_quantity=1_000.0,
            var_methods=(VarMethod.NORMAL,), var_interval_s=3600.0,
        ),
        bus=bus, clock=clock,
    )  # fmt: skip
    orders = bus.subscribe("orders.paper")
    await store_trades(schema, [decode(Trade, trade.payload)])  # the print, as MarketData stores it
    await risk.start()  # answers the intents it missed, at start
    try:
        answered = {o.strategy: o for o in map(decode_order, await take(orders, 2))}
    finally:
        await risk.stop()  # its answers flushed to the store
    assert answered["small"].status is OrderStatus.SUBMITTED
    assert (answered["big"].status, answered["big"].reason) == (OrderStatus.DENIED, "max_quantity")

    fills = bus.subscribe("fills.paper")
    second = StrategyEngine(strategy_config, bus=bus, clock=clock)
    await second.start()
    try:
        small, big = (answered[name].client_order_id for name in ("small", "big"))
        assert second.orders[small].status is OrderStatus.ACCEPTED  # at the venue
        assert second.orders[big].status is OrderStatus.DENIED
        assert sorted(second.strategies["small"].state.open_orders) == [small]
        assert not second.strategies["big"].state.open_orders
        accepted = decode_order((await take(orders, 1))[0])
        assert (accepted.client_order_id, accepted.status) == (small, OrderStatus.ACCEPTED)

        later = trade.event_ns + 1_000
        print_ = {**trade.payload, "t": later, "r": later}
        await bus.publish(trade.channel, print_, event_ns=later)
        [filled] = [decode(Fill, e.payload) for e in await take(fills, 1)]
        assert (filled.client_order_id, filled.quantity) == (small, Decimal(100))
        positions = {n: dict(r.state.positions) for n, r in second.strategies.items()}
        assert positions == {"small": {"SPY": Decimal(100)}, "big": {}}
        assert not intents.pending  # nothing sent again
        assert all(o.status is not OrderStatus.INITIALIZED for o in second.orders.values())
        assert second.health()["errors"] == 0
    finally:
        await second.stop()
    assert not fills.pending  # the denied 5 000 never traded


def decode_order(envelope: Envelope) -> Order:
    return decode(Order, envelope.payload)

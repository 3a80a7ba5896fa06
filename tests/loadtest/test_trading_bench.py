"""Smoke test of the trading bench's pieces on a few orders (seconds): every intent approved,
filled once and booked once, the ledger flat after an even number of round trips, the
signal → order path timing the bench's own orders, the document and table built."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

import msgspec

from engines.risk.core import VarMethod
from engines.risk.service import RiskConfig
from engines.shell.instruments import load_instruments
from engines.strategy.core import StrategyContext, StrategyState
from loadtest.trading_bench import (
    Flip,
    FlipParams,
    bar_at,
    document,
    intents,
    signal_to_order,
    table,
    through_cores,
    through_engines,
)
from protocol.records import OrderSide


def test_flip_alternates_its_target_on_every_bar() -> None:
    strategy = Flip("bench", FlipParams(quantity=100))
    state = StrategyState("bench", "paper")
    sides = []
    for i in range(3):
        ctx = StrategyContext(state, load_instruments(), now_ns=0, event_ns=bar_at(i).end_ns,
                              last_prices={"SPY": Decimal(168)})  # fmt: skip
        strategy.on_bar(bar_at(i), ctx)
        sides += [(o.side, o.quantity) for o in ctx.orders]
    # +100 from flat, then −100 against +100 open: 200; then +100 against −100 open: 200
    want = [(OrderSide.BUY, 100), (OrderSide.SELL, 200), (OrderSide.BUY, 200)]
    assert sides == [(side, Decimal(q)) for side, q in want]


def test_orders_go_through_the_cores_and_the_engines_once_each() -> None:
    batch = intents(40)
    assert [o.side for o in batch[:2]] == [OrderSide.BUY, OrderSide.SELL]
    _, _, ledger = through_cores(batch)
    assert ledger.fills == 40 and ledger.book.positions == {}
    _, _, pipeline = asyncio.run(through_engines(batch))
    assert pipeline.fills == 40
    assert pipeline.risk.approved_counts["paper"] == 40
    assert pipeline.risk.books["paper"].pending == {}
    assert pipeline.portfolio.ledgers["paper"].fills == 40
    _, state, _ = pipeline.portfolio.snapshot("paper")
    assert state.equity == state.starting_cash == Decimal(1_000_000)  # bought and sold at 168
    assert {engine for engine, _ in pipeline.spent_ns} == {"risk", "portfolio", "strategy"}


def test_signal_to_order_times_each_signal_and_the_document_reports_it() -> None:
    small = RiskConfig(mc_paths=200, mc_assets=1, var_methods=(VarMethod.NORMAL,))
    latency = asyncio.run(signal_to_order(8, 2, small))
    assert latency["signals"] == 8 and latency["denied"] == {}
    assert latency["approved"] >= 10  # every bench signal, plus the default strategies'
    # each subscriber interval holds its bus interval (publish → publish): so do the medians
    assert latency["at_subscriber"]["p50_us"] >= latency["bus_stamps"]["p50_us"] > 0
    rates = {"cores": {"orders": 1.0, "wall_s": 1.0, "cpu_s": 1.0, "orders_per_s": 20_000.0,
                       "orders_per_cpu_s": 20_000.0, "us_per_order": 50.0}}  # fmt: skip
    doc = document(latency, rates, {"risk ← intents": 12.0})
    assert doc["throughput_passes"] == {"cores": True}
    assert doc["machine"]["cpu"]
    assert "orders/s, cores" in table(doc)


def canonical(records: Sequence[msgspec.Struct]) -> list[bytes]:
    """Records as JSON, sorted: compared as a set (ties may be stored in either order)."""
    return sorted(msgspec.json.encode(record) for record in records)


def test_batched_engines_store_what_one_message_a_batch_stores() -> None:
    """A consumer batch writes its records at its end, in one store call per stream: the same
    approvals, order transitions and fills as when every message is its own batch."""

    async def stored(block: int) -> list[list[bytes]]:
        _, _, pipeline = await through_engines(intents(40), block)
        approvals = [o async for o in pipeline.risk.approvals.scan("paper")]
        transitions = [o async for o in pipeline.strategy.order_records.scan("paper")]
        fills = [f async for f in pipeline.portfolio.fills.scan("paper")]
        return [canonical(approvals), canonical(transitions), canonical(fills)]

    one = asyncio.run(stored(1))
    assert [len(records) for records in one] == [40, 120, 40]
    assert asyncio.run(stored(8)) == one

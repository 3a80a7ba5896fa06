"""The strategy engine end to end: intents → (a stand-in for Risk) → orders → fills with ids
chained, live on a MemoryBus and under the DeterministicDriver (same bars twice → the same ids
and fills), VPIN alerts cutting exposure, warm-up from PostgreSQL, bad input counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from engines.risk.core import VarMethod
from engines.risk.pretrade import TradingState
from engines.risk.service import RiskConfig, RiskEngine
from engines.shell.config import load_config
from engines.strategy.core import SimpleMovingAverage
from engines.strategy.service import StrategyConfig, StrategyEngine
from engines.strategy.venue import SimulatedVenue
from protocol.records import Fill, Order, OrderStatus, Trade, decode, encode
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock, SystemClock
from realtime.config import ConfigError
from realtime.storage import Storage, StorageConfig
from tests.engines.strategy.support import (
    ALARM,
    MA,
    MINUTE,
    STRATEGIES,
    TARGET_ONCE,
    approved,
    drive,
    engine,
    market,
    spy_bars,
)
from tests.support import TEST_DSN, migrated_schema, until


def records(outputs: list[Envelope], prefix: str, kind: type) -> list:  # type: ignore[type-arg]
    return [decode(kind, e.payload) for e in outputs if e.channel.startswith(prefix)]


async def test_the_same_bars_twice_give_the_same_ids_and_fills() -> None:
    recorded = market(spy_bars(120))
    first = await drive(engine(), recorded)
    second = await drive(engine(), recorded)
    assert [(e.channel, e.payload) for e in first] == [(e.channel, e.payload) for e in second]
    intents = records(first, "intents.", Order)
    fills = records(first, "fills.paper", Fill)
    assert len(intents) >= 4 and len(fills) == len(intents)  # market orders fill on the next print
    assert {i.strategy for i in intents} == {"ma_cross", "vpin_guard"}


async def test_ids_chain_intent_to_order_to_fill() -> None:
    outputs = await drive(engine(), market(spy_bars(120)))
    intents = {o.client_order_id: o for o in records(outputs, "intents.", Order)}
    transitions = records(outputs, "orders.paper", Order)
    fills = records(outputs, "fills.paper", Fill)
    for intent in intents.values():
        assert intent.status is OrderStatus.INITIALIZED
        assert intent.client_order_id.startswith(f"{intent.strategy}-{intent.event_ns}-")
        assert intent.intent_id == f"intent-{intent.client_order_id}"
        mine = [o.status for o in transitions if o.client_order_id == intent.client_order_id]
        assert mine == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    for fill in fills:
        order = intents[fill.client_order_id]
        assert fill.fill_id == f"{order.client_order_id}-f1"
        assert (fill.side, fill.quantity, fill.strategy) == (
            order.side,
            order.quantity,
            order.strategy,
        )
    # the moving-average strategy's position is the sum of its fills and equals its target
    strategy = engine()
    await drive(strategy, market(spy_bars(120)))
    state = strategy.strategies["ma_cross"].state
    assert state.position("SPY") == state.targets["SPY"] and state.open_orders == {}


async def test_ma_cross_trades_the_crossovers_of_the_smas() -> None:
    bars = spy_bars(120)
    outputs = await drive(engine(), market(bars))
    fast, slow, regime, flips = SimpleMovingAverage(3), SimpleMovingAverage(8), 0, []
    for bar in bars:
        f, s = fast.update(bar.close), slow.update(bar.close)
        if f is not None and s is not None and f != s and (1 if f > s else -1) != regime:
            regime = 1 if f > s else -1
            flips.append((bar.end_ns, regime))
    orders = [
        o for o in records(outputs, "intents.ma_cross", Order) if o.reason.startswith("ma_cross")
    ]
    assert [o.event_ns for o in orders] == [t for t, _ in flips]  # no order without a crossover
    assert [o.side.value for o in orders] == ["buy" if r > 0 else "sell" for _, r in flips]
    # from flat (the start, or after an ATR stop) 100, from the other side 200
    assert orders[0].quantity == 100 and {o.quantity for o in orders} == {100, 200}
    stops = [o for o in records(outputs, "intents.ma_cross", Order) if o.reason == "atr_stop"]
    assert all(o.quantity == 100 for o in stops)


async def test_a_vpin_alert_cuts_the_guards_exposure_and_its_end_restores_it() -> None:
    bars = spy_bars(5)
    recorded = market(bars)
    t = bars[-1].end_ns + 2_000
    for alert, when in ((True, t), (False, t + 10_000)):
        payload = {"symbol": "SPY", "end_ns": when, "vpin": 0.4, "alert": alert}
        recorded.append(Envelope("vpin.SPY", 99, "e", when, when, payload))
        trade = {"s": "SPY", "t": when + 1, "r": when + 1, "p": bars[-1].close, "q": 10_000.0}
        recorded.append(Envelope("trades.SPY", 100, "e", when + 1, when + 1, trade))
    outputs = await drive(engine(), recorded)
    guard = [
        (o.side.value, o.quantity, o.reason) for o in records(outputs, "intents.vpin_guard", Order)
    ]
    assert guard == [
        ("buy", 50, "vpin_clear"),
        ("sell", 40, "vpin_alert"),
        ("buy", 40, "vpin_clear"),
    ]


async def test_denied_intents_close_and_unchanged_targets_do_not_churn() -> None:
    strategy = engine()
    driver_outputs = []
    from engines.shell.driver import DeterministicDriver

    driver = DeterministicDriver(strategy)
    for envelope in market(spy_bars(20)):
        produced = await driver.run([envelope])
        driver_outputs += produced
        denials = []
        for e in produced:
            if e.channel.startswith("intents."):
                denials.append(Envelope("orders.paper", 1, "risk", e.event_ns, e.publish_ns,
                                        {**e.payload, "status": "denied", "reason": "max_position"}))  # fmt: skip
        driver_outputs += await driver.run(denials)
    assert records(driver_outputs, "fills.", Fill) == []
    state = strategy.strategies["vpin_guard"].state
    assert state.open_orders == {} and state.position("SPY") == 0
    assert len(records(driver_outputs, "intents.vpin_guard", Order)) == 1  # not re-sent each bar
    assert strategy.orders[f"vpin_guard-{spy_bars(1)[0].end_ns}-1"].status is OrderStatus.DENIED


async def test_bad_input_is_counted_not_fatal() -> None:
    strategy = engine()
    bars = spy_bars(3)
    recorded = [
        Envelope("bars.1m.SPY", 1, "e", 1, 1, {"s": "SPY"}),
        Envelope("vpin.SPY", 2, "e", 1, 1, {"end_ns": "soon"}),
        Envelope("orders.paper", 3, "e", 1, 1, {"client_order_id": 5}),
        *market(bars),
    ]
    outputs = await drive(strategy, recorded)
    assert strategy.health()["bad_input"] == {
        "bars.1m.SPY": {"missing_field": 1}, "vpin.SPY": {"invalid_value": 1},
        "orders.paper": {"wrong_type": 1},
    }  # fmt: skip
    assert records(outputs, "fills.", Fill)  # and it went on trading


def test_a_malformed_strategy_config_is_a_config_error_naming_the_field() -> None:
    bad = json.dumps([{"name": "a", "path": MA, "params": {"slow": "x"}}])
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.params\.slow"):
        load_config(StrategyConfig, {"NAUTILUS_STRATEGY_STRATEGIES": bad})
    unknown = json.dumps([{"name": "a", "path": MA, "symbols": ["NOPE"]}])
    with pytest.raises(Exception, match="NOPE"):
        engine(StrategyConfig(strategies=unknown))
    assert len(StrategyConfig().specs()) == 3  # the default: the three shipped strategies


def test_slippage_is_a_setting_of_the_venue_the_config_builds() -> None:
    config = load_config(StrategyConfig, {"NAUTILUS_STRATEGY_SLIPPAGE_BPS": "2.5"})
    assert config.venue().slippage_bps == Decimal("2.5")
    venue = engine(config).execution.venue
    assert isinstance(venue, SimulatedVenue) and venue.config.slippage_bps == Decimal("2.5")
    assert StrategyConfig().venue().slippage_bps == 0
    for bad in ("-0.5", "nan", "10000"):
        with pytest.raises(ConfigError, match=r"slippage_bps must be in \[0, 10000\)"):
            load_config(StrategyConfig, {"NAUTILUS_STRATEGY_SLIPPAGE_BPS": bad})


@pytest.mark.parametrize(("after_ns", "fires_at"), [(1_000, "the print"), (1_001, "the next bar")])
async def test_a_timer_fires_at_the_first_market_event_it_is_due_at_a_print_too(
    after_ns: int, fires_at: str
) -> None:
    """``Alarm`` defines no ``on_trade``: the engine skips that callback, not the timers."""
    bars = spy_bars(3)
    alarm = json.dumps([{"name": "alarm", "path": ALARM, "params": {"after_ns": after_ns}}])
    strategy = engine(StrategyConfig(strategies=alarm, warmup_bars=0))
    assert "on_trade" not in strategy.strategies["alarm"].callbacks
    intents = records(await drive(strategy, market(bars)), "intents.", Order)
    due = {"the print": bars[0].end_ns + 1_000, "the next bar": bars[1].end_ns}[fires_at]
    assert [(i.event_ns, i.reason) for i in intents] == [(due, "alarm")]


async def test_live_on_a_memory_bus_with_a_stand_in_for_risk() -> None:
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    strategy = StrategyEngine(
        StrategyConfig(strategies=STRATEGIES, warmup_bars=0), bus=bus, clock=clock
    )
    intents, fills = bus.subscribe("intents.*"), bus.subscribe("fills.paper")
    await strategy.start()

    async def risk() -> None:
        async for envelope in intents:
            answer = approved(envelope)
            await bus.publish(answer.channel, answer.payload, event_ns=envelope.event_ns)

    stand_in = asyncio.create_task(risk())
    got: list[Envelope] = []
    try:
        for envelope in market(spy_bars(60)):
            await bus.publish(envelope.channel, envelope.payload, event_ns=envelope.event_ns)
            await asyncio.sleep(0)  # let the round trip happen before the next print
            await until(lambda: strategy.backlog() == 0)
        await until(lambda: fills.pending > 0)
        while fills.pending:
            got += await fills.next_batch(1000)
    finally:
        stand_in.cancel()
        await strategy.stop()
    chained = [decode(Fill, e.payload) for e in got]
    assert chained and all(
        strategy.orders[f.client_order_id].status is OrderStatus.FILLED for f in chained
    )
    assert strategy.health()["errors"] == 0


async def test_live_twap_children_pass_risk_and_a_halt_ends_the_parent() -> None:
    """Strategy and the real Risk on one bus: each TWAP slice is an intent Risk approves before
    the venue sees it; once the account is halted the next slice is denied (published on
    ``risk.denials.paper``) and the parent's remainder is canceled with ``child_denied``."""
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    strategies = json.dumps([{"name": "once", "path": TARGET_ONCE, "params": {"quantity": 900},
                              "algo": {"kind": "twap", "slices": 3, "interval_s": 60}}])  # fmt: skip
    strategy = StrategyEngine(
        StrategyConfig(strategies=strategies, warmup_bars=0), bus=bus, clock=clock
    )
    risk = RiskEngine(RiskConfig(var_methods=(VarMethod.NORMAL,)), bus=bus, clock=clock)
    orders, denials = bus.subscribe("orders.paper"), bus.subscribe("risk.denials.paper")
    fills = bus.subscribe("fills.paper")
    await risk.start()
    await strategy.start()
    seen: list[Order] = []

    async def record() -> None:
        async for envelope in orders:
            seen.append(decode(Order, envelope.payload))

    recorder = asyncio.create_task(record())

    def status_of(coid: str) -> list[OrderStatus]:
        return [o.status for o in seen if o.client_order_id == coid]

    async def print_at(t: int, price: float = 168.0) -> None:
        await bus.publish("trades.SPY", encode(Trade("SPY", t, t, price, 5_000.0)), event_ns=t)

    try:
        (bar,) = spy_bars(1)
        await print_at(bar.end_ns - 1)  # Risk's reference price
        await until(lambda: "SPY" in risk.market.last_price)
        await bus.publish("bars.1m.SPY", encode(bar), event_ns=bar.end_ns)
        parent = f"once-{bar.end_ns}-1"
        first, second = f"{parent}-c1", f"{parent}-c2"
        await until(lambda: status_of(first)[-1:] == [OrderStatus.ACCEPTED])
        assert status_of(first) == [OrderStatus.SUBMITTED, OrderStatus.ACCEPTED]  # Risk first
        await print_at(bar.end_ns + 1)
        await until(lambda: OrderStatus.FILLED in status_of(first))
        risk.set_state("paper", TradingState.HALTED)
        await print_at(bar.end_ns + MINUTE)  # slice 2 comes due: an intent, denied
        await until(lambda: OrderStatus.CANCELED in status_of(parent))
        assert status_of(second) == [OrderStatus.DENIED]
        denial = decode(Order, (await denials.next_batch(10))[0].payload)
        assert (denial.client_order_id, denial.reason) == (second, "halted")
        ended = [o for o in seen if o.client_order_id == parent][-1]
        assert (ended.reason, ended.filled_quantity) == ("child_denied", 300)
        await print_at(bar.end_ns + 3 * MINUTE)  # nothing is left to slice or fill
        await until(lambda: strategy.backlog() == 0 and risk.backlog() == 0)
        got = [decode(Fill, e.payload) for e in await fills.next_batch(100)]
        assert [(f.client_order_id, f.quantity) for f in got] == [(first, 300)]
        assert not fills.pending and strategy.execution.parents == {}
        assert risk.books["paper"].pending == {}  # the parent's remainder released
        assert strategy.health()["errors"] == 0 and risk.health()["errors"] == 0
    finally:
        recorder.cancel()
        await strategy.stop()
        await risk.stop()


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema() as name:
        yield name


async def test_warm_up_from_stored_bars_sends_the_first_order_on_the_first_live_bar(
    schema: str,
) -> None:
    bars = spy_bars(60)
    live = bars[40:]
    clock = ManualClock(live[0].start_ns)
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=clock)
    await storage.open()
    try:
        storage.store.write_bars(bars)  # the later ones too: warm-up must not read past the clock
        for _ in range(200):
            page = await storage.store.fetch_bars("SPY", "1m", 0, 2**62, 1000)
            if len(page.items) == len(bars):
                break
            await asyncio.sleep(0.05)
        config = StrategyConfig(strategies=STRATEGIES, warmup_bars=30)
        warm = StrategyEngine(config, bus=MemoryBus(clock=clock), clock=clock, storage=storage)
        await warm.on_start()
        assert warm.health()["warmed_bars"] == {"1m.SPY": 30}
        outputs = await drive(warm, market(live[:1]))
        first = records(outputs, "intents.ma_cross", Order)
        assert len(first) == 1 and first[0].event_ns == live[0].end_ns
        fast = sum(b.close for b in bars[38:41]) / 3
        slow = sum(b.close for b in bars[33:41]) / 8
        assert first[0].side.value == ("buy" if fast > slow else "sell")
    finally:
        await storage.close(1.0)
    cold = engine(StrategyConfig(strategies=STRATEGIES, warmup_bars=30))
    await cold.on_start()  # an empty store: tolerated, nothing to warm
    assert cold.health()["warmed_bars"] == {"1m.SPY": 0}
    assert records(await drive(cold, market(live[:1])), "intents.ma_cross", Order) == []
    assert Decimal(0) == cold.strategies["ma_cross"].state.position("SPY")

"""Risk engine on a MemoryBus with real PostgreSQL: intents in, ``submitted`` or ``denied`` out in
order, denials stored and counted; pending tracked from ``orders.*``; bad input counted; VaR on
``risk.var.<account>`` equal to the core on the same history, before the event date only."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import jax
import numpy as np
import pytest
from scipy import stats

from engines.marketdata.daily import read_daily_bars
from engines.risk import core
from engines.risk.pretrade import DenialCode
from engines.risk.service import NS_PER_DAY, RiskConfig, RiskEngine, _mc_key
from protocol.records import Order, OrderSide, OrderStatus, OrderType, Trade, decode, encode
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock
from realtime.storage.migrations import quote_identifier
from tests.support import TEST_DSN, take, until

D = Decimal
#: 2013-10-07 09:30 New York, the replay's day
START_NS = 1381152600_000_000_000


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    schema = f"nautilus_risk_{secrets.token_hex(4)}"
    yield schema

    async def drop() -> None:
        connection = await asyncpg.connect(TEST_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
        finally:
            await connection.close()

    asyncio.run(drop())


def config(pg_schema: str, **overrides: Any) -> RiskConfig:
    base: dict[str, Any] = {
        "db_dsn": TEST_DSN, "db_schema": pg_schema, "mc_paths": 20_000, "mc_assets": 4,
        "var_interval_s": 3600.0, "max_order_quantity": 1_000.0, "accounts": ("paper", "other"),
    }  # fmt: skip
    return RiskConfig(**{**base, **overrides})


@pytest.fixture
async def engine(pg_schema: str) -> AsyncIterator[RiskEngine]:
    clock = ManualClock(START_NS)
    running = RiskEngine(config(pg_schema), bus=MemoryBus(clock=clock), clock=clock)
    await running.start()
    yield running
    await running.stop()


def intent(
    oid: str, qty: str, side: str = "buy", account: str = "paper", **extra: Any
) -> dict[str, Any]:
    return encode(
        Order(
            client_order_id=oid, account=account, strategy="ma", symbol="SPY",
            side=OrderSide(side), type=OrderType.MARKET, quantity=D(qty),
            status=OrderStatus.INITIALIZED, event_ns=START_NS, intent_id=f"i-{oid}", **extra,
        )
    )  # fmt: skip


def trade(price: float, symbol: str = "SPY") -> dict[str, Any]:
    return {"s": symbol, "t": START_NS, "r": START_NS, "p": price, "q": 100.0}


async def test_intents_come_out_submitted_or_denied_in_order(engine: RiskEngine) -> None:
    orders = engine.bus.subscribe("orders.*")
    denials = engine.bus.subscribe("risk.denials.*")
    bus = engine.bus
    await bus.publish("trades.SPY", trade(168.2), event_ns=START_NS)
    await until(lambda: "SPY" in engine.market.last_price)
    sent = [intent("a", "100"), intent("b", "1001"), intent("c", "5", "sell"),
            intent("d", "2.5"), intent("e", "1", account="ghost")]  # fmt: skip
    for payload in sent:
        await bus.publish(f"intents.{'ma'}", payload, event_ns=START_NS)
    out = await take(orders, 5)
    got = [decode(Order, e.payload) for e in out]
    assert [(o.client_order_id, o.status, o.reason) for o in got] == [
        ("a", OrderStatus.SUBMITTED, ""),
        ("b", OrderStatus.DENIED, "max_quantity"),
        ("c", OrderStatus.SUBMITTED, ""),
        ("d", OrderStatus.DENIED, "off_lot"),
        ("e", OrderStatus.DENIED, "unknown_account"),
    ]
    assert [e.channel for e in out] == ["orders.paper"] * 4 + ["orders.ghost"]
    for o, payload in zip(got, sent, strict=True):  # everything but status/reason carried as is
        assert {k: v for k, v in encode(o).items() if k not in ("status", "reason")} == {
            k: v for k, v in payload.items() if k not in ("status", "reason")
        }
    denied = await take(denials, 3)
    assert [e.payload["client_order_id"] for e in denied] == ["b", "d", "e"]
    assert engine.denial_counts["paper"] == {"max_quantity": 1, "off_lot": 1}
    assert engine._denied_total.labels("paper", "off_lot")._value.get() == 1
    assert engine.approved_counts["paper"] == 2
    # pending: a (buy 100) and c (sell 5); Strategy's fill of a releases it
    book = engine.books["paper"]
    assert book.pending_buy == {"SPY": D(100)} and book.pending_sell == {"SPY": D(5)}
    filled = {**encode(got[0]), "status": "filled", "filled_quantity": "100"}
    await bus.publish("orders.paper", filled, event_ns=START_NS)
    await until(lambda: "SPY" not in book.pending_buy)
    assert book.pending_sell == {"SPY": D(5)}
    stored: list[str] = []
    while len(stored) < 2:  # the write is batched: poll PostgreSQL until it lands
        page = await engine.denials.query("paper", 0, 2**62, 10)
        stored = [o.client_order_id for o in page.items]
        await asyncio.sleep(0.01)
    assert stored == ["b", "d"]


async def test_bad_input_is_counted_never_fatal(engine: RiskEngine) -> None:
    bus = engine.bus
    await bus.publish("intents.ma", {"client_order_id": "x"}, event_ns=0)
    await bus.publish("intents.ma", intent("y", "1") | {"status": "submitted"}, event_ns=0)
    await bus.publish("intents.ma", intent("z", "1") | {"account": "a.b"}, event_ns=0)
    await bus.publish("trades.SPY", trade(-1.0), event_ns=0)
    await bus.publish("vpin.SPY", {"symbol": "SPY", "alert": "yes"}, event_ns=0)
    await bus.publish("positions.paper", {"account": "paper"}, event_ns=0)

    def bad() -> dict[str, dict[str, int]]:
        return engine.health()["bad_input"]  # type: ignore[return-value]

    await until(lambda: sum(sum(r.values()) for r in bad().values()) == 6)
    assert bad()["intents.*"] == {"missing_field": 1, "invalid_value": 2}
    assert bad()["trades.*"] == {"invalid_value": 1}
    assert engine.state.value == "running" and engine.health()["errors"] == 0
    # the engine still answers
    orders = bus.subscribe("orders.paper")
    await bus.publish("trades.SPY", trade(100.0), event_ns=0)
    await bus.publish("intents.ma", intent("ok", "1"), event_ns=0)
    (out,) = await take(orders, 1)
    assert out.payload["status"] == "submitted"


async def test_vpin_alert_denies_adding_orders(engine: RiskEngine) -> None:
    bus = engine.bus
    orders = bus.subscribe("orders.paper")
    await bus.publish("trades.SPY", trade(100.0), event_ns=0)
    await bus.publish("vpin.SPY", {"symbol": "SPY", "alert": True, "vpin": 0.6}, event_ns=0)
    await until(lambda: "SPY" in engine.market.vpin_alert)
    await bus.publish("intents.ma", intent("v1", "10"), event_ns=0)
    await bus.publish("vpin.SPY", {"symbol": "SPY", "alert": False}, event_ns=0)
    await until(lambda: not engine.market.vpin_alert)
    await bus.publish("intents.ma", intent("v2", "10"), event_ns=0)
    out = await take(orders, 2)
    assert [(e.payload["status"], e.payload["reason"]) for e in out] == [
        ("denied", DenialCode.VPIN_ALERT.value), ("submitted", "")
    ]  # fmt: skip


def reference_history(as_of: np.datetime64, window: int) -> tuple[np.ndarray, np.ndarray]:
    """SPY and AIG total returns on their common dates before ``as_of`` (independent of the
    engine's alignment code)."""
    spy, aig = read_daily_bars("SPY"), read_daily_bars("AIG")
    rs = dict(
        zip(spy.date[1:].tolist(), (spy.close[1:] / spy.close[:-1] - 1).tolist(), strict=True)
    )
    ra = dict(
        zip(aig.date[1:].tolist(), (aig.close[1:] / aig.close[:-1] - 1).tolist(), strict=True)
    )
    dates = sorted(d for d in rs.keys() & ra.keys() if d < as_of.astype(dt.date))[-window:]
    return np.array(dates, dtype="datetime64[D]"), np.array([[rs[d], ra[d]] for d in dates])


async def test_var_on_position_change_equals_core_before_the_event_date(engine: RiskEngine) -> None:
    bus = engine.bus
    var_sub = bus.subscribe("risk.var.paper")
    await bus.publish("trades.SPY", trade(168.5), event_ns=START_NS)  # first trade: a timer run
    (flat,) = await take(var_sub, 1)
    assert flat.payload["var"]["historical"]["0.99"] == {"var": 0.0, "es": 0.0, "std_error": None}
    positions = {
        "account": "paper", "event_ns": START_NS,
        "positions": [
            {"account": "paper", "symbol": s, "quantity": q, "average_price": "1",
             "realized_pnl": "0", "unrealized_pnl": None, "mark_price": m, "currency": "USD",
             "event_ns": START_NS}
            for s, q, m in (("SPY", "1000", None), ("AIG", "-2000", "36.25"), ("BTCUSDT", "1", None))
        ],
    }  # fmt: skip
    await bus.publish("positions.paper", positions, event_ns=START_NS)
    (run,) = await take(var_sub, 1)
    got = run.payload
    # SPY at the last trade, AIG at Portfolio's mark, BTCUSDT (no daily history) left out
    assert got["positions"] == {"AIG": -72_500.0, "SPY": 168_500.0}
    assert got["uncovered"] == ["BTCUSDT"] and got["unpriced"] == [] and got["error"] is None
    dates, r = reference_history(np.datetime64("2013-10-07"), 500)
    assert got["as_of"] == str(dates[-1]) == "2013-10-04" and got["days"] == 500
    w = np.array([-72_500.0, 168_500.0])
    r = r[:, ::-1]  # the payload's order: AIG, SPY
    pnl = r @ w
    for a in (0.95, 0.975, 0.99):
        hv = got["var"]["historical"][str(a)]
        assert hv["var"] == pytest.approx(-np.percentile(pnl, 100 * (1 - a)), rel=1e-12)
        sd = math.sqrt(w @ core.ewma_covariance(r) @ w)
        nv = got["var"]["normal"][str(a)]
        assert nv["var"] == pytest.approx(sd * stats.norm.ppf(a), rel=1e-10)
        assert nv["es"] == pytest.approx(
            sd * stats.norm.pdf(stats.norm.ppf(a)) / (1 - a), rel=1e-10
        )
        mc = got["var"]["monte_carlo_normal"][str(a)]
        assert abs(mc["var"] - nv["var"]) < 3 * mc["std_error"]
    want = core.portfolio_risk(w, r, methods=list(core.VarMethod)[:5])
    for est in want:
        cell = got["var"][est.method.value][str(est.level)]
        assert cell["var"] == pytest.approx(est.var, rel=1e-9), est.method
        assert cell["es"] == pytest.approx(est.es, rel=1e-9), est.method
    comp = got["components"]
    assert sum(comp["var"].values()) == pytest.approx(
        got["var"]["normal"]["0.99"]["var"], rel=1e-12
    )
    assert (await engine.var_results.latest("paper")) == got
    # no new run without a change until the interval has passed in event time
    await bus.publish("positions.paper", positions, event_ns=START_NS)
    await bus.publish("trades.SPY", trade(168.6), event_ns=START_NS)
    await asyncio.sleep(0.05)
    assert var_sub.pending == 0
    engine.clock.advance(3600 * 1_000_000_000)  # type: ignore[attr-defined]
    await bus.publish("trades.SPY", trade(168.6), event_ns=START_NS)
    (timed,) = await take(var_sub, 1)
    assert timed.payload["positions"]["SPY"] == pytest.approx(168_600.0)


def test_monte_carlo_key_is_the_seed_and_event_time() -> None:
    a = jax.random.key_data(jax.random.fold_in(jax.random.key(0), START_NS % (2**31 - 1)))
    assert np.array_equal(jax.random.key_data(_mc_key(0, START_NS)), a)


def test_config_rejects_bad_settings(tmp_path: Any) -> None:
    for bad in ({"accounts": ("var",)}, {"accounts": ("a.b",)}, {"var_levels": (1.0,)},
                {"max_position": 0.0}, {"var_window": 10}, {"accounts": ()}):  # fmt: skip
        with pytest.raises(ValueError):
            RiskConfig(**bad)
    limits = tmp_path / "limits.json"
    limits.write_text(
        '{"paper": {"max_gross_exposure": "5000", "instruments": {"SPY": {"max_position": "7"}}}}'
    )
    books = RiskConfig(limits_path=str(limits), accounts=("paper", "b")).account_limits()
    assert books["paper"].max_gross_exposure == D(5000)
    assert books["paper"].for_instrument("SPY").max_position == D(7)
    assert books["paper"].for_instrument("SPY").max_order_quantity == D(10_000)
    assert books["b"].max_gross_exposure == D(2_000_000)
    limits.write_text('{"paper": {"max_gros": "5000"}}')
    with pytest.raises(ValueError, match="max_gros"):
        RiskConfig(limits_path=str(limits))


def _ratio(symbol: str, window: core.StressWindow) -> float:
    bars = read_daily_bars(symbol, adjustment="total")
    first = int(np.searchsorted(bars.date, window.start))
    last = int(np.searchsorted(bars.date, window.end, side="right")) - 1
    return float(bars.close[last] / bars.close[first - 1] - 1.0)


def _book(spy: str) -> dict[str, Any]:
    held = (("SPY", spy, None), ("AIG", "-2000", "36.25"), ("BTCUSDT", "1", "60000"))
    return {
        "account": "paper", "event_ns": START_NS,
        "positions": [
            {"account": "paper", "symbol": s, "quantity": q, "average_price": "1",
             "realized_pnl": "0", "unrealized_pnl": None, "mark_price": m, "currency": "USD",
             "event_ns": START_NS}
            for s, q, m in held
        ],
    }  # fmt: skip


def _pnl(day: int, equity: str) -> dict[str, Any]:
    t = START_NS + day * NS_PER_DAY
    return {"account": "paper", "currency": "USD", "starting_cash": "1000000", "cash": equity,
            "equity": equity, "realized_pnl": "0", "unrealized_pnl": "0", "fees": "0",
            "gross_exposure": "0", "net_exposure": "0", "event_ns": t}  # fmt: skip


async def test_stress_scenarios_and_the_accounts_own_var_backtest(engine: RiskEngine) -> None:
    bus = engine.bus
    var_sub = bus.subscribe("risk.var.paper")
    await bus.publish("trades.SPY", trade(168.5), event_ns=START_NS)
    (flat,) = await take(var_sub, 1)
    assert [(s["scenario"], s["pnl"]) for s in flat.payload["stress"]] == [
        (core.LEHMAN_2008.name, 0.0), (core.COVID_2020_03.name, 0.0),
        (core.SHOCK_DOWN_10.name, 0.0),
    ]  # fmt: skip
    assert flat.payload["account_backtest"]["error"]
    days = engine.equity_days["paper"]
    start_day = START_NS // NS_PER_DAY
    runs = []
    # day 0: equity 1,000,000 and a book; day 1: −100,000 (beyond any VaR of it); day 2:
    # +5,000; day 3 still open
    for day, equity, quantity in ((0, "1000000", "1000"), (1, "900000", "1001"),
                             (2, "905000", "1002"), (3, "906000", "1003")):  # fmt: skip
        await bus.publish("pnl.paper", _pnl(day, equity), event_ns=START_NS)
        await until(lambda day=day: start_day + day in days)  # type: ignore[misc]
        await bus.publish("positions.paper", _book(quantity), event_ns=START_NS)
        (run,) = await take(var_sub, 1)
        runs.append(run.payload)
    first = runs[0]
    stress = {s["scenario"]: s for s in first["stress"]}
    spy, aig, btc = 168_500.0, -72_500.0, 60_000.0
    for window in core.DEFAULT_WINDOWS:
        got = stress[window.name]
        assert got["pnl"] == pytest.approx(
            spy * _ratio("SPY", window) + aig * _ratio("AIG", window), rel=1e-10
        )
        assert got["uncovered"] == ["BTCUSDT"] and got["positions"]["BTCUSDT"] == 0.0
        assert got["after_as_of"] is (window is core.COVID_2020_03)  # a 2013 replay
    shock = stress[core.SHOCK_DOWN_10.name]
    assert shock["pnl"] == pytest.approx(-0.1 * (spy + aig + btc), rel=1e-12)
    assert shock["positions"] == pytest.approx({"AIG": 7_250.0, "BTCUSDT": -6_000.0,
                                                "SPY": -16_850.0})  # fmt: skip
    # the backtest: 0 → 1 and 1 → 2 are the completed pairs with a VaR (day 3 is open)
    assert runs[2]["account_backtest"]["error"]  # one pair: Christoffersen needs two
    test = runs[3]["account_backtest"]
    assert test["days"] == 3 and test["observations"] == 2 and test["error"] is None
    for method, by_level in first["var"].items():
        for level, cell in by_level.items():
            # day 1's loss is beyond the VaR of day 0; day 2's gain never is
            assert runs[1]["var"][method][level]["var"] > 0.0 and cell["var"] < 100_000.0
            want = core.backtest(np.array([True, False]), float(level))
            row = test["var"][method][level]
            assert (row["observations"], row["failures"]) == (2, 1)
            assert row["pof_p"] == pytest.approx(want.pof.p_value, rel=1e-12)
            assert row["cc_p"] == pytest.approx(want.cc.p_value, rel=1e-12)
            assert row["traffic_light"] == want.traffic_light.zone.value
    assert (await engine.var_results.latest("paper")) == runs[3]


async def test_the_collar_reference_is_each_trade_price_on_the_grid_whatever_came_before(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trade prices are converted once each (prices recur) in a bounded memory: a recurring
    price, and one seen again after the memory was emptied, is the reference as at first."""
    monkeypatch.setattr("engines.risk.service.REFERENCES_REMEMBERED", 2)
    clock = ManualClock(START_NS)
    risk = RiskEngine(config(pg_schema), bus=MemoryBus(clock=clock), clock=clock)
    prices = [168.2, 168.25, 168.2, 168.30004, 168.19996, 168.2, 168.25]
    expected = ["168.2", "168.25", "168.2", "168.3", "168.2", "168.2", "168.25"]
    for n, (price, reference) in enumerate(zip(prices, expected, strict=True)):
        print_ = Trade("SPY", START_NS + n, START_NS + n, price, 100.0)
        await risk.on_trade(print_, Envelope("trades.SPY", n, "e", START_NS, START_NS, print_))
        assert risk.market.last_price["SPY"] == D(reference), price
        assert len(risk._reference_of["SPY"]) <= 2

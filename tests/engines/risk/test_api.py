"""Risk REST: switching an account to halted denies the next order with ``halted``; account,
denials and VaR read back; ``/risk/backtest`` on SPY equals the core functions called directly;
bad parameters answer 400 naming them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from falcon import testing

from engines.marketdata.daily import read_daily_bars
from engines.risk import core
from engines.risk.api import routes
from engines.risk.service import RiskConfig, RiskEngine
from engines.shell import create_app
from protocol.records import Order, OrderSide, OrderStatus, OrderType, encode
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from tests.support import until


@pytest.fixture
async def engine() -> AsyncIterator[RiskEngine]:
    clock = SystemClock()
    config = RiskConfig(var_methods=(core.VarMethod.HISTORICAL, core.VarMethod.NORMAL))
    running = RiskEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await running.start()
    yield running
    await running.stop()


def client(engine: RiskEngine) -> testing.ASGIConductor:
    return testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine)))


def intent(oid: str, qty: int = 10, side: str = "buy") -> dict[str, Any]:
    return encode(
        Order(
            client_order_id=oid, account="paper", strategy="ma", symbol="SPY",
            side=OrderSide(side), type=OrderType.MARKET, quantity=Decimal(qty),
            status=OrderStatus.INITIALIZED, event_ns=1,
        )
    )  # fmt: skip


async def test_halted_over_rest_denies_the_next_order(engine: RiskEngine) -> None:
    bus = engine.bus
    orders = bus.subscribe("orders.paper")
    await bus.publish("trades.SPY", {"s": "SPY", "t": 1, "r": 1, "p": 170.0, "q": 1.0})
    async with client(engine) as c:
        await bus.publish("intents.ma", intent("before"))
        (first,) = await asyncio.wait_for(orders.next_batch(1), 10)
        assert first.payload["status"] == "submitted"

        put = await c.simulate_put("/risk/paper/state", json={"state": "halted"})
        assert put.status_code == 200, put.text
        assert put.json == {"account": "paper", "state": "halted", "previous": "active"}
        await bus.publish("intents.ma", intent("during", side="sell"))
        (second,) = await asyncio.wait_for(orders.next_batch(1), 10)
        assert (second.payload["client_order_id"], second.payload["status"]) == ("during", "denied")
        assert second.payload["reason"] == "halted"

        account = (await c.simulate_get("/risk/paper")).json
        assert account["state"] == "halted" and account["denied"] == {"halted": 1}
        assert account["approved"] == 1 and account["pending"] == 1
        assert account["limits"]["default"]["max_order_quantity"] == "10000.0"
        await until(lambda: engine.var_results._newest.get("paper") is not None)
        account = (await c.simulate_get("/risk/paper")).json
        assert account["var"]["account"] == "paper"
        latest = await c.simulate_get("/risk/var/paper")
        assert latest.status_code == 200 and latest.json["var"]["normal"]["0.99"]["var"] == 0.0
        denials = await c.simulate_get("/risk/paper/denials")
        assert [d["client_order_id"] for d in denials.json["items"]] == ["during"]

        await c.simulate_put("/risk/paper/state", json={"state": "reducing_only"})
        await bus.publish("intents.ma", intent("adds"))
        await c.simulate_put("/risk/paper/state", json={"state": "active"})
        await bus.publish("intents.ma", intent("after"))
        out = await asyncio.wait_for(orders.next_batch(2), 10)
        while len(out) < 2:
            out += await asyncio.wait_for(orders.next_batch(1), 10)
        assert [(e.payload["status"], e.payload["reason"]) for e in out] == [
            ("denied", "reducing_only"), ("submitted", "")
        ]  # fmt: skip

        for body, parameter in (
            ({"state": "paused"}, "state"),
            ({}, "body"),
            ({"state": "halted", "why": "x"}, "body"),
        ):
            bad = await c.simulate_put("/risk/paper/state", json=body)
            assert bad.status_code == 400, body
            assert bad.json["error"]["parameter"] == parameter, bad.json
        missing = await c.simulate_put("/risk/nobody/state", json={"state": "halted"})
        assert missing.status_code == 404
        assert (await c.simulate_get("/risk/nobody")).status_code == 404
        assert (await c.simulate_get("/risk/var/nobody")).status_code == 404


@pytest.mark.parametrize(
    ("method", "level", "window"),
    [("historical", 0.99, 250), ("filtered_historical", 0.95, 500), ("normal", 0.975, 250)],
)
async def test_backtest_endpoint_equals_core(
    engine: RiskEngine, method: str, level: float, window: int
) -> None:
    bars = read_daily_bars("SPY", adjustment="total")
    r = bars.close[1:] / bars.close[:-1] - 1.0
    var = core.rolling_var(r, method, level, window=window)
    report = core.backtest(core.var_failures(r[window:], var[window:]), level)
    async with client(engine) as c:
        params = {"symbol": "spy", "method": method, "level": str(level), "window": str(window)}
        resp = await c.simulate_get("/risk/backtest", params=params)
    assert resp.status_code == 200, resp.text
    got = resp.json
    assert got["symbol"] == "SPY" and got["from"] == str(bars.date[1 + window])
    assert got["to"] == str(bars.date[-1])
    assert (got["observations"], got["failures"]) == (report.observations, report.failures)
    assert got["observations"] == r.size - window > 5_000
    for name in ("pof", "tuff", "cci", "cc"):
        test = getattr(report, name)
        assert got[name] == {"statistic": test.statistic, "df": test.df, "p_value": test.p_value}
    assert got["traffic_light"] == {
        "zone": report.traffic_light.zone.value,
        "probability": report.traffic_light.probability,
        "type_i": report.traffic_light.type_i,
    }
    assert got["passes_5pct"] is report.passes()
    assert np.isclose(got["expected"], (r.size - window) * (1 - level))


async def test_backtest_bad_parameters_name_themselves(engine: RiskEngine) -> None:
    cases = [
        ({}, "symbol"),
        ({"symbol": "XYZ"}, "symbol"),
        ({"symbol": "S P Y"}, "symbol"),
        ({"symbol": "SPY", "method": "monte_carlo_t"}, "method"),
        ({"symbol": "SPY", "method": "magic"}, "method"),
        ({"symbol": "SPY", "level": "1"}, "level"),
        ({"symbol": "SPY", "level": "0.3"}, "level"),
        ({"symbol": "SPY", "level": "x"}, "level"),
        ({"symbol": "SPY", "window": "10"}, "window"),
        ({"symbol": "SPY", "window": "2.5"}, "window"),
        ({"symbol": "SPY", "window": "100000"}, "window"),
    ]
    async with client(engine) as c:
        for params, parameter in cases:
            resp = await c.simulate_get("/risk/backtest", params=params)
            assert resp.status_code == 400, params
            assert resp.json["error"]["parameter"] == parameter, (params, resp.json)
            assert resp.json["error"]["message"]

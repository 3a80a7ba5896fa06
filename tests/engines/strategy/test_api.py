"""Strategy REST: strategies with their state, orders by account and status, one order,
enable/disable; 400/404 name the parameter."""

from __future__ import annotations

from falcon import testing

from engines.shell import create_app
from engines.strategy.api import routes
from tests.engines.strategy.support import drive, engine, market, spy_bars


async def test_rest_answers_strategies_orders_and_switches() -> None:
    strategy = engine()
    await drive(strategy, market(spy_bars(60)))
    app = create_app(strategy, version="t", routes=routes(strategy))
    async with testing.ASGIConductor(app) as client:
        listed = (await client.simulate_get("/strategy/strategies")).json["strategies"]
        assert [s["name"] for s in listed] == ["ma_cross", "vpin_guard"]
        guard = listed[1]
        assert guard["positions"] == {"SPY": "50"} and guard["targets"] == {"SPY": "50"}
        assert guard["open_orders"] == [] and guard["fills"] == 1

        filled = (await client.simulate_get("/strategy/orders?account=paper&status=filled")).json
        assert filled["items"] and {o["status"] for o in filled["items"]} == {"filled"}
        assert (await client.simulate_get("/strategy/orders?account=other")).json == {"items": []}
        one = filled["items"][0]
        got = await client.simulate_get(f"/strategy/orders/{one['client_order_id']}")
        assert got.status_code == 200 and got.json == one

        bad = await client.simulate_get("/strategy/orders?status=done")
        assert bad.status_code == 400 and bad.json["error"]["parameter"] == "status"
        missing = await client.simulate_get("/strategy/orders/nope")
        assert (
            missing.status_code == 404 and missing.json["error"]["parameter"] == "client_order_id"
        )

        off = await client.simulate_post("/strategy/ma_cross/disable")
        assert off.json == {"name": "ma_cross", "enabled": False}
        assert not strategy.strategies["ma_cross"].state.enabled
        assert (await client.simulate_post("/strategy/nope/enable")).status_code == 404
    before = strategy.strategies["ma_cross"].state.orders_sent
    await drive(strategy, market(spy_bars(60, first=60)))
    assert strategy.strategies["ma_cross"].state.orders_sent == before  # disabled: no callbacks

"""Portfolio REST on real PostgreSQL: positions, PnL with leverage and per-strategy attribution,
paged fill history; 404 for an unknown account, 400 naming a bad parameter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal as D

import pytest
from falcon import testing

from engines.portfolio.api import routes
from engines.portfolio.service import PortfolioConfig, PortfolioEngine
from engines.shell import create_app
from protocol.records import Fill, Liquidity, OrderSide, Trade, encode
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.support import TEST_DSN, migrated_schema, until

T0 = 1_381_152_600_000_000_000


@pytest.fixture
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_portfolio_api") as name:
        yield name


@pytest.fixture
async def engine(schema: str) -> AsyncIterator[PortfolioEngine]:
    clock = ManualClock(T0)
    config = PortfolioConfig(db_dsn=TEST_DSN, db_schema=schema, mark_throttle_ms=0)
    engine = PortfolioEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    yield engine
    await engine.stop()


def fill(n: int, side: OrderSide, quantity: int, price: str, strategy: str) -> Fill:
    return Fill(
        fill_id=f"F{n}",
        client_order_id=f"O{n}",
        account="paper",
        strategy=strategy,
        symbol="SPY",
        side=side,
        quantity=D(quantity),
        price=D(price),
        fee=D("1.00"),
        fee_currency="USD",
        liquidity=Liquidity.TAKER,
        event_ns=T0 + n,
    )


async def test_positions_pnl_and_fills_over_rest(engine: PortfolioEngine) -> None:
    fills = [
        fill(1, OrderSide.BUY, 100, "170.00", "trend"),
        fill(2, OrderSide.BUY, 50, "171.00", "vpin"),
        fill(3, OrderSide.SELL, 30, "172.00", "vpin"),
    ]
    for f in fills:
        await engine.bus.publish("fills.paper", encode(f), event_ns=f.event_ns)
    await until(lambda: engine.ledgers["paper"].fills == 3)
    await engine.bus.publish("trades.SPY", encode(Trade("SPY", T0 + 9, T0 + 9, 173.0, 5.0)))
    await until(lambda: engine.marks.price("SPY", 1) is not None)
    await until(lambda: engine.storage.store.stats().rows_queued == 0)

    app = create_app(engine, version="t", routes=routes(engine))
    async with testing.ASGIConductor(app) as client:
        book = (await client.simulate_get("/portfolio/paper/positions")).json
        # net long 120: cost 17 000 + 8 550 − 30/150 × 25 550 (= 5 110) = 20 440, avg 170.333…
        (spy,) = book["positions"]
        assert (spy["quantity"], spy["mark_price"], spy["realized_pnl"]) == ("120", "173", "50.00")
        assert spy["average_price"] == "170.3333333333"
        assert D(spy["unrealized_pnl"]) == 120 * D(173) - D(20_440)

        pnl = (await client.simulate_get("/portfolio/paper/pnl")).json
        # realized 30 × 172 − 5 110 = 50; unrealized 20 760 − 20 440 = 320; fees 3.00
        money = (D(pnl["realized_pnl"]), D(pnl["unrealized_pnl"]), D(pnl["fees"]))
        assert money == (D(50), D(320), D(3))
        assert D(pnl["equity"]) == D(1_000_000) + 50 + 320 - 3
        assert D(pnl["gross_exposure"]) == D(20_760)
        assert pnl["leverage"] == str((D(20_760) / D(1_000_367)).quantize(D("0.000001")))
        # attribution: trend long 100 @ 170 → 300 − 1; vpin long 20 after +30 realized → 20 × 2
        # + 30 − 2; both marked at the account's price (173): the totals sum to the account's
        usd = pnl["currencies"]["USD"]
        strategies = {name: D(t["total_pnl"]) for name, t in usd["strategies"].items()}
        assert strategies == {"trend": D(299), "vpin": D(68)}
        assert sum(strategies.values()) == D(usd["total_pnl"]) == D(367)
        # the streamed form (pnl.paper's AccountState.strategies): the same attribution
        streamed = pnl["strategies"]
        assert {n: D(t["realized_pnl"]) + D(t["unrealized_pnl"]) - D(t["fees"])
                for n, t in streamed.items()} == strategies  # fmt: skip
        trend = streamed["trend"]
        assert (D(trend["cash_flow"]), D(trend["market_value"])) == (D("-17001.00"), D(17_300))
        # 100 × 170 + 1 fee paid; 100 held at 173

        page = (await client.simulate_get("/portfolio/paper/fills", params={"limit": 2})).json
        rest = (
            await client.simulate_get(
                "/portfolio/paper/fills", params={"cursor": page["next_cursor"]}
            )
        ).json
        assert [f["fill_id"] for f in page["items"] + rest["items"]] == ["F1", "F2", "F3"]
        assert rest["next_cursor"] is None and page["account"] == "paper"
        window = await client.simulate_get(
            "/portfolio/paper/fills", params={"from": str(T0 + 2), "to": str(T0 + 3)}
        )
        assert [f["fill_id"] for f in window.json["items"]] == ["F2"]

        for path in ("positions", "pnl", "fills"):
            missing = await client.simulate_get(f"/portfolio/nobody/{path}")
            assert missing.status_code == 404
            assert missing.json["error"]["parameter"] == "account"
        bad = await client.simulate_get("/portfolio/paper/fills", params={"limit": "0"})
        assert bad.status_code == 400 and bad.json["error"]["parameter"] == "limit"
        bad = await client.simulate_get("/portfolio/paper/fills", params={"from": "yesterday"})
        assert bad.status_code == 400 and bad.json["error"]["parameter"] == "from"

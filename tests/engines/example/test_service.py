"""The example engine end to end: trades on the bus → ``signals.vwap.SYM`` published, stored in
PostgreSQL and served by the shell's latest/history resources; bad input counted, not fatal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from falcon import testing

from engines.example.api import routes
from engines.example.service import ExampleConfig, ExampleEngine
from engines.shell import create_app
from protocol.records import Trade, encode
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.support import TEST_DSN, migrated_schema, until

T0 = 1_381_152_600_000_000_000  # 2013-10-07 13:30 UTC


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_example") as name:
        yield name


@pytest.fixture
async def engine(schema: str) -> AsyncIterator[ExampleEngine]:
    clock = ManualClock(T0)
    config = ExampleConfig(db_dsn=TEST_DSN, db_schema=schema)
    engine = ExampleEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    yield engine
    await engine.stop()


def trade(i: int, price: float, size: float, symbol: str = "SPY") -> dict[str, object]:
    return encode(Trade(symbol, T0 + i, T0 + i, price, size))


async def test_trades_become_published_stored_and_served_vwap(engine: ExampleEngine) -> None:
    out = engine.bus.subscribe("signals.vwap.*")
    for i, (price, size) in enumerate([(100.0, 10.0), (101.0, 30.0), (99.0, 60.0)]):
        await engine.bus.publish("trades.SPY", trade(i, price, size), event_ns=T0 + i)
    await engine.bus.publish("trades.SPY", {"s": "SPY", "t": "soon"}, event_ns=T0)  # not a trade
    await engine.bus.publish("trades.SPY", trade(9, 100.0, 0.0), event_ns=T0)  # size rule
    published = []
    while len(published) < 3:
        published += [e.payload for e in await out.next_batch(10)]
    expected = (100.0 * 10 + 101.0 * 30 + 99.0 * 60) / 100.0
    assert [p["trades"] for p in published] == [1, 2, 3]
    assert published[-1]["vwap"] == pytest.approx(expected, rel=1e-15)
    await until(lambda: sum(engine.health()["bad_input"].get("trades.*", {}).values()) == 2)  # type: ignore[attr-defined]
    assert set(engine.health()["bad_input"]["trades.*"]) == {"wrong_type", "non_positive_size"}  # type: ignore[index]

    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        await until(lambda: engine.storage.store.stats().rows_queued == 0)
        latest = (await c.simulate_get("/vwap/SPY/latest")).json
        assert latest["vwap"] == pytest.approx(expected, rel=1e-15)
        page = (await c.simulate_get("/vwap/SPY/history", params={"limit": 2})).json
        rest = await c.simulate_get("/vwap/SPY/history", params={"cursor": page["next_cursor"]})
        assert [v["trades"] for v in page["items"] + rest.json["items"]] == [1, 2, 3]
        assert (await c.simulate_get("/vwap/QQQ/latest")).status_code == 404
        bad = await c.simulate_get("/vwap/SPY/history", params={"from": "yesterday"})
        assert bad.status_code == 400 and bad.json["error"]["parameter"] == "from"

"""VPIN engine on a MemoryBus: bus trades in, ``vpin.SYM`` out equal to batch mode; results in
real PostgreSQL read back through REST history; bad input counted, REST 400s with reasons."""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import numpy as np
import pytest
from falcon import testing

from engines.marketdata.records import TradeColumns
from engines.shell import EngineState, create_app
from engines.vpin.core import compute_vpin
from engines.vpin.service import VpinConfig, VpinEngine
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.storage.migrations import quote_identifier
from tests.support import TEST_DSN, until

DSN = TEST_DSN
START_NS = 1381152600_000_000_000  # 2013-10-07 09:30 New York
END_NS = START_NS + 20 * 60 * 1_000_000_000


@pytest.fixture(scope="module")
def window(spy_day: TradeColumns) -> TradeColumns:
    return spy_day.select((spy_day.event_ns >= START_NS) & (spy_day.event_ns < END_NS))


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    schema = f"nautilus_vpin_{secrets.token_hex(4)}"
    yield schema

    async def drop() -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
        finally:
            await connection.close()

    asyncio.run(drop())


def trade_payload(trades: TradeColumns, i: int) -> dict[str, Any]:
    return trades.trade(i).to_payload(trades.price_precision)


@pytest.fixture
async def engine(pg_schema: str) -> AsyncIterator[VpinEngine]:
    clock = SystemClock()
    config = VpinConfig(
        bucket_volume=100_000.0, window=10, sigma_seed=0.01, db_dsn=DSN, db_schema=pg_schema,
        warmup_bars=1024, warmup_symbols=0,
    )  # fmt: skip
    engine = VpinEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    yield engine
    await engine.stop()


async def test_bus_trades_give_batch_numbers_stored_in_postgres_and_served(
    engine: VpinEngine, window: TradeColumns
) -> None:
    published: list[dict[str, Any]] = []
    sub = engine.bus.subscribe("vpin.*")
    for i in range(len(window)):
        await engine.bus.publish("trades.SPY", trade_payload(window, i), event_ns=0)
    # a malformed message and a NaN-free bad trade: counted, never fatal
    await engine.bus.publish("trades.SPY", {"s": "SPY", "t": "x"}, event_ns=0)
    await engine.bus.publish(
        "trades.SPY", {**trade_payload(window, 0), "t": END_NS, "q": -3}, event_ns=0
    )
    reference = compute_vpin(window.event_ns, window.price, window.size, engine.config.params())
    # the last bar stays open in realtime: every bucket but those it would complete
    expected = [b for b in (reference.bucket(i) for i in range(len(reference)))
                if b.end_ns < window.event_ns[-1]]  # fmt: skip
    assert len(expected) > 20
    while len(published) < len(expected):
        batch = await asyncio.wait_for(sub.next_batch(1000), 10)
        published += [e.payload for e in batch]
    for got, want in zip(published, expected, strict=True):
        assert got["symbol"] == "SPY" and got["params"]["bucket_volume"] == 100_000.0
        for key, value in want.to_payload().items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    await until(lambda: sum(engine.health()["bad_input"].get("trades.*", {}).values()) == 1)  # type: ignore[attr-defined]
    health = engine.health()
    assert health["inputs"]["SPY"]["bad_size"] == 1  # type: ignore[index]
    assert engine.rejected.labels("bad_size")._value.get() == 1

    async with testing.ASGIConductor(create_app(engine, version="t")) as client:
        latest = (await client.simulate_get("/vpin/SPY/latest")).json
        assert latest["bucket"] == published[-1]["bucket"]
        await until(lambda: engine.storage.store.stats().rows_written >= len(published))
        first = await client.simulate_get("/vpin/SPY/history", params={"limit": 7})
        items, cursor = first.json["items"], first.json["next_cursor"]
        while cursor:
            page = await client.simulate_get(
                "/vpin/SPY/history", params={"limit": 7, "cursor": cursor}
            )
            items += page.json["items"]
            cursor = page.json["next_cursor"]
        assert [i["bucket"] for i in items] == [p["bucket"] for p in published]
        assert [i["vpin"] for i in items] == [p["vpin"] for p in published]
        ends = sorted({p["end_ns"] for p in published})
        lo, hi = ends[3], ends[8]  # several buckets may end on the same bar
        ranged = await client.simulate_get(
            "/vpin/SPY/history", params={"from": str(lo), "to": str(hi)}
        )
        want = [p["bucket"] for p in published if lo <= p["end_ns"] < hi]
        assert [i["bucket"] for i in ranged.json["items"]] == want and len(want) >= 5
        assert (await client.simulate_get("/vpin/QQQ/latest")).status_code == 404
        bad = await client.simulate_get("/vpin/SPY/history", params={"cursor": "@@"})
        assert bad.status_code == 400


async def test_post_batch_equals_core_and_rejects_bad_bodies(
    engine: VpinEngine, window: TradeColumns
) -> None:
    trades = [{"t": int(t), "p": float(p), "q": float(q)}
              for t, p, q in zip(window.event_ns, window.price, window.size, strict=True)]  # fmt: skip
    async with testing.ASGIConductor(create_app(engine, version="t")) as client:
        ok = await client.simulate_post(
            "/vpin/batch", json={"trades": trades, "params": {"bucket_volume": 50_000.0}}
        )
        assert ok.status_code == 200, ok.text
        reference = compute_vpin(
            window.event_ns, window.price, window.size,
            engine.config.params().__class__.from_payload(
                {"bucket_volume": 50_000.0}, engine.config.params()
            ),
        )  # fmt: skip
        got = ok.json["buckets"]
        assert len(got) == len(reference) > 40
        np.testing.assert_allclose([b["vpin"] for b in got], reference.vpin, rtol=1e-12)
        assert ok.json["inputs"]["accepted"] == len(window)
        cases = [
            ({"trades": []}, "trades"),
            ({"trades": [{"t": 1, "p": 10.0, "q": 0}]}, "trades[0].q"),
            ({"trades": [{"t": 1, "p": "x", "q": 1}]}, "trades[0].p"),
            ({"trades": [{"t": -1, "p": 1.0, "q": 1}]}, "trades[0].t"),
            ({"trades": trades[:5], "params": {"window": 0}}, "params"),
            ({"trades": trades[:5], "params": {"nope": 1}}, "params"),
            ({"symbol": "SPY", "from": "a", "to": 2}, "from"),
            ({"hello": 1}, "body"),
        ]
        for body, parameter in cases:
            resp = await client.simulate_post("/vpin/batch", json=body)
            assert resp.status_code == 400, body
            assert resp.json["error"]["parameter"] == parameter
            assert resp.json["error"]["message"]
        raw = await client.simulate_post(
            "/vpin/batch", body=b"{not json", headers={"content-type": "application/json"}
        )
        assert raw.status_code == 400
        late = [*trades[:3], {**trades[0], "t": trades[0]["t"] - 10**12}]
        resp = await client.simulate_post("/vpin/batch", json={"trades": late})
        assert resp.status_code == 200 and resp.json["inputs"]["late"] == 1
        assert all(math.isfinite(b["vpin"]) for b in got)


async def test_batch_compile_runs_in_the_background_and_ends_at_stop() -> None:
    """The stream does not wait for the JAX batch compile (the feeds start after VPIN), and a
    stop mid-compile ends it after the current shape, leaving no compute thread behind."""
    clock = SystemClock()
    quick = VpinEngine(
        VpinConfig(bucket_volume=1.0, warmup_bars=1024, warmup_symbols=1),
        bus=MemoryBus(clock=clock),
        clock=clock,
    )
    await quick.start()
    assert quick.state is EngineState.RUNNING and quick.health_extra()["batch_compiled"] is False
    await until(lambda: quick.health_extra()["batch_compiled"], 120)
    await quick.stop()
    slow = VpinEngine(
        VpinConfig(bucket_volume=1.0, warmup_bars=1 << 16, warmup_symbols=64),
        bus=MemoryBus(clock=clock),
        clock=clock,
    )
    await slow.start()
    await slow.stop()
    await until(
        lambda: not any(t.name.startswith("vpin-compute") for t in threading.enumerate()), 60
    )
    assert slow.batch_compiled is False

"""Enhanced VPIN engine: Binance trades and quotes over the bus make every classifier
available; the accuracy report over REST; the batch endpoint with aggressor flags."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from falcon import testing

from engines.evpin.service import EnhancedVpinConfig, EnhancedVpinEngine
from engines.marketdata import feeds
from engines.marketdata.records import Quote, Trade
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import SystemClock


@pytest.fixture
async def engine() -> AsyncIterator[EnhancedVpinEngine]:
    clock = SystemClock()
    config = EnhancedVpinConfig(
        bar_ns=1_000_000_000, bucket_volume=5.0, window=10, adv_days=0, warmup_bars=1024
    )
    engine = EnhancedVpinEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    yield engine
    await engine.stop()


async def test_trades_and_quotes_from_the_bus_feed_every_classifier(
    engine: EnhancedVpinEngine,
) -> None:
    events = [e for e in feeds.read_binance_feed() if isinstance(e, Trade | Quote)][:20_000]
    sub = engine.bus.subscribe("evpin.BTCUSDT")
    for event in events:
        channel = "trades.BTCUSDT" if isinstance(event, Trade) else "quotes.BTCUSDT"
        await engine.bus.publish(channel, event.to_payload(), event_ns=event.event_ns)
    await engine.bus.publish("quotes.BTCUSDT", {"s": "BTCUSDT", "b": "?"}, event_ns=0)
    got: list[dict[str, Any]] = []
    while not got or got[-1]["vpin"]["quote"] is None:
        got += [e.payload for e in await asyncio.wait_for(sub.next_batch(100), 10)]
    last = got[-1]
    assert all(v is not None and 0 <= v <= 1 for v in last["vpin"].values())
    assert last["band"][0] <= last["vpin"]["bvc_normal"] <= last["band"][1]
    assert last["params"]["restart_daily"] is True and last["volume"] == 5.0
    assert any(m["ofi"] != 0 for m in got)
    assert engine.health()["symbols"] == 1


async def test_accuracy_endpoint_and_batch(engine: EnhancedVpinEngine) -> None:
    async with testing.ASGIConductor(create_app(engine, version="t")) as client:
        resp = await client.simulate_get(
            "/evpin/accuracy", params={"bar_ms": "1000", "quote_lag_ms": "50", "spy_days": "0"}
        )
        assert resp.status_code == 200, resp.text
        rows = {r["classifier"]: r for r in resp.json["binance"]["classifiers"]}
        assert resp.json["binance"]["trades"] == 19_904  # shared/data/README.md
        assert rows["tick"]["trades"] == pytest.approx(0.964, abs=0.0005)
        assert rows["tick"]["volume"] == pytest.approx(0.946, abs=0.0005)
        assert set(rows) == {"tick", "quote", "bvc_normal", "bvc_t"}
        bad = await client.simulate_get("/evpin/accuracy", params={"spy_days": "9"})
        assert bad.status_code == 400 and bad.json["error"]["parameter"] == "spy_days"

        trades = [{"t": i * 10**9, "p": 100.0 + (i % 3), "q": 1.0, "a": "buy"} for i in range(40)]
        ok = await client.simulate_post(
            "/evpin/batch", json={"trades": trades, "params": {"band_z": 1.0}}
        )
        assert ok.status_code == 200, ok.text
        buckets = ok.json["buckets"]
        assert len(buckets) == 8 and ok.json["params"]["band_z"] == 1.0
        assert all(b["vpin"]["aggressor"] == 1.0 for b in buckets)  # every trade a buy
        wrong = await client.simulate_post(
            "/evpin/batch", json={"trades": [{**trades[0], "a": "up"}]}
        )
        assert wrong.status_code == 400 and wrong.json["error"]["parameter"] == "trades[0].a"

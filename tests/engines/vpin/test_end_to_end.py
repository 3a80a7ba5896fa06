"""Through the hub: bus + hub (port 0) + VPIN and Enhanced VPIN engines on real ports; SPY
trades published on ``trades.SPY`` reach a WebSocket client as ``vpin.SPY`` and ``evpin.SPY``
updates whose numbers equal batch mode on the same trades."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from engines.evpin.core import run_enhanced
from engines.evpin.service import EnhancedVpinConfig, EnhancedVpinEngine
from engines.marketdata.records import TradeColumns
from engines.shell import run_engine
from engines.vpin.core import compute_vpin
from engines.vpin.service import VpinConfig, VpinEngine
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.hub import Hub, HubConfig

START_NS = 1381152600_000_000_000  # 2013-10-07 09:30 New York
END_NS = START_NS + 15 * 60 * 1_000_000_000


async def test_vpin_and_evpin_reach_a_websocket_client_equal_to_batch(
    spy_day: TradeColumns,
) -> None:
    window = spy_day.select((spy_day.event_ns >= START_NS) & (spy_day.event_ns < END_NS))
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    hub = Hub(HubConfig(port=0, max_pending_messages=100_000), bus, clock=clock)
    common: dict[str, Any] = {"bucket_volume": 100_000.0, "window": 10, "port": 0,
                              "sigma_seed": 0.01, "warmup_bars": 1024, "warmup_symbols": 0}  # fmt: skip
    vpin = VpinEngine(VpinConfig(**common), bus=bus, clock=clock)
    evpin = EnhancedVpinEngine(EnhancedVpinConfig(**common, adv_days=0), bus=bus, clock=clock)
    plain = compute_vpin(window.event_ns, window.price, window.size, vpin.config.params())
    enhanced, _ = run_enhanced(window.event_ns, window.price, window.size, evpin.config.enhanced())
    last_open_bar = window.event_ns[-1] // 60_000_000_000 * 60_000_000_000
    want_vpin = {i: plain.bucket(i).to_payload() for i in range(len(plain))
                 if plain.end_ns[i] <= last_open_bar}  # fmt: skip
    want_evpin = {b.bucket: b.to_payload() for b in enhanced if b.end_ns <= last_open_bar}
    assert len(want_vpin) == len(want_evpin) > 30

    await hub.start()
    hub.declare(["vpin.SPY", "evpin.SPY"])
    engines = []
    try:
        engines = [await run_engine(vpin, port=0), await run_engine(evpin, port=0)]
        async with connect(f"ws://127.0.0.1:{hub.port}/ws", max_size=None) as ws:
            await ws.send(orjson.dumps(
                {"op": "subscribe", "id": 1, "channels": ["vpin.SPY", "evpin.SPY"]}
            ).decode())  # fmt: skip
            for i in range(len(window)):
                trade = window.trade(i).to_payload(window.price_precision)
                await bus.publish("trades.SPY", trade, event_ns=int(window.event_ns[i]))
                if i % 500 == 0:
                    await asyncio.sleep(0.001)
            seen: dict[str, dict[int, dict[str, Any]]] = {"vpin.SPY": {}, "evpin.SPY": {}}
            last_v, last_e = max(want_vpin), max(want_evpin)
            while last_v not in seen["vpin.SPY"] or last_e not in seen["evpin.SPY"]:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
                for msg in frame["messages"] if frame["type"] == "batch" else [frame]:
                    if msg["type"] == "update":
                        seen[msg["channel"]][msg["data"]["bucket"]] = msg["data"]
        assert len(seen["vpin.SPY"]) > 30 and len(seen["evpin.SPY"]) > 30
        for bucket, got in seen["vpin.SPY"].items():
            for key, value in want_vpin[bucket].items():
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        for bucket, got in seen["evpin.SPY"].items():
            want = want_evpin[bucket]
            for key in ("vpin", "signed_vpin", "buy"):
                assert got[key].keys() == want[key].keys()
                for name, value in want[key].items():
                    assert (got[key][name] is None) == (value is None)
                    assert value is None or got[key][name] == pytest.approx(value, rel=1e-12)
            assert got["vpin"]["aggressor"] is None and got["vpin"]["quote"] is None
            assert got["band"] == pytest.approx(want["band"], rel=1e-12)
            assert got["vpin"]["bvc_normal"] == pytest.approx(want_vpin[bucket]["vpin"], rel=1e-12)
    finally:
        for running in engines:
            await running.stop()
        await hub.stop()
        await bus.close()

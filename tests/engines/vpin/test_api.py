"""``POST /vpin/batch`` with many symbols: each symbol's answer is ``compute_vpin`` on its trades
(and the single-symbol body's answer), the limits in config hold, a 400 names the bad field; the
enhanced engine, which reuses the route, answers per symbol with its own batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from falcon import testing

from engines.evpin.service import EnhancedVpinConfig, EnhancedVpinEngine
from engines.marketdata.records import TradeColumns
from engines.shell import create_app
from engines.vpin.core import VpinParams, compute_vpin
from engines.vpin.service import VpinConfig, VpinEngine
from realtime.bus import MemoryBus
from realtime.clock import SystemClock

START_NS = 1381152600_000_000_000  # 2013-10-07 09:30 New York
MIN = 60_000_000_000


def trade_list(t: np.ndarray, p: np.ndarray, q: np.ndarray) -> list[dict[str, Any]]:
    return [{"t": int(a), "p": float(b), "q": float(c)}
            for a, b, c in zip(t.tolist(), p.tolist(), q.tolist(), strict=True)]  # fmt: skip


@pytest.fixture(scope="module")
def posted(spy_day: TradeColumns) -> dict[str, list[dict[str, Any]]]:
    """Two SPY windows as two symbols, a synthetic walk, and a symbol without trades."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, start in (("SPY", START_NS), ("SPYPM", START_NS + 300 * MIN)):
        part = spy_day.select((spy_day.event_ns >= start) & (spy_day.event_ns < start + 8 * MIN))
        out[name] = trade_list(part.event_ns, part.price, part.size)
    rng = np.random.default_rng(9)
    t = np.sort(rng.integers(START_NS, START_NS + 90 * MIN, 3_000))
    p = np.round(50.0 * np.exp(np.cumsum(rng.normal(0.0, 5e-4, 3_000))), 2)
    out["SYN"] = trade_list(t, p, rng.integers(1, 500, 3_000).astype(np.float64))
    out["NONE"] = []
    return out


async def started(engine: VpinEngine) -> AsyncIterator[VpinEngine]:
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
async def engine() -> AsyncIterator[VpinEngine]:
    clock = SystemClock()
    config = VpinConfig(
        bucket_volume=20_000.0, window=10, sigma_seed=0.01, warmup_bars=1024, warmup_symbols=4,
        max_batch_symbols=4, max_batch_trades=30_000,
    )  # fmt: skip
    async for running in started(VpinEngine(config, bus=MemoryBus(clock=clock), clock=clock)):
        yield running


async def test_many_symbols_answer_compute_vpin_per_symbol(
    engine: VpinEngine, posted: dict[str, list[dict[str, Any]]]
) -> None:
    assert 10_000 < sum(map(len, posted.values())) <= 30_000
    overrides = {"bucket_volume": 15_000.0}
    params = VpinParams.from_payload(overrides, engine.config.params())
    async with testing.ASGIConductor(create_app(engine, version="t")) as client:
        resp = await client.simulate_post(
            "/vpin/batch", json={"symbols": posted, "params": overrides}
        )
        assert resp.status_code == 200, resp.text
        answer = resp.json
        published = {**params.to_payload(), "bucket_volume_source": "request"}
        assert answer["params"] == published
        assert list(answer["symbols"]) == list(posted)
        for symbol, trades in posted.items():
            t = np.array([x["t"] for x in trades], dtype=np.int64)
            p = np.array([x["p"] for x in trades], dtype=np.float64)
            q = np.array([x["q"] for x in trades], dtype=np.float64)
            want = compute_vpin(t, p, q, params)
            got = answer["symbols"][symbol]
            assert got["params"] == published
            assert got["inputs"] == want.counts.to_payload()
            assert got["buckets"] == [want.bucket(i).to_payload() for i in range(len(want))]
            if trades:
                assert len(got["buckets"]) > 5, symbol
                single = await client.simulate_post(
                    "/vpin/batch", json={"trades": trades, "params": overrides}
                )
                assert single.status_code == 200
                assert single.json == got
        assert answer["symbols"]["NONE"] == {
            "params": published,
            "inputs": want_empty(),
            "buckets": [],
        }


def want_empty() -> dict[str, float]:
    return {"accepted": 0, "bad_size": 0, "bad_price": 0, "late": 0,
            "zero_sigma_bars": 0, "discarded_volume": 0.0}  # fmt: skip


async def test_many_symbol_bodies_rejected_with_the_field_named(
    engine: VpinEngine, posted: dict[str, list[dict[str, Any]]]
) -> None:
    one = {"t": START_NS, "p": 10.0, "q": 5.0}
    cases = [
        ({"symbols": []}, "symbols"),
        ({"symbols": {}}, "symbols"),
        ({"symbols": {f"S{k}": [one] for k in range(5)}}, "symbols"),  # > max_batch_symbols
        ({"symbols": {"A": [one] * 15_001, "B": [one] * 15_000}}, "symbols"),  # > max trades
        ({"symbols": {"": [one]}}, "symbols"),
        ({"symbols": {"SPY": {"t": [1]}}}, "symbols.SPY"),
        ({"symbols": {"SPY": [one, {**one, "q": 0}]}}, "symbols.SPY[1].q"),
        ({"symbols": {"SPY": [one], "QQQ": [{**one, "p": None}]}}, "symbols.QQQ[0].p"),
        ({"symbols": {"SPY": [{**one, "t": -1}]}}, "symbols.SPY[0].t"),
        ({"symbols": {"SPY": ["x"]}}, "symbols.SPY[0]"),
        ({"symbols": {"SPY": [one]}, "trades": [one]}, "body"),
        ({"symbols": {"SPY": [one]}, "params": {"window": 0}}, "params"),
        ({"symbols": {"SPY": [one]}, "params": {"nope": 1}}, "params"),
        ({"symbols": {"SPY": [one]}, "params": []}, "params"),
    ]
    async with testing.ASGIConductor(create_app(engine, version="t")) as client:
        for body, parameter in cases:
            resp = await client.simulate_post("/vpin/batch", json=body)
            assert resp.status_code == 400, body
            assert resp.json["error"]["parameter"] == parameter, body
            assert resp.json["error"]["message"]
        at_limit = {"symbols": {"A": [one] * 15_000, "B": [one] * 15_000}}
        assert (await client.simulate_post("/vpin/batch", json=at_limit)).status_code == 200


async def test_enhanced_engine_answers_many_symbols_with_its_own_batch(
    posted: dict[str, list[dict[str, Any]]],
) -> None:
    clock = SystemClock()
    config = EnhancedVpinConfig(
        bucket_volume=20_000.0, window=10, adv_days=0, warmup_bars=1024, warmup_symbols=4
    )
    engine = EnhancedVpinEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    two = {s: posted[s] for s in ("SPY", "SYN")}
    async for running in started(engine):
        async with testing.ASGIConductor(create_app(running, version="t")) as client:
            many = await client.simulate_post(
                "/evpin/batch", json={"symbols": two, "params": {"t_df": 5.0}}
            )
            assert many.status_code == 200, many.text
            for symbol, trades in two.items():
                single = await client.simulate_post(
                    "/evpin/batch", json={"trades": trades, "params": {"t_df": 5.0}}
                )
                assert single.json["params"] == many.json["params"]
                assert single.json["buckets"] == many.json["symbols"][symbol]["buckets"]
                assert len(single.json["buckets"]) > 5
            assert many.json["params"]["t_df"] == 5.0  # the enhanced parameters, not VPIN's
            assert "signed_vpin" in many.json["symbols"]["SPY"]["buckets"][0]

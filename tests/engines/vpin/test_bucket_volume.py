"""VPIN's bucket volume V per symbol, for every bundled feed, at the default settings.

The rule (``VpinConfig.bucket_volume_rule``): the ``bucket_volumes`` table, else the
``bucket_volume`` setting, else the instrument table's reference ADV / 50 floored to the lot, else
the symbol's first ``adv_probe_bars`` bars (held, then bucketed). References: ELO's SPY bucket
(``VpinParams()``, what the reference tests use), the bundled files, batch mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from falcon import testing

from engines.evpin.core import run_enhanced
from engines.evpin.service import EnhancedVpinConfig, EnhancedVpinEngine
from engines.marketdata.feeds import SimulatorConfig, SyntheticMarket
from engines.marketdata.records import TradeColumns
from engines.marketdata.service import FeedSource, MarketDataConfig, MarketDataEngine
from engines.shell import ConfigError, create_app, load_config
from engines.vpin.config import BucketVolumeSource, VpinConfig
from engines.vpin.core import (
    NS_PER_DAY,
    BucketVolumeProbe,
    VpinParams,
    compute_vpin,
    probe_bucket_volume,
)
from engines.vpin.service import VpinEngine
from realtime.bus import Envelope, MemoryBus
from realtime.clock import SystemClock
from tests.support import until

START_NS = 1381152600_000_000_000  # 2013-10-07 09:30 New York
MINUTE = 60_000_000_000
#: compile only the smallest batch shape: start-up speed, not a bucket setting
QUICK: dict[str, Any] = {"warmup_bars": 1024, "warmup_symbols": 0}


def test_default_rule_per_bundled_symbol() -> None:
    rule = VpinConfig().bucket_volume_rule()
    # SPY: ELO's bucket, the number the reference tests and README figures use
    assert rule.resolve("SPY") == (VpinParams().bucket_volume, BucketVolumeSource.REFERENCE)
    assert rule.resolve("SPY") == (2_514_583.0, BucketVolumeSource.REFERENCE)
    # BTCUSDT: 218.95776 BTC / 50, floored to the 0.00001 lot
    assert rule.resolve("BTCUSDT") == (4.37915, BucketVolumeSource.REFERENCE)
    assert rule.resolve("AIG") == (161_930.0, BucketVolumeSource.REFERENCE)
    assert rule.resolve("SIM00") is None  # probed
    assert rule.resolve("AAPL") is None  # in the table, but no reference ADV
    table = VpinConfig(bucket_volumes=("BTCUSDT:500", "SIM00:1e6")).bucket_volume_rule()
    assert table.resolve("BTCUSDT") == (500.0, BucketVolumeSource.TABLE)
    assert table.resolve("SIM00") == (1e6, BucketVolumeSource.TABLE)
    assert table.resolve("SPY") == (2_514_583.0, BucketVolumeSource.REFERENCE)
    every = VpinConfig(bucket_volume=7.0, bucket_volumes=("SPY:9",)).bucket_volume_rule()
    assert every.resolve("SPY") == (9.0, BucketVolumeSource.TABLE)
    assert every.resolve("BTCUSDT") == (7.0, BucketVolumeSource.SETTING)
    assert every.resolve(None) == (7.0, BucketVolumeSource.SETTING)
    # Enhanced VPIN shares the rule (its own variables)
    enhanced = load_config(EnhancedVpinConfig, {"NAUTILUS_EVPIN_BUCKET_VOLUMES": "SPY:3"})
    assert enhanced.bucket_volume_rule().resolve("SPY") == (3.0, BucketVolumeSource.TABLE)
    assert enhanced.bucket_volume_rule().resolve("BTCUSDT") == (
        4.37915,
        BucketVolumeSource.REFERENCE,
    )


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"NAUTILUS_VPIN_BUCKET_VOLUMES": "SPY:-5"}, "NAUTILUS_VPIN_BUCKET_VOLUMES"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUMES": "SPY=5"}, "NAUTILUS_VPIN_BUCKET_VOLUMES"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUMES": "SPY:lots"}, "NAUTILUS_VPIN_BUCKET_VOLUMES"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUMES": "SPY:5,SPY:6"}, "NAUTILUS_VPIN_BUCKET_VOLUMES"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUMES": ":5"}, "NAUTILUS_VPIN_BUCKET_VOLUMES"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUMES": "BTCUSDT:inf"}, "NAUTILUS_VPIN_BUCKET_VOLUMES"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUME": "-1"}, "NAUTILUS_VPIN_BUCKET_VOLUME"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUME": "nan"}, "NAUTILUS_VPIN_BUCKET_VOLUME"),
        ({"NAUTILUS_VPIN_BUCKET_VOLUME": "big"}, "NAUTILUS_VPIN_BUCKET_VOLUME"),
        ({"NAUTILUS_VPIN_ADV_PROBE_BARS": "0"}, "NAUTILUS_VPIN_ADV_PROBE_BARS"),
        ({"NAUTILUS_VPIN_INSTRUMENTS": "/nonexistent.json"}, "NAUTILUS_VPIN_INSTRUMENTS"),
    ],
)
def test_bad_settings_are_one_error_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(VpinConfig, environ)
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: ")
    assert str(raised.value).count("NAUTILUS_") == 1 or variable.endswith("INSTRUMENTS")


def test_bad_settings_of_enhanced_vpin_name_its_own_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(EnhancedVpinConfig, {"NAUTILUS_EVPIN_BUCKET_VOLUMES": "BTCUSDT"})
    assert raised.value.variable == "NAUTILUS_EVPIN_BUCKET_VOLUMES"
    table = tmp_path / "instruments.json"
    table.write_text(json.dumps({"instruments": [{"s": "XYZ", "price_precision": 2, "adv": -3}]}))
    with pytest.raises(ConfigError) as bad_adv:
        load_config(EnhancedVpinConfig, {"NAUTILUS_EVPIN_INSTRUMENTS": str(table)})
    assert bad_adv.value.variable == "NAUTILUS_EVPIN_INSTRUMENTS" and "adv" in str(bad_adv.value)


def test_probe_is_the_first_bars_volume_rate_over_a_day() -> None:
    params = VpinParams(bar_ns=MINUTE, buckets_per_day=50)
    t0 = 1_700_000_000 * 1_000_000_000 // MINUTE * MINUTE
    # bars 0..2 watched; a bad trade first (ignored), a late one (before the first bar: left out)
    rows = [
        (t0 + 1, 10.0, 0.0),
        (t0 + 5, 10.0, 300.0),
        (t0 - MINUTE, 10.0, 50.0),
        (t0 + MINUTE + 3, 10.1, 200.0),
        (t0 + 2 * MINUTE + 9, 10.2, 100.0),
        (t0 + 3 * MINUTE, 10.2, 1.0),  # the first trade after the probe: not in it
        (t0 + 3 * MINUTE + 1, 10.2, 7.0),
    ]
    probe = BucketVolumeProbe(params, 3)
    answers = [probe.add(t, p, q) for t, p, q in rows]
    want = 600.0 * (NS_PER_DAY / (3 * MINUTE)) / 50  # 600 per 3 minutes, a day, / 50
    assert answers[:5] == [None] * 5 and answers[5] == pytest.approx(want, rel=1e-15)
    t, p, q = (np.array(c) for c in zip(*rows, strict=True))
    assert probe_bucket_volume(t.astype(np.int64), p, q, params, 3) == answers[5]
    assert probe_bucket_volume(t[:5].astype(np.int64), p[:5], q[:5], params, 3) is None


@asynccontextmanager
async def running(*engines: Any) -> AsyncIterator[None]:
    for engine in engines:
        await engine.start()
    try:
        yield
    finally:
        for engine in reversed(engines):
            await engine.stop(drain_timeout_s=1.0)


async def drained(sub: Any) -> list[Envelope]:
    out: list[Envelope] = []
    while sub.pending:
        out += await sub.next_batch(100_000)
    return out


def seen(engine: Any, symbol: str | None = None) -> int:
    """Trades an engine's calculators have taken (accepted or refused by a rule)."""
    inputs = engine.health_extra()["inputs"]
    return sum(
        int(c["accepted"] + c["bad_size"] + c["bad_price"] + c["late"])
        for s, c in inputs.items()
        if symbol is None or s == symbol
    )


def closed(buckets: Any, last_trade_ns: int, bar_ns: int = MINUTE) -> int:
    """How many of batch mode's buckets realtime has published: those ending by the open bar."""
    return int(np.count_nonzero(np.asarray(buckets) <= last_trade_ns // bar_ns * bar_ns))


async def test_binance_replay_gives_buckets_at_the_default_settings() -> None:
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    trades_sub = bus.subscribe("trades.BTCUSDT")
    vpin_sub, evpin_sub = bus.subscribe("vpin.BTCUSDT"), bus.subscribe("evpin.BTCUSDT")
    vpin = VpinEngine(VpinConfig(**QUICK), bus=bus, clock=clock)
    evpin = EnhancedVpinEngine(EnhancedVpinConfig(**QUICK), bus=bus, clock=clock)
    feed = MarketDataConfig(
        feed=FeedSource.BINANCE, speed=0.0, loop=False, daily=False, bar_specs=("1m",)
    )
    marketdata = MarketDataEngine(feed, bus=bus, clock=clock)
    async with running(vpin, evpin, marketdata):
        await until(lambda: marketdata.progress.done, 60)
        trades = [e.payload for e in await drained(trades_sub)]
        await until(lambda: seen(vpin) == seen(evpin) == len(trades), 30)
        published = [e.payload for e in await drained(vpin_sub)]
        enhanced = [e.payload for e in await drained(evpin_sub)]
    t = np.array([x["t"] for x in trades], dtype=np.int64)
    p = np.array([x["p"] for x in trades], dtype=np.float64)
    q = np.array([x["q"] for x in trades], dtype=np.float64)
    want = compute_vpin(t, p, q, VpinParams(bucket_volume=4.37915))
    assert len(published) == closed(want.end_ns, int(t.max())) > 50
    for got, i in zip(published, range(len(published)), strict=True):
        assert got["params"]["bucket_volume"] == 4.37915
        assert got["params"]["bucket_volume_source"] == "reference"
        for key, value in want.bucket(i).to_payload().items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # Enhanced VPIN: the same V on the first day, buckets restarted at UTC midnight
    want_enhanced, _ = run_enhanced(t, p, q, evpin.config.enhanced(4.37915))
    assert len(enhanced) == closed([b.end_ns for b in want_enhanced], int(t.max())) > 50
    assert enhanced[0]["params"]["bucket_volume"] == 4.37915
    assert {b["start_ns"] // NS_PER_DAY for b in enhanced} == {19943, 19944}


async def test_spy_at_the_default_settings_is_elo_unchanged(spy_day: TradeColumns) -> None:
    part = spy_day.select(
        (spy_day.event_ns >= START_NS) & (spy_day.event_ns < START_NS + 25 * MINUTE)
    )
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    sub = bus.subscribe("vpin.SPY")
    vpin = VpinEngine(VpinConfig(**QUICK), bus=bus, clock=clock)
    async with running(vpin):
        for i in range(len(part)):
            trade = part.trade(i).to_payload(part.price_precision)
            await bus.publish("trades.SPY", trade, event_ns=int(part.event_ns[i]))
        await until(lambda: seen(vpin) == len(part), 30)
        published = [e.payload for e in await drained(sub)]
    want = compute_vpin(part.event_ns, part.price, part.size, VpinParams())
    assert len(published) == closed(want.end_ns, int(part.event_ns.max())) >= 4
    for i, got in enumerate(published):
        assert got["params"] == {**VpinParams().to_payload(), "bucket_volume_source": "reference"}
        assert {k: got[k] for k in want.bucket(i).to_payload()} == want.bucket(i).to_payload()


def simulated(hours: float) -> list[Any]:
    """Two simulator symbols at 20 events/s (trades and quotes) for ``hours`` of event time."""
    market = SyntheticMarket(SimulatorConfig(n_symbols=2, events_per_second=20.0, seed=3))
    return market.next_chunk(int(hours * 3600 * 20)).records()


async def test_simulator_symbols_are_probed_and_give_buckets_batch_agrees() -> None:
    events = simulated(3.0)
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    subs = {s: bus.subscribe(f"vpin.{s}") for s in ("SIM0", "SIM1")}
    enhanced_sub = bus.subscribe("evpin.SIM0")
    vpin = VpinEngine(VpinConfig(**QUICK), bus=bus, clock=clock)
    evpin = EnhancedVpinEngine(EnhancedVpinConfig(**QUICK), bus=bus, clock=clock)
    trades = [e for e in events if e.KIND == "trade"]
    async with running(vpin, evpin):
        for event in events:
            kind = "trades" if event.KIND == "trade" else "quotes"
            await bus.publish(f"{kind}.{event.symbol}", event.to_payload(), event_ns=event.event_ns)
        await until(lambda: seen(vpin) == seen(evpin) == len(trades), 60)
        published = {s: [e.payload for e in await drained(sub)] for s, sub in subs.items()}
        enhanced = [e.payload for e in await drained(enhanced_sub)]
        async with testing.ASGIConductor(create_app(vpin, version="t")) as client:
            posted = {
                s: [{"t": x.event_ns, "p": x.price, "q": x.size} for x in trades if x.symbol == s]
                for s in subs
            }
            batch = (await client.simulate_post("/vpin/batch", json={"symbols": posted})).json
    for symbol, got in published.items():
        rows = [x for x in trades if x.symbol == symbol]
        t = np.array([x.event_ns for x in rows], dtype=np.int64)
        p = np.array([x.price for x in rows])
        q = np.array([x.size for x in rows])
        volume = probe_bucket_volume(t, p, q, VpinParams(), 5)
        assert volume is not None
        want = compute_vpin(t, p, q, VpinParams(bucket_volume=volume))
        assert len(got) == closed(want.end_ns, int(t.max())) >= 4, symbol
        assert got[0]["params"]["bucket_volume"] == volume
        assert got[0]["params"]["bucket_volume_source"] == "probe"
        # the held trades were bucketed: the first bucket starts at the first trade's bar
        assert got[0]["start_ns"] == t[0] // MINUTE * MINUTE
        for i, bucket in enumerate(got):
            assert {k: bucket[k] for k in want.bucket(i).to_payload()} == pytest.approx(
                want.bucket(i).to_payload(), rel=1e-9
            )
        answer = batch["symbols"][symbol]
        assert answer["params"] == got[0]["params"]
        for want_bucket, bucket in zip(answer["buckets"], got, strict=False):
            assert {k: bucket[k] for k in want_bucket} == pytest.approx(want_bucket, rel=1e-9)
    assert batch["params"]["bucket_volume"] is None  # the two symbols' V differ
    assert len(enhanced) >= 4 and enhanced[0]["params"]["bucket_volume_source"] == "probe"


def test_nautilus_up_refuses_a_bad_table_in_one_line() -> None:
    """What a user sees: exit 2 and one line naming the variable, no traceback."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAUTILUS_")}
    environ |= {"NAUTILUS_HUB_PORT": "0", "NAUTILUS_VPIN_BUCKET_VOLUMES": "BTCUSDT:-1"}
    done = subprocess.run(
        [sys.executable, "-m", "engines.shell.cli", "up"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "nautilus: NAUTILUS_VPIN_BUCKET_VOLUMES: entry 'BTCUSDT:-1': "
        "want SYMBOL:V with V a number > 0"
    ]

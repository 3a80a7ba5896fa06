"""Features engine on a MemoryBus: SPY minute bars in, ``features.SPY`` out equal to the batch
functions (and to TA-Lib, and to the closed-form session VWAP) bar by bar, nulls exactly in the
lookback; bad bars counted and skipped without touching the state; warm-up from stored bars on
real PostgreSQL; the settings' grammar and checks."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import talib

from engines.features import core
from engines.features.service import (
    FeaturesConfig,
    FeaturesEngine,
    finite,
    parse_feature,
    session_starts,
)
from engines.marketdata import feeds
from engines.shell import load_config
from protocol.records import Bar, encode
from realtime.bus import MemoryBus, Subscription
from realtime.clock import ManualClock
from realtime.storage import Storage, StorageConfig
from tests.support import TEST_DSN, migrated_schema, until

MIN_NS = 60_000_000_000
FIELDS = ("open", "high", "low", "close", "volume")
INPUT_FIELD = {"real": "close", "real0": "high", "real1": "low"}


def spy_bars() -> dict[str, np.ndarray]:
    """Lean's SPY minute trade bars of the five bundled days (2013-10-07..11), concatenated."""
    days = [
        feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(d)) for d in feeds.lean_days()
    ]
    out = {f: np.concatenate([getattr(b, f) for b in days]) for f in FIELDS}
    out["start_ns"] = np.concatenate([b.start_ns for b in days])
    return out


def bar(data: dict[str, np.ndarray], i: int, symbol: str = "SPY", **change: Any) -> dict[str, Any]:
    """Bar ``i`` of ``data`` as a bus payload (``change`` overrides record fields)."""
    start = int(data["start_ns"][i])
    fields: dict[str, Any] = {
        "symbol": symbol,
        "spec": "1m",
        "start_ns": start,
        "end_ns": start + MIN_NS,
        **{f: float(data[f][i]) for f in FIELDS},
        "dollar_volume": float(data["close"][i] * data["volume"][i]),
        "trades": 1,
    }
    return encode(Bar(**(fields | change)))


def bar_row(data: dict[str, np.ndarray], i: int, symbol: str = "SPY") -> Bar:
    start = int(data["start_ns"][i])
    o, h, lo, c, v = (float(data[f][i]) for f in FIELDS)
    return Bar(symbol, "1m", start, start + MIN_NS, o, h, lo, c, v, c * v, 1)


def batch(
    data: dict[str, np.ndarray], requests: tuple[core.FeatureRequest, ...], offset_ns: int = 0
) -> dict[str, np.ndarray]:
    """Every requested feature by the batch path over ``data``: key → values per bar."""
    columns = {f: data[f] for f in FIELDS}
    columns["session_start"] = session_starts(data["start_ns"], offset_ns)
    out: dict[str, np.ndarray] = {}
    for request in requests:
        spec = core.CATALOG[request.function]
        inputs = {k: columns[INPUT_FIELD.get(k, k)] for k in spec.inputs}
        results = core.compute(request.function, inputs, **request.params)
        out.update(zip(request.keys(), results, strict=True))
    return out


def assert_values_equal(published: list[dict[str, Any]], expected: dict[str, np.ndarray]) -> None:
    """Published ``values`` bar by bar equal the batch arrays: ``null`` exactly where the batch
    is NaN, else equal to 1e-12 relative (a floor of 1e-12 × the series' median magnitude)."""
    assert set(published[0]["values"]) == set(expected)
    for key, want in expected.items():
        got = np.array(
            [np.nan if p["values"][key] is None else p["values"][key] for p in published]
        )
        np.testing.assert_array_equal(np.isnan(got), ~np.isfinite(want), err_msg=key)
        finite = np.isfinite(want)
        if finite.any():
            scale = float(np.median(np.abs(want[finite]))) * 1e-12
            np.testing.assert_allclose(
                got[finite], want[finite], rtol=1e-12, atol=scale, err_msg=key
            )


async def collect(sub: Subscription, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out += [e.payload for e in await asyncio.wait_for(sub.next_batch(4096), 20)]
    return out


@pytest.fixture(scope="module")
def spy() -> dict[str, np.ndarray]:
    return spy_bars()


@asynccontextmanager
async def running(config: FeaturesConfig, t0: int) -> AsyncIterator[FeaturesEngine]:
    clock = ManualClock(t0)
    engine = FeaturesEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


@pytest.fixture
async def engine(spy: dict[str, np.ndarray]) -> AsyncIterator[FeaturesEngine]:
    async with running(FeaturesConfig(warm_up_bars=0), int(spy["start_ns"][0])) as started:
        yield started


# ── streaming = batch = TA-Lib ─────────────────────────────────────────────────────────────


async def test_published_values_equal_batch_and_talib_bar_by_bar(
    engine: FeaturesEngine, spy: dict[str, np.ndarray]
) -> None:
    n = len(spy["close"])
    assert n > 4000  # five sessions of minutes, pre- and post-market included
    sub = engine.bus.subscribe("features.*")
    for i in range(n):
        await engine.bus.publish("bars.1m.SPY", bar(spy, i), event_ns=int(spy["start_ns"][i]))
    published = await collect(sub, n)

    assert [p["start_ns"] for p in published] == spy["start_ns"].tolist()
    first = published[0]
    assert first["symbol"] == "SPY" and first["spec"] == "1m" and first["source"] == "features"
    assert first["end_ns"] == first["event_ns"] == first["start_ns"] + MIN_NS
    expected = batch(spy, core.DEFAULT_FEATURES)
    assert len(expected) == len(engine.keys) > 60
    assert_values_equal(published, expected)
    # the nulls are the lookback: e.g. SMA(30) null for 29 bars, then a value
    sma = [p["values"]["sma"] for p in published]
    assert sma[:29] == [None] * 29 and None not in sma[29:]

    # outside references: TA-Lib's C library on the same bars, and the closed-form session VWAP
    last = published[-1]["values"]
    close, high, low, volume = spy["close"], spy["high"], spy["low"], spy["volume"]
    references = {
        "sma": talib.SMA(close),
        "rsi": talib.RSI(close),
        "macd.macdsignal": talib.MACD(close)[1],
        "bbands.upperband": talib.BBANDS(close)[0],
        "atr": talib.ATR(high, low, close),
        "adx": talib.ADX(high, low, close),
        "obv": talib.OBV(close, volume),
        "beta": talib.BETA(high, low),
        "kama": talib.KAMA(close),
    }
    for key, ref in references.items():
        assert last[key] == pytest.approx(ref[-1], rel=1e-9), key
        got = np.array(
            [np.nan if p["values"][key] is None else p["values"][key] for p in published]
        )
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=key)
        np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-9, err_msg=key)
    typical = (high + low + close) / 3.0
    day = (spy["start_ns"] // 86_400_000_000_000).tolist()
    for i in (0, 1, 827, 828, 829, n - 1):  # 828: the second session's first bar
        same = [j for j in range(i + 1) if day[j] == day[i]]
        vwap = sum(typical[j] * volume[j] for j in same) / sum(volume[j] for j in same)
        assert published[i]["values"]["vwap"] == pytest.approx(vwap, rel=1e-12), i
    assert engine.health()["symbols"] == 1
    assert engine.bars_total._value.get() == n


async def test_a_configured_set_publishes_only_its_keys(spy: dict[str, np.ndarray]) -> None:
    config = FeaturesConfig(
        warm_up_bars=0,
        features=("sma5=SMA:timeperiod=5", "BBANDS:timeperiod=10:nbdevup=1.5", "VWAP"),
    )
    async with running(config, int(spy["start_ns"][0])) as engine:
        sub = engine.bus.subscribe("features.*")
        for i in range(40):
            await engine.bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
        published = await collect(sub, 40)
        keys = ["sma5", "bbands.upperband", "bbands.middleband", "bbands.lowerband", "vwap"]
        assert list(published[0]["values"]) == keys == list(engine.keys)
        part = {k: v[:40] for k, v in spy.items()}
        assert_values_equal(published, batch(part, config.requests()))
        assert published[-1]["values"]["sma5"] == pytest.approx(
            float(np.mean(spy["close"][35:40])), rel=1e-13
        )


# ── bad bars ───────────────────────────────────────────────────────────────────────────────


async def test_bad_bars_are_counted_and_leave_the_state_untouched(
    engine: FeaturesEngine, spy: dict[str, np.ndarray]
) -> None:
    sub = engine.bus.subscribe("features.*")
    for i in range(10):
        await engine.bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
    refused = [
        bar(spy, 5),  # older than the last
        bar(spy, 9),  # the same start again
        bar(spy, 10, close=-1.0),
        bar(spy, 10, high=math.nan),
        bar(spy, 10, volume=math.inf),
        bar(spy, 10, spec="5m"),
        {"s": "SPY", "t": "soon"},  # not a bar
        {"s": "SPY"},
    ]
    for payload in refused:
        await engine.bus.publish("bars.1m.SPY", payload, event_ns=0)
    await engine.bus.publish("bars.1m.SPY", bar(spy, 10), event_ns=0)
    published = await collect(sub, 11)
    assert len(published) == 11 and published[-1]["start_ns"] == int(spy["start_ns"][10])
    part = {k: v[:11] for k, v in spy.items()}
    assert_values_equal(published, batch(part, core.DEFAULT_FEATURES))
    await until(lambda: sum(engine.health()["bad_input"].get("bars.1m.*", {}).values()) == 8)  # type: ignore[attr-defined]
    counted = engine.health()["bad_input"]["bars.1m.*"]  # type: ignore[index]
    assert counted["out_of_order"] == 1 and counted["duplicate_bar"] == 1
    assert counted["invalid_value"] == 3 and counted["wrong_spec"] == 1
    assert sum(counted.values()) == 8 and engine.health()["errors"] == 0
    assert engine.state.value == "running"


# ── warm-up from stored bars (PostgreSQL) ──────────────────────────────────────────────────


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_features") as name:
        yield name


async def store_bars(schema: str, rows: list[Bar]) -> None:
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema))
    await storage.open()
    try:
        assert storage.store.write_bars(rows) == len(rows)
        await until(lambda: storage.store.stats().rows_written >= len(rows))
    finally:
        await storage.close(5.0)


async def test_warm_up_replays_the_stored_bars_before_the_first_one(
    schema: str, spy: dict[str, np.ndarray]
) -> None:
    live = 700  # SPY's first live bar; 700 bars before it are stored, and a later one too
    year_ns = 365 * 86_400 * 1_000_000_000
    gap = {k: v.copy() for k, v in spy.items()}
    gap["start_ns"][60:] += year_ns  # GAP: 60 stored bars, its live bar a year later
    await store_bars(
        schema,
        [bar_row(spy, i) for i in (*range(live), live + 5)]
        + [bar_row(gap, i, "GAP") for i in range(60)],
    )
    config = FeaturesConfig(warm_up_bars=300, db_dsn=TEST_DSN, db_schema=schema)
    async with running(config, int(spy["start_ns"][live])) as engine:
        sub = engine.bus.subscribe("features.*")
        await engine.bus.publish("bars.1m.SPY", bar(spy, live), event_ns=0)
        await engine.bus.publish("bars.1m.NEW", bar(spy, live, "NEW"), event_ns=0)
        await engine.bus.publish("bars.1m.GAP", bar(gap, 60, "GAP"), event_ns=0)
        await engine.bus.publish("bars.1m.SPY", bar(spy, live + 1), event_ns=0)
        got = {(p["symbol"], p["start_ns"]): p for p in await collect(sub, 4)}

        # SPY: the stream saw bars live-300 .. live-1, then the live ones (not the later stored one)
        warmed = {k: v[live - 300 : live + 2] for k, v in spy.items()}
        expected = batch(warmed, core.DEFAULT_FEATURES)
        spy_out = [got[("SPY", int(spy["start_ns"][i]))] for i in (live, live + 1)]
        assert_values_equal(spy_out, {k: v[-2:] for k, v in expected.items()})
        assert None not in spy_out[0]["values"].values()  # nothing left in warm-up
        from_start = batch({k: v[: live + 1] for k, v in spy.items()}, core.DEFAULT_FEATURES)
        assert spy_out[0]["values"]["ad"] != pytest.approx(from_start["ad"][-1], rel=1e-6)

        # NEW: nothing stored, so it starts cold
        new = got[("NEW", int(spy["start_ns"][live]))]["values"]
        assert new["sma"] is None and new["obv"] is not None
        # GAP: the backward walk crosses a year without bars and finds all 60
        gap_expected = batch({k: v[:61] for k, v in gap.items()}, core.DEFAULT_FEATURES)
        gap_out = got[("GAP", int(gap["start_ns"][60]))]
        assert_values_equal([gap_out], {k: v[-1:] for k, v in gap_expected.items()})

        warm_up = engine.health()["warm_up"]
        assert warm_up == {"bars": {"SPY": 300, "NEW": 0, "GAP": 60}, "failures": 0}
        assert engine.warm_up_bars_total._value.get() == 360
        await until(lambda: engine.storage.store.stats().rows_queued == 0)
        latest = await engine.values.latest("SPY")
        assert latest is not None and latest.start_ns == int(spy["start_ns"][live + 1])


async def test_warm_up_reads_no_more_than_asked_and_tolerates_an_empty_store(
    spy: dict[str, np.ndarray],
) -> None:
    """Memory storage (no DSN): an empty store means a cold start; stored bars are used."""
    config = FeaturesConfig(warm_up_bars=50, features=("SMA:timeperiod=40", "OBV"))
    async with running(config, 0) as engine:
        assert await engine.warm_up_history("SPY", int(spy["start_ns"][100])) == []
        engine.storage.store.write_bars(bar_row(spy, i) for i in range(100))
        history = await engine.warm_up_history("SPY", int(spy["start_ns"][100]))
        assert [r.start_ns for r in history] == spy["start_ns"][50:100].tolist()
        sub = engine.bus.subscribe("features.*")
        await engine.bus.publish("bars.1m.SPY", bar(spy, 100), event_ns=0)
        (out,) = await collect(sub, 1)
        assert out["values"]["sma"] == pytest.approx(
            float(np.mean(spy["close"][61:101])), rel=1e-13
        )
        obv = talib.OBV(spy["close"][50:101], spy["volume"][50:101])[-1]
        assert out["values"]["obv"] == pytest.approx(obv, rel=1e-12)


# ── settings ───────────────────────────────────────────────────────────────────────────────


def test_feature_entries_parse() -> None:
    assert parse_feature("RSI") == core.FeatureRequest("RSI", {}, None)
    assert parse_feature("sma50=sma:timeperiod=50") == core.FeatureRequest(
        "SMA", {"timeperiod": 50}, "sma50"
    )
    assert parse_feature("BBANDS:timeperiod=20:nbdevup=2.5") == core.FeatureRequest(
        "BBANDS", {"timeperiod": 20, "nbdevup": 2.5}, None
    )
    config = load_config(
        FeaturesConfig,
        {
            "NAUTILUS_FEATURES_FEATURES": "RSI, fast=EMA:timeperiod=5",
            "NAUTILUS_FEATURES_BAR_SPEC": "5m",
        },
    )
    assert config.bar_spec == "5m" and config.features == ("RSI", "fast=EMA:timeperiod=5")
    assert FeaturesConfig().requests() == core.DEFAULT_FEATURES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ("NOPE",)}, "unknown function"),
        ({"features": ("OFI",)}, "needs quotes"),
        ({"features": ("SMA:timeperiod=1",)}, "timeperiod"),
        ({"features": ("SMA:period=5",)}, "period"),
        ({"features": ("SMA:timeperiod",)}, "param=value"),
        ({"features": ("SMA:timeperiod=x",)}, "not a number"),
        ({"features": ("SMA", "sma=EMA")}, "duplicate"),
        ({"features": ("=",)}, "no function"),
        ({"bar_spec": "2x"}, "bar spec"),
        ({"warm_up_bars": -1}, "warm_up_bars"),
        ({"session_offset_ns": -1}, "session_offset_ns"),
        ({"max_compute_bars": 0}, "max_compute_bars"),
    ],
)
def test_bad_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeaturesConfig(**change)


def test_session_starts_mark_each_new_day() -> None:
    day = 86_400_000_000_000
    starts = np.array([0, MIN_NS, day - 1, day, day + MIN_NS, 3 * day], dtype=np.int64)
    assert session_starts(starts, 0).tolist() == [1, 0, 0, 1, 0, 1]
    assert session_starts(starts, MIN_NS).tolist() == [1, 1, 0, 0, 1, 1]
    assert session_starts(starts[:0], 0).tolist() == []


async def test_an_unreachable_store_means_a_cold_start_not_a_failure(
    spy: dict[str, np.ndarray],
) -> None:
    config = FeaturesConfig(warm_up_bars=10, db_dsn="postgresql://postgres@127.0.0.1:9/none")
    async with running(config, 0) as engine:
        sub = engine.bus.subscribe("features.*")
        await engine.bus.publish("bars.1m.SPY", bar(spy, 0), event_ns=0)
        (out,) = await collect(sub, 1)
        assert out["values"]["obv"] == spy["volume"][0] and out["values"]["sma"] is None
        health = engine.health()
        assert health["warm_up"] == {"bars": {"SPY": 0}, "failures": 1}
        assert any("without warm-up" in issue for issue in health["issues"])  # type: ignore[attr-defined]
        assert engine.state.value == "running"


def test_infinite_values_are_published_as_null() -> None:
    values: dict[str, float | None] = {"a": 1.0, "b": None, "c": math.inf, "d": -math.inf}
    assert finite(values) == {"a": 1.0, "b": None, "c": None, "d": None}
    huge: dict[str, float | None] = {"a": 1e308, "b": 1e308}  # their sum overflows; each is finite
    assert finite(huge) == huge
    assert finite({"a": 2.5, "b": None}) == {"a": 2.5, "b": None}

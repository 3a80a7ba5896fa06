"""Features REST: the catalog against ``talib.abstract``; ``POST /features/compute`` over posted
arrays and over bars stored in PostgreSQL against TA-Lib (and the batch core for the estimators
TA-Lib lacks); every bad input a 400 naming its field; latest/history of the published stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import talib
from falcon import testing
from talib import abstract

from engines.features import core
from engines.features.api import routes
from engines.features.service import FeaturesConfig, FeaturesEngine, session_starts
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.engines.features.test_service import (
    FIELDS,
    bar,
    bar_row,
    collect,
    spy_bars,
)
from tests.support import TEST_DSN, migrated_schema, until

MAX_BARS = 1_000


@pytest.fixture(scope="module")
def spy() -> dict[str, np.ndarray]:
    return spy_bars()


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_features_api") as name:
        yield name


@pytest.fixture
async def client(schema: str, spy: dict[str, np.ndarray]) -> AsyncIterator[testing.ASGIConductor]:
    clock = ManualClock(int(spy["start_ns"][0]))
    config = FeaturesConfig(
        warm_up_bars=0,
        max_compute_bars=MAX_BARS,
        max_compute_functions=4,
        db_dsn=TEST_DSN,
        db_schema=schema,
    )
    engine = FeaturesEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        c.engine = engine  # type: ignore[attr-defined]
        yield c
    await engine.stop()


def day(spy: dict[str, np.ndarray], n: int = 390) -> dict[str, list[float]]:
    return {f: spy[f][:n].tolist() for f in FIELDS}


def series(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def assert_talib(got: list[float | None], ref: np.ndarray, label: str) -> None:
    """Equal to TA-Lib by core's reference bound: identical NaN/null mask, and
    |ours − talib| ≤ 1e-9 · max(|talib|, median |talib|) (the floor only matters where a window's
    result cancels to ~0, e.g. a slope of a flat stretch)."""
    values = series(got)
    np.testing.assert_array_equal(np.isnan(values), np.isnan(ref), err_msg=label)
    m = ~np.isnan(ref)
    if m.any():
        scale = max(float(np.median(np.abs(ref[m]))), 1e-300)
        err = np.abs(values[m] - ref[m]) / np.maximum(np.abs(ref[m]), scale)
        assert err.max() <= 1e-9, (label, float(err.max()))


# ── catalog ────────────────────────────────────────────────────────────────────────────────


async def test_catalog_lists_every_function_as_talib_abstract_does(
    client: testing.ASGIConductor,
) -> None:
    answer = (await client.simulate_get("/features/catalog")).json
    functions = {f["name"]: f for f in answer["functions"]}
    assert list(functions) == list(core.CATALOG)
    assert answer["stream"]["spec"] == "1m"
    assert answer["stream"]["features"] == list(client.engine.keys)  # type: ignore[attr-defined]
    talib_names = [n for n, f in functions.items() if f["talib"]]
    assert len(talib_names) == 49  # the list
    for name in talib_names:
        ours, theirs = functions[name], abstract.Function(name)  # type: ignore[attr-defined]
        assert ours["lookback"] == theirs.lookback, name
        assert ours["outputs"] == list(theirs.output_names), name
        defaults = {p["name"]: p["default"] for p in ours["parameters"]}
        assert defaults == dict(theirs.parameters), name
    for f in functions.values():
        assert f["inputs"] and all({"min", "max", "default"} <= set(p) for p in f["parameters"])


# ── compute over posted arrays ─────────────────────────────────────────────────────────────


async def test_compute_posted_arrays_equals_talib(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    body = {
        **day(spy),
        "functions": [
            "rsi",
            {"name": "SMA", "params": {"timeperiod": 50}},
            {"name": "BBANDS", "params": {"timeperiod": 10, "nbdevup": 1.5, "matype": 1}},
            {"name": "STOCH"},
        ],
    }
    resp = await client.simulate_post("/features/compute", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json
    assert answer["bars"] == 390
    rsi, sma, bbands, stoch = answer["results"]
    close, high, low = (spy[f][:390] for f in ("close", "high", "low"))
    assert rsi["name"] == "RSI" and rsi["params"] == {"timeperiod": 14} and rsi["lookback"] == 14
    assert_talib(rsi["outputs"]["real"], talib.RSI(close), "RSI")
    assert sma["lookback"] == 49
    assert_talib(sma["outputs"]["real"], talib.SMA(close, timeperiod=50), "SMA")
    ref = talib.BBANDS(close, timeperiod=10, nbdevup=1.5, nbdevdn=2.0, matype=1)  # type: ignore[arg-type]
    assert bbands["params"] == {"timeperiod": 10, "nbdevup": 1.5, "nbdevdn": 2.0, "matype": 1}
    for label, r in zip(("upperband", "middleband", "lowerband"), ref, strict=True):
        assert_talib(bbands["outputs"][label], r, f"BBANDS.{label}")
    for label, r in zip(("slowk", "slowd"), talib.STOCH(high, low, close), strict=True):
        assert_talib(stoch["outputs"][label], r, f"STOCH.{label}")


async def test_compute_every_function_in_groups(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    """Every catalog function through the endpoint: TA-Lib's equal TA-Lib, the estimators equal
    the batch core (checked against their papers in test_core); ``real`` = close by default."""
    names = [n for n in core.CATALOG if n != "OFI"]
    posted = day(spy, 300)
    arrays = {f: np.asarray(v) for f, v in posted.items()}
    arrays["session_start"] = np.zeros(300)
    for start in range(0, len(names), 4):
        group = names[start : start + 4]
        resp = await client.simulate_post("/features/compute", json={**posted, "functions": group})
        assert resp.status_code == 200, resp.text
        for name, result in zip(group, resp.json["results"], strict=True):
            spec = core.CATALOG[name]
            inputs = [
                arrays[{"real": "close", "real0": "high", "real1": "low"}.get(k, k)]
                for k in spec.inputs
            ]
            if spec.talib:
                ref = getattr(talib, name)(*inputs)
                refs = ref if isinstance(ref, tuple) else (ref,)
                for label, r in zip(spec.outputs, refs, strict=True):
                    assert_talib(result["outputs"][label], r, f"{name}.{label}")
            else:
                want = core.compute(name, dict(zip(spec.inputs, inputs, strict=True)))
                for label, w in zip(spec.outputs, want, strict=True):
                    got = series(result["outputs"][label])
                    np.testing.assert_array_equal(np.isnan(got), np.isnan(w), err_msg=name)
                    np.testing.assert_allclose(got[~np.isnan(w)], w[~np.isnan(w)], rtol=1e-12)


async def test_compute_takes_real_arrays_and_sessions(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    close, open_ = spy["close"][:200], spy["open"][:200]
    returns = np.diff(np.log(spy["close"][:201]))  # negative values are fine for ``real``
    body = {
        "real0": close.tolist(),
        "real1": open_.tolist(),
        "real": returns.tolist(),
        "functions": [{"name": "BETA", "params": {"timeperiod": 20}}, "STDDEV"],
    }
    resp = await client.simulate_post("/features/compute", json=body)
    assert resp.status_code == 200, resp.text
    beta, stddev = resp.json["results"]
    assert_talib(beta["outputs"]["real"], talib.BETA(close, open_, timeperiod=20), "BETA")
    assert_talib(stddev["outputs"]["real"], talib.STDDEV(returns), "STDDEV")

    # VWAP with posted sessions: the closed form Σ typical·v / Σ v, reset where a session starts
    n = 1000
    starts = session_starts(spy["start_ns"][:n], 0)
    body = {**day(spy, n), "session_start": starts.tolist(), "functions": ["VWAP"]}
    vwap = series(
        (await client.simulate_post("/features/compute", json=body)).json["results"][0]["outputs"][
            "real"
        ]
    )
    h, lo, c, v = (spy[f][:n] for f in ("high", "low", "close", "volume"))
    typical = (h + lo + c) / 3.0
    second = int(np.flatnonzero(starts)[1])  # the second session's first bar
    assert 0 < second < n - 1
    for i in (0, 100, second - 1, second, second + 1, n - 1):
        first = 0 if i < second else second
        want = (typical[first : i + 1] * v[first : i + 1]).sum() / v[first : i + 1].sum()
        assert vwap[i] == pytest.approx(want, rel=1e-12), i
    # a single bar and no bars at all are answered, not refused
    one = await client.simulate_post(
        "/features/compute", json={**day(spy, 1), "functions": ["SMA", "OBV"]}
    )
    assert one.status_code == 200 and one.json["results"][0]["outputs"]["real"] == [None]
    assert one.json["results"][1]["outputs"]["real"] == [spy["volume"][0]]
    empty = await client.simulate_post(
        "/features/compute", json={**day(spy, 0), "functions": ["SMA"]}
    )
    assert empty.status_code == 200 and empty.json["bars"] == 0


# ── compute over stored bars ───────────────────────────────────────────────────────────────


async def test_compute_over_stored_bars_equals_talib_and_the_stream(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    engine: FeaturesEngine = client.engine  # type: ignore[attr-defined]
    store = engine.storage.store
    store.write_bars(bar_row(spy, i, "STO") for i in range(1200))
    await until(lambda: store.stats().rows_queued == 0 and store.stats().rows_written >= 1200)
    lo, hi = int(spy["start_ns"][100]), int(spy["start_ns"][900])
    body = {"symbol": "STO", "from": lo, "to": hi, "functions": ["MACD", "ADX", "VWAP"]}
    resp = await client.simulate_post("/features/compute", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json
    assert answer["bars"] == 800 and answer["symbol"] == "STO" and answer["spec"] == "1m"
    assert answer["start_ns"] == spy["start_ns"][100:900].tolist()
    close, high, low = (spy[f][100:900] for f in ("close", "high", "low"))
    macd, adx, vwap = answer["results"]
    for label, r in zip(("macd", "macdsignal", "macdhist"), talib.MACD(close), strict=True):
        assert_talib(macd["outputs"][label], r, f"MACD.{label}")
    assert_talib(adx["outputs"]["real"], talib.ADX(high, low, close), "ADX")

    # the same bars through the stream: the last published values are the batch's last ones
    sub = engine.bus.subscribe("features.STO")
    for i in range(100, 900):
        await engine.bus.publish("bars.1m.STO", bar(spy, i, "STO"), event_ns=0)
    published = await collect(sub, 800)
    last = published[-1]["values"]
    assert last["macd.macdsignal"] == pytest.approx(macd["outputs"]["macdsignal"][-1], rel=1e-12)
    assert last["adx"] == pytest.approx(adx["outputs"]["real"][-1], rel=1e-12)
    assert [p["values"]["vwap"] for p in published] == pytest.approx(
        vwap["outputs"]["real"], rel=1e-12
    )

    too_many = {**body, "from": 0, "to": int(spy["start_ns"][1100])}
    resp = await client.simulate_post("/features/compute", json=too_many)
    assert resp.status_code == 400 and resp.json["error"]["parameter"] == "to"
    none = await client.simulate_post("/features/compute", json={**body, "symbol": "NONE"})
    assert none.status_code == 200 and none.json["bars"] == 0 and none.json["start_ns"] == []


# ── bad input: 400 naming the field ────────────────────────────────────────────────────────


def bad_bodies(spy: dict[str, np.ndarray]) -> list[tuple[Any, str]]:
    ok = day(spy, 10)
    sma = ["SMA"]

    def with_(key: str, index: int, value: Any) -> dict[str, Any]:
        values = list(ok[key])
        values[index] = value
        return {**ok, key: values, "functions": sma}

    return [
        ({**ok, "functions": ["NOPE"]}, "functions[0].name"),
        ({**ok, "functions": ["SMA", {"name": "MAMA2"}]}, "functions[1].name"),
        (
            {**ok, "functions": [{"name": "SMA", "params": {"timeperiod": 1}}]},
            "functions[0].params.timeperiod",
        ),
        (
            {**ok, "functions": [{"name": "SMA", "params": {"timeperiod": 100_001}}]},
            "functions[0].params.timeperiod",
        ),
        (
            {**ok, "functions": [{"name": "SMA", "params": {"timeperiod": 2.5}}]},
            "functions[0].params.timeperiod",
        ),
        (
            {**ok, "functions": [{"name": "SMA", "params": {"timeperiod": "5"}}]},
            "functions[0].params.timeperiod",
        ),
        (
            {**ok, "functions": [{"name": "SMA", "params": {"timeperiod": True}}]},
            "functions[0].params.timeperiod",
        ),
        (
            {**ok, "functions": [{"name": "SMA", "params": {"period": 5}}]},
            "functions[0].params.period",
        ),
        (
            {**ok, "functions": [{"name": "BBANDS", "params": {"matype": 9}}]},
            "functions[0].params.matype",
        ),
        (
            {**ok, "functions": [{"name": "BBANDS", "params": {"matype": 7}}]},
            "functions[0].params.matype",
        ),
        ({**ok, "functions": [{"name": "SMA", "nope": 1}]}, "functions[0]"),
        ({**ok, "functions": [3]}, "functions[0]"),
        ({**ok, "functions": []}, "functions"),
        ({**ok, "functions": ["SMA"] * 5}, "functions"),
        ({**ok}, "body"),  # functions missing
        (with_("close", 3, -1.0), "close"),
        (with_("volume", 0, -5.0), "volume"),
        (with_("close", 2, None), "close[2]"),
        (with_("high", 4, "x"), "high[4]"),
        ({**ok, "low": ok["low"][:9], "functions": sma}, "low"),
        ({**ok, "volume": [*ok["volume"], 1.0], "functions": sma}, "volume"),
        ({"close": ok["close"], "functions": ["ATR"]}, "high"),
        ({**{k: v for k, v in ok.items() if k != "volume"}, "functions": ["OBV"]}, "volume"),
        ({**day(spy, MAX_BARS + 1), "functions": sma}, "open"),
        ({**ok, "close": 5, "functions": sma}, "close"),
        ({**ok, "symbol": "SPY", "from": 0, "to": 1, "functions": sma}, "body"),
        ({"functions": sma}, "body"),
        ({"symbol": "", "from": 0, "to": 1, "functions": sma}, "symbol"),
        ({"symbol": "SPY", "to": 1, "functions": sma}, "from"),
        ({"symbol": "SPY", "from": 0, "functions": sma}, "to"),
        ({"symbol": "SPY", "from": "a", "to": 1, "functions": sma}, "from"),
        ({"symbol": "SPY", "from": 5, "to": 1, "functions": sma}, "from"),
        ({"symbol": "SPY", "from": 0, "to": 1, "spec": "2x", "functions": sma}, "spec"),
        ({**ok, "functions": sma, "extra": 1}, "body"),
        ([1, 2], "body"),
    ]


async def test_bad_bodies_answer_400_naming_the_field(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    for body, parameter in bad_bodies(spy):
        resp = await client.simulate_post("/features/compute", json=body)
        assert resp.status_code == 400, (parameter, resp.text)
        error = resp.json["error"]
        assert error["parameter"] == parameter, (parameter, error)
        assert error["code"] == "invalid_parameter" and error["message"]
    for raw in (b"", b"{not json", b'{"functions": ["SMA"], "close": [1e999]}'):
        resp = await client.simulate_post(
            "/features/compute", body=raw, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400
        assert resp.json["error"]["parameter"] in ("body", "close[0]"), resp.text
    assert client.engine.health()["errors"] == 0  # type: ignore[attr-defined]


# ── latest and history (shell resources over the store) ────────────────────────────────────


async def test_latest_and_history_serve_what_was_published(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    engine: FeaturesEngine = client.engine  # type: ignore[attr-defined]
    sub = engine.bus.subscribe("features.HIS")
    for i in range(40):
        await engine.bus.publish("bars.1m.HIS", bar(spy, i, "HIS"), event_ns=0)
    published = await collect(sub, 40)
    await until(lambda: engine.storage.store.stats().rows_queued == 0)
    latest = (await client.simulate_get("/features/HIS/latest")).json
    assert latest == published[-1]
    assert latest["values"]["sma"] == pytest.approx(float(np.mean(spy["close"][10:40])), rel=1e-13)

    first = (await client.simulate_get("/features/HIS/history", params={"limit": 15})).json
    items, cursor = first["items"], first["next_cursor"]
    while cursor:
        page = await client.simulate_get(
            "/features/HIS/history", params={"limit": 15, "cursor": cursor}
        )
        items += page.json["items"]
        cursor = page.json["next_cursor"]
    assert items == published
    lo, hi = int(spy["start_ns"][5]), int(spy["start_ns"][12])
    ranged = await client.simulate_get(
        "/features/HIS/history", params={"from": str(lo), "to": str(hi)}
    )
    assert [i["start_ns"] for i in ranged.json["items"]] == spy["start_ns"][5:12].tolist()

    missing = await client.simulate_get("/features/NOPE/latest")
    assert missing.status_code == 404 and missing.json["error"]["parameter"] == "symbol"
    bad = await client.simulate_get("/features/HIS/history", params={"from": "yesterday"})
    assert bad.status_code == 400 and bad.json["error"]["parameter"] == "from"

"""ML REST on real PostgreSQL: the registry, stored predictions (latest/history per model, and
per model version), the walk-forward job over posted rows and over stored daily bars equal to
the core (itself checked against scikit-learn), each completed job a registered model version
that a restart still lists (bounded), every bad body a 400 naming its field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from falcon import testing

from engines.ml import api, core
from engines.ml.api import routes
from engines.ml.service import MlConfig, MlEngine
from engines.shell import create_app
from protocol.records import Bar
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from realtime.storage import Storage, StorageConfig
from tests.engines.ml.test_service import KEYS, WARM, bar, feature_rows, features
from tests.engines.ml.test_service import spy as spy
from tests.support import TEST_DSN, migrated_schema, until

DAY_NS = 86_400_000_000_000


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_ml_api") as name:
        yield name


@asynccontextmanager
async def serving(schema: str, **settings: Any) -> AsyncIterator[testing.ASGIConductor]:
    clock = ManualClock(0)
    config = MlConfig(features=KEYS, horizon=3, db_dsn=TEST_DSN, db_schema=schema,
                      max_walkforward_rows=5_000, **settings)  # fmt: skip
    engine = MlEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    try:
        app = create_app(engine, version="t", routes=routes(engine))
        async with testing.ASGIConductor(app) as c:
            c.engine = engine  # type: ignore[attr-defined]
            yield c
    finally:
        await engine.stop()


@pytest.fixture
async def client(schema: str) -> AsyncIterator[testing.ASGIConductor]:
    async with serving(schema) as c:
        yield c


async def finished(client: testing.ASGIConductor, job: str) -> dict[str, Any]:
    answer: dict[str, Any] = {}

    async def poll() -> bool:
        nonlocal answer
        answer = (await client.simulate_get(f"/ml/jobs/{job}")).json
        return bool(answer["status"] != "running")

    engine: MlEngine = client.engine  # type: ignore[attr-defined]
    await until(lambda: engine.jobs[job]["status"] != "running", timeout_s=60)
    await poll()
    return answer


async def test_predictions_stored_and_served_per_model(
    client: testing.ASGIConductor, spy: dict[str, np.ndarray]
) -> None:
    engine: MlEngine = client.engine  # type: ignore[attr-defined]
    x = feature_rows(spy)
    n = 60
    sub = engine.bus.subscribe("ml.logistic.*")
    for i in range(n):
        await engine.bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
        await engine.bus.publish("features.SPY", features(spy, x, i), event_ns=0)
    published: list[Any] = []
    while len(published) < n - WARM:
        try:
            published += [e.payload for e in await asyncio.wait_for(sub.next_batch(1000), 5)]
        except TimeoutError:
            raise AssertionError((len(published), engine.health())) from None
    await until(lambda: engine.storage.store.stats().rows_written >= 2 * (n - WARM))
    latest = await client.simulate_get("/ml/logistic/SPY/latest")
    assert latest.status_code == 200 and latest.json == published[-1]
    items: list[Any] = []
    cursor = None
    while True:
        page = await client.simulate_get(
            "/ml/logistic/SPY/history",
            params={"limit": 20, **({"cursor": cursor} if cursor else {})},
        )
        items += page.json["items"]
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert items == published
    linear = await client.simulate_get("/ml/linear/SPY/history")
    assert len(linear.json["items"]) == n - WARM and linear.json["items"][0]["model"] == "linear"
    unknown = await client.simulate_get("/ml/forest/SPY/latest")
    assert unknown.status_code == 400 and unknown.json["error"]["parameter"] == "model"
    assert (await client.simulate_get("/ml/logistic/QQQ/latest")).status_code == 404
    models = (await client.simulate_get("/ml/models")).json
    online = [m for m in models["models"] if m["source"] == "online"]
    assert [m["model"] for m in online] == list(core.ONLINE_MODELS)
    spy_state = models["models"][0]["symbols"]["SPY"]
    assert spy_state["version"] == 1 and spy_state["learned"] == n - WARM - 3
    assert models["models"][0]["features"] == list(KEYS)


async def test_walkforward_over_posted_rows_equals_the_core(client: testing.ASGIConductor) -> None:
    rng = np.random.default_rng(5)
    n = 600
    x = rng.normal(size=(n, 3))
    y = (x @ np.array([1.0, -0.5, 0.2]) + rng.normal(size=n) > 0).astype(int)
    body = {"x": x.tolist(), "y": y.tolist(), "horizon": 4, "n_splits": 5, "embargo": 0.01,
            "estimator": "logistic", "params": {"C": 0.3}}  # fmt: skip
    resp = await client.simulate_post("/ml/walkforward", json=body)
    assert resp.status_code == 202, resp.text
    job = resp.json["job"]
    done = await finished(client, job)
    assert done["status"] == "done" and done["progress"] == {"done": 5, "total": 5}
    splits = core.purged_kfold_splits(np.arange(n) + 4, 5, 0.01)
    want = core.walk_forward(x, y, splits, "logistic", {"C": 0.3})
    assert done["result"]["folds"] == [f.to_payload() for f in want]
    assert done["result"]["mean"]["auc"] == pytest.approx(np.mean([f.auc for f in want]))
    rolling = {
        **body,
        "scheme": "walk_forward",
        "test_size": 50,
        "max_train_size": 200,
        "n_splits": 6,
    }
    resp = await client.simulate_post("/ml/walkforward", json=rolling)
    done = await finished(client, resp.json["job"])
    splits = core.walk_forward_splits(n, 6, test_size=50, max_train_size=200, t1=np.arange(n) + 4)
    assert done["result"]["folds"] == [
        f.to_payload() for f in core.walk_forward(x, y, splits, "logistic", {"C": 0.3})
    ]
    models = (await client.simulate_get("/ml/models")).json
    assert [j["job"] for j in models["walkforward"]] == [job, resp.json["job"]]
    assert (await client.simulate_get("/ml/jobs/wf-999")).status_code == 404
    # each completed job is a version of the model its estimator and params name
    versions = [m for m in models["models"] if m["source"] == "walkforward"]
    assert [(v["model"], v["version"], v["job"]) for v in versions] == [
        ("logistic(C=0.3)", 1, job),
        ("logistic(C=0.3)", 2, resp.json["job"]),
    ]
    assert (
        versions[1]["folds"] == done["result"]["folds"]
        and versions[1]["mean"] == done["result"]["mean"]
    )
    assert versions[1]["scheme"] == "walk_forward" and versions[1]["window"] == {"rows": n}
    assert versions[1]["params"] == {"C": 0.3} and versions[1]["created_ns"] == 0  # the clock
    assert done["registered"] == {"model": "logistic(C=0.3)", "version": 2}


async def test_walkforward_over_stored_daily_bars(client: testing.ASGIConductor) -> None:
    engine: MlEngine = client.engine  # type: ignore[attr-defined]
    rng = np.random.default_rng(6)
    days = 300
    t0 = 1_000 * DAY_NS
    closes = {s: 50 * np.exp(np.cumsum(rng.normal(0, 0.01, days))) for s in ("AAA", "BBB")}
    rows = [Bar(s, "1d", t0 + i * DAY_NS, t0 + (i + 1) * DAY_NS, c, c, c, c, 1.0, c, 1)
            for s, cs in closes.items() for i, c in enumerate(cs.tolist())]  # fmt: skip
    engine.storage.store.write_bars(rows)
    await until(lambda: engine.storage.store.stats().rows_queued == 0)
    body = {"symbols": ["AAA", "BBB"], "from": t0, "to": t0 + days * DAY_NS, "horizon": 5,
            "n_splits": 4, "embargo": 0.01}  # fmt: skip
    resp = await client.simulate_post("/ml/walkforward", json=body)
    assert resp.status_code == 202, resp.text
    done = await finished(client, resp.json["job"])
    assert done["status"] == "done", done
    # the same panel from the closes: rows of both symbols in time order, t1 five days on
    start = t0 + np.arange(days) * DAY_NS
    design = core.pooled_daily_design({s: (closes[s], start) for s in ("AAA", "BBB")}, 5)
    x, y = design.x, design.y
    splits = core.purged_kfold_splits(design.t1, 4, 0.01, t0=design.t0)
    want = core.walk_forward(x, y, splits, "logistic", {})
    assert done["rows"] == 2 * (days - 25)
    assert done["result"]["folds"] == [f.to_payload() for f in want]
    registered = (await client.simulate_get("/ml/models")).json["models"][-1]
    assert registered["job"] == done["job"] and registered["model"] == "logistic"
    assert registered["window"] == {"rows": 2 * (days - 25), "symbols": ["AAA", "BBB"],
                                    "spec": "1d", "from_ns": int(design.t0.min()),
                                    "to_ns": int(design.t1.max())}  # fmt: skip


async def test_bad_walkforward_bodies_name_the_field(client: testing.ASGIConductor) -> None:
    x = [[0.1, 0.2]] * 40
    y = [0, 1] * 20
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "body"),
        ({"x": x, "y": y, "symbols": ["SPY"]}, "body"),
        ({"x": x}, "y"),
        ({"x": x, "y": y[:-1]}, "y"),
        ({"x": x, "y": [2] * 40}, "y"),
        ({"x": [[0.1, 0.2], [0.3], *x[2:]], "y": y}, "x[1]"),
        ({"x": [[0.1, "a"], *x[1:]], "y": y}, "x[0][1]"),
        ({"x": [[]] * 40, "y": y}, "x[0]"),
        ({"x": [[0.1, 0.2]] * 6_000, "y": [0, 1] * 3_000}, "x"),
        ({"x": x, "y": y, "t1": [0] * 39}, "t1"),
        ({"x": x, "y": y, "t1": [0] * 40}, "t1"),
        ({"x": x, "y": y, "estimator": "svm"}, "estimator"),
        ({"x": x, "y": y, "params": {"C": -1}}, "params"),
        ({"x": x, "y": y, "params": {"nope": 1}}, "params"),
        ({"x": x, "y": y, "n_splits": 1}, "n_splits"),
        ({"x": x, "y": y, "n_splits": 50, "scheme": "walk_forward"}, "n_splits"),
        ({"x": x, "y": y, "embargo": 1.5}, "embargo"),
        ({"x": x, "y": y, "scheme": "bootstrap"}, "scheme"),
        ({"x": x, "y": [0] * 40}, "n_splits"),  # a single class to train on
        ({"symbols": ["SPY"], "to": 5}, "from"),
        ({"symbols": [""], "from": 0, "to": 5}, "symbols"),
        ({"symbols": ["NONE"], "from": 0, "to": 5}, "symbols"),  # too few bars stored
        ({"x": x, "y": y, "unknown": 1}, "body"),
    ]
    for body, field in cases:
        resp = await client.simulate_post("/ml/walkforward", json=body)
        assert resp.status_code == 400, (body.keys(), resp.text)
        assert resp.json["error"]["parameter"] == field, (field, resp.json)
    engine: MlEngine = client.engine  # type: ignore[attr-defined]
    assert engine.jobs == {}


def separable(seed: int, n: int = 120) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return {"x": x.tolist(), "y": (x[:, 0] > 0).astype(int).tolist(), "n_splits": 3}


async def test_walkforward_versions_survive_a_restart_bounded(schema: str) -> None:
    """Three jobs of one name with room for two: the newest two listed, before and after a
    restart on the same database, and the next job numbers on (4), not from 1."""
    body = {**separable(1), "estimator": "kneighbors", "params": {"n_neighbors": 3}}
    name = "kneighbors(n_neighbors=3)"

    async def run_job(client: testing.ASGIConductor) -> dict[str, Any]:
        resp = await client.simulate_post("/ml/walkforward", json=body)
        assert resp.status_code == 202, resp.text
        return await finished(client, resp.json["job"])

    def listed(models: dict[str, Any]) -> list[tuple[int, str]]:
        return [(m["version"], m["job"]) for m in models["models"] if m["model"] == name]

    async with serving(schema, max_model_versions=2) as client:
        jobs = [(await run_job(client))["job"] for _ in range(3)]
        before = (await client.simulate_get("/ml/models")).json
        assert listed(before) == [(2, jobs[1]), (3, jobs[2])]
    async with serving(schema, max_model_versions=2) as client:
        after = (await client.simulate_get("/ml/models")).json
        assert [m for m in after["models"] if m["source"] == "walkforward"] == [
            m for m in before["models"] if m["source"] == "walkforward"
        ]
        assert after["walkforward"] == []  # jobs are not kept; their model versions are
        done = await run_job(client)
        assert done["registered"] == {"model": name, "version": 4}
        assert listed((await client.simulate_get("/ml/models")).json) == [
            (3, jobs[2]),
            (4, done["job"]),
        ]


async def test_the_registry_is_read_back_once_the_store_comes_up(schema: str) -> None:
    """The online models need no store: with PostgreSQL not reachable yet the engine runs at
    once, and lists the stored walk-forward versions when the store comes up."""
    body = {**separable(1), "estimator": "kneighbors", "params": {"n_neighbors": 3}}
    async with serving(schema) as client:
        resp = await client.simulate_post("/ml/walkforward", json=body)
        assert resp.status_code == 202, resp.text
        job = (await finished(client, resp.json["job"]))["job"]
    clock = ManualClock(0)
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=clock)  # not open yet
    engine = MlEngine(
        MlConfig(features=KEYS, horizon=3), bus=MemoryBus(clock=clock), clock=clock,
        storage=storage,
    )  # fmt: skip
    await asyncio.wait_for(engine.start(), 5)  # does not wait for the store
    try:
        assert engine.status() != "starting" and list(engine.model_versions) == []
        await storage.open()  # the schema is the module's: other tests' versions are there too
        await until(lambda: job in [v["job"] for v in engine.model_versions])
    finally:
        await engine.stop()
        await storage.close()


async def test_history_filters_by_model_version(
    client: testing.ASGIConductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: MlEngine = client.engine  # type: ignore[attr-defined]
    versions = [1] * 10 + [2] * 25 + [1] * 3 + [3] * 15 + [2] * 4
    rows = [{"model": "logistic", "symbol": "VER", "version": v, "event_ns": 1_000 + i,
             "prediction": 1} for i, v in enumerate(versions)]  # fmt: skip
    engine.predictions["logistic"].append(rows)
    await until(lambda: engine.storage.store.stats().rows_queued == 0)

    async def pages(params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await client.simulate_get(
                "/ml/logistic/VER/history",
                params={**params, **({"cursor": cursor} if cursor else {})},
            )
            assert page.status_code == 200, page.text
            assert len(page.json["items"]) <= params.get("limit", 100)
            items += page.json["items"]
            cursor = page.json["next_cursor"]
            if not cursor:
                return items

    for version in (1, 2, 3):
        want = [r for r in rows if r["version"] == version]
        for limit in (1, 4, 100):
            assert await pages({"version": version, "limit": limit}) == want, (version, limit)
    assert await pages({"version": 4}) == []
    assert await pages({"limit": 7}) == rows  # no version: every row
    window = await pages({"version": 2, "from": 1_020, "to": 1_040})
    assert [r["event_ns"] for r in window] == list(range(1_020, 1_035))
    # a sparse version past the scan bound: pages short of the limit (even empty), none lost
    monkeypatch.setattr(api, "VERSION_SCAN_READS", 2)
    first = await client.simulate_get("/ml/logistic/VER/history", params={"version": 3, "limit": 5})
    assert first.json["items"] == [] and first.json["next_cursor"]
    assert await pages({"version": 3, "limit": 5}) == [r for r in rows if r["version"] == 3]
    for bad in ("0", "-1", "abc", "1.5"):
        resp = await client.simulate_get("/ml/logistic/VER/history", params={"version": bad})
        assert resp.status_code == 400 and resp.json["error"]["parameter"] == "version", bad

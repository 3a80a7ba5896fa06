"""``/backtests`` end to end on real PostgreSQL: a vectorized grid job (progress on
``backtest.<job>``, result with Deflated Sharpe and PBO, stored and read back, HTML report), an
event job equal to the vectorized one, 400s naming the field, cancel, and a strategy that
raises failing its job (traceback in the log) while the engine stays ok."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from falcon import testing

from engines.backtesting.api import routes
from engines.backtesting.service import BacktestingConfig, BacktestingEngine
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.storage import Storage, StorageConfig
from tests.support import TEST_DSN, migrated_schema, until

MA = "engines.strategy.strategies:MovingAverageCross"
STRATEGIES = json.dumps(
    {"ma_cross": MA, "exploding": "tests.engines.backtesting.strategies:Exploding"}
)
DAILY = {"strategy": "ma_cross", "symbols": ["SPY"], "bars": "1d", "from": "2015-01-01",
         "to": "2021-01-01", "costs": {"fee_bps": 1.0}}  # fmt: skip


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema() as name:
        yield name


@pytest.fixture
async def engine(schema: str) -> AsyncIterator[BacktestingEngine]:
    clock = SystemClock()
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=clock)
    await storage.open()
    config = BacktestingConfig(strategies=STRATEGIES, max_grid=400, max_event_grid=4,
                               progress_interval_s=0.01)  # fmt: skip
    running = BacktestingEngine(config, bus=MemoryBus(clock=clock), clock=clock, storage=storage)
    await running.start()
    yield running
    await running.stop()
    await storage.close(1.0)


def client(engine: BacktestingEngine) -> testing.ASGIConductor:
    return testing.ASGIConductor(create_app(engine, version="test", routes=routes(engine)))


async def finished(
    conductor: testing.ASGIConductor, job: str, engine: BacktestingEngine
) -> dict[str, Any]:
    """The job's document once it has ended (done, failed or cancelled)."""
    await until(lambda: engine.jobs[job].status in ("done", "failed", "cancelled"), 120.0)
    answer: dict[str, Any] = (await conductor.simulate_get(f"/backtests/{job}")).json
    return answer


async def test_a_vectorized_grid_job_reports_overfitting_and_is_stored(
    engine: BacktestingEngine,
) -> None:
    progress = engine.bus.subscribe("backtest.*")
    async with client(engine) as c:
        body = {**DAILY, "mode": "vectorized", "grid": {"fast": [5, 10, 20], "slow": [30, 60]}}
        posted = await c.simulate_post("/backtests", json=body)
        assert posted.status_code == 202
        job = posted.json["job"]
        state = await finished(c, job, engine)
        assert state["status"] == "done", state["log"]
        result = state["result"]
        assert len(result["grid"]) == 6
        overfit = result["overfitting"]
        assert overfit["trials"] == 6 and overfit["splits"] == 12870
        assert 0.0 <= overfit["pbo"] <= 1.0 and 0.0 <= overfit["deflated_sharpe"] <= 1.0
        best = result["grid"][overfit["best"]]
        assert best["sharpe"] == max(p["sharpe"] for p in result["grid"])
        assert result["equity"]["v"][-1] == pytest.approx(best["final_equity"], rel=1e-12)
        report = await c.simulate_get(f"/backtests/{job}/report")
        assert report.status_code == 200 and "Deflated Sharpe" in report.text
        assert 'class="chart equity"' in report.text and "underwater" in report.text
        # the same request as an event-driven job at the best point: the same fills and equity
        event = {**DAILY, "params": result["best_params"]}
        job2 = (await c.simulate_post("/backtests", json=event)).json["job"]
        state2 = await finished(c, job2, engine)
        assert state2["status"] == "done", state2["log"]
        got = [(f["event_ns"], f["side"], float(f["quantity"]), float(f["price"]))
               for f in state2["result"]["fills"]]  # fmt: skip
        want = [(f["event_ns"], f["side"], f["quantity"], f["price"]) for f in result["fills"]]
        assert got == want
        assert state2["result"]["equity"]["v"] == pytest.approx(result["equity"]["v"], rel=1e-12)
    channels = {e.channel for e in await progress.next_batch(10_000)}
    assert f"backtest.{job}" in channels
    engine.jobs.clear()  # read back from PostgreSQL
    await until(lambda: engine.storage.store.stats().rows_queued == 0)
    async with client(engine) as c:
        stored = (await c.simulate_get(f"/backtests/{job}")).json
        assert stored["status"] == "done" and stored["result"]["hash"] == result["hash"]


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"strategy": "nope"}, "strategy"),
        ({"params": {"fastest": 3}}, "params.fastest"),
        ({"params": {"fast": 40, "slow": 30}}, "params"),
        ({"from": "2021-01-01", "to": "2015-01-01"}, "to"),
        ({"from": "1990-01-01", "to": "1990-02-01"}, "from"),
        (
            {
                "grid": {"fast": list(range(1, 30)), "slow": list(range(30, 60))},
                "mode": "vectorized",
            },
            "grid",
        ),
        ({"grid": {"fast": [1, 2, 3], "slow": [30, 40]}}, "grid"),
        ({"symbols": ["ZZZZ"]}, "symbols"),
        ({"costs": {"slippage_bps": -1.0}}, "costs.slippage_bps"),
        ({"bars": "5h"}, "bars"),
        ({"cash": -1}, "cash"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    engine: BacktestingEngine, change: dict[str, Any], parameter: str
) -> None:
    async with client(engine) as c:
        answer = await c.simulate_post("/backtests", json={**DAILY, **change})
    assert answer.status_code == 400, answer.text
    assert answer.json["error"]["parameter"] == parameter


async def test_a_failing_strategy_fails_its_job_not_the_engine(engine: BacktestingEngine) -> None:
    async with client(engine) as c:
        job = (await c.simulate_post("/backtests", json={**DAILY, "strategy": "exploding"})).json
        state = await finished(c, job["job"], engine)
        assert state["status"] == "failed"
        assert any("boom in on_bar" in line and "Traceback" in line for line in state["log"])
        assert (await c.simulate_get(f"/backtests/{job['job']}/report")).status_code == 409
        health = (await c.simulate_get("/health")).json
        assert health["status"] == "ok"
        again = await c.simulate_post(
            "/backtests", json={**DAILY, "params": {"fast": 5, "slow": 20}}
        )
        assert (await finished(c, again.json["job"], engine))["status"] == "done"


async def test_cancel_stops_a_running_job(engine: BacktestingEngine) -> None:
    async with client(engine) as c:
        body = {**DAILY, "from": "1998-01-01", "grid": {"fast": [5, 10, 15, 20], "slow": [50]}}
        job = (await c.simulate_post("/backtests", json=body)).json["job"]
        await until(lambda: engine.jobs[job].fraction > 0)
        assert (await c.simulate_delete(f"/backtests/{job}")).status_code == 202
        state = await finished(c, job, engine)
        assert state["status"] == "cancelled"
        assert (await c.simulate_delete(f"/backtests/{job}")).status_code == 409
        assert (await c.simulate_get("/backtests/bt0-none")).status_code == 404

"""A vectorized grid fanned out over a Dask cluster (a ``LocalCluster`` of two worker processes
started here) is the grid run in one process, bit for bit: the sweep's summary, a whole job's
result document (grid, Deflated Sharpe, PBO, hash, walk-forward), and a job of an engine
configured with ``NAUTILUS_BACKTESTING_CLUSTER``. A scheduler that cannot be reached fails the
grid with the reason."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

# dask.distributed is a dev dependency (and the `cluster` extra): a missing one fails, never skips
import distributed
import msgspec
import numpy as np
import pytest

from engines.backtesting.cluster import ClusterUnavailable, DaskGrid
from engines.backtesting.core import BarArrays, MaCrossParams, ma_cross_sweep
from engines.backtesting.history import load_bars
from engines.backtesting.jobs import BacktestBody, parse_job, run_job
from engines.backtesting.service import BacktestingConfig, BacktestingEngine
from engines.shell.config import load_config
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from tests.support import until

FAST = np.repeat(np.arange(2, 32, 2), 12)  # 15 × 12 = 180 points
SLOW = np.tile(np.arange(40, 160, 10), 15)
BODY = {"strategy": "ma_cross", "mode": "vectorized", "symbols": ["SPY"], "bars": "1d",
        "from": "2005-01-01", "to": "2012-01-01", "costs": {"fee_bps": 1.0, "slippage_bps": 2.0},
        "grid": {"fast": [3, 5, 8, 13], "slow": [20, 40, 60]},
        "walk_forward": {"train": 500, "test": 250}}  # fmt: skip


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, scheduler_port=0,
        dashboard_address=None, host="127.0.0.1",
    ) as cluster:  # fmt: skip
        yield cluster.scheduler_address


@pytest.fixture
def grid(scheduler: str) -> Iterator[DaskGrid]:
    fanned = DaskGrid(scheduler)
    fanned.client().wait_for_workers(2)
    yield fanned
    fanned.close()


@pytest.fixture(scope="module")
def spy() -> BarArrays:
    return load_bars("SPY", "1d", 1_104_537_600 * 10**9, 1_325_376_000 * 10**9)  # 2005–2011


def test_the_same_sweep_on_the_cluster_is_bit_for_bit_the_local_one(
    spy: BarArrays, grid: DaskGrid
) -> None:
    base = MaCrossParams(quantity=100, atr_stop=3.0, fee_bps=1.0, slippage_bps=2.0)
    here = ma_cross_sweep(spy, FAST, SLOW, base, chunk=32)  # 6 chunks, the last one padded
    there = ma_cross_sweep(spy, FAST, SLOW, base, chunk=32, map_chunks=grid)
    assert grid.last_workers == set(grid.client().scheduler_info()["workers"])  # both ran
    for name, local, remote in zip(here._fields, here, there, strict=True):
        assert np.array_equal(local, remote), name
    assert len(np.unique(here.final_equity)) > 100  # the points differ: a real grid
    # the chunking does not change a point's numbers either
    whole = ma_cross_sweep(spy, FAST, SLOW, base, map_chunks=grid)
    assert all(np.array_equal(a, b) for a, b in zip(here, whole, strict=True))


def test_a_grid_job_on_the_cluster_is_the_local_job(grid: DaskGrid) -> None:
    spec = parse_job(
        msgspec.convert(BODY, BacktestBody), {"ma_cross": "engines.strategy.strategies:MovingAverageCross"},
        max_grid=1000, max_event_grid=4, max_event_bars=10**6,
    )  # fmt: skip
    local = run_job(spec, "local")
    remote = run_job(spec, "remote", map_chunks=grid)
    assert remote == local
    assert local["overfitting"]["trials"] == 12 and len(local["walk_forward"]["windows"]) == 5


async def test_an_engine_configured_with_a_cluster_runs_its_grids_there(scheduler: str) -> None:
    environ = {"NAUTILUS_BACKTESTING_CLUSTER": scheduler, "NAUTILUS_BACKTESTING_PBO_BLOCKS": "8"}
    config = load_config(BacktestingConfig, environ)
    assert config.cluster == scheduler
    results: list[dict[str, Any]] = []
    for cfg in (config, BacktestingConfig(pbo_blocks=8)):
        clock = SystemClock()
        engine = BacktestingEngine(cfg, bus=MemoryBus(clock=clock), clock=clock)
        await engine.start()
        try:
            job = await engine.submit(msgspec.convert(BODY, BacktestBody))
            await until(lambda job=job: job.status in ("done", "failed"), 180.0)
            assert job.status == "done", job.log
            assert job.result is not None
            results.append(job.result)
            if cfg.cluster:
                assert isinstance(engine.grid_map, DaskGrid)
                assert len(engine.grid_map.last_workers) >= 1
                assert engine.health()["cluster"] == scheduler
        finally:
            await engine.stop()
    assert json.dumps(results[0]) == json.dumps(results[1])


def test_an_unreachable_scheduler_fails_the_grid_with_the_reason(spy: BarArrays) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
    nowhere = DaskGrid(address, connect_timeout_s=1.0)
    with pytest.raises(ClusterUnavailable, match="cannot reach the Dask scheduler"):
        ma_cross_sweep(spy, [5], [20], MaCrossParams(), map_chunks=nowhere)

"""Backtesting throughput (issue 12 figures): prints a table and writes JSON.

1. Event-driven: minute bars of 5 days × 3 symbols (SPY, AIG, BAC; regular session) through the
   live Strategy + Risk + Portfolio engines under the deterministic driver (MA crossover 10/30):
   three timed runs after a short warm one, wall and process CPU seconds (medians).
2. Vectorized: an MA-crossover grid of N × N windows (fast 2..N+1, slow N+2, N+6, … step 4;
   N = 100 by default: slow 102..498) over SPY daily 1998–2021, next-open fills, 1 bp fees:
   compile once (a first full sweep), then three timed sweeps; wall and process CPU seconds,
   medians (on a shared machine the CPU time is the steadier figure). It runs on JAX's default
   backend (a GPU where jax has one: ``--grid 1000 --chunk 1048576`` is the 10⁶-combination
   sweep in one chunk), and ``--device-check K`` reruns the first K points on the CPU backend
   and reports the largest relative difference of their final equity and whether every fill
   count agrees. ``--cluster tcp://host:8786`` also times the grid on that Dask cluster
   (``--local-cluster N`` starts one of N worker processes here).
3. vectorbt (``Portfolio.from_signals``, one column per combination) on the first 2 000
   combinations of that grid (the full 100 × 100 grid takes it over a minute here), when
   installed and not ``--no-vectorbt``, and the ratio of the per-combination times.

Run: ``.venv/bin/python loadtest/backtest_bench.py [--skip-event] [--grid N] [--chunk K]
[--device-check K] [--cluster ADDR | --local-cluster N] [--out FILE]`` (about a minute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from engines.backtesting.core import (
    BarArrays,
    ChunkMap,
    GridSummary,
    MaCrossParams,
    ma_cross_sweep,
    map_in_process,
)
from engines.backtesting.history import load_bars
from loadtest.report import aligned, machine, write_results

MA = "engines.strategy.strategies:MovingAverageCross"
BASE = MaCrossParams(quantity=100, atr_stop=1e12, fee_bps=1.0)

Row = dict[str, Any]


def _timed(run: Any, repeat: int = 3) -> tuple[list[float], list[float], Any]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        out = run()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, out


def event_driven() -> Row:
    # imported here: the vectorized runs need only JAX and the bundled bars
    from engines.backtesting.replay import MESSAGES_PER_BAR, EventRun, run_event

    bars = [load_bars(s, "1m", 0, 2**62) for s in ("SPY", "AIG", "BAC")]
    n = sum(len(b) for b in bars)
    run = EventRun(strategy_path=MA, params={"fast": 10, "slow": 30}, fee_bps=1.0)
    run_event(run, [b.select(np.arange(len(b)) < 50) for b in bars])  # imports, first calls
    results: list[Any] = []
    walls, cpus, _ = _timed(lambda: results.append(run_event(run, bars)))
    return {
        "what": "event-driven, 5 days x 3 symbols minute bars",
        "size": n, "unit": "bars", "messages": MESSAGES_PER_BAR * n,
        "walls_s": walls, "cpus_s": cpus, "fills": len(results[-1].fills),
        "distinct_hashes": len({r.hash for r in results}),
    }  # fmt: skip


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """N × N windows: fast 2..N+1, slow N+2, N+6, … (step 4)."""
    fast, slow = np.meshgrid(
        np.arange(2, n + 2), np.arange(n + 2, n + 2 + 4 * n, 4), indexing="ij"
    )  # fmt: skip
    return fast.ravel(), slow.ravel()


def vectorized(
    spy: BarArrays, f: np.ndarray, s: np.ndarray, *, chunk: int,
    map_chunks: ChunkMap = map_in_process, label: str = "vectorized",
) -> tuple[Row, GridSummary]:  # fmt: skip
    def sweep() -> GridSummary:
        return ma_cross_sweep(spy, f, s, BASE, chunk=chunk, map_chunks=map_chunks)

    started = time.perf_counter()
    sweep()  # compile (every chunk's shape)
    compile_s = time.perf_counter() - started
    walls, cpus, summary = _timed(sweep)
    row = {
        "what": f"{label} ({jax.default_backend()})", "size": int(f.size), "unit": "combinations",
        "bars": len(spy), "chunk": chunk, "compile_and_first_s": compile_s,
        "walls_s": walls, "cpus_s": cpus, "best_final_equity": float(summary.final_equity.max()),
    }  # fmt: skip
    return row, summary


def device_check(spy: BarArrays, f: np.ndarray, s: np.ndarray, summary: GridSummary, k: int) -> Row:
    """The first ``k`` points again on the CPU backend, against the default backend's answers."""
    with jax.default_device(jax.devices("cpu")[0]):
        cpu = ma_cross_sweep(spy, f[:k], s[:k], BASE)
    theirs, ours = cpu.final_equity, summary.final_equity[:k]
    return {
        "points": k,
        "backend": jax.default_backend(),
        "max_relative_final_equity_difference": float(np.max(np.abs(ours / theirs - 1.0))),
        "fill_counts_equal": bool(np.array_equal(cpu.fills, summary.fills[:k])),
    }  # fmt: skip


def vectorbt_grid(spy: BarArrays, f: np.ndarray, s: np.ndarray) -> Row | None:
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        print("vectorbt: not installed")
        return None
    close = pd.Series(spy.close)

    def run() -> None:
        windows = np.unique(np.concatenate((f, s)))
        ma = vbt.MA.run(close, windows.tolist()).ma.to_numpy()
        col = {w: i for i, w in enumerate(windows.tolist())}
        fast_ma = ma[:, [col[w] for w in f.tolist()]]
        slow_ma = ma[:, [col[w] for w in s.tolist()]]
        longs = pd.DataFrame(fast_ma > slow_ma).shift(1, fill_value=False)
        shorts = pd.DataFrame(fast_ma < slow_ma).shift(1, fill_value=False)
        price = pd.DataFrame(np.repeat(spy.open[:, None], f.size, axis=1))
        pf = vbt.Portfolio.from_signals(
            pd.DataFrame(np.repeat(spy.close[:, None], f.size, axis=1)), entries=longs,
            short_entries=shorts, price=price, size=100, size_type="amount", fees=1e-4,
            init_cash=1_000_000.0, freq="1D",
        )  # fmt: skip
        pf.final_value()

    walls, cpus, _ = _timed(run, repeat=1)
    return {"what": "vectorbt from_signals", "size": int(f.size), "unit": "combinations",
            "walls_s": walls, "cpus_s": cpus}  # fmt: skip


def on_cluster(
    spy: BarArrays, f: np.ndarray, s: np.ndarray, chunk: int, address: str, local_workers: int
) -> Row:
    """The grid on the Dask cluster at ``address`` (or a ``LocalCluster`` of ``local_workers``)."""
    from contextlib import nullcontext

    from engines.backtesting.cluster import DaskGrid

    if local_workers:
        import distributed

        cluster: Any = distributed.LocalCluster(
            n_workers=local_workers, threads_per_worker=1, dashboard_address=None
        )  # fmt: skip
        address, label = cluster.scheduler_address, f"dask LocalCluster({local_workers} workers)"
    else:
        cluster, label = nullcontext(), f"dask cluster {address}"
    with cluster:
        dask = DaskGrid(address)
        try:
            return vectorized(spy, f, s, chunk=chunk, map_chunks=dask, label=label)[0]
        finally:
            dask.close()


def _table(rows: list[Row]) -> str:
    head = ("run", "size", "wall s (runs)", "median s", "CPU s", "per second")
    body = []
    for r in rows:
        took = statistics.median(r["walls_s"])
        body.append((
            r["what"], f"{r['size']:,} {r['unit']}", ", ".join(f"{w:.3f}" for w in r["walls_s"]),
            f"{took:.3f}", f"{statistics.median(r['cpus_s']):.3f}", f"{r['size'] / took:,.0f}",
        ))  # fmt: skip
    return aligned(head, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-event", action="store_true", help="skip the event-driven run")
    parser.add_argument("--grid", type=int, default=100, metavar="N", help="N x N windows")
    parser.add_argument("--chunk", type=int, default=4_096, help="grid points per scan")
    parser.add_argument("--device-check", type=int, default=0, metavar="K",
                        help="rerun the first K points on the CPU backend and compare")  # fmt: skip
    parser.add_argument("--no-vectorbt", action="store_true", help="skip the vectorbt run")
    parser.add_argument("--cluster", default="", help="a Dask scheduler address to time too")
    parser.add_argument("--local-cluster", type=int, default=0, metavar="N",
                        help="start a Dask LocalCluster of N workers and time it too")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: results/)")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    rows: list[Row] = []
    document: dict[str, Any] = {
        "benchmark": "backtest_bench", "started": started.isoformat(),
        "machine": {**machine(), "jax_backend": jax.default_backend(),
                    "jax_devices": [str(d) for d in jax.devices()]},
    }  # fmt: skip
    if not args.skip_event:
        rows.append(event_driven())
    spy = load_bars("SPY", "1d", 0, 2**62)
    f, s = grid(args.grid)
    ours, summary = vectorized(spy, f, s, chunk=args.chunk)
    rows.append(ours)
    if args.device_check:
        document["device_check"] = device_check(spy, f, s, summary, args.device_check)
    if not args.no_vectorbt:
        share = min(2_000, f.size)
        theirs = vectorbt_grid(spy, f[:share], s[:share])
        if theirs is not None:
            rows.append(theirs)
            per_theirs = statistics.median(theirs["walls_s"]) / share
            document["vectorbt_over_ours_per_combination"] = per_theirs / (
                statistics.median(ours["walls_s"]) / f.size
            )  # fmt: skip
    if args.cluster or args.local_cluster:
        rows.append(on_cluster(spy, f, s, args.chunk, args.cluster, args.local_cluster))
    document["runs"] = rows
    print(_table(rows))
    for key in ("device_check", "vectorbt_over_ours_per_combination"):
        if key in document:
            print(f"{key}: {document[key]}")
    print(f"wrote {write_results('backtest_bench', document, started, args.out)}")


if __name__ == "__main__":
    main()

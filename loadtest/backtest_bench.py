"""Backtesting throughput (issue 12 figures), on this machine's CPU.

1. Event-driven: minute bars of 5 days × 3 symbols (SPY, AIG, BAC; regular session) through the
   live Strategy + Risk + Portfolio engines under the deterministic driver (MA crossover 10/30):
   three timed runs after a short warm one, wall and process CPU seconds (medians).
2. Vectorized: the MA-crossover grid of 100 × 100 windows (fast 2..101, slow 102..498 step 4)
   over SPY daily 1998–2021, next-open fills, 1 bp fees: compile once (a first full sweep),
   then three timed sweeps; wall and process CPU seconds, medians (on a shared machine the
   CPU time is the steadier figure). ``--cluster tcp://host:8786`` also times the grid on that
   Dask cluster (``--local-cluster N`` starts one of N worker processes here).
3. vectorbt (``Portfolio.from_signals``, one column per combination) on the first 2 000
   combinations of that grid (the full grid takes it over a minute here), when installed, and
   the ratio of the per-combination times.

Run: ``.venv/bin/python loadtest/backtest_bench.py [--skip-event] [--cluster ADDR |
--local-cluster N]`` (about a minute).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from engines.backtesting.core import ChunkMap, MaCrossParams, ma_cross_sweep, map_in_process
from engines.backtesting.history import load_bars
from engines.backtesting.replay import MESSAGES_PER_BAR, EventRun, run_event

MA = "engines.strategy.strategies:MovingAverageCross"


def event_driven() -> None:
    bars = [load_bars(s, "1m", 0, 2**62) for s in ("SPY", "AIG", "BAC")]
    n = sum(len(b) for b in bars)
    run = EventRun(strategy_path=MA, params={"fast": 10, "slow": 30}, fee_bps=1.0)
    run_event(run, [b.select(np.arange(len(b)) < 50) for b in bars])  # imports, first calls
    walls, cpus, hashes = [], [], set()
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        result = run_event(run, bars)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        hashes.add(result.hash)
    took = statistics.median(walls)
    print(f"event-driven: {n} minute bars (5 days x 3 symbols, {MESSAGES_PER_BAR * n} messages): "
          f"wall {', '.join(f'{w:.2f}' for w in walls)} s (median {took:.2f} s, "
          f"{n / took:,.0f} bars/s), this process's CPU median {statistics.median(cpus):.2f} s; "
          f"{len(result.fills)} fills, {len(hashes)} distinct hash")  # fmt: skip


def _grid() -> tuple[np.ndarray, np.ndarray]:
    fast, slow = np.meshgrid(np.arange(2, 102), np.arange(102, 502, 4), indexing="ij")
    return fast.ravel(), slow.ravel()


def vectorized(map_chunks: ChunkMap = map_in_process, label: str = "vectorized") -> float:
    spy = load_bars("SPY", "1d", 0, 2**62)
    f, s = _grid()
    base = MaCrossParams(quantity=100, atr_stop=1e12, fee_bps=1.0)
    started = time.perf_counter()
    ma_cross_sweep(spy, f, s, base, map_chunks=map_chunks)  # compile (every chunk's shape)
    print(f"{label}: compile + first sweep {time.perf_counter() - started:.2f} s")
    walls, cpus = [], []
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        summary = ma_cross_sweep(spy, f, s, base, map_chunks=map_chunks)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    took = statistics.median(walls)
    print(f"{label}: {f.size} combinations x {len(spy)} SPY daily bars: wall "
          f"{', '.join(f'{w:.2f}' for w in walls)} s (median {took:.2f} s, "
          f"{f.size / took:,.0f} combinations/s), this process's CPU median "
          f"{statistics.median(cpus):.2f} s; best final equity "
          f"{summary.final_equity.max():,.2f}")  # fmt: skip
    return took


def vectorbt_grid(f: np.ndarray, s: np.ndarray) -> float | None:
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        print("vectorbt: not installed")
        return None
    spy = load_bars("SPY", "1d", 0, 2**62)
    close = pd.Series(spy.close)
    started = time.perf_counter()
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
    took = time.perf_counter() - started
    print(f"vectorbt: the same {f.size} combinations in {took:.2f} s")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-event", action="store_true", help="skip the event-driven run")
    parser.add_argument("--cluster", default="", help="a Dask scheduler address to time too")
    parser.add_argument("--local-cluster", type=int, default=0, metavar="N",
                        help="start a Dask LocalCluster of N workers and time it too")  # fmt: skip
    args = parser.parse_args()
    if not args.skip_event:
        event_driven()
    ours = vectorized()
    f, s = _grid()
    share = 2_000
    theirs = vectorbt_grid(f[:share], s[:share])
    if theirs is not None:
        ratio = (theirs / share) / (ours / f.size)
        print(f"ratio vectorbt / ours per combination: {ratio:.1f}x")
    if args.cluster or args.local_cluster:
        from engines.backtesting.cluster import DaskGrid

        if args.local_cluster:
            import distributed

            with distributed.LocalCluster(
                n_workers=args.local_cluster, threads_per_worker=1, dashboard_address=None
            ) as cluster:  # fmt: skip
                grid = DaskGrid(cluster.scheduler_address)
                vectorized(grid, f"dask LocalCluster({args.local_cluster} workers)")
                grid.close()
        else:
            grid = DaskGrid(args.cluster)
            vectorized(grid, f"dask cluster {args.cluster}")
            grid.close()


if __name__ == "__main__":
    main()

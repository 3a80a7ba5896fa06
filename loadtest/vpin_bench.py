"""VPIN benchmark: batch VPIN over the five bundled SPY days and the realtime per-bucket update.

    .venv/bin/python -m loadtest.vpin_bench [--repeat 5] [--trades-per-bucket ...]

Figures (issue 4): batch VPIN over all 1.89M trades after warm-up ≤ 1 s on one core; realtime
per-bucket update p99 ≤ 100 µs inside the engine (the ``add_trade`` call that completes a bucket:
bar close, BVC, bucket split, VPIN window, CDF and alert); batch VPIN over N synthetic symbols at
once (``compute_vpin_many``: one vmapped σ/BVC scan) against a Python loop of ``compute_vpin``,
whole batch and the scan alone (no target: the figure says what vmap buys on this machine).
Prints a table and writes JSON to
``loadtest/results/vpin_bench.json``. Pin to one core with ``taskset -c 0`` for the one-core
figure (JAX is also told to use one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import numpy as np

from engines.marketdata import feeds
from engines.vpin import core

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed batch runs")
    parser.add_argument(
        "--bucket-volume",
        type=float,
        default=2_982_405.0,
        help="V (default: five-day full-session ADV / 50, data README)",
    )
    parser.add_argument("--realtime-days", type=int, default=1, help="days replayed one by one")
    parser.add_argument("--symbols", type=int, default=50, help="synthetic symbols, many-batch")
    parser.add_argument("--symbol-trades", type=int, default=40_000, help="trades per symbol")
    args = parser.parse_args()

    days = [feeds.read_lean_trade_ticks(feeds.lean_tick_path(d)) for d in feeds.lean_days()]
    t = np.concatenate([d.event_ns for d in days])
    p = np.concatenate([d.price for d in days])
    q = np.concatenate([d.size for d in days])
    params = core.VpinParams(bucket_volume=args.bucket_volume, sigma_seed=0.01)

    core.warm_up(max_symbols=args.symbols)
    core.compute_vpin(t, p, q, params)  # warm caches
    batch_s = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        series = core.compute_vpin(t, p, q, params)
        batch_s.append(time.perf_counter() - started)

    # realtime: time every add_trade; keep those that completed a bucket
    rt_params = core.VpinParams(bucket_volume=args.bucket_volume / 20, sigma_seed=0.01)
    n_rt = sum(len(d) for d in days[: args.realtime_days])
    calc = core.VpinCalculator(rt_params)
    per_bucket: list[float] = []
    per_trade_total = 0.0
    clock = time.perf_counter_ns
    for ti, pi, qi in zip(t[:n_rt].tolist(), p[:n_rt].tolist(), q[:n_rt].tolist(), strict=True):
        started = clock()
        done = calc.add_trade(ti, pi, qi)
        elapsed = clock() - started
        per_trade_total += elapsed
        if done:
            per_bucket.append(elapsed / 1e3)
    buckets = np.asarray(per_bucket)
    many = many_symbols(args.symbols, args.symbol_trades, args.repeat)
    result = {
        "trades": len(t),
        "buckets_batch": len(series),
        "batch_s": {"min": min(batch_s), "median": float(np.median(batch_s)), "runs": batch_s},
        "realtime": {
            "trades": n_rt,
            "buckets": len(buckets),
            "bucket_update_us": {
                "p50": float(np.percentile(buckets, 50)),
                "p99": float(np.percentile(buckets, 99)),
                "max": float(buckets.max()),
            },
            "mean_trade_us": per_trade_total / n_rt / 1e3,
        },
        "many_symbols": many,
        "targets": {"batch_s": 1.0, "bucket_update_p99_us": 100.0},
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "affinity": len(os.sched_getaffinity(0)),
        },
    }
    print(f"{'figure':<40}{'value':>14}{'target':>10}")
    print(
        f"{'batch VPIN, 5 SPY days (s, median)':<40}{result['batch_s']['median']:>14.3f}{1.0:>10}"
    )
    print(f"{'realtime bucket update p50 (µs)':<40}{np.percentile(buckets, 50):>14.1f}")
    print(f"{'realtime bucket update p99 (µs)':<40}{np.percentile(buckets, 99):>14.1f}{100.0:>10}")
    print(f"{'realtime mean per trade (µs)':<40}{result['realtime']['mean_trade_us']:>14.2f}")
    label = f"{args.symbols} symbols × {args.symbol_trades} trades"
    print(f"batch VPIN, {label} at once (s, median):")
    for part in ("batch", "scan"):
        vmapped, loop = many[f"{part}_vmapped_s"]["median"], many[f"{part}_loop_s"]["median"]
        print(f"{'  ' + part + ', one vmapped call':<40}{vmapped:>14.4f}")
        print(f"{'  ' + part + ', loop per symbol':<40}{loop:>14.4f}")
        print(f"{'  ' + part + ', speed-up (loop / vmapped)':<40}{loop / vmapped:>14.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vpin_bench.json").write_text(json.dumps(result, indent=2))


def synthetic_symbols(count: int, trades: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Seeded random walks over one 6.5 h session, volumes and volatilities varying by symbol."""
    rng = np.random.default_rng(2013)
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for k in range(count):
        t = (
            np.sort(rng.integers(0, 23_400 * 10**9, trades)).astype(np.int64)
            + 1_381_152_600 * 10**9
        )
        vol = 2e-5 * (1 + k % 10)
        p = np.round(20.0 * (1 + k) * np.exp(np.cumsum(rng.normal(0.0, vol, trades))), 2)
        q = rng.geometric(1.0 / (50.0 * (1 + k % 4)), trades).astype(np.float64)
        out[f"S{k:03d}"] = (t, p, q)
    return out


def many_symbols(count: int, trades: int, repeat: int) -> dict[str, object]:
    """``compute_vpin_many`` vs a loop of ``compute_vpin``; and the σ/BVC scan alone
    (``classify_many`` vs a loop of ``classify_bars``), medians of ``repeat`` runs."""
    symbols = synthetic_symbols(count, trades)
    # mean size 125 shares: V = a symbol's volume / 50, about 50 buckets a symbol (ELO 2012)
    params = core.VpinParams(bucket_volume=2.5 * trades, window=50, sigma_seed=0.01)
    bars = [core.accepted_bars(t, p, q, params)[0] for t, p, q in symbols.values()]

    def timed(run: Callable[[], object]) -> dict[str, object]:
        run()  # warm caches (no compile: warm_up did every shape)
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            run()
            runs.append(time.perf_counter() - started)
        return {"min": min(runs), "median": float(np.median(runs)), "runs": runs}

    batch_vmapped = timed(lambda: core.compute_vpin_many(symbols, params))
    batch_loop = timed(lambda: [core.compute_vpin(t, p, q, params) for t, p, q in symbols.values()])
    scan_vmapped = timed(lambda: core.classify_many(bars, params))
    scan_loop = timed(lambda: [core.classify_bars(b, params) for b in bars])
    many = core.compute_vpin_many(symbols, params)
    for symbol, (t, p, q) in symbols.items():  # the figure is for the same numbers
        assert np.array_equal(many[symbol].vpin, core.compute_vpin(t, p, q, params).vpin)
    return {
        "symbols": count,
        "trades_per_symbol": trades,
        "bars_per_symbol": float(np.mean([len(b.close) for b in bars])),
        "buckets_per_symbol": float(np.mean([len(s) for s in many.values()])),
        "batch_vmapped_s": batch_vmapped,
        "batch_loop_s": batch_loop,
        "scan_vmapped_s": scan_vmapped,
        "scan_loop_s": scan_loop,
    }


if __name__ == "__main__":
    main()

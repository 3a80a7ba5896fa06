"""VPIN benchmark: batch VPIN over the five bundled SPY days and the realtime per-bucket update.

    .venv/bin/python -m loadtest.vpin_bench [--repeat 5] [--trades-per-bucket ...]

Figures (issue 4): batch VPIN over all 1.89M trades after warm-up ≤ 1 s on one core; realtime
per-bucket update p99 ≤ 100 µs inside the engine (the ``add_trade`` call that completes a bucket:
bar close, BVC, bucket split, VPIN window, CDF and alert). Prints a table and writes JSON to
``loadtest/results/vpin_bench.json``. Pin to one core with ``taskset -c 0`` for the one-core
figure (JAX is also told to use one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
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
    args = parser.parse_args()

    days = [feeds.read_lean_trade_ticks(feeds.lean_tick_path(d)) for d in feeds.lean_days()]
    t = np.concatenate([d.event_ns for d in days])
    p = np.concatenate([d.price for d in days])
    q = np.concatenate([d.size for d in days])
    params = core.VpinParams(bucket_volume=args.bucket_volume, sigma_seed=0.01)

    core.warm_up()
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
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vpin_bench.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

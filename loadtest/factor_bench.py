"""Factor figures: per-bar rolling-beta update for many symbols, the vmapped batch, statsmodels.

    .venv/bin/python -m loadtest.factor_bench [--symbols 500] [--bars 5000] [--factors 3]
        [--window 60] [--reference-sample 10]

Streaming: one ``core.RollingOls`` with ``symbols`` slots; each bar updates every slot at once
(O(k²) sums + one batched solve), timed with ``perf_counter_ns`` over ``--stream-bars`` bars.
Batch: ``core.rolling_ols_many`` over ``symbols × bars × factors`` (compile timed apart, then
the best of ``--repeat`` runs). Reference: statsmodels ``RollingOLS(...).fit()`` on
``reference-sample`` symbols, scaled to ``symbols`` (it is linear in symbols), and the max
difference of our betas from its. Synthetic returns (seeded). Writes
``loadtest/results/factor_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm
from statsmodels.regression.rolling import RollingOLS

from engines.factor import core

RESULTS = Path(__file__).resolve().parent / "results" / "factor_bench.json"


def _data(symbols: int, bars: int, factors: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 0.01, (bars, factors))
    betas = rng.normal(1.0, 0.3, (factors, symbols))
    y = (x @ betas + rng.normal(0.0, 0.01, (bars, symbols))).T.copy()
    return y, x


def bench_streaming(y: np.ndarray, x: np.ndarray, window: int, bars: int) -> dict[str, Any]:
    symbols, k = y.shape[0], x.shape[1]
    ols = core.RollingOls(k, window=window, capacity=symbols)
    slots = np.array([ols.add_series() for _ in range(symbols)])
    times = []
    for t in range(min(bars, y.shape[1])):
        xt = np.broadcast_to(x[t], (symbols, k))
        t0 = time.perf_counter_ns()
        ols.update(slots, y[:, t], xt)
        times.append(time.perf_counter_ns() - t0)
    ms = np.asarray(times[window:]) / 1e6  # full windows only
    return {
        "symbols": symbols,
        "factors": k,
        "window": window,
        "bars_timed": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def bench_batch(y: np.ndarray, x: np.ndarray, window: int, repeat: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    series = core.rolling_ols_many(y, x, window=window)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        series = core.rolling_ols_many(y, x, window=window)
        runs.append(time.perf_counter() - t0)
    return {
        "shape": [*y.shape, x.shape[1]],
        "first_call_s": first,
        "best_s": min(runs),
        "median_s": float(np.median(runs)),
        "series": series,
    }


def bench_reference(
    y: np.ndarray, x: np.ndarray, window: int, sample: int, ours: core.RollingSeries
) -> dict[str, Any]:
    design = sm.add_constant(x)
    t0 = time.perf_counter()
    worst = 0.0
    for i in range(sample):
        ref = RollingOLS(y[i], design, window=window).fit()
        ok = np.isfinite(ref.params)
        worst = max(worst, float(np.max(np.abs(ours.params[i][ok] - ref.params[ok]))))
    elapsed = time.perf_counter() - t0
    return {
        "sample": sample,
        "sample_s": elapsed,
        "scaled_s": elapsed / sample * y.shape[0],
        "max_abs_param_diff": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--factors", type=int, default=3)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--stream-bars", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-sample", type=int, default=10)
    args = parser.parse_args()
    y, x = _data(args.symbols, args.bars, args.factors)
    streaming = bench_streaming(y, x, args.window, args.stream_bars)
    batch = bench_batch(y, x, args.window, args.repeat)
    series = batch.pop("series")
    reference = bench_reference(y, x, args.window, args.reference_sample, series)
    ratio = reference["scaled_s"] / batch["best_s"]
    result = {
        "streaming": streaming,
        "batch": batch,
        "statsmodels": reference,
        "batch_speedup_vs_statsmodels": ratio,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    s = streaming
    print(f"{'measure':<52}{'value':>14}")
    label = f"per-bar update, {s['symbols']} symbols × {s['factors']} factors, W={s['window']}"
    print(f"{label + ', p50 ms':<52}{s['p50_ms']:>14.3f}")
    print(f"{'per-bar update p99 ms':<52}{s['p99_ms']:>14.3f}")
    shape = "×".join(map(str, batch["shape"]))
    print(f"{'batch ' + shape + ' first call (compile) s':<52}{batch['first_call_s']:>14.3f}")
    print(f"{'batch ' + shape + ' best s':<52}{batch['best_s']:>14.3f}")
    print(f"{'statsmodels RollingOLS, scaled to all symbols s':<52}{reference['scaled_s']:>14.3f}")
    print(f"{'batch speed-up vs statsmodels':<52}{ratio:>14.1f}")
    print(f"{'max |β ours − β statsmodels|':<52}{reference['max_abs_param_diff']:>14.2e}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

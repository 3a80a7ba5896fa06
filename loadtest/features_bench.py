"""Features figures: streaming update of the default set per bar, and batch over many symbols.

    .venv/bin/python -m loadtest.features_bench [--symbols 500] [--bars 10000] [--batch-sample 3]

Streaming: one ``FeatureStream`` (the default set: every TA-Lib function plus the bar-only
estimators) fed the bundled SPY minute bars; each ``update`` timed with ``perf_counter_ns`` (wall)
and ``thread_time_ns`` (this thread's CPU: on a shared machine the wall p99 carries the other
processes' preemptions, the CPU p99 does not).
Batch: the TA-Lib functions of the catalog at their defaults over ``bars`` generated bars for
``symbols`` symbols, three ways:

* the vectorized JAX path (``engines.features.vectorized``): compiled first by ``warm_up`` for
  the block shape (compile time reported apart), then timed on the whole block: the five input
  blocks checked and aligned once (``vectorized.prepare``, inside the timing), then every
  function (one program call each, mapping the function over the symbols);
* the Python-kernel path (``core.compute``), timed on ``batch-sample`` symbols and scaled to
  ``symbols`` (it is linear in symbols; ``--batch-sample 0`` skips it);
* TA-Lib's C library in a Python loop over all ``symbols``.

Everything runs on one core: the process is pinned to one CPU and XLA is told to use one thread
(set before JAX is imported). Batch figures are given as wall time and as process CPU time
(``time.process_time``: on a shared machine the wall time carries other processes' share of the
core, the CPU time does not). Writes ``loadtest/results/features_bench.json``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import talib

from engines.features import core
from engines.marketdata import feeds

RESULTS = Path(__file__).resolve().parent / "results" / "features_bench.json"
_FIELDS = ("open", "high", "low", "close", "volume")
_KEYS = {"real": "close", "real0": "high", "real1": "low"}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _spy() -> dict[str, np.ndarray]:
    bars = [
        feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(d)) for d in feeds.lean_days()
    ]
    return {f: np.concatenate([getattr(b, f) for b in bars]) for f in _FIELDS}


def bench_streaming(repeat: int = 3) -> dict[str, Any]:
    spy = _spy()
    rows = list(zip(*(spy[f].tolist() for f in _FIELDS), strict=True))
    wall: list[int] = []
    cpu: list[int] = []
    clock = time.perf_counter_ns
    thread = time.thread_time_ns
    for _ in range(repeat):
        stream = core.FeatureStream()
        update = stream.update
        for row in rows:
            c0 = thread()
            t0 = clock()
            update(*row)
            t1 = clock()
            c1 = thread()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
    arr = np.asarray(wall) / 1000.0
    carr = np.asarray(cpu) / 1000.0
    return {
        "features": len(core.DEFAULT_FEATURES),
        "values_per_bar": len(core.FeatureStream().keys),
        "bars": len(arr),
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
        "max_us": float(arr.max()),
        "cpu_p50_us": float(np.percentile(carr, 50)),
        "cpu_p99_us": float(np.percentile(carr, 99)),
    }


def _symbol(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    high = close * (1 + rng.uniform(0, 0.002, n))
    low = close * (1 - rng.uniform(0, 0.002, n))
    open_ = np.clip(close * (1 + rng.normal(0, 0.0005, n)), low, high)
    return {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": rng.integers(1, 10_000, n).astype(float),
    }


def bench_batch(symbols: int, bars: int, sample: int) -> dict[str, Any]:
    from engines.features import vectorized  # jax: imported after XLA_FLAGS is set

    rng = np.random.default_rng(1)
    data = [_symbol(rng, bars) for _ in range(symbols)]
    block = {f: np.stack([d[f] for d in data]) for f in _FIELDS}
    specs = [s for s in core.CATALOG.values() if s.talib]
    names = [s.name for s in specs]

    t0 = time.perf_counter()
    vectorized.warm_up(symbols, bars, names)
    compile_s = time.perf_counter() - t0
    per_function: dict[str, float] = {}
    t0 = time.perf_counter()
    c0 = time.process_time()
    columns = {f: vectorized.prepare(f, block[f]) for f in _FIELDS}
    prepare_cpu = time.process_time() - c0
    for s in specs:
        f0 = time.process_time()
        vectorized.compute_many(s.name, {k: columns[_KEYS.get(k, k)] for k in s.inputs})
        per_function[s.name] = time.process_time() - f0
    vec = time.perf_counter() - t0
    vec_cpu = time.process_time() - c0

    kernels = math.nan
    if sample > 0:
        t0 = time.perf_counter()
        for d in data[:sample]:
            for s in specs:
                core.compute(s.name, {k: d[_KEYS.get(k, k)] for k in s.inputs})
        kernels = (time.perf_counter() - t0) / sample * symbols

    t0 = time.perf_counter()
    c0 = time.process_time()
    for d in data:
        for s in specs:
            getattr(talib, s.name)(*(d[_KEYS.get(k, k)] for k in s.inputs))
    ref = time.perf_counter() - t0
    ref_cpu = time.process_time() - c0
    slowest = sorted(per_function.items(), key=lambda kv: -kv[1])[:10]
    return {
        "symbols": symbols,
        "bars": bars,
        "functions": len(specs),
        "vectorized_s": vec,
        "vectorized_cpu_s": vec_cpu,
        "vectorized_prepare_cpu_s": prepare_cpu,
        "vectorized_compile_s": compile_s,
        "vectorized_slowest_cpu_s": dict(slowest),
        "kernels_s": kernels,
        "kernels_measured_on_symbols": sample,
        "talib_loop_s": ref,
        "talib_loop_cpu_s": ref_cpu,
        "ratio_vectorized_to_talib": vec / ref,
        "ratio_vectorized_to_talib_cpu": vec_cpu / ref_cpu,
        "ratio_kernels_to_talib": kernels / ref,
        "vectorized_cpu_s_by_function": per_function,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=10_000)
    parser.add_argument("--batch-sample", type=int, default=3)
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    streaming = bench_streaming()
    result: dict[str, Any] = {"cpu": cpu_model(), "streaming": streaming}
    rows = [
        ("streaming p50 per bar, default set, wall (µs)", f"{streaming['p50_us']:.1f}", ""),
        ("streaming p99 per bar, default set, wall (µs)", f"{streaming['p99_us']:.1f}", "≤ 50"),
        ("streaming p50 per bar, thread CPU (µs)", f"{streaming['cpu_p50_us']:.1f}", ""),
        ("streaming p99 per bar, thread CPU (µs)", f"{streaming['cpu_p99_us']:.1f}", "≤ 50"),
    ]
    if not args.skip_batch:
        batch = bench_batch(args.symbols, args.bars, args.batch_sample)
        result["batch"] = batch
        shape = f"{batch['symbols']}×{batch['bars']}×{batch['functions']}"
        rows += [
            (f"batch {shape} vectorized JAX (s)", f"{batch['vectorized_s']:.2f}", "≤ 2"),
            ("  its process CPU time (s)", f"{batch['vectorized_cpu_s']:.2f}", "≤ 2"),
            ("  its compile (warm_up, s)", f"{batch['vectorized_compile_s']:.1f}", ""),
            (f"batch {shape} Python kernels (s)", f"{batch['kernels_s']:.1f}", ""),
            ("batch, TA-Lib C in a Python loop (s)", f"{batch['talib_loop_s']:.2f}", ""),
            ("  its process CPU time (s)", f"{batch['talib_loop_cpu_s']:.2f}", ""),
            ("ratio vectorized / TA-Lib", f"{batch['ratio_vectorized_to_talib']:.2f}", "≤ 1"),
            ("  by CPU time", f"{batch['ratio_vectorized_to_talib_cpu']:.2f}", "≤ 1"),
            ("ratio kernels / TA-Lib", f"{batch['ratio_kernels_to_talib']:.0f}", ""),
        ]
    print(f"CPU: {result['cpu']} (one core)")
    print(f"{'figure':<52}{'value':>12}{'goal':>10}")
    for label, value, goal in rows:
        print(f"{label:<52}{value:>12}{goal:>10}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Features figures: streaming update of the default set per bar, and batch over many symbols.

    .venv/bin/python -m loadtest.features_bench [--symbols 500] [--bars 10000] [--batch-sample 3]

Streaming: one ``FeatureStream`` (the default set: every TA-Lib function plus the bar-only
estimators) fed the bundled SPY minute bars; each ``update`` timed with ``perf_counter_ns``.
Batch: the TA-Lib functions of the catalog at their defaults over ``bars`` generated bars. The
Python-kernel batch path is timed on ``batch-sample`` symbols and scaled to ``symbols`` (it is
linear in symbols); TA-Lib's C library is run in a Python loop over all ``symbols``.
Writes ``loadtest/results/features_bench.json``.
"""

from __future__ import annotations

import argparse
import json
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


def _spy() -> dict[str, np.ndarray]:
    bars = [
        feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(d)) for d in feeds.lean_days()
    ]
    return {f: np.concatenate([getattr(b, f) for b in bars]) for f in _FIELDS}


def bench_streaming(repeat: int = 3) -> dict[str, Any]:
    spy = _spy()
    rows = list(zip(*(spy[f].tolist() for f in _FIELDS), strict=True))
    times: list[int] = []
    for _ in range(repeat):
        stream = core.FeatureStream()
        for row in rows:
            t0 = time.perf_counter_ns()
            stream.update(*row)
            times.append(time.perf_counter_ns() - t0)
    arr = np.asarray(times) / 1000.0
    return {
        "features": len(core.DEFAULT_FEATURES),
        "values_per_bar": len(core.FeatureStream().keys),
        "bars": len(arr),
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
        "max_us": float(arr.max()),
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
    rng = np.random.default_rng(1)
    data = [_symbol(rng, bars) for _ in range(symbols)]
    specs = [s for s in core.CATALOG.values() if s.talib]
    t0 = time.perf_counter()
    for d in data[:sample]:
        for s in specs:
            core.compute(s.name, {k: d[_KEYS.get(k, k)] for k in s.inputs})
    ours = (time.perf_counter() - t0) / sample * symbols
    t0 = time.perf_counter()
    for d in data:
        for s in specs:
            getattr(talib, s.name)(*(d[_KEYS.get(k, k)] for k in s.inputs))
    ref = time.perf_counter() - t0
    return {
        "symbols": symbols,
        "bars": bars,
        "functions": len(specs),
        "kernels_s": ours,
        "kernels_measured_on_symbols": sample,
        "talib_loop_s": ref,
        "ratio_to_talib": ours / ref,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=10_000)
    parser.add_argument("--batch-sample", type=int, default=3)
    args = parser.parse_args()
    streaming = bench_streaming()
    batch = bench_batch(args.symbols, args.bars, args.batch_sample)
    print(f"{'figure':<48}{'value':>14}{'goal':>12}")
    print(f"{'streaming p50 per bar, default set (µs)':<48}{streaming['p50_us']:>14.1f}{'':>12}")
    print(
        f"{'streaming p99 per bar, default set (µs)':<48}{streaming['p99_us']:>14.1f}{'≤ 50':>12}"
    )
    label = f"batch {batch['symbols']}×{batch['bars']} kernels (s)"
    print(f"{label:<48}{batch['kernels_s']:>14.2f}{'≤ 2':>12}")
    print(f"{'batch, TA-Lib C in a Python loop (s)':<48}{batch['talib_loop_s']:>14.2f}{'':>12}")
    print(f"{'ratio kernels / TA-Lib':<48}{batch['ratio_to_talib']:>14.1f}{'≤ 1':>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"streaming": streaming, "batch": batch}, indent=2) + "\n")


if __name__ == "__main__":
    main()

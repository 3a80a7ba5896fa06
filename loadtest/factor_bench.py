"""Factor figures: per-bar rolling-beta update for many symbols, the vmapped batch, statsmodels.

    .venv/bin/python -m loadtest.factor_bench [--symbols 500] [--bars 5000] [--factors 3]
        [--window 60] [--reference-sample 10] [--engine-only]

Engine path (what a live bar costs): a ``FactorEngine`` with the default config but ``factors``
(SPY,QQQ,IWM for 3; HAC on, window 60), under the ``DeterministicDriver`` on a memory bus and
store; each bar is one input batch of ``symbols`` bars (the factors' first), handled as the live
consumer handles a batch (every ``on_bar``, then ``after_batch``: regressions, publishing, store
appends), timed over ``--engine-bars`` bars after the first full window. ``--engine-only`` runs
just this.

Streaming: one ``core.RollingOls`` with ``symbols`` slots; each bar updates every slot at once
(O(k²) sums + one batched solve; then again with Newey–West on, vectorized across slots), timed
with ``perf_counter_ns`` over ``--stream-bars`` bars. Batch: ``core.rolling_ols_many`` over
``symbols × bars × factors`` (compile timed apart, then the best of ``--repeat`` runs). Reference:
statsmodels ``RollingOLS(...).fit()`` on ``reference-sample`` symbols, scaled to ``symbols`` (it is
linear in symbols), and the max difference of our betas from its. Synthetic returns (seeded).
Writes ``loadtest/results/factor_bench.json``."""

from __future__ import annotations

import argparse
import asyncio
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
from engines.factor.service import FactorConfig, FactorEngine
from engines.shell.driver import DeterministicDriver
from protocol.records import Bar
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock

RESULTS = Path(__file__).resolve().parent / "results" / "factor_bench.json"


def _data(symbols: int, bars: int, factors: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 0.01, (bars, factors))
    betas = rng.normal(1.0, 0.3, (factors, symbols))
    y = (x @ betas + rng.normal(0.0, 0.01, (bars, symbols))).T.copy()
    return y, x


FACTOR_NAMES = ("SPY", "QQQ", "IWM", "EEM", "DIA", "XLF", "XLK", "XLE")


async def _engine_path(y: np.ndarray, x: np.ndarray, window: int, bars: int) -> dict[str, Any]:
    symbols, k = y.shape[0], x.shape[1]
    factors = FACTOR_NAMES[:k]
    names = [*factors, *(f"S{i:04d}" for i in range(symbols - k))]
    clock = ManualClock(0)
    config = FactorConfig(factors=factors, window=window, warmup_bars=0, warmup_symbols=0)
    engine = FactorEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    driver = DeterministicDriver(engine)
    step = 60_000_000_000
    # prices from returns: the factors' columns of x, the rest rows of y
    rets = np.vstack([x.T, y[: symbols - k]])
    close = 100.0 * np.cumprod(1.0 + rets, axis=1)
    total = min(bars + window + 1, close.shape[1])
    times, published = [], 0
    seq = 0
    for t in range(total):
        start = t * step
        batch = []
        for j, name in enumerate(names):
            c = float(close[j, t])
            seq += 1
            bar = Bar(symbol=name, spec="1m", start_ns=start, end_ns=start + step, open=c,
                      high=c, low=c, close=c, volume=1.0, dollar_volume=c, trades=1)  # fmt: skip
            batch.append(Envelope(f"bars.1m.{name}", seq, "e", start + step, start + step, bar))
        t0 = time.perf_counter_ns()
        out = await driver.run(batch)
        elapsed = time.perf_counter_ns() - t0
        published += len(out)
        if t > window:  # full windows (HAC on) only
            times.append(elapsed)
    driver.close()
    ms = np.asarray(times) / 1e6
    return {
        "symbols": symbols,
        "factors": k,
        "window": window,
        "hac": config.hac,
        "bars_timed": len(ms),
        "published": published,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def bench_engine(y: np.ndarray, x: np.ndarray, window: int, bars: int) -> dict[str, Any]:
    """The engine's path: one input batch of every symbol's bar per bar (see the docstring)."""
    return asyncio.run(_engine_path(y, x, window, bars))


def bench_streaming(
    y: np.ndarray, x: np.ndarray, window: int, bars: int, *, hac: bool = False
) -> dict[str, Any]:
    symbols, k = y.shape[0], x.shape[1]
    ols = core.RollingOls(k, window=window, capacity=symbols, hac=hac)
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
        "hac": hac,
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
    parser.add_argument("--engine-bars", type=int, default=100)
    parser.add_argument("--engine-only", action="store_true")
    args = parser.parse_args()
    y, x = _data(args.symbols, args.bars, args.factors)
    engine = bench_engine(y, x, args.window, args.engine_bars)
    e = engine
    label = f"engine path, {e['symbols']} symbols' bars × {e['factors']} factors, W={e['window']}"
    print(f"{label + ', HAC, p50 ms':<60}{e['p50_ms']:>12.3f}")
    print(f"{'engine path p99 ms':<60}{e['p99_ms']:>12.3f}")
    if args.engine_only:
        return
    streaming = bench_streaming(y, x, args.window, args.stream_bars)
    streaming_hac = bench_streaming(y, x, args.window, args.stream_bars, hac=True)
    batch = bench_batch(y, x, args.window, args.repeat)
    series = batch.pop("series")
    reference = bench_reference(y, x, args.window, args.reference_sample, series)
    ratio = reference["scaled_s"] / batch["best_s"]
    result = {
        "engine": engine,
        "streaming": streaming,
        "streaming_hac": streaming_hac,
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
    h = streaming_hac
    print(f"{'per-bar update with Newey–West, p50 ms':<52}{h['p50_ms']:>14.3f}")
    print(f"{'per-bar update with Newey–West, p99 ms':<52}{h['p99_ms']:>14.3f}")
    shape = "×".join(map(str, batch["shape"]))
    print(f"{'batch ' + shape + ' first call (compile) s':<52}{batch['first_call_s']:>14.3f}")
    print(f"{'batch ' + shape + ' best s':<52}{batch['best_s']:>14.3f}")
    print(f"{'statsmodels RollingOLS, scaled to all symbols s':<52}{reference['scaled_s']:>14.3f}")
    print(f"{'batch speed-up vs statsmodels':<52}{ratio:>14.1f}")
    print(f"{'max |β ours − β statsmodels|':<52}{reference['max_abs_param_diff']:>14.2e}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

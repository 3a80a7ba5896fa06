"""ML figures: one online update + prediction per symbol per bar, and many symbols in one step.

    .venv/bin/python -m loadtest.ml_bench [--symbols 500] [--bars 2000] [--features 10]

Per bar (the engine's per-message work, ``engines.ml.core``): resolve one label (prequential
metrics + Page–Hinkley + ``OnlineLearner.learn``) and predict the new bar with its bet size, for a
logistic model of ``features`` features; each bar timed with ``perf_counter_ns`` (wall) and
``thread_time_ns`` (this thread's CPU; on a shared machine the wall p99 carries preemptions).
Vmapped: ``core.make_batch_step`` over ``symbols`` symbols (learn where a label resolved, then
predict all), compiled first (compile time reported apart), then each step timed after
``block_until_ready``. One core: pinned, XLA single-threaded (set before JAX is imported).
Writes ``loadtest/results/ml_bench.json``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "ml_bench.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def percentiles(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a.max())}  # fmt: skip


def per_bar(bars: int, dim: int) -> dict[str, Any]:
    from engines.ml import core

    rng = np.random.default_rng(1)
    x = rng.normal(size=(bars, dim))
    y = rng.integers(0, 2, bars).astype(float)
    learner = core.OnlineLearner(dim, core.SgdParams(kind="logistic", l2=1e-4))
    metrics, drift = core.Prequential("logistic"), core.PageHinkley(mode="up")
    predictions = [0.5] * bars
    wall: list[int] = []
    cpu: list[int] = []
    horizon = 5
    for t in range(bars):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        j = t - horizon
        if j >= 0:
            drift.update(metrics.update(y[j], predictions[j]))
            learner.learn(x[j], y[j])
        p = learner.predict(x[t])
        core.bet_size(p)
        predictions[t] = p
        wall.append(time.perf_counter_ns() - w0)
        cpu.append(time.thread_time_ns() - c0)
    return {"bars": bars, "features": dim, "wall": percentiles(wall[100:]),
            "cpu": percentiles(cpu[100:])}  # fmt: skip


def vmapped(symbols: int, dim: int, steps: int) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
    from engines.ml import core

    step = core.make_batch_step(core.SgdParams(kind="logistic", l2=1e-4))
    started = time.perf_counter()
    core.warm_up_batch_step(step, symbols, dim)
    compile_s = time.perf_counter() - started
    rng = np.random.default_rng(2)
    state = core.batch_state(symbols, dim)
    xs = jax.device_put(rng.normal(size=(steps, symbols, dim)))
    ys = jax.device_put(rng.integers(0, 2, (steps, symbols)).astype(np.float64))
    masks = jax.device_put(rng.random((steps, symbols)) < 0.9)
    wall: list[int] = []
    for k in range(steps):
        w0 = time.perf_counter_ns()
        state, out = step(state, xs[k], ys[k], masks[k], xs[(k + 1) % steps])
        out.block_until_ready()
        wall.append(time.perf_counter_ns() - w0)
    return {"symbols": symbols, "features": dim, "steps": steps, "compile_s": compile_s,
            "wall": percentiles(wall[10:]), "device": str(jax.devices()[0])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    result: dict[str, Any] = {
        "cpu": cpu_name(),
        "per_bar": per_bar(args.bars, args.features),
        "vmapped": vmapped(args.symbols, args.features, args.steps),
    }
    pb, vm = result["per_bar"], result["vmapped"]
    print(f"CPU: {result['cpu']} (one core)")
    print(f"{'work':<44}{'p50 µs':>10}{'p99 µs':>10}")
    print(
        f"{'one symbol-bar: learn + predict (wall)':<44}{pb['wall']['p50_us']:>10.1f}"
        f"{pb['wall']['p99_us']:>10.1f}"
    )
    print(
        f"{'one symbol-bar: learn + predict (CPU)':<44}{pb['cpu']['p50_us']:>10.1f}"
        f"{pb['cpu']['p99_us']:>10.1f}"
    )
    print(f"{f'{args.symbols} symbols, one vmapped step (wall)':<44}{vm['wall']['p50_us']:>10.1f}"
          f"{vm['wall']['p99_us']:>10.1f}   (compile {vm['compile_s']:.2f} s)")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

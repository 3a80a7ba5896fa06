"""ML figures: one online update + prediction per symbol per bar, many symbols in one step, and the
walk-forward of 10 folds on 20 years daily for 13 symbols.

    .venv/bin/python -m loadtest.ml_bench [--symbols 500] [--bars 2000] [--features 10]
        [--skip-walkforward | --walkforward-only] [--walkforward-jobs N] [--repeats 3]

Per bar (the engine's per-message work, ``engines.ml.core``): resolve one label (prequential
metrics + Page–Hinkley + ``OnlineLearner.learn``) and predict the new bar with its bet size, for a
logistic model of ``features`` features; each bar timed with ``perf_counter_ns`` (wall) and
``thread_time_ns`` (this thread's CPU; on a shared machine the wall p99 carries preemptions).
Vmapped: ``core.make_batch_step`` over ``symbols`` symbols (learn where a label resolved, then
predict all), compiled first (compile time reported apart), then each step timed after
``block_until_ready``. One core: pinned, XLA single-threaded (set before JAX is imported).
Per bar, also the tree models (``engines.ml.hoeffding``: one Hoeffding tree, Oza bagging of 10),
same work, on a stream a tree can split (grace period 200). Walk-forward: the bundled Lean daily
files (13 symbols, 1998–2021), ``core.daily_design`` per symbol (horizon 5) merged in time order
as ``POST /ml/walkforward`` does, 10 purged k-fold splits (embargo 1 %) and 10 expanding
walk-forward splits, each fold a fresh scikit-learn fit + scoring: logistic regression (the
endpoint's default), a random forest of 100 trees at depth ≤ 8 (at scikit-learn's defaults,
unbounded depth, it takes minutes: reported apart if ``--forest-defaults``), and the same forest
with each tree's bootstrap drawing ``max_samples`` = the labels' average uniqueness
(``core.average_uniqueness``, AFML 4.5 and 6.4: overlapping 5-day labels make a full-size
bootstrap mostly redundant rows; ~3× less CPU, reported with each run's mean AUC). Nearly all
of a forest's time is scikit-learn's compiled tree builder. The design (``engines.ml.bundled``,
the rows ``POST /ml/walkforward`` builds) is built once and shared by every run. The walk-forward
runs on every CPU the process may use (the per-bar figures on one pinned core): each estimator and
scheme once with the folds one after another (``n_jobs`` 1) and once with ``--walkforward-jobs``
folds at once (default: one per CPU, as the engine's ``NAUTILUS_ML_WALKFORWARD_JOBS``), the
per-fold results checked equal; ``--repeats`` times, medians of wall and process CPU time
reported (on a shared machine the CPU seconds say what the wall time would be with the CPUs free).
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


def per_bar_tree(bars: int, dim: int, kind: str) -> dict[str, Any]:
    from engines.ml import core, hoeffding

    rng = np.random.default_rng(1)
    x = rng.normal(size=(bars, dim))
    y = ((x[:, 0] > 0.3) & (x[:, 1] > -0.5) ^ (rng.random(bars) < 0.1)).astype(float)
    spec = hoeffding.TreeSpec(kind, hoeffding.TreeParams(), n_models=10, seed=1)  # type: ignore[arg-type]
    learner = core.make_learner(dim, spec)
    metrics, drift = core.Prequential("logistic"), core.PageHinkley(mode="up")
    predictions = [0.5] * bars
    wall: list[int] = []
    cpu: list[int] = []
    horizon = 5
    for t in range(bars):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        j = t - horizon
        if j >= 0:
            loss = metrics.update(y[j], predictions[j])
            if loss == loss:
                drift.update(loss)
            learner.learn(x[j], y[j])
        p = learner.predict(x[t])
        if p == p:
            core.bet_size(p)
        predictions[t] = p
        wall.append(time.perf_counter_ns() - w0)
        cpu.append(time.thread_time_ns() - c0)
    leaves = getattr(learner, "model", None)
    return {"model": kind, "bars": bars, "features": dim, "wall": percentiles(wall[100:]),
            "cpu": percentiles(cpu[100:]), "tree": repr(leaves.__class__.__name__)}  # fmt: skip


def walkforward(forest_defaults: bool, jobs: int, repeats: int) -> dict[str, Any]:
    from engines.ml import core
    from engines.ml.bundled import bundled_daily_design

    started = time.perf_counter()
    design = bundled_daily_design(horizon=5)
    x, y, t0, t1 = design.x, design.y, design.t0, design.t1
    avg_uniqueness = float(core.average_uniqueness(t0, t1, design.group).mean())
    design_s = time.perf_counter() - started
    schemes = {
        "purged_kfold": core.purged_kfold_splits(t1, 10, 0.01, t0=t0),
        "walk_forward": core.walk_forward_splits(len(y), 10, t1=t1, t0=t0),
    }
    estimators: list[tuple[str, dict[str, Any]]] = [
        ("logistic", {}),
        ("random_forest", {"n_estimators": 100, "max_depth": 8, "random_state": 0}),
        # AFML 4.5 / 6.4: each tree draws avgU·n rows, as many as there are unique labels
        (
            "random_forest",
            {
                "n_estimators": 100,
                "max_depth": 8,
                "random_state": 0,
                "max_samples": round(avg_uniqueness, 4),
            },
        ),
    ]
    if forest_defaults:
        estimators.append(("random_forest", {"n_estimators": 100, "random_state": 0}))
    runs = []
    for scheme, splits in schemes.items():
        for name, params in estimators:
            for n_jobs in sorted({1, jobs}):
                seconds, cpu = [], []
                for _ in range(repeats):
                    w0, c0 = time.perf_counter(), time.process_time()
                    folds = core.walk_forward(x, y, splits, name, params, n_jobs=n_jobs)
                    seconds.append(time.perf_counter() - w0)
                    cpu.append(time.process_time() - c0)
                    payload = [f.to_payload() for f in folds]
                    if n_jobs == 1:
                        reference = payload
                    elif payload != reference:
                        raise AssertionError(f"{scheme} {name}: n_jobs={n_jobs} differs")
                auc = float(np.mean([f.auc for f in folds if f.auc is not None]))
                runs.append({"scheme": scheme, "estimator": name, "params": params,
                             "n_jobs": n_jobs, "folds": len(folds), "seconds": seconds,
                             "median_s": float(np.median(seconds)), "cpu_s": cpu,
                             "median_cpu_s": float(np.median(cpu)), "mean_auc": auc})  # fmt: skip
    return {"symbols": int(design.group.max()) + 1, "rows": int(y.size),
            "years": float((t0[-1] - t0[0]) / 365.25), "design_s": design_s,
            "avg_uniqueness": avg_uniqueness, "cpus": len(os.sched_getaffinity(0)),
            "runs": runs}  # fmt: skip


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
    parser.add_argument("--skip-walkforward", action="store_true")
    parser.add_argument("--forest-defaults", action="store_true")
    parser.add_argument("--walkforward-only", action="store_true")
    parser.add_argument("--walkforward-jobs", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from engines.ml import core

    cpus = os.sched_getaffinity(0)
    result: dict[str, Any] = {"cpu": cpu_name()}
    if not args.walkforward_only:
        os.sched_setaffinity(0, {min(cpus)})
        result["per_bar"] = per_bar(args.bars, args.features)
        result["vmapped"] = vmapped(args.symbols, args.features, args.steps)
        result["per_bar_trees"] = [
            per_bar_tree(args.bars, args.features, k) for k in ("hoeffding_tree", "bagging")
        ]
        os.sched_setaffinity(0, cpus)  # threads started from here on may use every CPU
    if not args.skip_walkforward:
        jobs = args.walkforward_jobs or core.default_jobs()
        result["walkforward"] = walkforward(args.forest_defaults, jobs, args.repeats)
    print(f"CPU: {result['cpu']} (per bar: one core; walk-forward: {len(cpus)} CPUs)")
    if not args.walkforward_only:
        print_per_bar(result, args.symbols)
    if "walkforward" in result:
        wf = result["walkforward"]
        print(
            f"walk-forward: {wf['symbols']} symbols, {wf['years']:.1f} years, {wf['rows']} rows, "
            f"design {wf['design_s']:.2f} s, average label uniqueness {wf['avg_uniqueness']:.3f}"
        )
        for run in wf["runs"]:
            runs = " ".join(f"{s:.1f}" for s in run["seconds"])
            print(f"  {run['scheme']:<14}{run['estimator']:<15}{run['folds']:>3} folds "
                  f"n_jobs {run['n_jobs']:>2}  median {run['median_s']:>7.2f} s ({runs}), "
                  f"CPU {run['median_cpu_s']:.1f} s, AUC {run['mean_auc']:.4f}"
                  f"   {run['params']}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def print_per_bar(result: dict[str, Any], symbols: int) -> None:
    pb, vm = result["per_bar"], result["vmapped"]
    print(f"{'work':<44}{'p50 µs':>10}{'p99 µs':>10}")
    print(
        f"{'one symbol-bar: learn + predict (wall)':<44}{pb['wall']['p50_us']:>10.1f}"
        f"{pb['wall']['p99_us']:>10.1f}"
    )
    print(
        f"{'one symbol-bar: learn + predict (CPU)':<44}{pb['cpu']['p50_us']:>10.1f}"
        f"{pb['cpu']['p99_us']:>10.1f}"
    )
    print(f"{f'{symbols} symbols, one vmapped step (wall)':<44}{vm['wall']['p50_us']:>10.1f}"
          f"{vm['wall']['p99_us']:>10.1f}   (compile {vm['compile_s']:.2f} s)")  # fmt: skip
    for tree in result["per_bar_trees"]:
        label = f"one symbol-bar: {tree['model']} (CPU)"
        print(f"{label:<44}{tree['cpu']['p50_us']:>10.1f}{tree['cpu']['p99_us']:>10.1f}")


if __name__ == "__main__":
    main()

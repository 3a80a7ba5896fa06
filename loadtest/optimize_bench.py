"""Portfolio optimisation benchmark: each method on the 13 bundled daily tickers, and its scaling.

    .venv/bin/python -m loadtest.optimize_bench [--repeat 5] [--assets 50]

Data: total-return adjusted closes of the 13 Lean daily tickers on the 1,761 sessions they share
(2014-04-03 … 2021-03-31), simple daily returns, annualised × 252. Timed (best of ``--repeat``)
per method of ``engines.portfolio.optimize.optimize`` with the sample and the Ledoit–Wolf
covariance, long-only: the whole call (estimates + solve), as ``POST /portfolio/optimize`` pays
it. Targets: the midpoint of the min-variance and max-return portfolios' return / volatility.
Also timed: PyPortfolioOpt (cvxpy) on the same problems when installed (a test dependency), and
``--assets`` synthetic assets (one-factor covariance, 1,000 periods) for the O(n³)-per-step
active-set scaling. Prints a table and writes JSON to ``loadtest/results/optimize_bench.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines.marketdata.daily import daily_tickers, read_daily_bars
from engines.portfolio.optimize import Method, OptimizeRequest, OptimizeResult, optimize

RESULTS = Path(__file__).parent / "results"


def common_returns() -> tuple[list[str], np.ndarray]:
    """Tickers and the (sessions − 1) × tickers simple returns on the sessions all of them share."""
    tickers = daily_tickers()
    bars = [read_daily_bars(t, adjustment="total") for t in tickers]
    common = bars[0].date
    for b in bars[1:]:
        common = np.intersect1d(common, b.date)
    closes = np.column_stack([b.close[np.searchsorted(b.date, common)] for b in bars])
    return tickers, closes[1:] / closes[:-1] - 1.0


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def targets(assets: tuple[str, ...], returns: np.ndarray, estimator: str) -> dict[str, float]:
    low = optimize(
        OptimizeRequest(
            method=Method.MIN_VARIANCE,
            assets=assets,
            returns=returns,
            covariance_estimator=estimator,
        )
    )
    top = optimize(
        OptimizeRequest(
            method=Method.EFFICIENT_RISK,
            assets=assets,
            returns=returns,
            covariance_estimator=estimator,
            target_volatility=10.0,
        )
    )
    assert low.expected_return is not None and top.expected_return is not None
    return {
        "target_return": (low.expected_return + top.expected_return) / 2,
        "target_volatility": (low.volatility + top.volatility) / 2,
    }


def pypfopt_timings(
    assets: list[str], returns: np.ndarray, aims: dict[str, float], repeat: int
) -> dict[str, float]:
    try:
        import pandas as pd
        from pypfopt import EfficientFrontier, HRPOpt, expected_returns, risk_models
    except ImportError:
        return {}
    frame = pd.DataFrame(returns, columns=assets)
    mu = expected_returns.mean_historical_return(frame, returns_data=True)
    cov = risk_models.sample_cov(frame, returns_data=True)
    calls: dict[str, Callable[[EfficientFrontier], object]] = {
        "min_variance": lambda ef: ef.min_volatility(),
        "max_sharpe": lambda ef: ef.max_sharpe(),
        "efficient_return": lambda ef: ef.efficient_return(aims["target_return"]),
        "efficient_risk": lambda ef: ef.efficient_risk(aims["target_volatility"]),
    }
    timings = {
        name: best_of(repeat, lambda: call(EfficientFrontier(mu, cov)))  # noqa: B023 — called now
        for name, call in calls.items()
    }
    timings["hrp"] = best_of(repeat, lambda: HRPOpt(frame).optimize("single"))
    return timings


def synthetic(n: int, periods: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0004, 0.01, size=(periods, 1))
    beta = rng.uniform(0.5, 1.5, size=(1, n))
    return market @ beta + rng.normal(0.0002, 0.012, size=(periods, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (best kept)")
    parser.add_argument("--assets", type=int, default=50, help="synthetic assets for scaling")
    args = parser.parse_args()

    tickers, returns = common_returns()
    assets = tuple(tickers)
    rows: list[dict[str, Any]] = []
    sample_aims: dict[str, float] = {}
    for estimator in ("sample", "ledoit_wolf"):
        aims = targets(assets, returns, estimator)
        if estimator == "sample":
            sample_aims = aims
        for method in Method:
            request = OptimizeRequest(
                method=method,
                assets=assets,
                returns=returns,
                covariance_estimator=estimator,
                target_return=aims["target_return"],
                target_volatility=aims["target_volatility"],
            )
            result: OptimizeResult = optimize(request)
            seconds = best_of(args.repeat, functools.partial(optimize, request))
            rows.append(
                {
                    "estimator": estimator,
                    "method": method.value,
                    "ms": seconds * 1e3,
                    "iterations": result.iterations,
                    "kkt_worst": None if result.kkt is None else result.kkt.worst,
                    "expected_return": result.expected_return,
                    "volatility": result.volatility,
                    "weights": result.weights_by_asset(),
                }
            )
    reference = pypfopt_timings(tickers, returns, sample_aims, args.repeat)

    scaled = synthetic(args.assets)
    names = tuple(f"S{i}" for i in range(args.assets))
    scaling = {
        method.value: best_of(
            max(1, args.repeat // 2),
            functools.partial(
                optimize,
                OptimizeRequest(
                    method=method, assets=names, returns=scaled, upper=max(1.0, 5.0 / args.assets)
                ),
            ),
        )
        * 1e3
        for method in (Method.MIN_VARIANCE, Method.MAX_SHARPE, Method.RISK_PARITY, Method.HRP)
    }

    print(f"{len(assets)} assets × {returns.shape[0]} days, long-only, best of {args.repeat}")
    print(
        f"{'estimator':12s} {'method':18s} {'ms':>8s} {'steps':>6s} {'KKT worst':>10s} "
        f"{'pypfopt ms':>11s}"
    )
    for row in rows:
        kkt = "—" if row["kkt_worst"] is None else f"{row['kkt_worst']:.1e}"
        ref = reference.get(row["method"]) if row["estimator"] == "sample" else None
        ref_text = "" if ref is None else f"{ref * 1e3:11.2f}"
        print(
            f"{row['estimator']:12s} {row['method']:18s} {row['ms']:8.2f} "
            f"{row['iterations']:6d} {kkt:>10s} {ref_text}"
        )
    print(
        f"{args.assets} synthetic assets × 1,000 periods (ms):",
        {k: round(v, 1) for k, v in scaling.items()},
    )

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "optimize_bench.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "assets": list(assets),
                "days": int(returns.shape[0]),
                "repeat": args.repeat,
                "rows": rows,
                "pypfopt_ms": {k: v * 1e3 for k, v in reference.items()},
                "synthetic_assets": args.assets,
                "synthetic_ms": scaling,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

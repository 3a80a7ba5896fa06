"""Collateral benchmark: ISDA SIMM on 10⁵ synthetic CRIF rows, schedule IM, allocation LP.

    .venv/bin/python -m loadtest.collateral_bench [--rows 100000] [--repeat 5]

Figure (issue 4): SIMM aggregation on 10⁵ CRIF rows well under a second. The CRIF is IR curve
deltas (20 currencies × 12 tenors × 4 sub-curves), IR vegas and FX deltas, one portfolio with two
collect and two post regulations, so each run computes SIMM 2 sides × 2 regulations. Reported:
validation/parsing of the records (``crif_from_records``) and the margin computation
(``compute_simm``) separately, best and median of ``--repeat`` runs. Prints a table and writes JSON
to ``loadtest/results/collateral_bench.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines.collateral.core import (
    Agreement,
    Asset,
    EligibleCollateral,
    allocate_collateral,
    compute_schedule_im,
    parse_schedule_crif_csv,
    read_bundled_data,
)
from engines.collateral.simm import IR_TENORS, bundled_calibration, compute_simm, crif_from_records

CCYS = (
    "USD",
    "EUR",
    "GBP",
    "JPY",
    "AUD",
    "CAD",
    "CHF",
    "SEK",
    "NOK",
    "DKK",
    "HKD",
    "KRW",
    "NZD",
    "SGD",
    "TWD",
    "BRL",
    "MXN",
    "ZAR",
    "TRY",
    "INR",
)
SUBCURVES = ("OIS", "Libor1m", "Libor3m", "Libor6m")


def synthetic_crif(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    ccy = rng.integers(0, len(CCYS), n)
    tenor = rng.integers(0, len(IR_TENORS), n)
    sub = rng.integers(0, len(SUBCURVES), n)
    amount = rng.normal(0.0, 5_000.0, n)
    regs = ("ESA,USPR", "SEC,CFTC")
    out = []
    for i in range(n):
        rt = ("Risk_IRCurve", "Risk_IRVol", "Risk_FX")[kind[i]]
        out.append(
            {
                "TradeID": f"T{i % 5000}",
                "PortfolioID": "BENCH",
                "ProductClass": "RatesFX",
                "RiskType": rt,
                "Qualifier": CCYS[ccy[i]],
                "Label1": IR_TENORS[tenor[i]] if rt != "Risk_FX" else "",
                "Label2": SUBCURVES[sub[i]] if rt == "Risk_IRCurve" else "",
                "AmountCurrency": "USD",
                "Amount": float(amount[i] * (100.0 if rt == "Risk_IRVol" else 1.0)),
                "collect_regulations": regs[0],
                "post_regulations": regs[1],
            }
        )
    return out


def _time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cal = bundled_calibration("2.6")
    records = synthetic_crif(args.rows)
    crif = crif_from_records(records)
    compute_simm(crif, cal)  # warm-up
    results: dict[str, Any] = {}
    results["crif_from_records"] = _time(lambda: crif_from_records(records), args.repeat)
    results["compute_simm"] = _time(lambda: compute_simm(crif, cal), args.repeat)
    sched = parse_schedule_crif_csv(read_bundled_data("crif_schedule.csv").decode())
    results["schedule_im_ore_example"] = _time(
        lambda: compute_schedule_im(sched, dt.date(2020, 12, 28)), args.repeat
    )
    agreements = {
        f"A{i}": Agreement(
            f"A{i}",
            f"C{i}",
            "USD",
            eligible=(
                EligibleCollateral("govt", 0.02),
                EligibleCollateral("equity", 0.2, 0.3),
                EligibleCollateral("cash.USD", 0.0),
            ),
        )
        for i in range(20)
    }
    assets = [Asset(f"G{i}", "govt", 5e6, 0.001 + 1e-5 * i) for i in range(30)]
    assets += [Asset(f"E{i}", "equity", 5e6, 0.0009) for i in range(30)]
    assets.append(Asset("USD", "cash.USD", 1e9, 0.003))
    calls = {f"A{i}": 5e6 + 1e5 * i for i in range(20)}
    alloc = allocate_collateral(calls, agreements, assets)
    results["allocate_20x61"] = _time(
        lambda: allocate_collateral(calls, agreements, assets), args.repeat
    )
    total = compute_simm(crif, cal).total("Call")
    print(f"{'step':<28}{'best s':>12}{'median s':>12}")
    for k, (best, med) in results.items():
        print(f"{k:<28}{best:>12.4f}{med:>12.4f}")
    print(f"rows={args.rows} call SIMM={total:,.2f} USD; allocation gap={alloc.duality_gap:.2e}")
    out = {
        "rows": args.rows,
        "repeat": args.repeat,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "timings_s": {k: {"best": b, "median": m} for k, (b, m) in results.items()},
        "call_simm_usd": total,
        "allocation_duality_gap": alloc.duality_gap,
    }
    path = Path("loadtest/results/collateral_bench.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Collateral benchmark: ISDA SIMM on 10⁴–10⁶ synthetic CRIF rows (parse, compute, REST end to
end), schedule IM, allocation LP.

    .venv/bin/python -m loadtest.collateral_bench [--rows 10000 100000] [--repeat 5]
    .venv/bin/python -m loadtest.collateral_bench --rows 1000000 --repeat 1   # 10⁶: ~1 min

Figure (issue 13, item 4): SIMM on 10⁵ CRIF rows well under a second. The CRIF is IR curve deltas
(20 currencies × 12 tenors × 4 sub-curves), IR vegas and FX deltas, one portfolio with two
collect and two post regulations, so each run computes SIMM for 2 sides × 2 regulations. Timed
per size, best and median of ``--repeat`` runs:

* ``parse_csv`` — ``parse_crif_csv`` on the CSV text (reading and validating every cell);
* ``from_records`` — ``crif_from_records`` on the JSON-shaped dicts;
* ``compute`` — ``compute_simm`` on the parsed CRIF (risk factors, margins, report rows);
* ``rest_csv`` / ``rest_json`` — ``POST /collateral/simm`` through the engine's real app (falcon
  ASGI, in process, no socket): body read and decoding, the compute thread, the JSON answer.

Every REST answer's totals are checked against the in-process report. The synthetic inputs are
moved out of the garbage collector's view (``gc.freeze``) before they are timed, as a server
does not hold them. The machine's CPU model,
core count and load average are recorded with the figures (a loaded machine runs slower: quote
the load with the numbers). Prints a table and writes JSON (``loadtest/report.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import functools
import gc
import io
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from falcon import testing

from engines.collateral.api import routes
from engines.collateral.config import CollateralConfig
from engines.collateral.core import (
    Agreement,
    Asset,
    EligibleCollateral,
    allocate_collateral,
    compute_schedule_im,
    parse_schedule_crif_csv,
    read_bundled_data,
)
from engines.collateral.service import CollateralEngine
from engines.collateral.simm import (
    IR_TENORS,
    bundled_calibration,
    compute_simm,
    crif_from_records,
    parse_crif_csv,
)
from engines.shell import create_app
from loadtest.report import aligned, machine, write_results
from realtime.bus import MemoryBus
from realtime.clock import ManualClock

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
CSV_HEADERS = {"content-type": "text/csv"}
#: REST runs only up to the engine's default ``max_crif_rows`` (a 10⁶-row body is refused).
REST_MAX_ROWS = CollateralConfig().max_crif_rows


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


def as_csv(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


async def timed_async(fn: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


async def rest_timings(
    sizes: dict[int, tuple[str, bytes, tuple[float, float]]], repeat: int
) -> dict[int, dict[str, tuple[float, float]]]:
    """``POST /collateral/simm`` per size, CSV and JSON bodies, through the engine's app."""
    clock = ManualClock(1_600_000_000_000_000_000)
    config = CollateralConfig(max_crif_rows=max(sizes))
    engine = CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    out: dict[int, dict[str, tuple[float, float]]] = {}
    try:
        app = create_app(engine, version="bench", routes=routes(engine))
        async with testing.ASGIConductor(app) as client:
            for n, (text, body, (call, post)) in sizes.items():

                async def post_csv(text: str = text) -> testing.Result:
                    return await client.simulate_post(
                        "/collateral/simm", body=text, headers=CSV_HEADERS
                    )

                async def post_json(body: bytes = body) -> testing.Result:
                    return await client.simulate_post(
                        "/collateral/simm",
                        body=body,
                        headers={"content-type": "application/json"},
                    )

                for send in (post_csv, post_json):  # the answer is the in-process report's
                    resp = await send()
                    assert resp.status_code == 200, resp.text[:500]
                    totals = resp.json["totals"]
                    assert (totals["Call"], totals["Post"]) == (call, post), totals
                out[n] = {
                    "rest_csv": await timed_async(post_csv, repeat),
                    "rest_json": await timed_async(post_json, repeat),
                }
    finally:
        await engine.stop()
    return out


def other_timings(repeat: int) -> tuple[dict[str, tuple[float, float]], float]:
    """Schedule IM on ORE's example and the allocation LP (20 agreements × 61 assets)."""
    sched = parse_schedule_crif_csv(read_bundled_data("crif_schedule.csv").decode())
    results = {
        "schedule_im_ore_example": timed(
            lambda: compute_schedule_im(sched, dt.date(2020, 12, 28)), repeat
        )
    }
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
    results["allocate_20x61"] = timed(
        lambda: allocate_collateral(calls, agreements, assets), repeat
    )
    return results, alloc.duality_gap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = ap.parse_args()
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    cal = bundled_calibration("2.6")
    simm: dict[int, dict[str, Any]] = {}
    bodies: dict[int, tuple[str, bytes, tuple[float, float]]] = {}
    for n in args.rows:
        records = synthetic_crif(n)
        text = as_csv(records)
        gc.collect()
        gc.freeze()  # the synthetic inputs are not a server's heap: keep them out of GC passes
        crif = parse_crif_csv(text)
        report = compute_simm(crif, cal)
        again = compute_simm(crif_from_records(records), cal)
        totals = (report.total("Call"), report.total("Post"))
        assert totals == (again.total("Call"), again.total("Post")), "CSV and records differ"
        simm[n] = {
            "parse_csv": timed(functools.partial(parse_crif_csv, text), args.repeat),
            "from_records": timed(functools.partial(crif_from_records, records), args.repeat),
            "compute": timed(functools.partial(compute_simm, crif, cal), args.repeat),
        }
        simm[n]["parse_csv+compute"] = tuple(
            a + b for a, b in zip(simm[n]["parse_csv"], simm[n]["compute"], strict=True)
        )
        simm[n]["totals_usd"] = {"Call": totals[0], "Post": totals[1]}
        if n <= REST_MAX_ROWS:
            bodies[n] = (text, orjson.dumps({"crif": records}), totals)
    if bodies:
        for n, timings in asyncio.run(rest_timings(bodies, args.repeat)).items():
            simm[n].update(timings)
    others, gap = other_timings(args.repeat)
    load_after = os.getloadavg()
    steps = ("parse_csv", "from_records", "compute", "parse_csv+compute", "rest_csv", "rest_json")
    rows = [
        [f"{n:,} {step}", f"{simm[n][step][0]:.4f}", f"{simm[n][step][1]:.4f}"]
        for n in args.rows
        for step in steps
        if step in simm[n]
    ]
    rows += [[name, f"{b:.4f}", f"{m:.4f}"] for name, (b, m) in others.items()]
    print(aligned(("step (rows)", "best s", "median s"), rows))
    cpu = cpu_model()
    print(
        f"CPU {cpu} × {os.cpu_count()}; load average {load_before[0]:.2f} → {load_after[0]:.2f}; "
        f"allocation duality gap {gap:.2e}"
    )
    document = {
        "benchmark": "collateral_bench",
        "started": started.isoformat(),
        "repeat": args.repeat,
        "machine": {**machine(), "cpu": cpu, "loadavg_before": load_before},
        "loadavg_after": load_after,
        "simm": {
            str(n): {
                k: ({"best": v[0], "median": v[1]} if isinstance(v, tuple) else v)
                for k, v in timings.items()
            }
            for n, timings in simm.items()
        },
        "other_s": {k: {"best": b, "median": m} for k, (b, m) in others.items()},
        "allocation_duality_gap": gap,
    }
    print(f"wrote {write_results('collateral_bench', document, started, args.out)}")


if __name__ == "__main__":
    main()

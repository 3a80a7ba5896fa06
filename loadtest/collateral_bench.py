"""Collateral benchmark: ISDA SIMM on 10⁴–10⁶ synthetic CRIF rows (parse, compute, REST end to
end), schedule IM, allocation LP.

    .venv/bin/python -m loadtest.collateral_bench [--rows 10000 100000] [--repeat 5] [--mix all]
    .venv/bin/python -m loadtest.collateral_bench --rows 1000000 --repeat 1   # 10⁶ rows

Figure (issue 13, item 4): SIMM on 10⁵ CRIF rows well under a second. One portfolio with two
collect and two post regulations, so each run computes SIMM for 2 sides × 2 regulations. The
CRIF (``--mix``):

* ``all`` (default): every risk type the engine prices (:data:`MIX_ALL`): half the rows rates
  and FX — IR curve (20 currencies × 12 tenors × 4 sub-curves), inflation, cross-currency
  basis, IR and inflation vol, FX deltas and FX vol on 45 pairs — and half equity (2,000
  names over buckets 1–12 and Residual), commodity (170 names over buckets 1–17), credit
  qualifying (1,000 issuers over buckets 1–12 and Residual, 5 tenors, a tenth securitised),
  credit vol, base correlation (10 indices) and credit non-qualifying (200 names over buckets
  1, 2 and Residual, 10 underlyings), with their vols on SIMM tenors. A 10⁵-row CRIF then has
  ~20,000 distinct combinations of its categorical cells and ~15,000 risk factors;
* ``ratesfx``: the first version of this benchmark (IR curve 80 %, IR vol 15 %, FX 5 %;
  ~1,200 risk factors), which the README's figures before the all-class mix were measured on.

Timed per size, best and median of ``--repeat`` runs, wall and process CPU (every thread's; on
a shared machine the CPU figure is the steadier one):

* ``parse_csv`` — ``parse_crif_csv`` on the CSV text (reading and validating every cell);
* ``from_records`` — ``crif_from_records`` on the records decoded from the JSON body (each
  cell its own string, as a JSON decoder hands them over);
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
    CREDIT_TENORS,
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


#: ``--mix all`` (the default): the share of the rows per risk type, half rates and FX, half
#: equity, commodity and credit.
MIX_ALL: dict[str, float] = {
    "Risk_IRCurve": 0.33,
    "Risk_Inflation": 0.01,
    "Risk_XCcyBasis": 0.01,
    "Risk_IRVol": 0.07,
    "Risk_InflationVol": 0.01,
    "Risk_FX": 0.04,
    "Risk_FXVol": 0.03,
    "Risk_Equity": 0.13,
    "Risk_EquityVol": 0.05,
    "Risk_Commodity": 0.06,
    "Risk_CommodityVol": 0.03,
    "Risk_CreditQ": 0.15,
    "Risk_CreditVol": 0.03,
    "Risk_BaseCorr": 0.01,
    "Risk_CreditNonQ": 0.03,
    "Risk_CreditVolNonQ": 0.01,
}
#: The bucketed classes' names: how many, and the buckets they are spread over (name k in
#: bucket k modulo their number), so every bucket holds many qualifiers.
EQUITY_BUCKETS = (*(str(b) for b in range(1, 13)), "Residual")
COMMODITY_BUCKETS = tuple(str(b) for b in range(1, 18))
CREDIT_Q_BUCKETS = (*(str(b) for b in range(1, 13)), "Residual")
CREDIT_NQ_BUCKETS = ("1", "2", "Residual")
N_EQUITY, N_COMMODITY, N_CREDIT_Q, N_CREDIT_NQ = 2_000, 170, 1_000, 200
NQ_UNDERLYINGS = ("CMBX", "ABX", "PRIMEX", "RMBS", "CLO", "TRX", "IOS", "PO", "MBX", "CDO")
BASE_CORR_INDICES = (
    "CDX.NA.IG", "CDX.NA.HY", "CDX.EM", "ITRAXX.EUR", "ITRAXX.XOVER", "ITRAXX.ASIA",
    "ITRAXX.AUS", "ITRAXX.JAPAN", "CDX.NA.XO", "ITRAXX.FINSEN",
)  # fmt: skip
FX_PAIRS = tuple(a + b for i, a in enumerate(CCYS[:10]) for b in CCYS[i + 1 : 10])
PRODUCT_CLASS = {
    "IR": "RatesFX",
    "FX": "RatesFX",
    "Eq": "Equity",
    "Co": "Commodity",
    "Cr": "Credit",
}
REGULATIONS = ("ESA,USPR", "SEC,CFTC")


def synthetic_crif(n: int, seed: int = 7, mix: str = "all") -> list[dict[str, Any]]:
    """``n`` CRIF rows of one portfolio (``mix``: ``all`` or ``ratesfx``, see the module)."""
    if mix == "ratesfx":
        return _ratesfx_crif(n, seed)
    if mix != "all":
        raise ValueError(f"unknown mix {mix!r}")
    rng = np.random.default_rng(seed)
    types = list(MIX_ALL)
    kind = rng.choice(len(types), size=n, p=list(MIX_ALL.values()))
    pick = rng.integers(0, 1 << 30, size=(n, 3))  # qualifier, Label1, Label2 draws per row
    amount = rng.normal(0.0, 5_000.0, n)
    sec = rng.random(n) < 0.1  # credit qualifying: a tenth of the rows on securitisations
    out = []
    for i in range(n):
        rt = types[kind[i]]
        q_draw, l1_draw, l2_draw = pick[i].tolist()
        bucket, label1, label2, scale = "", "", "", 1.0
        if rt in ("Risk_IRCurve", "Risk_IRVol", "Risk_Inflation", "Risk_XCcyBasis",
                  "Risk_InflationVol", "Risk_FX"):  # fmt: skip
            pc, qualifier = "IR", CCYS[q_draw % len(CCYS)]
            if rt in ("Risk_IRCurve", "Risk_IRVol", "Risk_InflationVol"):
                label1 = IR_TENORS[l1_draw % len(IR_TENORS)]
            if rt == "Risk_IRCurve":
                label2 = SUBCURVES[l2_draw % len(SUBCURVES)]
            scale = 100.0 if rt in ("Risk_IRVol", "Risk_InflationVol") else 1.0
        elif rt == "Risk_FXVol":
            pc, qualifier = "FX", FX_PAIRS[q_draw % len(FX_PAIRS)]
            label1, scale = IR_TENORS[l1_draw % len(IR_TENORS)], 100.0
        elif rt in ("Risk_Equity", "Risk_EquityVol"):
            k = q_draw % N_EQUITY
            pc, qualifier, bucket = "Eq", f"EQ{k:04d}", EQUITY_BUCKETS[k % len(EQUITY_BUCKETS)]
            if rt == "Risk_EquityVol":
                label1, scale = IR_TENORS[l1_draw % len(IR_TENORS)], 100.0
        elif rt in ("Risk_Commodity", "Risk_CommodityVol"):
            k = q_draw % N_COMMODITY
            pc, qualifier = "Co", f"CMD{k:03d}"
            bucket = COMMODITY_BUCKETS[k % len(COMMODITY_BUCKETS)]
            if rt == "Risk_CommodityVol":
                label1, scale = IR_TENORS[l1_draw % len(IR_TENORS)], 100.0
        elif rt in ("Risk_CreditQ", "Risk_CreditVol"):
            k = q_draw % N_CREDIT_Q
            pc, qualifier = "Cr", f"ISSUER{k:04d}"
            bucket = CREDIT_Q_BUCKETS[k % len(CREDIT_Q_BUCKETS)]
            label1, label2 = CREDIT_TENORS[l1_draw % len(CREDIT_TENORS)], "Sec" if sec[i] else ""
            scale = 100.0 if rt == "Risk_CreditVol" else 1.0
        elif rt in ("Risk_CreditNonQ", "Risk_CreditVolNonQ"):
            k = q_draw % N_CREDIT_NQ
            pc, qualifier = "Cr", f"NQ{k:03d}"
            bucket = CREDIT_NQ_BUCKETS[k % len(CREDIT_NQ_BUCKETS)]
            label1 = CREDIT_TENORS[l1_draw % len(CREDIT_TENORS)]
            label2 = NQ_UNDERLYINGS[k % len(NQ_UNDERLYINGS)]
            scale = 100.0 if rt == "Risk_CreditVolNonQ" else 1.0
        else:  # Risk_BaseCorr: one factor per index, no bucket
            pc, qualifier = "Cr", BASE_CORR_INDICES[q_draw % len(BASE_CORR_INDICES)]
        out.append(
            {
                "TradeID": f"T{i % 5000}",
                "PortfolioID": "BENCH",
                "ProductClass": PRODUCT_CLASS[pc],
                "RiskType": rt,
                "Qualifier": qualifier,
                "Bucket": bucket,
                "Label1": label1,
                "Label2": label2,
                "AmountCurrency": "USD",
                "Amount": float(amount[i] * scale),
                "collect_regulations": REGULATIONS[0],
                "post_regulations": REGULATIONS[1],
            }
        )
    return out


def _ratesfx_crif(n: int, seed: int) -> list[dict[str, Any]]:
    """The first benchmark's CRIF (``--mix ratesfx``): IR curve, IR vol and FX rows only."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    ccy = rng.integers(0, len(CCYS), n)
    tenor = rng.integers(0, len(IR_TENORS), n)
    sub = rng.integers(0, len(SUBCURVES), n)
    amount = rng.normal(0.0, 5_000.0, n)
    regs = REGULATIONS
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


#: Best and median wall seconds, best and median process CPU seconds (every thread's).
Timing = tuple[float, float, float, float]


def _summary(walls: list[float], cpus: list[float]) -> Timing:
    return min(walls), statistics.median(walls), min(cpus), statistics.median(cpus)


def timed(fn: Callable[[], object], repeat: int) -> Timing:
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return _summary(walls, cpus)


async def timed_async(fn: Callable[[], Awaitable[object]], repeat: int) -> Timing:
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        await fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return _summary(walls, cpus)


def _timing_json(t: Timing | tuple[float, ...]) -> dict[str, float]:
    return dict(zip(("best", "median", "cpu_best", "cpu_median"), t, strict=True))


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
) -> dict[int, dict[str, Timing]]:
    """``POST /collateral/simm`` per size, CSV and JSON bodies, through the engine's app."""
    clock = ManualClock(1_600_000_000_000_000_000)
    config = CollateralConfig(max_crif_rows=max(sizes))
    engine = CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    out: dict[int, dict[str, Timing]] = {}
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


def other_timings(repeat: int) -> tuple[dict[str, Timing], float]:
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
    ap.add_argument(
        "--mix",
        choices=("all", "ratesfx"),
        default="all",
        help="every priced risk type (default) or the first benchmark's IR/FX-only CRIF",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = ap.parse_args()
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    cal = bundled_calibration("2.6")
    simm: dict[int, dict[str, Any]] = {}
    bodies: dict[int, tuple[str, bytes, tuple[float, float]]] = {}
    for n in args.rows:
        records = synthetic_crif(n, mix=args.mix)
        text = as_csv(records)
        body = orjson.dumps({"crif": records})
        decoded = orjson.loads(body)["crif"]  # each cell its own string, as a JSON decoder gives
        gc.collect()
        gc.freeze()  # the synthetic inputs are not a server's heap: keep them out of GC passes
        crif = parse_crif_csv(text)
        report = compute_simm(crif, cal)
        again = compute_simm(crif_from_records(decoded), cal)
        totals = (report.total("Call"), report.total("Post"))
        assert totals == (again.total("Call"), again.total("Post")), "CSV and records differ"
        simm[n] = {
            "parse_csv": timed(functools.partial(parse_crif_csv, text), args.repeat),
            "from_records": timed(functools.partial(crif_from_records, decoded), args.repeat),
            "compute": timed(functools.partial(compute_simm, crif, cal), args.repeat),
        }
        simm[n]["parse_csv+compute"] = tuple(
            a + b for a, b in zip(simm[n]["parse_csv"], simm[n]["compute"], strict=True)
        )
        simm[n]["totals_usd"] = {"Call": totals[0], "Post": totals[1]}
        if n <= REST_MAX_ROWS:
            bodies[n] = (text, body, totals)
    if bodies:
        for n, timings in asyncio.run(rest_timings(bodies, args.repeat)).items():
            simm[n].update(timings)
    others, gap = other_timings(args.repeat)
    load_after = os.getloadavg()
    steps = ("parse_csv", "from_records", "compute", "parse_csv+compute", "rest_csv", "rest_json")
    rows = [
        [f"{n:,} {step}", *(f"{x:.4f}" for x in simm[n][step])]
        for n in args.rows
        for step in steps
        if step in simm[n]
    ]
    rows += [[name, *(f"{x:.4f}" for x in t)] for name, t in others.items()]
    head = ("step (rows)", "best s", "median s", "best CPU s", "median CPU s")
    print(aligned(head, rows))
    cpu = cpu_model()
    print(
        f"mix {args.mix}; CPU {cpu} × {os.cpu_count()}; "
        f"load average {load_before[0]:.2f} → {load_after[0]:.2f}; allocation duality gap {gap:.2e}"
    )
    document = {
        "benchmark": "collateral_bench",
        "started": started.isoformat(),
        "repeat": args.repeat,
        "mix": args.mix,
        "machine": {**machine(), "cpu": cpu, "loadavg_before": load_before},
        "loadavg_after": load_after,
        "simm": {
            str(n): {
                k: (_timing_json(v) if isinstance(v, tuple) else v) for k, v in timings.items()
            }
            for n, timings in simm.items()
        },
        "other_s": {k: _timing_json(t) for k, t in others.items()},
        "allocation_duality_gap": gap,
    }
    print(f"wrote {write_results('collateral_bench', document, started, args.out)}")


if __name__ == "__main__":
    main()

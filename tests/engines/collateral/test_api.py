"""Collateral REST end to end: a margin call's lifecycle with a dispute; SIMM equal to every row of
ORE's six expected reports (CSV and JSON bodies); schedule IM equal to ORE's expected files; the
allocation LP against its closed form and cheapest-first; every bad input a 400 naming the field
(CRIF row and column), nothing crashing."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from engines.collateral.api import routes
from engines.collateral.config import CollateralConfig
from engines.collateral.service import CollateralEngine
from engines.collateral.simm import read_bundled_data
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.engines.collateral.test_simm import ORE_RUNS

T0 = 1_381_152_600_000_000_000
S = 1_000_000_000
CSV = {"content-type": "text/csv"}
CRIF_TEXT = read_bundled_data("crif.csv").decode()
SCHEDULE_TEXT = read_bundled_data("crif_schedule.csv").decode()
AGREEMENTS = {
    "agreements": [
        {
            "name": "bank-a",
            "counterparty": "BANK_A",
            "currency": "USD",
            "threshold": 1000.0,
            "minimum_transfer_amount": 500.0,
            "rounding": 100.0,
            "call_frequency": "daily",
            "eligible": [
                {"asset_class": "govt", "haircut": 0.02},
                {"asset_class": "cash.USD", "haircut": 0.0},
            ],
        }
    ]
}


def records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("#"))))


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("#"))))[1:]


def csv_with(text: str, row: int, column: str, value: str) -> str:
    """``text`` with data row ``row`` (1-based) of ``column`` set to ``value``."""
    recs = records(text)
    header = list(recs[0])
    recs[row - 1][column] = value
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(recs)
    return out.getvalue()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[CollateralEngine, testing.ASGIConductor]]:
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(AGREEMENTS))
    clock = ManualClock(T0)
    config = CollateralConfig(agreements=str(path), max_crif_rows=30, max_inventory=3)
    engine = CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        yield engine, c
    await engine.stop()


async def expect_400(
    c: testing.ASGIConductor, path: str, parameter: str, **kwargs: Any
) -> dict[str, Any]:
    resp = await c.simulate_post(path, **kwargs)
    assert resp.status_code == 400, (parameter, resp.text)
    assert resp.json["error"]["parameter"] == parameter, (parameter, resp.json)
    assert resp.json["error"]["message"]
    error: dict[str, Any] = resp.json["error"]
    return error


# ── the call lifecycle ──────────────────────────────────────────────────────────────────────


async def test_a_margin_call_with_a_dispute_over_rest(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    engine, c = client
    transitions = engine.bus.subscribe("collateral.calls.bank-a")
    listed = (await c.simulate_get("/collateral/agreements")).json["agreements"]
    assert [(a["name"], a["threshold"], a["call_interval_ns"]) for a in listed] == [
        ("bank-a", 1000.0, 86_400 * S)
    ]
    # exposure 2,340: CSA 1,340 over MTA 500 → 1,400 called (rounded up to 100)
    resp = await c.simulate_post(
        "/collateral/bank-a/exposure", json={"exposure": 2340.0, "event_ns": T0}
    )
    assert resp.status_code == 200, resp.text
    call = resp.json["open_call"]
    assert (call["amount"], call["state"], resp.json["due"]) == (1400.0, "issued", 1400.0)
    call_path = f"/collateral/calls/{call['call_id']}"
    issued = (await c.simulate_get("/collateral/calls", params={"state": "issued"})).json
    assert [x["call_id"] for x in issued["calls"]] == [call["call_id"]]

    engine.clock.set(T0 + 60 * S)  # type: ignore[attr-defined]
    disputed = await c.simulate_post(
        call_path, json={"event": "dispute", "amount": 1000.0, "reason": "our MTM is 2,000"}
    )
    assert disputed.status_code == 200
    assert (disputed.json["from_state"], disputed.json["to_state"]) == ("issued", "disputed")
    assert disputed.json["call"]["amount"] == 1400.0  # the claim stands while disputed
    refused = await c.simulate_post(call_path, json={"event": "settle"})
    assert refused.status_code == 409
    assert refused.json["error"]["parameter"] == "event"
    assert refused.json["error"]["code"] == "bad_transition"
    for body, parameter in (
        ({"event": "pay"}, "event"),
        ({"event": "agree", "amount": "lots"}, "amount"),
        ({"event": "agree", "when": 1}, "body"),
        ({"event": "agree", "event_ns": -1}, "event_ns"),
    ):
        await expect_400(c, call_path, parameter, json=body)
    late = await c.simulate_post(call_path, json={"event": "agree", "event_ns": T0})
    assert late.status_code == 409 and late.json["error"]["parameter"] == "event_ns"
    missing = await c.simulate_post("/collateral/calls/bank-a-1", json={"event": "agree"})
    assert missing.status_code == 404 and missing.json["error"]["parameter"] == "call_id"

    reissued = await c.simulate_post(call_path, json={"event": "reissue", "amount": 1200.0})
    assert reissued.json["to_state"] == "issued" and reissued.json["call"]["amount"] == 1200.0
    assert (await c.simulate_post(call_path, json={"event": "agree"})).json["to_state"] == "agreed"
    settled = await c.simulate_post(call_path, json={"event": "settle"})
    assert settled.json["call"]["settled_amount"] == 1200.0

    state = (await c.simulate_get("/collateral/bank-a")).json
    # held 1,200: 1,340 − 1,200 = 140 left, under the MTA: nothing due
    assert (state["held"], state["required"], state["due"], state["open_call"]) == (
        1200.0, 140.0, 0.0, None,
    )  # fmt: skip
    done = (await c.simulate_get("/collateral/calls", params={"state": "settled"})).json
    assert [x["state"] for x in done["calls"]] == ["settled"]
    assert (await c.simulate_get(call_path)).json["version"] == 5
    published = [e.payload for e in await transitions.next_batch(100)]
    assert [(p["seq"], p["event"], p["to_state"]) for p in published] == [
        (1, "issue", "issued"), (2, "dispute", "disputed"), (3, "reissue", "issued"),
        (4, "agree", "agreed"), (5, "settle", "settled"),
    ]  # fmt: skip
    history = (await c.simulate_get("/collateral/bank-a/calls")).json["items"]
    assert [h["event"] for h in history] == ["issue", "dispute", "reissue", "agree", "settle"]
    states = (await c.simulate_get("/collateral/bank-a/history")).json["items"]
    assert [s["held"] for s in states] == [0.0, 0.0, 0.0, 0.0, 1200.0]


async def test_agreement_and_exposure_errors(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    engine, c = client
    unknown = await c.simulate_get("/collateral/nope")
    assert unknown.status_code == 404 and unknown.json["error"]["parameter"] == "agreement"
    posted = await c.simulate_post("/collateral/nope/exposure", json={"exposure": 1.0})
    assert posted.status_code == 404
    for body, parameter in (
        ({"exposure": "big"}, "exposure"),
        ({"exposure": 1.0, "event_ns": -5}, "event_ns"),
        ({"exposure": 1.0, "extra": 1}, "body"),
        ([], "body"),
    ):
        await expect_400(c, "/collateral/bank-a/exposure", parameter, json=body)
    await expect_400(c, "/collateral/bank-a/exposure", "body", body=b"{nope")
    ok = await c.simulate_post("/collateral/bank-a/exposure", json={"exposure": 10.0})
    assert ok.json["exposure_ns"] == T0  # the clock, by default
    late = await c.simulate_post(
        "/collateral/bank-a/exposure", json={"exposure": 10.0, "event_ns": T0 - 1}
    )
    assert late.status_code == 409 and late.json["error"]["parameter"] == "event_ns"
    bad_state = await c.simulate_get("/collateral/calls", params={"state": "open"})
    assert bad_state.status_code == 400 and bad_state.json["error"]["parameter"] == "state"
    bad_agreement = await c.simulate_get("/collateral/calls", params={"agreement": "x"})
    assert bad_agreement.status_code == 404
    assert engine.health()["errors"] == 0


# ── SIMM ────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("folder", "version", "mpor", "calfile"), ORE_RUNS)
async def test_simm_over_rest_reproduces_ore_reports(
    client: tuple[CollateralEngine, testing.ASGIConductor],
    folder: str,
    version: str,
    mpor: int,
    calfile: str | None,
) -> None:
    _, c = client
    expected = rows_of(read_bundled_data(f"expected/{folder}/simm.csv").decode())
    assert len(expected) == 36
    if calfile is None:  # ORE's CRIF as CSV, the bundled calibration by version
        resp = await c.simulate_post(
            "/collateral/simm", body=CRIF_TEXT, headers=CSV,
            params={"version": version, "mpor": str(mpor)},
        )  # fmt: skip
    else:  # JSON rows with the user's calibration file, as ORE's *_calibration runs do
        body = {
            "crif": records(CRIF_TEXT),
            "version": version,
            "mpor": mpor,
            "calibration": read_bundled_data(calfile).decode(),
        }
        resp = await c.simulate_post("/collateral/simm", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json["rows"]
    assert len(got) == len(expected)
    header = list(got[0])
    for e, g in zip(expected, got, strict=True):
        values = [g[h] for h in header]
        assert [str(v) for v in values[:7]] == e[:7]
        assert [str(v) for v in values[8:]] == e[8:]
        assert abs(values[7] - float(e[7])) < 0.01, (e, g)
        assert abs(values[7] - float(e[7])) < 1e-6
    totals = resp.json["totals"]
    last = {row[5]: float(row[7]) for row in expected if row[0] == "All" and row[2] == "All"}
    assert totals["Call"] == pytest.approx(last["Call"], abs=1e-6)
    assert totals["Post"] == pytest.approx(last["Post"], abs=1e-6)


async def test_simm_csv_answer_diffs_against_ore_line_by_line(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    _, c = client
    resp = await c.simulate_post(
        "/collateral/simm", body=CRIF_TEXT, headers=CSV, params={"format": "csv", "mpor": "1"}
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    expected = read_bundled_data("expected/SIMM2.6_1D/simm.csv").decode().splitlines()
    got = resp.text.splitlines()
    assert got[0] == expected[0].lstrip("#") and len(got) == len(expected)  # ORE: "#" or not
    for e, g in zip(expected[1:], got[1:], strict=True):
        ef, gf = e.split(","), g.split(",")
        assert gf[:7] == ef[:7] and gf[8:] == ef[8:]
        assert abs(float(gf[7]) - float(ef[7])) < 1e-6
    # JSON rows and CSV text of the same CRIF give the same report
    as_json = await c.simulate_post(
        "/collateral/simm", json={"crif": records(CRIF_TEXT), "mpor": 1}
    )
    as_csv = await c.simulate_post(
        "/collateral/simm", body=CRIF_TEXT, headers=CSV, params={"mpor": "1"}
    )
    assert as_json.json == as_csv.json
    assert as_json.json["results"][0]["regulation"] == "ESA"


async def test_bad_crif_answers_400_naming_row_and_column(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    engine, c = client
    post = "/collateral/simm"
    no_amount = "\n".join(
        ",".join(r[:9] + r[10:]) for r in csv.reader(io.StringIO(CRIF_TEXT))
    )  # the Amount column dropped
    csv_cases: list[tuple[str, dict[str, str], str]] = [
        (csv_with(CRIF_TEXT, 3, "RiskType", "Risk_Weather"), {}, "crif[2].RiskType"),
        (csv_with(CRIF_TEXT, 4, "RiskType", "Param_AddOnFixedAmount"), {}, "crif[3].RiskType"),
        (csv_with(CRIF_TEXT, 5, "Amount", "12,5k"), {}, "crif[4].Amount"),
        (csv_with(CRIF_TEXT, 2, "Label1", "7y"), {}, "crif[1].Label1"),
        (no_amount, {}, "crif.Amount"),
        (CRIF_TEXT, {"version": "9.9"}, "version"),
        (CRIF_TEXT, {"mpor": "5"}, "mpor"),
        (CRIF_TEXT, {"mpor": "ten"}, "mpor"),
        (CRIF_TEXT, {"format": "xml"}, "format"),
        ("", {}, "body"),
        (CRIF_TEXT + CRIF_TEXT.split("\n", 1)[1][:2000], {}, "crif"),  # > max_crif_rows (30)
    ]
    for text, params, parameter in csv_cases:
        error = await expect_400(c, post, parameter, body=text, headers=CSV, params=params)
        if parameter.startswith("crif["):
            row = int(parameter[5:].split("]")[0]) + 1
            assert f"row {row}" in error["message"]
    rows = records(CRIF_TEXT)
    json_cases: list[tuple[Any, str]] = [
        ({"crif": [*rows[:1], {**rows[1], "RiskType": "Risk_Nope"}]}, "crif[1].RiskType"),
        ({"crif": [*rows[:3], {**rows[3], "Amount": "abc"}]}, "crif[3].Amount"),
        ({"crif": [*rows[:2], {**rows[2], "Amount": None}]}, "crif[2].Amount"),
        ({"crif": [{k: v for k, v in r.items() if k != "Amount"} for r in rows]}, "crif.Amount"),
        ({"crif": rows, "version": "9.9"}, "version"),
        ({"crif": rows, "mpor": 3}, "mpor"),
        ({"crif": rows, "calibration": "<SIMMCalibrations"}, "calibration"),
        (
            {
                "crif": rows,
                "version": "2.6",
                "calibration": read_bundled_data("simm_calibration_example.xml").decode(),
            },
            "version",
        ),
        ({"crif": rows, "calculation_currency": "usd"}, "calculation_currency"),
        ({"crif": rows, "fx_rates": {"EUR": -1.0}}, "fx_rates[...]"),
        ({"crif": "IR_Bermudan,..."}, "crif"),
        ({"crif": []}, "crif"),
        ({"crif": [1, 2]}, "crif[0]"),
        ({"crif": rows * 2}, "crif"),  # 54 rows > max_crif_rows (30)
        ({"crif": rows, "mystery": 1}, "body"),
    ]
    for body, parameter in json_cases:
        await expect_400(c, post, parameter, json=body)
    await expect_400(c, post, "body", body=b"{", headers={"content-type": "application/json"})
    assert engine.health()["errors"] == 0  # nothing crashed


# ── schedule IM ─────────────────────────────────────────────────────────────────────────────


async def test_schedule_im_over_rest_reproduces_ore(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    _, c = client
    resp = await c.simulate_post(
        "/collateral/schedule-im", body=SCHEDULE_TEXT, headers=CSV, params={"asof": "2020-12-28"}
    )
    assert resp.status_code == 200, resp.text
    trades = {t["TradeId"]: t for t in resp.json["trades"]}
    expected_trades = records(
        read_bundled_data("expected/IM_SCHEDULE/im_schedule_trade.csv").decode()
    )
    assert len(trades) == len(expected_trades) == 9
    for e in expected_trades:
        t = trades[e["TradeId"]]
        assert (t["Portfolio"], t["ProductClass"], t["EndDate"], t["Label"]) == (
            e["Portfolio"], e["ProductClass"], e["EndDate"], e["Label"],
        )  # fmt: skip
        assert t["Multiplier"] == float(e["Multiplier"])
        assert abs(t["Maturity"] - float(e["Maturity"])) < 5e-6
        for column in ("Notional(Base)", "PV(Base)", "GrossIM(Base)"):
            assert abs(t[column] - float(e[column])) < 0.005, column
    expected_sets = records(read_bundled_data("expected/IM_SCHEDULE/im_schedule.csv").decode())
    got_sets = resp.json["netting_sets"]
    assert len(got_sets) == len(expected_sets) == 6
    for e, g in zip(expected_sets, got_sets, strict=True):
        assert (g["Portfolio"], g["ProductClass"], g["Side"]) == (
            e["Portfolio"], e["ProductClass"], e["Side"],
        )  # fmt: skip
        for column, tol in (
            ("GrossIM", 0.005), ("GrossCurrentRC", 0.005), ("NetCurrentRC", 0.005),
            ("NetToGrossRatio", 5e-7), ("ScheduleIM", 0.005),
        ):  # fmt: skip
            if e[column] == "#N/A":
                assert g[column] is None, column
            else:
                assert abs(g[column] - float(e[column])) < tol, (column, e, g)
    as_json = await c.simulate_post(
        "/collateral/schedule-im", json={"crif": records(SCHEDULE_TEXT), "asof": "2020-12-28"}
    )
    assert as_json.json == resp.json


async def test_bad_schedule_crif_answers_400(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    _, c = client
    post = "/collateral/schedule-im"
    asof = {"asof": "2020-12-28"}
    for text, params, parameter in (
        (SCHEDULE_TEXT, {}, "asof"),
        (SCHEDULE_TEXT, {"asof": "28/12/2020"}, "asof"),
        (csv_with(SCHEDULE_TEXT, 2, "RiskType", "Delta"), asof, "crif[1].RiskType"),
        (csv_with(SCHEDULE_TEXT, 6, "AmountUSD", "n/a"), asof, "crif[5].AmountUSD"),
        (csv_with(SCHEDULE_TEXT, 1, "end_date", "someday"), asof, "crif[0].end_date"),
        (csv_with(SCHEDULE_TEXT, 1, "ProductClass", "Weather"), asof, "crif[0].ProductClass"),
    ):
        await expect_400(c, post, parameter, body=text, headers=CSV, params=params)
    rows = records(SCHEDULE_TEXT)
    for body, parameter in (
        ({"crif": rows}, "body"),  # asof missing
        ({"crif": rows, "asof": "someday"}, "asof"),
        ({"crif": rows[:1], "asof": "2020-12-28"}, "crif.RiskType"),  # a PV without Notional
        ({"crif": [{**rows[0], "AmountUSD": []}], "asof": "2020-12-28"}, "crif[0].AmountUSD"),
    ):
        await expect_400(c, post, parameter, json=body)


# ── allocation ──────────────────────────────────────────────────────────────────────────────

ALLOCATION: dict[str, Any] = {
    "agreements": [
        {
            "name": "A", "counterparty": "BANK_A", "currency": "USD",
            "eligible": [
                {"asset_class": "govt", "haircut": 0.02},
                {"asset_class": "equity", "haircut": 0.20, "concentration_limit": 0.5},
                {"asset_class": "cash.USD", "haircut": 0.0},
            ],
        },
        {
            "name": "B", "counterparty": "BANK_B", "currency": "USD",
            "eligible": [
                {"asset_class": "govt", "haircut": 0.02}, {"asset_class": "cash.USD", "haircut": 0.0}
            ],
        },
    ],
    "inventory": [
        {"asset_id": "UST-5y", "asset_class": "govt", "available": 10_000_000.0, "cost": 0.0010},
        {"asset_id": "SPY", "asset_class": "equity", "available": 20_000_000.0, "cost": 0.0009},
        {"asset_id": "USD", "asset_class": "cash.USD", "available": 50_000_000.0, "cost": 0.0030},
    ],
    "calls": {"A": 8_000_000.0, "B": 9_800_000.0},
}  # fmt: skip


async def test_allocation_is_optimal_and_beats_cheapest_first(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    engine, c = client
    resp = await c.simulate_post("/collateral/allocate", json=ALLOCATION)
    assert resp.status_code == 200, resp.text
    out = resp.json
    assert out["status"] == "optimal" and out["duality_gap"] < 1e-9
    assert out["primal_residual"] < 1e-9 and out["dual_residual"] < 1e-9
    # closed form: all 10m of bonds (9.8m after haircut), half of A's 8m in equity (5m market
    # value), the remaining 4m in cash: 10,000 + 4,500 + 12,000 = 26,500
    assert out["cost"] == pytest.approx(26_500.0, rel=1e-9)
    assert out["dual_objective"] == pytest.approx(26_500.0, rel=1e-9)
    # cheapest-first gives A the bonds and B 1.8m of bonds and 8m of cash: 10,000 + 24,000
    assert out["naive"]["cost"] == pytest.approx(34_000.0, rel=1e-9)
    assert out["saving"] == pytest.approx(7_500.0, rel=1e-9)
    for name, amount in ALLOCATION["calls"].items():
        assert out["coverage"][name] >= amount * (1 - 1e-9)
        value = sum(p["value"] for p in out["posted"] if p["agreement"] == name)
        assert value == pytest.approx(out["coverage"][name], rel=1e-9)
    equity = sum(p["value"] for p in out["posted"] if p["asset_class"] == "equity")
    assert equity <= 0.5 * out["coverage"]["A"] * (1 + 1e-9)

    short = await c.simulate_post("/collateral/allocate", json={**ALLOCATION, "calls": {"B": 1e9}})
    assert short.json["status"] == "infeasible" and short.json["cost"] is None

    # without calls: the engine's open calls on us (exposure −3,000 → we deliver 2,000)
    await c.simulate_post("/collateral/bank-a/exposure", json={"exposure": -3000.0})
    mine = await c.simulate_post(
        "/collateral/allocate", json={"inventory": ALLOCATION["inventory"]}
    )
    assert mine.json["calls"] == {"bank-a": 2000.0}
    assert mine.json["cost"] == pytest.approx(2000.0 / 0.98 * 0.0010, rel=1e-9)  # bonds
    assert engine.health()["errors"] == 0


async def test_bad_allocation_bodies_name_the_field(
    client: tuple[CollateralEngine, testing.ASGIConductor],
) -> None:
    _, c = client
    inventory: list[dict[str, Any]] = ALLOCATION["inventory"]
    agreements: list[dict[str, Any]] = ALLOCATION["agreements"]
    bad_haircut = {**agreements[0], "eligible": [{"asset_class": "govt", "haircut": 1.5}]}
    for body, parameter in (
        ({**ALLOCATION, "calls": {"Z": 1.0}}, "calls.Z"),
        ({**ALLOCATION, "calls": {"A": -1.0}}, "calls.A"),
        ({**ALLOCATION, "inventory": []}, "inventory"),
        ({**ALLOCATION, "inventory": inventory * 2}, "inventory"),  # > max_inventory (3)
        ({**ALLOCATION, "inventory": [inventory[0], inventory[0]]}, "inventory[1].asset_id"),
        (
            {**ALLOCATION, "inventory": [{**inventory[0], "available": -1}]},
            "inventory[0].available",
        ),
        ({**ALLOCATION, "agreements": [bad_haircut]}, "agreements[0].eligible[0].haircut"),
        ({**ALLOCATION, "agreements": [{**agreements[0], "name": "simm"}]}, "agreements[0].name"),
        ({**ALLOCATION, "agreements": [agreements[0], agreements[0]]}, "agreements[1].name"),
        ({"calls": {"A": 1.0}}, "body"),  # no inventory
    ):
        await expect_400(c, "/collateral/allocate", parameter, json=body)

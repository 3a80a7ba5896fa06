"""Schedule IM against ORE's expected files; VM tables by hand; call lifecycle; allocation LP."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from engines.collateral.core import (
    Agreement,
    Asset,
    CallEvent,
    CallState,
    CallStateError,
    CrifError,
    EligibleCollateral,
    allocate_collateral,
    apply_call_event,
    calls_channel,
    compute_schedule_im,
    issue_call,
    naive_allocation,
    parse_schedule_crif_csv,
    read_bundled_data,
    state_channel,
    variation_margin,
    year_fraction_act_act_isda,
)

ASOF = dt.date(2020, 12, 28)  # ore_schedule.xml asofDate


def _expected(name: str) -> list[dict[str, str]]:
    text = read_bundled_data(f"expected/IM_SCHEDULE/{name}").decode().lstrip("#")
    return list(csv.DictReader(io.StringIO(text)))


def test_schedule_im_per_trade_matches_ore() -> None:
    report = compute_schedule_im(
        parse_schedule_crif_csv(read_bundled_data("crif_schedule.csv").decode()), ASOF
    )
    got = {t.trade_id: t for t in report.trades}
    rows = _expected("im_schedule_trade.csv")
    assert len(rows) == len(got) == 9
    for e in rows:
        t = got[e["TradeId"]]
        assert t.portfolio == e["Portfolio"] and t.product_class == e["ProductClass"]
        assert t.label == e["Label"]
        assert t.multiplier == float(e["Multiplier"])
        assert abs(t.maturity - float(e["Maturity"])) < 5e-6
        assert abs(t.notional - float(e["Notional(Base)"])) < 0.005
        assert abs(t.pv - float(e["PV(Base)"])) < 0.005
        assert abs(t.gross_im - float(e["GrossIM(Base)"])) < 0.005


def test_schedule_im_per_netting_set_matches_ore() -> None:
    report = compute_schedule_im(
        parse_schedule_crif_csv(read_bundled_data("crif_schedule.csv").decode()), ASOF
    )
    for e in _expected("im_schedule.csv"):
        side = e["Side"]
        if e["Portfolio"] == "All":
            assert abs(report.total(side) - float(e["ScheduleIM"])) < 0.005
            continue
        ns = next(
            n for n in report.netting_sets if n.portfolio == e["Portfolio"] and n.side == side
        )
        if e["ProductClass"] != "All":
            assert abs(ns.gross_by_product[e["ProductClass"]] - float(e["GrossIM"])) < 0.005
            continue
        assert abs(ns.gross_im - float(e["GrossIM"])) < 0.005
        assert abs(ns.gross_rc - float(e["GrossCurrentRC"])) < 0.005
        assert abs(ns.net_rc - float(e["NetCurrentRC"])) < 0.005
        assert abs(ns.ngr - float(e["NetToGrossRatio"])) < 5e-7
        assert abs(ns.schedule_im - float(e["ScheduleIM"])) < 0.005


def test_act_act_isda() -> None:
    # 4 days of leap 2020, 1 year, 234 days of 2022 (ORE's 1.65202)
    assert year_fraction_act_act_isda(ASOF, dt.date(2022, 8, 23)) == pytest.approx(
        4 / 366 + 1 + 234 / 365, rel=1e-15
    )


def test_schedule_bad_input() -> None:
    text = read_bundled_data("crif_schedule.csv").decode().replace(",PV,", ",Delta,", 1)
    with pytest.raises(CrifError) as info:
        parse_schedule_crif_csv(text)
    assert (info.value.row, info.value.column) == (1, "RiskType")
    text = read_bundled_data("crif_schedule.csv").decode().replace("1190.193238", "x", 1)
    with pytest.raises(CrifError) as info:
        parse_schedule_crif_csv(text)
    assert (info.value.row, info.value.column) == (1, "AmountUSD")


# ------------------------------------------------------------------ variation margin

CSA = Agreement(
    name="paper",
    counterparty="BANK",
    currency="USD",
    threshold=1_000_000.0,
    minimum_transfer_amount=250_000.0,
    independent_amount=0.0,
    rounding=10_000.0,
)


@pytest.mark.parametrize(
    ("exposure", "held", "csa_amount", "ret", "deliver"),
    [
        # exposure above threshold, partly collateralised: deliver 1,412,345 → up 1,420,000
        (3_412_345.0, 1_000_000.0, 2_412_345.0, 0.0, 1_420_000.0),
        # under the MTA: no call
        (1_200_000.0, 0.0, 200_000.0, 0.0, 0.0),
        # exactly the MTA: a call
        (1_250_000.0, 0.0, 250_000.0, 0.0, 250_000.0),
        # exposure under threshold, collateral held: return 803,456 → down 800,000
        (500_000.0, 803_456.0, 0.0, -800_000.0, 0.0),
        # sign flip: return what we hold (down), then deliver ours (up)
        (-2_504_999.0, 304_999.0, -1_504_999.0, -300_000.0, -1_510_000.0),
        # we have posted, exposure moves our way: they return ours (down)
        (-1_000_000.0, -600_000.0, 0.0, 600_000.0, 0.0),
    ],
)
def test_vm_table(
    exposure: float, held: float, csa_amount: float, ret: float, deliver: float
) -> None:
    vm = variation_margin(CSA, exposure, held)
    assert vm.credit_support_amount == pytest.approx(csa_amount)
    assert vm.return_amount == pytest.approx(ret)
    assert vm.delivery_amount == pytest.approx(deliver)
    assert vm.call_amount == pytest.approx(ret + deliver)


def test_independent_amount_is_added_after_threshold() -> None:
    ag = Agreement("ia", "BANK", "USD", threshold=1e6, independent_amount=500_000.0)
    assert variation_margin(ag, 0.0, 0.0).call_amount == 500_000.0
    assert variation_margin(ag, 3e6, 0.0).call_amount == 2_500_000.0


def test_bad_agreement_and_vm_input() -> None:
    with pytest.raises(ValueError):
        Agreement("x", "c", "USD", threshold=-1.0)
    with pytest.raises(ValueError):
        EligibleCollateral("equity", haircut=1.0)
    with pytest.raises(ValueError):
        variation_margin(CSA, float("nan"), 0.0)


def test_call_lifecycle_with_a_dispute() -> None:
    vm = variation_margin(CSA, 3_412_345.0, 1_000_000.0)
    call, t1 = issue_call(vm, call_id="paper-1", ts_ns=10)
    call, t2 = apply_call_event(
        call, CallEvent.DISPUTE, ts_ns=20, amount=900_000.0, reason="MTM differs"
    )
    assert call.state is CallState.DISPUTED and call.amount == 1_420_000.0
    with pytest.raises(CallStateError):
        apply_call_event(call, CallEvent.SETTLE, ts_ns=30)
    call, t3 = apply_call_event(call, CallEvent.REISSUE, ts_ns=30, amount=1_100_000.0)
    call, t4 = apply_call_event(call, CallEvent.AGREE, ts_ns=40)
    call, t5 = apply_call_event(call, CallEvent.SETTLE, ts_ns=50)
    assert call.state is CallState.SETTLED and call.settled_amount == 1_100_000.0
    transitions = [t1, t2, t3, t4, t5]
    assert [t.seq for t in transitions] == [1, 2, 3, 4, 5]
    assert [t.to_state for t in transitions] == [
        CallState.ISSUED,
        CallState.DISPUTED,
        CallState.ISSUED,
        CallState.AGREED,
        CallState.SETTLED,
    ]
    assert t2.amount == 900_000.0 and t2.reason == "MTM differs"
    with pytest.raises(CallStateError):
        apply_call_event(call, CallEvent.AGREE, ts_ns=60)
    with pytest.raises(CallStateError):
        issue_call(variation_margin(CSA, 0.0, 0.0), call_id="x", ts_ns=1)
    assert calls_channel("paper") == "collateral.calls.paper"
    assert state_channel("paper") == "collateral.paper"


def test_events_cannot_go_back_in_time() -> None:
    call, _ = issue_call(variation_margin(CSA, 3e6, 0.0), call_id="c", ts_ns=100)
    with pytest.raises(CallStateError):
        apply_call_event(call, CallEvent.AGREE, ts_ns=99)


# ------------------------------------------------------------------ allocation

AGREEMENTS = {
    "A": Agreement(
        "A",
        "BANK_A",
        "USD",
        eligible=(
            EligibleCollateral("govt", 0.02),
            EligibleCollateral("equity", 0.20, 0.5),
            EligibleCollateral("cash.USD", 0.0),
        ),
    ),
    "B": Agreement(
        "B",
        "BANK_B",
        "USD",
        eligible=(EligibleCollateral("govt", 0.02), EligibleCollateral("cash.USD", 0.0)),
    ),
}
ASSETS = [
    Asset("UST-5y", "govt", 10_000_000.0, 0.0010),
    Asset("SPY", "equity", 20_000_000.0, 0.0009),
    Asset("USD", "cash.USD", 50_000_000.0, 0.0030),
]
CALLS = {"A": 8_000_000.0, "B": 9_800_000.0}


def test_allocation_is_feasible_optimal_and_beats_cheapest_first() -> None:
    res = allocate_collateral(CALLS, AGREEMENTS, ASSETS)
    assert res.status == "optimal"
    assert res.duality_gap < 1e-9
    assert res.primal_residual < 1e-9 and res.dual_residual < 1e-9  # the gap is a proof
    # feasibility
    for name, amount in CALLS.items():
        assert res.coverage[name] >= amount * (1 - 1e-9)
    for a in ASSETS:
        assert sum(v for (g, i), v in res.posted.items() if i == a.asset_id) <= a.available * (
            1 + 1e-9
        )
    eq_value = 0.8 * res.posted.get(("A", "SPY"), 0.0)
    assert eq_value <= 0.5 * res.coverage["A"] * (1 + 1e-9)
    # closed form: all govt (9.8m after haircut) is used; A can take at most half of its 8m in
    # equity (4m value = 5m MV); the remaining 17.8m − 9.8m − 4m = 4m of value is cash.
    optimum = 10_000_000 * 0.0010 + 5_000_000 * 0.0009 + 4_000_000 * 0.0030  # 26,500
    assert res.cost == pytest.approx(optimum, rel=1e-9)
    naive = naive_allocation(CALLS, AGREEMENTS, ASSETS)
    # cheapest-first gives A the govt bonds; B is left with 1.8m of bonds and 8m of cash
    assert naive.cost == pytest.approx(10_000_000 * 0.0010 + 8_000_000 * 0.0030, rel=1e-9)
    assert res.cost < naive.cost


def test_allocation_infeasible_and_bad_input() -> None:
    res = allocate_collateral({"B": 1e9}, AGREEMENTS, ASSETS)
    assert res.status == "infeasible"
    with pytest.raises(ValueError):
        allocate_collateral({"Z": 1.0}, AGREEMENTS, ASSETS)
    with pytest.raises(ValueError):
        allocate_collateral({"A": -1.0}, AGREEMENTS, ASSETS)

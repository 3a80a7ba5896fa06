"""ISDA SIMM against ORE's six expected reports, hand-computed cases, invariants, bad input."""

from __future__ import annotations

import csv
import io
import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.collateral.simm import (
    CrifError,
    SimmCalibration,
    bundled_calibration,
    compute_simm,
    crif_from_records,
    curvature_scaling,
    lambda_curvature,
    parse_crif_csv,
    parse_simm_calibration,
    read_bundled_data,
    select_calibration,
)

ORE_RUNS = [
    ("SIMM2.4_10D", "2.4", 10, None),
    ("SIMM2.4_1D", "2.4", 1, None),
    ("SIMM2.6_10D", "2.6", 10, None),
    ("SIMM2.6_1D", "2.6", 1, None),
    # the *_calibration runs pass ORE's calibration file explicitly, as a user would
    (
        "SIMM2.5A_10D_calibration",
        "2.5A",
        10,
        "expected/SIMM2.5A_10D_calibration/simmcalibration.xml",
    ),
    ("SIMM2.5A_1D_calibration", "2.5A", 1, "expected/SIMM2.5A_10D_calibration/simmcalibration.xml"),
]

CAL26 = bundled_calibration("2.6")
CRIF_TEXT = read_bundled_data("crif.csv").decode()
COLUMNS = list(csv.DictReader(io.StringIO(CRIF_TEXT)).fieldnames or [])


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("#"))))[1:]


def ore_calibration(version: str, calfile: str | None) -> SimmCalibration:
    """The calibration an ORE run used: the bundled one of ``version``, or its own file."""
    if calfile is None:
        return bundled_calibration(version)
    return select_calibration(parse_simm_calibration(read_bundled_data(calfile)), version)


@pytest.mark.parametrize(("folder", "version", "mpor", "calfile"), ORE_RUNS)
def test_reproduces_every_row_of_ore_report(
    folder: str, version: str, mpor: int, calfile: str | None
) -> None:
    cal = ore_calibration(version, calfile)
    report = compute_simm(parse_crif_csv(CRIF_TEXT), cal, mpor_days=mpor)
    expected = _csv_rows(read_bundled_data(f"expected/{folder}/simm.csv").decode())
    got = _csv_rows(report.to_csv())
    assert len(got) == len(expected) == 36
    for e, g in zip(expected, got, strict=True):
        assert g[:7] == e[:7]
        assert g[8:] == e[8:]
        assert abs(float(g[7]) - float(e[7])) < 0.01, (e, g)
        assert abs(float(g[7]) - float(e[7])) < 1e-6  # in fact to ORE's printed digits


def test_headline_figures_of_the_readme() -> None:
    report = compute_simm(parse_crif_csv(CRIF_TEXT), CAL26)
    call = next(r for r in report.results if r.side == "Call")
    post = next(r for r in report.results if r.side == "Post")
    assert call.regulation == "ESA" and post.regulation == "CFTC"
    assert call.total == pytest.approx(1_086_219.458910127, abs=0.005)
    assert post.total == pytest.approx(1_022_075.910765837, abs=0.005)


def _record(
    rt: str,
    amount: float,
    *,
    q: str = "USD",
    l1: str = "",
    l2: str = "",
    pc: str = "RatesFX",
    pf: str = "P",
) -> dict[str, Any]:
    return {
        "PortfolioID": pf,
        "ProductClass": pc,
        "RiskType": rt,
        "Qualifier": q,
        "Bucket": "",
        "Label1": l1,
        "Label2": l2,
        "AmountCurrency": "USD",
        "Amount": amount,
    }


def _call_total(records: list[dict[str, Any]], cal: SimmCalibration = CAL26) -> float:
    report = compute_simm(crif_from_records(records), cal)
    return report.total("Call")


def _ir(cal: SimmCalibration = CAL26) -> tuple[float, float, float]:
    p = cal.ir[10]
    return p.delta[("1", "10y")], p.delta[("1", "5y")], cal.ir_tenor_correlation[("10y", "5y")]


def test_one_delta_is_risk_weight_times_sensitivity() -> None:
    rw10, _, _ = _ir()
    assert rw10 == 60.0  # SIMM 2.6, regular-volatility currency, 10y
    assert _call_total([_record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS")]) == pytest.approx(
        60_000.0, rel=1e-12
    )


def test_two_correlated_deltas() -> None:
    rw10, rw5, rho = _ir()
    a, b = 1000.0, -400.0
    same = _call_total(
        [
            _record("Risk_IRCurve", a, l1="10y", l2="OIS"),
            _record("Risk_IRCurve", b, l1="5y", l2="OIS"),
        ]
    )
    wa, wb = rw10 * a, rw5 * b
    assert same == pytest.approx(math.sqrt(wa * wa + wb * wb + 2 * rho * wa * wb), rel=1e-12)
    phi = CAL26.ir_sub_curves
    cross = _call_total(
        [
            _record("Risk_IRCurve", a, l1="10y", l2="OIS"),
            _record("Risk_IRCurve", b, l1="5y", l2="Libor3m"),
        ]
    )
    assert cross == pytest.approx(math.sqrt(wa * wa + wb * wb + 2 * rho * phi * wa * wb), rel=1e-12)


def test_concentration_above_threshold() -> None:
    thr = CAL26.ir_delta_thresholds[CAL26.ir_threshold_groups["USD"]] * 1e6  # 330 USD mm/bp
    s = 4.0 * thr
    got = _call_total([_record("Risk_IRCurve", s, l1="10y", l2="OIS")])
    assert got == pytest.approx(60.0 * s * 2.0, rel=1e-12)  # CR = sqrt(4) = 2
    below = _call_total([_record("Risk_IRCurve", 0.5 * thr, l1="10y", l2="OIS")])
    assert below == pytest.approx(60.0 * 0.5 * thr, rel=1e-12)  # CR floored at 1


def test_curvature_with_negative_sum() -> None:
    v10, v5 = -2.0e6, 0.6e6
    records = [_record("Risk_IRVol", v10, l1="10y"), _record("Risk_IRVol", v5, l1="5y")]
    report = compute_simm(crif_from_records(records), CAL26)
    call = next(r for r in report.results if r.side == "Call")
    m = call.margins["RatesFX"]["InterestRate"]
    c = np.array([curvature_scaling("10y", 10) * v10, curvature_scaling("5y", 10) * v5])
    assert curvature_scaling("10y", 10) == pytest.approx(0.5 * 14 / 3650)
    rho = CAL26.ir_tenor_correlation[("10y", "5y")]
    k = math.sqrt(c[0] ** 2 + c[1] ** 2 + 2 * rho * rho * c[0] * c[1])
    theta = c.sum() / np.abs(c).sum()
    assert theta < 0
    lam = (2.5758293035489004**2 - 1) * (1 + theta) - theta
    assert lambda_curvature(theta) == pytest.approx(lam, rel=1e-12)
    hvr = CAL26.ir[10].hvr
    assert m.curvature == pytest.approx(max(c.sum() + lam * k, 0.0) / hvr**2, rel=1e-12)
    assert m.curvature > 0.0
    # all negative: θ = −1, λ = 1, margin max(ΣCVR + K, 0) = 0 (K ≤ |ΣCVR|)
    neg = compute_simm(crif_from_records([_record("Risk_IRVol", -1e6, l1="10y")]), CAL26)
    assert (
        next(r for r in neg.results if r.side == "Call")
        .margins["RatesFX"]["InterestRate"]
        .curvature
        == 0.0
    )


def test_fx_delta_in_calculation_currency_carries_no_risk() -> None:
    assert _call_total([_record("Risk_FX", 1e6, q="USD")]) == 0.0
    fx = _call_total([_record("Risk_FX", 1e6, q="EUR")])
    rw = CAL26.fx[10].delta[("2", "2")]  # EUR and USD are regular-volatility currencies
    assert fx == pytest.approx(rw * 1e6, rel=1e-12)


_CRIF = parse_crif_csv(CRIF_TEXT)


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=-50.0, max_value=50.0).filter(lambda k: abs(k) > 1e-3))
def test_scaling_by_k_scales_simm_by_abs_k(k: float) -> None:
    base = compute_simm(_CRIF, CAL26)
    records = list(csv.DictReader(io.StringIO(CRIF_TEXT)))
    for r in records:
        r["Amount"] = float(r["Amount"]) * k
    scaled = compute_simm(crif_from_records(records), CAL26)
    # a negative k swaps the sides: curvature is not symmetric, delta and vega are
    ref = base.total("Call") if k > 0 else base.total("Post")
    assert scaled.total("Call") == pytest.approx(abs(k) * ref, rel=1e-10)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(min_value=1.0, max_value=1e7),
    st.floats(min_value=0.0, max_value=2.0),
    st.sampled_from(["2w", "1y", "10y", "30y"]),
)
def test_offsetting_a_single_factor_never_raises_delta(s: float, t: float, tenor: str) -> None:
    before = _call_total([_record("Risk_IRCurve", s, l1=tenor, l2="OIS")])
    after = _call_total(
        [
            _record("Risk_IRCurve", s, l1=tenor, l2="OIS"),
            _record("Risk_IRCurve", -t * s, l1=tenor, l2="OIS"),
        ]
    )
    assert after <= before * (1 + 1e-12)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=0.0, max_value=2.0))
def test_offsetting_the_whole_bucket_never_raises_delta(t: float) -> None:
    records = [r for r in csv.DictReader(io.StringIO(CRIF_TEXT)) if r["RiskType"] == "Risk_IRCurve"]
    before = _call_total(records)
    offset = [{**r, "Amount": -t * float(r["Amount"])} for r in records]
    after = _call_total(records + offset)
    assert after == pytest.approx(abs(1 - t) * before, rel=1e-9, abs=1e-6)


def test_partial_offset_of_one_factor_can_raise_a_correlated_bucket() -> None:
    """Why the offset invariant is stated per factor / per bucket: with ρ(5y, 10y) high, an
    opposite-signed pair hedges itself, and offsetting one leg removes the hedge."""
    before = _call_total(
        [
            _record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS"),
            _record("Risk_IRCurve", -1000.0, l1="5y", l2="OIS"),
        ]
    )
    after = _call_total(
        [
            _record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS"),
            _record("Risk_IRCurve", -1000.0, l1="5y", l2="OIS"),
            _record("Risk_IRCurve", -1000.0, l1="10y", l2="OIS"),
        ]
    )
    assert after > before


# ------------------------------------------------------------------ bad input


def _bad_csv(row: int, column: str, value: str) -> str:
    records = list(csv.DictReader(io.StringIO(CRIF_TEXT)))
    records[row - 1][column] = value
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(records)
    return out.getvalue()


def test_unknown_risk_type_names_row_and_column() -> None:
    with pytest.raises(CrifError) as info:
        parse_crif_csv(_bad_csv(5, "RiskType", "Risk_Weather"))
    assert (info.value.row, info.value.column) == (5, "RiskType")
    assert "unknown risk type" in str(info.value)


def test_unsupported_risk_type_is_refused_not_mispriced() -> None:
    with pytest.raises(CrifError) as info:
        parse_crif_csv(_bad_csv(3, "RiskType", "Param_AddOnFixedAmount"))
    assert (info.value.row, info.value.column) == (3, "RiskType")
    assert "unsupported" in str(info.value)


def test_missing_column() -> None:
    text = "\n".join(
        ",".join(c for i, c in enumerate(line.split(",")) if i != 9)
        for line in CRIF_TEXT.splitlines()[:1]
    )
    with pytest.raises(CrifError) as info:
        parse_crif_csv(text + "\n")
    assert info.value.column == "Amount" and info.value.row is None


def test_non_numeric_amount() -> None:
    with pytest.raises(CrifError) as info:
        parse_crif_csv(_bad_csv(12, "Amount", "12,5k"))
    assert (info.value.row, info.value.column) == (12, "Amount")
    with pytest.raises(CrifError) as info:
        crif_from_records([_record("Risk_IRCurve", float("nan"), l1="1y", l2="OIS")])
    assert (info.value.row, info.value.column) == (1, "Amount")


def test_unknown_calibration_version() -> None:
    with pytest.raises(CrifError) as info:
        bundled_calibration("9.9")
    assert info.value.column == "version"
    with pytest.raises(CrifError) as info:
        select_calibration(
            parse_simm_calibration(read_bundled_data("simm_calibration_example.xml")), "2.6"
        )
    assert info.value.column == "version"
    with pytest.raises(CrifError):
        parse_simm_calibration(b"<notxml")


def test_bad_tenor_names_label1() -> None:
    with pytest.raises(CrifError) as info:
        parse_crif_csv(_bad_csv(2, "Label1", "7y"))
    assert (info.value.row, info.value.column) == (2, "Label1")


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=27),
    st.sampled_from(COLUMNS),
    st.text(max_size=12),
)
def test_any_garbage_cell_is_a_crif_error_or_a_valid_report(
    row: int, column: str, value: str
) -> None:
    try:
        crif = parse_crif_csv(_bad_csv(row, column, value))
    except CrifError as err:
        assert err.column is not None
        return
    report = compute_simm(crif, CAL26)
    assert all(math.isfinite(r.initial_margin) for r in report.rows)


# ------------------------------------------------------------------ column-wise parsing


def _ore_rows(folder: str = "SIMM2.6_10D") -> list[list[str]]:
    return _csv_rows(read_bundled_data(f"expected/{folder}/simm.csv").decode())


def _assert_ore_report(report_csv: str, scale: float = 1.0) -> None:
    expected, got = _ore_rows(), _csv_rows(report_csv)
    assert len(got) == len(expected) == 36
    for e, g in zip(expected, got, strict=True):
        assert g[:7] == e[:7] and g[8:] == e[8:]
        assert float(g[7]) == pytest.approx(scale * float(e[7]), rel=1e-12, abs=1e-6), (e, g)


def test_blank_lines_crlf_and_shuffled_rows_still_reproduce_ore() -> None:
    header, *lines = CRIF_TEXT.strip().splitlines()
    order = np.random.default_rng(3).permutation(len(lines))
    text = "\r\n".join([header, "", *(lines[i] + "\r\n" for i in order)])
    _assert_ore_report(compute_simm(parse_crif_csv(text), CAL26).to_csv())


def test_a_long_run_of_blank_lines_loses_no_row() -> None:
    """Rows are read in chunks of 4,096 lines: a chunk of only blank lines is skipped, it never
    ends the reading (it once did, silently dropping every row after it)."""
    header, first, *rest = CRIF_TEXT.strip().splitlines()
    text = "\n".join([header, first, *([""] * 10_000), *rest]) + "\n"
    _assert_ore_report(compute_simm(parse_crif_csv(text), CAL26).to_csv())


@pytest.mark.parametrize("copies", [1, 37])
def test_a_crif_repeated_k_times_is_k_times_ores_margin(copies: int) -> None:
    """Rows net per risk factor: k copies of ORE's CRIF are ORE's report times k (below every
    concentration threshold), through both the CSV and the records path."""
    header, body = CRIF_TEXT.split("\n", 1)
    text = header + "\n" + body * copies
    _assert_ore_report(compute_simm(parse_crif_csv(text), CAL26).to_csv(), copies)
    records = list(csv.DictReader(io.StringIO(text)))
    _assert_ore_report(compute_simm(crif_from_records(records), CAL26).to_csv(), copies)


def test_the_first_bad_row_wins_and_within_a_row_the_first_column() -> None:
    records = list(csv.DictReader(io.StringIO(CRIF_TEXT)))
    records[6]["Label1"] = "7y"  # row 7
    records[3]["Amount"] = "n/a"  # row 4
    records[3]["ProductClass"] = "Weather"  # row 4 again, checked after Amount
    with pytest.raises(CrifError) as info:
        crif_from_records(records)
    assert (info.value.row, info.value.column) == (4, "Amount")
    assert info.value.message == "amount 'n/a' is not a number"
    records[3]["RiskType"] = "Param_AddOnFixedAmount"  # RiskType is checked first on a row
    with pytest.raises(CrifError) as info:
        crif_from_records(records)
    assert (info.value.row, info.value.column) == (4, "RiskType")
    assert info.value.message == "unsupported risk type 'Param_AddOnFixedAmount'"
    records[1]["Qualifier"] = "  "  # row 2: empty after stripping
    with pytest.raises(CrifError) as info:
        crif_from_records(records)
    assert (info.value.row, info.value.column, info.value.message) == (
        2,
        "Qualifier",
        "empty qualifier",
    )


def test_csv_rows_are_read_as_dictreader_reads_them() -> None:
    """Short rows (missing cells None), long rows (extras ignored), a repeated column (the last
    wins), padded cells: the same CRIF as ``csv.DictReader`` gives row by row."""
    header, *rows = list(csv.reader(io.StringIO(CRIF_TEXT)))
    header.append("PortfolioID")  # a repeated column: its last cell is the portfolio
    rows = [[*r, "PF2" if i == 5 else r[1]] for i, r in enumerate(rows)]
    rows[2] = rows[2][:10]  # short: no regulations, no second PortfolioID (→ Unspecified)
    rows[3][8] = ""  # no AmountCurrency: the calculation currency
    rows[4] += ["extra", "cells"]
    rows[7][3] = " Risk_IRCurve "
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    text = out.getvalue()
    reader = csv.DictReader(io.StringIO(text))
    reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    by_dicts = compute_simm(crif_from_records(list(reader)), CAL26)
    by_columns = compute_simm(parse_crif_csv(text), CAL26)
    assert by_columns.to_csv() == by_dicts.to_csv()
    assert {r.portfolio for r in by_columns.results} == {"CRIF_20201228", "PF2", "Unspecified"}


def test_json_cells_that_are_not_text() -> None:
    """JSON numbers and booleans are read as their text (``1`` and ``true`` stay distinct);
    false and null cells are empty; a column only some records have is read where present."""
    a = {**_record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS", pf=1), "collect_regulations": 1}  # type: ignore[arg-type]
    b = {**_record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS", pf=True), "Label2": 0}  # type: ignore[arg-type]
    c = _record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS", pf=None)  # type: ignore[arg-type]
    del c["AmountCurrency"]
    report = compute_simm(crif_from_records([a, b, c]), CAL26)
    by_pf = {(r.portfolio, r.side): r for r in report.results}
    # portfolio "1" names a regulation on the Call side only: its Post side is empty (ORE)
    assert set(by_pf) == {(p, s) for p in ("True", "Unspecified") for s in ("Call", "Post")} | {
        ("1", "Call")
    }
    assert by_pf[("1", "Call")].regulation == "1"
    assert all(r.total == pytest.approx(60_000.0, rel=1e-12) for r in report.results)


def test_amounts_in_other_currencies() -> None:
    usd = _call_total([_record("Risk_IRCurve", 1100.0, l1="10y", l2="OIS")])
    eur = _record("Risk_IRCurve", 1000.0, l1="10y", l2="OIS")
    eur["AmountCurrency"] = "EUR"
    crif = crif_from_records([eur], fx_rates={"EUR": 1.1, "USD": 7.0})  # USD's own rate unused
    assert compute_simm(crif, CAL26).total("Call") == pytest.approx(usd, rel=1e-12)
    assert _call_total([{**eur, "AmountUSD": "1100"}]) == pytest.approx(usd, rel=1e-12)
    with pytest.raises(CrifError) as info:
        crif_from_records([eur, {**eur, "AmountCurrency": "GBP"}], fx_rates={"EUR": 1.1})
    assert (info.value.row, info.value.column) == (2, "AmountCurrency")
    assert info.value.message == "no FX rate GBP->USD"
    for bad, message in (
        ("x", "AmountUSD is not a number"),
        ("inf", "AmountUSD 'inf' is not finite"),
    ):
        with pytest.raises(CrifError) as info:
            crif_from_records([{**eur, "AmountUSD": "1100"}, {**eur, "AmountUSD": bad}])
        assert (info.value.row, info.value.column, info.value.message) == (2, "AmountUSD", message)


# ------------------------------------------------------------------ aggregation across risk classes


def _rows_by_key(report_csv: str) -> dict[tuple[str, ...], float]:
    return {tuple(r[:7]): float(r[7]) for r in _csv_rows(report_csv)}


def test_margin_type_rows_aggregate_risk_classes_with_psi() -> None:
    """ORE's (ProductClass, All, MarginType) row is the ψ aggregation of that margin type over
    the risk classes, not their sum; (All, All, MarginType) sums those over product classes."""
    ir, fx = 1_000.0, 1e6
    records = [
        _record("Risk_IRCurve", ir, l1="10y", l2="OIS"),
        _record("Risk_FX", fx, q="EUR"),
    ]
    report = compute_simm(crif_from_records(records), CAL26)
    rows = _rows_by_key(report.to_csv())
    key = ("P", "RatesFX", "All", "Delta", "All", "Call", "Unspecified")
    psi = CAL26.risk_class_correlation[("InterestRate", "FX")]
    d_ir, d_fx = 60.0 * ir, CAL26.fx[10].delta[("2", "2")] * fx
    v = np.array([d_ir, d_fx])
    expected = math.sqrt(v @ np.array([[1.0, psi], [psi, 1.0]]) @ v)
    assert rows[key] == pytest.approx(expected, rel=1e-12)
    assert rows[key] == pytest.approx(7_408_638.20, abs=0.005)  # not 7,460,000 = the sum
    total = rows[("P", "All", "All", "All", "All", "Call", "Unspecified")]
    assert rows[key] == pytest.approx(total, rel=1e-12)  # delta only: the same figure
    assert rows[("P", "All", "All", "Delta", "All", "Call", "Unspecified")] == rows[key]
    assert rows[("P", "All", "InterestRate", "Delta", "All", "Call", "Unspecified")] == d_ir


def test_margin_type_rows_over_two_product_classes() -> None:
    """RatesFX: IR delta, IR vega, FX delta; Credit: an IR delta. Every row recomputed."""
    records = [
        _record("Risk_IRCurve", 2_000.0, l1="5y", l2="OIS"),
        _record("Risk_IRVol", 3e5, l1="10y"),
        _record("Risk_FX", -2e5, q="EUR"),
        _record("Risk_IRCurve", -700.0, l1="2y", l2="OIS", pc="Credit"),
    ]
    report = compute_simm(crif_from_records(records), CAL26)
    call = next(r for r in report.results if r.side == "Call")
    rows = _rows_by_key(report.to_csv())
    psi = CAL26.risk_class_correlation[("InterestRate", "FX")]
    rates = call.margins["RatesFX"]
    ir, fxm = rates["InterestRate"], rates["FX"]
    credit_ir = call.margins["Credit"]["InterestRate"]

    def psi2(a: float, b: float) -> float:
        return math.sqrt(a * a + b * b + 2 * psi * a * b)

    p = CAL26.ir[10]
    assert credit_ir.delta == pytest.approx(p.delta[("1", "2y")] * 700.0, rel=1e-12)
    assert fxm.delta == pytest.approx(CAL26.fx[10].delta[("2", "2")] * 2e5, rel=1e-12)
    want = {
        ("RatesFX", "All", "Delta"): psi2(ir.delta, fxm.delta),
        ("RatesFX", "All", "Vega"): ir.vega,  # FX has no vega: ψ of one class is itself
        ("RatesFX", "All", "Curvature"): ir.curvature,
        ("RatesFX", "All", "All"): psi2(ir.total, fxm.total),
        ("Credit", "All", "Delta"): credit_ir.delta,
        ("All", "InterestRate", "Delta"): ir.delta + credit_ir.delta,
        ("All", "All", "Delta"): psi2(ir.delta, fxm.delta) + credit_ir.delta,
        ("All", "All", "Vega"): ir.vega,
        ("All", "All", "All"): psi2(ir.total, fxm.total) + credit_ir.total,
    }
    for (pc, rc, mt), value in want.items():
        assert rows[("P", pc, rc, mt, "All", "Call", "Unspecified")] == pytest.approx(
            value, rel=1e-12
        ), (pc, rc, mt)
    assert call.total == pytest.approx(want[("All", "All", "All")], rel=1e-12)
    # the margin-type rows never exceed the sums they used to be
    assert want[("RatesFX", "All", "Delta")] < ir.delta + fxm.delta


# ------------------------------------------------------------------ regulations (ORE's rules)


def _reg_record(
    amount: float, tenor: str, collect: str = "", post: str = "", pf: str = "P"
) -> dict[str, Any]:
    rec = _record("Risk_IRCurve", amount, l1=tenor, l2="OIS", pf=pf)
    return {**rec, "collect_regulations": collect, "post_regulations": post}


def _result(report: Any, side: str, pf: str = "P") -> Any:
    return next(r for r in report.results if r.side == side and r.portfolio == pf)


def test_sec_takes_the_cftc_rows() -> None:
    """A side with SEC and CFTC rows: SEC is computed on the SEC and the CFTC rows, CFTC on
    its own (ORE moves the {CFTC} CRIF into {SEC})."""
    records = [_reg_record(1_000.0, "10y", post="CFTC"), _reg_record(400.0, "5y", post="SEC")]
    post = _result(compute_simm(crif_from_records(records), CAL26), "Post")
    rho = CAL26.ir_tenor_correlation[("10y", "5y")]
    both = math.sqrt(60_000.0**2 + 24_000.0**2 + 2 * rho * 60_000.0 * 24_000.0)
    assert dict(post.by_regulation) == pytest.approx({"CFTC": 60_000.0, "SEC": both}, rel=1e-12)
    assert post.regulation == "SEC" and post.total == pytest.approx(both, rel=1e-12)
    assert post.total == pytest.approx(83_138.44, abs=0.005)  # not 60,000 (CFTC alone)
    # rows naming both, plus rows naming CFTC only: one set {CFTC,SEC}, CFTC wins the tie
    records = [
        _reg_record(1_000.0, "10y", post="CFTC"),
        _reg_record(400.0, "5y", post="SEC,CFTC"),
    ]
    report = compute_simm(crif_from_records(records), CAL26)
    post = _result(report, "Post")
    assert post.regulation == "CFTC" and post.total == pytest.approx(both, rel=1e-12)
    assert [r.regulation for r in report.breakdown if r.side == "Post"] == ["CFTC,SEC"]


def test_rows_without_regulations_are_dropped_once_any_row_has_one() -> None:
    """ORE: a row with no regulation on a side is dropped when any row of the portfolio names a
    regulation on either side; so a portfolio with Call regulations only has no Post margin.
    A portfolio without any regulation is computed on all rows (Unspecified)."""
    records = [
        _reg_record(1_000.0, "10y", collect="ESA", pf="A"),
        _reg_record(500.0, "10y", pf="A"),  # no regulation: dropped on both sides
        _reg_record(1_000.0, "10y", pf="B"),
        _reg_record(500.0, "10y", pf="B"),
        _reg_record(1_000.0, "10y", collect="ESA", post="Excluded", pf="C"),
        _reg_record(200.0, "10y", collect="Excluded", post="USPR", pf="C"),
    ]
    report = compute_simm(crif_from_records(records), CAL26)
    got = {(r.portfolio, r.side): (r.regulation, r.total) for r in report.results}
    assert got == {
        ("A", "Call"): ("ESA", pytest.approx(60_000.0, rel=1e-12)),
        ("B", "Call"): ("Unspecified", pytest.approx(90_000.0, rel=1e-12)),
        ("B", "Post"): ("Unspecified", pytest.approx(90_000.0, rel=1e-12)),
        ("C", "Call"): ("ESA", pytest.approx(60_000.0, rel=1e-12)),
        ("C", "Post"): ("USPR", pytest.approx(12_000.0, rel=1e-12)),
    }
    # without enforcement every row counts, on both sides
    loose = compute_simm(crif_from_records(records), CAL26, enforce_regulations=False)
    assert {(r.portfolio, r.side): r.total for r in loose.results}[("A", "Post")] == (
        pytest.approx(90_000.0, rel=1e-12)
    )


def test_ties_go_by_ores_regulation_order_not_alphabetical() -> None:
    # KFSC precedes HKMA in ORE's enum, NONREG precedes BACEN: the reverse of alphabetical
    records = [_reg_record(1_000.0, "10y", collect="HKMA,KFSC", post="BACEN,NONREG")]
    report = compute_simm(crif_from_records(records), CAL26)
    assert (_result(report, "Call").regulation, _result(report, "Post").regulation) == (
        "KFSC",
        "NONREG",
    )
    # two different sets with equal totals: still ORE's order
    records = [
        _reg_record(1_000.0, "10y", collect="HKMA"),
        _reg_record(1_000.0, "5y", collect="KFSC"),
    ]
    call = _result(compute_simm(crif_from_records(records), CAL26), "Call")
    assert call.regulation == "KFSC"
    assert dict(call.by_regulation) == {"HKMA": 60_000.0, "KFSC": 60_000.0}
    # a name ORE does not know ranks after every known one
    records = [_reg_record(1_000.0, "10y", collect="AAA,USPR")]
    assert _result(compute_simm(crif_from_records(records), CAL26), "Call").regulation == "USPR"


def test_overlapping_regulation_sets_split_as_ore_does() -> None:
    """{ESA,USPR} and {ESA}: ESA gets both sets' rows, USPR the first's; the worst case wins."""
    records = [
        _reg_record(1_000.0, "10y", collect="ESA,USPR"),
        _reg_record(-500.0, "10y", collect="ESA"),
    ]
    report = compute_simm(crif_from_records(records), CAL26)
    call = _result(report, "Call")
    assert dict(call.by_regulation) == pytest.approx({"ESA": 30_000.0, "USPR": 60_000.0})
    assert call.regulation == "USPR"
    assert [r.regulation for r in report.breakdown if r.side == "Call"] == ["ESA", "USPR"]


def test_regulation_sets_follow_ores_split_exactly() -> None:
    from engines.collateral.simm import regulation_sets

    def split(*row_sets: tuple[str, ...], has_sec: bool = False) -> dict[tuple[str, ...], set[int]]:
        got = regulation_sets(
            dict(enumerate(row_sets)),
            enforce=True,
            netting_set_has_regulations=True,
            has_sec=has_sec,
        )
        return {k: set(v) for k, v in got.items()}

    assert split(("ESA", "USPR"), ("ESA",)) == {("ESA",): {0, 1}, ("USPR",): {0}}
    assert split(("ESA", "USPR", "JFSA"), ("ESA", "USPR")) == {
        ("ESA", "USPR"): {0, 1},
        ("JFSA",): {0},
    }
    # {CFTC}, {SEC}, {CFTC,SEC} → SEC: every row, CFTC: the rows naming it
    assert split(("CFTC",), ("SEC",), ("CFTC", "SEC"), has_sec=True) == {
        ("CFTC",): {0, 2},
        ("SEC",): {0, 1, 2},
    }
    assert split(("SEC",), ("CFTC", "SEC"), has_sec=True) == {
        ("CFTC",): {1},
        ("SEC",): {0, 1},
    }
    assert split(("CFTC", "ESA"), ("SEC",), has_sec=True) == {
        ("CFTC",): {0},
        ("ESA",): {0},
        ("SEC",): {0, 1},
    }
    # no subset to move into: after 250 rounds ORE moves {ESA,JFSA} to {JFSA} (ESA loses the
    # rows), then {ESA,JFSA,USPR} to {JFSA,USPR}, which splits into {JFSA} and {USPR}
    assert split(("ESA", "JFSA"), ("ESA", "JFSA", "USPR")) == {
        ("JFSA",): {0, 1},
        ("USPR",): {1},
    }
    assert split((), ("ESA",)) == {("ESA",): {1}}
    assert split(("Unspecified", "ESA"), ("USPR",)) == {("ESA", "Unspecified"): {0}, ("USPR",): {1}}


@pytest.mark.parametrize(("folder", "version", "mpor", "calfile"), ORE_RUNS)
def test_reproduces_ores_regulation_breakdown(
    folder: str, version: str, mpor: int, calfile: str | None
) -> None:
    cal = ore_calibration(version, calfile)
    report = compute_simm(parse_crif_csv(CRIF_TEXT), cal, mpor_days=mpor)
    expected = _csv_rows(
        read_bundled_data(f"expected/{folder}/regulation_breakdown_simm.csv").decode()
    )
    got = _csv_rows(report.regulation_breakdown_csv())
    assert len(got) == len(expected) == 34
    for e, g in zip(expected, got, strict=True):
        assert g[:7] == e[:7] and g[8:] == e[8:]
        assert abs(float(g[7]) - float(e[7])) < 1e-6, (e, g)


# ------------------------------------------------------------------ inflation, xccy basis, inflation vol


def test_inflation_delta() -> None:
    """Risk_Inflation: one factor per currency, weight RW_inflation, correlation ρ_inflation
    with every curve tenor, and part of the concentration sum."""
    p = CAL26.ir[10]
    w_inf = p.inflation * 1_000.0
    assert _call_total([_record("Risk_Inflation", 1_000.0)]) == pytest.approx(w_inf, rel=1e-12)
    w_10 = 60.0 * -800.0
    two = _call_total(
        [_record("Risk_Inflation", 1_000.0), _record("Risk_IRCurve", -800.0, l1="10y", l2="OIS")]
    )
    rho = CAL26.ir_inflation
    assert two == pytest.approx(math.sqrt(w_inf**2 + w_10**2 + 2 * rho * w_inf * w_10), rel=1e-12)
    thr = CAL26.ir_delta_thresholds[CAL26.ir_threshold_groups["USD"]] * 1e6
    big = _call_total(
        [_record("Risk_Inflation", 2 * thr), _record("Risk_IRCurve", 2 * thr, l1="10y", l2="OIS")]
    )
    cr = 2.0  # |Σ s| = 4 T
    a, b = p.inflation * 2 * thr * cr, 60.0 * 2 * thr * cr
    assert big == pytest.approx(math.sqrt(a * a + b * b + 2 * rho * a * b), rel=1e-12)


def test_cross_currency_basis_delta() -> None:
    """Risk_XCcyBasis: weight RW_xccy, correlation ρ_xccy, no concentration factor of its own
    and not in the currency's concentration sum."""
    p = CAL26.ir[10]
    thr = CAL26.ir_delta_thresholds[CAL26.ir_threshold_groups["USD"]] * 1e6
    s_x, s_c = 3 * thr, 4 * thr  # the curve alone sets CR = 2; with the basis it would be √7
    got = _call_total(
        [_record("Risk_XCcyBasis", s_x), _record("Risk_IRCurve", s_c, l1="10y", l2="OIS")]
    )
    a, b = p.xccy_basis * s_x, 60.0 * s_c * 2.0
    rho = CAL26.ir_xccy_basis
    assert got == pytest.approx(math.sqrt(a * a + b * b + 2 * rho * a * b), rel=1e-12)
    assert _call_total([_record("Risk_XCcyBasis", -500.0)]) == pytest.approx(
        p.xccy_basis * 500.0, rel=1e-12
    )
    # inflation with cross-currency basis: ρ_xccy as well
    c = p.inflation * 700.0
    got = _call_total([_record("Risk_XCcyBasis", 3_000.0), _record("Risk_Inflation", 700.0)])
    a = p.xccy_basis * 3_000.0
    assert got == pytest.approx(math.sqrt(a * a + c * c + 2 * rho * a * c), rel=1e-12)


def test_inflation_vol_vega_and_curvature() -> None:
    """Risk_InflationVol: expiries sum into one factor per currency (vega VRW·Σs), correlation
    ρ_inflation with the IR vol tenors; curvature from Σ SF(t)·s."""
    p = CAL26.ir[10]
    s5, s10 = 2e5, 1e5
    report = compute_simm(
        crif_from_records(
            [_record("Risk_InflationVol", s5, l1="5y"), _record("Risk_InflationVol", s10, l1="10y")]
        ),
        CAL26,
    )
    m = _result(report, "Call").margins["RatesFX"]["InterestRate"]
    assert m.delta == 0.0
    assert m.vega == pytest.approx(p.vega * (s5 + s10), rel=1e-12)
    cvr = curvature_scaling("5y", 10) * s5 + curvature_scaling("10y", 10) * s10
    z = NormalDist().inv_cdf(0.995)
    assert m.curvature == pytest.approx(cvr * z * z / p.hvr**2, rel=1e-12)  # θ = 0, K = CVR
    v_i, v_r = p.vega * s10, p.vega * -3e5
    mixed = compute_simm(
        crif_from_records(
            [_record("Risk_InflationVol", s10, l1="10y"), _record("Risk_IRVol", -3e5, l1="10y")]
        ),
        CAL26,
    )
    mm = _result(mixed, "Call").margins["RatesFX"]["InterestRate"]
    rho = CAL26.ir_inflation
    assert mm.vega == pytest.approx(math.sqrt(v_i**2 + v_r**2 + 2 * rho * v_i * v_r), rel=1e-12)

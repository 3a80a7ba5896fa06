"""SIMM CRIF grouping paths: joined-string keys, their fallbacks, and the intra-bucket matrix.

A CRIF's rows are grouped by their categorical cells joined into one string (CSV, and JSON
records whose cells are all text); a cell holding the separator, a null or a number takes the
tuple or column-wise path. Every path must give each row the value a row-by-row reading gives.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import pytest

from engines.collateral.simm import (
    Crif,
    bundled_calibration,
    compute_simm,
    crif_from_records,
    parse_crif_csv,
)

CAL26 = bundled_calibration("2.6")
SEP = "\x1f"  # simm._SEP
COLUMNS = {  # Crif attribute → CRIF column, and the value a missing or empty cell reads as
    "portfolio": ("PortfolioID", "Unspecified"),
    "product_class": ("ProductClass", ""),
    "risk_type": ("RiskType", ""),
    "qualifier": ("Qualifier", ""),
    "bucket": ("Bucket", ""),
    "label1": ("Label1", ""),
    "label2": ("Label2", ""),
}


def _rows() -> list[dict[str, Any]]:
    out = []
    for i in range(40):
        equity = i % 2 == 0
        out.append(
            {
                "PortfolioID": f"P{i % 3}",
                "ProductClass": "Equity" if equity else "RatesFX",
                "RiskType": "Risk_Equity" if equity else "Risk_IRCurve",
                "Qualifier": f"EQ{i % 5}" if equity else ("USD", "EUR")[i % 4 // 2],
                "Bucket": str(1 + i % 4) if equity else "",
                "Label1": "" if equity else ("1y", "5y")[i % 3 % 2],
                "Label2": "" if equity else "OIS",
                "AmountCurrency": "USD",
                "Amount": 1000.0 + 37.0 * i,
                "collect_regulations": "ESA",
                "post_regulations": "SEC",
            }
        )
    return out


def _as_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _assert_reads(crif: Crif, rows: list[dict[str, Any]]) -> None:
    """Each row's categorical values are its cells as text, stripped (or the default)."""
    for attr, (col, default) in COLUMNS.items():
        column = getattr(crif, attr)
        got = [column.value(i) for i in range(len(rows))]
        assert got == [str(r.get(col) or default).strip() for r in rows], attr
        assert list(column.categories) == sorted(set(got)), attr
    assert crif.amount.tolist() == [float(r["Amount"]) for r in rows]


def test_csv_and_records_read_every_cell() -> None:
    rows = _rows()
    _assert_reads(parse_crif_csv(_as_csv(rows)), rows)
    _assert_reads(crif_from_records(rows), rows)


def test_separator_in_a_cell_falls_back_to_tuples() -> None:
    rows = _rows()
    rows[4]["Qualifier"] = f"EQ{SEP}4"  # would join like ("EQ", "4") if the join were trusted
    rows[6]["Qualifier"] = "EQ"
    crif = parse_crif_csv(_as_csv(rows))
    _assert_reads(crif, rows)
    _assert_reads(crif_from_records(rows), rows)
    assert f"EQ{SEP}4" in crif.qualifier.categories


@pytest.mark.parametrize("odd", [None, 7, 1.5])
def test_records_with_a_cell_not_text(odd: object) -> None:
    rows = _rows()
    rows[3]["Label2"] = odd if odd is not None else None
    crif = crif_from_records(rows)
    expected = [dict(r, Label2=str(r["Label2"]) if r["Label2"] else None) for r in rows]
    _assert_reads(crif, expected)
    same = crif_from_records(expected)
    assert compute_simm(crif, CAL26).total("Call") == compute_simm(same, CAL26).total("Call")


def test_records_without_a_column_in_some_rows() -> None:
    rows = _rows()
    del rows[5]["Bucket"]  # an IR row: no bucket needed
    _assert_reads(crif_from_records(rows), rows)


def test_credit_non_qualifying_label2_not_adjacent() -> None:
    """Factors sort by qualifier, so A, B, C with Label2 CMBX, ABX, CMBX: the same-underlying
    pairs (A, C) are not neighbours (the general, element-wise correlation path)."""
    spec = CAL26.bucketed["CreditNonQualifying"]
    rw = spec.params[10].delta["1"]
    same, diff = (spec.same_different[("aggregate", k)] for k in ("same", "different"))
    amounts = {"A": 100.0, "B": -40.0, "C": 70.0}
    l2 = {"A": "CMBX", "B": "ABX", "C": "CMBX"}
    rows = [
        {
            "PortfolioID": "P",
            "ProductClass": "Credit",
            "RiskType": "Risk_CreditNonQ",
            "Qualifier": q,
            "Bucket": "1",
            "Label1": "5y",
            "Label2": l2[q],
            "AmountCurrency": "USD",
            "Amount": a,
        }
        for q, a in amounts.items()
    ]
    call = next(r for r in compute_simm(crif_from_records(rows), CAL26).results if r.side == "Call")
    ws = rw * np.array(list(amounts.values()))
    corr = np.array([[1.0, diff, same], [diff, 1.0, diff], [same, diff, 1.0]])
    delta = call.margins["Credit"]["CreditNonQualifying"].delta
    assert delta == pytest.approx(math.sqrt(ws @ corr @ ws), rel=1e-12)
    # RW 280, ρ same 0.83, different 0.32: WS = (28,000, −11,200, 19,600);
    # K² = 7.84e8 + 1.2544e8 + 3.8416e8 + 2 (0.83 · 5.488e8 − 0.32 · 3.136e8 − 0.32 · 2.1952e8)
    #    = 1.2936e9 + 2 (4.55504e8 − 1.70598e8) = 1.8634e9
    assert delta == pytest.approx(43_167.24, rel=1e-6)

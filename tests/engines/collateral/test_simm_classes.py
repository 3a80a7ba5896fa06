"""SIMM Equity, Commodity and FX volatility risk classes, computed by hand from the calibration.

Each expected value is computed here with numpy from the numbers of the parsed calibration (so
a parser or formula error shows), and at least one per case is a literal worked out by hand in
the comment beside it (so the test can fail when both the code and the test read the same
wrong number).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.collateral.simm import (
    BucketedClass,
    CrifError,
    SimmCalibration,
    bundled_calibration,
    compute_simm,
    crif_from_records,
    curvature_scaling,
    lambda_curvature,
    parse_crif_csv,
)

CAL26 = bundled_calibration("2.6")
# σ / RW = √(365/14) / Φ⁻¹(0.99) = 5.10602 / 2.32635 = 2.19486 (SIMM B.10)
MULT = math.sqrt(365.0 / 14.0) / NormalDist().inv_cdf(0.99)
CLASSES = [("Equity", "Risk_Equity", "Risk_EquityVol"), ("Commodity", "Risk_Commodity", "Risk_CommodityVol")]  # fmt: skip


def _rec(
    rt: str,
    amount: float,
    *,
    q: str = "A",
    bucket: str = "1",
    l1: str = "",
    pc: str | None = None,
    pf: str = "P",
) -> dict[str, Any]:
    default_pc = {"Risk_FXVol": "RatesFX", "Risk_IRCurve": "RatesFX"}.get(rt)
    return {
        "PortfolioID": pf,
        "ProductClass": pc or default_pc or rt.removeprefix("Risk_").removesuffix("Vol"),
        "RiskType": rt,
        "Qualifier": q,
        "Bucket": bucket,
        "Label1": l1,
        "Label2": "",
        "AmountCurrency": "USD",
        "Amount": amount,
    }


def _margins(records: list[dict[str, Any]], cal: SimmCalibration = CAL26, mpor: int = 10) -> Any:
    report = compute_simm(crif_from_records(records), cal, mpor_days=mpor)
    call = next(r for r in report.results if r.side == "Call")
    return call, report


def _rc(records: list[dict[str, Any]], rc: str, mpor: int = 10) -> Any:
    call, _ = _margins(records, mpor=mpor)
    return next(m[rc] for m in call.margins.values() if rc in m)


def _spec(rc: str) -> BucketedClass:
    return CAL26.bucketed[rc]


# ------------------------------------------------------------------ delta


def test_equity_one_delta_is_risk_weight_times_sensitivity() -> None:
    rw = _spec("Equity").params[10].delta["1"]
    assert rw == 30.0  # SIMM 2.6 equity bucket 1 (large cap, emerging markets, consumer)
    m = _rc([_rec("Risk_Equity", 1000.0)], "Equity")
    assert m.delta == pytest.approx(rw * 1000.0, rel=1e-12)
    assert m.delta == pytest.approx(30_000.0, rel=1e-12)  # 30 × 1,000
    assert m.vega == m.curvature == 0.0


def test_commodity_one_delta() -> None:
    rw = _spec("Commodity").params[10].delta["2"]
    m = _rc([_rec("Risk_Commodity", -2000.0, bucket="2")], "Commodity")
    assert m.delta == pytest.approx(abs(rw * -2000.0), rel=1e-12)
    assert m.delta == pytest.approx(58_000.0, rel=1e-12)  # 29 × 2,000 (crude oil)


@pytest.mark.parametrize(("rc", "delta", "vol"), CLASSES)
def test_two_deltas_in_one_bucket_with_different_concentration(
    rc: str, delta: str, vol: str
) -> None:
    spec = _spec(rc)
    rw, rho, thr = spec.params[10].delta["1"], spec.intra["1"], spec.delta_thresholds["1"] * 1e6
    a, b = 5.0 * thr, -thr / 3.0  # a above the threshold, b below
    m = _rc([_rec(delta, a, q="A"), _rec(delta, b, q="B")], rc)
    cr = np.array([math.sqrt(abs(a) / thr), 1.0])
    ws = np.array([rw * a, rw * b]) * cr
    f = cr.min() / cr.max()
    expected = math.sqrt(ws @ ws + 2.0 * rho * f * ws[0] * ws[1])
    assert m.delta == pytest.approx(expected, rel=1e-12)
    assert m.buckets["Delta"] == {"1": pytest.approx(expected, rel=1e-12)}
    if rc == "Equity":
        # T = 3e6, a = 15e6, b = -1e6, RW 30, ρ 0.18, CR_a = √5 = 2.2360680:
        # WS_a = 30 · 15e6 · 2.2360680 = 1,006,230,589.87, WS_b = -30e6, f = 1/√5;
        # K² = 1.0125e18 + 9e14 − 2 · 0.18 · 0.4472136 · 1.00623059e9 · 3e7
        #    = 1.0125e18 + 0.0009e18 − 0.0048599e18 = 1.0085401e18
        assert m.delta == pytest.approx(1_004_260_922.27, rel=1e-9)


@pytest.mark.parametrize(("rc", "delta", "vol"), CLASSES)
def test_two_buckets_aggregate_with_gamma(rc: str, delta: str, vol: str) -> None:
    spec = _spec(rc)
    p = spec.params[10]
    a, b, c = 1000.0, 700.0, -400.0
    m = _rc([_rec(delta, a, q="A"), _rec(delta, c, q="C"), _rec(delta, b, q="B", bucket="2")], rc)
    ws1 = np.array([p.delta["1"] * a, p.delta["1"] * c])
    k1 = math.sqrt(ws1 @ ws1 + 2.0 * spec.intra["1"] * ws1[0] * ws1[1])
    k2 = abs(p.delta["2"] * b)
    s1 = max(min(ws1.sum(), k1), -k1)
    s2 = p.delta["2"] * b
    gamma = spec.inter[("1", "2")]
    assert m.delta == pytest.approx(math.sqrt(k1 * k1 + k2 * k2 + 2 * gamma * s1 * s2), rel=1e-12)
    assert m.buckets["Delta"]["2"] == pytest.approx(k2, rel=1e-12)
    if rc == "Equity":
        # WS1 = (30,000, -12,000), ρ 0.18: K1² = 9e8 + 1.44e8 - 1.296e8 = 9.144e8, K1 = 30,239.05;
        # S1 = 18,000; bucket 2: RW 33, WS = 23,100 = K2 = S2; γ12 = 0.18:
        # Δ² = 9.144e8 + 5.3361e8 + 2 · 0.18 · 18,000 · 23,100 = 1,597,698,000 → 39,971.2146
        assert m.delta == pytest.approx(39_971.2146, rel=1e-8)


def test_the_clamp_on_s_b() -> None:
    """S_b = ΣWS clamped to ±K_b: two offsetting uncorrelated qualifiers in a bucket of ρ 0
    (commodity bucket 16, "other") have ΣWS 0 < K_b, and one big bucket's sum is within K."""
    spec = _spec("Commodity")
    p = spec.params[10]
    assert spec.intra["16"] == 0.0
    m = _rc(
        [
            _rec("Risk_Commodity", 1000.0, q="X", bucket="16"),
            _rec("Risk_Commodity", -1000.0, q="Y", bucket="16"),
            _rec("Risk_Commodity", 1000.0, q="Z", bucket="1"),
        ],
        "Commodity",
    )
    k16 = math.sqrt(2.0) * p.delta["16"] * 1000.0
    k1 = p.delta["1"] * 1000.0
    # S_16 = 0: no cross term, Δ = sqrt(K16² + K1²)
    assert m.delta == pytest.approx(math.hypot(k16, k1), rel=1e-12)


def test_residual_bucket_is_added_outside_the_cross_bucket_sum() -> None:
    spec = _spec("Equity")
    p = spec.params[10]
    assert p.delta["Residual"] == 50.0 and spec.intra["Residual"] == 0.0
    records = [
        _rec("Risk_Equity", 1000.0, q="A", bucket="1"),
        _rec("Risk_Equity", 300.0, q="R1", bucket="Residual"),
        _rec("Risk_Equity", 400.0, q="R2", bucket="Residual"),
    ]
    m = _rc(records, "Equity")
    k_res = math.hypot(p.delta["Residual"] * 300.0, p.delta["Residual"] * 400.0)  # ρ 0
    assert m.delta == pytest.approx(p.delta["1"] * 1000.0 + k_res, rel=1e-12)
    # 30 × 1,000 + 50 × sqrt(300² + 400²) = 30,000 + 25,000
    assert m.delta == pytest.approx(55_000.0, rel=1e-12)
    assert m.buckets["Delta"]["Residual"] == pytest.approx(25_000.0, rel=1e-12)


def test_concentration_above_threshold() -> None:
    thr = _spec("Equity").delta_thresholds["1"] * 1e6
    s = 4.0 * thr
    m = _rc([_rec("Risk_Equity", s)], "Equity")
    assert m.delta == pytest.approx(30.0 * s * math.sqrt(s / thr), rel=1e-12)
    assert m.delta == pytest.approx(720_000_000.0, rel=1e-12)  # 30 × 12e6 × CR 2


def test_one_day_mpor_uses_its_weights_and_no_concentration() -> None:
    p1 = _spec("Equity").params[1]
    thr = _spec("Equity").delta_thresholds["1"] * 1e6
    m = _rc([_rec("Risk_Equity", 4.0 * thr)], "Equity", mpor=1)
    # SIMM technical paper I.4: concentration disabled at 1 day, CR = 1: 8.8 × 12e6
    assert m.delta == pytest.approx(p1.delta["1"] * 4.0 * thr, rel=1e-12)
    assert m.delta == pytest.approx(105_600_000.0, rel=1e-12)


# ------------------------------------------------------------------ vega and curvature


@pytest.mark.parametrize(("rc", "delta", "vol"), CLASSES)
def test_vega_and_curvature_with_negative_net_sum(rc: str, delta: str, vol: str) -> None:
    spec = _spec(rc)
    p = spec.params[10]
    rw, rho = p.delta["1"], spec.intra["1"]
    sigma = MULT * rw
    rows = {"A": {"1y": 600.0, "5y": 400.0}, "B": {"1m": -3000.0, "10y": -500.0}}
    records = [_rec(vol, v, q=q, l1=t) for q, by in rows.items() for t, v in by.items()]
    m = _rc(records, rc)
    s = np.array([sum(by.values()) for by in rows.values()])
    vr = p.vega_weight("1") * p.hvr * sigma * s  # far below the vega thresholds: VCR = 1
    assert m.vega == pytest.approx(math.sqrt(vr @ vr + 2 * rho * vr[0] * vr[1]), rel=1e-12)
    cvr = np.array(
        [sigma * sum(curvature_scaling(t, 10) * v for t, v in by.items()) for by in rows.values()]
    )
    assert cvr.sum() < 0.0
    k = math.sqrt(cvr @ cvr + 2 * rho * rho * cvr[0] * cvr[1])
    theta = min(cvr.sum() / np.abs(cvr).sum(), 0.0)
    expected = max(cvr.sum() + lambda_curvature(theta) * k, 0.0)
    assert expected > 0.0
    assert m.curvature == pytest.approx(expected, rel=1e-12)
    assert m.buckets["Curvature"]["1"] == pytest.approx(k, rel=1e-12)
    assert m.total == pytest.approx(m.vega + m.curvature, rel=1e-15)


def test_equity_one_vega_by_hand() -> None:
    m = _rc([_rec("Risk_EquityVol", 1000.0, l1="1y")], "Equity")
    # σ = 30 × 2.1948647 = 65.845941; VR = VRW 0.45 × HVR 0.6 × 65.845941 × 1,000
    assert m.vega == pytest.approx(17_778.404169858, rel=1e-10)
    # CVR = σ × SF(1y) × 1,000 = 65.845941 × 0.5 × 14/365 × 1,000 = 1,262.7852; θ = 0,
    # λ = Φ⁻¹(0.995)² − 1 = 2.5758293² − 1 = 5.6348966, K = CVR:
    # curvature = CVR (1 + λ) = 1,262.7852 × 6.6348966 = 8,378.540
    assert m.curvature == pytest.approx(8_378.540, rel=1e-6)


def test_vega_concentration_and_equity_bucket_12_has_no_curvature() -> None:
    spec = _spec("Equity")
    p = spec.params[10]
    sigma = MULT * p.delta["12"]
    vthr = spec.vega_thresholds["12"] * 1e6
    s = 9.0 * vthr / (sigma * p.hvr)  # |HVR σ s| = 9 VT: VCR = 3
    m = _rc([_rec("Risk_EquityVol", s, bucket="12", l1="6m")], "Equity")
    assert m.vega == pytest.approx(p.vega_weight("12") * p.hvr * sigma * s * 3.0, rel=1e-12)
    # VRW 0.96 (bucket 12, volatility indices) × 9 × VT 6,400 mm × VCR 3 = 165,888,000,000
    assert m.vega == pytest.approx(165_888_000_000.0, rel=1e-12)
    assert m.curvature == 0.0  # SIMM ≥ 2.2: volatility indices carry no curvature


def test_residual_curvature_is_separate() -> None:
    p = _spec("Equity").params[10]
    records = [
        _rec("Risk_EquityVol", 1000.0, q="A", bucket="1", l1="2w"),
        _rec("Risk_EquityVol", -1000.0, q="R", bucket="Residual", l1="2w"),
    ]
    m = _rc(records, "Equity")
    cv1 = MULT * p.delta["1"] * 0.5 * 1000.0
    # bucket 1 alone: θ = 0, CVR (1 + λ); residual alone: CVR < 0, θ = −1, λ = 1, K = |CVR|:
    # max(CVR + |CVR|, 0) = 0
    assert m.curvature == pytest.approx(cv1 * (1.0 + lambda_curvature(0.0)), rel=1e-12)
    assert "Residual" not in m.buckets["Curvature"] or m.buckets["Curvature"]["Residual"] == 0.0


# ------------------------------------------------------------------ FX volatility


def test_fx_vega_and_curvature_two_pairs() -> None:
    p = CAL26.fx[10]
    rw_regular = p.delta[("2", "2")]
    assert rw_regular == 7.4 and p.vega == 0.48 and p.hvr == 0.57
    sigma = MULT * rw_regular
    rows = [("EURUSD", "1y", 2000.0), ("EURUSD", "3m", 500.0), ("USDJPY", "5y", -4000.0)]
    m = _rc([_rec("Risk_FXVol", v, q=q, l1=t) for q, t, v in rows], "FX")
    s = np.array([2500.0, -4000.0])
    vr = p.vega * p.hvr * sigma * s
    rho = CAL26.fx_vol_correlation
    assert rho == 0.5
    assert m.vega == pytest.approx(math.sqrt(vr @ vr + 2 * rho * vr[0] * vr[1]), rel=1e-12)
    # σ = 7.4 × 2.1948647 = 16.241999; VR = 0.48 × 0.57 × σ × (2,500, -4,000)
    # = (11,109.527, -17,775.244); VR_a² + VR_b² − VR_a |VR_b|
    # = 123,421,595 + 315,959,284 − 197,474,552 = 241,906,327 → 15,553.338
    assert m.vega == pytest.approx(15_553.338, rel=1e-7)
    cvr = sigma * np.array(
        [
            curvature_scaling("1y", 10) * 2000.0 + curvature_scaling("3m", 10) * 500.0,
            curvature_scaling("5y", 10) * -4000.0,
        ]
    )
    k = math.sqrt(cvr @ cvr + 2 * rho * rho * cvr[0] * cvr[1])
    theta = min(cvr.sum() / np.abs(cvr).sum(), 0.0)
    assert m.curvature == pytest.approx(
        max(cvr.sum() + lambda_curvature(theta) * k, 0.0), rel=1e-12
    )
    assert m.delta == 0.0


def test_fx_vega_high_volatility_pair_and_concentration() -> None:
    p = CAL26.fx[10]
    sigma = MULT * p.delta[("1", "2")]  # BRL high volatility, USD regular
    # USD category 1, BRL category 2: threshold "2"
    vthr = CAL26.fx_vega_thresholds["2"] * 1e6
    s = 4.0 * vthr / (sigma * p.hvr)
    m = _rc([_rec("Risk_FXVol", s, q="USDBRL", l1="1y")], "FX")
    assert m.vega == pytest.approx(p.vega * p.hvr * sigma * s * 2.0, rel=1e-12)
    assert m.vega == pytest.approx(0.48 * 4.0 * 1400e6 * 2.0, rel=1e-12)  # VCR 2


def test_fx_vega_beside_fx_delta() -> None:
    delta_only = _rc([_rec("Risk_FX", 1000.0, q="EUR", bucket="", pc="RatesFX")], "FX")
    both = _rc(
        [
            _rec("Risk_FX", 1000.0, q="EUR", bucket="", pc="RatesFX"),
            _rec("Risk_FXVol", 1000.0, q="EURUSD", l1="1y"),
        ],
        "FX",
    )
    assert both.delta == delta_only.delta and both.vega > 0.0 and both.curvature > 0.0


# ------------------------------------------------------------------ invariants


def _mixed() -> list[dict[str, Any]]:
    return [
        _rec("Risk_Equity", 1000.0, q="A"),
        _rec("Risk_Equity", -350.0, q="B"),
        _rec("Risk_Equity", 800.0, q="C", bucket="5"),
        _rec("Risk_Equity", 120.0, q="R", bucket="Residual"),
        _rec("Risk_EquityVol", 2000.0, q="A", l1="1y"),
        _rec("Risk_EquityVol", -900.0, q="C", bucket="5", l1="3y"),
        _rec("Risk_Commodity", 500.0, q="WTI", bucket="2"),
        _rec("Risk_Commodity", -300.0, q="GOLD", bucket="12"),
        _rec("Risk_CommodityVol", 700.0, q="WTI", bucket="2", l1="6m"),
        _rec("Risk_FXVol", 1500.0, q="EURUSD", l1="1y"),
        _rec("Risk_FXVol", -600.0, q="USDJPY", l1="2y"),
        _rec("Risk_IRCurve", 100.0, q="USD", bucket="1", l1="5y"),
        _rec("Risk_CreditQ", 50.0, q="ISSUER_A", bucket="2", l1="5y", pc="Credit"),
        _rec("Risk_CreditQ", -20.0, q="ISSUER_A", bucket="2", l1="10y", pc="Credit"),
        _rec("Risk_CreditQ", 30.0, q="ISSUER_B", bucket="Residual", l1="1y", pc="Credit"),
        _rec("Risk_CreditVol", 400.0, q="ISSUER_A", bucket="2", l1="3y", pc="Credit"),
        _rec("Risk_CreditNonQ", 10.0, q="RMBS_1", bucket="1", l1="5y", pc="Credit"),
        _rec("Risk_CreditVolNonQ", -80.0, q="RMBS_1", bucket="1", l1="5y", pc="Credit"),
        _rec("Risk_BaseCorr", 60.0, q="CDX.NA.IG", bucket="", pc="Credit"),
    ]


@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=-40.0, max_value=40.0).filter(lambda k: abs(k) > 1e-3))
def test_scaling_every_sensitivity_by_k_scales_simm_by_abs_k(k: float) -> None:
    records = _mixed()
    base = compute_simm(crif_from_records(records), CAL26)
    for r in records:
        r["Amount"] *= k
    scaled = compute_simm(crif_from_records(records), CAL26)
    # a negative k swaps the sides (curvature is not symmetric in sign, delta and vega are)
    ref = base.total("Call") if k > 0 else base.total("Post")
    assert scaled.total("Call") == pytest.approx(abs(k) * ref, rel=1e-10)


# ------------------------------------------------------------------ report and ψ


def test_report_rows_in_ores_layout() -> None:
    _, report = _margins(_mixed())
    rows = {(r.product_class, r.risk_class, r.margin_type, r.bucket) for r in report.rows}
    for key in [
        ("Equity", "Equity", "Delta", "All"),
        ("Equity", "Equity", "Delta", "1"),
        ("Equity", "Equity", "Delta", "5"),
        ("Equity", "Equity", "Delta", "Residual"),
        ("Equity", "Equity", "Vega", "All"),
        ("Equity", "Equity", "Curvature", "All"),
        ("Equity", "Equity", "All", "All"),
        ("Equity", "All", "All", "All"),
        ("Commodity", "Commodity", "Delta", "12"),
        ("Commodity", "Commodity", "Vega", "2"),
        ("Commodity", "All", "All", "All"),
        ("RatesFX", "FX", "Vega", "All"),
        ("RatesFX", "FX", "Curvature", "All"),
        ("All", "Equity", "All", "All"),
        ("All", "Commodity", "Delta", "All"),
        ("Credit", "CreditQualifying", "Delta", "2"),
        ("Credit", "CreditQualifying", "Delta", "Residual"),
        ("Credit", "CreditQualifying", "BaseCorr", "All"),
        ("Credit", "CreditNonQualifying", "Vega", "All"),
        ("Credit", "All", "All", "All"),
        ("All", "All", "All", "All"),
    ]:
        assert key in rows, key
    csv = report.to_csv().splitlines()
    eq = [line for line in csv if line.startswith("P,Equity,Equity,Delta,") and ",Call," in line]
    # buckets as ORE's map<string> orders them: All first, then "1", "5", "Residual"
    assert [line.split(",")[4] for line in eq] == ["All", "1", "5", "Residual"]


def test_psi_combines_equity_with_rates_fx_in_one_product_class() -> None:
    ir = _rec("Risk_IRCurve", 1000.0, q="USD", bucket="1", l1="10y")
    ir["Label2"] = "OIS"
    eq = _rec("Risk_Equity", 2000.0, pc="RatesFX")
    call, _ = _margins([ir, eq])
    assert list(call.margins) == ["RatesFX"]
    m_ir, m_eq = (
        call.margins["RatesFX"]["InterestRate"].total,
        call.margins["RatesFX"]["Equity"].total,
    )
    psi = CAL26.risk_class_correlation[("InterestRate", "Equity")]
    assert m_ir == pytest.approx(60_000.0) and m_eq == pytest.approx(60_000.0)
    expected = math.sqrt(m_ir**2 + m_eq**2 + 2 * psi * m_ir * m_eq)
    assert call.total == pytest.approx(expected, rel=1e-12)
    # ψ(IR, Equity) = 0.07: 60,000 × sqrt(2 × 1.07) = 87,772.43
    assert call.total == pytest.approx(87_772.4330, rel=1e-8)
    # in separate product classes the margins add
    call2, _ = _margins([ir, _rec("Risk_Equity", 2000.0)])
    assert call2.total == pytest.approx(m_ir + m_eq, rel=1e-12)
    assert call2.product_totals == {"RatesFX": pytest.approx(m_ir), "Equity": pytest.approx(m_eq)}


def test_equity_and_commodity_together_use_psi() -> None:
    call, _ = _margins(
        [_rec("Risk_Equity", 1000.0, pc="Equity"), _rec("Risk_Commodity", 1000.0, pc="Equity")]
    )
    e, c = call.margins["Equity"]["Equity"].total, call.margins["Equity"]["Commodity"].total
    psi = CAL26.risk_class_correlation[("Equity", "Commodity")]
    assert call.total == pytest.approx(math.sqrt(e * e + c * c + 2 * psi * e * c), rel=1e-12)


# ------------------------------------------------------------------ bad input


def test_missing_bucket_names_row_and_column() -> None:
    records = [_rec("Risk_Equity", 1.0), _rec("Risk_Equity", 1.0, bucket=" ")]
    with pytest.raises(CrifError) as info:
        crif_from_records(records)
    assert (info.value.row, info.value.column) == (2, "Bucket")


def test_crif_without_bucket_column_fails_on_the_first_equity_row() -> None:
    text = (
        "ProductClass,RiskType,Qualifier,Label1,Label2,Amount\n"
        "RatesFX,Risk_FX,EUR,,,100\n"
        "Equity,Risk_Equity,A,,,100\n"
    )
    with pytest.raises(CrifError) as info:
        parse_crif_csv(text)
    assert (info.value.row, info.value.column) == (2, "Bucket")


def test_unknown_bucket_names_row_and_column() -> None:
    records = [
        _rec("Risk_Commodity", 1.0, bucket="3"),
        _rec("Risk_Commodity", 1.0, q="B", bucket="Residual"),  # commodities have none
    ]
    with pytest.raises(CrifError) as info:
        compute_simm(crif_from_records(records), CAL26)
    assert (info.value.row, info.value.column) == (2, "Bucket")
    assert "unknown Commodity bucket 'Residual'" in info.value.message


def test_bad_vol_expiry_and_fx_pair() -> None:
    with pytest.raises(CrifError) as info:
        crif_from_records([_rec("Risk_EquityVol", 1.0, l1="7y")])
    assert (info.value.row, info.value.column) == (1, "Label1")
    with pytest.raises(CrifError) as info:
        crif_from_records([_rec("Risk_FXVol", 1.0, q="EUR", l1="1y")])
    assert (info.value.row, info.value.column) == (1, "Qualifier")


def test_parameter_rows_are_still_refused() -> None:
    with pytest.raises(CrifError) as info:
        crif_from_records([_rec("Param_AddOnFixedAmount", 1.0)])
    assert info.value.column == "RiskType" and "unsupported" in info.value.message


# ------------------------------------------------------------------ credit


def _cq(
    amount: float, *, q: str = "ISSUER_A", bucket: str = "2", l1: str = "5y", **kw: Any
) -> dict[str, Any]:
    return _rec("Risk_CreditQ", amount, q=q, bucket=bucket, l1=l1, pc="Credit", **kw)


def test_credit_qualifying_one_delta() -> None:
    rw = _spec("CreditQualifying").params[10].delta["3"]
    m = _rc([_cq(100.0, bucket="3")], "CreditQualifying")
    assert m.delta == pytest.approx(rw * 100.0, rel=1e-12)
    assert m.delta == pytest.approx(8_400.0, rel=1e-12)  # RW 84 (bucket 3) × 100 per bp


def test_credit_same_issuer_across_tenors_and_concentration_per_issuer() -> None:
    spec = _spec("CreditQualifying")
    rw, thr = spec.params[10].delta["2"], spec.delta_thresholds["2"] * 1e6
    same, diff = (
        spec.same_different[("aggregate", "same")],
        spec.same_different[("aggregate", "different")],
    )
    a5, a10, b5 = 200_000.0, 140_000.0, 10_000.0
    m = _rc([_cq(a5), _cq(a10, l1="10y"), _cq(b5, q="ISSUER_B")], "CreditQualifying")
    cr_a = math.sqrt((a5 + a10) / thr)  # the issuer's tenors together
    ws = np.array([rw * a5 * cr_a, rw * a10 * cr_a, rw * b5])
    f = 1.0 / cr_a
    corr = np.array([[1.0, same, diff * f], [same, 1.0, diff * f], [diff * f, diff * f, 1.0]])
    assert m.delta == pytest.approx(math.sqrt(ws @ corr @ ws), rel=1e-12)
    # T = 170,000 per bp: CR_A = sqrt(340,000 / 170,000) = √2; RW 90; ρ 0.93 / 0.46:
    # WS_A = 1.8e7 √2, 1.26e7 √2; WS_B = 9e5; K² = 6.48e14 + 3.1752e14 + 8.1e11
    # + 1.86 × 4.536e14 + 0.92 × (1/√2) × √2 × 3.06e7 × 9e5 = 18.353628e14
    assert m.delta == pytest.approx(42_841_134.44, rel=1e-9)


def test_credit_buckets_gamma_and_residual() -> None:
    spec = _spec("CreditQualifying")
    p = spec.params[10]
    m = _rc(
        [
            _cq(100.0, bucket="1"),
            _cq(-50.0, q="ISSUER_B", bucket="2"),
            _cq(30.0, q="R1", bucket="Residual"),
            _cq(40.0, q="R2", bucket="Residual", l1="1y"),
        ],
        "CreditQualifying",
    )
    w1, w2 = p.delta["1"] * 100.0, p.delta["2"] * -50.0
    gamma = spec.inter[("1", "2")]
    rr = np.array([p.delta["Residual"] * 30.0, p.delta["Residual"] * 40.0])
    rho_r = spec.same_different[("residual", "different")]
    k_res = math.sqrt(rr @ rr + 2 * rho_r * rr[0] * rr[1])
    expected = math.sqrt(w1 * w1 + w2 * w2 + 2 * gamma * w1 * w2) + k_res
    assert m.delta == pytest.approx(expected, rel=1e-12)
    # 7,500 and -4,500, γ 0.38: sqrt(5.625e7 + 2.025e7 − 2.565e7) = sqrt(5.085e7) = 7,130.918;
    # residual 10,290 and 13,720, ρ 0.5: sqrt(105,884,100 + 188,238,400 + 141,178,800)
    # = sqrt(435,301,300) = 20,863.876
    assert m.delta == pytest.approx(7_130.918 + 20_863.876, rel=1e-7)


def test_credit_non_qualifying_same_by_label2_and_inter_bucket() -> None:
    spec = _spec("CreditNonQualifying")
    p = spec.params[10]

    def nq(amount: float, q: str, l2: str, bucket: str = "1") -> dict[str, Any]:
        r = _rec("Risk_CreditNonQ", amount, q=q, bucket=bucket, l1="5y", pc="Credit")
        r["Label2"] = l2
        return r

    same = _rc([nq(100.0, "A", "CMBX"), nq(100.0, "B", "CMBX")], "CreditNonQualifying")
    diff = _rc([nq(100.0, "A", "CMBX"), nq(100.0, "B", "ABX")], "CreditNonQualifying")
    w = p.delta["1"] * 100.0
    rho_s, rho_d = (
        spec.same_different[("aggregate", "same")],
        spec.same_different[("aggregate", "different")],
    )
    assert same.delta == pytest.approx(w * math.sqrt(2 + 2 * rho_s), rel=1e-12)
    assert diff.delta == pytest.approx(w * math.sqrt(2 + 2 * rho_d), rel=1e-12)
    assert same.delta == pytest.approx(28_000.0 * math.sqrt(3.66), rel=1e-12)  # ρ 0.83
    two = _rc([nq(100.0, "A", "CMBX"), nq(10.0, "B", "CMBX", bucket="2")], "CreditNonQualifying")
    w2 = p.delta["2"] * 10.0
    g = spec.inter[("1", "2")]
    assert two.delta == pytest.approx(math.sqrt(w * w + w2 * w2 + 2 * g * w * w2), rel=1e-12)


def test_credit_vega_and_curvature_with_negative_net_sum() -> None:
    spec = _spec("CreditQualifying")
    p = spec.params[10]
    same = spec.same_different[("aggregate", "same")]
    rows = [("1y", 3000.0), ("5y", -20000.0)]
    m = _rc(
        [_rec("Risk_CreditVol", v, q="ISSUER_A", bucket="4", l1=t, pc="Credit") for t, v in rows],
        "CreditQualifying",
    )
    vr = p.vega_weight("4") * np.array([v for _, v in rows])  # no σ, no HVR, below VT
    assert m.vega == pytest.approx(math.sqrt(vr @ vr + 2 * same * vr[0] * vr[1]), rel=1e-12)
    # VRW 0.76: VR = (2,280, -15,200); ρ 0.93:
    # sqrt(5,198,400 + 231,040,000 − 64,460,160) = sqrt(171,778,240) = 13,106.42
    assert m.vega == pytest.approx(13_106.42, rel=1e-6)
    cv = np.array([curvature_scaling(t, 10) * v for t, v in rows])
    k = math.sqrt(cv @ cv + 2 * same * same * cv[0] * cv[1])
    theta = min(cv.sum() / np.abs(cv).sum(), 0.0)  # |CVR| per tenor (ORE's risk-factor labels)
    expected = max(cv.sum() + lambda_curvature(theta) * k, 0.0)
    assert cv.sum() < 0 and expected > 0
    assert m.curvature == pytest.approx(expected, rel=1e-12)


def test_base_correlation_margin_type() -> None:
    spec = _spec("CreditQualifying")
    rw, rho = spec.base_corr_weight[10], spec.base_corr
    records = [
        _rec("Risk_BaseCorr", 500.0, q="CDX.NA.IG", bucket="", pc="Credit"),
        _rec("Risk_BaseCorr", -200.0, q="ITRAXX.EUR", bucket="", pc="Credit"),
        _cq(100.0, bucket="3"),
    ]
    call, report = _margins(records)
    m = call.margins["Credit"]["CreditQualifying"]
    ws = np.array([rw * 500.0, rw * -200.0])
    assert m.base_corr == pytest.approx(math.sqrt(ws @ ws + 2 * rho * ws[0] * ws[1]), rel=1e-12)
    # RW 10, ρ 0.29: sqrt(2.5e7 + 4e6 − 5.8e6) = 4,816.64
    assert m.base_corr == pytest.approx(4_816.6378, rel=1e-8)
    assert m.total == pytest.approx(8_400.0 + m.base_corr, rel=1e-12)
    rows = {
        (r.product_class, r.risk_class, r.margin_type): r.initial_margin
        for r in report.rows
        if r.side == "Call"
    }
    assert rows[("Credit", "CreditQualifying", "BaseCorr")] == pytest.approx(m.base_corr)
    assert rows[("Credit", "CreditQualifying", "All")] == pytest.approx(m.total)
    assert rows[("Credit", "All", "BaseCorr")] == pytest.approx(m.base_corr)


def test_credit_tenor_must_be_a_credit_tenor() -> None:
    with pytest.raises(CrifError) as info:
        crif_from_records([_cq(1.0, l1="6m")])
    assert (info.value.row, info.value.column) == (1, "Label1")

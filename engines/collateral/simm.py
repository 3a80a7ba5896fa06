"""ISDA SIMM initial margin from a CRIF and a calibration in ORE's XML format (pure core).

Split out of ``core.py`` because of its size; ``core.py`` re-exports the public names.

Method: ISDA SIMM Methodology (versions 2.4, 2.5A, 2.6), sections B (general), C/D (interest
rate), E (credit), F/G (equity), H (commodity), I (FX), J (concentration thresholds) and K
(aggregation). The parameters (risk weights,
correlations, concentration thresholds, currency groups, historical volatility ratios) are read
from a calibration file in the Open Source Risk Engine's ``simmcalibration.xml`` format (see
``data/NOTICE.md``); nothing numeric is hard-coded here except what the methodology fixes for
every version: the curvature scaling function and λ.

Formulas (s = net sensitivity per risk factor, in the calculation currency):

* delta, interest rate, per currency b: ``WS_k = RW_k · s_k · CR_b``,
  ``CR_b = max(1, sqrt(|Σ s| / T_b))`` (Σ over IR curve and inflation deltas, not cross-currency
  basis), ``K_b = sqrt(Σ_kl ρ_kl φ_kl WS_k WS_l)`` with the tenor correlation ρ, the sub-curve
  correlation φ (1 on the same sub-curve), ρ_inflation and ρ_xccy for those factors;
  across currencies ``Δ = sqrt(Σ K_b² + Σ_{b≠c} γ g_bc S_b S_c)``, ``S_b = clamp(Σ WS, ±K_b)``,
  ``g_bc = min(CR_b, CR_c) / max(CR_b, CR_c)``;
* vega, interest rate: ``VR_k = VRW · s_k · VCR_b`` (inflation volatility summed over expiries into
  one factor per currency), same aggregation with ``VCR``;
* curvature, interest rate: ``CVR_k = Σ_j SF(t_j) s_kj`` with ``SF(t) = ½ min(1, 14 d / t)`` at
  10-day MPOR (and a tenth of it at 1-day MPOR, as in ORE's expected reports),
  ``K_b = sqrt(Σ_kl ρ_kl² CVR_k CVR_l)``, across currencies with ``γ²``;
  ``θ = min(Σ CVR / Σ |CVR|, 0)``, ``λ = (Φ⁻¹(0.995)² − 1)(1 + θ) − θ``,
  ``curvature = max(Σ CVR + λ K, 0) / HVR_IR²``;
* FX delta (one bucket): ``WS_k = RW(group_k, group_calc) · s_k · CR_k``,
  ``CR_k = max(1, sqrt(|s_k| / T_k))``, correlations by volatility group of the two currencies and
  of the calculation currency; the calculation currency's own FX delta carries no risk;
* FX vega and curvature (one bucket of currency pairs, :func:`_fx_vol`):
  ``σ_k = RW_FX(pair) √(365/14) / Φ⁻¹(0.99)``, ``VR_k = VRW · HVR · σ_k s_k · VCR_k``, ρ the
  calibration's FX volatility correlation; ``CVR_k = σ_k Σ_j SF(t_j) s_kj``;
* Credit (qualifying, non-qualifying), Equity, Commodity: one generic bucketed aggregation
  (:func:`_bucketed`) parameterised by the class's calibration (:class:`BucketedClass`):
  ``WS_k = RW_b · s_k · CR_k`` (CR per qualifier in its bucket), ``K_b`` with ρ f_kl,
  ``Δ = sqrt(Σ K_b² + Σ_{b≠c} γ_bc S_b S_c) + K_Residual``; vega with ``σ_k = RW_b √(365/14) /
  Φ⁻¹(0.99)`` and HVR (not for credit), curvature with ρ², γ², θ/λ and the Residual bucket on
  its own; credit qualifying's base correlation as its own margin type ``BaseCorr``;
* at 1-day MPOR concentration is disabled (every CR is 1; SIMM technical paper I.4) and the
  risk weights, σ and curvature scaling are the one-day ones;
* per risk class ``SIMM_r = Δ + vega + curvature``; per product class
  ``sqrt(Σ_rs ψ_rs SIMM_r SIMM_s)``; total = Σ over product classes. The report's
  ``(ProductClass, All, MarginType)`` rows aggregate that margin type over the risk classes with
  the same ψ (as ORE does), ``(All, All, MarginType)`` sums those over product classes;
  ``(All, RiskClass, ·)`` rows sum over product classes.

Sides and regulations (ORE's ``enforceIMRegulations``, see :func:`regulation_sets`): the Call
side uses the CRIF's amounts and ``collect_regulations``, the Post side the negated amounts and
``post_regulations``. A row without a regulation on a side is dropped once any row of its
portfolio names one (on either side), a row naming ``Excluded`` is dropped, SEC is computed on
the SEC and the CFTC rows, overlapping regulation sets are split as ORE splits them; SIMM is
computed per regulation set and the worst case (largest total) is reported, a tie going to the
first regulation in ORE's order (:data:`REGULATION_ORDER`: CFTC before SEC, ESA before USPR,
KFSC before HKMA). Report rows follow ORE's ``simm.csv`` layout (and
``regulation_breakdown_simm.csv`` for every set); rows whose margin is exactly zero are left out,
as ORE does.

Column-wise: a CRIF is read into categorical columns (codes into the few distinct values), so
validation runs once per distinct value and names the first bad row and column as a row-by-row
pass would; rows net into risk factors with one ``bincount`` per (portfolio, side, regulation),
and the margin maths runs on the factors. 10⁵ rows: ``loadtest/collateral_bench.py``.

Supported risk types: Risk_IRCurve, Risk_Inflation, Risk_XCcyBasis, Risk_IRVol,
Risk_InflationVol, Risk_FX, Risk_FXVol, Risk_Equity, Risk_EquityVol, Risk_Commodity,
Risk_CommodityVol, Risk_CreditQ, Risk_CreditVol, Risk_BaseCorr, Risk_CreditNonQ,
Risk_CreditVolNonQ (the bucketed ones need the CRIF's Bucket column). The parameter rows
(Param_ProductClassMultiplier, Param_AddOnNotionalFactor, Param_AddOnFixedAmount, Notional,
PV) are recognised and refused with a :class:`CrifError`, never priced wrongly.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import islice
from operator import itemgetter, methodcaller
from statistics import NormalDist
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
T = TypeVar("T")

IR = "InterestRate"
FX = "FX"
EQUITY = "Equity"
COMMODITY = "Commodity"
CREDIT_Q = "CreditQualifying"
CREDIT_NQ = "CreditNonQualifying"
RISK_CLASS_ORDER = (IR, "CreditQualifying", "CreditNonQualifying", "Equity", "Commodity", FX)
PRODUCT_CLASS_ORDER = ("RatesFX", "Credit", "Equity", "Commodity")
MARGIN_TYPE_ORDER = ("Delta", "Vega", "Curvature", "BaseCorr")
SIDES = ("Call", "Post")
IR_TENORS = ("2w", "1m", "3m", "6m", "1y", "2y", "3y", "5y", "10y", "15y", "20y", "30y")
UNSPECIFIED = "Unspecified"

#: risk type → (risk class, margin type) for the risk types this engine prices.
SUPPORTED_RISK_TYPES: Mapping[str, tuple[str, str]] = {
    "Risk_IRCurve": (IR, "Delta"),
    "Risk_Inflation": (IR, "Delta"),
    "Risk_XCcyBasis": (IR, "Delta"),
    "Risk_IRVol": (IR, "Vega"),
    "Risk_InflationVol": (IR, "Vega"),
    "Risk_FX": (FX, "Delta"),
    "Risk_FXVol": (FX, "Vega"),
    "Risk_Equity": (EQUITY, "Delta"),
    "Risk_EquityVol": (EQUITY, "Vega"),
    "Risk_Commodity": (COMMODITY, "Delta"),
    "Risk_CommodityVol": (COMMODITY, "Vega"),
    "Risk_CreditQ": (CREDIT_Q, "Delta"),
    "Risk_CreditVol": (CREDIT_Q, "Vega"),
    "Risk_BaseCorr": (CREDIT_Q, "BaseCorr"),
    "Risk_CreditNonQ": (CREDIT_NQ, "Delta"),
    "Risk_CreditVolNonQ": (CREDIT_NQ, "Vega"),
}
#: The bucketed risk classes other than interest rate: risk class → (delta type, vega type).
BUCKETED_CLASSES: Mapping[str, tuple[str, str]] = {
    CREDIT_Q: ("Risk_CreditQ", "Risk_CreditVol"),
    CREDIT_NQ: ("Risk_CreditNonQ", "Risk_CreditVolNonQ"),
    EQUITY: ("Risk_Equity", "Risk_EquityVol"),
    COMMODITY: ("Risk_Commodity", "Risk_CommodityVol"),
}
BUCKETED_TYPES = tuple(t for pair in BUCKETED_CLASSES.values() for t in pair)
#: Volatility risk types other than interest rate: one factor per qualifier (and bucket),
#: summed over expiries (Label1, a SIMM tenor), curvature from the same rows.
NON_IR_VOL_TYPES = ("Risk_EquityVol", "Risk_CommodityVol", "Risk_FXVol")
#: Credit risk types: one factor per (qualifier, bucket, tenor, Label2); tenors SIMM's credit ones.
CREDIT_TYPES = ("Risk_CreditQ", "Risk_CreditVol", "Risk_CreditNonQ", "Risk_CreditVolNonQ")
CREDIT_TENORS = ("1y", "2y", "3y", "5y", "10y")
RESIDUAL = "Residual"
#: SIMM risk types that exist in the CRIF standard but are not priced here (yet).
UNSUPPORTED_RISK_TYPES = frozenset(
    {
        "Param_ProductClassMultiplier",
        "Param_AddOnNotionalFactor",
        "Param_AddOnFixedAmount",
        "Notional",
        "PV",
    }
)
REQUIRED_COLUMNS = ("ProductClass", "RiskType", "Qualifier", "Label1", "Label2", "Amount")
#: The CRIF columns read as categorical (few distinct values), in the order they are grouped.
CATEGORICAL_COLUMNS = (
    "PortfolioID",
    "ProductClass",
    "RiskType",
    "Qualifier",
    "Bucket",
    "Label1",
    "Label2",
    "AmountCurrency",
    "collect_regulations",
    "post_regulations",
)

# Φ⁻¹(99.5%): SIMM methodology, curvature margin (λ).
_Z995 = NormalDist().inv_cdf(0.995)
# Φ⁻¹(99%): SIMM B.10, the volatility σ = RW √(365/14) / α behind an equity, commodity or FX vega.
_Z99 = NormalDist().inv_cdf(0.99)


def sigma_multiplier(mpor_days: int) -> float:
    """``σ / RW = √(365 / (1.4 · MPOR)) / Φ⁻¹(0.99)``: √(365/14)/α at 10 days (SIMM B.10), the
    technical paper's one-day variant (section I.2) at 1 day."""
    return math.sqrt(365.0 / (1.4 * mpor_days)) / _Z99


def concentration_enabled(mpor_days: int) -> bool:
    """SIMM technical paper I.4: the one-day calibration disables concentration risk."""
    return mpor_days != 1


class CrifError(ValueError):
    """Bad CRIF or calibration input; ``row`` is the 1-based data row, ``column`` the column.

    The REST layer answers 400 with both, so a user can find the cell. ``row`` is None when the
    problem is not a row's (a missing column, an unknown calibration version).
    """

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.message = message
        self.row = row
        self.column = column


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True, slots=True)
class IrParameters:
    """Interest-rate risk weights for one MPOR (SIMM D.1 33–35)."""

    delta: Mapping[tuple[str, str], float]  # (currency group, tenor) → RW
    vega: float
    hvr: float
    inflation: float
    xccy_basis: float


@dataclass(frozen=True, slots=True)
class FxParameters:
    """FX risk weights for one MPOR (SIMM I.1)."""

    delta: Mapping[tuple[str, str], float]  # (group of the currency, group of calc currency)
    vega: float
    hvr: float


@dataclass(frozen=True, slots=True)
class BucketedParameters:
    """Risk weights of one bucketed risk class for one MPOR (SIMM F–H): per bucket."""

    delta: Mapping[str, float]  # bucket → RW
    vega: Mapping[str, float]  # bucket → VRW; "" → the class's one VRW when it is flat
    hvr: float

    def vega_weight(self, bucket: str) -> float:
        return self.vega[bucket] if bucket in self.vega else self.vega[""]


@dataclass(frozen=True, slots=True)
class BucketedClass:
    """A risk class whose qualifiers fall into CRIF buckets (Equity, Commodity): risk weights
    per MPOR, intra-bucket ρ per bucket (between different qualifiers), inter-bucket γ, and
    concentration thresholds per bucket (USD mm: delta per 1 % of price or per bp of spread;
    vega), a flat one under ``""``.

    Credit (SIMM E) chooses ρ otherwise (:attr:`intra_rule`): ``same_different`` holds the
    calibration's ``("aggregate" | "residual", "same" | "different")`` correlations; its vega
    is not scaled by a σ (:attr:`vega_sigma`), and Credit Qualifying has the base-correlation
    risk weight per MPOR and correlation.
    """

    params: Mapping[int, BucketedParameters]
    intra: Mapping[str, float]
    inter: Mapping[tuple[str, str], float]
    delta_thresholds: Mapping[str, float]
    vega_thresholds: Mapping[str, float]
    #: "bucket": ρ_b between different qualifiers; "issuer": same/different qualifier
    #: (credit qualifying); "label2": same/different Label2 (credit non-qualifying, as ORE
    #: reads "same underlying names"); in the Residual bucket both credit rules go by qualifier
    intra_rule: str = "bucket"
    same_different: Mapping[tuple[str, str], float] = field(default_factory=dict)
    vega_sigma: bool = True
    base_corr_weight: Mapping[int, float] = field(default_factory=dict)
    base_corr: float = math.nan

    def vega_threshold(self, bucket: str) -> float:
        return self.vega_thresholds.get(bucket, self.vega_thresholds.get("", math.nan))


@dataclass(frozen=True, slots=True)
class SimmCalibration:
    """One ``<SIMMCalibration>`` node: the parameters this engine uses, typed and frozen."""

    names: tuple[str, ...]
    ir: Mapping[int, IrParameters]
    ir_currency_groups: Mapping[str, str]
    ir_tenor_correlation: Mapping[tuple[str, str], float]
    ir_sub_curves: float
    ir_inflation: float
    ir_xccy_basis: float
    ir_outer: float
    ir_delta_thresholds: Mapping[str, float]  # concentration group → USD mm per bp
    ir_vega_thresholds: Mapping[str, float]
    ir_threshold_groups: Mapping[str, str]
    fx: Mapping[int, FxParameters]
    fx_currency_groups: Mapping[str, str]
    fx_correlation: Mapping[tuple[str, str, str], float]  # (calc group, group1, group2)
    fx_delta_thresholds: Mapping[str, float]
    fx_threshold_groups: Mapping[str, str]
    risk_class_correlation: Mapping[tuple[str, str], float]
    #: FX vega: thresholds per pair category ("1" both currencies in concentration category 1,
    #: "2" categories 1 and 2, "3" 1 and 3, "4" 2 and 2, "5" 2 and 3, "6" 3 and 3), and the
    #: correlation between different pairs
    fx_vega_thresholds: Mapping[str, float] = field(default_factory=dict)
    fx_vol_correlation: float = math.nan
    #: Equity, Commodity (the risk classes present in the file)
    bucketed: Mapping[str, BucketedClass] = field(default_factory=dict)

    def ir_group(self, currency: str) -> str:
        return self.ir_currency_groups.get(currency, self.ir_currency_groups.get("Other", "1"))

    def fx_group(self, currency: str) -> str:
        return self.fx_currency_groups.get(currency, self.fx_currency_groups.get("Other", "2"))


def _f(node: ET.Element | None, what: str) -> float:
    if node is None or node.text is None:
        raise CrifError(f"calibration: missing {what}", column="calibration")
    try:
        return float(node.text)
    except ValueError as exc:
        raise CrifError(f"calibration: {what} is not a number", column="calibration") from exc


def _by_mpor(parent: ET.Element, tag: str) -> dict[int, ET.Element]:
    return {int(n.get("mporDays", "10")): n for n in parent.findall(tag)}


def _currency_lists(node: ET.Element | None) -> dict[str, str]:
    if node is None:
        return {}
    return {(c.text or "").strip(): c.get("bucket", "") for c in node.findall("Currency")}


def _parse_bucketed(node: ET.Element | None, name: str) -> BucketedClass | None:
    """An ``<Equity>`` or ``<Commodity>`` node (None when the file has none)."""
    if node is None:
        return None
    rw, corr, thr = (
        node.find("RiskWeights"),
        node.find("Correlations"),
        node.find("ConcentrationThresholds"),
    )
    if rw is None or corr is None or thr is None:
        raise CrifError(f"calibration: {name} node incomplete", column="calibration")
    vegas, hvrs = _by_mpor(rw, "Vega"), _by_mpor(rw, "HistoricalVolatilityRatio")
    credit = name in (CREDIT_Q, CREDIT_NQ)
    params = {
        mpor: BucketedParameters(
            delta={w.get("bucket", ""): _f(w, f"{name} delta weight") for w in d},
            vega={w.get("bucket", ""): _f(w, f"{name} vega weight") for w in vegas.get(mpor, [])},
            hvr=1.0 if credit else _f(hvrs.get(mpor), f"{name} historical volatility ratio"),
        )
        for mpor, d in _by_mpor(rw, "Delta").items()
    }
    intra = corr.findall("IntraBucket/Correlation")
    base = corr.find("BaseCorrelation")
    return BucketedClass(
        params=params,
        intra={
            c.get("bucket", ""): _f(c, f"{name} correlation")
            for c in intra
            if c.get("bucket") is not None
        },
        intra_rule={CREDIT_Q: "issuer", CREDIT_NQ: "label2"}.get(name, "bucket"),
        same_different={
            (c.get("label1", ""), c.get("label2", "")): _f(c, f"{name} correlation")
            for c in intra
            if c.get("bucket") is None
        },
        vega_sigma=not credit,
        base_corr_weight={
            mpor: _f(w, "base correlation weight")
            for mpor, w in _by_mpor(rw, "BaseCorrelation").items()
        },
        base_corr=_f(base, "base correlation correlation") if base is not None else math.nan,
        inter={
            (c.get("label1", ""), c.get("label2", "")): _f(c, f"{name} correlation")
            for c in corr.findall("InterBucket/Correlation")
        },
        delta_thresholds={
            t.get("bucket", ""): _f(t, "threshold") for t in thr.findall("Delta/Threshold")
        },
        vega_thresholds={
            t.get("bucket", ""): _f(t, "threshold") for t in thr.findall("Vega/Threshold")
        },
    )


def _parse_calibration(node: ET.Element) -> SimmCalibration:
    names = tuple((n.text or "").strip() for n in node.findall("VersionNames/Name"))
    ir_node = node.find("InterestRate")
    fx_node = node.find("FX")
    if ir_node is None or fx_node is None:
        raise CrifError("calibration: InterestRate and FX nodes are required", column="calibration")
    rw = ir_node.find("RiskWeights")
    if rw is None:
        raise CrifError("calibration: InterestRate/RiskWeights missing", column="calibration")
    deltas, vegas, hvrs = (
        _by_mpor(rw, "Delta"),
        _by_mpor(rw, "Vega"),
        _by_mpor(rw, "HistoricalVolatilityRatio"),
    )
    infl, xccy = _by_mpor(rw, "Inflation"), _by_mpor(rw, "XCcyBasis")
    ir: dict[int, IrParameters] = {}
    for mpor, d in deltas.items():
        ir[mpor] = IrParameters(
            delta={(w.get("bucket", ""), w.get("label1", "")): _f(w, "IR delta weight") for w in d},
            vega=_f(vegas[mpor].find("Weight"), "IR vega weight"),
            hvr=_f(hvrs.get(mpor), "IR historical volatility ratio"),
            inflation=_f(infl.get(mpor), "IR inflation weight"),
            xccy_basis=_f(xccy.get(mpor), "IR XCcyBasis weight"),
        )
    corr = ir_node.find("Correlations")
    thr = ir_node.find("ConcentrationThresholds")
    if corr is None or thr is None:
        raise CrifError("calibration: IR correlations/thresholds missing", column="calibration")
    tenor_corr = {
        (c.get("label1", ""), c.get("label2", "")): _f(c, "IR correlation")
        for c in corr.findall("IntraBucket/Correlation")
    }
    fx_rw = fx_node.find("RiskWeights")
    fx_corr = fx_node.find("Correlations")
    fx_thr = fx_node.find("ConcentrationThresholds")
    if fx_rw is None or fx_corr is None or fx_thr is None:
        raise CrifError("calibration: FX node incomplete", column="calibration")
    fdel, fveg, fhvr = (
        _by_mpor(fx_rw, "Delta"),
        _by_mpor(fx_rw, "Vega"),
        _by_mpor(fx_rw, "HistoricalVolatilityRatio"),
    )
    fx = {
        mpor: FxParameters(
            delta={(w.get("label1", ""), w.get("label2", "")): _f(w, "FX weight") for w in d},
            vega=_f(fveg[mpor].find("Weight"), "FX vega weight"),
            hvr=_f(fhvr.get(mpor), "FX historical volatility ratio"),
        )
        for mpor, d in fdel.items()
    }
    rcc = {
        (c.get("label1", ""), c.get("label2", "")): _f(c, "risk class correlation")
        for c in node.findall("RiskClassCorrelations/Correlation")
    }
    return SimmCalibration(
        names=names,
        ir=ir,
        ir_currency_groups=_currency_lists(rw.find("CurrencyLists")),
        ir_tenor_correlation=tenor_corr,
        ir_sub_curves=_f(corr.find("SubCurves"), "IR SubCurves correlation"),
        ir_inflation=_f(corr.find("Inflation"), "IR Inflation correlation"),
        ir_xccy_basis=_f(corr.find("XCcyBasis"), "IR XCcyBasis correlation"),
        ir_outer=_f(corr.find("Outer"), "IR Outer correlation"),
        ir_delta_thresholds={
            t.get("bucket", ""): _f(t, "threshold") for t in thr.findall("Delta/Threshold")
        },
        ir_vega_thresholds={
            t.get("bucket", ""): _f(t, "threshold") for t in thr.findall("Vega/Threshold")
        },
        ir_threshold_groups=_currency_lists(thr.find("CurrencyLists")),
        fx=fx,
        fx_currency_groups=_currency_lists(fx_rw.find("CurrencyLists")),
        fx_correlation={
            (c.get("bucket", ""), c.get("label1", ""), c.get("label2", "")): _f(c, "FX correlation")
            for c in fx_corr.findall("IntraBucket/Correlation")
        },
        fx_delta_thresholds={
            t.get("bucket", ""): _f(t, "threshold") for t in fx_thr.findall("Delta/Threshold")
        },
        fx_threshold_groups=_currency_lists(fx_thr.find("CurrencyLists")),
        risk_class_correlation=rcc,
        fx_vega_thresholds={
            t.get("bucket", ""): _f(t, "threshold") for t in fx_thr.findall("Vega/Threshold")
        },
        fx_vol_correlation=(
            _f(fx_corr.find("Volatility"), "FX volatility correlation")
            if fx_corr.find("Volatility") is not None
            else math.nan
        ),
        bucketed={
            rc: parsed
            for rc in BUCKETED_CLASSES
            if (parsed := _parse_bucketed(node.find(rc), rc)) is not None
        },
    )


def parse_simm_calibration(xml_text: str | bytes) -> dict[str, SimmCalibration]:
    """Parse an ORE ``simmcalibration.xml``: every version name → its calibration.

    A name listed by several ``<SIMMCalibration>`` nodes maps to the last one (ORE: later
    definitions override earlier ones).
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise CrifError(f"calibration: not valid XML: {exc}", column="calibration") from exc
    out: dict[str, SimmCalibration] = {}
    for node in root.iter("SIMMCalibration"):
        cal = _parse_calibration(node)
        for name in cal.names:
            out[name] = cal
    if not out:
        raise CrifError("calibration: no SIMMCalibration with a version name", column="calibration")
    return out


#: Bundled ORE calibration files (data/calibration/), in the order a later one overrides
#: an earlier one for shared names such as "latest".
BUNDLED_CALIBRATIONS = (
    "simmcalibration_2.4.xml",
    "simmcalibration_2.5A.xml",
    "simmcalibration_2.6.xml",
)


def read_bundled_data(name: str) -> bytes:
    """Read a file bundled in ``engines/collateral/data`` (the only I/O this core does)."""
    return resources.files("engines.collateral").joinpath("data", name).read_bytes()


@functools.cache
def bundled_calibrations() -> Mapping[str, SimmCalibration]:
    """Every bundled calibration by version name, parsed once per process (read-only after)."""
    known: dict[str, SimmCalibration] = {}
    for name in BUNDLED_CALIBRATIONS:
        known.update(parse_simm_calibration(read_bundled_data(f"calibration/{name}")))
    return known


def bundled_calibration(version: str) -> SimmCalibration:
    """ORE's official calibration for ``version`` (2.4, 2.3.8, 2.5A, 2.6, 2.5.6, latest)."""
    known = bundled_calibrations()
    if version not in known:
        raise CrifError(
            f"unknown SIMM calibration version {version!r}; known: {', '.join(sorted(known))}",
            column="version",
        )
    return known[version]


def select_calibration(
    calibrations: Mapping[str, SimmCalibration], version: str
) -> SimmCalibration:
    """Pick ``version`` from a parsed user calibration file, or fail naming it."""
    if version not in calibrations:
        raise CrifError(
            f"unknown SIMM calibration version {version!r}; "
            f"file has: {', '.join(sorted(calibrations))}",
            column="version",
        )
    return calibrations[version]


# --------------------------------------------------------------------------- CRIF


def _regulation_set(text: str) -> tuple[str, ...]:
    """``"ESA,USPR"`` → the names in ORE's regulation order; commas, brackets and spaces
    separate names as in ORE's ``parseRegulationString``, quotes are ignored."""
    cleaned = text.replace('"', " ")
    for sep in ",[]":
        cleaned = cleaned.replace(sep, " ")
    return tuple(sorted(set(cleaned.split()), key=regulation_rank))


@dataclass(frozen=True, slots=True, eq=False)
class Categorical(Generic[T]):
    """A column of few distinct values as integer ``codes`` into sorted ``categories``.

    pandas' categorical layout: a CRIF repeats a handful of risk types, currencies, tenors and
    regulation sets over 10⁵ rows, so validation runs once per distinct value and grouping runs
    on integers, never per row in Python.
    """

    codes: IntArray
    categories: tuple[T, ...]

    def isin(self, values: Iterable[T]) -> BoolArray:
        """Rows whose value is one of ``values``."""
        wanted = set(values)
        return _code_table(self.categories, wanted.__contains__)[self.codes]

    def value(self, row: int) -> T:
        """The value of 0-based ``row``."""
        return self.categories[int(self.codes[row])]


def _code_table(categories: Sequence[T], test: Callable[[T], object]) -> BoolArray:
    """``test`` of every category, indexable by a column's codes (a lookup, not a search)."""
    return np.fromiter(map(bool, map(test, categories)), np.bool_, len(categories))


def _categorical(values: Sequence[object], clean: Callable[[object], T]) -> Categorical[T]:
    """Codes of ``clean(value)`` for every value, categories sorted.

    Distinct raw values are found with a dict (C speed), each cleaned once, and merged where
    cleaning made them equal (``"USD"`` and ``" USD"``). Values other than strings and None are
    made text row by row first (a false one None): JSON's ``1``, ``1.0`` and ``true`` are equal
    as dict keys but not as text. ``clean`` sees text or None.
    """
    if not set(map(type, values)) <= {str, type(None)}:
        values = [v if type(v) is str else (str(v) if v else None) for v in values]
    distinct = dict.fromkeys(values)
    index = dict(zip(distinct, range(len(distinct)), strict=True))
    raw = np.fromiter(map(index.__getitem__, values), np.int64, len(values))
    cleaned = [clean(v) for v in index]
    categories = sorted(set(cleaned))  # type: ignore[type-var]
    position = {c: i for i, c in enumerate(categories)}
    remap = np.array([position[c] for c in cleaned], dtype=np.int64)
    return Categorical(remap[raw], tuple(categories))


def _text(default: str = "") -> Callable[[object], str]:
    """A CRIF cell as text: missing or empty → ``default``, then stripped."""
    return lambda v: str(v or default).strip()


def _floats(values: Sequence[object]) -> tuple[FloatArray, BoolArray | None]:
    """``float(v)`` per value (Python's parser, as a user expects: ``"1e3"``, ``" 12 "``), and
    the rows that are not numbers (None when all are)."""
    try:
        return np.fromiter(map(float, values), np.float64, len(values)), None  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        pass
    out = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=np.bool_)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            bad[i] = True
    return out, bad


@dataclass(frozen=True, slots=True, eq=False)
class Crif:
    """A validated CRIF, column-wise (equal-length numpy arrays and categorical columns).

    ``amount`` is already in the calculation currency. ``row`` holds the 1-based data row of each
    record, so errors found later still name the row.
    """

    row: IntArray
    portfolio: Categorical[str]
    product_class: Categorical[str]
    risk_type: Categorical[str]
    qualifier: Categorical[str]
    label1: Categorical[str]
    label2: Categorical[str]
    amount: FloatArray
    collect_regulations: Categorical[tuple[str, ...]]
    post_regulations: Categorical[tuple[str, ...]]
    calculation_currency: str
    #: the Bucket column ("" where the CRIF has none): required by the bucketed risk classes
    bucket: Categorical[str]

    def __len__(self) -> int:
        return int(self.amount.shape[0])


#: One row check: the rows it fails, the column it names, the message for a failing row.
_Check = tuple[BoolArray, str, Callable[[int], str]]


def _failing(column: Categorical[T], bad: Callable[[T], bool]) -> BoolArray | None:
    """Rows whose category fails ``bad`` (decided once per category); None when none does."""
    table = _code_table(column.categories, bad)
    return table[column.codes] if table.any() else None


def _first_error(n: int, checks: Sequence[_Check | None]) -> CrifError | None:
    """The error a row-by-row pass would raise first: the lowest failing row, and on that row
    the first check in ``checks`` order (which is the order a reader of the row meets them)."""
    firsts = [int(np.argmax(c[0])) for c in checks if c is not None and c[0].any()]
    if not firsts:
        return None
    i = min(firsts)
    for check in checks:
        if check is not None and check[0][i]:
            return CrifError(check[2](i), row=i + 1, column=check[1])
    raise AssertionError("unreachable: a failing row fails a check")


#: Rows grouped by their categorical cells: the group of each row (numbered in order of first
#: appearance) and each group's cells (text or None), in group order.
_Grouped = tuple[IntArray, Sequence[Sequence[str | None]]]


@dataclass(frozen=True, slots=True)
class _Cells:
    """CRIF cells from CSV rows or JSON records: ``n`` rows; ``has(name)`` whether any row has
    the column; ``column(name)`` its cells (None where a row lacks it); ``grouped(names)`` the
    rows grouped by their cells of ``names`` (:data:`_Grouped`), or None when the rows are too
    irregular for that fast path or a cell is not text."""

    n: int
    has: Callable[[str], bool]
    column: Callable[[str], Sequence[object]]
    grouped: Callable[[Sequence[str]], _Grouped | None]


def _group_tuples(keys: list[tuple[object, ...]] | None) -> _Grouped | None:
    """Rows grouped by their tuple of cells; None when a cell is unhashable or not text (JSON
    ``1``, ``1.0`` and ``true`` are equal as dict keys but not as text)."""
    if keys is None:
        return None
    try:
        distinct = dict.fromkeys(keys)
    except TypeError:  # an unhashable JSON value
        return None
    if not set(map(type, itertools.chain.from_iterable(distinct))) <= {str, type(None)}:
        return None
    index = dict(zip(distinct, range(len(distinct)), strict=True))
    return np.fromiter(map(index.__getitem__, keys), np.int64, len(keys)), list(distinct)  # type: ignore[arg-type]


#: Joins a row's categorical cells (text) into one grouping key: the ASCII unit separator.
_SEP = "\x1f"


def _group_joined(keys: list[str], width: int) -> _Grouped | None:
    """Rows grouped by their ``width`` text cells joined with :data:`_SEP` (one string per row
    hashes and compares faster than a tuple of ten, and the garbage collector does not track
    it); None when a cell holds the separator itself (the join would not be one-to-one)."""
    distinct = dict.fromkeys(keys)
    if sum(map(methodcaller("count", _SEP), distinct)) != len(distinct) * (width - 1):
        return None
    index = dict(zip(distinct, range(len(distinct)), strict=True))
    combo = np.fromiter(map(index.__getitem__, keys), np.int64, len(keys))
    return combo, list(map(methodcaller("split", _SEP), distinct))


def _categoricals(cells: _Cells, clean: Mapping[str, Callable[[object], Any]]) -> dict[str, Any]:
    """Every categorical column (``clean``: name → how a cell becomes a value).

    A CRIF row's categorical cells together repeat even more than each alone (a 10⁵-row CRIF has
    some thousand distinct combinations), so the rows are factorised once as tuples, and each
    column from the distinct tuples. Falls back to one column at a time when a cell is not text
    (JSON ``1`` and ``true`` are equal as dict keys, lists are unhashable) or the records differ
    in their columns.
    """
    names = [name for name in clean if cells.has(name)]
    out: dict[str, Any] = {
        name: Categorical(np.zeros(cells.n, dtype=np.int64), (f(None),))
        for name, f in clean.items()
        if name not in names
    }
    grouped = cells.grouped(names) if len(names) > 1 else None
    if grouped is None:
        return out | {name: _categorical(cells.column(name), clean[name]) for name in names}
    combo, distinct = grouped
    per_column = list(zip(*distinct, strict=True)) or [()] * len(names)  # each column's cells
    for name, values in zip(names, per_column, strict=True):
        per_combo = _categorical(values, clean[name])
        out[name] = Categorical(per_combo.codes[combo], per_combo.categories)
    return out


def _crif_from_cells(
    cells: _Cells, calculation_currency: str, fx_rates: Mapping[str, float] | None
) -> Crif:
    """Validate CRIF cells into a :class:`Crif` or raise the first row's :class:`CrifError`."""
    regulations = lambda v: _regulation_set(str(v or ""))  # noqa: E731
    clean: dict[str, Callable[[object], Any]] = {
        "PortfolioID": _text(UNSPECIFIED),
        "ProductClass": _text(),
        "RiskType": _text(),
        "Qualifier": _text(),
        "Bucket": _text(),
        "Label1": _text(),
        "Label2": _text(),
        "AmountCurrency": _text(calculation_currency),
        "collect_regulations": regulations,
        "post_regulations": regulations,
    }
    cats = _categoricals(cells, {name: clean[name] for name in CATEGORICAL_COLUMNS})
    rt: Categorical[str] = cats["RiskType"]
    qualifier: Categorical[str] = cats["Qualifier"]
    label1: Categorical[str] = cats["Label1"]
    bucket: Categorical[str] = cats["Bucket"]
    product_class: Categorical[str] = cats["ProductClass"]
    raw_amount = cells.column("Amount")
    amount, not_number = _floats(raw_amount)
    n = cells.n

    def amount_text(what: str) -> Callable[[int], str]:
        return lambda i: f"amount {raw_amount[i]!r} is {what}"

    def risk_type_text(i: int) -> str:
        name = rt.value(i)
        what = "unsupported" if name in UNSUPPORTED_RISK_TYPES else "unknown"
        return f"{what} risk type {name!r}"

    bad_rt = _failing(rt, lambda c: c not in SUPPORTED_RISK_TYPES)
    tenor_keyed = rt.isin(("Risk_IRCurve", "Risk_IRVol", "Risk_InflationVol", *NON_IR_VOL_TYPES))
    bucketed = rt.isin(BUCKETED_TYPES)
    bad_credit_tenor = _failing(label1, lambda c: c not in CREDIT_TENORS)
    no_bucket = _failing(bucket, lambda c: not c)
    bad_pair = _failing(qualifier, lambda c: not (len(c) == 6 and c.isalpha()))
    bad_tenor = _failing(label1, lambda c: c not in IR_TENORS)
    bad_pc = _failing(product_class, lambda c: c not in PRODUCT_CLASS_ORDER)
    bad_q = _failing(qualifier, lambda c: not c)
    not_finite = ~np.isfinite(amount) & (True if not_number is None else ~not_number)
    checks: list[_Check | None] = [
        None if bad_rt is None else (bad_rt, "RiskType", risk_type_text),
        None if not_number is None else (not_number, "Amount", amount_text("not a number")),
        (not_finite, "Amount", amount_text("not finite")),
        *_convert_currencies(
            amount, cats["AmountCurrency"], cells.column, calculation_currency, fx_rates
        ),
        None if bad_q is None else (bad_q, "Qualifier", lambda i: "empty qualifier"),
        None if bad_pair is None else (
            bad_pair & rt.isin(("Risk_FXVol",)), "Qualifier",
            lambda i: f"FX volatility qualifier {qualifier.value(i)!r} is not a currency pair",
        ),
        None if no_bucket is None else (
            no_bucket & bucketed, "Bucket", lambda i: f"no bucket for {rt.value(i)}"
        ),
        None if bad_tenor is None else (
            bad_tenor & tenor_keyed, "Label1",
            lambda i: f"tenor {label1.value(i)!r} is not a SIMM tenor",
        ),
        None if bad_credit_tenor is None else (
            bad_credit_tenor & rt.isin(CREDIT_TYPES), "Label1",
            lambda i: f"tenor {label1.value(i)!r} is not a SIMM credit tenor",
        ),
        None if bad_pc is None else (
            bad_pc, "ProductClass", lambda i: f"unknown product class {product_class.value(i)!r}"
        ),
    ]  # fmt: skip
    error = _first_error(n, checks)
    if error is not None:
        raise error
    return Crif(
        row=np.arange(1, n + 1, dtype=np.int64),
        portfolio=cats["PortfolioID"],
        product_class=product_class,
        risk_type=rt,
        qualifier=qualifier,
        label1=label1,
        label2=cats["Label2"],
        amount=amount,
        collect_regulations=cats["collect_regulations"],
        post_regulations=cats["post_regulations"],
        calculation_currency=calculation_currency,
        bucket=bucket,
    )


def _convert_currencies(
    amount: FloatArray,
    ccy: Categorical[str],
    column: Callable[[str], Sequence[object]],
    calculation_currency: str,
    fx_rates: Mapping[str, float] | None,
) -> list[_Check | None]:
    """Convert ``amount`` (in place) into the calculation currency; the checks that can fail.

    Per currency: the calculation currency as is; one in ``fx_rates`` times its rate; else, for
    a USD calculation, the row's ``AmountUSD``; else the row fails on ``AmountCurrency``.
    """
    rates = fx_rates or {}
    foreign = [c for c in ccy.categories if c != calculation_currency]
    if not foreign:
        return []
    factor = np.array([float(rates.get(c, 1.0)) if c in foreign else 1.0 for c in ccy.categories])
    amount *= factor[ccy.codes]
    unpriced = ccy.isin(c for c in foreign if c not in rates)
    if not unpriced.any():
        return []
    raw_usd = column("AmountUSD")
    has_usd = np.zeros(len(raw_usd), dtype=np.bool_)
    if calculation_currency == "USD":
        has_usd[np.flatnonzero(unpriced)] = [
            raw_usd[i] is not None and raw_usd[i] != "" for i in np.flatnonzero(unpriced).tolist()
        ]
    use_usd = unpriced & has_usd
    rows = np.flatnonzero(use_usd)
    usd, bad = _floats([raw_usd[i] for i in rows.tolist()])
    amount[rows] = usd
    not_number = np.zeros_like(use_usd)
    not_number[rows] = False if bad is None else bad
    not_finite = np.zeros_like(use_usd)
    not_finite[rows] = ~np.isfinite(usd) & (True if bad is None else ~bad)
    return [
        (
            unpriced & ~has_usd,
            "AmountCurrency",
            lambda i: f"no FX rate {ccy.value(i)}->{calculation_currency}",
        ),
        (not_number, "AmountUSD", lambda i: "AmountUSD is not a number"),
        (not_finite, "AmountUSD", lambda i: f"AmountUSD {raw_usd[i]!r} is not finite"),
    ]


def crif_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    calculation_currency: str = "USD",
    fx_rates: Mapping[str, float] | None = None,
    columns: Sequence[str] | None = None,
) -> Crif:
    """Validate CRIF records (dicts from CSV or JSON) into a :class:`Crif`.

    Amounts in another currency than the calculation currency are converted with ``fx_rates``
    (units of calculation currency per unit), or taken from ``AmountUSD`` when the calculation
    currency is USD. Raises :class:`CrifError` naming the first bad row and column.
    """
    recs = list(records)
    cols = set(columns) if columns is not None else (set(recs[0]) if recs else set())
    _require_columns(cols)

    def has(name: str) -> bool:
        return any(name in r for r in recs)

    def column(name: str) -> list[object]:
        try:
            return list(map(itemgetter(name), recs))
        except KeyError:  # a record without the column: None there
            return [r.get(name) for r in recs]

    def grouped(names: Sequence[str]) -> _Grouped | None:
        key_of = itemgetter(*names)
        try:  # every cell text: one joined string per row
            joined = _group_joined(list(map(_SEP.join, map(key_of, recs))), len(names))
        except TypeError:  # a cell that is not text
            joined = None
        except KeyError:  # a record without one of the columns
            return None
        if joined is not None:
            return joined
        try:
            keys = list(map(key_of, recs))
        except KeyError:
            return None
        return _group_tuples(keys)

    return _crif_from_cells(
        _Cells(len(recs), has, column, grouped),
        calculation_currency,
        fx_rates,
    )


def _require_columns(columns: Iterable[str]) -> None:
    present = set(columns)
    for col in REQUIRED_COLUMNS:
        if col not in present:
            raise CrifError(f"CRIF has no {col} column", column=col)


def parse_crif_csv(
    text: str, *, calculation_currency: str = "USD", fx_rates: Mapping[str, float] | None = None
) -> Crif:
    """Parse CRIF CSV text (header row, comma separated; a leading ``#`` on the header is ORE's).

    Read as ``csv.DictReader`` would (blank lines skipped, a short row's missing cells None, a
    repeated column name meaning its last column) but column-wise: the C reader splits the
    lines, and validation runs on columns. A row's categorical cells are joined into one string
    (:data:`_SEP` between them) to group the rows: one string per row is cheaper to hash and
    compare than a tuple of ten, and is not tracked by the garbage collector; a CSV whose cells
    hold that separator is read as tuples instead.
    """
    reader = csv.reader(io.StringIO(text.lstrip("#")))
    header = [c.strip() for c in next(reader, [])]
    _require_columns(header)
    width = len(header)
    where = {name: i for i, name in enumerate(header)}  # a repeated name: its last column
    names = [name for name in CATEGORICAL_COLUMNS if name in where]
    # the required columns are categorical: at least five names, so key_of gives tuples
    key_of = itemgetter(*(where[name] for name in names))
    amount_of = itemgetter(where["Amount"])
    usd_of = itemgetter(where["AmountUSD"]) if "AmountUSD" in where else None
    join = _SEP.join
    keys: list[str] = []
    amounts: list[object] = []
    usd: list[object] = []
    # In chunks, so each row's list is freed at once: holding 10⁵ of them costs more in the
    # garbage collector's passes than reading them.
    while raw := list(islice(reader, 4096)):  # to the end: blank lines skipped, never a stop
        chunk = [r for r in raw if r]
        if chunk and set(map(len, chunk)) != {width}:
            return _parse_irregular_csv(text, calculation_currency, fx_rates)
        keys += map(join, map(key_of, chunk))
        amounts += map(amount_of, chunk)
        if usd_of is not None:
            usd += map(usd_of, chunk)
    by_key = _group_joined(keys, len(names))
    if by_key is None:  # a cell holds _SEP: read as tuples
        return _parse_irregular_csv(text, calculation_currency, fx_rates)
    combo, cells = by_key
    absent = [None] * len(keys)

    def column(name: str) -> Sequence[object]:
        if name in ("Amount", "AmountUSD"):
            return (amounts if name == "Amount" else usd) if name in where else absent
        if name not in names:
            return absent
        of_group = [c[names.index(name)] for c in cells]
        return [of_group[g] for g in combo.tolist()]

    def grouped(wanted: Sequence[str]) -> _Grouped | None:
        return (combo, cells) if list(wanted) == names else None

    return _crif_from_cells(
        _Cells(len(keys), where.__contains__, column, grouped), calculation_currency, fx_rates
    )


def _parse_irregular_csv(
    text: str, calculation_currency: str, fx_rates: Mapping[str, float] | None
) -> Crif:
    """CSV with rows of unequal length, as ``csv.DictReader`` reads it: a short row's missing
    cells None, a long row's extra cells ignored."""
    reader = csv.reader(io.StringIO(text.lstrip("#")))
    header = [c.strip() for c in next(reader, [])]
    width = len(header)
    pad: list[str | None] = [None] * width
    table = [(r + pad)[:width] for r in reader if r]
    where = {name: i for i, name in enumerate(header)}
    absent = [None] * len(table)

    def column(name: str) -> Sequence[object]:
        return list(map(itemgetter(where[name]), table)) if name in where else absent

    def grouped(names: Sequence[str]) -> _Grouped | None:
        return _group_tuples(list(map(itemgetter(*(where[name] for name in names)), table)))

    return _crif_from_cells(
        _Cells(len(table), where.__contains__, column, grouped), calculation_currency, fx_rates
    )


# --------------------------------------------------------------------------- margin maths


def curvature_scaling(tenor: str, mpor_days: int) -> float:
    """SIMM curvature scaling function ``SF(t) = ½ min(1, 14 days / t days)`` (10-day MPOR).

    Tenors in days: 2w = 14, n m = 365 n / 12, n y = 365 n (SIMM B.8). At 1-day MPOR the factor
    is a tenth of the 10-day one: that is what ORE's expected 1-day reports show (every IR
    curvature bucket figure is exactly one tenth of the 10-day one).
    """
    n = float(tenor[:-1])
    days = {"w": 7.0 * n, "m": 365.0 * n / 12.0, "y": 365.0 * n}[tenor[-1]]
    sf = 0.5 * min(1.0, 14.0 / days)
    return sf if mpor_days == 10 else sf / 10.0


def lambda_curvature(theta: float) -> float:
    """SIMM curvature λ = (Φ⁻¹(0.995)² − 1)(1 + θ) − θ."""
    return (_Z995 * _Z995 - 1.0) * (1.0 + theta) - theta


def _quad(ws: FloatArray, corr: FloatArray) -> float:
    return math.sqrt(max(float(ws @ corr @ ws), 0.0))


def aggregate_buckets(k: FloatArray, ws_sum: FloatArray, gamma: FloatArray) -> float:
    """Across buckets: ``sqrt(Σ K_b² + Σ_{b≠c} γ_bc S_b S_c)``, ``S_b = clamp(ΣWS_b, ±K_b)``.

    ``gamma`` carries γ_bc (times g_bc for delta/vega); its diagonal is ignored.
    """
    s = np.clip(ws_sum, -k, k)
    g = gamma.copy()
    np.fill_diagonal(g, 0.0)
    return math.sqrt(max(float(k @ k + s @ g @ s), 0.0))


def curvature_margin(
    cvr_sum: FloatArray, cvr_abs_sum: float, k: FloatArray, gamma: FloatArray
) -> float:
    """``max(Σ CVR + λ K, 0)`` with θ from the signs of CVR; ``gamma`` already squared."""
    total = float(cvr_sum.sum())
    theta = min(total / cvr_abs_sum, 0.0) if cvr_abs_sum > 0.0 else 0.0
    kk = aggregate_buckets(k, cvr_sum, gamma)
    return max(total + lambda_curvature(theta) * kk, 0.0)


@dataclass(frozen=True, slots=True)
class RiskClassMargin:
    """Margins of one risk class in one product class; ``buckets`` per margin type: K_b."""

    delta: float = 0.0
    vega: float = 0.0
    curvature: float = 0.0
    buckets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    base_corr: float = 0.0  # credit qualifying only

    @property
    def total(self) -> float:
        return self.delta + self.vega + self.curvature + self.base_corr


_MARGIN_ATTRS = ("delta", "vega", "curvature", "base_corr")  # fields, MARGIN_TYPE_ORDER
IR_DELTA_TYPES = ("Risk_IRCurve", "Risk_Inflation", "Risk_XCcyBasis")
IR_VEGA_TYPES = ("Risk_IRVol", "Risk_InflationVol")


@dataclass(frozen=True, slots=True, eq=False)
class RiskFactors:
    """The CRIF's distinct risk factors, found once per CRIF; rows net into them by ``bincount``.

    A factor is (product class, risk type, qualifier, tenor, sub-curve), the last two only where
    the methodology keys on them: tenor for IR curve and IR vol, sub-curve for IR curve; an
    inflation, cross-currency-basis or inflation-vol factor is one per currency (inflation vol
    summed over expiries), FX one per currency. Factors are sorted as those strings sort, so
    every margin sum adds in one fixed order. The margin maths then runs on factors (a few
    thousand at most), whatever the number of rows.
    """

    of_row: IntArray  # the factor of each CRIF row
    product_class: IntArray  # per factor: code into the CRIF's product-class categories
    risk_type: npt.NDArray[np.str_]  # per factor
    qualifier: IntArray  # per factor: code into ``currencies``
    currencies: tuple[str, ...]  # the CRIF's qualifier categories
    tenor: IntArray  # per factor: index into IR_TENORS, -1 where the factor has no tenor
    sub_curve: IntArray  # per factor: Label2 code + 1 for IR curve and credit, 0 elsewhere
    curvature_weight: FloatArray  # per row: SF(Label1) for volatility rows, 0 elsewhere
    bucket: IntArray  # per factor: code into ``buckets`` for the bucketed classes, -1 elsewhere
    buckets: tuple[str, ...]  # the CRIF's Bucket categories
    first_row: IntArray  # per factor: the 1-based CRIF row that first carries it

    def __len__(self) -> int:
        return int(self.product_class.shape[0])


def risk_factors(crif: Crif, mpor_days: int) -> RiskFactors:
    """Group the CRIF's rows into risk factors (see :class:`RiskFactors`)."""
    rt, l1, l2 = crif.risk_type, crif.label1, crif.label2
    has_tenor = rt.isin(("Risk_IRCurve", "Risk_IRVol", *CREDIT_TYPES))
    tenor_key = np.where(has_tenor, l1.codes + 1, 0)
    sub_key = np.where(rt.isin(("Risk_IRCurve", *CREDIT_TYPES)), l2.codes + 1, 0)
    bucket_key = np.where(rt.isin(BUCKETED_TYPES), crif.bucket.codes + 1, 0)
    of_row, first = _group(
        [
            (crif.product_class.codes, len(crif.product_class.categories)),
            (rt.codes, len(rt.categories)),
            (crif.qualifier.codes, len(crif.qualifier.categories)),
            (tenor_key, len(l1.categories) + 1),
            (sub_key, len(l2.categories) + 1),
            (bucket_key, len(crif.bucket.categories) + 1),
        ]
    )
    tenor_of_label = np.array([_tenor_index(c) for c in (*l1.categories, "")], dtype=np.int64)
    sf = np.array(
        [curvature_scaling(c, mpor_days) if c in IR_TENORS else 0.0 for c in l1.categories]
    )
    vol = rt.isin(IR_VEGA_TYPES + NON_IR_VOL_TYPES + ("Risk_CreditVol", "Risk_CreditVolNonQ"))
    return RiskFactors(
        of_row=of_row,
        product_class=crif.product_class.codes[first],
        risk_type=np.array(rt.categories, dtype=np.str_)[rt.codes[first]],
        qualifier=crif.qualifier.codes[first],
        currencies=crif.qualifier.categories,
        tenor=np.where(has_tenor[first], tenor_of_label[l1.codes[first]], -1),
        sub_curve=sub_key[first],
        curvature_weight=np.where(vol, sf[l1.codes] if sf.size else 0.0, 0.0),
        bucket=bucket_key[first] - 1,
        buckets=crif.bucket.categories,
        first_row=crif.row[first],
    )


def _tenor_index(label: str) -> int:
    return IR_TENORS.index(label) if label in IR_TENORS else -1


def _group(columns: Sequence[tuple[IntArray, int]]) -> tuple[IntArray, IntArray]:
    """Group rows by the tuple of code columns ``(codes, number of codes)``: the group of each
    row (groups numbered in lexicographic order of the tuples) and each group's first row.

    The tuple is one mixed-radix integer; when the radix product would pass 2⁶², the key so far
    is renumbered densely first, so any number of columns and codes fits in int64.
    """
    n = columns[0][0].shape[0]
    key = np.zeros(n, dtype=np.int64)
    bound = 1
    for codes, size in columns:
        if bound * size >= 1 << 62:
            _, key = np.unique(key, return_inverse=True)
            bound = int(key.max()) + 1 if n else 1
        key = key * size + codes
        bound *= size
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return inverse.astype(np.int64), first.astype(np.int64)


def _by_currency(factors: RiskFactors, members: IntArray) -> Iterator[tuple[str, IntArray]]:
    """``members`` (factor indices) split by currency, currencies in sorted order, each
    currency's factors in their sorted order."""
    q = factors.qualifier[members]
    if q.size == 0:
        return
    order = np.argsort(q, kind="stable")
    members, q = members[order], q[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    ends = np.r_[starts[1:], q.size]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        yield factors.currencies[int(q[a])], members[a:b]


def _tenor_matrix(cal: SimmCalibration) -> FloatArray:
    m = np.ones((len(IR_TENORS), len(IR_TENORS)))
    for i, a in enumerate(IR_TENORS):
        for j, b in enumerate(IR_TENORS):
            if a != b:
                m[i, j] = cal.ir_tenor_correlation[(a, b)]
    return m


def _pairs(flags: BoolArray) -> BoolArray:
    """``[a, b]`` true where factor a or factor b is flagged."""
    return flags[:, None] | flags[None, :]


def _threshold(usd_mm: float, mpor_days: int) -> float:
    """A concentration threshold in units (calibrations give USD mm); infinite, so that every
    CR is 1, where concentration is disabled (:func:`concentration_enabled`)."""
    return usd_mm * 1e6 if concentration_enabled(mpor_days) else math.inf


def _concentration(x: FloatArray, threshold: FloatArray | float) -> FloatArray:
    """``CR = max(1, sqrt(|Σ s| / T))`` per factor."""
    return np.maximum(1.0, np.sqrt(np.abs(x) / threshold))


def _interest_rate(
    factors: RiskFactors,
    members: IntArray,
    s: FloatArray,
    cvr: FloatArray,
    cal: SimmCalibration,
    mpor_days: int,
) -> RiskClassMargin:
    """Interest-rate delta, vega and curvature margins (SIMM D, K) over all currencies.

    ``s`` and ``cvr`` are every factor's net sensitivity and net ``Σ SF·s``; ``members`` the IR
    factors of this product class.
    """
    p = cal.ir[mpor_days]
    tmat = _tenor_matrix(cal)
    kinds = factors.risk_type[members]
    d_ccys: dict[str, tuple[float, float, float]] = {}  # ccy → (K_b, ΣWS, CR)
    for ccy, fs in _by_currency(factors, members[np.isin(kinds, IR_DELTA_TYPES)]):
        kind, tenor, sv = factors.risk_type[fs], factors.tenor[fs], s[fs]
        curve, infl, xccy = (kind == t for t in IR_DELTA_TYPES)
        group = cal.ir_group(ccy)
        rw = np.where(infl, p.inflation, p.xccy_basis)
        rw[curve] = [p.delta[(group, IR_TENORS[t])] for t in tenor[curve].tolist()]
        thr = _threshold(cal.ir_delta_thresholds[cal.ir_threshold_groups.get(ccy, "1")], mpor_days)
        cr = max(1.0, math.sqrt(abs(float(sv[~xccy].sum())) / thr))
        ws = rw * sv * np.where(~xccy, cr, 1.0)
        sub = factors.sub_curve[fs]
        corr = tmat[np.ix_(tenor, tenor)] * np.where(
            sub[:, None] == sub[None, :], 1.0, cal.ir_sub_curves
        )
        corr[_pairs(infl)] = cal.ir_inflation
        corr[_pairs(xccy)] = cal.ir_xccy_basis
        np.fill_diagonal(corr, 1.0)
        d_ccys[ccy] = (_quad(ws, corr), float(ws.sum()), cr)
    v_ccys: dict[str, tuple[float, float, float]] = {}
    c_ccys: dict[str, tuple[float, float, float]] = {}  # ccy → (K_b, ΣCVR, Σ|CVR|)
    for ccy, fs in _by_currency(factors, members[np.isin(kinds, IR_VEGA_TYPES)]):
        tenor, sv = factors.tenor[fs], s[fs]
        thr = _threshold(cal.ir_vega_thresholds[cal.ir_threshold_groups.get(ccy, "1")], mpor_days)
        vcr = max(1.0, math.sqrt(abs(float(sv.sum())) / thr))
        vr = p.vega * sv * vcr
        corr = tmat[np.ix_(tenor, tenor)]
        corr[_pairs(factors.risk_type[fs] == "Risk_InflationVol")] = cal.ir_inflation
        np.fill_diagonal(corr, 1.0)
        v_ccys[ccy] = (_quad(vr, corr), float(vr.sum()), vcr)
        cv = cvr[fs]
        c_ccys[ccy] = (_quad(cv, corr * corr), float(cv.sum()), float(np.abs(cv).sum()))
    return RiskClassMargin(
        delta=_across_currencies(d_ccys, cal.ir_outer),
        vega=_across_currencies(v_ccys, cal.ir_outer),
        curvature=_ir_curvature(c_ccys, cal.ir_outer, p.hvr),
        buckets={
            "Delta": {c: v[0] for c, v in d_ccys.items()},
            "Vega": {c: v[0] for c, v in v_ccys.items()},
            "Curvature": {c: v[0] for c, v in c_ccys.items()},
        },
    )


def _across_currencies(per: Mapping[str, tuple[float, float, float]], gamma: float) -> float:
    if not per:
        return 0.0
    vals = np.array(list(per.values()))
    k, ws, cr = vals[:, 0], vals[:, 1], vals[:, 2]
    g = np.minimum.outer(cr, cr) / np.maximum.outer(cr, cr)
    return aggregate_buckets(k, ws, gamma * g)


def _ir_curvature(per: Mapping[str, tuple[float, float, float]], gamma: float, hvr: float) -> float:
    if not per:
        return 0.0
    vals = np.array(list(per.values()))
    n = vals.shape[0]
    g2 = np.full((n, n), gamma * gamma)
    margin = curvature_margin(vals[:, 1], float(vals[:, 2].sum()), vals[:, 0], g2)
    return margin / (hvr * hvr)


def _fx(
    factors: RiskFactors,
    members: IntArray,
    s: FloatArray,
    cal: SimmCalibration,
    mpor_days: int,
    calc: str,
) -> RiskClassMargin:
    """FX delta margin (SIMM I): one bucket, the calculation currency itself carries no risk."""
    keep = members[[factors.currencies[q] != calc for q in factors.qualifier[members].tolist()]]
    if keep.size == 0:
        return RiskClassMargin()
    ccys = [factors.currencies[q] for q in factors.qualifier[keep].tolist()]
    sv = s[keep]
    p = cal.fx[mpor_days]
    cg = cal.fx_group(calc)
    groups = [cal.fx_group(c) for c in ccys]
    rw = np.array([p.delta[(g, cg)] for g in groups])
    thr = np.array(
        [_threshold(cal.fx_delta_thresholds[_fx_category(cal, c)], mpor_days) for c in ccys]
    )
    cr = np.maximum(1.0, np.sqrt(np.abs(sv) / thr))
    ws = rw * sv * cr
    distinct = sorted(set(groups))
    table = np.array(
        [[cal.fx_correlation.get((cg, a, b), math.nan) for b in distinct] for a in distinct]
    )
    gi = np.array([distinct.index(g) for g in groups])
    corr = table[np.ix_(gi, gi)]
    np.fill_diagonal(corr, 1.0)
    if np.isnan(corr).any():
        raise CrifError(
            f"calibration: an FX correlation for calculation group {cg} is missing",
            column="calibration",
        )
    return RiskClassMargin(delta=_quad(ws, corr))


def _fx_category(cal: SimmCalibration, ccy: str) -> str:
    """The FX concentration category of a currency (SIMM J: 1 significantly material, 2
    frequently traded, 3 others)."""
    return cal.fx_threshold_groups.get(ccy, cal.fx_threshold_groups.get("Other", "3"))


#: FX vega concentration threshold of a pair by the categories of its two currencies (SIMM J).
_FX_PAIR_CATEGORY = {
    ("1", "1"): "1", ("1", "2"): "2", ("1", "3"): "3",
    ("2", "2"): "4", ("2", "3"): "5", ("3", "3"): "6",
}  # fmt: skip


def _one_bucket_curvature(cv: FloatArray, corr: FloatArray) -> tuple[float, float]:
    """``(K, max(Σ CVR + λ K, 0))`` of one bucket, ``corr`` the correlations (squared here)."""
    k = _quad(cv, corr * corr)
    return k, curvature_margin(
        np.array([cv.sum()]), float(np.abs(cv).sum()), np.array([k]), np.zeros((1, 1))
    )


def _fx_vol(
    factors: RiskFactors,
    members: IntArray,
    s: FloatArray,
    cvr: FloatArray,
    cal: SimmCalibration,
    mpor_days: int,
) -> tuple[float, float]:
    """FX vega and curvature margins (SIMM I, B.10–11): one bucket of currency pairs.

    ``σ_k = RW_FX(pair) · √(365/14) / Φ⁻¹(0.99)`` with the FX delta risk weight of the pair's
    two volatility groups; ``VR_k = VRW · HVR · σ_k · s_k · VCR_k`` (``s_k`` summed over
    expiries), ``VCR_k = max(1, sqrt(|HVR σ_k s_k| / VT_pair))``, correlation 1 for the same
    pair and the calibration's FX volatility correlation otherwise (times ``f_kl``);
    curvature ``CVR_k = σ_k Σ_j SF(t_j) s_kj``, ``ρ²``, θ and λ, no HVR scaling.
    """
    p = cal.fx[mpor_days]
    pairs = [factors.currencies[q] for q in factors.qualifier[members].tolist()]
    mult = sigma_multiplier(mpor_days)
    sigma = np.array([mult * p.delta[(cal.fx_group(a[3:]), cal.fx_group(a[:3]))] for a in pairs])
    x = s[members] * sigma * p.hvr
    thr = np.array(
        [
            _threshold(
                cal.fx_vega_thresholds[
                    _FX_PAIR_CATEGORY[
                        tuple(sorted((_fx_category(cal, a[:3]), _fx_category(cal, a[3:]))))  # type: ignore[index]
                    ]
                ],
                mpor_days,
            )
            for a in pairs
        ]
    )
    vcr = _concentration(x, thr)
    vr = p.vega * x * vcr
    n = len(pairs)
    if n > 1 and math.isnan(cal.fx_vol_correlation):
        raise CrifError("calibration: FX/Correlations/Volatility missing", column="calibration")
    corr = np.full((n, n), cal.fx_vol_correlation)
    np.fill_diagonal(corr, 1.0)
    vega = _quad(vr, _times_f(corr, vcr))
    _, curvature = _one_bucket_curvature(cvr[members] * sigma, corr)
    return vega, curvature


#: Buckets whose curvature is zero by the methodology (SIMM ≥ 2.2: equity volatility indices).
ZERO_CURVATURE_BUCKETS: Mapping[str, frozenset[str]] = {EQUITY: frozenset({"12"})}


def _bucketed(
    factors: RiskFactors,
    members: IntArray,
    s: FloatArray,
    cvr: FloatArray,
    cal: SimmCalibration,
    mpor_days: int,
    risk_class: str,
) -> RiskClassMargin:
    """Delta, vega and curvature of a bucketed risk class (Credit, Equity, Commodity; SIMM
    E–H, B).

    Per factor k (Equity, Commodity: a qualifier in a bucket, summed over its rows and, for
    vega, over expiries; Credit: a qualifier, bucket, tenor and Label2):

    * delta ``WS_k = RW_b · s_k · CR_k``, ``CR_k = max(1, sqrt(|Σ s| / T_b))`` with Σ over the
      factors of k's qualifier in its bucket (for credit: all its tenors);
    * vega ``VR_k = VRW_b · HVR · σ_k s_k · VCR_k`` with ``σ_k = RW_b √(365/14) / Φ⁻¹(0.99)``
      (Credit: σ = 1, no HVR), ``VCR_k = max(1, sqrt(|Σ HVR σ s| / VT_b))`` likewise;
    * in a bucket ``K_b = sqrt(Σ_kl ρ_kl f_kl WS_k WS_l)`` (ρ 1 on the diagonal, otherwise
      :func:`_intra`; ``f_kl = min(CR) / max(CR)``); across buckets
      :func:`aggregate_buckets` with the calibration's γ, the Residual bucket outside it:
      ``Δ = sqrt(…) + K_Residual``;
    * curvature ``CVR_k = σ_k Σ_j SF(t_j) s_kj`` (0 in :data:`ZERO_CURVATURE_BUCKETS`), ``ρ²``,
      ``γ²``, θ and λ over the non-residual buckets, plus the Residual bucket's own
      ``max(Σ CVR + λ K, 0)``; no HVR scaling.
    """
    spec = cal.bucketed.get(risk_class)
    if spec is None or mpor_days not in spec.params:
        raise CrifError(
            f"calibration has no {risk_class} parameters for MPOR {mpor_days} days",
            column="calibration",
        )
    p = spec.params[mpor_days]
    codes = factors.bucket[members]
    # per distinct bucket (codes into the sorted Bucket categories), then indexed per factor
    used = np.unique(codes).tolist()
    unknown = [c for c in used if factors.buckets[c] not in p.delta]
    if unknown:
        at = np.flatnonzero(np.isin(codes, unknown))
        i = int(at[np.argmin(factors.first_row[members[at]])])
        raise CrifError(
            f"unknown {risk_class} bucket {factors.buckets[codes[i]]!r}; "
            f"calibration has {', '.join(p.delta)}",
            row=int(factors.first_row[members[i]]),
            column="Bucket",
        )

    def per_bucket(value: Callable[[str], float], at: BoolArray | None = None) -> FloatArray:
        """``value(bucket)`` per factor (of ``at``), evaluated once per bucket."""
        these = codes if at is None else codes[at]
        table = np.zeros(len(factors.buckets))
        wanted = used if at is None else np.unique(these).tolist()
        table[wanted] = [value(factors.buckets[c]) for c in wanted]
        return table[these]

    delta_type, vega_type = BUCKETED_CLASSES[risk_class]
    kinds = factors.risk_type[members]
    who = _Who(codes, factors.buckets, factors.qualifier[members], factors.sub_curve[members])
    rw = per_bucket(p.delta.__getitem__)
    sigma = sigma_multiplier(mpor_days) * rw if spec.vega_sigma else np.ones_like(rw)
    delta_thr = per_bucket(lambda b: _threshold(spec.delta_thresholds[b], mpor_days))
    vega_thr = per_bucket(lambda b: _threshold(spec.vega_threshold(b), mpor_days))
    sv = s[members]
    d, v = kinds == delta_type, kinds == vega_type
    cr = _issuer_concentration(who.take(d), sv[d], delta_thr[d])
    ws = rw[d] * sv[d] * cr
    x = sv[v] * sigma[v] * p.hvr
    vcr = _issuer_concentration(who.take(v), x, vega_thr[v])
    vr = per_bucket(p.vega_weight, v) * x * vcr
    zero_names = ZERO_CURVATURE_BUCKETS.get(risk_class, frozenset())
    zero = np.isin(codes[v], [c for c in used if factors.buckets[c] in zero_names])
    cv = np.where(zero, 0.0, cvr[members][v] * sigma[v])
    delta, d_buckets = _across_buckets(spec, who.take(d), ws, cr)
    v_intra = _intra_by_bucket(spec, who.take(v))
    vega, v_buckets = _across_buckets(spec, who.take(v), vr, vcr, v_intra)
    curvature, c_buckets = _bucketed_curvature(spec, who.take(v), cv, v_intra)
    return RiskClassMargin(
        delta=delta,
        vega=vega,
        curvature=curvature,
        buckets={"Delta": d_buckets, "Vega": v_buckets, "Curvature": c_buckets},
    )


@dataclass(frozen=True, slots=True)
class _Who:
    """Per factor of a bucketed class: its bucket (code into ``names``, the CRIF's sorted
    Bucket categories), qualifier code and Label2 code."""

    bucket: IntArray
    names: tuple[str, ...]
    qualifier: IntArray
    label2: IntArray

    def take(self, at: BoolArray | IntArray) -> _Who:
        return _Who(self.bucket[at], self.names, self.qualifier[at], self.label2[at])


def _issuer_concentration(who: _Who, x: FloatArray, threshold: FloatArray) -> FloatArray:
    """``CR`` of every factor from the sum of ``x`` over its qualifier's factors in its
    bucket (one factor per qualifier for Equity/Commodity, every tenor for Credit).

    The sums add in factor order (``bincount`` adds its weights in order), as a running sum
    per (bucket, qualifier) would."""
    if x.size == 0:
        return _concentration(x, threshold)
    _, group = np.unique(
        who.bucket * (int(who.qualifier.max()) + 1) + who.qualifier, return_inverse=True
    )
    sums = np.bincount(group, weights=x).astype(np.float64)
    return _concentration(sums[group], threshold)


def _intra(spec: BucketedClass, b: str, who: _Who) -> FloatArray:
    """The correlation matrix of factors ``who``, all in bucket ``b``: 1 on the diagonal;
    Equity/Commodity ρ_b between qualifiers (1 within one); Credit the calibration's
    same/different correlation, "same" by qualifier (qualifying, and any Residual) or by
    Label2 (non-qualifying, as ORE reads "same underlying names")."""
    if spec.intra_rule == "bucket":
        key, same, different = who.qualifier, 1.0, spec.intra[b]
    else:
        kind = "residual" if b == RESIDUAL else "aggregate"
        by_q = spec.intra_rule == "issuer" or b == RESIDUAL
        key = who.qualifier if by_q else who.label2
        same, different = (spec.same_different[(kind, x)] for x in ("same", "different"))
    n = key.size
    distinct = np.unique(key).size
    runs = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else key
    if distinct == n:  # every factor its own qualifier (Equity, Commodity): no pairs
        corr = np.full((n, n), different)
    elif distinct == runs.size:  # each key's factors adjacent (a credit issuer's tenors): blocks
        corr = np.full((n, n), different)
        for lo, hi in zip(runs.tolist(), [*runs[1:].tolist(), n], strict=True):
            if hi - lo > 1:
                corr[lo:hi, lo:hi] = same
    else:
        corr = np.where(key[:, None] == key[None, :], same, different)
    np.fill_diagonal(corr, 1.0)
    return corr


def _gamma(spec: BucketedClass, buckets: Sequence[str]) -> FloatArray:
    return np.array([[0.0 if b == c else spec.inter[(b, c)] for c in buckets] for b in buckets])


def _split_buckets(who: _Who) -> Iterator[tuple[str, IntArray]]:
    """Positions of each bucket (buckets as strings sort, as ORE's map does: the codes index
    sorted categories, so in code order), each bucket's positions in order."""
    if who.bucket.size == 0:
        return
    order = np.argsort(who.bucket, kind="stable")
    codes = who.bucket[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], codes.size]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        yield who.names[int(codes[a])], order[a:b]


def _times_f(corr: FloatArray, cr: FloatArray) -> FloatArray:
    """``corr · f_kl``, ``f_kl = min(CR_k, CR_l) / max(CR_k, CR_l)``. Where every CR is the
    same finite number (below the thresholds: all 1) f is exactly 1 and ``corr`` itself is
    returned, the same numbers without the n² products."""
    if cr.size and cr[0] == cr.min() == cr.max() and math.isfinite(cr[0]):
        return corr
    return corr * (np.minimum.outer(cr, cr) / np.maximum.outer(cr, cr))


def _intra_by_bucket(spec: BucketedClass, who: _Who) -> dict[str, tuple[IntArray, FloatArray]]:
    """Per bucket (in :func:`_split_buckets` order): its positions in ``who`` and
    :func:`_intra` of its factors (built once for vega and curvature, which share factors)."""
    return {b: (at, _intra(spec, b, who.take(at))) for b, at in _split_buckets(who)}


def _across_buckets(
    spec: BucketedClass,
    who: _Who,
    ws: FloatArray,
    cr: FloatArray,
    intra: Mapping[str, tuple[IntArray, FloatArray]] | None = None,
) -> tuple[float, dict[str, float]]:
    """Delta or vega margin and ``K_b`` per bucket (see :func:`_bucketed`); ``intra`` the
    buckets' correlations when already built (:func:`_intra_by_bucket`)."""
    k: dict[str, float] = {}
    sums: dict[str, float] = {}
    for b, (at, corr) in (intra if intra is not None else _intra_by_bucket(spec, who)).items():
        w = ws[at]
        k[b] = _quad(w, _times_f(corr, cr[at]))
        sums[b] = float(w.sum())
    normal = [b for b in k if b != RESIDUAL]
    margin = (
        aggregate_buckets(
            np.array([k[b] for b in normal]),
            np.array([sums[b] for b in normal]),
            _gamma(spec, normal),
        )
        if normal
        else 0.0
    )
    return margin + k.get(RESIDUAL, 0.0), k


def _bucketed_curvature(
    spec: BucketedClass,
    who: _Who,
    cv: FloatArray,
    intra: Mapping[str, tuple[IntArray, FloatArray]] | None = None,
) -> tuple[float, dict[str, float]]:
    """Curvature margin and per bucket ``K_b`` (the Residual bucket: its own margin)."""
    k: dict[str, float] = {}
    sums: dict[str, float] = {}
    abs_sum = 0.0
    residual = 0.0
    for b, (at, corr) in (intra if intra is not None else _intra_by_bucket(spec, who)).items():
        c = cv[at]
        if b == RESIDUAL:
            _, residual = _one_bucket_curvature(c, corr)
            k[b] = residual
            continue
        k[b] = _quad(c, corr * corr)
        sums[b] = float(c.sum())
        abs_sum += float(np.abs(c).sum())
    normal = [b for b in k if b != RESIDUAL]
    margin = (
        curvature_margin(
            np.array([sums[b] for b in normal]),
            abs_sum,
            np.array([k[b] for b in normal]),
            _gamma(spec, normal) ** 2,
        )
        if normal
        else 0.0
    )
    return margin + residual, k


def _base_correlation(
    factors: RiskFactors, members: IntArray, s: FloatArray, cal: SimmCalibration, mpor_days: int
) -> float:
    """Credit qualifying base-correlation margin (SIMM E.3): ``WS_k = RW · s_k`` per index
    (qualifier), ``sqrt(Σ_kl ρ_kl WS_k WS_l)``, ρ the calibration's base correlation between
    different indices; no buckets, no concentration."""
    spec = cal.bucketed.get(CREDIT_Q)
    if spec is None or mpor_days not in spec.base_corr_weight:
        raise CrifError(
            f"calibration has no base correlation weight for MPOR {mpor_days} days",
            column="calibration",
        )
    ws = spec.base_corr_weight[mpor_days] * s[members]
    q = factors.qualifier[members]
    corr = np.where(q[:, None] == q[None, :], 1.0, spec.base_corr)
    if members.size > 1 and math.isnan(spec.base_corr):
        raise CrifError(
            "calibration: CreditQualifying BaseCorrelation missing", column="calibration"
        )
    return _quad(ws, corr)


def product_class_margins(
    crif: Crif,
    factors: RiskFactors,
    rows: BoolArray,
    sign: float,
    cal: SimmCalibration,
    mpor_days: int,
) -> dict[str, dict[str, RiskClassMargin]]:
    """Margins per product class and risk class for the CRIF rows selected by ``rows``.

    The rows net into their factors (``sign`` −1 for the Post side); a factor counts when one
    of the selected rows carries it, even if it nets to zero.
    """
    idx = factors.of_row[rows]
    amount = crif.amount[rows] * sign
    n = len(factors)
    present = np.bincount(idx, minlength=n) > 0
    s = np.bincount(idx, weights=amount, minlength=n).astype(np.float64)
    cvr = np.bincount(idx, weights=amount * factors.curvature_weight[rows], minlength=n).astype(
        np.float64
    )
    out: dict[str, dict[str, RiskClassMargin]] = {}
    for code, pc in enumerate(crif.product_class.categories):
        fs = np.flatnonzero(present & (factors.product_class == code))
        if fs.size == 0:
            continue
        kinds = factors.risk_type[fs]
        res: dict[str, RiskClassMargin] = {}
        ir = fs[np.isin(kinds, IR_DELTA_TYPES + IR_VEGA_TYPES)]
        if ir.size:
            res[IR] = _interest_rate(factors, ir, s, cvr, cal, mpor_days)
        fx, fx_vol = fs[kinds == "Risk_FX"], fs[kinds == "Risk_FXVol"]
        if fx.size or fx_vol.size:
            fx_delta = _fx(factors, fx, s, cal, mpor_days, crif.calculation_currency)
            vega, curvature = (
                _fx_vol(factors, fx_vol, s, cvr, cal, mpor_days) if fx_vol.size else (0.0, 0.0)
            )
            res[FX] = RiskClassMargin(delta=fx_delta.delta, vega=vega, curvature=curvature)
        for rc, types in BUCKETED_CLASSES.items():
            members = fs[np.isin(kinds, types)]
            if members.size:
                res[rc] = _bucketed(factors, members, s, cvr, cal, mpor_days, rc)
        base = fs[kinds == "Risk_BaseCorr"]
        if base.size:
            res[CREDIT_Q] = dataclasses.replace(
                res.get(CREDIT_Q, RiskClassMargin()),
                base_corr=_base_correlation(factors, base, s, cal, mpor_days),
            )
        out[pc] = res
    return {pc: out[pc] for pc in PRODUCT_CLASS_ORDER if pc in out}


def across_risk_classes(values: Mapping[str, float], cal: SimmCalibration) -> float:
    """``sqrt(Σ_rs ψ_rs v_r v_s)`` over risk classes (SIMM K, ψ from the calibration)."""
    names = list(values)
    v = np.array([values[r] for r in names], dtype=np.float64)
    psi = np.array(
        [[1.0 if a == b else cal.risk_class_correlation[(a, b)] for b in names] for a in names]
    )
    return _quad(v, psi)


def product_class_simm(margins: Mapping[str, RiskClassMargin], cal: SimmCalibration) -> float:
    """``sqrt(Σ_rs ψ_rs SIMM_r SIMM_s)`` over the risk classes of one product class."""
    return across_risk_classes({r: m.total for r, m in margins.items()}, cal)


def margin_type_simm(
    margins: Mapping[str, RiskClassMargin], cal: SimmCalibration
) -> dict[str, float]:
    """One margin type across the risk classes of one product class, as ORE reports the
    ``(ProductClass, All, MarginType)`` rows: the same ψ aggregation as the product-class
    total, on that margin type's margins (not their sum)."""
    return {
        mt: across_risk_classes({r: getattr(m, attr) for r, m in margins.items()}, cal)
        for mt, attr in zip(MARGIN_TYPE_ORDER, _MARGIN_ATTRS, strict=True)
    }


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class SimmRow:
    """One row of ORE's ``simm.csv`` report."""

    portfolio: str
    product_class: str
    risk_class: str
    margin_type: str
    bucket: str
    side: str
    regulation: str
    initial_margin: float
    currency: str
    calculation_currency: str


REPORT_HEADER = (
    "Portfolio,ProductClass,RiskClass,MarginType,Bucket,SimmSide,Regulation,"
    "InitialMargin,Currency,CalculationCurrency"
)


@dataclass(frozen=True, slots=True)
class SimmResult:
    """SIMM for one portfolio and side under one regulation (set).

    In :attr:`SimmReport.results` ``regulation`` is the winning regulation and ``by_regulation``
    the total under every regulation that was computed; in :attr:`SimmReport.breakdown` it is
    the set of regulations the figures were computed for (``"ESA,USPR"``), as ORE's
    ``regulation_breakdown_simm.csv`` names them.
    """

    portfolio: str
    side: str
    regulation: str
    total: float
    margins: Mapping[str, Mapping[str, RiskClassMargin]]
    product_totals: Mapping[str, float]
    by_regulation: Mapping[str, float]
    #: product class → margin type → that margin type across risk classes (ψ-aggregated)
    margin_type_totals: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimmReport:
    results: tuple[SimmResult, ...]
    rows: tuple[SimmRow, ...]
    #: every computed regulation set per portfolio and side (ORE's regulation breakdown)
    breakdown: tuple[SimmResult, ...] = ()

    def total(self, side: str) -> float:
        return sum(r.total for r in self.results if r.side == side)

    def to_csv(self) -> str:
        """ORE's layout, InitialMargin with 9 decimals, so the two files diff line by line."""
        return _rows_csv(self.rows)

    def regulation_breakdown_csv(self) -> str:
        """ORE's ``regulation_breakdown_simm.csv``: the report rows of every regulation set
        computed (not only the winner's), without the all-portfolio total rows."""
        ccy = self.rows[0].calculation_currency if self.rows else "USD"
        return _rows_csv(_report_rows(self.breakdown, ccy, totals=False))


def _rows_csv(rows: Iterable[SimmRow]) -> str:
    lines = [REPORT_HEADER]
    for r in rows:
        reg = f'"{r.regulation}"' if "," in r.regulation else r.regulation
        lines.append(
            f"{r.portfolio},{r.product_class},{r.risk_class},{r.margin_type},{r.bucket},"
            f"{r.side},{reg},{r.initial_margin:.9f},{r.currency},{r.calculation_currency}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- regulations

#: ORE's regulations in the order of its ``CrifRecord::Regulation`` enum: a tie between
#: regulations goes to the first, and regulation sets compare element-wise in this order.
#: A name ORE does not know (ORE reads it as ``Invalid``) ranks after all of them.
REGULATION_ORDER = (
    "APRA", "CFTC", "ESA", "FINMA", "KFSC", "HKMA", "JFSA", "MAS", "OSFI", "RBI", "SEC",
    "SEC-unseg", "USPR", "NONREG", "BACEN", "SANT", "SFC", "UK", "AMFQ", "BANX", "OJK",
    "Included", UNSPECIFIED, "Excluded",
)  # fmt: skip
_REGULATION_RANK = {name: i for i, name in enumerate(REGULATION_ORDER)}
EXCLUDED = "Excluded"
_US = frozenset({"SEC", "CFTC"})

RegulationSet = tuple[str, ...]  # names in ORE's order


def regulation_rank(name: str) -> tuple[int, str]:
    """Sort key of a regulation name: ORE's enum position, unknown names last."""
    return (_REGULATION_RANK.get(name, len(REGULATION_ORDER)), name)


def _set_rank(regs: Iterable[str]) -> tuple[tuple[int, str], ...]:
    """Sort key of a regulation set: ORE's ``std::set`` order (element-wise, prefix first)."""
    return tuple(map(regulation_rank, regs))


def _ordered(regs: Iterable[str]) -> RegulationSet:
    return tuple(sorted(set(regs), key=regulation_rank))


def _close_enough(x: float, y: float) -> bool:
    """QuantLib's ``close_enough`` (42 ε relative), ORE's test for a tie between totals."""
    if x == y:
        return True
    diff, tol = abs(x - y), 42.0 * 2.220446049250313e-16
    if x * y == 0.0:
        return diff < tol * tol
    return diff <= tol * abs(x) or diff <= tol * abs(y)


def regulation_sets(
    row_sets: Mapping[int, RegulationSet],
    *,
    enforce: bool,
    netting_set_has_regulations: bool,
    has_sec: bool,
    column: str = "collect_regulations",
) -> dict[RegulationSet, frozenset[int]]:
    """Which rows SIMM is computed on under which regulations, for one portfolio and side:
    ORE's ``SimmCalculator`` split (``enforceIMRegulations``), as a map from a regulation set
    (computed once, its total shared by its members) to the keys of ``row_sets`` (rows with
    the same regulations travel together) whose rows it nets.

    ``row_sets``: key → the side's regulations of those rows (empty when none are given).
    ``netting_set_has_regulations``: whether any row of the portfolio names a regulation on
    either side; ``has_sec``: whether any row names SEC on this side. The rules:

    1. without enforcement every row is ``Unspecified``; with it a row without regulations is
       ``Unspecified`` and is dropped unless no row of the portfolio names a regulation on
       either side (so when only the Call side has regulations, the Post side is empty); a
       row naming ``Excluded`` is dropped;
    2. a row goes to the set of its regulations other than SEC/CFTC and to the set of its
       SEC/CFTC ones;
    3. when the side has SEC, SEC's rows are those with SEC or CFTC (ORE adds the CFTC rows
       into SEC), CFTC's those with CFTC;
    4. overlapping sets are split as ORE's ``cleanDuplicateRegulations`` does ({ESA,USPR} and
       {ESA} → {ESA} gets both sets' rows, {USPR} the first's), including its way out when no
       subset exists to move into (after 250 rounds it moves the set to the set minus its
       first duplicated subset, so that subset's regulation loses those rows);
    5. ``Unspecified`` is dropped when any other set remains.
    """
    keys: dict[RegulationSet, set[int]] = {}
    for key, raw in row_sets.items():
        regs = _ordered(raw) if enforce else ()
        regs = regs or (UNSPECIFIED,)
        if EXCLUDED in regs:
            continue
        if regs == (UNSPECIFIED,) and enforce and netting_set_has_regulations:
            continue
        for part in (
            tuple(r for r in regs if r not in _US),
            tuple(r for r in regs if r in _US),
        ):
            if part:
                keys.setdefault(part, set()).add(key)
    if has_sec:
        _sec_absorbs_cftc(keys)
    out = _split_duplicates(keys, column)
    if (UNSPECIFIED,) in out and len(out) > 1:
        del out[(UNSPECIFIED,)]
    ordered = sorted(out, key=_set_rank)
    return {k: frozenset(out[k]) for k in ordered if out[k]}


def _sec_absorbs_cftc(keys: dict[RegulationSet, set[int]]) -> None:
    """Rule 3 on ORE's three possible sets {CFTC}, {SEC}, {CFTC,SEC}."""
    c_key, s_key, cs_key = ("CFTC",), ("SEC",), ("CFTC", "SEC")
    c, s, cs = keys.get(c_key), keys.get(s_key), keys.get(cs_key)
    if c is not None and s is not None:
        s |= c
        if cs is not None:
            c |= cs
            s |= cs
            del keys[cs_key]
    elif c is not None:
        keys[cs_key] = (cs | c) if cs is not None else c
        del keys[c_key]
    elif s is not None and cs is not None:
        s |= cs
        keys[c_key] = cs
        del keys[cs_key]


def _split_duplicates(
    keys: dict[RegulationSet, set[int]], column: str
) -> dict[RegulationSet, set[int]]:
    """Rule 4: until no regulation is in two sets, take the set with the most regulations that
    are also in another set (the first such set in ORE's order on a tie) and move its rows
    into its largest existing proper subset ``comb`` (subsets by size, then in ORE's order),
    and into ``set − comb`` (created if absent), then drop the set. If no subset exists the
    round changes nothing; from round 251 on, the first subset tried is taken as if it
    existed (its regulations lose the rows). More than 1000 rounds fail, as in ORE.
    """
    keys = {k: set(v) for k, v in keys.items()}
    rounds = 0
    while True:
        counts: dict[str, int] = {}
        for k in keys:
            for r in k:
                counts[r] = counts.get(r, 0) + 1
        best: tuple[int, RegulationSet] | None = None
        for k in sorted(keys, key=_set_rank):
            dup = sum(counts[r] > 1 for r in k)
            if dup > 0 and len(k) > 1 and (best is None or dup > best[0]):
                best = (dup, k)
        if best is None:
            return keys
        if rounds == 1000:
            raise CrifError("cannot split overlapping regulation sets", column=column)
        rounds += 1
        dup, regs = best
        moved = False
        for size in range(dup, 0, -1):
            if size == len(regs):
                continue
            for comb in itertools.combinations(regs, size):
                if comb in keys or rounds > 250:
                    rows = keys.pop(regs)
                    if comb in keys:
                        keys[comb] |= rows
                    rest = tuple(r for r in regs if r not in comb)
                    keys[rest] = keys[rest] | rows if rest in keys else rows
                    moved = True
                    break
            if moved:
                break
        if not moved:
            rounds = max(rounds, 250)  # nothing changes until round 251: skip to it


def _simm_one(
    crif: Crif,
    factors: RiskFactors,
    rows: BoolArray,
    sign: float,
    cal: SimmCalibration,
    mpor: int,
) -> tuple[
    float, dict[str, dict[str, RiskClassMargin]], dict[str, float], dict[str, dict[str, float]]
]:
    margins = product_class_margins(crif, factors, rows, sign, cal, mpor)
    totals = {pc: product_class_simm(m, cal) for pc, m in margins.items()}
    by_type = {pc: margin_type_simm(m, cal) for pc, m in margins.items()}
    return sum(totals.values()), margins, totals, by_type


def compute_simm(
    crif: Crif,
    calibration: SimmCalibration,
    *,
    mpor_days: int = 10,
    enforce_regulations: bool = True,
) -> SimmReport:
    """SIMM per portfolio and side (worst case over regulations), with ORE's report rows.

    The rows are grouped into risk factors once; each (portfolio, side, regulation set) then
    costs one pass of ``bincount`` over the rows and margin maths over the factors. The
    regulation sets are ORE's (:func:`regulation_sets`); the winner is the largest total, a
    tie (``close_enough``) going to the first regulation in ORE's order; its figures are
    those of the first set (in ORE's order) that contains it.
    """
    if mpor_days not in calibration.ir:
        raise CrifError(
            f"calibration has no parameters for MPOR {mpor_days} days", column="mporDays"
        )
    factors = risk_factors(crif, mpor_days)
    results: list[SimmResult] = []
    breakdown: list[SimmResult] = []
    collect, post = crif.collect_regulations, crif.post_regulations
    for code, pf in enumerate(crif.portfolio.categories):
        in_pf = crif.portfolio.codes == code
        present = {
            side: np.unique(regs.codes[in_pf]).tolist()
            for side, regs in (("Call", collect), ("Post", post))
        }
        has_regulations = any(collect.categories[c] for c in present["Call"]) or any(
            post.categories[c] for c in present["Post"]
        )
        for side, sign, regs in (("Call", 1.0, collect), ("Post", -1.0, post)):
            row_sets = {c: regs.categories[c] for c in present[side]}
            sets = regulation_sets(
                row_sets,
                enforce=enforce_regulations,
                netting_set_has_regulations=has_regulations,
                has_sec=any("SEC" in r for r in row_sets.values()),
                column="collect_regulations" if side == "Call" else "post_regulations",
            )
            per_set: list[SimmResult] = []
            for key, codes in sets.items():
                in_set = _code_table(range(len(regs.categories)), codes.__contains__)
                mask = in_pf & in_set[regs.codes]
                total, margins, totals, by_type = _simm_one(
                    crif, factors, mask, sign, calibration, mpor_days
                )
                name = ",".join(sorted(key))  # ORE's regulationsToString
                per_set.append(
                    SimmResult(pf, side, name, total, margins, totals, {name: total}, by_type)
                )
            if not per_set:
                continue
            breakdown += per_set
            top = max(r.total for r in per_set)
            tied = [
                r
                for key, res in zip(sets, per_set, strict=True)
                if _close_enough(res.total, top)
                for r in key
            ]
            winner = min(tied, key=regulation_rank)
            chosen = next(res for key, res in zip(sets, per_set, strict=True) if winner in key)
            by_reg = {r: res.total for key, res in zip(sets, per_set, strict=True) for r in key}
            results.append(
                SimmResult(
                    pf,
                    side,
                    winner,
                    chosen.total,
                    chosen.margins,
                    chosen.product_totals,
                    by_reg,
                    chosen.margin_type_totals,
                )
            )
    ccy = crif.calculation_currency
    return SimmReport(tuple(results), tuple(_report_rows(results, ccy)), tuple(breakdown))


def _report_rows(results: Sequence[SimmResult], ccy: str, *, totals: bool = True) -> list[SimmRow]:
    """ORE's ``simm.csv`` rows, as ORE's ``SimmCalculator`` fills its results:

    * (pc, rc, margin type, bucket) as computed; (pc, rc, All) the sum of the margin types;
    * (pc, All, margin type) and (pc, All, All): the risk classes of the product class with
      the ψ correlation (SIMM K), on that margin type's margins and on the risk-class totals;
    * (All, rc, margin type), (All, rc, All), (All, All, margin type) and (All, All, All): sums
      over product classes (of the rows just above for the last two);
    * with ``totals``, one (All portfolios) row per side: the sum over portfolios.
    """
    rows: list[SimmRow] = []
    for side in SIDES:
        side_results = [r for r in results if r.side == side]
        for res in side_results:

            def add(
                pc: str,
                rc: str,
                mt: str,
                bucket: str,
                value: float,
                res: SimmResult = res,
                side: str = side,
            ) -> None:
                if value != 0.0:
                    rows.append(
                        SimmRow(
                            res.portfolio, pc, rc, mt, bucket, side, res.regulation, value, ccy, ccy
                        )
                    )

            pcs = [pc for pc in PRODUCT_CLASS_ORDER if pc in res.margins]
            for pc in pcs:
                rcs = [rc for rc in RISK_CLASS_ORDER if rc in res.margins[pc]]
                for rc in rcs:
                    m = res.margins[pc][rc]
                    for mt, attr in zip(MARGIN_TYPE_ORDER, _MARGIN_ATTRS, strict=True):
                        add(pc, rc, mt, "All", getattr(m, attr))
                        for bucket in sorted(m.buckets.get(mt, {})):
                            add(pc, rc, mt, bucket, m.buckets[mt][bucket])
                    add(pc, rc, "All", "All", m.total)
                for mt in MARGIN_TYPE_ORDER:
                    add(pc, "All", mt, "All", res.margin_type_totals[pc][mt])
                add(pc, "All", "All", "All", res.product_totals[pc])
            for rc in RISK_CLASS_ORDER:
                ms = [res.margins[pc][rc] for pc in pcs if rc in res.margins[pc]]
                if not ms:
                    continue
                for mt, attr in zip(MARGIN_TYPE_ORDER, _MARGIN_ATTRS, strict=True):
                    add("All", rc, mt, "All", sum(getattr(m, attr) for m in ms))
                add("All", rc, "All", "All", sum(m.total for m in ms))
            for mt in MARGIN_TYPE_ORDER:
                add("All", "All", mt, "All", sum(res.margin_type_totals[pc][mt] for pc in pcs))
            add("All", "All", "All", "All", res.total)
        if side_results and totals:
            regs = {r.regulation for r in side_results}
            reg = regs.pop() if len(regs) == 1 else "All"
            total = sum(r.total for r in side_results)
            if total != 0.0:
                rows.append(SimmRow("All", "All", "All", "All", "All", side, reg, total, ccy, ccy))
    return rows

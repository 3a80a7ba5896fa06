"""ISDA SIMM initial margin from a CRIF and a calibration in ORE's XML format (pure core).

Split out of ``core.py`` because of its size; ``core.py`` re-exports the public names.

Method: ISDA SIMM Methodology (versions 2.4, 2.5A, 2.6), sections B (general), C/D (interest
rate), I (FX), J (concentration thresholds) and K (aggregation). The parameters (risk weights,
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
* per risk class ``SIMM_r = Δ + vega + curvature``; per product class
  ``sqrt(Σ_rs ψ_rs SIMM_r SIMM_s)``; total = Σ over product classes.

Sides and regulations (ORE's ``enforceIMRegulations``): the Call side uses the CRIF's amounts and
``collect_regulations``, the Post side the negated amounts and ``post_regulations``. SIMM is
computed per regulation on the rows that carry it, and the worst case (largest total) is
reported; on a tie the alphabetically first regulation wins (ORE's reports pick ESA over USPR and
CFTC over SEC on identical CRIF rows). Report rows follow ORE's ``simm.csv`` layout; rows whose
margin is exactly zero are left out, as ORE does.

Supported risk types: Risk_IRCurve, Risk_Inflation, Risk_XCcyBasis, Risk_IRVol,
Risk_InflationVol, Risk_FX. The other SIMM risk types (credit, equity, commodity, FX vega) are
recognised and refused with a :class:`CrifError`, never priced wrongly.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

IR = "InterestRate"
FX = "FX"
RISK_CLASS_ORDER = (IR, "CreditQualifying", "CreditNonQualifying", "Equity", "Commodity", FX)
PRODUCT_CLASS_ORDER = ("RatesFX", "Credit", "Equity", "Commodity")
MARGIN_TYPE_ORDER = ("Delta", "Vega", "Curvature")
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
}
#: SIMM risk types that exist in the CRIF standard but are not priced here (yet).
UNSUPPORTED_RISK_TYPES = frozenset(
    {
        "Risk_CreditQ",
        "Risk_CreditNonQ",
        "Risk_BaseCorr",
        "Risk_CreditVol",
        "Risk_CreditVolNonQ",
        "Risk_Equity",
        "Risk_EquityVol",
        "Risk_Commodity",
        "Risk_CommodityVol",
        "Risk_FXVol",
        "Param_ProductClassMultiplier",
        "Param_AddOnNotionalFactor",
        "Param_AddOnFixedAmount",
        "Notional",
        "PV",
    }
)
REQUIRED_COLUMNS = ("ProductClass", "RiskType", "Qualifier", "Label1", "Label2", "Amount")

# Φ⁻¹(99.5%): SIMM methodology, curvature margin (λ).
_Z995 = NormalDist().inv_cdf(0.995)


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
    """``"ESA,USPR"`` (quotes and brackets tolerated, as ORE writes them) → sorted names."""
    cleaned = text.replace('"', "").replace("[", "").replace("]", "")
    return tuple(sorted({r.strip() for r in cleaned.split(",") if r.strip()}))


@dataclass(frozen=True, slots=True, eq=False)
class Crif:
    """A validated CRIF, column-wise (numpy arrays of equal length).

    ``amount`` is already in the calculation currency. ``row`` holds the 1-based data row of each
    record, so errors found later still name the row.
    """

    row: IntArray
    portfolio: npt.NDArray[np.str_]
    product_class: npt.NDArray[np.str_]
    risk_type: npt.NDArray[np.str_]
    qualifier: npt.NDArray[np.str_]
    label1: npt.NDArray[np.str_]
    label2: npt.NDArray[np.str_]
    amount: FloatArray
    collect_regulations: tuple[tuple[str, ...], ...]
    post_regulations: tuple[tuple[str, ...], ...]
    calculation_currency: str

    def __len__(self) -> int:
        return int(self.amount.shape[0])


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
    for col in REQUIRED_COLUMNS:
        if col not in cols:
            raise CrifError(f"CRIF has no {col} column", column=col)
    n = len(recs)
    amount = np.empty(n, dtype=np.float64)
    fields: dict[str, list[str]] = {k: [] for k in ("pf", "pc", "rt", "q", "l1", "l2")}
    collect: list[tuple[str, ...]] = []
    post: list[tuple[str, ...]] = []
    cache: dict[str, tuple[str, ...]] = {}
    for i, rec in enumerate(recs):
        row = i + 1
        rt = str(rec.get("RiskType") or "").strip()
        if rt not in SUPPORTED_RISK_TYPES:
            what = "unsupported" if rt in UNSUPPORTED_RISK_TYPES else "unknown"
            raise CrifError(f"{what} risk type {rt!r}", row=row, column="RiskType")
        raw = rec.get("Amount")
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CrifError(f"amount {raw!r} is not a number", row=row, column="Amount") from None
        if not math.isfinite(value):
            raise CrifError(f"amount {raw!r} is not finite", row=row, column="Amount")
        ccy = str(rec.get("AmountCurrency") or calculation_currency).strip()
        if ccy != calculation_currency:
            if fx_rates is not None and ccy in fx_rates:
                value *= float(fx_rates[ccy])
            elif calculation_currency == "USD" and rec.get("AmountUSD") not in (None, ""):
                try:
                    value = float(rec["AmountUSD"])
                except (TypeError, ValueError):
                    raise CrifError(
                        "AmountUSD is not a number", row=row, column="AmountUSD"
                    ) from None
            else:
                raise CrifError(
                    f"no FX rate {ccy}->{calculation_currency}", row=row, column="AmountCurrency"
                )
        amount[i] = value
        q = str(rec.get("Qualifier") or "").strip()
        l1 = str(rec.get("Label1") or "").strip()
        if not q:
            raise CrifError("empty qualifier", row=row, column="Qualifier")
        if rt in ("Risk_IRCurve", "Risk_IRVol", "Risk_InflationVol") and l1 not in IR_TENORS:
            raise CrifError(f"tenor {l1!r} is not a SIMM tenor", row=row, column="Label1")
        fields["pf"].append(str(rec.get("PortfolioID") or UNSPECIFIED).strip())
        fields["pc"].append(str(rec.get("ProductClass") or "").strip())
        if fields["pc"][-1] not in PRODUCT_CLASS_ORDER:
            raise CrifError(
                f"unknown product class {fields['pc'][-1]!r}", row=row, column="ProductClass"
            )
        fields["rt"].append(rt)
        fields["q"].append(q)
        fields["l1"].append(l1)
        fields["l2"].append(str(rec.get("Label2") or "").strip())
        for key, out in (("collect_regulations", collect), ("post_regulations", post)):
            text = str(rec.get(key) or "")
            regs = cache.get(text)
            if regs is None:
                regs = cache[text] = _regulation_set(text)
            out.append(regs)
    return Crif(
        row=np.arange(1, n + 1, dtype=np.int64),
        portfolio=np.asarray(fields["pf"], dtype=np.str_),
        product_class=np.asarray(fields["pc"], dtype=np.str_),
        risk_type=np.asarray(fields["rt"], dtype=np.str_),
        qualifier=np.asarray(fields["q"], dtype=np.str_),
        label1=np.asarray(fields["l1"], dtype=np.str_),
        label2=np.asarray(fields["l2"], dtype=np.str_),
        amount=amount,
        collect_regulations=tuple(collect),
        post_regulations=tuple(post),
        calculation_currency=calculation_currency,
    )


def parse_crif_csv(
    text: str, *, calculation_currency: str = "USD", fx_rates: Mapping[str, float] | None = None
) -> Crif:
    """Parse CRIF CSV text (header row, comma separated; a leading ``#`` on the header is ORE's)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("#")))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    return crif_from_records(
        reader, calculation_currency=calculation_currency, fx_rates=fx_rates, columns=columns
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

    @property
    def total(self) -> float:
        return self.delta + self.vega + self.curvature


def _factorize(*cols: npt.NDArray[np.str_]) -> tuple[IntArray, list[tuple[str, ...]]]:
    """Codes for the distinct tuples of ``cols`` (vectorised: per-column unique, then ints)."""
    code = np.zeros(cols[0].shape[0], dtype=np.int64)
    uniques = []
    for c in cols:
        u, inv = np.unique(c, return_inverse=True)
        uniques.append(u)
        code = code * len(u) + inv.astype(np.int64)
    keys, inv2 = np.unique(code, return_inverse=True)
    out = []
    for key in keys.tolist():
        parts = []
        for u in reversed(uniques):
            key, r = divmod(key, len(u))
            parts.append(str(u[r]))
        out.append(tuple(reversed(parts)))
    return inv2.astype(np.int64), out


def _net(idx: IntArray, amount: FloatArray, n: int) -> FloatArray:
    return np.bincount(idx, weights=amount, minlength=n).astype(np.float64)


def _tenor_matrix(cal: SimmCalibration, tenors: Sequence[str]) -> FloatArray:
    m = np.ones((len(tenors), len(tenors)))
    for i, a in enumerate(tenors):
        for j, b in enumerate(tenors):
            if a != b:
                m[i, j] = cal.ir_tenor_correlation[(a, b)]
    return m


def _interest_rate(
    risk_type: npt.NDArray[np.str_],
    qualifier: npt.NDArray[np.str_],
    label1: npt.NDArray[np.str_],
    label2: npt.NDArray[np.str_],
    amount: FloatArray,
    cal: SimmCalibration,
    mpor_days: int,
) -> RiskClassMargin:
    """Interest-rate delta, vega and curvature margins (SIMM D, K) over all currencies."""
    p = cal.ir[mpor_days]
    tmat = _tenor_matrix(cal, IR_TENORS)
    tpos = {t: i for i, t in enumerate(IR_TENORS)}
    # ---- delta: factors (ccy, kind, tenor, subcurve); kind 0 curve, 1 inflation, 2 xccy
    dmask = np.isin(risk_type, ("Risk_IRCurve", "Risk_Inflation", "Risk_XCcyBasis"))
    vmask = np.isin(risk_type, ("Risk_IRVol", "Risk_InflationVol"))
    d_ccys: dict[str, tuple[float, float, float]] = {}  # ccy → (K_b, ΣWS, CR)
    if dmask.any():
        rt, q = risk_type[dmask], qualifier[dmask]
        l1 = np.where(rt == "Risk_IRCurve", label1[dmask], "")
        l2 = np.where(rt == "Risk_IRCurve", label2[dmask], "")
        idx, keys = _factorize(q, rt, l1, l2)
        s = _net(idx, amount[dmask], len(keys))
        by_ccy: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_ccy.setdefault(key[0], []).append(i)
        for ccy, members in by_ccy.items():
            ks = [keys[i] for i in members]
            sv = s[members]
            group = cal.ir_group(ccy)
            rw = np.array(
                [
                    p.delta[(group, k[2])]
                    if k[1] == "Risk_IRCurve"
                    else (p.inflation if k[1] == "Risk_Inflation" else p.xccy_basis)
                    for k in ks
                ]
            )
            conc = np.array([k[1] != "Risk_XCcyBasis" for k in ks])
            thr = cal.ir_delta_thresholds[cal.ir_threshold_groups.get(ccy, "1")] * 1e6
            cr = max(1.0, math.sqrt(abs(float(sv[conc].sum())) / thr))
            ws = rw * sv * np.where(conc, cr, 1.0)
            m = len(ks)
            corr = np.ones((m, m))
            for a in range(m):
                for b in range(m):
                    if a == b:
                        continue
                    ka, kb = ks[a], ks[b]
                    if ka[1] == "Risk_XCcyBasis" or kb[1] == "Risk_XCcyBasis":
                        corr[a, b] = cal.ir_xccy_basis
                    elif ka[1] == "Risk_Inflation" or kb[1] == "Risk_Inflation":
                        corr[a, b] = cal.ir_inflation
                    else:
                        rho = tmat[tpos[ka[2]], tpos[kb[2]]]
                        corr[a, b] = rho * (1.0 if ka[3] == kb[3] else cal.ir_sub_curves)
            d_ccys[ccy] = (_quad(ws, corr), float(ws.sum()), cr)
    # ---- vega and curvature: factors (ccy, tenor) for IRVol, (ccy, "") for inflation vol
    v_ccys: dict[str, tuple[float, float, float]] = {}
    c_ccys: dict[str, tuple[float, float, float]] = {}  # ccy → (K_b, ΣCVR, Σ|CVR|)
    if vmask.any():
        rt, q = risk_type[vmask], qualifier[vmask]
        l1v = label1[vmask]
        tenor_key = np.where(rt == "Risk_IRVol", l1v, "")
        idx, keys = _factorize(q, rt, tenor_key)
        s = _net(idx, amount[vmask], len(keys))
        sf_by_tenor = {t: curvature_scaling(t, mpor_days) for t in IR_TENORS}
        sf = np.array([sf_by_tenor[t] for t in l1v.tolist()])
        cvr = _net(idx, amount[vmask] * sf, len(keys))
        by_ccy = {}
        for i, key in enumerate(keys):
            by_ccy.setdefault(key[0], []).append(i)
        for ccy, members in by_ccy.items():
            ks = [keys[i] for i in members]
            sv = s[members]
            thr = cal.ir_vega_thresholds[cal.ir_threshold_groups.get(ccy, "1")] * 1e6
            vcr = max(1.0, math.sqrt(abs(float(sv.sum())) / thr))
            vr = p.vega * sv * vcr
            m = len(ks)
            corr = np.ones((m, m))
            for a in range(m):
                for b in range(m):
                    if a != b:
                        ka, kb = ks[a], ks[b]
                        if ka[1] == "Risk_InflationVol" or kb[1] == "Risk_InflationVol":
                            corr[a, b] = cal.ir_inflation
                        else:
                            corr[a, b] = tmat[tpos[ka[2]], tpos[kb[2]]]
            v_ccys[ccy] = (_quad(vr, corr), float(vr.sum()), vcr)
            cv = cvr[members]
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
    qualifier: npt.NDArray[np.str_],
    amount: FloatArray,
    cal: SimmCalibration,
    mpor_days: int,
    calc: str,
) -> RiskClassMargin:
    """FX delta margin (SIMM I): one bucket, the calculation currency itself carries no risk."""
    keep = qualifier != calc
    if not keep.any():
        return RiskClassMargin()
    idx, keys = _factorize(qualifier[keep])
    s = _net(idx, amount[keep], len(keys))
    ccys = [k[0] for k in keys]
    p = cal.fx[mpor_days]
    cg = cal.fx_group(calc)
    groups = [cal.fx_group(c) for c in ccys]
    rw = np.array([p.delta[(g, cg)] for g in groups])
    thr = (
        np.array(
            [
                cal.fx_delta_thresholds[
                    cal.fx_threshold_groups.get(c, cal.fx_threshold_groups.get("Other", "3"))
                ]
                for c in ccys
            ]
        )
        * 1e6
    )
    cr = np.maximum(1.0, np.sqrt(np.abs(s) / thr))
    ws = rw * s * cr
    m = len(ccys)
    corr = np.ones((m, m))
    for a in range(m):
        for b in range(m):
            if a != b:
                corr[a, b] = cal.fx_correlation[(cg, groups[a], groups[b])]
    return RiskClassMargin(delta=_quad(ws, corr))


def product_class_margins(
    crif: Crif, rows: npt.NDArray[np.bool_], sign: float, cal: SimmCalibration, mpor_days: int
) -> dict[str, dict[str, RiskClassMargin]]:
    """Margins per product class and risk class for the CRIF rows selected by ``rows``."""
    out: dict[str, dict[str, RiskClassMargin]] = {}
    pcs = crif.product_class[rows]
    for pc in PRODUCT_CLASS_ORDER:
        sel = np.flatnonzero(rows)[pcs == pc]
        if sel.size == 0:
            continue
        rt, q = crif.risk_type[sel], crif.qualifier[sel]
        amt = crif.amount[sel] * sign
        res: dict[str, RiskClassMargin] = {}
        irm = np.isin(
            rt,
            ("Risk_IRCurve", "Risk_Inflation", "Risk_XCcyBasis", "Risk_IRVol", "Risk_InflationVol"),
        )
        if irm.any():
            res[IR] = _interest_rate(
                rt[irm],
                q[irm],
                crif.label1[sel][irm],
                crif.label2[sel][irm],
                amt[irm],
                cal,
                mpor_days,
            )
        fxm = rt == "Risk_FX"
        if fxm.any():
            res[FX] = _fx(q[fxm], amt[fxm], cal, mpor_days, crif.calculation_currency)
        out[pc] = res
    return out


def product_class_simm(margins: Mapping[str, RiskClassMargin], cal: SimmCalibration) -> float:
    """``sqrt(Σ_rs ψ_rs SIMM_r SIMM_s)`` over risk classes (SIMM K, ψ from the calibration)."""
    names = list(margins)
    v = np.array([margins[r].total for r in names])
    psi = np.array(
        [[1.0 if a == b else cal.risk_class_correlation[(a, b)] for b in names] for a in names]
    )
    return _quad(v, psi)


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
    """SIMM for one portfolio and side under the worst-case regulation."""

    portfolio: str
    side: str
    regulation: str
    total: float
    margins: Mapping[str, Mapping[str, RiskClassMargin]]
    product_totals: Mapping[str, float]
    by_regulation: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SimmReport:
    results: tuple[SimmResult, ...]
    rows: tuple[SimmRow, ...]

    def total(self, side: str) -> float:
        return sum(r.total for r in self.results if r.side == side)

    def to_csv(self) -> str:
        """ORE's layout, InitialMargin with 9 decimals, so the two files diff line by line."""
        lines = [REPORT_HEADER]
        for r in self.rows:
            lines.append(
                f"{r.portfolio},{r.product_class},{r.risk_class},{r.margin_type},{r.bucket},"
                f"{r.side},{r.regulation},{r.initial_margin:.9f},{r.currency},{r.calculation_currency}"
            )
        return "\n".join(lines) + "\n"


def _simm_one(
    crif: Crif, rows: npt.NDArray[np.bool_], sign: float, cal: SimmCalibration, mpor: int
) -> tuple[float, dict[str, dict[str, RiskClassMargin]], dict[str, float]]:
    margins = product_class_margins(crif, rows, sign, cal, mpor)
    totals = {pc: product_class_simm(m, cal) for pc, m in margins.items()}
    return sum(totals.values()), margins, totals


def compute_simm(
    crif: Crif,
    calibration: SimmCalibration,
    *,
    mpor_days: int = 10,
    enforce_regulations: bool = True,
) -> SimmReport:
    """SIMM per portfolio and side (worst case over regulations), with ORE's report rows."""
    if mpor_days not in calibration.ir:
        raise CrifError(
            f"calibration has no parameters for MPOR {mpor_days} days", column="mporDays"
        )
    results: list[SimmResult] = []
    for pf in sorted(set(crif.portfolio.tolist())):
        in_pf = crif.portfolio == pf
        for side, sign, regs in (
            ("Call", 1.0, crif.collect_regulations),
            ("Post", -1.0, crif.post_regulations),
        ):
            codes, sets = _regulation_codes(regs)
            candidates: dict[str, npt.NDArray[np.bool_]] = {}
            present = set(np.unique(codes[in_pf]).tolist())
            names = sorted({r for c in present for r in sets[c]}) if enforce_regulations else []
            for name in names:
                with_name = [c for c in present if name in sets[c]]
                candidates[name] = in_pf & np.isin(codes, with_name)
            if not names:
                candidates[UNSPECIFIED] = in_pf
            best: (
                tuple[float, str, dict[str, dict[str, RiskClassMargin]], dict[str, float]] | None
            ) = None
            by_reg: dict[str, float] = {}
            for name, mask in candidates.items():  # names sorted: ties keep the first
                total, margins, totals = _simm_one(crif, mask, sign, calibration, mpor_days)
                by_reg[name] = total
                if best is None or total > best[0]:
                    best = (total, name, margins, totals)
            if best is None:
                continue
            results.append(SimmResult(pf, side, best[1], best[0], best[2], best[3], by_reg))
    return SimmReport(tuple(results), tuple(_report_rows(results, crif.calculation_currency)))


def _regulation_codes(
    regs: Sequence[tuple[str, ...]],
) -> tuple[IntArray, list[tuple[str, ...]]]:
    """Integer code per row for its regulation set, and the distinct sets (one dict pass)."""
    index: dict[tuple[str, ...], int] = {}
    codes = np.fromiter((index.setdefault(r, len(index)) for r in regs), np.int64, len(regs))
    return codes, list(index)


def _report_rows(results: Sequence[SimmResult], ccy: str) -> list[SimmRow]:
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
                    for mt, value in zip(
                        MARGIN_TYPE_ORDER, (m.delta, m.vega, m.curvature), strict=True
                    ):
                        add(pc, rc, mt, "All", value)
                        for bucket in sorted(m.buckets.get(mt, {})):
                            add(pc, rc, mt, bucket, m.buckets[mt][bucket])
                    add(pc, rc, "All", "All", m.total)
                for mt, attr in zip(MARGIN_TYPE_ORDER, ("delta", "vega", "curvature"), strict=True):
                    add(pc, "All", mt, "All", sum(getattr(res.margins[pc][rc], attr) for rc in rcs))
                add(pc, "All", "All", "All", res.product_totals[pc])
            for rc in RISK_CLASS_ORDER:
                ms = [res.margins[pc][rc] for pc in pcs if rc in res.margins[pc]]
                if not ms:
                    continue
                for mt, attr in zip(MARGIN_TYPE_ORDER, ("delta", "vega", "curvature"), strict=True):
                    add("All", rc, mt, "All", sum(getattr(m, attr) for m in ms))
                add("All", rc, "All", "All", sum(m.total for m in ms))
            for mt, attr in zip(MARGIN_TYPE_ORDER, ("delta", "vega", "curvature"), strict=True):
                add(
                    "All",
                    "All",
                    mt,
                    "All",
                    sum(getattr(m, attr) for pc in pcs for m in res.margins[pc].values()),
                )
            add("All", "All", "All", "All", res.total)
        if side_results:
            regs = {r.regulation for r in side_results}
            reg = regs.pop() if len(regs) == 1 else "All"
            total = sum(r.total for r in side_results)
            if total != 0.0:
                rows.append(SimmRow("All", "All", "All", "All", "All", side, reg, total, ccy, ccy))
    return rows

"""Collateral engine, pure core: CSA agreements, variation margin and its call lifecycle, schedule
initial margin, ISDA SIMM (in :mod:`engines.collateral.simm`) and optimal collateral allocation.

Sources, per part:

* **Variation margin**: ISDA 1994 Credit Support Annex (New York law), Paragraph 3 (Delivery and
  Return Amounts), Paragraph 13 (Threshold, Minimum Transfer Amount, Independent Amount,
  Rounding). From this party's side (the secured party when the exposure is positive)::

      Credit Support Amount = sign(E)·max(|E| − Threshold, 0) + Independent Amount
      amount                = Credit Support Amount − Value(held collateral after haircuts)

  ``amount > 0``: the counterparty must transfer value to us; ``amount < 0``: we must. A call is
  only made when ``|amount| ≥ MTA``. The transfer splits into a *return* leg (reducing collateral
  already posted by the payer's counterparty, rounded down) and a *delivery* leg (new collateral,
  rounded up), as the CSA's rounding clause has it.
* **Call lifecycle**: issued → agreed | disputed; disputed → agreed | issued (re-issued);
  agreed → settled. Every transition is a record for ``collateral.calls.<agreement>``
  (ordered-lossless); the agreement's latest state goes to ``collateral.<agreement>``.
* **Schedule IM**: BCBS-IOSCO, "Margin requirements for non-centrally cleared derivatives"
  (March 2015), Appendix A: gross IM = multiplier(asset class, maturity) × notional;
  net = 0.4·gross + 0.6·NGR·gross, NGR = net current replacement cost / gross replacement cost.
  Maturity is the ACT/ACT (ISDA) year fraction from the as-of date to the end date, as in ORE's
  ``im_schedule_trade.csv``.
* **Allocation**: a linear programme solved with HiGHS (``scipy.optimize.linprog``); its dual is
  read from HiGHS's marginals and the duality gap reported.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.optimize import linprog

from engines.collateral.simm import (
    Crif,
    CrifError,
    SimmCalibration,
    SimmReport,
    SimmRow,
    bundled_calibration,
    compute_simm,
    crif_from_records,
    parse_crif_csv,
    parse_simm_calibration,
    read_bundled_data,
    select_calibration,
)

__all__ = [
    "Agreement",
    "AllocationResult",
    "Asset",
    "CallEvent",
    "CallState",
    "CallStateError",
    "CallTransition",
    "Crif",
    "CrifError",
    "EligibleCollateral",
    "MarginCall",
    "ScheduleReport",
    "SimmCalibration",
    "SimmReport",
    "SimmRow",
    "VariationMargin",
    "allocate_collateral",
    "apply_call_event",
    "bundled_calibration",
    "calls_channel",
    "compute_schedule_im",
    "compute_simm",
    "crif_from_records",
    "issue_call",
    "naive_allocation",
    "parse_crif_csv",
    "parse_schedule_crif_csv",
    "parse_simm_calibration",
    "read_bundled_data",
    "schedule_crif_from_records",
    "select_calibration",
    "state_channel",
    "variation_margin",
    "year_fraction_act_act_isda",
]


# --------------------------------------------------------------------------- agreements


@dataclass(frozen=True, slots=True)
class EligibleCollateral:
    """An eligible collateral class under a CSA: valuation haircut and concentration limit.

    ``asset_class`` matches :attr:`Asset.asset_class` (e.g. ``cash.USD``, ``govt.0-5y``,
    ``equity``); ``concentration_limit`` is the largest share of the post-haircut value posted
    under the agreement that this class may make up (1.0 = no limit).
    """

    asset_class: str
    haircut: float
    concentration_limit: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.haircut < 1.0:
            raise ValueError(f"haircut {self.haircut} must be in [0, 1)")
        if not 0.0 < self.concentration_limit <= 1.0:
            raise ValueError(f"concentration limit {self.concentration_limit} must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Agreement:
    """A CSA as configuration (ISDA CSA Paragraph 13 elections), amounts in ``currency``."""

    name: str
    counterparty: str
    currency: str
    threshold: float = 0.0
    minimum_transfer_amount: float = 0.0
    independent_amount: float = 0.0
    rounding: float = 0.0
    eligible: tuple[EligibleCollateral, ...] = ()
    call_frequency: str = "daily"

    def __post_init__(self) -> None:
        for name in ("threshold", "minimum_transfer_amount", "rounding"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f"{name} must be finite and ≥ 0, got {value}")
        if not math.isfinite(self.independent_amount):
            raise ValueError("independent_amount must be finite")

    def haircut(self, asset_class: str) -> float | None:
        """Haircut for an eligible class, None when the class is not eligible."""
        for e in self.eligible:
            if e.asset_class == asset_class:
                return e.haircut
        return None


def calls_channel(agreement: str) -> str:
    """Ordered-lossless channel of every call transition for an agreement."""
    return f"collateral.calls.{agreement}"


def state_channel(agreement: str) -> str:
    """Latest-value channel of an agreement's collateral state."""
    return f"collateral.{agreement}"


# --------------------------------------------------------------------------- variation margin


def _round_up(x: float, step: float) -> float:
    return math.ceil(x / step - 1e-12) * step if step > 0.0 else x


def _round_down(x: float, step: float) -> float:
    return math.floor(x / step + 1e-12) * step if step > 0.0 else x


@dataclass(frozen=True, slots=True)
class VariationMargin:
    """The VM computation for one agreement at one time, every intermediate kept.

    ``call_amount`` is signed (> 0: the counterparty transfers to us) and already rounded;
    it is 0.0 when ``|raw_amount| < MTA``.
    """

    agreement: str
    exposure: float
    held_value: float
    credit_support_amount: float
    raw_amount: float
    return_amount: float
    delivery_amount: float
    call_amount: float

    @property
    def call_required(self) -> bool:
        return self.call_amount != 0.0


def variation_margin(agreement: Agreement, exposure: float, held_value: float) -> VariationMargin:
    """CSA Paragraph 3: what is due, given MTM ``exposure`` and collateral ``held_value``.

    ``held_value`` is signed and after haircuts: > 0 collateral we hold, < 0 collateral we posted.
    """
    if not (math.isfinite(exposure) and math.isfinite(held_value)):
        raise ValueError("exposure and held value must be finite")
    csa = math.copysign(max(abs(exposure) - agreement.threshold, 0.0), exposure)
    csa += agreement.independent_amount
    raw = csa - held_value
    ret = deliver = 0.0
    if abs(raw) >= agreement.minimum_transfer_amount and raw != 0.0:
        sign = 1.0 if raw > 0.0 else -1.0
        # return leg: collateral the payer's side holds from the receiver, given back first
        returnable = max(-sign * held_value, 0.0)
        ret_raw = min(abs(raw), returnable)
        ret = _round_down(ret_raw, agreement.rounding)
        deliver = _round_up(abs(raw) - ret_raw, agreement.rounding)
        ret, deliver = sign * ret, sign * deliver
    return VariationMargin(
        agreement=agreement.name,
        exposure=exposure,
        held_value=held_value,
        credit_support_amount=csa,
        raw_amount=raw,
        return_amount=ret,
        delivery_amount=deliver,
        call_amount=ret + deliver,
    )


# --------------------------------------------------------------------------- call lifecycle


class CallState(StrEnum):
    ISSUED = "issued"
    AGREED = "agreed"
    DISPUTED = "disputed"
    SETTLED = "settled"


class CallEvent(StrEnum):
    AGREE = "agree"
    DISPUTE = "dispute"
    REISSUE = "reissue"
    SETTLE = "settle"


_TRANSITIONS: Mapping[tuple[CallState, CallEvent], CallState] = {
    (CallState.ISSUED, CallEvent.AGREE): CallState.AGREED,
    (CallState.ISSUED, CallEvent.DISPUTE): CallState.DISPUTED,
    (CallState.DISPUTED, CallEvent.AGREE): CallState.AGREED,
    (CallState.DISPUTED, CallEvent.REISSUE): CallState.ISSUED,
    (CallState.AGREED, CallEvent.SETTLE): CallState.SETTLED,
}


class CallStateError(ValueError):
    """An event that the call's state does not allow (e.g. settling a disputed call)."""


@dataclass(frozen=True, slots=True)
class MarginCall:
    """A margin call; ``amount`` is the amount currently claimed or agreed (signed, as VM)."""

    call_id: str
    agreement: str
    amount: float
    state: CallState
    version: int
    issued_ns: int
    updated_ns: int
    settled_amount: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CallTransition:
    """One transition, published losslessly on :func:`calls_channel`; ``seq`` = call version."""

    call_id: str
    agreement: str
    seq: int
    from_state: CallState | None
    to_state: CallState
    event: str
    amount: float
    ts_ns: int
    reason: str = ""


def issue_call(
    vm: VariationMargin, *, call_id: str, ts_ns: int
) -> tuple[MarginCall, CallTransition]:
    """Issue a call for a VM result that requires one (ids and time are injected)."""
    if not vm.call_required:
        raise CallStateError(f"no call due on {vm.agreement}: |{vm.raw_amount:.2f}| < MTA or zero")
    call = MarginCall(call_id, vm.agreement, vm.call_amount, CallState.ISSUED, 1, ts_ns, ts_ns)
    return call, CallTransition(
        call_id, vm.agreement, 1, None, CallState.ISSUED, "issue", call.amount, ts_ns
    )


def apply_call_event(
    call: MarginCall,
    event: CallEvent,
    *,
    ts_ns: int,
    amount: float | None = None,
    reason: str = "",
) -> tuple[MarginCall, CallTransition]:
    """Pure state machine step. ``amount``: the agreed / re-issued / settled amount (default: the
    call's current amount). A dispute keeps the claimed amount and records the reason."""
    target = _TRANSITIONS.get((call.state, event))
    if target is None:
        raise CallStateError(f"call {call.call_id}: cannot {event.value} when {call.state.value}")
    if ts_ns < call.updated_ns:
        raise CallStateError(f"call {call.call_id}: event at {ts_ns} precedes {call.updated_ns}")
    value = call.amount if amount is None else amount
    if not math.isfinite(value):
        raise CallStateError("amount must be finite")
    new = replace(
        call,
        state=target,
        version=call.version + 1,
        updated_ns=ts_ns,
        amount=call.amount if event is CallEvent.DISPUTE else value,
        settled_amount=value if event is CallEvent.SETTLE else call.settled_amount,
        reason=reason,
    )
    return new, CallTransition(
        call.call_id,
        call.agreement,
        new.version,
        call.state,
        target,
        event.value,
        value,
        ts_ns,
        reason,
    )


# --------------------------------------------------------------------------- schedule IM

#: BCBS-IOSCO (2015) Appendix A: standardised initial margin schedule, % of notional.
SCHEDULE_MULTIPLIERS: Mapping[str, tuple[tuple[float, float, str], ...]] = {
    "Rates": (
        (2.0, 0.01, "Interest Rate 0-2 years"),
        (5.0, 0.02, "Interest Rate 2-5 years"),
        (math.inf, 0.04, "Interest Rate 5+ years"),
    ),
    "Credit": (
        (2.0, 0.02, "Credit 0-2 years"),
        (5.0, 0.05, "Credit 2-5 years"),
        (math.inf, 0.10, "Credit 5+ years"),
    ),
    "FX": ((math.inf, 0.06, "FX"),),
    "Equity": ((math.inf, 0.15, "Equity"),),
    "Commodity": ((math.inf, 0.15, "Commodity"),),
    "Other": ((math.inf, 0.15, "Other"),),
}


def year_fraction_act_act_isda(start: dt.date, end: dt.date) -> float:
    """ACT/ACT (ISDA 2006 §4.16(b)): days in each calendar year over that year's length."""
    if end < start:
        return -year_fraction_act_act_isda(end, start)
    total = 0.0
    cur = start
    while cur < end:
        nxt = min(dt.date(cur.year + 1, 1, 1), end)
        days_in_year = (
            366 if (cur.year % 4 == 0 and (cur.year % 100 != 0 or cur.year % 400 == 0)) else 365
        )
        total += (nxt - cur).days / days_in_year
        cur = nxt
    return total


@dataclass(frozen=True, slots=True)
class ScheduleTrade:
    """One trade of a schedule-IM CRIF (PV and notional already in the calculation currency)."""

    trade_id: str
    portfolio: str
    product_class: str
    end_date: dt.date
    notional: float
    pv: float


@dataclass(frozen=True, slots=True)
class ScheduleTradeResult:
    trade_id: str
    portfolio: str
    product_class: str
    maturity: float
    label: str
    multiplier: float
    notional: float
    pv: float
    gross_im: float


@dataclass(frozen=True, slots=True)
class ScheduleNettingSet:
    """Netting set figures per side; RCs in ORE's sign convention (Post side ≤ 0)."""

    portfolio: str
    side: str
    gross_by_product: Mapping[str, float]
    gross_im: float
    gross_rc: float
    net_rc: float
    ngr: float
    schedule_im: float


@dataclass(frozen=True, slots=True)
class ScheduleReport:
    trades: tuple[ScheduleTradeResult, ...]
    netting_sets: tuple[ScheduleNettingSet, ...]

    def total(self, side: str) -> float:
        return sum(n.schedule_im for n in self.netting_sets if n.side == side)


def parse_schedule_crif_csv(text: str) -> list[ScheduleTrade]:
    """Schedule CRIF (ORE): a ``PV`` and a ``Notional`` row per trade, ``end_date`` dd/mm/yyyy or
    ISO; amounts in USD from ``AmountUSD`` (calculation currency USD)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("#")))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = cols
    return schedule_crif_from_records(reader, columns=cols)


def schedule_crif_from_records(
    records: Iterable[Mapping[str, Any]], *, columns: Sequence[str] | None = None
) -> list[ScheduleTrade]:
    """Schedule CRIF records (dicts from CSV or JSON; ``columns`` default: the first record's
    keys) as trades; :class:`CrifError` names the first bad row (1-based) and column."""
    recs = list(records)
    cols = list(columns) if columns is not None else (list(recs[0]) if recs else [])
    for col in ("TradeID", "ProductClass", "RiskType", "AmountUSD", "end_date"):
        if col not in cols:
            raise CrifError(f"schedule CRIF has no {col} column", column=col)
    heads: dict[str, tuple[str, str, dt.date]] = {}
    amounts: dict[tuple[str, str], float] = {}
    for i, rec in enumerate(recs):
        row = i + 1
        rt = str(rec.get("RiskType") or "").strip()
        if rt not in ("PV", "Notional"):
            raise CrifError(f"unknown risk type {rt!r} for schedule IM", row=row, column="RiskType")
        raw = rec.get("AmountUSD")
        try:
            amount = float(raw if raw not in (None, "") else "")
        except (TypeError, ValueError):
            raise CrifError("amount is not a number", row=row, column="AmountUSD") from None
        if not math.isfinite(amount):
            raise CrifError("amount is not finite", row=row, column="AmountUSD")
        pc = str(rec.get("ProductClass") or "").strip()
        if pc not in SCHEDULE_MULTIPLIERS:
            raise CrifError(
                f"unknown schedule product class {pc!r}", row=row, column="ProductClass"
            )
        raw_date = str(rec.get("end_date") or "").strip()
        try:
            end = (
                dt.datetime.strptime(raw_date, "%d/%m/%Y").date()
                if "/" in raw_date
                else dt.date.fromisoformat(raw_date)
            )
        except ValueError:
            raise CrifError(f"bad end date {raw_date!r}", row=row, column="end_date") from None
        tid = str(rec.get("TradeID") or "").strip()
        if not tid:
            raise CrifError("empty trade id", row=row, column="TradeID")
        heads.setdefault(tid, (str(rec.get("PortfolioID") or "Unspecified").strip(), pc, end))
        amounts[(tid, rt)] = amount
    trades = []
    for tid, (pf, pc, end) in heads.items():
        if (tid, "Notional") not in amounts or (tid, "PV") not in amounts:
            raise CrifError(f"trade {tid} needs both a PV and a Notional row", column="RiskType")
        trades.append(
            ScheduleTrade(tid, pf, pc, end, amounts[(tid, "Notional")], amounts[(tid, "PV")])
        )
    return trades


def compute_schedule_im(trades: Sequence[ScheduleTrade], asof: dt.date) -> ScheduleReport:
    """Schedule IM per trade and per netting set, Call and Post (BCBS-IOSCO 2015 App. A).

    Call: gross RC = Σ max(PV, 0), net RC = max(Σ PV, 0); Post: the mirror image, reported as
    ORE does with non-positive RCs (Σ min(PV, 0), min(Σ PV, 0)). NGR = net RC / gross RC, and 1
    when the gross RC is zero (no netting benefit can be shown: net = gross, the prudent choice).
    """
    results = []
    for t in trades:
        mat = year_fraction_act_act_isda(asof, t.end_date)
        mult, label = next(
            (m, lab) for upper, m, lab in SCHEDULE_MULTIPLIERS[t.product_class] if mat < upper
        )
        results.append(
            ScheduleTradeResult(
                t.trade_id,
                t.portfolio,
                t.product_class,
                mat,
                label,
                mult,
                t.notional,
                t.pv,
                mult * abs(t.notional),
            )
        )
    sets = []
    for pf in sorted({r.portfolio for r in results}):
        rs = [r for r in results if r.portfolio == pf]
        gross_by: dict[str, float] = {}
        for r in rs:
            gross_by[r.product_class] = gross_by.get(r.product_class, 0.0) + r.gross_im
        gross = sum(gross_by.values())
        pv = np.array([r.pv for r in rs])
        for side in ("Call", "Post"):
            if side == "Call":
                grc, nrc = float(np.maximum(pv, 0.0).sum()), max(float(pv.sum()), 0.0)
            else:
                grc, nrc = float(np.minimum(pv, 0.0).sum()), min(float(pv.sum()), 0.0)
            ngr = nrc / grc if grc != 0.0 else 1.0
            sets.append(
                ScheduleNettingSet(
                    pf, side, gross_by, gross, grc, nrc, ngr, 0.4 * gross + 0.6 * ngr * gross
                )
            )
    return ScheduleReport(tuple(results), tuple(sets))


# --------------------------------------------------------------------------- allocation


@dataclass(frozen=True, slots=True)
class Asset:
    """A line of inventory: market value available (calculation currency) and its funding cost
    (per unit of market value posted, e.g. 0.0015 for 15 bp)."""

    asset_id: str
    asset_class: str
    available: float
    cost: float


@dataclass(frozen=True, slots=True)
class AllocationResult:
    """Market value of each asset posted to each agreement, its cost and the solver's proof."""

    posted: Mapping[tuple[str, str], float]  # (agreement, asset_id) → market value
    cost: float
    status: str
    dual_objective: float
    duality_gap: float
    coverage: Mapping[str, float]  # agreement → post-haircut value delivered
    #: the certificate's other two parts (LP only; NaN otherwise): the largest violation of
    #: a constraint or x ≥ 0 relative to its right-hand side's scale, and of dual feasibility
    #: (y ≤ 0, reduced costs c − Aᵀy ≥ 0); with both ~0 the dual objective bounds every
    #: allocation, so the gap proves optimality
    primal_residual: float = math.nan
    dual_residual: float = math.nan


def _pairs(
    calls: Mapping[str, float], agreements: Mapping[str, Agreement], assets: Sequence[Asset]
) -> list[tuple[str, Asset, EligibleCollateral]]:
    out = []
    for name in calls:
        for a in assets:
            for e in agreements[name].eligible:
                if e.asset_class == a.asset_class:
                    out.append((name, a, e))
    return out


def allocate_collateral(
    calls: Mapping[str, float], agreements: Mapping[str, Agreement], assets: Sequence[Asset]
) -> AllocationResult:
    """Cheapest collateral to meet every call: an LP solved by HiGHS.

    Variables x[g, a] ≥ 0, market value of asset a posted under agreement g (eligible pairs only).
    minimise Σ cost_a x[g, a] subject to
      Σ_a (1 − h_ga) x[g, a] ≥ call_g                       (each call covered after haircuts)
      Σ_g x[g, a] ≤ available_a                              (inventory)
      Σ_{a ∈ c} (1 − h_ga) x[g, a] ≤ L_gc Σ_a (1 − h_ga) x[g, a]  (concentration, per class c)
    The certificate is checked here, not taken from the solver: the dual objective b·y from
    HiGHS's marginals y, the gap |primal − dual| / max(1, |primal|), and the primal and dual
    residuals (``AllocationResult``): a dual-feasible y makes b·y a lower bound on every
    allocation's cost, so a gap of ~0 proves the allocation optimal.
    """
    for name, amount in calls.items():
        if name not in agreements:
            raise ValueError(f"call on unknown agreement {name!r}")
        if not math.isfinite(amount) or amount < 0.0:
            raise ValueError(f"call amount for {name} must be finite and ≥ 0")
    pairs = _pairs(calls, agreements, assets)
    n = len(pairs)
    c = np.array([a.cost for _, a, _ in pairs])
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    for name, amount in calls.items():
        r = np.array([-(1.0 - e.haircut) if g == name else 0.0 for g, _, e in pairs])
        rows.append(r)
        rhs.append(-amount)
    for a in assets:
        rows.append(np.array([1.0 if x.asset_id == a.asset_id else 0.0 for _, x, _ in pairs]))
        rhs.append(a.available)
    for name in calls:
        for e in agreements[name].eligible:
            if e.concentration_limit >= 1.0:
                continue
            r = np.zeros(n)
            for j, (g, _, ej) in enumerate(pairs):
                if g == name:
                    v = 1.0 - ej.haircut
                    r[j] = v * (
                        (1.0 if ej.asset_class == e.asset_class else 0.0) - e.concentration_limit
                    )
            rows.append(r)
            rhs.append(0.0)
    if n == 0:
        if any(v > 0 for v in calls.values()):
            return AllocationResult({}, math.inf, "infeasible", math.nan, math.nan, {})
        return AllocationResult({}, 0.0, "optimal", 0.0, 0.0, {g: 0.0 for g in calls})
    a_ub = np.vstack(rows)
    b_ub = np.array(rhs)
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=[(0.0, None)] * n, method="highs")
    if res.status != 0:
        return AllocationResult(
            {}, math.inf, "infeasible" if res.status == 2 else res.message, math.nan, math.nan, {}
        )
    y = np.asarray(res.ineqlin.marginals)  # ≤ 0 for A x ≤ b in a minimisation
    dual = float(b_ub @ y)  # lower bounds are 0: no bound term
    primal = float(res.fun)
    gap = abs(primal - dual) / max(1.0, abs(primal))
    x = np.asarray(res.x)
    scale = np.maximum(1.0, np.abs(b_ub))
    primal_residual = max(0.0, float(np.max((a_ub @ x - b_ub) / scale)), float(-x.min()))
    reduced = c - a_ub.T @ y
    dual_residual = max(0.0, float(y.max()), float(-reduced.min()))
    posted = {(g, a.asset_id): float(x[j]) for j, (g, a, _) in enumerate(pairs) if x[j] > 1e-9}
    coverage = {
        g: float(sum((1.0 - e.haircut) * x[j] for j, (gg, _, e) in enumerate(pairs) if gg == g))
        for g in calls
    }
    return AllocationResult(
        posted, primal, "optimal", dual, gap, coverage, primal_residual, dual_residual
    )


def naive_allocation(
    calls: Mapping[str, float], agreements: Mapping[str, Agreement], assets: Sequence[Asset]
) -> AllocationResult:
    """Cheapest-first greedy: calls in the given order, each filled from the eligible asset with
    the lowest haircut-adjusted cost ``cost / (1 − h)`` that is left, within concentration limits
    measured against the call amount. The baseline the LP is compared with."""
    left = {a.asset_id: a.available for a in assets}
    posted: dict[tuple[str, str], float] = {}
    coverage: dict[str, float] = {}
    cost = 0.0
    for name, amount in calls.items():
        ag = agreements[name]
        options = sorted(
            (
                (a.cost / (1.0 - e.haircut), a, e)
                for a in assets
                for e in ag.eligible
                if e.asset_class == a.asset_class
            ),
            key=lambda t: (t[0], t[1].asset_id),
        )
        need = amount
        by_class: dict[str, float] = {}
        for _, a, e in options:
            if need <= 1e-9:
                break
            room = e.concentration_limit * amount - by_class.get(e.asset_class, 0.0)
            value = min(need, left[a.asset_id] * (1.0 - e.haircut), room)
            if value <= 0.0:
                continue
            mv = value / (1.0 - e.haircut)
            left[a.asset_id] -= mv
            by_class[e.asset_class] = by_class.get(e.asset_class, 0.0) + value
            posted[(name, a.asset_id)] = posted.get((name, a.asset_id), 0.0) + mv
            cost += a.cost * mv
            need -= value
        coverage[name] = amount - max(need, 0.0)
        if need > 1e-6:
            return AllocationResult(posted, math.inf, "infeasible", math.nan, math.nan, coverage)
    return AllocationResult(posted, cost, "feasible", math.nan, math.nan, coverage)

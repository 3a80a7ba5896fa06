"""Collateral engine (port 9000): account PnL in, variation-margin calls and agreement state out.

Each configured agreement (CSA, ``engines.collateral.config``) follows one exposure:

* from the bus: ``pnl.<account>`` (``AccountState``, Portfolio) for agreements whose ``account``
  matches; the exposure is the account's mark-to-market, ``equity − starting_cash``;
* from REST: ``POST /collateral/{agreement}/exposure`` (a netting set's MTM from elsewhere).

**Sign convention** (the core's, ISDA CSA Paragraph 3 from our side): exposure > 0 means the
counterparty owes us (our account is up), so we are the secured party and *call* for collateral;
``held`` > 0 is collateral value (after haircuts) we hold, < 0 value we posted; a call amount > 0
is value the counterparty transfers to us, < 0 value we transfer to them.

On every exposure update the credit support amount and the amount due (threshold, independent
amount, MTA, rounding: ``core.variation_margin``) are recomputed and the agreement's state is
published on ``collateral.<agreement>`` (latest-value). A *valuation* — the only moment a call may
be issued — happens on the first update at or after ``next_valuation_ns``, a grid of the
agreement's ``call_frequency`` in event time (5 minutes in the demo, so a replay shows calls);
then a call is issued when one is due and none is open. Every call transition (issue here; agree,
dispute, reissue, settle over REST) is published on ``collateral.calls.<agreement>``
(ordered-lossless) before the state it leads to. Settling adds the settled amount to ``held``.
At most one call is open per agreement; a change of direction waits until it is settled. An
agreement with ``auto_settle`` (the paper demo) has a simulated counterparty: at each valuation a
call still issued or agreed is first agreed and settled in full, so its calls follow the PnL.

Time: exposure updates carry their event time (the PnL's ``event_ns``; a posted exposure's
``event_ns``, default the clock) and must not go back per agreement — a late PnL is counted as bad
input (``late``), a late post answers 409. Call events default to the clock. In a historical
replay, post exposures with the replay's event time. The state's ``updated_ns`` (its time in the
store) is monotone per agreement: the latest of its exposure and call-event times.

Calls and states are stored (``self.storage.records``); on start each agreement's last stored
state is restored (collateral held, exposure, the open call), so a restart continues the same
calls. Call ids are ``<agreement>-<issue event ns>``: deterministic and unique per agreement.

SIMM, schedule IM and allocation requests are computed here on the compute threads
(``run_in_executor`` from ``api``); their inputs are validated by the core (``CrifError`` names row
and column).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import msgspec
from prometheus_client import Counter

from engines.collateral import core
from engines.collateral.config import AgreementTerms, CollateralConfig, load_agreements
from engines.collateral.simm import (
    REPORT_HEADER,
    bundled_calibration,
    bundled_calibrations,
    parse_simm_calibration,
)
from engines.shell import ConflictError, Engine, NotFoundError, StreamInfo
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass, channel
from protocol.records import AccountState, BadInput
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.storage import RecordStore, Storage, StoreUnavailable


class CallView(msgspec.Struct, frozen=True, kw_only=True):
    """A margin call as published, stored and served (``core.MarginCall``'s fields)."""

    call_id: str
    agreement: str
    amount: float
    state: core.CallState
    version: int
    issued_ns: int
    updated_ns: int
    settled_amount: float = 0.0
    reason: str = ""

    @classmethod
    def of(cls, call: core.MarginCall) -> CallView:
        return cls(**dataclasses.asdict(call))

    def margin_call(self) -> core.MarginCall:
        return core.MarginCall(**msgspec.structs.asdict(self))


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One call transition (``collateral.calls.<agreement>``, lossless): ``seq`` is the call's
    version, ``amount`` the amount the event carried, ``call`` the call after it."""

    call_id: str
    agreement: str
    seq: int
    event: str
    from_state: core.CallState | None
    to_state: core.CallState
    amount: float
    ts_ns: int
    reason: str
    call: CallView

    @classmethod
    def of(cls, transition: core.CallTransition, call: core.MarginCall) -> CallRecord:
        return cls(
            call_id=transition.call_id,
            agreement=transition.agreement,
            seq=transition.seq,
            event=transition.event,
            from_state=transition.from_state,
            to_state=transition.to_state,
            amount=transition.amount,
            ts_ns=transition.ts_ns,
            reason=transition.reason,
            call=CallView.of(call),
        )


class AgreementState(msgspec.Struct, frozen=True, kw_only=True):
    """An agreement's collateral state (``collateral.<agreement>``, latest-value).

    ``exposure_source``: ``none`` (no exposure yet), ``pnl`` or ``posted``; ``required`` the
    unrounded credit support amount minus ``held``; ``due`` what a valuation now would call
    (rounded, 0 under the MTA); ``next_valuation_ns`` the event time from which the next call may
    be issued."""

    agreement: str
    counterparty: str
    account: str
    currency: str
    updated_ns: int
    exposure_ns: int
    exposure: float
    exposure_source: str
    held: float
    credit_support_amount: float
    required: float
    due: float
    open_call: CallView | None
    calls_issued: int
    next_valuation_ns: int


class LateExposure(Exception):
    """An exposure older than the one in force for the agreement."""


class CollateralEngine(Engine[CollateralConfig]):
    """Agreements' VM and call lifecycle on the bus; SIMM, schedule IM, allocation on request."""

    config_type = CollateralConfig

    def __init__(
        self,
        config: CollateralConfig,
        *,
        bus: Bus,
        clock: Clock,
        storage: Storage | None = None,
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.terms: dict[str, AgreementTerms] = {
            t.name: t for t in load_agreements(config.agreements)
        }
        self.by_account: dict[str, list[str]] = {}
        for terms in self.terms.values():
            if terms.account:
                self.by_account.setdefault(terms.account, []).append(terms.name)
        self.states: dict[str, AgreementState] = {
            name: self._initial_state(terms) for name, terms in self.terms.items()
        }
        #: calls by id, oldest first; settled ones past ``max_calls_listed`` are forgotten here
        #: (the store keeps every transition)
        self.calls: OrderedDict[str, core.MarginCall] = OrderedDict()
        self.call_store: RecordStore[CallRecord] = self.storage.records(
            self.name,
            "collateral.calls",
            CallRecord,
            key=attrgetter("agreement"),
            time=attrgetter("ts_ns"),
        )
        self.state_store: RecordStore[AgreementState] = self.storage.records(
            self.name,
            "collateral",
            AgreementState,
            key=attrgetter("agreement"),
            time=attrgetter("updated_ns"),
        )
        self._lock = asyncio.Lock()
        self._restore_issue: str | None = None
        self.transitions_total = Counter(
            "nautilus_collateral_call_transitions",
            "margin-call transitions published, by event",
            ["event"],
            registry=self.metrics.registry,
        )
        self.exposures_total = Counter(
            "nautilus_collateral_exposure_updates",
            "exposure updates applied, by source",
            ["source"],
            registry=self.metrics.registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {"pnl.*": on(AccountState, self.on_pnl)}

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo(
                "collateral.*",
                DeliveryClass.LATEST_VALUE,
                "per agreement: exposure, collateral held, amount due, open margin call",
            ),
            StreamInfo(
                "collateral.calls.*",
                DeliveryClass.ORDERED_LOSSLESS,
                "every margin-call transition (issued, agreed, disputed, settled)",
            ),
        )

    def declared_channels(self) -> Sequence[str]:
        return tuple(
            name
            for agreement in self.terms
            for name in (
                channel("collateral", agreement),
                channel("collateral.calls", agreement),
            )
        )

    def health_extra(self) -> Mapping[str, object]:
        return {
            "agreements": len(self.terms),
            "open_calls": sum(s.open_call is not None for s in self.states.values()),
        }

    def health_issues(self) -> list[str]:
        return [self._restore_issue] if self._restore_issue else []

    async def on_start(self) -> None:
        await self._restore()
        await self.run_in_executor(bundled_calibrations)  # parsed once, off the loop
        try:
            bundled_calibration(self.config.simm_version)
        except core.CrifError as exc:
            raise ValueError(f"simm_version: {exc}") from None

    async def _restore(self) -> None:
        """Continue from each agreement's last stored state (held, exposure, open call)."""
        for name, terms in self.terms.items():
            try:
                stored = await self.state_store.latest(name)
            except StoreUnavailable as exc:
                self._restore_issue = f"state not restored from storage: {exc}"
                self.record_error(self._restore_issue, exc_info=False)
                return
            if stored is None:
                continue
            vm = core.variation_margin(terms.agreement, stored.exposure, stored.held)
            self.states[name] = self._state(
                terms,
                vm,
                updated_ns=stored.updated_ns,
                exposure_ns=stored.exposure_ns,
                source=stored.exposure_source,
                open_call=stored.open_call,
                calls_issued=stored.calls_issued,
                next_valuation_ns=stored.next_valuation_ns,
            )
            if stored.open_call is not None:
                self.calls[stored.open_call.call_id] = stored.open_call.margin_call()

    # ── exposures ──────────────────────────────────────────────────────────────────────────

    async def on_pnl(self, account: AccountState, envelope: Envelope) -> None:
        names = self.by_account.get(account.account)
        if not names:
            return  # an account no agreement follows
        exposure = float(account.equity - account.starting_cash)
        if not math.isfinite(exposure):
            raise BadInput("non_finite", "equity or starting_cash is not finite", "equity")
        for name in names:
            if account.currency != self.terms[name].agreement.currency:
                self.count_bad_input("pnl.*", "currency_mismatch")
                continue
            try:
                await self.apply_exposure(name, exposure, account.event_ns, "pnl")
            except LateExposure:
                self.count_bad_input("pnl.*", "late")

    async def post_exposure(
        self, name: str, exposure: float, event_ns: int | None = None
    ) -> AgreementState:
        """REST: an exposure for ``name`` at ``event_ns`` (default: the clock)."""
        if name not in self.terms:
            raise NotFoundError(f"no agreement {name!r}", parameter="agreement")
        at = self.clock.now_ns() if event_ns is None else event_ns
        try:
            return await self.apply_exposure(name, exposure, at, "posted")
        except LateExposure as exc:
            raise ConflictError(str(exc), parameter="event_ns", code="late") from None

    async def apply_exposure(
        self, name: str, exposure: float, event_ns: int, source: str
    ) -> AgreementState:
        """Revalue ``name`` at ``exposure``; at a valuation, issue a call when one is due."""
        terms = self.terms[name]
        async with self._lock:
            state = self.states[name]
            if event_ns < state.exposure_ns:
                raise LateExposure(
                    f"exposure at {event_ns} precedes the one in force at {state.exposure_ns}"
                )
            open_call, issued, held = state.open_call, state.calls_issued, state.held
            next_valuation = state.next_valuation_ns
            records: list[CallRecord] = []
            valuation = event_ns >= next_valuation
            if valuation:
                interval = terms.call_interval_ns
                next_valuation = (event_ns // interval + 1) * interval if interval else event_ns + 1
                if open_call is not None and terms.auto_settle:
                    records += _auto_settle(open_call.margin_call(), event_ns)
                    if records:
                        open_call, held = None, held + records[-1].call.settled_amount
            vm = core.variation_margin(terms.agreement, exposure, held)
            if valuation and open_call is None and vm.call_required:
                call, transition = core.issue_call(vm, call_id=f"{name}-{event_ns}", ts_ns=event_ns)
                records.append(CallRecord.of(transition, call))
                open_call, issued = records[-1].call, issued + 1
            new = self._state(
                terms,
                vm,
                updated_ns=max(state.updated_ns, event_ns),
                exposure_ns=event_ns,
                source=source,
                open_call=open_call,
                calls_issued=issued,
                next_valuation_ns=next_valuation,
            )
            self.exposures_total.labels(source).inc()
            await self._commit(new, records)
            return new

    # ── call lifecycle ─────────────────────────────────────────────────────────────────────

    async def call_event(
        self,
        call_id: str,
        event: core.CallEvent,
        *,
        amount: float | None = None,
        reason: str = "",
        event_ns: int | None = None,
    ) -> CallRecord:
        """REST: agree / dispute / reissue / settle a call. 404 for an unknown call, 409 naming
        ``event`` for a transition its state does not allow (or ``event_ns`` for a time before
        the call's last change)."""
        async with self._lock:
            call = self.calls.get(call_id)
            if call is None:
                raise NotFoundError(f"no margin call {call_id!r}", parameter="call_id")
            at = self.clock.now_ns() if event_ns is None else event_ns
            if at < call.updated_ns:
                raise ConflictError(
                    f"event at {at} precedes the call's last change at {call.updated_ns}",
                    parameter="event_ns",
                    code="late",
                )
            try:
                new_call, transition = core.apply_call_event(
                    call, event, ts_ns=at, amount=amount, reason=reason
                )
            except core.CallStateError as exc:
                raise ConflictError(str(exc), parameter="event", code="bad_transition") from None
            record = CallRecord.of(transition, new_call)
            terms = self.terms[call.agreement]
            state = self.states[call.agreement]
            settled = event is core.CallEvent.SETTLE
            held = state.held + new_call.settled_amount if settled else state.held
            vm = core.variation_margin(terms.agreement, state.exposure, held)
            new = self._state(
                terms,
                vm,
                updated_ns=max(state.updated_ns, at),
                exposure_ns=state.exposure_ns,
                source=state.exposure_source,
                open_call=None if settled else record.call,
                calls_issued=state.calls_issued,
                next_valuation_ns=state.next_valuation_ns,
            )
            await self._commit(new, [record])
            return record

    def list_calls(
        self, *, state: core.CallState | None = None, agreement: str | None = None
    ) -> list[CallView]:
        return [
            CallView.of(c)
            for c in self.calls.values()
            if (state is None or c.state is state)
            and (agreement is None or c.agreement == agreement)
        ]

    def call(self, call_id: str) -> CallView | None:
        found = self.calls.get(call_id)
        return None if found is None else CallView.of(found)

    async def _commit(self, state: AgreementState, records: Sequence[CallRecord]) -> None:
        """Publish the transitions then the state; store them; keep the calls."""
        for record in records:
            published = await self.publish(
                channel("collateral.calls", record.agreement),
                msgspec.to_builtins(record),
                event_ns=record.ts_ns,
            )
            self.call_store.append([record], seqs=[published.seq])
            self.transitions_total.labels(record.event).inc()
            self._keep_call(record.call.margin_call())
        self.states[state.agreement] = state
        published = await self.publish(
            channel("collateral", state.agreement),
            msgspec.to_builtins(state),
            event_ns=state.updated_ns,
        )
        self.state_store.append([state], seqs=[published.seq])

    def _keep_call(self, call: core.MarginCall) -> None:
        self.calls[call.call_id] = call
        self.calls.move_to_end(call.call_id)
        excess = len(self.calls) - self.config.max_calls_listed
        if excess > 0:
            settled = [cid for cid, c in self.calls.items() if c.state is core.CallState.SETTLED][
                :excess
            ]
            for cid in settled:
                del self.calls[cid]

    def _initial_state(self, terms: AgreementTerms) -> AgreementState:
        vm = core.variation_margin(terms.agreement, 0.0, terms.initial_held)
        return self._state(
            terms,
            vm,
            updated_ns=0,
            exposure_ns=0,
            source="none",
            open_call=None,
            calls_issued=0,
            next_valuation_ns=0,
        )

    @staticmethod
    def _state(
        terms: AgreementTerms,
        vm: core.VariationMargin,
        *,
        updated_ns: int,
        exposure_ns: int,
        source: str,
        open_call: CallView | None,
        calls_issued: int,
        next_valuation_ns: int,
    ) -> AgreementState:
        return AgreementState(
            agreement=terms.name,
            counterparty=terms.agreement.counterparty,
            account=terms.account,
            currency=terms.agreement.currency,
            updated_ns=updated_ns,
            exposure_ns=exposure_ns,
            exposure=vm.exposure,
            exposure_source=source,
            held=vm.held_value,
            credit_support_amount=vm.credit_support_amount,
            required=vm.raw_amount,
            due=vm.call_amount,
            open_call=open_call,
            calls_issued=calls_issued,
            next_valuation_ns=next_valuation_ns,
        )

    # ── compute on request (compute threads) ───────────────────────────────────────────────

    def simm(
        self,
        crif: str | list[dict[str, Any]],
        *,
        version: str,
        mpor: int,
        calibration_xml: str | None = None,
        calculation_currency: str = "USD",
        fx_rates: Mapping[str, float] | None = None,
        enforce_regulations: bool = True,
    ) -> core.SimmReport:
        """SIMM of a CRIF (CSV text or JSON rows) with a bundled calibration or the user's ORE
        XML; ``CrifError`` names the bad row and column (or ``version``/``calibration``)."""
        cal = (
            bundled_calibration(version)
            if calibration_xml is None
            else core.select_calibration(parse_simm_calibration(calibration_xml), version)
        )
        parsed = (
            core.parse_crif_csv(crif, calculation_currency=calculation_currency, fx_rates=fx_rates)
            if isinstance(crif, str)
            else core.crif_from_records(
                crif, calculation_currency=calculation_currency, fx_rates=fx_rates
            )
        )
        return core.compute_simm(
            parsed, cal, mpor_days=mpor, enforce_regulations=enforce_regulations
        )

    def schedule_report(self, crif: str | list[dict[str, Any]], asof: dt.date) -> dict[str, Any]:
        """Schedule IM per trade and per netting set in ORE's ``im_schedule_trade.csv`` /
        ``im_schedule.csv`` layouts (``None`` where ORE writes ``#N/A``), full precision."""
        trades = (
            core.parse_schedule_crif_csv(crif)
            if isinstance(crif, str)
            else core.schedule_crif_from_records(crif)
        )
        report = core.compute_schedule_im(trades, asof)
        trade_rows = [
            {
                "TradeId": r.trade_id,
                "Portfolio": r.portfolio,
                "ProductClass": r.product_class,
                "EndDate": t.end_date.isoformat(),
                "Maturity": r.maturity,
                "Label": r.label,
                "Multiplier": r.multiplier,
                "Notional(Base)": r.notional,
                "PV(Base)": r.pv,
                "BaseCurrency": "USD",
                "GrossIM(Base)": r.gross_im,
            }
            for t, r in zip(trades, report.trades, strict=True)
        ]
        set_rows: list[dict[str, Any]] = []
        for side in ("Call", "Post"):
            for ns in (n for n in report.netting_sets if n.side == side):
                for pc, gross in ns.gross_by_product.items():
                    set_rows.append(_schedule_row(ns.portfolio, pc, side, gross, None, gross))
                set_rows.append(
                    _schedule_row(
                        ns.portfolio,
                        "All",
                        side,
                        ns.gross_im,
                        (ns.gross_rc, ns.net_rc, ns.ngr),
                        ns.schedule_im,
                    )
                )
            set_rows.append(_schedule_row("All", "All", side, None, None, report.total(side)))
        return {
            "asof": asof.isoformat(),
            "totals": {side: report.total(side) for side in ("Call", "Post")},
            "trades": trade_rows,
            "netting_sets": set_rows,
        }

    def allocation(
        self,
        calls: Mapping[str, float],
        agreements: Mapping[str, core.Agreement],
        assets: Sequence[core.Asset],
    ) -> dict[str, Any]:
        """The LP's allocation (HiGHS; its optimality certificate: duality gap, primal and dual
        residuals) beside cheapest-first's."""
        best = core.allocate_collateral(calls, agreements, assets)
        naive = core.naive_allocation(calls, agreements, assets)
        saving = naive.cost - best.cost
        return {
            "calls": dict(calls),
            **_allocation_payload(best, agreements, assets),
            "dual_objective": _finite(best.dual_objective),
            "duality_gap": _finite(best.duality_gap),
            "primal_residual": _finite(best.primal_residual),
            "dual_residual": _finite(best.dual_residual),
            "naive": _allocation_payload(naive, agreements, assets),
            "saving": _finite(saving) if math.isfinite(best.cost) else None,
        }

    @staticmethod
    def simm_payload(report: core.SimmReport, *, version: str, mpor: int) -> dict[str, Any]:
        """The SIMM answer: totals per side, the worst-case regulation per portfolio and side,
        and the report rows keyed by ORE's ``simm.csv`` column names."""
        columns = REPORT_HEADER.split(",")
        return {
            "version": version,
            "mpor": mpor,
            "totals": {side: report.total(side) for side in ("Call", "Post")},
            "results": [
                {
                    "portfolio": r.portfolio,
                    "side": r.side,
                    "regulation": r.regulation,
                    "total": r.total,
                    "by_regulation": dict(r.by_regulation),
                }
                for r in report.results
            ],
            "rows": [dict(zip(columns, _simm_row_values(r), strict=True)) for r in report.rows],
        }

    def open_calls_on_us(self) -> dict[str, float]:
        """Value we must deliver per agreement: the open calls with a negative amount."""
        return {
            s.agreement: -s.open_call.amount
            for s in self.states.values()
            if s.open_call is not None and s.open_call.amount < 0.0
        }


def _simm_row_values(row: core.SimmRow) -> tuple[object, ...]:
    return (
        row.portfolio,
        row.product_class,
        row.risk_class,
        row.margin_type,
        row.bucket,
        row.side,
        row.regulation,
        row.initial_margin,
        row.currency,
        row.calculation_currency,
    )


def _auto_settle(call: core.MarginCall, ts_ns: int) -> list[CallRecord]:
    """The simulated counterparty of ``auto_settle``: an issued or agreed call still open at
    the next valuation is agreed and settled in full. A disputed call, or one changed over REST
    after ``ts_ns``, is left to a person (no transitions)."""
    if call.state not in (core.CallState.ISSUED, core.CallState.AGREED) or ts_ns < call.updated_ns:
        return []
    out = []
    if call.state is core.CallState.ISSUED:
        call, transition = core.apply_call_event(
            call, core.CallEvent.AGREE, ts_ns=ts_ns, reason="auto_settle"
        )
        out.append(CallRecord.of(transition, call))
    call, transition = core.apply_call_event(
        call, core.CallEvent.SETTLE, ts_ns=ts_ns, reason="auto_settle"
    )
    out.append(CallRecord.of(transition, call))
    return out


def _schedule_row(
    portfolio: str,
    product_class: str,
    side: str,
    gross: float | None,
    rcs: tuple[float, float, float] | None,
    schedule_im: float,
) -> dict[str, Any]:
    grc, nrc, ngr = rcs if rcs is not None else (None, None, None)
    return {
        "Portfolio": portfolio,
        "ProductClass": product_class,
        "GrossIM": gross,
        "GrossCurrentRC": grc,
        "NetCurrentRC": nrc,
        "NetToGrossRatio": ngr,
        "Side": side,
        "Regulation": "Unspecified",
        "ScheduleIM": schedule_im,
        "Currency": "USD",
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _allocation_payload(
    result: core.AllocationResult,
    agreements: Mapping[str, core.Agreement],
    assets: Sequence[core.Asset],
) -> dict[str, Any]:
    by_id = {a.asset_id: a for a in assets}
    posted = []
    for (agreement, asset_id), market_value in result.posted.items():
        asset = by_id[asset_id]
        haircut = agreements[agreement].haircut(asset.asset_class) or 0.0
        posted.append(
            {
                "agreement": agreement,
                "asset_id": asset_id,
                "asset_class": asset.asset_class,
                "market_value": market_value,
                "haircut": haircut,
                "value": market_value * (1.0 - haircut),
                "cost": market_value * asset.cost,
            }
        )
    return {
        "status": result.status,
        "cost": _finite(result.cost),
        "posted": posted,
        "coverage": dict(result.coverage),
    }

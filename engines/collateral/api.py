"""Collateral REST: agreements and their state, posted exposures, the margin-call lifecycle, and
SIMM, schedule IM and allocation on request.

* ``GET /collateral/agreements`` — the configured CSAs;
* ``GET /collateral/{agreement}`` — exposure, collateral held, amount due, open call (404 for an
  unknown agreement); ``GET /collateral/{agreement}/history`` and ``…/calls`` — stored states and
  call transitions (``from``, ``to``, ``limit``, ``cursor``);
* ``POST /collateral/{agreement}/exposure`` — ``{"exposure": 1.5e6, "event_ns": …}`` (``event_ns``
  default: the clock; one older than the exposure in force → 409 ``event_ns``): revalues and,
  at a valuation, issues a call; answers the new state;
* ``GET /collateral/calls?state=&agreement=`` — calls known to this process (open ones survive a
  restart; settled history is in ``…/calls``); ``GET /collateral/calls/{call_id}``;
* ``POST /collateral/calls/{call_id}`` — ``{"event": "agree"|"dispute"|"reissue"|"settle",
  "amount": …, "reason": "…", "event_ns": …}``: a transition the call's state does not allow → 409
  naming ``event``; answers the transition and the call after it;
* ``POST /collateral/simm`` — a CRIF as ``text/csv`` (ORE's columns; query ``version``, ``mpor``,
  ``calculation_currency``) or JSON ``{"crif": [{…}, …], "version", "mpor", "calibration": "<ORE
  simmcalibration.xml>", "calculation_currency", "fx_rates", "enforce_regulations"}`` (query
  values are the fallback). ``format=csv`` answers ORE's ``simm.csv`` text, else JSON rows keyed by
  ORE's columns. A bad CRIF cell → 400 with ``parameter`` ``crif[i].Column`` (``i`` the 0-based
  data row; the message gives the 1-based row), a missing column ``crif.Column``, an unknown
  calibration ``version``, a bad calibration file ``calibration``, an MPOR it lacks ``mpor``;
* ``POST /collateral/schedule-im`` — a schedule CRIF (``text/csv`` with query ``asof``, or JSON
  ``{"crif": [...], "asof": "2020-12-28"}``) → per-trade and per-netting-set schedule IM in ORE's
  ``im_schedule_trade.csv`` / ``im_schedule.csv`` layouts;
* ``POST /collateral/allocate`` — ``{"inventory": [{"asset_id", "asset_class", "available",
  "cost"}], "calls": {"<agreement>": value}, "agreements": [<as in the agreements file>]}``
  (``calls`` default: the open calls we must meet; ``agreements`` add to or replace configured
  ones for this request) → the LP's allocation, its duality gap, and cheapest-first's beside it.

Compute runs on the engine's compute threads; a CRIF is limited to ``max_crif_rows`` rows and an
inventory to ``max_inventory`` lines (400 naming ``crif`` / ``inventory``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import falcon
import falcon.asgi
import msgspec

from engines.collateral import core
from engines.collateral.config import AgreementError, AgreementSpec, agreement_terms
from engines.collateral.service import AgreementState, CallRecord, CallView
from engines.shell import NotFoundError, Route, ValidationError
from engines.shell.openapi import ByMethod, Items
from engines.shell.params import query_enum, query_int
from engines.shell.rest import HistoryResource, media, read_body, read_body_bytes

if TYPE_CHECKING:
    from engines.collateral.service import CollateralEngine

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
EventNs = Annotated[int, msgspec.Meta(ge=0)]


def routes(engine: CollateralEngine) -> Sequence[Route]:
    return (
        ("/collateral/agreements", AgreementsResource(engine)),
        ("/collateral/calls", CallsResource(engine)),
        ("/collateral/calls/{call_id}", CallResource(engine)),
        ("/collateral/simm", SimmResource(engine)),
        ("/collateral/schedule-im", ScheduleImResource(engine)),
        ("/collateral/allocate", AllocateResource(engine)),
        ("/collateral/{agreement}", AgreementResource(engine)),
        ("/collateral/{agreement}/exposure", ExposureResource(engine)),
        ("/collateral/{agreement}/history", HistoryResource(engine.state_store, key="agreement")),
        ("/collateral/{agreement}/calls", HistoryResource(engine.call_store, key="agreement")),
    )


# ── agreements and exposures ───────────────────────────────────────────────────────────────


class AgreementsResource:
    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {
            "agreements": [
                {
                    "name": t.name,
                    "counterparty": t.agreement.counterparty,
                    "account": t.account,
                    "currency": t.agreement.currency,
                    "threshold": t.agreement.threshold,
                    "minimum_transfer_amount": t.agreement.minimum_transfer_amount,
                    "independent_amount": t.agreement.independent_amount,
                    "rounding": t.agreement.rounding,
                    "call_frequency": t.agreement.call_frequency,
                    "call_interval_ns": t.call_interval_ns,
                    "initial_held": t.initial_held,
                    "auto_settle": t.auto_settle,
                    "eligible": [
                        {
                            "asset_class": e.asset_class,
                            "haircut": e.haircut,
                            "concentration_limit": e.concentration_limit,
                        }
                        for e in t.agreement.eligible
                    ],
                }
                for t in self._engine.terms.values()
            ]
        }


class AgreementResource:
    response_type = AgreementState

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, agreement: str
    ) -> None:
        state = self._engine.states.get(agreement)
        if state is None:
            raise NotFoundError(f"no agreement {agreement!r}", parameter="agreement")
        resp.media = media(state)


class ExposureBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exposure: float
    event_ns: EventNs | None = None


class ExposureResource:
    body_type = ExposureBody
    response_type = AgreementState

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, agreement: str
    ) -> None:
        body = await read_body(req, ExposureBody)
        state = await self._engine.post_exposure(agreement, body.exposure, body.event_ns)
        resp.media = media(state)


# ── the call lifecycle ─────────────────────────────────────────────────────────────────────


class CallsResource:
    response_type = Items(CallView, name="calls")

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        state = query_enum(req, "state", core.CallState)
        agreement = req.get_param("agreement") or None
        if agreement is not None and agreement not in self._engine.terms:
            raise NotFoundError(f"no agreement {agreement!r}", parameter="agreement")
        calls = self._engine.list_calls(state=state, agreement=agreement)
        resp.media = {"calls": [media(c) for c in calls]}


class CallEventBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    event: core.CallEvent
    amount: float | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1_000)] = ""
    event_ns: EventNs | None = None


class CallResource:
    body_type = CallEventBody
    response_type = ByMethod(get=CallView, post=CallRecord)

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, call_id: str
    ) -> None:
        call = self._engine.call(call_id)
        if call is None:
            raise NotFoundError(f"no margin call {call_id!r}", parameter="call_id")
        resp.media = media(call)

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, call_id: str
    ) -> None:
        body = await read_body(req, CallEventBody)
        record = await self._engine.call_event(
            call_id, body.event, amount=body.amount, reason=body.reason, event_ns=body.event_ns
        )
        resp.media = media(record)


# ── SIMM and schedule IM ───────────────────────────────────────────────────────────────────


class SimmBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    crif: list[dict[str, Any]]
    version: str | None = None
    mpor: int | None = None
    calibration: str | None = None
    calculation_currency: Currency | None = None
    fx_rates: dict[Currency, Annotated[float, msgspec.Meta(gt=0.0)]] | None = None
    enforce_regulations: bool = True


class SimmResource:
    body_type = SimmBody

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        engine = self._engine
        as_csv = _format(req)
        version = req.get_param("version") or engine.config.simm_version
        mpor = query_int(req, "mpor", default=10)
        ccy = req.get_param("calculation_currency") or "USD"
        crif: str | list[dict[str, Any]]
        calibration: str | None = None
        fx_rates: dict[str, float] | None = None
        enforce = True
        if _is_csv(req):
            crif = await _csv_body(req, engine.config.max_crif_rows)
        else:
            body = await read_body(req, SimmBody)
            _check_rows(body.crif, engine.config.max_crif_rows)
            crif, calibration, fx_rates = body.crif, body.calibration, body.fx_rates
            version = body.version or version
            mpor = body.mpor if body.mpor is not None else mpor
            ccy = body.calculation_currency or ccy
            enforce = body.enforce_regulations
        try:
            report = await engine.run_in_executor(
                engine.simm,
                crif,
                version=version,
                mpor=mpor,
                calibration_xml=calibration,
                calculation_currency=ccy,
                fx_rates=fx_rates,
                enforce_regulations=enforce,
            )
        except core.CrifError as exc:
            raise ValidationError(str(exc), parameter=crif_parameter(exc)) from None
        if as_csv:
            resp.content_type = "text/csv"
            resp.text = report.to_csv()
        else:
            resp.media = {
                **engine.simm_payload(report, version=version, mpor=mpor),
                "calculation_currency": ccy,
            }


class ScheduleBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    crif: list[dict[str, Any]]
    asof: dt.date


class ScheduleImResource:
    body_type = ScheduleBody

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        engine = self._engine
        crif: str | list[dict[str, Any]]
        if _is_csv(req):
            raw = req.get_param("asof")
            if not raw:
                raise ValidationError("asof (YYYY-MM-DD) is required", parameter="asof")
            try:
                asof = dt.date.fromisoformat(raw)
            except ValueError:
                raise ValidationError(f"asof {raw!r} is not a date", parameter="asof") from None
            crif = await _csv_body(req, engine.config.max_crif_rows)
        else:
            body = await read_body(req, ScheduleBody)
            _check_rows(body.crif, engine.config.max_crif_rows)
            crif, asof = body.crif, body.asof
        try:
            resp.media = await engine.run_in_executor(engine.schedule_report, crif, asof)
        except core.CrifError as exc:
            raise ValidationError(str(exc), parameter=crif_parameter(exc)) from None


def crif_parameter(exc: core.CrifError) -> str:
    """Where a ``CrifError`` points, as a request parameter: ``crif[i].Column`` for a cell
    (``i`` = the 0-based data row), ``crif.Column`` for a missing column, or the request field
    (``version``, ``calibration``, ``mpor``)."""
    if exc.column in ("version", "calibration"):
        return exc.column
    if exc.column == "mporDays":
        return "mpor"
    if exc.row is not None:
        return f"crif[{exc.row - 1}].{exc.column}" if exc.column else f"crif[{exc.row - 1}]"
    return f"crif.{exc.column}" if exc.column else "crif"


def _is_csv(req: falcon.asgi.Request) -> bool:
    return (req.content_type or "").split(";")[0].strip().lower() == "text/csv"


def _format(req: falcon.asgi.Request) -> bool:
    """``format=csv`` → True, ``json`` (default) → False."""
    value = req.get_param("format") or "json"
    if value not in ("json", "csv"):
        raise ValidationError(f"format must be json or csv, got {value!r}", parameter="format")
    return value == "csv"


async def _csv_body(req: falcon.asgi.Request, max_rows: int) -> str:
    raw = await read_body_bytes(req)  # 413 past the app's body limit, chunked bodies too
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("CSV body is not UTF-8", parameter="body") from None
    if not text.strip():
        raise ValidationError("a CSV body with a header row is required", parameter="body")
    rows = sum(1 for line in text.splitlines() if line.strip()) - 1
    if rows > max_rows:
        raise ValidationError(f"at most {max_rows} CRIF rows per request", parameter="crif")
    return text


def _check_rows(rows: list[dict[str, Any]], max_rows: int) -> None:
    if not rows:
        raise ValidationError("crif must be a non-empty list of rows", parameter="crif")
    if len(rows) > max_rows:
        raise ValidationError(f"at most {max_rows} CRIF rows per request", parameter="crif")


# ── allocation ─────────────────────────────────────────────────────────────────────────────


class InventoryLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    asset_id: Annotated[str, msgspec.Meta(min_length=1)]
    asset_class: Annotated[str, msgspec.Meta(min_length=1)]
    available: Annotated[float, msgspec.Meta(ge=0.0)]
    cost: float


class AllocateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    inventory: list[InventoryLine]
    calls: dict[str, float] | None = None
    agreements: list[AgreementSpec] = msgspec.field(default_factory=list)


class AllocateResource:
    body_type = AllocateBody

    def __init__(self, engine: CollateralEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        engine = self._engine
        body = await read_body(req, AllocateBody)
        try:
            extra = agreement_terms(body.agreements)
        except AgreementError as exc:
            raise ValidationError(exc.message, parameter=exc.field) from None
        agreements = {name: t.agreement for name, t in engine.terms.items()}
        agreements.update({t.name: t.agreement for t in extra})
        calls = engine.open_calls_on_us() if body.calls is None else body.calls
        for name, amount in calls.items():
            if name not in agreements:
                raise ValidationError(f"no agreement {name!r}", parameter=f"calls.{name}")
            if not (math.isfinite(amount) and amount >= 0.0):
                raise ValidationError(
                    f"call amount {amount} must be finite and >= 0", parameter=f"calls.{name}"
                )
        if not body.inventory:
            raise ValidationError("inventory must be a non-empty list", parameter="inventory")
        if len(body.inventory) > engine.config.max_inventory:
            raise ValidationError(
                f"at most {engine.config.max_inventory} inventory lines", parameter="inventory"
            )
        seen: set[str] = set()
        for i, line in enumerate(body.inventory):
            if line.asset_id in seen:
                raise ValidationError(
                    f"asset {line.asset_id!r} listed twice", parameter=f"inventory[{i}].asset_id"
                )
            seen.add(line.asset_id)
        assets = [
            core.Asset(x.asset_id, x.asset_class, x.available, x.cost) for x in body.inventory
        ]
        resp.media = await engine.run_in_executor(engine.allocation, calls, agreements, assets)

"""Collateral's settings (``NAUTILUS_COLLATERAL_*``) and its agreements file.

The agreements (CSAs) are configuration, not code: a JSON file (``agreements``; "" = the bundled
demo, ``data/agreements.json``, one agreement ``paper`` on the paper account) of the shape::

    {"agreements": [{"name": "paper", "counterparty": "DEMO-BROKER", "account": "paper",
                     "currency": "USD", "threshold": 0, "minimum_transfer_amount": 100,
                     "independent_amount": 0, "rounding": 10, "call_frequency": "5m",
                     "held": 0, "auto_settle": true,
                     "eligible": [{"asset_class": "cash.USD", "haircut": 0.0},
                                  {"asset_class": "equity", "haircut": 0.15,
                                   "concentration_limit": 0.3}]}]}

``name`` is the agreement's channel key (``collateral.<name>``, ``collateral.calls.<name>``);
``account`` the Portfolio account whose MTM is the exposure ("" = exposures are only posted over
REST); ``call_frequency`` how often, in event time, a valuation may issue a call (``daily``,
``hourly``, or a count and a unit: ``30s``, ``5m``, ``4h``, ``1d``; ``0s`` = on every update);
``held`` the collateral value held at start (after haircuts; < 0: posted by us); ``auto_settle``
makes the counterparty a simulated one that agrees and settles in full, at the next valuation,
any call still issued or agreed (the paper demo: its calls follow the replay's PnL). A file that
does not match fails the engine's start with a ``ValueError`` naming the field
(``agreements[0].threshold``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec

from engines.collateral.core import Agreement, EligibleCollateral
from engines.shell import EngineConfig
from protocol.records import error_path
from realtime.config import described

#: Paths under ``/collateral/`` that are routes, so never agreement names.
RESERVED_NAMES = frozenset({"agreements", "calls", "simm", "schedule-im", "allocate"})
NANOS_PER_UNIT = {"s": 10**9, "m": 60 * 10**9, "h": 3_600 * 10**9, "d": 86_400 * 10**9}
NAMED_FREQUENCIES = {"daily": 86_400 * 10**9, "hourly": 3_600 * 10**9}
_FREQUENCY = re.compile(r"^(\d+)([smhd])$")

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]


class EligibleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An eligible collateral class: its valuation haircut and concentration limit."""

    asset_class: Annotated[str, msgspec.Meta(min_length=1)]
    haircut: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)]
    concentration_limit: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0


class AgreementSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One CSA as the agreements file (and ``POST /collateral/allocate``) spells it."""

    name: Name
    counterparty: Annotated[str, msgspec.Meta(min_length=1)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    account: str = ""
    threshold: NonNegative = 0.0
    minimum_transfer_amount: NonNegative = 0.0
    independent_amount: float = 0.0
    rounding: NonNegative = 0.0
    eligible: list[EligibleSpec] = msgspec.field(default_factory=list)
    call_frequency: str = "daily"
    held: float = 0.0
    auto_settle: bool = False

    def agreement(self) -> Agreement:
        return Agreement(
            name=self.name,
            counterparty=self.counterparty,
            currency=self.currency,
            threshold=self.threshold,
            minimum_transfer_amount=self.minimum_transfer_amount,
            independent_amount=self.independent_amount,
            rounding=self.rounding,
            eligible=tuple(
                EligibleCollateral(e.asset_class, e.haircut, e.concentration_limit)
                for e in self.eligible
            ),
            call_frequency=self.call_frequency,
        )


@dataclass(frozen=True, slots=True)
class AgreementTerms:
    """A configured agreement: the core's CSA terms plus what the engine needs around them."""

    agreement: Agreement
    account: str
    call_interval_ns: int
    initial_held: float
    auto_settle: bool = False

    @property
    def name(self) -> str:
        return self.agreement.name


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agreements: list[AgreementSpec]


def call_interval_ns(frequency: str) -> int:
    """``"daily"`` → 86 400 s in ns; ``"5m"`` → 300 s in ns; ``ValueError`` otherwise."""
    if frequency in NAMED_FREQUENCIES:
        return NAMED_FREQUENCIES[frequency]
    match = _FREQUENCY.match(frequency)
    if match is None:
        raise ValueError(
            f"call_frequency {frequency!r} must be daily, hourly or a count and a unit "
            "(s, m, h, d), e.g. 5m"
        )
    return int(match[1]) * NANOS_PER_UNIT[match[2]]


class AgreementError(ValueError):
    """A bad agreement; ``field`` is its path (``agreements[0].threshold``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def agreement_terms(
    specs: list[AgreementSpec], *, where: str = "agreements"
) -> list[AgreementTerms]:
    """Validate parsed specs beyond their declared types (names unique and not reserved, the
    core's own checks, the frequency); :class:`AgreementError` names ``<where>[i].<field>``."""
    out: list[AgreementTerms] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if spec.name in seen:
            raise AgreementError(f"{at}.name", f"agreement {spec.name!r} listed twice")
        if spec.name in RESERVED_NAMES:
            raise AgreementError(f"{at}.name", f"{spec.name!r} is a route name, choose another")
        seen.add(spec.name)
        classes = [e.asset_class for e in spec.eligible]
        if len(set(classes)) != len(classes):
            raise AgreementError(f"{at}.eligible", "an asset class is listed twice")
        try:
            interval = call_interval_ns(spec.call_frequency)
        except ValueError as exc:
            raise AgreementError(f"{at}.call_frequency", str(exc)) from None
        for name in ("independent_amount", "held"):
            if not math.isfinite(getattr(spec, name)):
                raise AgreementError(f"{at}.{name}", "must be finite")
        out.append(
            AgreementTerms(spec.agreement(), spec.account, interval, spec.held, spec.auto_settle)
        )
    return out


def load_agreements(path: str = "") -> list[AgreementTerms]:
    """The agreements in ``path`` (``""``: the bundled demo). ``ValueError`` names the file and
    the field at fault."""
    source = path or "(bundled data/agreements.json)"
    try:
        raw = (
            Path(path).read_bytes()
            if path
            else resources.files("engines.collateral").joinpath("data/agreements.json").read_bytes()
        )
    except OSError as exc:
        raise ValueError(f"agreements file {source}: cannot read: {exc}") from None
    try:
        parsed = msgspec.json.decode(raw, type=_File)
    except msgspec.ValidationError as exc:
        at = (error_path(exc) or "$").removeprefix("$").removeprefix(".")
        raise ValueError(f"agreements file {source}: {at or 'body'}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"agreements file {source}: not JSON: {exc}") from None
    try:
        return agreement_terms(parsed.agreements)
    except ValueError as exc:
        raise ValueError(f"agreements file {source}: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class CollateralConfig(EngineConfig):
    """Agreements from a JSON file; limits on what one REST request may ask of the engine."""

    name: str = field(default="collateral", metadata={"help": "engine name", "env": False})
    agreements: str = field(
        default="", metadata=described("agreements (CSA) JSON file ('' = the bundled demo)")
    )
    simm_version: str = field(
        default="2.6", metadata=described("SIMM calibration version a request gets by default")
    )
    max_crif_rows: int = field(
        default=200_000,
        metadata=described("most CRIF rows one SIMM or schedule-IM request may carry"),
    )
    max_inventory: int = field(
        default=2_000, metadata=described("most inventory lines one allocation request may carry")
    )
    max_calls_listed: int = field(
        default=10_000,
        metadata=described("most margin calls kept in memory for GET /collateral/calls"),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        for name in ("max_crif_rows", "max_inventory", "max_calls_listed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

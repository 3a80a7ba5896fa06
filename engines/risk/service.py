"""Risk engine (port 8200): pre-trade checks on every intent, portfolio VaR/ES per account.

Inputs and outputs (``docs/architecture.md``, "The trading pipeline"):

* ``intents.*`` (``Order``, status ``initialized``; strategies' orders and the children of
  their TWAP/POV parents, which get a child's checks: ``engines.risk.pretrade``) →
  ``engines.risk.pretrade.check`` → the order
  on ``orders.<account>`` with status ``submitted`` (approved; its quantity may be scaled down by
  the VPIN throttle), or ``denied`` with the stable reason code as ``reason``, also on
  ``risk.denials.<account>``, stored (``GET /risk/{account}/denials``) and counted
  (``nautilus_risk_denials_total{account,reason}``). An intent in another status, or for an
  account name that cannot be a channel, is bad input (counted by the shell, never published).
* ``orders.*`` (``Order``): pending (submitted, unfilled) quantities per account, which count
  toward the position and exposure limits; terminal states release them.
* ``positions.*`` (``AccountPositions``): the account's book; a change of quantity schedules a
  VaR run.
* ``trades.*`` (``Trade``): last price per symbol (collar, market-order notional, exposure,
  VaR marks) and the event-time VaR timer.
* ``vpin.*`` (the VPIN engine's dict): its ``alert`` flag per symbol drives the VPIN throttle.

Restart (crash-only): every approval is stored as published (``risk.approvals.<account>``, next to
``risk.denials.<account>``; Strategy reads both at its own restart for the answers it missed) and
every trading-state switch (``risk.trading_state.<account>``). ``on_start`` rebuilds, before the
first input is handled, the VPIN alerts from the VPIN engine's newest stored bucket per instrument
(``vpin.<SYM>``), then each book: the newest stored trading state; the positions and marks of
Portfolio's newest stored book (``positions.<account>``); the stored approvals replayed in order
(their rate-limit slots, so the token bucket stands where it stood, and each strategy order's
quantity as pending); then the newest stored state of each order of Strategy's
(``orders.<account>``: ``engines.strategy.core.supersedes``) through ``AccountBook.on_order``, which
releases what was filled or ended, so the pending book is the one the limits counted before. The
start waits for the store (``NAUTILUS_DB_START_WAIT_S``); one that stays unreachable or cannot
answer fails the start (StoreUnavailable, one line): an engine that cannot see its book must not
approve. Limits: it reads the platform's shared store (Strategy's, Portfolio's and VPIN's streams;
an engine on a ``db_dsn`` of its own rebuilds only its own approvals and state); rows still queued
for PostgreSQL when a process was killed are not there; last prices come back with the next
``trades.*`` message (until then a market order is denied ``no_reference_price``, and a pending
market order on a symbol with neither a position nor a trade yet is left out of the exposure sums).

Intents sent while Risk was down: after the rebuild, every intent of a configured account whose
newest state in Strategy's store is still ``initialized`` and that has no stored approval or denial
is answered in ``on_start`` (before the first live input), in event-time order, through the live
path (``answer``: checked, published on ``orders.<account>``, stored, counted), so a Strategy that
stayed up sends it to the venue or closes it, and one that is down takes the stored answer at its
own restart. Their reference prices are the newest stored trade of each of their symbols no older
than ``max_intent_age_s`` (the market data engine's store; a symbol without one is denied
``no_reference_price`` as live). An intent older than ``max_intent_age_s`` by the clock at start
(``NAUTILUS_RISK_MAX_INTENT_AGE_S``, 60 s: a signal decided on a market that long gone is no longer
the strategy's) is denied ``stale_intent`` without a check: it takes no rate slot and adds nothing
pending. Live intents are not aged (the bus hands them over as they are sent, and a replay's clock
need not be its event time); under a replay on the wall clock every recovered intent is stale, the
safe side. Answering is idempotent: the answers this process gave or found stored (the newest
``answers_kept``) are remembered per ``client_order_id``, and an intent answered before (an intent
both recovered and still buffered for the consumer at start, a redelivery) gets the same answer
again on ``orders.<account>`` only, neither re-checked nor stored nor counted. Limits: an intent
Strategy had not yet flushed to PostgreSQL when Risk read it stays unanswered until Risk's next
start; an answer older than the newest ``answers_kept`` is forgotten (that intent, repeated, is
checked again).

Portfolio risk: each account's positions as money amounts (quantity × last trade, else
Portfolio's mark, × multiplier) on the daily total returns of their instruments
(``engines.marketdata.daily``, the bundled Lean files), aligned on the dates all of them traded,
the last ``var_window`` days strictly before the event date (no look-ahead in a replay). VaR and
ES per configured method and level (``engines.risk.core.portfolio_risk``), Euler components of
the normal VaR, on ``risk.var.<account>`` (latest-value) and stored. A run is scheduled on a
position change and when ``var_interval_s`` of event time (``self.clock``) has passed since the
last, checked on every trade; one worker task runs them, off the loop (``run_in_executor``), so
neither the checks nor the inputs wait for a VaR. Monte Carlo draws a fixed-shape (``mc_assets``
padded with independent unit-variance assets of zero weight) Cholesky simulation compiled in
``on_start``; its key is ``mc_seed`` folded with the run's event time, so a replay repeats it.
Instruments without daily history (BTCUSDT) are listed as ``uncovered`` and left out.

Stress (``stress`` in the payload): every priced holding through ``core.stress_scenarios`` —
2008-09-15…2008-10-31 and 2020-03 replayed buy-and-hold from the bundled daily returns
(``core.stress_matrix``; a holding without returns in a window contributes 0 and is named in
``uncovered``), and a −10 % shock of every price. Scenarios are fixed historical episodes, not
estimates: in a replay dated before a window the window is still applied and flagged
``after_as_of``.

Account VaR backtest (``account_backtest``): the account's day-end equity (the last
``pnl.<account>`` of each UTC day of event time) against the VaR in force at the end of the
previous day (the last one published while that day's equity was the newest), per method and
level: Kupiec, Christoffersen, traffic light on the completed days
(``core.daily_pnl_and_var``). An end-of-day VaR does not see intraday round trips: a day that
opens and closes a position with a flat book at both ends is tested against a VaR of 0. The
history is in memory (``history_days`` per account), not rebuilt on restart.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import functools
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import jax
import msgspec
import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Histogram

from engines.marketdata.daily import daily_tickers, read_daily_bars
from engines.risk import core
from engines.risk.pretrade import (
    AccountBook,
    Approved,
    Decision,
    DenialCode,
    Denied,
    InstrumentLimits,
    MarketState,
    PreTradeLimits,
    TradingState,
    VpinThrottle,
    check,
)
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.instruments import PriceMemo, load_instruments
from engines.shell.lifecycle import Input, on
from engines.strategy.core import supersedes
from protocol.channels import DeliveryClass
from protocol.records import (
    AccountPositions,
    AccountState,
    BadInput,
    Order,
    OrderStatus,
    Trade,
    encode,
)
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import END_OF_TIME_NS, MAX_PAGE_ROWS, RecordStore, Storage

#: A published VaR result (see ``RiskEngine.var_payload``).
VarPayload = dict[str, Any]

_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,40}")
#: Path segments of the REST routes an account may not be named (``/risk/var/…``).
RESERVED_ACCOUNTS = frozenset({"var", "backtest"})
NS_PER_DAY = 86_400 * 1_000_000_000
#: trade prices remembered per symbol with their collar references (a session's prices recur)
REFERENCES_REMEMBERED = 4096


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskConfig(EngineConfig):
    """Defaults fit the paper account (1,000,000 USD): 2× gross, 1.5× net, 5 % collar."""

    name: str = field(default="risk", metadata={"help": "engine name", "env": False})
    accounts: tuple[str, ...] = field(
        default=("paper",), metadata=described("accounts the engine checks and risks")
    )
    instruments: str = field(
        default="", metadata=described("instrument table JSON ('' = the bundled one)")
    )
    limits_path: str = field(
        default="",
        metadata=described(
            'per-account overrides, JSON {"<account>": {<limit>: value, "default": {...}, '
            '"instruments": {"SPY": {...}}}} (\'\' = the settings below for every account)'
        ),
    )
    trading_state: TradingState = field(
        default=TradingState.ACTIVE, metadata=described("trading state of every account at start")
    )
    max_order_quantity: float | None = field(
        default=10_000.0, metadata=described("max units per order (none = no limit)")
    )
    max_order_notional: float | None = field(
        default=1_000_000.0, metadata=described("max price × quantity × multiplier per order")
    )
    max_position: float | None = field(
        default=20_000.0, metadata=described("max units held per instrument, pending included")
    )
    max_gross_exposure: float | None = field(
        default=2_000_000.0, metadata=described("max Σ|exposure| per account, pending included")
    )
    max_net_exposure: float | None = field(
        default=1_500_000.0, metadata=described("max |Σ exposure| per account, pending included")
    )
    price_collar_bps: float | None = field(
        default=500.0, metadata=described("max distance of a limit price from the last trade")
    )
    max_orders_per_second: int | None = field(
        default=50, metadata=described("order rate per account (token bucket on event time)")
    )
    order_burst: int = field(default=20, metadata=described("token bucket size (burst)"))
    vpin_throttle: VpinThrottle = field(
        default=VpinThrottle.REDUCE_ONLY,
        metadata=described("while vpin.<SYM> alerts: off, reduce_only (deny adding) or scale"),
    )
    vpin_scale: float = field(
        default=0.5, metadata=described("quantity factor of an adding order under 'scale'")
    )
    var_levels: tuple[float, ...] = field(
        default=core.DEFAULT_LEVELS, metadata=described("VaR/ES confidence levels")
    )
    var_methods: tuple[core.VarMethod, ...] = field(
        default=tuple(core.VarMethod), metadata=described("VaR methods published")
    )
    var_window: int = field(default=500, metadata=described("daily returns per VaR estimate"))
    var_min_days: int = field(
        default=100, metadata=described("fewer common days of history: no VaR (error)")
    )
    var_lambda: float = field(
        default=core.RISKMETRICS_LAMBDA, metadata=described("EWMA decay (RiskMetrics 0.94)")
    )
    var_interval_s: float = field(
        default=60.0, metadata=described("event-time seconds between VaR runs (and on change)")
    )
    mc_paths: int = field(default=100_000, metadata=described("Monte Carlo paths"))
    mc_seed: int = field(default=0, metadata=described("Monte Carlo seed"))
    mc_assets: int = field(
        default=16, metadata=described("Monte Carlo shape compiled at start (assets, padded)")
    )
    history_days: int = field(
        default=2_000,
        metadata=described("day-end equities and VaRs kept per account for its VaR backtest"),
    )
    max_intent_age_s: float = field(
        default=60.0,
        metadata=described("an intent found unanswered at start older than this: stale_intent"),
    )
    answers_kept: int = field(
        default=100_000,
        metadata=described("answers remembered by client_order_id (a repeated intent: same one)"),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        if not self.accounts:
            raise ValueError("accounts must name at least one account")
        for account in self.accounts:
            if not _SEGMENT.fullmatch(account) or account in RESERVED_ACCOUNTS:
                raise ValueError(
                    f"account {account!r} must be 1-40 of A-Z a-z 0-9 _ - and not "
                    f"{'/'.join(sorted(RESERVED_ACCOUNTS))}"
                )
        for level in self.var_levels:
            if not 0.5 <= level < 1.0:
                raise ValueError(f"var_levels must be in [0.5, 1), got {level}")
        if not self.var_levels or not self.var_methods:
            raise ValueError("var_levels and var_methods must not be empty")
        if self.var_window < core.BACKCAST_DAYS or not 2 < self.var_min_days <= self.var_window:
            raise ValueError(
                f"need var_window >= {core.BACKCAST_DAYS} and 2 < var_min_days <= var_window"
            )
        if not 0.0 < self.var_lambda < 1.0:
            raise ValueError(f"var_lambda must be in (0, 1), got {self.var_lambda}")
        if self.var_interval_s <= 0 or self.mc_paths < 100 or self.mc_assets < 1:
            raise ValueError("need var_interval_s > 0, mc_paths >= 100, mc_assets >= 1")
        if self.history_days < 2:
            raise ValueError("history_days must be >= 2")
        if not self.max_intent_age_s > 0 or self.answers_kept < 1:
            raise ValueError("need max_intent_age_s > 0 and answers_kept >= 1")
        self.account_limits()  # validates (and reads limits_path)

    def limits(self) -> PreTradeLimits:
        """The settings' limits (every account's unless ``limits_path`` overrides)."""
        return PreTradeLimits(
            default=InstrumentLimits(
                max_order_quantity=_decimal(self.max_order_quantity),
                max_order_notional=_decimal(self.max_order_notional),
                max_position=_decimal(self.max_position),
            ),
            max_gross_exposure=_decimal(self.max_gross_exposure),
            max_net_exposure=_decimal(self.max_net_exposure),
            price_collar_bps=_decimal(self.price_collar_bps),
            max_orders_per_second=self.max_orders_per_second,
            order_burst=self.order_burst,
            vpin_throttle=self.vpin_throttle,
            vpin_scale=Decimal(repr(self.vpin_scale)),
        )

    def account_limits(self) -> dict[str, PreTradeLimits]:
        """Limits per account: the settings, overridden by ``limits_path``."""
        base = self.limits()
        overrides: dict[str, _LimitsFile] = {}
        if self.limits_path:
            try:
                overrides = msgspec.json.decode(
                    Path(self.limits_path).read_bytes(), type=dict[str, _LimitsFile]
                )
            except (OSError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
                raise ValueError(f"limits_path {self.limits_path}: {exc}") from None
        unknown = set(overrides) - set(self.accounts)
        if unknown:
            raise ValueError(f"limits_path names accounts not configured: {sorted(unknown)}")
        return {a: overrides[a].over(base) if a in overrides else base for a in self.accounts}


class _InstrumentLimitsFile(msgspec.Struct, forbid_unknown_fields=True):
    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_position: Decimal | None = None

    def limits(self) -> InstrumentLimits:
        return InstrumentLimits(**msgspec.structs.asdict(self))


class _LimitsFile(msgspec.Struct, forbid_unknown_fields=True):
    """One account's entry of the limits file: the fields it sets replace the settings'."""

    default: _InstrumentLimitsFile | None = None
    instruments: dict[str, _InstrumentLimitsFile] = {}
    max_gross_exposure: Decimal | None = None
    max_net_exposure: Decimal | None = None
    price_collar_bps: Decimal | None = None
    max_orders_per_second: int | None = None
    order_burst: int | None = None
    vpin_throttle: VpinThrottle | None = None
    vpin_scale: Decimal | None = None

    def over(self, base: PreTradeLimits) -> PreTradeLimits:
        changes: dict[str, Any] = {
            name: value for name in _ACCOUNT_FIELDS if (value := getattr(self, name)) is not None
        }
        if self.default is not None:
            changes["default"] = self.default.limits().over(base.default)
        changes["instruments"] = {s: own.limits() for s, own in self.instruments.items()}
        return dataclasses.replace(base, **changes)


_ACCOUNT_FIELDS = (
    "max_gross_exposure",
    "max_net_exposure",
    "price_collar_bps",
    "max_orders_per_second",
    "order_burst",
    "vpin_throttle",
    "vpin_scale",
)


@functools.lru_cache(maxsize=64)
def daily_returns(symbol: str) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]:
    """Close-to-close simple total returns of a bundled ticker, dated by the later close."""
    bars = read_daily_bars(symbol, adjustment="total")
    returns = bars.close[1:] / bars.close[:-1] - 1.0
    returns.flags.writeable = False
    return bars.date[1:], returns


def _mc_key(seed: int, event_ns: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), event_ns % (2**31 - 1))


class RiskEngine(Engine[RiskConfig]):
    """Pre-trade checks per account and the accounts' VaR/ES (see the module docstring)."""

    config_type = RiskConfig
    rebuilds_from_store = True

    def __init__(
        self, config: RiskConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.instruments = dict(load_instruments(config.instruments))
        self.market = MarketState()
        #: the collar references trade prices made, remembered
        self._reference_of = PriceMemo(self._reference, REFERENCES_REMEMBERED)
        self.books: dict[str, AccountBook] = {
            account: AccountBook(
                account, limits, self.instruments, self.market, state=config.trading_state
            )
            for account, limits in config.account_limits().items()
        }
        self.denials: RecordStore[Order] = self.records(
            "risk.denials", Order, key=attrgetter("account"), time=attrgetter("event_ns")
        )
        self.var_results: RecordStore[VarPayload] = self.records(
            "risk.var", dict, key=itemgetter("account"), time=itemgetter("event_ns")
        )
        self.approvals: RecordStore[Order] = self.records(
            "risk.approvals", Order, key=attrgetter("account"), time=attrgetter("event_ns")
        )
        self.trading_states: RecordStore[dict[str, Any]] = self.records(
            "risk.trading_state", dict, key=itemgetter("account"), time=itemgetter("event_ns")
        )
        #: what the restart rebuild reads and never writes: Strategy's stored order transitions
        #: and Portfolio's stored books (the streams they publish as ``orders.<account>`` and
        #: ``positions.<account>``)
        self.order_transitions: RecordStore[Order] = self.storage.records(
            self.name, "orders", Order, key=attrgetter("account"), time=attrgetter("event_ns")
        )
        self.position_snapshots: RecordStore[AccountPositions] = self.storage.records(
            self.name, "positions", AccountPositions, key=attrgetter("account"),
            time=attrgetter("event_ns"),
        )  # fmt: skip
        self.vpin_buckets: RecordStore[dict[str, Any]] = self.storage.records(
            self.name, "vpin", dict, key=itemgetter("symbol"), time=itemgetter("end_ns")
        )
        #: the answer given to each intent, newest ``answers_kept`` (``answer`` is idempotent)
        self.answers: collections.OrderedDict[str, Order] = collections.OrderedDict()
        self.denial_counts: dict[str, dict[str, int]] = {a: {} for a in self.books}
        self.approved_counts: dict[str, int] = dict.fromkeys(self.books, 0)
        self._denied_total = Counter(
            "nautilus_risk_denials",
            "orders denied by pre-trade checks",
            ["account", "reason"],
            registry=self.metrics.registry,
        )
        self._approved_total = Counter(
            "nautilus_risk_approved",
            "orders approved by pre-trade checks",
            ["account"],
            registry=self.metrics.registry,
        )
        #: the approval counter's child per account, looked up once (the hot path)
        self._approved = {a: self._approved_total.labels(a) for a in self.books}
        self._check_seconds = Histogram(
            "nautilus_risk_check_seconds",
            "time of one pre-trade check",
            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3),
            registry=self.metrics.registry,
        )
        self._var_seconds = Histogram(
            "nautilus_risk_var_seconds",
            "time of one account's VaR run (all methods and levels)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.metrics.registry,
        )
        self._var_due: set[str] = set()
        self._var_wakeup = asyncio.Event()
        self._last_var_ns: dict[str, int] = {}
        self._interval_ns = int(config.var_interval_s * 1e9)
        #: per account: day-end equity by UTC day of event time, and the VaRs in force at the
        #: end of each day ({(method, level): VaR}), for ``account_backtest``
        self.equity_days: dict[str, dict[int, float]] = {a: {} for a in self.books}
        self.var_days: dict[str, dict[int, dict[tuple[str, str], float]]] = {
            a: {} for a in self.books
        }

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {
            "intents.*": on(Order, self.on_intent),
            "orders.*": on(Order, self.on_order),
            "positions.*": on(AccountPositions, self.on_positions),
            "pnl.*": on(AccountState, self.on_pnl),
            "trades.*": on(Trade, self.on_trade),
            "vpin.*": on(dict, self.on_vpin),
        }

    def streams(self) -> list[StreamInfo]:
        return [
            StreamInfo(
                "orders.*", DeliveryClass.ORDERED_LOSSLESS, "intents approved (submitted) or denied"
            ),
            StreamInfo(
                "risk.denials.*", DeliveryClass.ORDERED_LOSSLESS, "orders denied, reason = code"
            ),
            StreamInfo("risk.var.*", DeliveryClass.LATEST_VALUE, "VaR/ES per method and level"),
        ]

    def declared_channels(self) -> list[str]:
        return [
            f"{kind}.{account}"
            for account in self.books
            for kind in ("orders", "risk.denials", "risk.var")
        ]

    def health_extra(self) -> Mapping[str, object]:
        return {
            "accounts": {
                account: {
                    "state": book.state.value,
                    "pending": len(book.pending),
                    "approved": self.approved_counts[account],
                    "denied": dict(self.denial_counts[account]),
                }
                for account, book in self.books.items()
            }
        }

    async def on_start(self) -> None:
        await self.answer_missed(await self.rebuild())
        mc = [m for m in self.config.var_methods if m.value.startswith("monte_carlo")]
        if mc:
            await self.run_in_executor(self._warm_up, mc)
        self.spawn(self._var_worker, name="var")

    async def rebuild(self) -> list[Order]:
        """Crash-only restart: each account's book as it stood before (module docstring,
        "Restart"). Runs before the first input is handled (the shell buffers it meanwhile).
        Returns the intents stored ``initialized`` that no stored answer answers."""
        unanswered: list[Order] = []
        for symbol in sorted(self.instruments):
            bucket = await self.vpin_buckets.latest(symbol)
            if bucket is not None and bucket.get("alert") is True:
                self.market.vpin_alert.add(symbol)
        for account, book in self.books.items():
            state = await self.trading_states.latest(account)
            if state is not None:
                book.state = TradingState(state["state"])
            snapshot = await self.position_snapshots.latest(account)
            if snapshot is not None:
                book.set_positions(*_quantities_and_marks(snapshot))
            approved = 0
            answered: set[str] = set()
            async for order in self.approvals.scan(account):
                book.restore_approval(order)
                self._remember(order)
                answered.add(order.client_order_id)
                approved += 1
            async for order in self.denials.scan(account):
                self._remember(order)
                answered.add(order.client_order_id)
            newest: dict[str, Order] = {}
            async for order in self.order_transitions.scan(account):
                before = newest.get(order.client_order_id)
                if before is None or supersedes(order, before):
                    newest[order.client_order_id] = order
            for order in newest.values():
                book.on_order(order)
            unanswered += (
                o for o in newest.values()
                if o.status is OrderStatus.INITIALIZED and o.client_order_id not in answered
            )  # fmt: skip
            if state is not None or snapshot is not None or approved or newest:
                self.log.info(
                    "account %s rebuilt: %s, %d positions, %d pending of %d approvals and %d "
                    "orders", account, book.state, len(book.positions), len(book.pending),
                    approved, len(newest),
                )  # fmt: skip
        return unanswered

    async def answer_missed(self, intents: Sequence[Order]) -> None:
        """Answer the intents sent while Risk was down, oldest first; those older than
        ``max_intent_age_s`` are denied ``stale_intent`` (module docstring, "Restart")."""
        if not intents:
            return
        now = self.clock.now_ns()
        oldest_fresh = now - int(self.config.max_intent_age_s * 1e9)
        fresh = {o.symbol for o in intents if o.event_ns >= oldest_fresh}
        for symbol in sorted(fresh - self.market.last_price.keys()):
            trade = await self._newest_stored_trade(symbol, oldest_fresh)
            if trade is not None:
                self._set_last_price(trade)
        stale = 0
        for order in sorted(intents, key=attrgetter("event_ns")):
            decision: Decision | None = None
            if order.event_ns < oldest_fresh:
                stale += 1
                decision = Denied(
                    DenialCode.STALE_INTENT,
                    f"sent {(now - order.event_ns) / 1e9:.1f} s before Risk started "
                    f"(max {self.config.max_intent_age_s} s)",
                )
            await self.answer(order, order.event_ns, decision)
        self.log.info("answered %d intents sent while down (%d stale)", len(intents), stale)

    async def _newest_stored_trade(self, symbol: str, from_ns: int) -> Trade | None:
        newest, cursor = None, None
        while True:
            page = await self.storage.store.fetch_trades(
                symbol, from_ns, END_OF_TIME_NS, MAX_PAGE_ROWS, cursor
            )
            newest = page.items[-1] if page.items else newest
            cursor = page.next_cursor
            if cursor is None:
                return newest

    def _warm_up(self, methods: Sequence[core.VarMethod]) -> None:
        """Compile the Monte Carlo simulation for the padded shape (never on a live run)."""
        n = self.config.mc_assets
        for method in methods:
            nu = 5.0 if method is core.VarMethod.MONTE_CARLO_T else None
            core.monte_carlo_var_es(
                np.ones(n), np.eye(n), self.config.var_levels,
                key=_mc_key(self.config.mc_seed, 0), n_paths=self.config.mc_paths, nu=nu,
            )  # fmt: skip

    # ── pre-trade ──────────────────────────────────────────────────────────────────────────

    async def on_intent(self, order: Order, envelope: Envelope) -> None:
        if order.status is not OrderStatus.INITIALIZED:
            raise BadInput("invalid_value", f"an intent is initialized, not {order.status}")
        if not _SEGMENT.fullmatch(order.account):
            raise BadInput("invalid_value", f"account {order.account!r} is not a channel segment")
        await self.answer(order, envelope.event_ns)

    async def answer(self, order: Order, event_ns: int, decision: Decision | None = None) -> None:
        """Check an intent (or answer it ``decision`` unchecked), publish the answer at
        ``event_ns`` and store it. An intent answered before gets that answer again, published
        on ``orders.<account>`` only: one decision per ``client_order_id``."""
        given = self.answers.get(order.client_order_id)
        if given is not None:
            self.log.info("intent %s answered before: %s again", order.client_order_id,
                          given.status)  # fmt: skip
            await self.publish(f"orders.{given.account}", encode(given), event_ns=event_ns)
            return
        book = self.books.get(order.account)
        if decision is None:
            started = time.perf_counter()
            decision = (
                Denied(DenialCode.UNKNOWN_ACCOUNT, f"account {order.account!r} is not configured")
                if book is None
                else check(order, book)
            )
            self._check_seconds.observe(time.perf_counter() - started)
        if isinstance(decision, Approved):
            assert book is not None
            if order.parent_order_id is None:
                book.record_submitted(
                    order.client_order_id, order.symbol, order.side, decision.quantity,
                    decision.price, order.event_ns,
                )  # fmt: skip
            else:  # an algorithm's child: its parent is pending already
                book.record_child(order.symbol, decision.price, order.event_ns)
            submitted = msgspec.structs.replace(
                order,
                status=OrderStatus.SUBMITTED,
                quantity=decision.quantity,
                reason=decision.scaled_by,
            )
            self._remember(submitted)
            self.approved_counts[order.account] += 1
            self._approved[order.account].inc()
            payload = encode(submitted)
            published = await self.publish(f"orders.{order.account}", payload, event_ns=event_ns)
            self.approvals.append([submitted], seqs=[published.seq], payloads=[payload])
            return
        denied = msgspec.structs.replace(order, status=OrderStatus.DENIED, reason=decision.code)
        self._remember(denied)
        counts = self.denial_counts.get(order.account)
        if counts is not None:
            counts[decision.code] = counts.get(decision.code, 0) + 1
        # one label for every account not configured: bus input must not mint metric series
        label = order.account if counts is not None else "unconfigured"
        self._denied_total.labels(label, decision.code.value).inc()
        payload = encode(denied)
        await self.publish(f"orders.{order.account}", payload, event_ns=event_ns)
        published = await self.publish(f"risk.denials.{order.account}", payload, event_ns=event_ns)
        self.denials.append([denied], seqs=[published.seq], payloads=[payload])
        self.log.info(
            "denied %s %s: %s (%s)", order.account, order.client_order_id, decision.code,
            decision.detail,
        )  # fmt: skip

    def _remember(self, answer: Order) -> None:
        """Keep ``answer`` as its intent's (the newest ``answers_kept``)."""
        self.answers[answer.client_order_id] = answer
        if len(self.answers) > self.config.answers_kept:
            self.answers.popitem(last=False)

    def set_state(self, account: str, state: TradingState) -> TradingState:
        """Switch an account's trading state; returns the previous one (``KeyError``: unknown)."""
        book = self.books[account]
        previous, book.state = book.state, state
        self.trading_states.append(
            [{"account": account, "state": state.value, "event_ns": self.clock.now_ns()}]
        )
        self.log.warning("account %s trading state %s → %s", account, previous, state)
        return previous

    # ── state from the bus ─────────────────────────────────────────────────────────────────

    async def on_order(self, order: Order, envelope: Envelope) -> None:
        book = self.books.get(order.account)
        if book is not None:
            book.on_order(order)

    async def on_positions(self, positions: AccountPositions, envelope: Envelope) -> None:
        book = self.books.get(positions.account)
        if book is None:
            return
        if book.set_positions(*_quantities_and_marks(positions)):
            self._schedule_var(positions.account)
        self._timer()

    async def on_pnl(self, state: AccountState, envelope: Envelope) -> None:
        days = self.equity_days.get(state.account)
        if days is None:
            return
        if not state.equity.is_finite():
            raise BadInput("invalid_value", f"equity {state.equity} is not finite")
        day = state.event_ns // NS_PER_DAY
        if days and day < max(days):
            return  # a late state of a finished day: its day-end is already known
        days[day] = float(state.equity)
        _trim(days, self.config.history_days)

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        if not (math.isfinite(trade.price) and trade.price > 0):
            raise BadInput("invalid_value", f"trade price {trade.price} is not > 0")
        self._set_last_price(trade)
        self._timer()

    def _set_last_price(self, trade: Trade) -> None:
        """The collar's reference: the trade's price on its instrument's grid."""
        self.market.last_price[trade.symbol] = self._reference_of(trade.symbol, trade.price)

    def _reference(self, symbol: str, raw: float) -> Decimal:
        instrument = self.instruments.get(symbol)
        price = round(raw, instrument.price_precision) if instrument else raw
        return Decimal(repr(price))

    async def on_vpin(self, payload: dict[str, Any], envelope: Envelope) -> None:
        symbol = envelope.channel.partition(".")[2]
        alert = payload.get("alert")
        if not isinstance(alert, bool):
            raise BadInput("invalid_value", "a vpin message needs a boolean 'alert'")
        if alert:
            self.market.vpin_alert.add(symbol)
        else:
            self.market.vpin_alert.discard(symbol)

    # ── portfolio risk ─────────────────────────────────────────────────────────────────────

    def _timer(self) -> None:
        now = self.clock.now_ns()
        for account in self.books:
            last = self._last_var_ns.get(account)
            if last is None or now - last >= self._interval_ns:
                self._last_var_ns[account] = now
                self._schedule_var(account)

    def _schedule_var(self, account: str) -> None:
        self._var_due.add(account)
        self._var_wakeup.set()

    async def _var_worker(self) -> None:
        while True:
            await self._var_wakeup.wait()
            self._var_wakeup.clear()
            while self._var_due:
                account = min(self._var_due)
                self._var_due.discard(account)
                try:
                    await self.publish_var(account)
                except Exception:
                    self.record_error(f"VaR of {account}")

    async def publish_var(self, account: str) -> VarPayload:
        """Compute ``account``'s VaR now (off the loop), publish and store it."""
        book = self.books[account]
        now = self.clock.now_ns()
        self._last_var_ns[account] = now
        holdings = {}
        for symbol, quantity in book.positions.items():
            price = book.price(symbol)
            instrument = self.instruments.get(symbol)
            multiplier = instrument.multiplier if instrument else 1
            holdings[symbol] = None if price is None else float(quantity * price * multiplier)
        started = time.perf_counter()
        payload = await self.run_in_executor(self.var_payload, account, holdings, now)
        equity = self.equity_days[account]
        if equity:  # the VaR now in force at the end of the newest equity day
            made = self.var_days[account]
            made[max(equity)] = {
                (method, level): row["var"]
                for method, by_level in payload["var"].items()
                for level, row in by_level.items()
                if row["var"] is not None
            }
            _trim(made, self.config.history_days)
        payload["account_backtest"] = await self.run_in_executor(
            self.account_backtest, sorted(equity.items()), dict(self.var_days[account])
        )
        self._var_seconds.observe(time.perf_counter() - started)
        published = await self.publish(f"risk.var.{account}", payload, event_ns=now)
        self.var_results.append([payload], seqs=[published.seq])
        return payload

    def var_payload(
        self, account: str, holdings: Mapping[str, float | None], event_ns: int
    ) -> VarPayload:
        """VaR/ES of money amounts per symbol (``None``: no price) as of ``event_ns``'s date:
        ``{"account", "event_ns", "as_of", "days", "positions", "unpriced", "uncovered",
        "var": {method: {level: {"var", "es", "std_error"}}}, "components", "error"}``."""
        cfg = self.config
        as_of = np.datetime64(dt.datetime.fromtimestamp(event_ns / 1e9, dt.UTC).date(), "D")
        known = set(daily_tickers())
        unpriced = sorted(s for s, v in holdings.items() if v is None)
        uncovered = sorted(s for s, v in holdings.items() if v is not None and s not in known)
        amounts = {s: v for s, v in sorted(holdings.items()) if v is not None and s in known}
        payload: VarPayload = {
            "account": account,
            "event_ns": event_ns,
            "as_of": None,
            "days": 0,
            "window": cfg.var_window,
            "lambda": cfg.var_lambda,
            "positions": amounts,
            "unpriced": unpriced,
            "uncovered": uncovered,
            "var": {},
            "components": None,
            "error": None,
            "stress": self.stress(
                {s: v for s, v in sorted(holdings.items()) if v is not None}, as_of
            ),
        }
        if not amounts or not any(amounts.values()):  # a flat book risks nothing
            payload["var"] = {
                m.value: {
                    str(a): {"var": 0.0, "es": 0.0, "std_error": None} for a in cfg.var_levels
                }
                for m in cfg.var_methods
            }
            return payload
        dates, returns = self.aligned_returns(list(amounts), as_of)
        if dates.size < cfg.var_min_days:
            payload["error"] = (
                f"{dates.size} common days of history before {as_of} (need {cfg.var_min_days})"
            )
            return payload
        w = np.array(list(amounts.values()))
        estimates = self.estimates(w, returns, event_ns)
        payload["as_of"] = str(dates[-1])
        payload["days"] = int(dates.size)
        table: dict[str, dict[str, dict[str, float | None]]] = {}
        for est in estimates:
            table.setdefault(est.method.value, {})[str(est.level)] = {
                "var": est.var,
                "es": est.es,
                "std_error": est.std_error,
            }
        payload["var"] = table
        cov = core.ewma_covariance(returns, cfg.var_lambda)
        level = max(cfg.var_levels)
        euler = core.euler_contributions(w, cov, level)
        payload["components"] = {
            "method": core.VarMethod.NORMAL.value,
            "level": level,
            "var": dict(zip(amounts, euler.component_var.tolist(), strict=True)),
            "es": dict(zip(amounts, euler.component_es.tolist(), strict=True)),
        }
        return payload

    def stress(self, holdings: Mapping[str, float], as_of: np.datetime64) -> list[dict[str, Any]]:
        """``core.stress_scenarios`` on the priced holdings (money amounts per symbol): each
        scenario's P&L, trough, worst day, per-symbol P&L and the symbols it could not cover."""
        windows, shocks = core.DEFAULT_WINDOWS, core.DEFAULT_SHOCKS
        symbols = list(holdings)
        w = np.array([holdings[s] for s in symbols], dtype=np.float64)
        known = set(daily_tickers())
        dates, returns = core.stress_matrix(
            [daily_returns(s) if s in known else None for s in symbols], windows
        )
        out: list[dict[str, Any]] = []
        for scenario in (*windows, *shocks):
            after = isinstance(scenario, core.StressWindow) and bool(scenario.end >= as_of)
            if not symbols:  # a flat book loses nothing in any scenario
                result = core.StressResult(scenario.name, 0.0, w, 0.0, 0.0, None, 0, ())
            else:
                try:
                    result = (
                        core.stress_window(w, dates, returns, scenario)
                        if isinstance(scenario, core.StressWindow)
                        else core.stress_shock(w, scenario)
                    )
                except core.RiskInputError as exc:  # e.g. no holding has history in it
                    out.append({"scenario": scenario.name, "after_as_of": after,
                                "error": str(exc)})  # fmt: skip
                    continue
            out.append(
                {
                    "scenario": result.scenario,
                    "pnl": result.pnl,
                    "trough_pnl": result.trough_pnl,
                    "worst_day_pnl": result.worst_day_pnl,
                    "worst_day": None if result.worst_day is None else str(result.worst_day),
                    "days": result.days,
                    "positions": dict(zip(holdings, result.asset_pnl.tolist(), strict=False)),
                    "uncovered": [symbols[i] for i in result.uncovered],
                    "after_as_of": after,
                    "error": None,
                }
            )
        return out

    def account_backtest(
        self,
        equity: Sequence[tuple[int, float]],
        var_days: Mapping[int, Mapping[tuple[str, str], float]],
    ) -> dict[str, Any]:
        """The account's completed days (all but the newest equity day) against the VaR in
        force at the end of the day before, per method and level (see the module docstring)."""
        done = list(equity[:-1])
        table: dict[str, dict[str, Any]] = {}
        observations = 0
        for key in sorted({k for made in var_days.values() for k in made}):
            method, level = key
            forecasts = [(d, made[key]) for d, made in var_days.items() if key in made]
            pnl, var = core.daily_pnl_and_var(done, forecasts)
            if pnl.size < 2:  # Christoffersen needs a transition
                continue
            observations = max(observations, int(pnl.size))
            report = core.backtest(core.var_failures(pnl, var), float(level))
            table.setdefault(method, {})[level] = {
                "observations": report.observations,
                "failures": report.failures,
                "expected": report.expected,
                "pof_p": report.pof.p_value,
                "cci_p": report.cci.p_value,
                "cc_p": report.cc.p_value,
                "traffic_light": report.traffic_light.zone.value,
                "passes_5pct": report.passes(0.05),
            }
        return {
            "days": len(done),
            "observations": observations,
            "var": table,
            "error": None if table else "needs three completed days of equity with VaRs",
        }

    def aligned_returns(
        self, symbols: Sequence[str], as_of: np.datetime64
    ) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]:
        """The last ``var_window`` dates before ``as_of`` on which every symbol traded, and the
        (dates, symbols) matrix of their returns."""
        series = [daily_returns(s) for s in symbols]
        common = functools.reduce(np.intersect1d, [d for d, _ in series])
        common = common[common < as_of][-self.config.var_window :]
        columns = [r[np.searchsorted(d, common)] for d, r in series]
        return common, np.column_stack(columns) if columns else np.empty((0, 0))

    def estimates(
        self, w: npt.NDArray[np.float64], returns: npt.NDArray[np.float64], event_ns: int
    ) -> list[core.RiskEstimate]:
        """Every configured method and level; Monte Carlo on the padded compiled shape."""
        cfg = self.config
        methods = list(cfg.var_methods)
        mc = [m for m in methods if m.value.startswith("monte_carlo")]
        plain = [m for m in methods if m not in mc]
        nu = None
        if core.VarMethod.STUDENT_T in methods or core.VarMethod.MONTE_CARLO_T in methods:
            pnl = returns @ w
            sigma = np.sqrt(core.ewma_variance_path(pnl, cfg.var_lambda))[:-1]
            nu = core.fit_student_t_nu(pnl / sigma) if np.all(sigma > 0) else None
        out = core.portfolio_risk(
            w, returns, levels=cfg.var_levels, methods=plain, lam=cfg.var_lambda, nu=nu
        )
        if mc:
            n = max(cfg.mc_assets, w.size)
            cov = np.eye(n)
            cov[: w.size, : w.size] = core.ewma_covariance(returns, cfg.var_lambda)
            padded = np.zeros(n)
            padded[: w.size] = w
            key = _mc_key(cfg.mc_seed, event_ns)
            for method in mc:
                t_nu = nu if method is core.VarMethod.MONTE_CARLO_T else None
                if method is core.VarMethod.MONTE_CARLO_T and t_nu is None:
                    continue
                out.extend(
                    core.monte_carlo_var_es(
                        padded, cov, cfg.var_levels, key=key, n_paths=cfg.mc_paths, nu=t_nu
                    )
                )
        order = {m: i for i, m in enumerate(methods)}
        return sorted(out, key=lambda e: order[e.method])

    # ── backtest (REST) ────────────────────────────────────────────────────────────────────

    def backtest(
        self, symbol: str, method: core.VarMethod, level: float, window: int
    ) -> VarPayload:
        """Rolling one-day VaR of ``symbol``'s daily history, backtested (compute threads)."""
        dates, returns = daily_returns(symbol)
        if window >= returns.size:
            raise core.RiskInputError("window", f"need < the {returns.size} days of {symbol}")
        var = core.rolling_var(returns, method, level, window=window, lam=self.config.var_lambda)
        hits = core.var_failures(returns[window:], var[window:])
        report = core.backtest(hits, level)

        def lr(test: core.LikelihoodRatioTest) -> dict[str, Any]:
            return {"statistic": test.statistic, "df": test.df, "p_value": test.p_value}

        return {
            "symbol": symbol,
            "method": method.value,
            "level": level,
            "window": window,
            "from": str(dates[window]),
            "to": str(dates[-1]),
            "observations": report.observations,
            "failures": report.failures,
            "expected": report.expected,
            "pof": lr(report.pof),
            "tuff": lr(report.tuff),
            "cci": lr(report.cci),
            "cc": lr(report.cc),
            "traffic_light": {
                "zone": report.traffic_light.zone.value,
                "probability": report.traffic_light.probability,
                "type_i": report.traffic_light.type_i,
            },
            "passes_5pct": report.passes(0.05),
        }


def _quantities_and_marks(
    positions: AccountPositions,
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Portfolio's book as the checks read it: quantity and mark (else average price) per
    symbol."""
    quantities = {p.symbol: p.quantity for p in positions.positions}
    marks = {
        p.symbol: p.mark_price if p.mark_price is not None else p.average_price
        for p in positions.positions
    }
    return quantities, marks


def _trim(days: dict[int, Any], keep: int) -> None:
    """Drop the oldest days beyond ``keep``."""
    while len(days) > keep:
        del days[min(days)]

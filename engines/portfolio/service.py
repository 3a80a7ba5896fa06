"""Portfolio engine (port 8900): ``fills.*`` in, ``positions.<account>`` and ``pnl.<account>`` out.

One ``Ledger`` (engines.portfolio.core) per configured account (``NAUTILUS_PORTFOLIO_ACCOUNTS``,
default ``paper:1000000:USD``). A fill (``protocol.records.Fill``) is folded into its account's
ledger and stored; the whole book (``AccountPositions``) and the money (``AccountState``, with
leverage and the per-strategy attribution) are published and stored as snapshots once per batch
of input that changed the account (``after_batch``: both streams are latest-value, so a burst of
fills the consumer takes at once publishes the book once, as of its last fill; a batch of one
fill publishes after that fill). Marks come from ``quotes.*`` (bid for a long, ask for a short),
``trades.*`` and ``bars.1m.*``; a mark on a held symbol republishes the account at most once per
``mark_throttle_ms`` of *event* time (a skipped update is published with the next event past the
window, or the next fill). Fills are idempotent by ``fill_id``: a duplicate changes nothing and
is counted (``nautilus_portfolio_duplicate_fills_total``).

Bad input never crashes it: a payload that is not a fill is counted by the shell; a fill for an
unknown account or instrument, a non-positive or off-lot quantity is refused with its reason
(``unknown_account``, ``unknown_instrument``, ``non_positive_quantity``, ``off_lot``, …), counted
as bad input of ``fills.*``, and not stored.

Crash-only: state is never saved except as the stored fills. ``on_start`` rebuilds every account's
ledger from them (in stored order: event time, then arrival), restores the last marks of held
symbols from the newest stored positions snapshot (used only until live marks arrive), then
publishes each account once. The start waits for the store (``NAUTILUS_DB_START_WAIT_S``); one that
stays unreachable fails it with one line (StoreUnavailable). Limits: fills still queued for
PostgreSQL when the process is killed (not stopped) are lost to the rebuild, and fills that arrive
out of event-time order are replayed in event-time order, which can move the average price's
rounding residue (never the identity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter
from typing import Any

from prometheus_client import Counter

from engines.portfolio import core
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.instruments import (
    InstrumentTable,
    PriceMemo,
    UnknownInstrument,
    load_instruments,
)
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass, channel
from protocol.errors import ProtocolError
from protocol.records import (
    AccountPositions,
    AccountState,
    BadInput,
    Bar,
    Fill,
    Quote,
    Trade,
    encode,
)
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioConfig(EngineConfig):
    name: str = field(default="portfolio", metadata={"help": "engine name", "env": False})
    accounts: tuple[str, ...] = field(
        default=("paper:1000000:USD",),
        metadata=described(
            "accounts as name:starting_cash:currency[:netting|hedging], comma-separated"
        ),
    )
    instruments: str = field(
        default="", metadata=described("instrument table JSON ('' = the bundled one)")
    )
    mark_throttle_ms: int = field(
        default=250,
        metadata=described("on marks, publish an account at most once per this much event time"),
    )
    cost_places: int = field(
        default=8,
        metadata=described("decimals the cost share of a partial close is rounded to"),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        specs = self.account_specs()
        if not specs:
            raise ValueError("accounts: at least one account is needed")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"accounts: a name is listed twice in {names}")
        for name in names:
            try:
                channel("pnl", name)
            except ProtocolError as exc:
                raise ValueError(f"accounts: {exc}") from None
        if self.mark_throttle_ms < 0:
            raise ValueError("mark_throttle_ms must be >= 0")
        if not 0 <= self.cost_places <= 18:
            raise ValueError("cost_places must be in [0, 18]")

    def account_specs(self) -> list[core.AccountSpec]:
        return [core.parse_account(text) for text in self.accounts]


#: market-data prices remembered per symbol with their marks (a session's prices recur)
MARKS_REMEMBERED = 4096


class PortfolioEngine(Engine[PortfolioConfig]):
    """One ledger per account, one mark book for all; published and stored after each event."""

    config_type = PortfolioConfig
    rebuilds_from_store = True

    def __init__(
        self, config: PortfolioConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.instruments: InstrumentTable = load_instruments(config.instruments)
        self.ledgers: dict[str, core.Ledger] = {
            spec.name: core.Ledger(spec, self.instruments, cost_places=config.cost_places)
            for spec in config.account_specs()
        }
        self.marks = core.MarkBook()
        #: (positions, pnl) channel of each account, validated once (not per publish)
        self._channels = {n: (channel("positions", n), channel("pnl", n)) for n in self.ledgers}
        #: event time of each account's newest input (fill or mark), what REST reads stamp
        self.event_ns: dict[str, int] = dict.fromkeys(self.ledgers, 0)
        self._published_ns: dict[str, int] = {}
        self._pending: set[str] = set()
        #: accounts changed by the batch being handled: published once in ``after_batch``
        self._due: set[str] = set()
        #: the marks market-data floats made, remembered
        self._mark_of = PriceMemo(self._mark_price, MARKS_REMEMBERED)
        self._throttle_ns = config.mark_throttle_ms * 1_000_000
        self.fills: RecordStore[Fill] = self.records(
            "fills", Fill, key=attrgetter("account"), time=attrgetter("event_ns")
        )
        self.position_snapshots: RecordStore[AccountPositions] = self.records(
            "positions", AccountPositions, key=attrgetter("account"), time=attrgetter("event_ns")
        )
        self.pnl_snapshots: RecordStore[AccountState] = self.records(
            "pnl", AccountState, key=attrgetter("account"), time=attrgetter("event_ns")
        )
        self.duplicates = Counter(
            "nautilus_portfolio_duplicate_fills",
            "fills ignored because their fill_id was already applied",
            registry=self.metrics.registry,
        )
        self.fills_total = Counter(
            "nautilus_portfolio_fills",
            "fills applied to a ledger",
            registry=self.metrics.registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {
            "fills.*": on(Fill, self.on_fill),
            "quotes.*": on(Quote, self.on_quote),
            "trades.*": on(Trade, self.on_trade),
            "bars.1m.*": on(Bar, self.on_bar),
        }

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo("positions.*", DeliveryClass.LATEST_VALUE, "every open position"),
            StreamInfo("pnl.*", DeliveryClass.LATEST_VALUE, "cash, equity, PnL, exposure"),
        )

    def declared_channels(self) -> Sequence[str]:
        return [channel(kind, name) for name in self.ledgers for kind in ("positions", "pnl")]

    def health_extra(self) -> Mapping[str, object]:
        return {"accounts": {name: {"fills": led.fills} for name, led in self.ledgers.items()}}

    async def on_start(self) -> None:
        """Crash-only restart: rebuild each ledger from its stored fills, then publish it."""
        for name, ledger in self.ledgers.items():
            async for fill in self.fills.scan(name):
                try:
                    ledger.apply(fill)
                except core.LedgerError as exc:  # e.g. the instrument table changed
                    self.record_error(f"stored fill {fill.fill_id} refused: {exc}", exc_info=False)
                    continue
                self.event_ns[name] = max(self.event_ns[name], fill.event_ns)
            snapshot = await self.position_snapshots.latest(name)
            for position in snapshot.positions if snapshot is not None else ():
                if position.mark_price is not None:
                    self.marks.restore(position.symbol, position.mark_price)
            if ledger.fills:
                await self.publish_account(name)

    # ── per message ────────────────────────────────────────────────────────────────────────

    async def on_fill(self, fill: Fill, envelope: Envelope) -> None:
        ledger = self.ledgers.get(fill.account)
        if ledger is None:
            raise BadInput("unknown_account", f"no account {fill.account!r}", "account")
        try:
            applied = ledger.apply(fill)
        except core.LedgerError as exc:
            raise BadInput(exc.reason, str(exc)) from None
        if not applied:
            self.duplicates.inc()
            return
        self.fills_total.inc()
        self.fills.append([fill], seqs=[envelope.seq])
        self.event_ns[fill.account] = max(self.event_ns[fill.account], fill.event_ns)
        self._due.add(fill.account)

    async def after_batch(self) -> None:
        """Publish every account the batch changed, once, in name order."""
        if self._due:
            due, self._due = sorted(self._due), set()
            for account in due:
                await self.publish_account(account)

    async def on_quote(self, quote: Quote, envelope: Envelope) -> None:
        places = self._places(quote.symbol)
        if places is not None:
            bid, ask = core.mark_price(quote.bid, places), core.mark_price(quote.ask, places)
            self.marks.quote(quote.symbol, bid, ask)
        self._marked(quote.symbol, quote.event_ns)

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        price = self._mark_of(trade.symbol, trade.price)
        if price is not None:
            self.marks.trade(trade.symbol, price)
        self._marked(trade.symbol, trade.event_ns)

    async def on_bar(self, bar: Bar, envelope: Envelope) -> None:
        price = self._mark_of(bar.symbol, bar.close)
        if price is not None:
            self.marks.bar(bar.symbol, price)
        self._marked(bar.symbol, bar.end_ns)

    def _mark_price(self, symbol: str, value: float) -> Decimal | None:
        """``core.mark_price`` of a trade's or bar's ``value`` (``None``: not a price, or no
        instrument)."""
        places = self._places(symbol)
        return None if places is None else core.mark_price(value, places)

    def _places(self, symbol: str) -> int | None:
        try:
            return self.instruments[symbol].price_precision
        except UnknownInstrument:  # market data of an instrument no account can hold
            return None

    def _marked(self, symbol: str, event_ns: int) -> None:
        """A mark moved: republish (at the batch's end) the accounts holding ``symbol`` (and any
        whose throttled update is pending) whose last publish is at least the throttle window
        old."""
        pending = self._pending
        for name, ledger in self.ledgers.items():
            if ledger.holds(symbol):
                pending.add(name)
        throttle_ns, published_ns = self._throttle_ns, self._published_ns
        for name in pending:  # any order: each account is decided alone (``_due`` is sorted)
            # the account's newest event time: a mark older than the last fill (inputs are
            # consumed concurrently) still gets published, stamped with the newer time
            newest = self.event_ns[name]
            if event_ns > newest:
                newest = self.event_ns[name] = event_ns
            last = published_ns.get(name)
            if last is None or newest - last >= throttle_ns:
                self._due.add(name)

    # ── output ─────────────────────────────────────────────────────────────────────────────

    def snapshot(self, account: str) -> tuple[AccountPositions, AccountState, core.Valuation]:
        """The account now: its book, its money, and the full valuation (per currency and
        strategy), stamped with its newest input's event time."""
        ledger = self.ledgers[account]
        event_ns = self.event_ns[account]
        valuation = ledger.valuation(self.marks)
        positions = ledger.positions(self.marks, event_ns)
        return positions, ledger.state(self.marks, event_ns, valuation), valuation

    async def publish_account(self, account: str) -> None:
        """Publish and store the account's book and money (the throttle window restarts)."""
        event_ns = self.event_ns[account]
        self._pending.discard(account)
        self._published_ns[account] = event_ns
        positions, state, _ = self.snapshot(account)
        positions_channel, pnl_channel = self._channels[account]
        payload = encode(positions)
        sent = await self.publish(positions_channel, payload, event_ns=event_ns)
        self.position_snapshots.append([positions], seqs=[sent.seq], payloads=[payload])
        payload = encode(state)
        sent = await self.publish(pnl_channel, payload, event_ns=event_ns)
        self.pnl_snapshots.append([state], seqs=[sent.seq], payloads=[payload])

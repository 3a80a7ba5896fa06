"""The portfolio ledger, the pure part: fills in, positions, cash, PnL and exposure out, exactly.

Accounting rules (average cost, as NautilusTrader's ``Position.apply`` and the Trading
Technologies "Understanding P/L calculations" page describe them):

* **Netting**: one position per instrument per account (``hedging=True``: one per instrument per
  strategy). A fill on the position's side opens/adds: the cost basis grows by the fill's notional
  and the average price is cost / (quantity × multiplier). A fill against it reduces: the closed
  part realizes ``closing notional − closed share of the cost basis``; a fill larger than the
  position *flips* it: split into a close of the whole position and an open of the rest at the
  fill price. Realized PnL here is **gross of fees**; fees are kept apart, per currency (unlike
  NautilusTrader, whose ``realized_pnl`` nets commissions in).
* **Marks**: a long is valued at the bid, a short at the ask (side-appropriate, what closing it
  would get), else the last trade, else the last 1-minute bar close. A position with none of them
  is *unpriceable*: flagged, carried at its cost basis in equity, its unrealized PnL left out —
  never guessed.
* **Currencies**: each instrument's PnL, cash and exposure live in its own currency; fees in the
  fee's currency. There is no FX: an account's headline state is its own currency; positions in
  other currencies are reported per currency and flagged unpriceable in the headline.

Exactness. Quantities, prices and money are ``Decimal``; every sum and product runs in a context
that *traps* ``Inexact`` (a rounded step raises instead of passing silently). The one division —
the share of the cost basis a partial close takes — is rounded half-even to ``cost_places``
decimals (default 8) and the residue stays in the remaining cost basis, so a full close realizes
exactly what was paid and received. Hence, per currency, at every event::

    realized + unrealized − fees == equity − starting cash            (exactly)

because cost − realized equals the net cash paid into each instrument, and equity is cash plus
marked value. The average price shown is display-only (rounded to ``AVERAGE_PLACES``).

Per-strategy attribution: each strategy's fills are also kept in a book of their own, marked at
the account's price for the instrument, so the strategies' total PnLs (realized + unrealized −
fees) sum exactly to the account's, and each strategy's own identity holds (realized +
unrealized − fees == its net cash flow + the value it holds). Published with the account's state
(``AccountState.strategies``, the account currency) with ``leverage`` = gross exposure / equity,
6 decimals half-even, ``None`` when equity ≤ 0 (a ratio to a non-positive equity means nothing).

Limits: no FX conversion, no margin model (cash accounts: leverage is gross exposure / equity),
no funding/borrow fees, no corporate actions. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from decimal import Decimal as D

from protocol.records import (
    AccountPositions,
    AccountState,
    Fill,
    Instrument,
    OrderSide,
    Position,
    StrategyPnl,
)

__all__ = [
    "AVERAGE_PLACES",
    "AccountSpec",
    "CurrencyTotals",
    "Ledger",
    "LedgerError",
    "MarkBook",
    "Valuation",
    "mark_price",
    "parse_account",
    "strategy_pnl",
    "trimmed",
]

ZERO = D(0)
#: Every ledger sum and product runs here: 60 digits, and a rounded result raises.
EXACT = Context(prec=60, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
#: Only explicit, documented roundings (cost share, average price, leverage) run here.
ROUNDING = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
#: Decimals of the displayed average price.
AVERAGE_PLACES = 10
#: Decimals of the displayed leverage.
LEVERAGE_PLACES = 6


class LedgerError(ValueError):
    """A fill the ledger refuses; ``reason`` is a stable code (``unknown_instrument``,
    ``non_positive_quantity``, ``non_positive_price``, ``off_lot``, ``wrong_account``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """An account: its name, currency, starting cash, and whether it nets or hedges."""

    name: str
    currency: str = "USD"
    starting_cash: D = D(1_000_000)
    hedging: bool = False


def parse_account(text: str) -> AccountSpec:
    """``"paper:1000000:USD"`` or ``"desk:250000.50:USDT:hedging"`` → ``AccountSpec``."""
    parts = text.strip().split(":")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ("netting", "hedging")):
        raise ValueError(f"account {text!r}: want name:starting_cash:currency[:netting|hedging]")
    name, cash, currency = parts[0], parts[1], parts[2]
    try:
        starting = D(cash)
    except InvalidOperation:
        raise ValueError(f"account {text!r}: starting cash {cash!r} is not a number") from None
    if not starting.is_finite() or starting < 0 or not name or not currency.isalnum():
        raise ValueError(f"account {text!r}: need a name, cash >= 0 and a currency code")
    return AccountSpec(name, currency, starting, len(parts) == 4 and parts[3] == "hedging")


# ── marks ─────────────────────────────────────────────────────────────────────────────────────


def mark_price(value: float, places: int) -> D | None:
    """A market-data float as an exact price on the data's grid (``places`` decimals, half-even
    from the float's shortest repr, trailing zeros dropped); ``None`` for a non-positive or
    non-finite value.

    A repr already on the grid (``400.12`` at 4 places: no exponent, at most ``places``
    decimals) is the price as written, ``110.0`` → ``110`` (a repr has no other trailing zero):
    what quantizing and trimming give, without their cost (the per-print hot path)."""
    if not value > 0 or value == float("inf"):
        return None
    text = repr(value)
    whole, dot, fraction = text.partition(".")
    if dot and len(fraction) <= places and "e" not in fraction:
        return D(whole) if fraction == "0" else D(text)
    with localcontext(ROUNDING):
        return trimmed(D(text).quantize(D(1).scaleb(-places)))


def trimmed(value: D) -> D:
    """``value`` without trailing fractional zeros (``110.000`` → ``110``; ``100`` stays)."""
    value = value.normalize(ROUNDING)
    exponent = value.as_tuple().exponent
    return value if isinstance(exponent, int) and exponent <= 0 else value.quantize(D(1))


@dataclass(slots=True)
class _Mark:
    bid: D | None = None
    ask: D | None = None
    trade: D | None = None
    bar_close: D | None = None
    #: restored from a stored snapshot at restart: used only until live data arrives
    restored: D | None = None


class MarkBook:
    """The newest prices per symbol, by source. ``price(symbol, side)``: side +1 (long) → bid,
    −1 (short) → ask, 0 (flat/neutral) → mid; then last trade, bar close, restored mark."""

    def __init__(self) -> None:
        self._marks: dict[str, _Mark] = {}

    def _of(self, symbol: str) -> _Mark:
        mark = self._marks.get(symbol)
        if mark is None:
            mark = self._marks[symbol] = _Mark()
        return mark

    def quote(self, symbol: str, bid: D | None, ask: D | None) -> None:
        mark = self._of(symbol)
        mark.bid, mark.ask = bid, ask

    def trade(self, symbol: str, price: D) -> None:
        self._of(symbol).trade = price

    def bar(self, symbol: str, close: D) -> None:
        self._of(symbol).bar_close = close

    def restore(self, symbol: str, price: D) -> None:
        self._of(symbol).restored = price

    def price(self, symbol: str, side: int) -> D | None:
        mark = self._marks.get(symbol)
        if mark is None:
            return None
        if side > 0 and mark.bid is not None:
            return mark.bid
        if side < 0 and mark.ask is not None:
            return mark.ask
        if side == 0 and mark.bid is not None and mark.ask is not None:
            with localcontext(EXACT):
                return (mark.bid + mark.ask) / 2  # exact: halving a finite decimal
        for price in (mark.trade, mark.bar_close, mark.restored):
            if price is not None:
                return price
        return None


# ── positions and books ───────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class _Open:
    """One open position: signed quantity, signed cost basis (paid for a long, received for a
    short, in the instrument currency), realized PnL since it opened."""

    instrument: Instrument
    quantity: D = ZERO
    cost: D = ZERO
    realized: D = ZERO

    @property
    def side(self) -> int:
        return (self.quantity > 0) - (self.quantity < 0)

    def average_price(self) -> D:
        with localcontext(ROUNDING):
            average = self.cost / (self.quantity * self.instrument.multiplier)
            return trimmed(average.quantize(D(1).scaleb(-AVERAGE_PLACES)))


@dataclass(slots=True)
class _Book:
    """Positions (netting, by symbol) and per-currency running sums of one account or strategy.
    ``cash`` here is the net cash flow (fills and fees), not counting starting cash."""

    positions: dict[str, _Open] = field(default_factory=dict)
    realized: dict[str, D] = field(default_factory=dict)
    fees: dict[str, D] = field(default_factory=dict)
    cash: dict[str, D] = field(default_factory=dict)

    def apply(self, fill: Fill, instrument: Instrument, cost_quantum: D) -> D:
        """Fold ``fill`` in (EXACT context active); return the PnL it realized."""
        currency = instrument.currency
        multiplier = instrument.multiplier
        signed = fill.quantity if fill.side is OrderSide.BUY else -fill.quantity
        self.cash[currency] = self.cash.get(currency, ZERO) - signed * fill.price * multiplier
        self.fees[fill.fee_currency] = self.fees.get(fill.fee_currency, ZERO) + fill.fee
        self.cash[fill.fee_currency] = self.cash.get(fill.fee_currency, ZERO) - fill.fee
        position = self.positions.get(fill.symbol)
        if position is None:
            position = self.positions[fill.symbol] = _Open(instrument)
        realized = ZERO
        if position.quantity != 0 and (position.quantity > 0) != (signed > 0):
            closing = min(abs(signed), abs(position.quantity))
            if closing == abs(position.quantity):
                share = position.cost
            else:
                with localcontext(ROUNDING):
                    exact = position.cost * closing / abs(position.quantity)
                    rounded = exact.quantize(cost_quantum)
                    share = exact if exact == rounded else rounded  # keeps 5110 as 5110
            closed_signed = closing if position.quantity > 0 else -closing
            # realized = what the close brought in − the share of what the position cost
            realized = closed_signed * fill.price * multiplier - share
            position.quantity -= closed_signed
            position.cost -= share
            position.realized += realized
            signed += closed_signed  # the opening remainder of a flip (0 if none)
            self.realized[currency] = self.realized.get(currency, ZERO) + realized
        if signed != 0:
            if position.quantity == 0:  # a new position (fresh, or the far side of a flip)
                position.cost = position.realized = ZERO
            position.quantity += signed
            position.cost += signed * fill.price * multiplier
        if position.quantity == 0:
            del self.positions[fill.symbol]
        return realized

    def totals(
        self, currency: str, price: Mapping[str, D | None], opening_cash: D = ZERO
    ) -> CurrencyTotals:
        """This book's numbers in ``currency``; ``price`` is each held symbol's mark."""
        with localcontext(EXACT):
            unrealized = gross = net = held = ZERO
            unpriceable: list[str] = []
            for symbol, position in self.positions.items():
                if position.instrument.currency != currency:
                    continue
                mark = price.get(symbol)
                if mark is None:
                    unpriceable.append(symbol)
                    held += position.cost
                    continue
                value = position.quantity * mark * position.instrument.multiplier
                unrealized += value - position.cost
                gross += abs(value)
                net += value
                held += value
            cash = opening_cash + self.cash.get(currency, ZERO)
            return CurrencyTotals(
                currency=currency,
                starting_cash=opening_cash,
                cash=cash,
                equity=cash + held,
                realized_pnl=self.realized.get(currency, ZERO),
                unrealized_pnl=unrealized,
                fees=self.fees.get(currency, ZERO),
                gross_exposure=gross,
                net_exposure=net,
                unpriceable=tuple(sorted(unpriceable)),
            )

    def currencies(self) -> set[str]:
        return set(self.cash) | {p.instrument.currency for p in self.positions.values()}


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """A book's state in one currency. ``realized + unrealized − fees == equity − starting``."""

    currency: str
    starting_cash: D
    cash: D
    equity: D
    realized_pnl: D
    unrealized_pnl: D
    fees: D
    gross_exposure: D
    net_exposure: D
    unpriceable: tuple[str, ...] = ()

    @property
    def total_pnl(self) -> D:
        with localcontext(EXACT):
            return self.realized_pnl + self.unrealized_pnl - self.fees

    def __add__(self, other: CurrencyTotals) -> CurrencyTotals:
        if other.currency != self.currency:
            raise ValueError("cannot add totals of different currencies")
        with localcontext(EXACT):
            return CurrencyTotals(
                self.currency,
                self.starting_cash + other.starting_cash,
                self.cash + other.cash,
                self.equity + other.equity,
                self.realized_pnl + other.realized_pnl,
                self.unrealized_pnl + other.unrealized_pnl,
                self.fees + other.fees,
                self.gross_exposure + other.gross_exposure,
                self.net_exposure + other.net_exposure,
                tuple(sorted({*self.unpriceable, *other.unpriceable})),
            )

    def leverage(self) -> D | None:
        """Gross exposure / equity (``None`` when equity ≤ 0), rounded to 6 decimals."""
        if self.equity <= 0:
            return None
        with localcontext(ROUNDING):
            return (self.gross_exposure / self.equity).quantize(D(1).scaleb(-LEVERAGE_PLACES))


def strategy_pnl(totals: CurrencyTotals) -> StrategyPnl:
    """A strategy's totals (a book with no starting cash) as the published ``StrategyPnl``:
    its cash is its net cash flow, the rest of its equity the value of what it holds."""
    with localcontext(EXACT):
        return StrategyPnl(
            realized_pnl=totals.realized_pnl,
            unrealized_pnl=totals.unrealized_pnl,
            fees=totals.fees,
            cash_flow=totals.cash,
            market_value=totals.equity - totals.cash,
            gross_exposure=totals.gross_exposure,
            net_exposure=totals.net_exposure,
            unpriceable=totals.unpriceable,
        )


@dataclass(frozen=True, slots=True)
class Valuation:
    """An account marked: per-currency totals, and per strategy per currency."""

    currencies: dict[str, CurrencyTotals]
    strategies: dict[str, dict[str, CurrencyTotals]]


# ── the account ledger ────────────────────────────────────────────────────────────────────────


class Ledger:
    """One account's ledger. ``apply(fill)`` is idempotent by ``fill_id``; ``valuation(marks)``,
    ``positions(marks, t)`` and ``state(marks, t)`` read it marked."""

    def __init__(
        self, spec: AccountSpec, instruments: Mapping[str, Instrument], *, cost_places: int = 8
    ) -> None:
        self.spec = spec
        self.instruments = instruments
        self.cost_quantum = D(1).scaleb(-cost_places)
        self.book = _Book()
        self.strategies: dict[str, _Book] = {}
        self.fill_ids: set[str] = set()
        self.fills = 0

    def apply(self, fill: Fill) -> bool:
        """Fold ``fill`` in; ``False`` (and nothing changes) when its id was seen before.
        ``LedgerError`` for a fill the ledger refuses (nothing changes either)."""
        if fill.fill_id in self.fill_ids:
            return False
        instrument = self._check(fill)
        with localcontext(EXACT):
            if not self.spec.hedging:
                self.book.apply(fill, instrument, self.cost_quantum)
            strategy = self.strategies.get(fill.strategy)
            if strategy is None:
                strategy = self.strategies[fill.strategy] = _Book()
            strategy.apply(fill, instrument, self.cost_quantum)
        self.fill_ids.add(fill.fill_id)
        self.fills += 1
        return True

    def _check(self, fill: Fill) -> Instrument:
        if fill.account != self.spec.name:
            raise LedgerError("wrong_account", f"fill for {fill.account} in {self.spec.name}")
        try:
            instrument = self.instruments[fill.symbol]
        except LookupError:  # KeyError, or the shell table's UnknownInstrument
            raise LedgerError("unknown_instrument", f"unknown instrument {fill.symbol!r}") from None
        if not (fill.quantity.is_finite() and fill.quantity > 0):
            raise LedgerError("non_positive_quantity", f"quantity {fill.quantity} must be > 0")
        if not (fill.price.is_finite() and fill.price > 0):
            raise LedgerError("non_positive_price", f"price {fill.price} must be > 0")
        if not fill.fee.is_finite():
            raise LedgerError("invalid_fee", f"fee {fill.fee} is not a number")
        if fill.quantity % instrument.lot != 0:
            raise LedgerError("off_lot", f"quantity {fill.quantity} off the {instrument.lot} lot")
        return instrument

    def holds(self, symbol: str) -> bool:
        """Whether any position of the account is in ``symbol`` (marks matter to it)."""
        books = self.strategies.values() if self.spec.hedging else (self.book,)
        return any(symbol in book.positions for book in books)

    def _open_positions(self) -> list[tuple[str, _Open]]:
        """(strategy or "", position) of every open position, as the account sees them."""
        if not self.spec.hedging:
            return [("", p) for p in self.book.positions.values()]
        return [(s, p) for s, book in self.strategies.items() for p in book.positions.values()]

    def headline(self, marks: MarkBook) -> CurrencyTotals:
        """The account currency's totals, what ``valuation(marks).currencies`` holds for it,
        without the per-strategy books or other currencies a netting account needs no pass
        over (a backtest reads it at every bar to check the identity)."""
        if self.spec.hedging:  # the account is the sum of its strategies' books
            return self.valuation(marks).currencies[self.spec.currency]
        price = {s: marks.price(s, p.side) for s, p in self.book.positions.items()}
        return self.book.totals(self.spec.currency, price, self.spec.starting_cash)

    def valuation(self, marks: MarkBook) -> Valuation:
        """Every number of the account marked at ``marks``; see the module for the rules."""
        net = {s: p.side for s, p in self.book.positions.items()}
        # netting: strategies are marked at the account's price; hedging: each at its own side
        account_price = {s: marks.price(s, side) for s, side in net.items()}
        strategy_totals: dict[str, dict[str, CurrencyTotals]] = {}
        for name, book in self.strategies.items():
            price = (
                {s: marks.price(s, p.side) for s, p in book.positions.items()}
                if self.spec.hedging
                else {s: account_price.get(s, marks.price(s, 0)) for s in book.positions}
            )
            strategy_totals[name] = {c: book.totals(c, price) for c in sorted(book.currencies())}
        currencies = {self.spec.currency}
        for book in (self.book, *self.strategies.values()):
            currencies |= book.currencies()
        totals: dict[str, CurrencyTotals] = {}
        for currency in sorted(currencies):
            opening = self.spec.starting_cash if currency == self.spec.currency else ZERO
            if not self.spec.hedging:
                totals[currency] = self.book.totals(currency, account_price, opening)
                continue
            total = _Book().totals(currency, {}, opening)
            for per_currency in strategy_totals.values():
                if currency in per_currency:
                    total = total + per_currency[currency]
            totals[currency] = total
        return Valuation(totals, strategy_totals)

    def state(
        self, marks: MarkBook, event_ns: int, valuation: Valuation | None = None
    ) -> AccountState:
        """The headline ``AccountState`` in the account currency; positions in another
        currency are named in ``unpriceable`` (no FX: they are in ``valuation().currencies``)."""
        valued = valuation or self.valuation(marks)
        own = valued.currencies[self.spec.currency]
        foreign = {
            p.instrument.symbol
            for _, p in self._open_positions()
            if p.instrument.currency != self.spec.currency
        }
        currency = self.spec.currency
        return AccountState(
            account=self.spec.name,
            currency=currency,
            starting_cash=own.starting_cash,
            cash=own.cash,
            equity=own.equity,
            realized_pnl=own.realized_pnl,
            unrealized_pnl=own.unrealized_pnl,
            fees=own.fees,
            gross_exposure=own.gross_exposure,
            net_exposure=own.net_exposure,
            event_ns=event_ns,
            unpriceable=tuple(sorted({*own.unpriceable, *foreign})),
            leverage=own.leverage(),
            strategies={
                name: strategy_pnl(per_currency[currency])
                for name, per_currency in sorted(valued.strategies.items())
                if currency in per_currency
            },
        )

    def positions(self, marks: MarkBook, event_ns: int) -> AccountPositions:
        """Every open position, marked (``mark_price``/``unrealized_pnl`` ``None`` when
        unpriceable), sorted by symbol (then strategy, hedging)."""
        rows = []
        for _strategy, position in sorted(
            self._open_positions(), key=lambda sp: (sp[1].instrument.symbol, sp[0])
        ):
            symbol = position.instrument.symbol
            mark = marks.price(symbol, position.side)
            with localcontext(EXACT):
                unrealized = (
                    None
                    if mark is None
                    else position.quantity * mark * position.instrument.multiplier - position.cost
                )
            rows.append(
                Position(
                    account=self.spec.name,
                    symbol=symbol,
                    quantity=position.quantity,
                    average_price=position.average_price(),
                    realized_pnl=position.realized,
                    unrealized_pnl=unrealized,
                    mark_price=mark,
                    currency=position.instrument.currency,
                    event_ns=event_ns,
                )
            )
        return AccountPositions(account=self.spec.name, event_ns=event_ns, positions=tuple(rows))

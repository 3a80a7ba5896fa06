"""The ledger against hand-worked numbers, NautilusTrader's position tests, and its own identity.

Outside references:

* NautilusTrader ``tests/unit_tests/model/test_position.py`` (LGPL-3.0; numbers only, no code):
  ``test_pnl_calculation_from_trading_technologies_example`` — the Trading Technologies
  "Understanding P/L calculations" worked example (buy 12 @ 100, buy 17 @ 99, sell 9 @ 101,
  sell 4 @ 105, buy 3 @ 103), whose ``realized_pnl`` is *net* of commissions; ours is gross, so
  ours − Σ fees must equal theirs; ``test_position_filled_with_buy_order`` (unrealized 49.00 USD)
  and ``test_position_long_with_multiple_filled_orders`` (realized 11.00 net of 8.00).
* An independent brute force in the property test: equity − starting cash recomputed from the
  fill list alone (−Σ signed notional − Σ fees + Σ net quantity × mark), and realized PnL from an
  exact-rational (``Fraction``) average-cost ledger, within the documented rounding.
"""

from __future__ import annotations

from decimal import Decimal as D
from decimal import localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.portfolio.core import (
    ROUNDING,
    AccountSpec,
    CurrencyTotals,
    Ledger,
    LedgerError,
    MarkBook,
    mark_price,
    parse_account,
    trimmed,
)
from engines.shell.instruments import InstrumentTable, load_instruments
from protocol.records import Fill, Instrument, Liquidity, OrderSide

BUY, SELL = OrderSide.BUY, OrderSide.SELL
START = D(1_000_000)

TABLE = InstrumentTable(
    [
        *load_instruments().values(),
        Instrument("ETHUSDT", 2, 5, currency="USDT"),
        Instrument("AUDUSD", 5, 0, currency="USD"),
        Instrument("ES", 2, 0, currency="USD", multiplier=50, tick_size=D("0.25")),
    ]
)

SYMBOLS_KNOWN = set(TABLE)


def fill(
    n: int,
    side: OrderSide,
    quantity: str | int,
    price: str,
    fee: str = "0",
    *,
    symbol: str = "SPY",
    strategy: str = "s1",
    fee_currency: str | None = None,
    account: str = "paper",
) -> Fill:
    return Fill(
        fill_id=f"F{n}",
        client_order_id=f"O{n}",
        account=account,
        strategy=strategy,
        symbol=symbol,
        side=side,
        quantity=D(quantity),
        price=D(price),
        fee=D(fee),
        fee_currency=fee_currency or (TABLE[symbol].currency if symbol in SYMBOLS_KNOWN else "USD"),
        liquidity=Liquidity.TAKER,
        event_ns=n,
    )


def ledger(hedging: bool = False, currency: str = "USD") -> Ledger:
    return Ledger(AccountSpec("paper", currency, START, hedging), TABLE)


def identity_holds(totals: CurrencyTotals) -> bool:
    return totals.total_pnl == totals.equity - totals.starting_cash


# ── hand-worked cases ─────────────────────────────────────────────────────────────────────────


def test_a_flip_splits_the_fill_into_a_close_and_an_open() -> None:
    led = ledger()
    led.apply(fill(1, BUY, 10, "100.00"))
    led.apply(fill(2, SELL, 15, "110.00", "1.50"))
    marks = MarkBook()
    marks.quote("SPY", D("107.99"), D("108.01"))
    state = led.state(marks, 2)
    (position,) = led.positions(marks, 2).positions
    # close 10: realized = 10 × 110.00 − cost 1 000.00 = 100.00
    # open the other 5 short at 110.00: cost −550.00, this position's realized starts at 0
    # cash = 1 000 000 − 1 000.00 + 1 650.00 − 1.50 = 1 000 648.50
    # a short is marked at the ask: value −5 × 108.01 = −540.05, unrealized = −540.05 + 550 = 9.95
    # equity = 1 000 648.50 − 540.05 = 1 000 108.45 = start + 100.00 + 9.95 − 1.50
    assert (position.quantity, position.average_price) == (D(-5), D("110"))
    assert (position.realized_pnl, position.unrealized_pnl) == (D(0), D("9.95"))
    assert position.mark_price == D("108.01")
    assert state.realized_pnl == D("100.00")
    assert state.cash == D("1000648.50")
    assert state.unrealized_pnl == D("9.95")
    assert state.fees == D("1.50")
    assert state.equity == D("1000108.45")
    assert (state.gross_exposure, state.net_exposure) == (D("540.05"), D("-540.05"))
    assert led.valuation(marks).currencies["USD"].leverage() == D("0.000540")  # 540.05/1000108.45
    assert state.leverage == D("0.000540")  # published with the state
    assert state.strategies["s1"].realized_pnl == D("100.00")


def test_leverage_is_none_at_non_positive_equity_and_attribution_is_per_strategy() -> None:
    led = Ledger(AccountSpec("paper", "USD", D(1_000)), TABLE)
    led.apply(fill(1, BUY, 200, "10.00", "1.00", strategy="trend"))  # twice the cash, a fee
    led.apply(fill(2, SELL, 40, "10.00", strategy="hedge"))  # a short of another strategy
    marks = MarkBook()
    marks.trade("SPY", D("12.00"))
    state = led.state(marks, 2)
    # net long 160 @ 12: cash 1 000 − 2 000 − 1 + 400 = −601 (cash can go negative: no margin
    # model), equity −601 + 1 920 = 1 319; gross 1 920 → leverage 1 920 / 1 319 = 1.4556482…
    assert (state.cash, state.equity, state.gross_exposure) == (D("-601.00"), D(1319), D(1920))
    assert state.leverage == D("1.455648")
    trend, hedge = state.strategies["trend"], state.strategies["hedge"]
    # trend: long 200 @ 10 marked at the account's price 12 → +400 − 1 fee
    assert (trend.unrealized_pnl, trend.fees, trend.cash_flow, trend.market_value) == (
        D(400),
        D("1.00"),
        D("-2001.00"),
        D(2400),
    )
    # hedge: short 40 @ 10 marked at 12 → −80
    assert (hedge.unrealized_pnl, hedge.cash_flow, hedge.market_value) == (D(-80), D(400), D(-480))
    assert trend.cash_flow + trend.market_value + hedge.cash_flow + hedge.market_value == (
        state.equity - state.starting_cash
    )
    marks.trade("SPY", D("1.00"))  # the price collapses: equity −601 + 160 = −441
    state = led.state(marks, 3)
    assert state.equity == D(-441) and state.leverage is None
    marks.trade("SPY", D("3.75625"))  # equity exactly 0 (160 × 3.75625 = 601): still None
    assert led.state(marks, 4).equity == 0 and led.state(marks, 4).leverage is None


def test_a_partial_close_rounds_the_cost_share_and_a_full_close_realizes_exactly() -> None:
    led = ledger()
    for n, price in enumerate(("10.00", "10.01", "10.01")):
        led.apply(fill(n, BUY, 1, price))
    # cost 30.02 for 3: closing 1 takes 30.02 / 3 = 10.006666… → 10.00666667 (8 dp, half-even)
    led.apply(fill(3, SELL, 1, "10.50"))
    assert led.book.realized["USD"] == D("10.50") - D("10.00666667") == D("0.49333333")
    (position,) = led.positions(MarkBook(), 3).positions
    assert position.average_price == D("10.0066666650")  # 20.01333333 / 2, display rounding
    # the rest carries the residue: 21.00 − 20.01333333 = 0.98666667; total 1.48 = 31.50 − 30.02
    led.apply(fill(4, SELL, 2, "10.50"))
    assert led.book.realized["USD"] == D("1.48")
    assert led.positions(MarkBook(), 4).positions == ()
    assert led.state(MarkBook(), 4).equity == START + D("1.48")


def test_a_multiplier_scales_notional_and_pnl() -> None:
    led = ledger()
    led.apply(fill(1, BUY, 2, "4000.25", "2.50", symbol="ES"))
    marks = MarkBook()
    marks.trade("ES", D("4001.00"))
    state = led.state(marks, 1)
    # 2 contracts × 50 × (4001.00 − 4000.25) = 75.00; exposure 2 × 50 × 4001 = 400 100
    assert (state.unrealized_pnl, state.gross_exposure) == (D("75.00"), D("400100.00"))
    assert state.cash == START - D("400025.00") - D("2.50")
    assert led.positions(marks, 1).positions[0].average_price == D("4000.25")


# ── NautilusTrader's position tests (numbers only) ────────────────────────────────────────────


def test_trading_technologies_example_as_nautilus_trader_computes_it() -> None:
    """NautilusTrader ``test_pnl_calculation_from_trading_technologies_example``: commissions
    0.0001 × notional (0.12, 0.1683, 0.0909, 0.042, 0.0309 USDT)."""
    led = ledger(currency="USDT")
    steps = [
        (BUY, 12, "100", "0.12", 12, "-0.28830000"),  # after the 2nd fill, as Nautilus asserts
        (BUY, 17, "99", "0.1683", 29, "-0.28830000"),
        (SELL, 9, "101", "0.0909", 20, "13.89666207"),
        (SELL, 4, "105", "0.042", 16, "36.19948966"),
        (BUY, 3, "103", "0.0309", 19, "36.16858966"),
    ]
    for n, (side, qty, price, fee, held, nautilus_realized) in enumerate(steps):
        led.apply(fill(n, side, qty, price, fee, symbol="ETHUSDT"))
        (position,) = led.positions(MarkBook(), n).positions
        assert position.quantity == held
        if n >= 1:
            ours_net = led.book.realized.get("USDT", D(0)) - led.book.fees["USDT"]
            assert ours_net == D(nautilus_realized)
    # Nautilus avg_px_open 99.41379310344827 then 99.98003629764065 (floats); ours is the
    # rounded cost basis / quantity: equal to 1e-9
    assert abs(position.average_price - D("99.98003629764065")) < D("1e-9")


def test_nautilus_unrealized_and_multiple_fill_cases() -> None:
    # test_position_filled_with_buy_order: long 100 000 @ 1.00001, last 1.00050 → 49.00 USD
    led = ledger()
    led.apply(fill(1, BUY, 100_000, "1.00001", "2.00", symbol="AUDUSD"))
    marks = MarkBook()
    marks.trade("AUDUSD", D("1.00050"))
    assert led.state(marks, 1).unrealized_pnl == D("49.00")
    # test_position_long_with_multiple_filled_orders: buy 100k @ 1.00000, 100k @ 1.00001,
    # sell 200k @ 1.00010 → realized 11.00 USD net of 8.00 commissions
    led = ledger()
    led.apply(fill(1, BUY, 100_000, "1.00000", "2.00", symbol="AUDUSD"))
    led.apply(fill(2, BUY, 100_000, "1.00001", "2.00", symbol="AUDUSD"))
    led.apply(fill(3, SELL, 200_000, "1.00010", "4.00", symbol="AUDUSD"))
    state = led.state(MarkBook(), 3)
    assert state.realized_pnl - state.fees == D("11.00")
    assert state.equity == START + D("11.00")


# ── rules ─────────────────────────────────────────────────────────────────────────────────────


def test_duplicate_fill_ids_change_nothing() -> None:
    led = ledger()
    assert led.apply(fill(1, BUY, 10, "100.00", "1"))
    before = led.state(MarkBook(), 1)
    assert not led.apply(fill(1, BUY, 10, "100.00", "1"))
    assert led.state(MarkBook(), 1) == before
    assert led.fills == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (fill(1, BUY, 10, "100", symbol="NOPE"), "unknown_instrument"),
        (fill(1, BUY, 0, "100"), "non_positive_quantity"),
        (fill(1, BUY, 10, "-1"), "non_positive_price"),
        (fill(1, BUY, "1.5", "100"), "off_lot"),
        (fill(1, BUY, 10, "100", account="other"), "wrong_account"),
        (fill(1, BUY, 10, "100", "NaN"), "invalid_fee"),
    ],
)
def test_refused_fills_name_their_reason_and_change_nothing(bad: Fill, reason: str) -> None:
    led = ledger()
    with pytest.raises(LedgerError) as refused:
        led.apply(bad)
    assert refused.value.reason == reason
    assert led.fills == 0 and led.fill_ids == set()


def test_marks_fall_back_from_quote_side_to_trade_to_bar_and_flag_unpriceable() -> None:
    led = ledger()
    led.apply(fill(1, BUY, 10, "100.00"))
    marks = MarkBook()
    state = led.state(marks, 1)
    assert state.unpriceable == ("SPY",)
    # unpriceable: carried at cost, no unrealized, identity still exact
    assert (state.unrealized_pnl, state.equity) == (D(0), START)
    marks.restore("SPY", D("99.00"))
    assert led.positions(marks, 1).positions[0].mark_price == D("99.00")
    marks.bar("SPY", D("100.50"))
    assert led.positions(marks, 1).positions[0].mark_price == D("100.50")
    marks.trade("SPY", D("100.60"))
    assert led.positions(marks, 1).positions[0].mark_price == D("100.60")
    marks.quote("SPY", None, D("100.70"))  # no bid: a long falls back to the trade
    assert led.positions(marks, 1).positions[0].mark_price == D("100.60")
    marks.quote("SPY", D("100.65"), D("100.70"))
    assert led.positions(marks, 1).positions[0].mark_price == D("100.65")
    assert marks.price("SPY", -1) == D("100.70") and marks.price("SPY", 0) == D("100.675")


def test_other_currencies_are_kept_apart_and_flagged_in_the_headline() -> None:
    led = ledger()
    led.apply(fill(1, BUY, "0.5", "60000.00", "0.03", symbol="BTCUSDT"))
    led.apply(fill(2, BUY, 1, "100.00", "0.10", fee_currency="BNB"))
    marks = MarkBook()
    marks.trade("BTCUSDT", D("61000.00"))
    marks.trade("SPY", D("101.00"))
    valuation = led.valuation(marks)
    usdt, usd, bnb = (valuation.currencies[c] for c in ("USDT", "USD", "BNB"))
    # 0.5 × 60 000 = 30 000 paid + 0.03 fee; marked 0.5 × 61 000 = 30 500: equity 499.97
    assert (usdt.cash, usdt.unrealized_pnl, usdt.equity) == (
        D("-30000.03"),
        D("500.00"),
        D("499.97"),
    )
    assert usd.cash == START - D("100.00") and usd.unrealized_pnl == D("1.00")
    assert (bnb.fees, bnb.cash) == (D("0.10"), D("-0.10"))
    assert all(identity_holds(t) for t in valuation.currencies.values())
    assert led.state(marks, 2, valuation).unpriceable == ("BTCUSDT",)


def test_hedging_keeps_one_position_per_strategy() -> None:
    led = ledger(hedging=True)
    led.apply(fill(1, BUY, 10, "100.00", strategy="a"))
    led.apply(fill(2, SELL, 4, "101.00", strategy="b"))
    marks = MarkBook()
    marks.quote("SPY", D("102.00"), D("102.02"))
    positions = led.positions(marks, 2).positions
    # a long 10 marked at the bid: 10 × 2.00 = 20.00; b short 4 at the ask: −4 × 1.02 = −4.08
    assert [(p.quantity, p.unrealized_pnl) for p in positions] == [
        (D(10), D("20.00")),
        (D(-4), D("-4.08")),
    ]
    state = led.state(marks, 2)
    assert (state.realized_pnl, state.unrealized_pnl) == (D(0), D("15.92"))
    assert identity_holds(led.valuation(marks).currencies["USD"])


def test_mark_price_and_account_parsing() -> None:
    assert str(mark_price(100.01, 4)) == "100.01" and str(mark_price(1e2, 2)) == "100"
    assert str(mark_price(100.123456, 4)) == "100.1235"
    assert mark_price(0.1 + 0.2, 2) == D("0.30")
    assert mark_price(0.0, 2) is None and mark_price(float("nan"), 2) is None
    assert mark_price(float("inf"), 2) is None
    assert parse_account("paper:1000000:USD") == AccountSpec("paper", "USD", D(1_000_000))
    assert parse_account("desk:5.5:USDT:hedging").hedging
    for bad in ("paper", "paper:x:USD", "paper:-1:USD", "paper:1:USD:both", ":1:USD"):
        with pytest.raises(ValueError):
            parse_account(bad)


@given(
    st.one_of(
        st.floats(min_value=1e-9, max_value=1e18, allow_nan=False),
        st.integers(1, 10**7).map(lambda cents: cents / 100),
        st.decimals(min_value=D("0.0001"), max_value=D(10**6), places=4).map(float),
    ),
    st.integers(0, 10),
)
def test_mark_price_equals_quantizing_the_shortest_repr_then_trimming(
    value: float, places: int
) -> None:
    # the definition the fast path for on-grid prices must agree with, for every float
    with localcontext(ROUNDING):
        expected = trimmed(D(repr(value)).quantize(D(1).scaleb(-places)))
    got = mark_price(value, places)
    assert got == expected and str(got) == str(expected)


# ── the identity, over random fill sequences ──────────────────────────────────────────────────

SYMBOLS = ("SPY", "ES", "ETHUSDT")
#: ("fill", Fill) or ("quote" | "trade" | "bar", (symbol, bid or price, ask))
Event = tuple[str, "Fill | tuple[str, D, D]"]


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    """A random sequence of fills (any side, size, price, fee, strategy; opens, adds, reduces,
    flips, closes, long and short) and marks (quotes, trades, bars)."""
    out: list[Event] = []
    for n in range(draw(st.integers(1, 40))):
        symbol = draw(st.sampled_from(SYMBOLS))
        cents = draw(st.integers(1, 20_000))
        if draw(st.integers(0, 3)) == 0:
            kind = draw(st.sampled_from(("quote", "trade", "bar")))
            spread = draw(st.integers(0, 50))
            out.append((kind, (symbol, D(cents).scaleb(-2), D(cents + spread).scaleb(-2))))
            continue
        quantity = draw(st.integers(1, 500))
        fee = D(draw(st.integers(-50, 500))).scaleb(-2)
        side = draw(st.sampled_from((BUY, SELL)))
        strategy = draw(st.sampled_from(("a", "b", "c")))
        out.append(("fill", fill(n, side, quantity, str(D(cents).scaleb(-2)), str(fee),
                                 symbol=symbol, strategy=strategy)))  # fmt: skip
        if draw(st.booleans()) and draw(st.booleans()):  # a redelivered fill now and then
            out.append(("fill", out[-1][1]))
    return out


def reference_equity(fills: list[Fill], marks: MarkBook, currency: str) -> D | None:
    """Brute force from the fill list: start − Σ signed notional − Σ fees + Σ net qty × mark."""
    cash = START if currency == "USD" else D(0)
    net: dict[str, D] = {}
    for f in fills:
        signed = f.quantity if f.side is BUY else -f.quantity
        instrument = TABLE[f.symbol]
        if instrument.currency == currency:
            cash -= signed * f.price * instrument.multiplier
            net[f.symbol] = net.get(f.symbol, D(0)) + signed
        if f.fee_currency == currency:
            cash -= f.fee
    for symbol, quantity in net.items():
        if quantity:
            mark = marks.price(symbol, 1 if quantity > 0 else -1)
            if mark is None:
                return None
            cash += quantity * mark * TABLE[symbol].multiplier
    return cash


def reference_realized(fills: list[Fill], currency: str) -> Fraction:
    """Average cost in exact rationals (no rounding at all)."""
    held: dict[str, tuple[Fraction, Fraction]] = {}
    realized = Fraction(0)
    for f in fills:
        instrument = TABLE[f.symbol]
        if instrument.currency != currency:
            continue
        q, cost = held.get(f.symbol, (Fraction(0), Fraction(0)))
        signed = Fraction(f.quantity) * (1 if f.side is BUY else -1)
        price = Fraction(f.price) * instrument.multiplier
        if q and (q > 0) != (signed > 0):
            closing = min(abs(signed), abs(q)) * (1 if q > 0 else -1)
            share = cost * closing / q
            realized += closing * price - share
            q, cost, signed = q - closing, cost - share, signed + closing
        if signed:
            q, cost = q + signed, cost + signed * price
        held[f.symbol] = (q, cost)
    return realized


@given(events(), st.booleans())
def test_realized_plus_unrealized_minus_fees_is_equity_change_at_every_event(
    sequence: list[Event], hedging: bool
) -> None:
    led = ledger(hedging=hedging)
    marks = MarkBook()
    applied: list[Fill] = []
    for kind, payload in sequence:
        if kind == "fill":
            assert isinstance(payload, Fill)
            if led.apply(payload):
                applied.append(payload)
        else:
            assert not isinstance(payload, Fill)
            symbol, bid, ask = payload
            if kind == "quote":
                marks.quote(symbol, bid, ask)
            elif kind == "trade":
                marks.trade(symbol, bid)
            else:
                marks.bar(symbol, bid)
        valuation = led.valuation(marks)
        assert led.headline(marks) == valuation.currencies["USD"]  # the backtest's shortcut
        for currency, totals in valuation.currencies.items():
            # the identity, exactly (Decimal ==, no tolerance)
            assert totals.total_pnl == totals.equity - totals.starting_cash, currency
            if not totals.unpriceable and not hedging:  # hedging: each strategy at its own side
                assert totals.equity == reference_equity(applied, marks, currency)
            # attribution: the strategies' total PnLs sum to the account's, exactly, once every
            # strategy position is priced (offsetting strategy positions of a flat account are
            # carried at their own costs until then)
            by_strategy = [s[currency] for s in valuation.strategies.values() if currency in s]
            if not totals.unpriceable and not any(t.unpriceable for t in by_strategy):
                assert sum((t.total_pnl for t in by_strategy), D(0)) == totals.total_pnl
            if not hedging:  # average cost, within the 8-dp cost-share rounding per close
                error = Fraction(totals.realized_pnl) - reference_realized(applied, currency)
                assert abs(error) <= Fraction(len(applied), 2 * 10**8)
        state = led.state(marks, 0, valuation)
        assert state.realized_pnl + state.unrealized_pnl - state.fees == (
            state.equity - state.starting_cash
        )
        # the published attribution: each strategy's identity, and in total (cash flows always
        # sum to the account's; values too once every strategy position is priced)
        own = valuation.currencies["USD"]
        assert set(state.strategies) == {n for n, c in valuation.strategies.items() if "USD" in c}
        for pnl in state.strategies.values():
            assert pnl.realized_pnl + pnl.unrealized_pnl - pnl.fees == (
                pnl.cash_flow + pnl.market_value
            )
        assert sum((p.cash_flow for p in state.strategies.values()), D(0)) == own.cash - START
        if not state.unpriceable and not any(p.unpriceable for p in state.strategies.values()):
            assert sum((p.cash_flow + p.market_value for p in state.strategies.values()), D(0)) == (
                state.equity - state.starting_cash
            )
            assert sum(
                (p.realized_pnl + p.unrealized_pnl - p.fees for p in state.strategies.values()),
                D(0),
            ) == (state.realized_pnl + state.unrealized_pnl - state.fees)
        # leverage: gross / equity to 6 dp, None when equity <= 0
        if state.equity <= 0:
            assert state.leverage is None
        else:
            assert state.leverage is not None
            assert abs(state.leverage - state.gross_exposure / state.equity) <= D("0.0000005")
    assert led.fills == len(applied) == len({f.fill_id for f in applied})

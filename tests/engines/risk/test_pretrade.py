"""Pre-trade checks by hand-built cases: every denial code, the boundaries exactly at a limit,
pending orders counted, reducing orders let through, the rate limit against a brute-force
sliding count, and the VPIN throttle in both modes."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.risk.pretrade import (
    AccountBook,
    Approved,
    Decision,
    DenialCode,
    Denied,
    InstrumentLimits,
    MarketState,
    PreTradeLimits,
    RateLimiter,
    TradingState,
    VpinThrottle,
    check,
)
from engines.shell.instruments import load_instruments
from protocol.records import Order, OrderSide, OrderStatus, OrderType

D = Decimal
INSTRUMENTS = load_instruments()
SEC = 1_000_000_000

LIMITS = PreTradeLimits(
    default=InstrumentLimits(
        max_order_quantity=D(1_000), max_order_notional=D(100_000), max_position=D(2_000)
    ),
    instruments={"AIG": InstrumentLimits(max_position=D(500))},
    max_gross_exposure=D(400_000),
    max_net_exposure=D(300_000),
    price_collar_bps=D(100),
    max_orders_per_second=10,
    order_burst=2,
)


def order(
    qty: str | int = 100,
    side: OrderSide = OrderSide.BUY,
    *,
    symbol: str = "SPY",
    type: OrderType = OrderType.MARKET,
    price: str | None = None,
    stop: str | None = None,
    t: int = 0,
    oid: str = "o1",
) -> Order:
    return Order(
        client_order_id=oid, account="paper", strategy="s", symbol=symbol, side=side, type=type,
        quantity=D(qty), status=OrderStatus.INITIALIZED, event_ns=t,
        price=None if price is None else D(price), stop_price=None if stop is None else D(stop),
    )  # fmt: skip


def book(limits: PreTradeLimits = LIMITS, **prices: str) -> AccountBook:
    market = MarketState(last_price={s: D(p) for s, p in (prices or {"SPY": "100"}).items()})
    return AccountBook("paper", limits, INSTRUMENTS, market)


def denied(decision: Decision) -> DenialCode:
    assert isinstance(decision, Denied), decision
    assert decision.detail
    return decision.code


def test_approved_market_order_at_the_last_trade() -> None:
    got = check(order(100), book())
    assert got == Approved(D(100), D(100), "")


@pytest.mark.parametrize(
    ("case", "code"),
    [
        (order(0), DenialCode.INVALID_QUANTITY),
        (order(-5), DenialCode.INVALID_QUANTITY),
        (order("NaN"), DenialCode.INVALID_QUANTITY),
        (order(10, symbol="NOPE"), DenialCode.UNKNOWN_INSTRUMENT),
        (order(10, type=OrderType.LIMIT), DenialCode.INVALID_PRICE),
        (order(10, type=OrderType.LIMIT, price="-1"), DenialCode.INVALID_PRICE),
        (order(10, type=OrderType.STOP_LIMIT, price="100"), DenialCode.INVALID_PRICE),
        (order(10, type=OrderType.STOP, stop="Infinity"), DenialCode.INVALID_PRICE),
        (order("10.5"), DenialCode.OFF_LOT),
        (order(10, type=OrderType.LIMIT, price="100.005"), DenialCode.OFF_TICK),
        (order(10, type=OrderType.STOP, stop="99.999"), DenialCode.OFF_TICK),
        (order(10, type=OrderType.LIMIT, price="101.01"), DenialCode.PRICE_COLLAR),
        (order(10, type=OrderType.LIMIT, price="98.99"), DenialCode.PRICE_COLLAR),
        (order(10, symbol="AIG"), DenialCode.NO_REFERENCE_PRICE),
        (order(1_001), DenialCode.MAX_QUANTITY),
        (order(1_000, type=OrderType.LIMIT, price="100.01"), DenialCode.MAX_NOTIONAL),
    ],
)
def test_each_order_level_denial(case: Order, code: DenialCode) -> None:
    assert denied(check(case, book())) is code


def test_boundaries_are_inclusive() -> None:
    b = book()
    # collar 100 bps of 100: 99.00 and 101.00 pass, one tick more does not (above)
    for price in ("101.00", "99.00"):
        assert isinstance(check(order(10, type=OrderType.LIMIT, price=price), b), Approved)
    # quantity 1,000 at 100 is exactly the 100,000 notional limit
    assert check(order(1_000), b) == Approved(D(1_000), D(100), "")
    # a stop price is not collared (a protective stop is far from the market)
    assert isinstance(check(order(10, OrderSide.SELL, type=OrderType.STOP, stop="80"), b), Approved)


def test_limit_order_without_collar_needs_no_last_trade() -> None:
    limits = PreTradeLimits(default=LIMITS.default)
    got = check(order(10, symbol="AIG", type=OrderType.LIMIT, price="30.00"), book(limits))
    assert got == Approved(D(10), D("30.00"), "")


def test_below_min_notional_on_btc() -> None:
    b = book(PreTradeLimits(), BTCUSDT="60000")
    small = order("0.00008", symbol="BTCUSDT")  # 4.8 USDT < 5
    assert denied(check(small, b)) is DenialCode.BELOW_MIN_NOTIONAL
    assert denied(check(order("0.000081", symbol="BTCUSDT"), b)) is DenialCode.OFF_LOT
    assert isinstance(check(order("0.00009", symbol="BTCUSDT"), b), Approved)  # 5.4 USDT


def test_position_limit_counts_pending_orders_and_per_instrument_override() -> None:
    b = book()
    b.set_positions({"SPY": D(1_200)}, {})
    assert isinstance(check(order(800), b), Approved)  # 2,000: at the limit
    b.record_submitted("p1", "SPY", OrderSide.BUY, D(500), D(100), 0)
    assert denied(check(order(301), b)) is DenialCode.MAX_POSITION  # 1,200 + 500 + 301
    assert isinstance(check(order(300), b), Approved)
    # AIG's own limit (500) replaces the default's 2,000; its other limits stay the default's
    b.market.last_price["AIG"] = D(30)
    assert denied(check(order(501, symbol="AIG"), b)) is DenialCode.MAX_POSITION
    assert denied(check(order(1_001, symbol="AIG"), b)) is DenialCode.MAX_QUANTITY
    # the order's fill releases the pending quantity
    b.on_order(transition(order(500, oid="p1"), OrderStatus.FILLED, "500"))
    assert not b.pending and isinstance(check(order(800), b), Approved)


def transition(o: Order, status: OrderStatus, filled: str = "0") -> Order:
    return msgspec.structs.replace(o, status=status, filled_quantity=D(filled))


def test_order_updates_move_pending_and_are_idempotent() -> None:
    b = book()
    first = order(400, oid="a")
    b.record_submitted("a", "SPY", OrderSide.BUY, D(400), D(100), 0)
    b.on_order(transition(first, OrderStatus.SUBMITTED))  # our own echo: no double count
    assert b.pending_buy == {"SPY": D(400)}
    b.on_order(transition(first, OrderStatus.PARTIALLY_FILLED, "150"))
    assert b.pending_buy == {"SPY": D(250)}
    b.on_order(transition(first, OrderStatus.CANCELED, "150"))
    assert b.pending_buy == {} and b.pending == {}
    # an order submitted elsewhere (another process, before a restart) is counted too
    b.on_order(transition(order(300, OrderSide.SELL, oid="b"), OrderStatus.ACCEPTED))
    assert b.pending_sell == {"SPY": D(300)}


def test_gross_and_net_exposure_with_pending_on_both_sides() -> None:
    b = book(SPY="100", AIG="50", BAC="10")
    b.set_positions({"AIG": D(400), "BAC": D(-5_000)}, {})  # +20,000 and −50,000
    b.record_submitted("x", "BAC", OrderSide.BUY, D(2_000), D(10), 0)  # BAC hi −3,000, lo −5,000
    # gross = 20,000 + 50,000 + |SPY| ; net_hi = 20,000 − 30,000 + SPY, net_lo = 20,000 − 50,000
    limits = PreTradeLimits(max_gross_exposure=D(170_000), max_net_exposure=D(90_000))
    b.limits = limits
    assert isinstance(check(order(1_000), b), Approved)  # gross 170,000, net max(90,000, 30,000)
    assert denied(check(order(1_001), b)) is DenialCode.MAX_GROSS_EXPOSURE
    b.limits = PreTradeLimits(max_gross_exposure=D(10**9), max_net_exposure=D(89_999))
    assert denied(check(order(1_000), b)) is DenialCode.MAX_NET_EXPOSURE
    # selling SPY short: lo side −1,000 × 100: net_lo = 20,000 − 50,000 − 100,000
    b.limits = PreTradeLimits(max_net_exposure=D(130_000))
    assert isinstance(check(order(1_000, OrderSide.SELL), b), Approved)
    assert denied(check(order(1_001, OrderSide.SELL), b)) is DenialCode.MAX_NET_EXPOSURE
    # the price of a symbol without trades is Portfolio's mark
    b.market.last_price.pop("AIG")
    b.set_positions({"AIG": D(400), "BAC": D(-5_000)}, {"AIG": D(60)})
    b.limits = PreTradeLimits(max_gross_exposure=D(174_000))
    assert isinstance(check(order(1_000), b), Approved)  # 24,000 + 50,000 + 100,000
    assert denied(check(order(1_010), b)) is DenialCode.MAX_GROSS_EXPOSURE


def test_trading_states_and_reducing_orders() -> None:
    b = book()
    b.set_positions({"SPY": D(300)}, {})
    b.state = TradingState.HALTED
    assert denied(check(order(100, OrderSide.SELL), b)) is DenialCode.HALTED
    b.state = TradingState.REDUCING_ONLY
    assert denied(check(order(100), b)) is DenialCode.REDUCING_ONLY
    assert denied(check(order(301, OrderSide.SELL), b)) is DenialCode.REDUCING_ONLY  # flips
    assert isinstance(check(order(300, OrderSide.SELL), b), Approved)
    b.record_submitted("s", "SPY", OrderSide.SELL, D(200), D(100), 0)
    assert denied(check(order(101, OrderSide.SELL), b)) is DenialCode.REDUCING_ONLY  # pending
    b.state = TradingState.ACTIVE
    # a reducing order passes limits that the position already breaks
    b.limits = PreTradeLimits(default=InstrumentLimits(max_position=D(10)))
    assert isinstance(check(order(100, OrderSide.SELL), b), Approved)
    assert denied(check(order(1), b)) is DenialCode.MAX_POSITION


def test_vpin_alert_reduce_only_and_scale() -> None:
    b = book()
    b.set_positions({"SPY": D(-300)}, {})
    b.market.vpin_alert.add("SPY")
    assert denied(check(order(100, OrderSide.SELL), b)) is DenialCode.VPIN_ALERT
    assert isinstance(check(order(300), b), Approved)  # buys back the short: reducing
    assert denied(check(order(301), b)) is DenialCode.VPIN_ALERT
    b.limits = PreTradeLimits(vpin_throttle=VpinThrottle.SCALE, vpin_scale=D("0.3"))
    assert check(order(101, OrderSide.SELL), b) == Approved(D(30), D(100), "vpin_alert")
    assert denied(check(order(3, OrderSide.SELL), b)) is DenialCode.VPIN_ALERT  # 0.9 → 0
    b.limits = PreTradeLimits(vpin_throttle=VpinThrottle.OFF)
    assert check(order(101, OrderSide.SELL), b) == Approved(D(101), D(100), "")
    b.market.vpin_alert.clear()
    b.limits = LIMITS
    assert isinstance(check(order(100, OrderSide.SELL), b), Approved)


def test_rate_limit_on_event_time() -> None:
    b = book()  # 10 orders/s, burst 2
    for t in (0, 0):
        assert isinstance(check(order(t=t), b), Approved)
        b.record_submitted(f"r{t}", "SPY", OrderSide.BUY, D(1), D(100), t)
    assert denied(check(order(t=0), b)) is DenialCode.RATE_LIMIT
    assert denied(check(order(t=SEC // 10 - 1), b)) is DenialCode.RATE_LIMIT
    assert isinstance(check(order(t=SEC // 10), b), Approved)  # one token back after 100 ms
    # a denied order takes no slot
    assert isinstance(check(order(t=SEC // 10), b), Approved)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 20),
    burst=st.integers(1, 5),
    gaps=st.lists(st.integers(0, SEC // 2), min_size=1, max_size=60),
)
def test_rate_limiter_equals_a_token_bucket(rate: int, burst: int, gaps: list[int]) -> None:
    """GCRA against the textbook token bucket in exact rational arithmetic (rate dividing 1e9
    exactly or not: the interval is ⌊1e9 / rate⌋ ns, so the reference refills at that)."""
    from fractions import Fraction

    limiter = RateLimiter(rate, burst)
    interval = SEC // rate
    tokens, last = Fraction(burst), 0
    t = 0
    for gap in gaps:
        t += gap
        tokens = min(Fraction(burst), tokens + Fraction(t - last, interval))
        last = t
        want = tokens >= 1
        assert limiter.allows(t) is want
        if want:
            limiter.take(t)
            tokens -= 1


def test_limits_validation_and_payload() -> None:
    with pytest.raises(ValueError, match="max_position"):
        InstrumentLimits(max_position=D(0))
    with pytest.raises(ValueError, match="vpin_scale"):
        PreTradeLimits(vpin_scale=D(1))
    with pytest.raises(ValueError, match="order_burst"):
        PreTradeLimits(order_burst=0)
    payload = LIMITS.to_payload()
    assert payload["instruments"] == {
        "AIG": {"max_order_quantity": "1000", "max_order_notional": "100000", "max_position": "500"}
    }
    assert payload["price_collar_bps"] == "100"


def test_an_algorithm_child_gets_the_per_order_checks_and_its_parent_covers_the_rest() -> None:
    b = book()  # max position 2 000, 10 orders/s, burst 2, collar 100 bps
    # the parent (1 000) was approved and is pending; the book already holds 1 500
    b.set_positions({"SPY": D(1_500)}, {})
    b.record_submitted("p", "SPY", OrderSide.BUY, D(1_000), D(100), 0)
    b.rate = RateLimiter(10, 2)  # the parent's slot given back: the child's are counted below

    def child(
        qty: int = 300,
        t: int = 0,
        k: int = 1,
        side: OrderSide = OrderSide.BUY,
        type: OrderType = OrderType.MARKET,
        price: str | None = None,
    ) -> Order:
        made = order(qty, side, t=t, oid=f"p-c{k}", type=type, price=price)
        return msgspec.structs.replace(made, parent_order_id="p")

    # a plain order of that size would break the position limit; the child does not (its
    # parent's approval covered it, and it is pending inside the parent: not added again)
    assert denied(check(order(300), b)) is DenialCode.MAX_POSITION
    assert check(child(), b) == Approved(D(300), D(100), "")
    b.record_child("SPY", D(100), 0)
    assert b.pending_buy["SPY"] == 1_000 and set(b.pending) == {"p"}
    # the child's own transitions are skipped by the pending book (the parent's count)
    b.on_order(msgspec.structs.replace(child(), status=OrderStatus.ACCEPTED))
    assert set(b.pending) == {"p"} and b.pending_buy["SPY"] == 1_000
    # per-order size limits, the rate, the collar and the trading state still apply
    assert denied(check(child(1_001), b)) is DenialCode.MAX_QUANTITY
    b.record_child("SPY", D(100), 0)
    assert denied(check(child(k=3), b)) is DenialCode.RATE_LIMIT  # burst 2 used by children
    limit = child(t=SEC, type=OrderType.LIMIT, price="102")
    assert denied(check(limit, b)) is DenialCode.PRICE_COLLAR
    b.market.vpin_alert.add("SPY")  # the VPIN throttle was the parent's to apply
    assert isinstance(check(child(t=SEC), b), Approved)
    b.state = TradingState.HALTED
    assert denied(check(child(t=SEC), b)) is DenialCode.HALTED
    b.state = TradingState.REDUCING_ONLY  # the parent adds to a long: its children do too
    assert denied(check(child(t=SEC), b)) is DenialCode.REDUCING_ONLY
    # a parent that reduces (selling 1 000 of the 1 500 held): its children pass
    b = book()
    b.set_positions({"SPY": D(1_500)}, {})
    b.record_submitted("p", "SPY", OrderSide.SELL, D(1_000), D(100), 0)
    b.state = TradingState.REDUCING_ONLY
    assert isinstance(check(child(300, t=SEC, side=OrderSide.SELL), b), Approved)

"""Strategy core: the order state machine (every pair of states), fills, ids, order deltas on
lots / ticks / min notional, the indicators against TA-Lib, strategy config errors, the callbacks
the engine calls and the last prices it keeps."""

from __future__ import annotations

import itertools
from decimal import Decimal

import msgspec
import numpy as np
import pytest
import talib
from hypothesis import given
from hypothesis import strategies as st

from engines.shell.instruments import load_instruments
from engines.strategy.core import (
    TERMINAL,
    TRANSITIONS,
    AverageTrueRange,
    IllegalTransition,
    LastPrices,
    NoParams,
    SimpleMovingAverage,
    Strategy,
    StrategyContext,
    StrategyState,
    apply_fill,
    defined_callbacks,
    order_delta,
    parse_strategy_specs,
    round_limit_price,
    round_stop_price,
    transition,
)
from protocol.records import Order, OrderSide, OrderStatus, OrderType

S = OrderStatus
D = Decimal
INSTRUMENTS = load_instruments()
SPY, BTC = INSTRUMENTS["SPY"], INSTRUMENTS["BTCUSDT"]


def order(status: S = S.INITIALIZED, quantity: str = "100", filled: str = "0") -> Order:
    return Order(client_order_id="s-1-1", account="paper", strategy="s", symbol="SPY",
                 side=OrderSide.BUY, type=OrderType.MARKET, quantity=D(quantity), status=status,
                 event_ns=1, filled_quantity=D(filled))  # fmt: skip


# ── state machine ────────────────────────────────────────────────────────────────────────────

LEGAL = {
    (S.INITIALIZED, S.SUBMITTED), (S.INITIALIZED, S.DENIED), (S.INITIALIZED, S.REJECTED),
    (S.INITIALIZED, S.CANCELED), (S.SUBMITTED, S.ACCEPTED), (S.SUBMITTED, S.REJECTED),
    (S.SUBMITTED, S.CANCELED), (S.ACCEPTED, S.PARTIALLY_FILLED), (S.ACCEPTED, S.FILLED),
    (S.ACCEPTED, S.CANCELED), (S.ACCEPTED, S.EXPIRED), (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED), (S.PARTIALLY_FILLED, S.CANCELED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
}  # fmt: skip


@pytest.mark.parametrize(("start", "to"), list(itertools.product(S, S)))
def test_every_transition_is_allowed_or_refused_as_specified(start: S, to: S) -> None:
    assert ((start, to) in LEGAL) == (to in TRANSITIONS[start])
    current = order(start, filled="50" if start is S.PARTIALLY_FILLED else "0")
    if to in (S.PARTIALLY_FILLED, S.FILLED):
        quantity = (
            D("10") if to is S.PARTIALLY_FILLED else current.quantity - current.filled_quantity
        )
        if (start, to) in LEGAL:
            assert apply_fill(current, quantity, D("10"), event_ns=2).status is to
        else:
            with pytest.raises(IllegalTransition):
                apply_fill(current, quantity, D("10"), event_ns=2)
        with pytest.raises(IllegalTransition):  # fills never go through transition()
            transition(current, to, event_ns=2)
    elif (start, to) in LEGAL:
        moved = transition(current, to, event_ns=2, reason="why")
        assert (moved.status, moved.event_ns, moved.reason) == (to, 2, "why")
    else:
        with pytest.raises(IllegalTransition, match=f"{start} → {to}"):
            transition(current, to, event_ns=2)


def test_terminal_states_are_the_five_ends() -> None:
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED, S.DENIED} == TERMINAL


def test_fills_move_quantity_and_average_price_and_refuse_an_overfill() -> None:
    o = apply_fill(order(S.ACCEPTED), D("30"), D("100.01"), event_ns=5)
    o = apply_fill(o, D("70"), D("100.02"), event_ns=6)
    assert o.status is S.FILLED and o.filled_quantity == 100
    assert o.average_price == (30 * D("100.01") + 70 * D("100.02")) / 100 == D("100.017")
    with pytest.raises(IllegalTransition):
        apply_fill(order(S.ACCEPTED), D("101"), D("1"), event_ns=2)
    with pytest.raises(IllegalTransition):
        apply_fill(order(S.ACCEPTED), D("0"), D("1"), event_ns=2)


# ── deltas and grids ─────────────────────────────────────────────────────────────────────────


def test_order_delta_rounds_toward_zero_on_the_lot_and_respects_min_notional() -> None:
    assert order_delta(D(0), D("100.9"), SPY, None) == 100
    assert order_delta(D(50), D("-20.5"), SPY, None) == -70
    assert order_delta(D(100), D("100.4"), SPY, None) == 0
    # BTCUSDT: lot 0.00001, min notional 5 USDT
    assert order_delta(D(0), D("0.000129"), BTC, D("50000")) == D("0.00012")  # 6.00 USDT
    assert order_delta(D(0), D("0.000099"), BTC, D("50000")) == 0  # 4.50 USDT < 5
    assert order_delta(D(0), D("0.001"), BTC, None) == 0  # no price: notional unknown


def test_prices_round_to_the_tick_on_the_passive_side() -> None:
    tick = SPY.tick
    assert round_limit_price(D("100.017"), tick, OrderSide.BUY) == D("100.01")
    assert round_limit_price(D("100.011"), tick, OrderSide.SELL) == D("100.02")
    assert round_limit_price(D("100.01"), tick, OrderSide.SELL) == D("100.01")
    assert round_stop_price(D("100.011"), tick, OrderSide.BUY) == D("100.02")
    assert round_stop_price(D("100.019"), tick, OrderSide.SELL) == D("100.01")


def context(state: StrategyState, price: str | None = "100") -> StrategyContext:
    prices = {} if price is None else {"SPY": D(price), "BTCUSDT": D("50000")}
    return StrategyContext(state, INSTRUMENTS, now_ns=7, event_ns=1_000, last_prices=prices)


def test_target_sends_the_delta_once_and_nothing_for_an_unchanged_target() -> None:
    state = StrategyState("s", "paper")
    ctx = context(state)
    first = ctx.target("SPY", 100)
    assert first is not None and (first.side, first.quantity) == (OrderSide.BUY, D(100))
    assert (first.client_order_id, first.intent_id) == ("s-1000-1", "intent-s-1000-1")
    assert first.status is S.INITIALIZED and first.event_ns == 1_000
    assert ctx.target("SPY", 100) is None  # unchanged: no churn
    assert ctx.target("SPY", D("100.0")) is None
    # the open order counts: a new target trades only the difference
    second = ctx.target("SPY", -50)
    assert second is not None and (second.side, second.quantity) == (OrderSide.SELL, D(150))
    assert second.client_order_id == "s-1000-2"
    assert state.pending("SPY") == -50


def test_explicit_orders_round_and_check_their_prices() -> None:
    ctx = context(StrategyState("s", "paper"))
    limit = ctx.order("SPY", OrderSide.BUY, D("10.7"), type=OrderType.LIMIT, price=D("99.999"))
    assert limit is not None and (limit.quantity, limit.price) == (D(10), D("99.99"))
    with pytest.raises(ValueError, match="needs a stop_price"):
        ctx.order("SPY", OrderSide.SELL, 5, type=OrderType.STOP)
    assert ctx.order("SPY", OrderSide.BUY, D("0.5")) is None
    assert ctx.order("BTCUSDT", OrderSide.BUY, D("0.00001")) is None  # 0.50 USDT < min notional


# ── indicators against TA-Lib ────────────────────────────────────────────────────────────────


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(50, 300))
def test_sma_and_atr_equal_talib(seed: int, period: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    high = close * (1 + rng.uniform(0, 0.003, n))
    low = close * (1 - rng.uniform(0, 0.003, n))
    want_sma = talib.SMA(close, timeperiod=period)
    want_atr = talib.ATR(high, low, close, timeperiod=period)
    sma, atr = SimpleMovingAverage(period), AverageTrueRange(period)
    got_sma = [sma.update(c) for c in close.tolist()]
    got_atr = [atr.update(h, lo, c) for h, lo, c in zip(high.tolist(), low.tolist(), close.tolist(), strict=True)]  # fmt: skip
    for got, want in ((got_sma, want_sma), (got_atr, want_atr)):
        ready = ~np.isnan(want)
        assert [g is not None for g in got] == ready.tolist()
        np.testing.assert_allclose(
            np.array([g for g in got if g is not None]), want[ready], rtol=1e-10
        )


# ── configuration ────────────────────────────────────────────────────────────────────────────

MA = "engines.strategy.strategies:MovingAverageCross"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"name": "x"}', "strategies:"),
        ('[{"name": "a", "path": "' + MA + '", "params": {"fast": "ten"}}]', "strategies[0].params.fast:"),
        ('[{"name": "a", "path": "' + MA + '", "params": {"fast": 40, "slow": 30}}]', "strategies[0].params:"),
        ('[{"name": "a", "path": "' + MA + '", "params": {"nope": 1}}]', "strategies[0].params:"),
        ('[{"name": "a", "path": "' + MA + '"}, {"path": "' + MA + '"}]', "strategies[1]:"),
        ('[{"name": "a", "path": "nowhere.mod:Cls"}]', "strategies[0].path:"),
        ('[{"name": "a", "path": "protocol.records:Order"}]', "strategies[0].path:"),
        ('[{"name": "a b", "path": "' + MA + '"}]', "strategies[0].name:"),
        ('[{"name": "a", "path": "' + MA + '", "symbols": []}]', "strategies[0].symbols:"),
        ('[{"name": "a", "path": "' + MA + '"}, {"name": "a", "path": "' + MA + '"}]', "strategies[1].name:"),
        ('[{"name": "a", "path": "' + MA + '", "algo": {"kind": "vwap"}}]', "strategies[0].algo:"),
        ("[{", "strategies:"),
    ],
)  # fmt: skip
def test_a_malformed_strategy_config_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_strategy_specs(text)
    assert str(caught.value).startswith(field), str(caught.value)


def test_dotted_paths_load_with_a_colon_or_a_dot() -> None:
    specs = parse_strategy_specs(
        '[{"name": "a", "path": "engines.strategy.strategies.VpinGuard"},'
        ' {"name": "b", "path": "' + MA + '", "params": {"fast": 3, "slow": 5}}]'
    )
    assert [type(params).__name__ for _, params in specs] == [
        "VpinGuardParams",
        "MovingAverageCrossParams",
    ]
    assert (
        specs[1][1].slow == 5 and specs[0][0].account == "paper" and specs[0][0].symbols == ["SPY"]
    )


def test_ml_bet_targets_the_clamped_bet_size_of_its_model() -> None:
    from engines.strategy.strategies import MlBet, MlBetParams
    from protocol.records import Signal

    strategy = MlBet("ml", MlBetParams(model="gbm", max_quantity=100))
    state = StrategyState("ml", "paper")
    ctx = context(state)

    def signal(source: str, bet: object) -> Signal:
        return Signal(source=source, symbol="SPY", event_ns=5, values={"bet_size": bet})  # type: ignore[dict-item]

    for ignored in (signal("ml.other", 0.5), signal("vpin", 0.5), signal("ml.gbm", True),
                    signal("ml.gbm", None), signal("ml.gbm", float("nan"))):  # fmt: skip
        strategy.on_signal(ignored, ctx)
    assert ctx.orders == []
    strategy.on_signal(signal("ml.gbm", 0.537), ctx)
    strategy.on_signal(signal("ml.gbm", 0.531), ctx)  # the same 53 shares: no churn
    strategy.on_signal(signal("ml.gbm", -2.0), ctx)  # clamped to −1
    assert [(o.side, o.quantity) for o in ctx.orders] == [
        (OrderSide.BUY, D(53)), (OrderSide.SELL, D(153)),
    ]  # fmt: skip


# ── the callbacks the engine calls, the prices it keeps ──────────────────────────────────────


def test_only_the_data_callbacks_a_strategy_defines_are_called() -> None:
    from engines.strategy.strategies import (
        MlBet,
        MlBetParams,
        MovingAverageCross,
        MovingAverageCrossParams,
        VpinGuard,
        VpinGuardParams,
    )

    ma = MovingAverageCross("ma", MovingAverageCrossParams())
    assert defined_callbacks(ma) == {"on_bar": ma.on_bar}
    assert list(defined_callbacks(VpinGuard("g", VpinGuardParams()))) == ["on_bar", "on_signal"]
    assert list(defined_callbacks(MlBet("m", MlBetParams()))) == ["on_signal"]
    assert defined_callbacks(Strategy("none", NoParams())) == {}
    inherited = type("Inherited", (MovingAverageCross,), {})("i", MovingAverageCrossParams())
    assert list(defined_callbacks(inherited)) == ["on_bar"]  # a parent's override counts


def test_last_prices_are_exact_decimals_on_the_grid_skipping_what_is_not_a_price() -> None:
    prices = LastPrices(INSTRUMENTS)
    assert prices.get("SPY") is None
    prices.set("SPY", 168.5)
    prices.set("BTCUSDT", 50_000.125)
    assert str(prices["SPY"]) == "168.5000"  # SPY's price_precision is 4
    assert prices["BTCUSDT"] == D("50000.12")  # precision 2, half-even
    for not_a_price in (0.0, -1.0, float("nan"), float("inf")):
        prices.set("SPY", not_a_price)
    prices.set("NOPE", 10.0)  # outside the instrument table
    assert dict(prices) == {"SPY": D("168.5"), "BTCUSDT": D("50000.12")}
    prices.set("SPY", 168.51)
    assert prices["SPY"] == D("168.51")
    prices.set("SPY", 168.5)  # back to a price read before: the new print's, not a stale one
    assert prices["SPY"] == D("168.5")


@given(st.floats(min_value=0.01, max_value=1e6))
def test_a_last_price_is_the_price_the_venue_fills_a_market_order_at(price: float) -> None:
    from engines.strategy.venue import SimulatedVenue, VenueConfig
    from protocol.records import Fill, Trade

    prices = LastPrices(INSTRUMENTS)
    prices.set("SPY", price)
    venue = SimulatedVenue(VenueConfig(), INSTRUMENTS)
    venue.submit(msgspec.structs.replace(order(), status=S.SUBMITTED))
    events = venue.on_trade(Trade(symbol="SPY", event_ns=2, receive_ns=2, price=price, size=100))
    assert [e.price for e in events if isinstance(e, Fill)] == [prices["SPY"]]

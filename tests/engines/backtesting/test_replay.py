"""The event-driven run (live Strategy + Risk + Portfolio under the deterministic driver)
agrees with the vectorized sweep fill for fill and on the equity curve; it is deterministic,
never looks ahead, and a strategy that raises fails the run with its traceback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engines.backtesting.core import BarArrays, FillRule, MaCrossParams, ma_cross_path
from engines.backtesting.history import load_bars
from engines.backtesting.replay import EventRun, StrategyFailed, run_event
from protocol.records import OrderSide, OrderStatus
from tests.engines.strategy.support import TARGET_ONCE

MA = "engines.strategy.strategies:MovingAverageCross"
PARAMS: dict[str, Any] = {"fast": 3, "slow": 8, "quantity": 100, "atr_period": 5, "atr_stop": 2.0}


@pytest.fixture(scope="module")
def minute() -> BarArrays:
    bars = load_bars("SPY", "1m", 0, 2**62)
    return bars.select(np.arange(len(bars)) < 780)  # two regular sessions


@pytest.mark.parametrize("slippage_bps", [0.0, 2.5])
@pytest.mark.parametrize("fill", [FillRule.NEXT_OPEN, FillRule.CLOSE])
def test_event_driven_and_vectorized_give_the_same_fills_and_equity(
    minute: BarArrays, fill: FillRule, slippage_bps: float
) -> None:
    costs: dict[str, Any] = {"fee_bps": 1.5, "slippage_bps": slippage_bps}
    event = run_event(EventRun(strategy_path=MA, params=PARAMS, fill=fill, **costs), [minute])
    vec = ma_cross_path(minute, MaCrossParams(**PARAMS, **costs, fill=fill))
    at = np.nonzero(vec.quantity)[0]
    assert min(minute.volume) / 4 >= 200  # every print covers a reversal: fills are whole
    assert len(event.fills) == len(at) > 30
    stamp, market = (
        (minute.start_ns, minute.open) if fill is FillRule.NEXT_OPEN
        else (minute.end_ns, minute.close)
    )  # fmt: skip
    for f, i in zip(event.fills, at.tolist(), strict=True):
        signed = float(f.quantity) * (1 if f.side is OrderSide.BUY else -1)
        assert (f.event_ns, signed) == (int(stamp[i]), vec.quantity[i])
        if slippage_bps:  # exact decimals against float arithmetic: equal to the last bits
            assert float(f.price) == pytest.approx(vec.fill_price[i], rel=1e-12)
            assert (float(f.price) > market[i]) == (signed > 0)  # against the order
        else:
            assert float(f.price) == vec.fill_price[i] == market[i]
        assert float(f.fee) == pytest.approx(vec.fee[i], rel=1e-12)
    assert any(o.reason == "atr_stop" for o in event.orders)  # the stop path is exercised
    assert np.array_equal(event.equity_ns, minute.end_ns)
    np.testing.assert_allclose(event.equity_floats(), vec.equity, rtol=1e-12)


def test_same_data_and_config_give_the_same_hash(minute: BarArrays) -> None:
    run = EventRun(strategy_path=MA, params=PARAMS, fee_bps=1.0)
    part = minute.select(np.arange(len(minute)) < 200)
    first, second = run_event(run, [part]), run_event(run, [part])
    assert first.hash == second.hash and first.fills == second.fills
    other = run_event(EventRun(strategy_path=MA, params=PARAMS, fee_bps=2.0), [part])
    assert other.hash != first.hash


def test_perturbing_data_after_t_changes_nothing_before_t(minute: BarArrays) -> None:
    part = minute.select(np.arange(len(minute)) < 300)
    cut = 150
    later = np.arange(len(part)) >= cut
    o, h, lo, c = (np.where(later, np.round(a * 0.9, 4), a)
                   for a in (part.open, part.high, part.low, part.close))  # fmt: skip
    shocked = BarArrays(
        part.symbol, part.spec, part.start_ns, part.end_ns, o, h, lo, c,
        part.volume,
    )  # fmt: skip
    run = EventRun(strategy_path=MA, params=PARAMS, fee_bps=1.0)
    base, moved = run_event(run, [part]), run_event(run, [shocked])
    t = int(part.start_ns[cut])
    assert [f for f in base.fills if f.event_ns < t] == [f for f in moved.fills if f.event_ns < t]
    assert base.equity[:cut] == moved.equity[:cut]
    assert base.equity[cut:] != moved.equity[cut:]  # the shock is seen after t


def test_a_strategy_that_raises_fails_the_run_with_its_traceback(minute: BarArrays) -> None:
    run = EventRun(strategy_path="tests.engines.backtesting.strategies:Exploding")
    with pytest.raises(StrategyFailed, match="boom in on_bar") as failed:
        run_event(run, [minute.select(np.arange(len(minute)) < 20)])
    assert "Traceback" in str(failed.value)


def test_algorithm_children_pass_risk_in_the_backtest_and_a_denied_one_ends_its_parent(
    minute: BarArrays,
) -> None:
    part = minute.select(np.arange(len(minute)) < 10)
    # TWAP of 900 in three slices a minute apart: each child is an intent Risk approves before
    # the venue sees it; they fill on later prints and sum to the parent
    run = EventRun(strategy_path=TARGET_ONCE, params={"quantity": 900},
                   algo={"kind": "twap", "slices": 3, "interval_s": 60})  # fmt: skip
    result = run_event(run, [part])
    intents = [o for o in result.orders if o.status is OrderStatus.INITIALIZED]
    (parent,) = [o for o in intents if o.parent_order_id is None]
    children = [o for o in intents if o.parent_order_id == parent.client_order_id]
    assert [c.quantity for c in children] == [300, 300, 300]
    for child in children:
        steps = [o.status for o in result.orders if o.client_order_id == child.client_order_id]
        assert steps == [OrderStatus.INITIALIZED, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED,
                         OrderStatus.FILLED]  # fmt: skip
    assert sum(f.quantity for f in result.fills) == 900
    assert {f.client_order_id for f in result.fills} == {c.client_order_id for c in children}
    # 30 slices at once (interval 0): Risk's order rate (50/s, burst 20; the parent took one
    # slot) approves 19 children and denies the 20th; the parent's remainder is canceled
    burst = EventRun(strategy_path=TARGET_ONCE, params={"quantity": 900},
                     algo={"kind": "twap", "slices": 30, "interval_s": 0})  # fmt: skip
    result = run_event(burst, [part])
    denials = [o for o in result.orders if o.status is OrderStatus.DENIED]
    assert denials and {o.reason for o in denials} == {"rate_limit"}
    assert denials[0].client_order_id.endswith("-c20") and len(denials) == 11
    (ended,) = [o for o in result.orders if o.parent_order_id is None
                and o.status is OrderStatus.CANCELED]  # fmt: skip
    assert ended.reason == "child_denied"
    approved = {o.client_order_id for o in result.orders if o.status is OrderStatus.SUBMITTED
                and o.parent_order_id is not None}  # fmt: skip
    canceled = {o.client_order_id for o in result.orders if o.status is OrderStatus.CANCELED
                and o.parent_order_id is not None}  # fmt: skip
    assert len(approved) == 19 and canceled == approved  # no child left working
    assert result.fills == []  # the denial came before the next print

"""The simulated venue's slippage: bps of the taker price against the order's side, never past a
limit, none on a maker fill; fees on the slipped price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engines.strategy.venue import FillOn, VenueConfig
from protocol.records import Fill, Liquidity, OrderSide, OrderType
from tests.engines.strategy.test_core_venue import (
    T0,
    fills,
    quote,
    submitted,
    trade,
    venue,
)

D = Decimal


def test_a_market_order_pays_the_slippage_against_its_side() -> None:
    v = venue(slippage_bps=D("2"), taker_fee_bps=D("1"))
    v.submit(submitted("b", quantity=100))
    v.submit(submitted("s", side=OrderSide.SELL, quantity=100))
    events = v.on_trade(trade(100.00, 500))
    # 100 × 2 bp = 0.02: the buy pays 100.02, the sell gets 99.98
    assert fills(events) == [
        ("b-f1", D(100), D("100.02"), Liquidity.TAKER),
        ("s-f1", D(100), D("99.98"), Liquidity.TAKER),
    ]
    fees = [e.fee for e in events if isinstance(e, Fill)]
    assert fees == [D("1.00"), D("1.00")]  # 1 bp of 10 002 and of 9 998, rounded to cents


def test_l1_slippage_moves_the_touch_each_side_takes() -> None:
    v = venue(FillOn.QUOTES, slippage_bps=D("10"))
    v.submit(submitted("b", quantity=100))
    v.submit(submitted("s", side=OrderSide.SELL, quantity=100))
    events = v.on_quote(quote(50.00, 500, 50.02, 500))
    assert [(coid, price) for coid, _, price, _ in fills(events)] == [
        ("b-f1", D("50.07002")),  # the ask 50.02 + 0.1 %
        ("s-f1", D("49.95")),  # the bid 50.00 − 0.1 %
    ]


def test_a_marketable_limit_slips_no_further_than_its_limit() -> None:
    v = venue(slippage_bps=D("10"))
    v.submit(submitted("near", type=OrderType.LIMIT, price="100.05", quantity=100))
    v.submit(submitted("far", type=OrderType.LIMIT, price="101.00", quantity=100))
    events = v.on_trade(trade(100.00, 500))
    assert fills(events) == [
        ("near-f1", D(100), D("100.05"), Liquidity.TAKER),  # 100.10 capped at its limit
        ("far-f1", D(100), D("100.1"), Liquidity.TAKER),
    ]


def test_a_resting_limit_fills_at_its_price_as_maker_without_slippage() -> None:
    v = venue(slippage_bps=D("10"))
    v.submit(submitted(type=OrderType.LIMIT, price="100.00", quantity=100))
    assert v.on_trade(trade(100.05, 500)) == []  # not marketable: rests
    events = v.on_trade(trade(99.90, 500, T0 + 2))
    assert fills(events) == [("o-f1", D(100), D("100.00"), Liquidity.MAKER)]


def test_a_stop_slips_like_the_market_order_it_becomes() -> None:
    v = venue(slippage_bps=D("5"))
    v.submit(submitted(side=OrderSide.SELL, type=OrderType.STOP, stop="99.00", quantity=100))
    assert v.on_trade(trade(99.50, 500)) == []
    events = v.on_trade(trade(98.00, 500, T0 + 2))
    assert fills(events) == [("o-f1", D(100), D("97.951"), Liquidity.TAKER)]  # 98 − 0.05 %


@pytest.mark.parametrize("bps", ["-1", "10000"])
def test_slippage_outside_0_to_10000_bps_is_refused(bps: str) -> None:
    with pytest.raises(ValueError, match="slippage"):
        VenueConfig(slippage_bps=D(bps))

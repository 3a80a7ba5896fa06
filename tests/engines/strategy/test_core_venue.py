"""The simulated venue by hand cases (limit through a trade, L1 partial, FOK, IOC, stops,
latency, DAY expiry, refusals, fees) and TWAP / POV slicing through ``Execution``."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engines.shell.instruments import load_instruments
from engines.strategy.algos import Execution, Pov, Twap
from engines.strategy.core import AlgoSpec
from engines.strategy.venue import DAY_NS, FillOn, SimulatedVenue, VenueConfig, VenueEvent
from protocol.records import (
    Fill,
    Liquidity,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Quote,
    TimeInForce,
    Trade,
)

D = Decimal
S = OrderStatus
INSTRUMENTS = load_instruments()
T0 = 1_381_152_660_000_000_000


def submitted(coid: str = "o", side: OrderSide = OrderSide.BUY, quantity: int = 100,
              type: OrderType = OrderType.MARKET, price: str | None = None,
              stop: str | None = None, tif: TimeInForce = TimeInForce.GTC,
              t: int = T0) -> Order:  # fmt: skip
    return Order(
        client_order_id=coid, account="paper", strategy="s", symbol="SPY", side=side, type=type,
        quantity=D(quantity), status=S.SUBMITTED, event_ns=t,
        price=None if price is None else D(price), stop_price=None if stop is None else D(stop),
        time_in_force=tif, intent_id=f"intent-{coid}",
    )  # fmt: skip


def trade(price: float, size: float, t: int = T0 + 1) -> Trade:
    return Trade(symbol="SPY", event_ns=t, receive_ns=t, price=price, size=size)


def quote(bid: float, bid_size: float, ask: float, ask_size: float, t: int = T0 + 1) -> Quote:
    return Quote(symbol="SPY", event_ns=t, receive_ns=t, bid=bid, bid_size=bid_size, ask=ask,
                 ask_size=ask_size)  # fmt: skip


def venue(fill_on: FillOn = FillOn.TRADES, **fees: object) -> SimulatedVenue:
    return SimulatedVenue(VenueConfig(fill_on=fill_on, **fees), INSTRUMENTS)  # type: ignore[arg-type]


def fills(events: list[VenueEvent]) -> list[tuple[str, Decimal, Decimal, Liquidity]]:
    return [(e.fill_id, e.quantity, e.price, e.liquidity) for e in events if isinstance(e, Fill)]


def statuses(events: list[VenueEvent]) -> list[tuple[S, str]]:
    return [(e.status, e.reason) for e in events if isinstance(e, Order)]


def test_a_resting_limit_fills_only_on_prints_through_it_bounded_by_their_size() -> None:
    v = venue(maker_fee_bps=D("1"), fee_per_share=D("0.005"))
    assert statuses(v.submit(submitted(type=OrderType.LIMIT, price="100.00", quantity=300))) == [
        (S.ACCEPTED, "")
    ]
    assert v.on_trade(trade(100.05, 500)) == []  # first chance, not marketable: rests
    assert v.on_trade(trade(100.00, 500, T0 + 2)) == []  # at the limit: queue unknown, no fill
    first = v.on_trade(trade(99.99, 200, T0 + 3))
    assert fills(first) == [("o-f1", D(200), D("100.00"), Liquidity.MAKER)]
    fee = next(e for e in first if isinstance(e, Fill)).fee
    assert fee == D("3.00")  # 200 × 100 × 1 bp = 2.00, + 200 × 0.005 = 1.00
    second = v.on_trade(trade(99.98, 1000, T0 + 4))
    assert fills(second) == [("o-f2", D(100), D("100.00"), Liquidity.MAKER)]
    assert statuses(second) == [(S.FILLED, "")]
    assert v.working == {}


def test_a_marketable_limit_takes_the_print_at_its_first_chance() -> None:
    v = venue(taker_fee_bps=D("2"))
    v.submit(submitted(type=OrderType.LIMIT, price="100.05", quantity=50))
    events = v.on_trade(trade(100.00, 80))
    assert fills(events) == [("o-f1", D(50), D("100.0000"), Liquidity.TAKER)]
    assert next(e for e in events if isinstance(e, Fill)).fee == D("1.00")  # 5000 × 2 bp


def test_l1_fills_at_the_touch_limited_by_displayed_size_shared_fifo() -> None:
    v = venue(FillOn.QUOTES)
    v.submit(submitted("a", quantity=500))
    v.submit(submitted("b", quantity=100))
    v.submit(submitted("c", side=OrderSide.SELL, quantity=100))
    events = v.on_quote(quote(100.00, 50, 100.01, 200))
    assert fills(events) == [
        ("a-f1", D(200), D("100.0100"), Liquidity.TAKER),  # a takes the whole ask size first
        ("c-f1", D(50), D("100.0000"), Liquidity.TAKER),  # b finds nothing left; c hits the bid
    ]
    assert trade_is_ignored_in_l1(v)
    later = v.on_quote(quote(100.00, 500, 100.02, 1000, T0 + 2))
    assert fills(later) == [
        ("a-f2", D(300), D("100.0200"), Liquidity.TAKER),
        ("b-f1", D(100), D("100.0200"), Liquidity.TAKER),
        ("c-f2", D(50), D("100.0000"), Liquidity.TAKER),
    ]
    a = [e for e in later if isinstance(e, Order) and e.client_order_id == "a"][-1]
    assert a.status is S.FILLED and a.average_price == D("100.016")


def trade_is_ignored_in_l1(v: SimulatedVenue) -> bool:
    return v.on_trade(trade(50.0, 10_000)) == []


def test_fok_fills_all_or_nothing() -> None:
    v = venue(FillOn.QUOTES)
    v.submit(submitted("big", quantity=500, tif=TimeInForce.FOK))
    v.submit(submitted("small", quantity=200, tif=TimeInForce.FOK))
    events = v.on_quote(quote(99.0, 10, 100.01, 200))
    assert statuses(events) == [(S.CANCELED, "fok_unfilled"), (S.FILLED, "")]
    assert fills(events) == [("small-f1", D(200), D("100.0100"), Liquidity.TAKER)]


def test_ioc_cancels_the_remainder_of_its_first_chance() -> None:
    v = venue()
    v.submit(submitted(quantity=500, tif=TimeInForce.IOC))
    events = v.on_trade(trade(100.0, 200))
    assert statuses(events) == [(S.PARTIALLY_FILLED, ""), (S.CANCELED, "ioc_remainder")]
    assert fills(events) == [("o-f1", D(200), D("100.0000"), Liquidity.TAKER)]
    assert v.on_trade(trade(100.0, 1000, T0 + 2)) == []


def test_stops_trigger_at_their_price_then_act_as_market_or_limit() -> None:
    v = venue()
    v.submit(submitted("stop", side=OrderSide.SELL, type=OrderType.STOP, stop="99.50"))
    v.submit(submitted("sl", type=OrderType.STOP_LIMIT, stop="101.00", price="101.05"))
    assert v.on_trade(trade(99.60, 1000)) == []
    events = v.on_trade(trade(99.50, 1000, T0 + 2))
    assert fills(events) == [("stop-f1", D(100), D("99.5000"), Liquidity.TAKER)]
    assert v.on_trade(trade(101.10, 1000, T0 + 3)) == []  # triggered; 101.10 above the limit
    events = v.on_trade(trade(101.04, 1000, T0 + 4))
    assert fills(events) == [("sl-f1", D(100), D("101.05"), Liquidity.MAKER)]


def test_latency_delays_the_first_fill_in_event_time() -> None:
    v = SimulatedVenue(VenueConfig(latency_ns=500), INSTRUMENTS)
    accepted = v.submit(submitted(t=1_000))
    assert statuses(accepted) == [(S.ACCEPTED, "")] and accepted[0].event_ns == 1_500
    assert v.on_trade(trade(100.0, 1000, t=1_499)) == []
    assert fills(v.on_trade(trade(100.0, 1000, t=1_500)))[0][1] == 100


def test_day_orders_expire_at_the_first_event_of_the_next_day() -> None:
    v = venue()
    v.submit(submitted(type=OrderType.LIMIT, price="90.00", tif=TimeInForce.DAY))
    assert v.on_trade(trade(100.0, 10, T0 + 1)) == []
    next_day = (T0 // DAY_NS + 1) * DAY_NS
    assert statuses(v.on_trade(trade(100.0, 10, next_day))) == [(S.EXPIRED, "day_end")]


def test_the_venue_refuses_off_grid_and_unknown_orders() -> None:
    v = venue()
    cases = {
        "off_tick": submitted(type=OrderType.LIMIT, price="100.005"),
        "off_lot": submitted(quantity=0),
        "missing_price": submitted(type=OrderType.LIMIT),
    }
    for reason, o in cases.items():
        assert statuses(v.submit(o)) == [(S.REJECTED, reason)]
    unknown = Order(
        **{**{f: getattr(submitted(), f) for f in Order.__struct_fields__}, "symbol": "ZZZ"}
    )
    assert statuses(v.submit(unknown)) == [(S.REJECTED, "unknown_instrument")]
    v.submit(submitted("live"))
    assert statuses(v.cancel("live", T0 + 5)) == [(S.CANCELED, "")]
    assert v.cancel("live", T0 + 6) == []


# ── algorithms ───────────────────────────────────────────────────────────────────────────────


def test_twap_slices_sum_to_the_parent_on_the_lot_grid() -> None:
    twap = Twap(D(1000), D(1), slices=3, interval_ns=60, start_ns=0)
    assert twap.due(0) == [D(333)]
    assert twap.due(59) == []
    assert twap.due(200) == [D(333), D(334)]
    assert twap.done and twap.due(10_000) == []
    tiny = Twap(D(2), D(1), slices=5, interval_ns=1, start_ns=0)
    assert tiny.due(10) == [D(1), D(1)]  # empty slices are skipped, the sum still exact


def test_pov_releases_its_rate_of_traded_volume_in_whole_lots() -> None:
    pov = Pov(D(100), D(1), D("0.1"), start_ns=10)
    assert pov.on_volume(D(500), 9) == 0  # before the parent
    assert [pov.on_volume(D(q), 10 + i) for i, q in enumerate((15, 15, 300, 2000))] == [
        D(1),
        D(2),
        D(30),
        D(67),
    ]  # 1.5 → 1 (0.5 kept), 2.0 → 2, 30, then capped at the remainder
    assert pov.done


def intents_of(events: list[VenueEvent]) -> list[Order]:
    """The children an execution released (``initialized``: intents for pre-trade risk)."""
    return [e for e in events if isinstance(e, Order) and e.status is S.INITIALIZED]


def approve(ex: Execution, events: list[VenueEvent]) -> list[VenueEvent]:
    """Risk's approval of every child intent in ``events``, handed back to the execution."""
    out: list[VenueEvent] = []
    for child in intents_of(events):
        out += ex.submit(msgspec.structs.replace(child, status=S.SUBMITTED))
    return out


def test_twap_through_the_execution_chains_children_to_the_parent() -> None:
    ex = Execution(SimulatedVenue(VenueConfig(), INSTRUMENTS), INSTRUMENTS)
    minute = 60_000_000_000
    parent = submitted("p", quantity=1000)
    events = ex.submit(parent, AlgoSpec("twap", slices=3, interval_s=60))
    # the parent is accepted; its first slice is an intent for Risk, not yet at the venue
    assert [(e.client_order_id, e.status) for e in events if isinstance(e, Order)] == [
        ("p", S.ACCEPTED), ("p-c1", S.INITIALIZED),
    ]  # fmt: skip
    assert ex.venue.working == {}  # type: ignore[attr-defined]
    assert statuses(approve(ex, events)) == [(S.ACCEPTED, "")]
    events = ex.on_trade(trade(100.0, 5000, T0 + 1))
    assert fills(events) == [("p-c1-f1", D(333), D("100.0000"), Liquidity.TAKER)]
    assert [(e.client_order_id, e.status, e.filled_quantity) for e in events if isinstance(e, Order)] == [
        ("p-c1", S.FILLED, D(333)), ("p", S.PARTIALLY_FILLED, D(333)),
    ]  # fmt: skip
    assert fills(ex.on_trade(trade(100.5, 5000, T0 + minute - 1))) == []
    events = ex.on_trade(trade(101.0, 100, T0 + minute))  # releases slice 2: no fill on it
    assert fills(events) == [] and [c.client_order_id for c in intents_of(events)] == ["p-c2"]
    approve(ex, events)
    events = ex.on_trade(trade(101.0, 100, T0 + minute + 1))
    assert fills(events) == [("p-c2-f1", D(100), D("101.0000"), Liquidity.TAKER)]
    events = ex.on_trade(trade(101.0, 5000, T0 + 3 * minute))
    assert fills(events) == [("p-c2-f2", D(233), D("101.0000"), Liquidity.TAKER)]
    approve(ex, events)
    events = ex.on_trade(trade(101.0, 5000, T0 + 3 * minute + 1))
    assert fills(events) == [("p-c3-f1", D(334), D("101.0000"), Liquidity.TAKER)]
    done = [e for e in events if isinstance(e, Order) and e.client_order_id == "p"][-1]
    assert done.status is S.FILLED and done.filled_quantity == 1000
    assert done.average_price == (333 * D(100) + 667 * D(101)) / 1000
    child = next(e for e in events if isinstance(e, Order) and e.client_order_id == "p-c3")
    assert (child.parent_order_id, child.intent_id) == ("p", "intent-p")
    assert ex.parents == {} and ex.parent_of == {}


def test_a_denied_child_cancels_the_parents_remainder_and_late_approvals_never_trade() -> None:
    ex = Execution(SimulatedVenue(VenueConfig(), INSTRUMENTS), INSTRUMENTS)
    events = ex.submit(submitted("p", quantity=900), AlgoSpec("twap", slices=3, interval_s=0))
    first, second, third = intents_of(events)  # interval 0: every slice due at once
    assert [c.quantity for c in (first, second, third)] == [D(300)] * 3
    ex.submit(msgspec.structs.replace(first, status=S.SUBMITTED))  # working at the venue
    events = ex.on_trade(trade(100.0, 100, T0 + 1))  # a partial fill of the first child
    assert fills(events) == [("p-c1-f1", D(100), D("100.0000"), Liquidity.TAKER)]
    denied = msgspec.structs.replace(second, status=S.DENIED, reason="rate_limit",
                                     event_ns=T0 + 2)  # fmt: skip
    events = ex.deny(denied)
    # the working child is canceled at the venue, then the parent, with the reason
    assert [(e.client_order_id, e.status, e.reason) for e in events if isinstance(e, Order)] == [
        ("p-c1", S.CANCELED, ""), ("p", S.CANCELED, "child_denied"),
    ]  # fmt: skip
    parent = events[-1]
    assert isinstance(parent, Order) and parent.filled_quantity == 100
    # the third child's approval comes after: canceled, never sent to the venue
    events = ex.submit(msgspec.structs.replace(third, status=S.SUBMITTED))
    assert statuses(events) == [(S.CANCELED, "parent_closed")]
    assert ex.venue.working == {} and ex.parents == {}  # type: ignore[attr-defined]
    assert fills(ex.on_trade(trade(100.0, 5000, T0 + 3))) == []
    assert ex.deny(third) == []  # a denial of a child whose parent ended changes nothing

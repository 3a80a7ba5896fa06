"""The portfolio engine on a MemoryBus with real PostgreSQL: fills and marks in, the book and the
money out after each fill (hand-worked numbers), marks throttled by event time, duplicates and bad
fills counted and harmless, and a crash-only restart that rebuilds the same state."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal as D
from typing import Any

import pytest

from engines.portfolio.core import mark_price
from engines.portfolio.service import PortfolioConfig, PortfolioEngine
from protocol.records import (
    AccountState,
    Bar,
    Fill,
    Liquidity,
    OrderSide,
    Quote,
    Trade,
    decode,
    encode,
)
from realtime.bus import Envelope, MemoryBus, Subscription
from realtime.clock import ManualClock
from tests.support import TEST_DSN, migrated_schema, until

T0 = 1_381_152_600_000_000_000  # 2013-10-07 13:30 UTC
MS = 1_000_000


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema per test: a portfolio rebuilds from whatever fills its schema holds."""
    with migrated_schema("nautilus_portfolio") as name:
        yield name


schema_b = schema


def make_engine(schema: str, **settings: Any) -> PortfolioEngine:
    clock = ManualClock(T0)
    config = PortfolioConfig(db_dsn=TEST_DSN, db_schema=schema, **settings)
    return PortfolioEngine(config, bus=MemoryBus(clock=clock), clock=clock)


@pytest.fixture
async def engine(schema: str) -> AsyncIterator[PortfolioEngine]:
    engine = make_engine(schema, accounts=("paper:1000000:USD", "desk:50000:USD"))
    await engine.start()
    yield engine
    await engine.stop()


def fill(
    n: int, side: str, quantity: int | str, price: str, fee: str = "0", **over: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "fill_id": f"F{n}",
        "client_order_id": f"O{n}",
        "account": "paper",
        "strategy": "s1",
        "symbol": "SPY",
        "side": OrderSide(side),
        "quantity": D(quantity),
        "price": D(price),
        "fee": D(fee),
        "fee_currency": "USD",
        "liquidity": Liquidity.TAKER,
        "event_ns": T0 + n * MS,
    }
    return encode(Fill(**{**fields, **over}))


def quote(t_ns: int, bid: float, ask: float, symbol: str = "SPY") -> dict[str, Any]:
    return encode(Quote(symbol, t_ns, t_ns, bid, 100.0, ask, 100.0))


async def publish(engine: PortfolioEngine, channel: str, payload: dict[str, Any]) -> None:
    await engine.bus.publish(channel, payload, event_ns=T0)


async def received(sub: Subscription, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        got += [e.payload for e in await sub.next_batch(100)]
    return got


def bad_input(engine: PortfolioEngine) -> dict[str, int]:
    return dict(engine.health()["bad_input"].get("fills.*", {}))  # type: ignore[attr-defined]


async def test_each_fill_publishes_and_stores_the_book_and_the_money(
    engine: PortfolioEngine,
) -> None:
    positions, pnl = engine.bus.subscribe("positions.paper"), engine.bus.subscribe("pnl.paper")
    await publish(engine, "quotes.SPY", quote(T0, 107.99, 108.01))
    await until(lambda: engine.marks.price("SPY", 1) is not None)  # quotes: another consumer
    await publish(engine, "fills.paper", fill(1, "buy", 10, "100.00"))
    states = await received(pnl, 1)
    # after the buy: long 10 marked at the bid 107.99 → unrealized 79.90, cash 999 000.00
    assert (states[0]["cash"], states[0]["unrealized_pnl"]) == ("999000.00", "79.90")
    assert states[0]["leverage"] == "0.001080"  # gross 1 079.90 / equity 1 000 079.90
    assert states[0]["strategies"]["s1"]["unrealized_pnl"] == "79.90"
    await publish(engine, "fills.paper", fill(2, "sell", 15, "110.00", "1.50"))
    states += await received(pnl, 1)
    # after the flip (test_core works it by hand): short 5 at 110, marked at the ask 108.01
    final = decode(AccountState, states[1])
    assert (final.realized_pnl, final.unrealized_pnl) == (D("100.00"), D("9.95"))
    assert (final.equity, final.fees, final.account) == (D("1000108.45"), D("1.50"), "paper")
    book = (await received(positions, 2))[1]
    assert [(p["quantity"], p["average_price"]) for p in book["positions"]] == [("-5", "110")]

    # a redelivered fill changes nothing and publishes nothing
    await publish(engine, "fills.paper", fill(2, "sell", 15, "110.00", "1.50"))
    # bad fills: counted by reason, never applied
    await publish(engine, "fills.paper", {"fill_id": "x"})
    await publish(engine, "fills.paper", fill(3, "buy", 1, "1", account="nobody"))
    await publish(engine, "fills.paper", fill(4, "buy", 1, "1", symbol="NOPE"))
    await publish(engine, "fills.paper", fill(5, "buy", "0.5", "100"))
    await until(lambda: sum(bad_input(engine).values()) == 4)
    assert bad_input(engine) == {
        "missing_field": 1,
        "unknown_account": 1,
        "unknown_instrument": 1,
        "off_lot": 1,
    }
    registry = engine.metrics.registry
    assert registry.get_sample_value("nautilus_portfolio_duplicate_fills_total") == 1
    assert registry.get_sample_value("nautilus_portfolio_fills_total") == 2
    assert engine.ledgers["paper"].fills == 2 and engine.ledgers["desk"].fills == 0
    assert not pnl.pending

    # a burst the consumer takes in one batch publishes the book and the money once, as of
    # the burst's last fill (both streams are latest-value)
    desk = engine.bus.subscribe("pnl.desk")
    for n in (6, 7, 8):
        await publish(engine, "fills.paper", fill(n, "buy", 1, "100.00", account="desk"))
    (burst,) = await received(desk, 1)
    await until(lambda: engine.backlog() == 0)
    assert not desk.pending and engine.ledgers["desk"].fills == 3
    assert (burst["cash"], burst["event_ns"]) == ("49700.00", T0 + 8 * MS)

    # fills, books and states are stored (what the restart and REST read)
    await until(lambda: engine.storage.store.stats().rows_queued == 0)
    stored = await engine.fills.query("paper", 0, 2**62, 100)
    assert [f.fill_id for f in stored.items] == ["F1", "F2"]
    latest = await engine.pnl_snapshots.latest("paper")
    assert latest is not None and latest.equity == D("1000108.45")


async def test_marks_republish_at_most_once_per_throttle_window_of_event_time(
    schema: str,
) -> None:
    engine = make_engine(schema, mark_throttle_ms=1_000)
    await engine.start()
    try:
        pnl = engine.bus.subscribe("pnl.paper")
        await publish(engine, "trades.AIG", encode(Trade("AIG", T0, T0, 30.0, 1.0)))  # not held
        await publish(engine, "fills.paper", fill(0, "buy", 100, "100.00", symbol="SPY"))
        assert len(await received(pnl, 1)) == 1  # the fill at T0: always published
        for offset_ms, bid in ((100, 100.5), (500, 101.0), (1_200, 101.5), (1_300, 102.0)):
            t = T0 + offset_ms * MS
            await publish(engine, "quotes.SPY", quote(t, bid, bid + 0.02))
            await until(lambda: engine.backlog() == 0)  # one quote per batch
        await publish(engine, "bars.1m.SPY", encode(Bar("SPY", "1m", T0, T0 + 60_000 * MS,
                      100.0, 103.0, 99.0, 102.5, 1.0, 1.0, 1)))  # fmt: skip
        states = await received(pnl, 2)
        # 100 ms and 500 ms are inside the window; 1.2 s publishes (with the 1.2 s bid);
        # 1.3 s is inside the new window; the bar at T0+60 s publishes again, still marked by
        # the quote (bid first, bar close last)
        assert [s["unrealized_pnl"] for s in states] == ["150.00", "200.00"]
        assert [s["event_ns"] for s in states] == [T0 + 1_200 * MS, T0 + 60_000 * MS]
        await until(lambda: engine.backlog() == 0)
        assert not pnl.pending
    finally:
        await engine.stop()


def scenario(seed: int = 11) -> list[tuple[str, dict[str, Any]]]:
    """A deterministic replay: fills on three symbols by two strategies (opens, adds, reduces,
    flips, closes) between quotes, ending with a quote on every symbol."""
    rng = random.Random(seed)
    mids = {"SPY": 170.0, "AIG": 48.0, "BAC": 14.0}
    out: list[tuple[str, dict[str, Any]]] = []
    for n in range(80):
        symbol = rng.choice(tuple(mids))
        mids[symbol] = round(mids[symbol] * (1 + rng.gauss(0, 0.002)), 2)
        t = T0 + n * 10 * MS
        out.append((f"quotes.{symbol}", quote(t, mids[symbol] - 0.01, mids[symbol] + 0.01, symbol)))
        if rng.random() < 0.7:
            price = f"{mids[symbol] + rng.choice((-0.01, 0.01)):.2f}"
            out.append(("fills.paper", fill(n, rng.choice(("buy", "sell")), rng.randint(1, 300),
                        price, f"{rng.randint(0, 300) / 100:.2f}", symbol=symbol,
                        strategy=rng.choice(("trend", "vpin")), event_ns=t + 1)))  # fmt: skip
    for k, (symbol, mid) in enumerate(sorted(mids.items())):
        t = T0 + (900 + k) * MS
        out.append((f"quotes.{symbol}", quote(t, mid - 0.02, mid + 0.02, symbol)))
    return out


async def feed(engine: PortfolioEngine, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Publish ``events`` and wait until the engine has handled them all."""
    fills = {p["fill_id"] for c, p in events if c.startswith("fills.")}
    ids = engine.ledgers["paper"].fill_ids
    last_quote = {
        p["s"]: (mark_price(p["b"], 4), mark_price(p["k"], 4))
        for c, p in events
        if c.startswith("quotes.")
    }
    for name, payload in events:
        await engine.bus.publish(name, payload, event_ns=T0)

    def handled() -> bool:
        marks = engine.marks
        return fills <= ids and all(
            (marks.price(s, 1), marks.price(s, -1)) == bidask for s, bidask in last_quote.items()
        )

    await until(handled)
    await until(lambda: engine.backlog() == 0)


def view(engine: PortfolioEngine) -> tuple[Any, ...]:
    positions, state, _ = engine.snapshot("paper")
    book = encode(positions)
    book["positions"] = [{**p, "event_ns": 0} for p in book["positions"]]
    return ({**book, "event_ns": 0}, {**encode(state), "event_ns": 0})


async def test_a_restart_rebuilds_from_stored_fills_and_ends_where_one_run_ends(
    schema: str, schema_b: str
) -> None:
    events = scenario()
    cut = len(events) // 2
    # one uninterrupted run
    whole = make_engine(schema_b, accounts=("paper:1000000:USD",), mark_throttle_ms=0)
    await whole.start()
    await feed(whole, events)
    expected = whole.snapshot("paper")
    await whole.stop()

    # the same input, stopped mid-stream and restarted on the same schema
    first = make_engine(schema, accounts=("paper:1000000:USD",), mark_throttle_ms=0)
    first_half = events[:cut]
    await first.start()
    await feed(first, first_half)
    before_stop = view(first)
    applied = first.ledgers["paper"].fills
    await first.stop()

    second = make_engine(schema, accounts=("paper:1000000:USD",), mark_throttle_ms=0)
    await second.start()
    try:
        assert second.ledgers["paper"].fills == applied
        assert view(second) == before_stop  # rebuilt book and money, marks restored
        # at-least-once delivery: the last fills before the cut arrive again after the restart
        redelivered = [(c, p) for c, p in first_half if c.startswith("fills.")][-3:]
        await feed(second, redelivered + events[cut:])
        assert second.ledgers["paper"].fills == whole.ledgers["paper"].fills
        got = second.snapshot("paper")
        assert got[0] == expected[0] and got[1] == expected[1]
        assert got[2] == expected[2]  # per currency and per strategy, too
        assert expected[1].realized_pnl != 0 and expected[0].positions  # the replay did trade
    finally:
        await second.stop()


def test_config_validates_accounts() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        PortfolioConfig(accounts=("a:1:USD", "a:2:USD"))
    with pytest.raises(ValueError):
        PortfolioConfig(accounts=("a b:1:USD",))
    with pytest.raises(ValueError):
        PortfolioConfig(accounts=())
    assert PortfolioConfig().account_specs()[0].starting_cash == D(1_000_000)


async def test_a_recurring_price_marks_as_when_first_seen_and_the_memory_stays_bounded(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marks of trades are remembered per price (prices recur); whichever prices came between,
    and past the bound (forgotten, then made again), each mark is the price on the grid."""
    monkeypatch.setattr("engines.portfolio.service.MARKS_REMEMBERED", 2)
    engine = make_engine(schema)
    prices = [101.25, 101.5, 101.25, 101.75, 101.000049, 101.25, -1.0, 101.5]
    expected = [D("101.25"), D("101.5"), D("101.25"), D("101.75"), D("101"), D("101.25"),
                D("101.25"), D("101.5")]  # fmt: skip
    for n, (price, mark) in enumerate(zip(prices, expected, strict=True)):
        t = T0 + n * MS
        trade = Trade("SPY", t, t, price, 1.0)
        await engine.on_trade(trade, Envelope("trades.SPY", n, "e", t, t, trade))
        assert engine.marks.price("SPY", 0) == mark, price
        assert len(engine._mark_of["SPY"]) <= 2

"""MarketData REST through the shell's app (no port): pages, validation, the book, quotes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import jsonschema
import numpy as np
import pytest
from falcon import testing

from engines.marketdata import feeds
from engines.marketdata.core import SaleConditionFilter, time_bars
from engines.marketdata.normalize import trade_payloads
from engines.marketdata.records import Bar, BookDelta, Quote, Trade, TradeColumns
from engines.marketdata.service import FeedSource, MarketDataConfig, MarketDataEngine
from engines.shell import create_app
from protocol.records import decode
from protocol.schemas import payload_schema
from realtime.bus import MemoryBus
from realtime.clock import SystemClock

DAY = date(2013, 10, 7)
START_NS = 1381152600_000_000_000  # 2013-10-07 09:30 New York (EDT, UTC-4)
END_NS = START_NS + 10 * 60 * 1_000_000_000  # 09:40


def conforms(items: list[Any], kind: str) -> None:
    """Every item is valid against the ``kind`` stream's documented payload schema."""
    validator = jsonschema.Draft202012Validator(payload_schema(kind))
    for item in items:
        validator.validate(item)


async def replayed(**config: Any) -> MarketDataEngine:
    clock = SystemClock()
    settings = {"speed": 0.0, "loop": False, **config}
    engine = MarketDataEngine(MarketDataConfig(**settings), bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not engine.progress.done:
        assert loop.time() < deadline and engine.failure is None
        await asyncio.sleep(0.01)
    return engine


@pytest.fixture(scope="module")
def window_ticks() -> TradeColumns:
    ticks = feeds.read_lean_trade_ticks(feeds.lean_tick_path(DAY))
    return ticks.select((ticks.event_ns >= START_NS) & (ticks.event_ns < END_NS))


@pytest.fixture
async def spy() -> AsyncIterator[testing.ASGIConductor]:
    engine = await replayed(days=("2013-10-07",), start="09:30", end="09:40", bar_specs=("1m",))
    async with testing.ASGIConductor(create_app(engine, version="t")) as conductor:
        yield conductor
    await engine.stop()


@pytest.fixture
async def idle() -> AsyncIterator[testing.ASGIConductor]:
    """No feed: REST over an empty memory store."""
    engine = await replayed(feed=FeedSource.NONE)
    async with testing.ASGIConductor(create_app(engine, version="t")) as conductor:
        yield conductor
    await engine.stop()


@pytest.fixture
async def binance() -> AsyncIterator[tuple[MarketDataEngine, testing.ASGIConductor]]:
    engine = await replayed(feed=FeedSource.BINANCE, bar_specs=())
    async with testing.ASGIConductor(create_app(engine, version="t")) as conductor:
        yield engine, conductor
    await engine.stop()


async def all_pages(client: testing.ASGIConductor, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        result = await client.simulate_get(path, params=query)
        assert result.status_code == 200, result.json
        items += result.json["items"]
        cursor = result.json["next_cursor"]
        if cursor is None:
            return items


async def test_trades_page_through_the_window(
    spy: testing.ASGIConductor, window_ticks: TradeColumns
) -> None:
    items = await all_pages(spy, "/trades", symbol="SPY", limit=997)
    assert len(items) == len(window_ticks)
    assert [r["p"] for r in items] == window_ticks.price.tolist()
    assert [r["q"] for r in items] == window_ticks.size.tolist()
    assert [r["t"] for r in items] == window_ticks.event_ns.tolist()
    assert [r["i"] for r in items] == window_ticks.sequence.tolist()
    assert [r["x"] for r in items] == [x.decode() for x in window_ticks.exchange.tolist()]
    assert [r["c"] for r in items] == window_ticks.condition.tolist()
    assert {r["a"] for r in items} == {None}
    # One wire form: a /trades item is exactly the trades.SYM payload of that trade, decodes
    # into that Trade, and is valid against the trades stream's documented schema.
    assert items == trade_payloads(window_ticks)
    assert [decode(Trade, r) for r in items] == window_ticks.trades()
    conforms(items[:300], "trades")


async def test_time_range_in_ns_and_iso_with_offset(
    spy: testing.ASGIConductor, window_ticks: TradeColumns
) -> None:
    lo, hi = START_NS + 60_000_000_000, START_NS + 120_000_000_000  # 09:31 .. 09:32
    expected = int(np.count_nonzero((window_ticks.event_ns >= lo) & (window_ticks.event_ns < hi)))
    by_ns = await all_pages(spy, "/trades", symbol="SPY", **{"from": lo, "to": hi})
    by_iso = await all_pages(
        spy,
        "/trades",
        symbol="SPY",
        **{"from": "2013-10-07T09:31:00-04:00", "to": "2013-10-07T13:32:00Z"},
    )
    assert len(by_ns) == expected > 0
    assert by_iso == by_ns


async def test_bars_are_the_minute_bars_of_the_window(
    spy: testing.ASGIConductor, window_ticks: TradeColumns
) -> None:
    items = await all_pages(spy, "/bars", symbol="SPY", spec="1m", limit=3)
    reference = time_bars(window_ticks, "1m", SaleConditionFilter.lean_default())
    assert [(r["t"], r["o"], r["c"], r["v"]) for r in items] == [
        (b.start_ns, b.open, b.close, b.volume) for b in reference
    ]
    assert items == [bar.to_payload() for bar in reference]  # the bars.1m.SPY payloads
    assert [decode(Bar, r) for r in items] == reference
    conforms(items, "bars")
    assert len(items) == 10


async def test_unknown_symbol_is_an_empty_page(spy: testing.ASGIConductor) -> None:
    for path, extra in (("/trades", {}), ("/quotes", {}), ("/bars", {"spec": "1m"})):
        result = await spy.simulate_get(path, params={"symbol": "QQQ", **extra})
        assert result.status_code == 200
        assert (result.json["items"], result.json["next_cursor"]) == ([], None)
    assert (await spy.simulate_get("/book/QQQ")).status_code == 404
    result = await spy.simulate_get("/quotes/latest", params={"symbol": "SPY"})
    assert (result.status_code, result.json["error"]["parameter"]) == (404, "symbol")


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/trades", {}, "symbol"),
        ("/trades", {"symbol": "SP Y"}, "symbol"),
        ("/trades", {"symbol": "$PY"}, "symbol"),
        ("/trades", {"symbol": "SPY", "limit": "0"}, "limit"),
        ("/trades", {"symbol": "SPY", "limit": "10001"}, "limit"),
        ("/trades", {"symbol": "SPY", "limit": "ten"}, "limit"),
        ("/trades", {"symbol": "SPY", "from": "yesterday"}, "from"),
        ("/trades", {"symbol": "SPY", "from": "2013-10-07T09:30:00"}, "from"),  # no offset
        ("/trades", {"symbol": "SPY", "from": "20", "to": "10"}, "from"),
        ("/trades", {"symbol": "SPY", "to": "soon"}, "to"),
        ("/trades", {"symbol": "SPY", "cursor": "not-a-cursor"}, "cursor"),
        ("/quotes", {"symbol": "SPY", "cursor": "AAAA"}, "cursor"),
        ("/bars", {"symbol": "SPY"}, "spec"),
        ("/bars", {"symbol": "SPY", "spec": "2x"}, "spec"),
        ("/bars", {"symbol": "SPY", "spec": "1m", "limit": "-1"}, "limit"),
        ("/quotes/latest", {}, "symbol"),
        ("/book/SPY", {"depth": "0"}, "depth"),
        ("/book/SP%20Y", {}, "symbol"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    idle: testing.ASGIConductor, path: str, params: dict[str, str], parameter: str
) -> None:
    result = await idle.simulate_get(path, params=params)
    assert result.status_code == 400, result.json
    assert result.json["error"]["parameter"] == parameter
    assert result.json["error"]["code"] in ("invalid_parameter", "missing_parameter")


async def test_instruments(spy: testing.ASGIConductor) -> None:
    result = await spy.simulate_get("/instruments")
    assert result.json["items"] == [
        {
            "symbol": "SPY",
            "venue": "US",
            "asset_class": "equity",
            "price_precision": 4,
            "size_precision": 0,
            "currency": "USD",
        }
    ]


async def test_book_after_a_binance_replay(
    binance: tuple[MarketDataEngine, testing.ASGIConductor],
    binance_events: list[feeds.BinanceEvent],
) -> None:
    _, client = binance
    result = await client.simulate_get("/book/BTCUSDT", params={"depth": 5})
    assert result.status_code == 200
    body = result.json
    bids, asks = [p for p, _ in body["bids"]], [p for p, _ in body["asks"]]
    assert len(bids) == len(asks) == 5
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0] and body["crossed"] is False
    assert body["state"] == "live"
    last_delta = [e for e in binance_events if isinstance(e, BookDelta)][-1]
    assert body["u"] == last_delta.last_update_id and body["s"] == "BTCUSDT"
    conforms([body], "book")
    # The book's top changes after the last bookTicker only through later diffs: it can only be
    # compared to a ticker at the same update id, so check the prices lie on the 0.01 grid.
    assert all(round(p * 100) == p * 100 for p in bids + asks)


async def test_latest_quote_is_the_last_book_ticker(
    binance: tuple[MarketDataEngine, testing.ASGIConductor],
    binance_events: list[feeds.BinanceEvent],
) -> None:
    _, client = binance
    last = [e for e in binance_events if isinstance(e, Quote)][-1]
    result = await client.simulate_get("/quotes/latest", params={"symbol": "BTCUSDT"})
    assert result.status_code == 200
    assert result.json == {
        "s": "BTCUSDT",
        "t": last.event_ns,
        "r": last.receive_ns,
        "b": last.bid,
        "bq": last.bid_size,
        "k": last.ask,
        "kq": last.ask_size,
        "i": last.sequence,
    }
    quotes = await all_pages(client, "/quotes", symbol="BTCUSDT", limit=10_000)
    assert [decode(Quote, q) for q in quotes] == [e for e in binance_events if isinstance(e, Quote)]
    assert quotes[-1] == result.json
    conforms(quotes[-300:], "quotes")

"""The MarketData engine on a real in-process bus: feeds replayed, published, stored, reported.

References are the bundled files read by ``feeds`` and the whole-day bars of ``core`` (tested
against Lean's own minute bars), never figures computed by the service under test.
"""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import date, time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.marketdata import feeds, service
from engines.marketdata.core import SaleConditionFilter, threshold_bars, time_bars
from engines.marketdata.records import BookDelta, Quote, Trade, TradeColumns
from engines.marketdata.service import (
    FeedSource,
    MarketDataConfig,
    MarketDataEngine,
    lap_shift_ns,
)
from engines.shell import ConfigError, EngineState, load_config
from engines.shell.registry import ENGINES
from realtime.bus import Envelope, MemoryBus
from realtime.bus.memory import MemorySubscription
from realtime.clock import SystemClock
from realtime.storage import Storage, StorageConfig
from tests.support import until

DAY = date(2013, 10, 7)
MINUTE = 60_000_000_000


def new_york_ns(moment: str, day: date = DAY) -> int:
    ms = (time.fromisoformat(moment).hour * 3600 + time.fromisoformat(moment).minute * 60) * 1000
    return int(feeds.local_ms_to_utc_ns(day, np.array([ms], dtype=np.int64))[0])


def window(ticks: TradeColumns, start: str, end: str) -> TradeColumns:
    mask = (ticks.event_ns >= new_york_ns(start)) & (ticks.event_ns < new_york_ns(end))
    return ticks.select(mask)


@pytest.fixture(scope="module")
def day_ticks() -> TradeColumns:
    return feeds.read_lean_trade_ticks(feeds.lean_tick_path(DAY))


EngineFactory = Callable[..., MarketDataEngine]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    made: list[MarketDataEngine] = []

    def make(
        bus: MemoryBus | None = None, storage: Storage | None = None, **config: Any
    ) -> MarketDataEngine:
        clock = SystemClock()
        settings = {"days": ("2013-10-07",), "speed": 0.0, "loop": False, **config}
        engine = MarketDataEngine(
            MarketDataConfig(**settings),
            bus=bus or MemoryBus(clock=clock),
            clock=clock,
            storage=storage,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.stop(drain_timeout_s=1.0)


async def replayed(engine: MarketDataEngine, timeout_s: float = 30.0) -> None:
    await engine.start()
    await until(lambda: engine.progress.done or engine.failure is not None, timeout_s)
    assert engine.failure is None


async def taken(sub: MemorySubscription) -> list[Envelope]:
    out: list[Envelope] = []
    while sub.pending:
        out += await sub.next_batch(100_000)
    return out


async def test_spy_window_publishes_every_trade_in_order_and_its_bars(
    make_engine: EngineFactory, day_ticks: TradeColumns
) -> None:
    bus = MemoryBus()
    trade_sub = bus.subscribe("trades.SPY")
    minute_sub = bus.subscribe("bars.1m.SPY")
    volume_sub = bus.subscribe("bars.volume50000.SPY")
    engine = make_engine(bus, start="09:30", end="10:00", bar_specs=("1m", "volume50000"))
    await replayed(engine)
    expected = window(day_ticks, "09:30", "10:00")

    published = await taken(trade_sub)
    assert [e.seq for e in published] == list(range(1, len(expected) + 1))
    assert [e.payload["p"] for e in published] == expected.price.tolist()
    assert [e.payload["q"] for e in published] == expected.size.tolist()
    assert [e.payload["t"] for e in published] == expected.event_ns.tolist()
    assert [e.payload["i"] for e in published] == expected.sequence.tolist()  # file line
    assert {e.payload["a"] for e in published} == {None}  # the Lean tape has no aggressor

    lean = SaleConditionFilter.lean_default()
    minute_bars = [e.payload for e in await taken(minute_sub)]
    assert minute_bars == [b.to_payload() for b in time_bars(expected, "1m", lean)]
    assert len(minute_bars) == 30
    counted = expected.select(lean.counts_volume(expected.condition))
    volume_bars = [e.payload for e in await taken(volume_sub)]
    assert volume_bars == [b.to_payload() for b in threshold_bars(counted, "volume50000")]

    health = engine.health()
    assert health["status"] == "ok"
    assert health["published"] == {
        "trades": len(expected),
        "quotes": 0,
        "book": 0,
        "bars": len(minute_bars) + len(volume_bars),
    }
    feed = health["feed"]
    assert isinstance(feed, dict)
    assert (feed["source"], feed["done"], feed["laps"], feed["malformed_lines"]) == (
        "spy",
        True,
        1,
        0,
    )
    assert feed["position_ns"] == int(expected.event_ns[-1])
    assert feed["position"] == "2013-10-07T13:59:59.052+00:00"  # 09:59:59.052 New York
    store = health["storage"]
    assert isinstance(store, dict)
    assert (store["kind"], store["rows_written"]) == (
        "memory",
        len(expected) + len(minute_bars) + len(volume_bars),
    )


async def test_time_window_edges_are_new_york_time(
    make_engine: EngineFactory, day_ticks: TradeColumns
) -> None:
    engine = make_engine(start="15:59", end="", bar_specs=())
    await replayed(engine)
    assert engine.progress.published["trades"] == len(window(day_ticks, "15:59", "23:59"))
    assert engine.progress.position_ns == int(day_ticks.event_ns[-1])


async def test_looping_republishes_but_stores_the_first_lap_only(
    make_engine: EngineFactory, day_ticks: TradeColumns
) -> None:
    engine = make_engine(start="12:00", end="12:01", bar_specs=(), loop=True)
    sub = engine.bus.subscribe("trades.SPY")
    await engine.start()
    n = len(window(day_ticks, "12:00", "12:01"))
    await until(lambda: engine.progress.laps >= 3, 30.0)
    assert engine.progress.published["trades"] >= 3 * n
    assert engine.store.stats().rows_written == n
    # lap k is the recording k weeks later: time only moves forward, weekday and clock kept
    times = [e.payload["t"] for e in await sub.next_batch(3 * n)]
    week = 7 * 86_400 * 10**9
    assert times[n : 2 * n] == [t + week for t in times[:n]]
    assert times[2 * n : 3 * n] == [t + 2 * week for t in times[:n]]
    assert times == sorted(times)


def test_a_lap_is_the_whole_weeks_its_days_cover() -> None:
    week = 7 * 86_400 * 10**9
    assert lap_shift_ns([date(2013, 10, 7), date(2013, 10, 11)]) == week
    assert lap_shift_ns([date(2013, 10, 7)]) == week
    assert lap_shift_ns([date(2013, 10, 7), date(2013, 10, 14)]) == 2 * week


async def test_binance_replay_rebuilds_the_book_and_publishes_quotes(
    make_engine: EngineFactory, binance_events: list[feeds.BinanceEvent]
) -> None:
    bus = MemoryBus()
    book_sub = bus.subscribe("book.BTCUSDT")
    quote_sub = bus.subscribe("quotes.BTCUSDT")
    trade_sub = bus.subscribe("trades.BTCUSDT")
    engine = make_engine(bus, feed=FeedSource.BINANCE, bar_specs=("1m",), book_depth=5)
    await replayed(engine, timeout_s=60)

    feed_trades = [e for e in binance_events if isinstance(e, Trade)]
    feed_quotes = [e for e in binance_events if isinstance(e, Quote)]
    published_trades = await taken(trade_sub)
    assert [e.payload["i"] for e in published_trades] == [t.sequence for t in feed_trades]
    assert [e.payload["a"] for e in published_trades] == [
        t.aggressor.value if t.aggressor else None for t in feed_trades
    ]
    published_quotes = await taken(quote_sub)
    assert [e.payload for e in published_quotes] == [q.to_payload() for q in feed_quotes]
    last = feed_quotes[-1]
    latest = engine.latest_quotes["BTCUSDT"]
    assert (latest.bid, latest.ask, latest.event_ns) == (last.bid, last.ask, last.event_ns)

    order_book = engine.books["BTCUSDT"]
    deltas = [e for e in binance_events if isinstance(e, BookDelta)]
    assert order_book.last_update_id == deltas[-1].last_update_id
    books = [e.payload for e in await taken(book_sub)]
    assert books and books[-1]["u"] == deltas[-1].last_update_id
    for payload in books:
        bids = [price for price, _ in payload["bids"]]
        asks = [price for price, _ in payload["asks"]]
        assert len(bids) == len(asks) == 5
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < asks[0]
    health = engine.health()
    books_health = health["books"]
    assert isinstance(books_health, dict)
    assert books_health["BTCUSDT"]["state"] == "synced"
    assert (books_health["BTCUSDT"]["gaps"], books_health["BTCUSDT"]["crossed"]) == (0, 0)
    assert health["status"] == "ok"


async def test_postgres_outage_queues_to_the_bound_and_stays_up(
    make_engine: EngineFactory, day_ticks: TradeColumns
) -> None:
    storage = Storage(  # the platform's storage, as the shell would open it
        StorageConfig(dsn="postgresql://postgres@127.0.0.1:1/test", queue_rows=1_000)
    )  # nothing listens on port 1
    await storage.open()
    engine = make_engine(storage=storage, start="09:30", end="09:35", bar_specs=("1m",))
    await replayed(engine)
    n = len(window(day_ticks, "09:30", "09:35"))
    assert engine.state is EngineState.RUNNING
    assert engine.progress.published["trades"] == n  # the replay did not wait for storage
    stats = engine.store.stats()
    assert (stats.kind, stats.rows_queued) == ("postgres", 1_000)
    assert stats.rows_dropped_overflow == n + engine.progress.published["bars"] - 1_000
    health = engine.health()
    assert health["status"] == "degraded"
    issues = health["issues"]
    assert isinstance(issues, list)
    assert any("migrations pending" in issue for issue in issues)
    assert any("rows dropped: write queue full" in issue for issue in issues)
    await engine.stop(drain_timeout_s=0.5)
    await storage.close(0.5)


def lean_zip(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "tick_spy_20131007_trade.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rows.csv", "\n".join(rows) + "\n")
    return path


async def test_malformed_feed_lines_are_counted_and_the_replay_goes_on(
    make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lean_zip(
        tmp_path,
        [
            "34200000,1674100,100,P,1,0",
            "34200001,1674100,1400,P,1",  # 5 fields
            "34200002,abc,100,P,1,0",  # non-integer price
            "34260000,1674400,300,Z,1,0",
        ],
    )
    monkeypatch.setattr(service, "lean_tick_path", lambda day: path)
    engine = make_engine(start="", bar_specs=("1m",))
    await replayed(engine)
    assert engine.progress.published == {"trades": 2, "quotes": 0, "book": 0, "bars": 2}
    feed = engine.health()["feed"]
    assert isinstance(feed, dict)
    assert feed["malformed_lines"] == 2
    assert feed["malformed_examples"][0].startswith("tick_spy_20131007_trade.zip:2: ")
    assert engine.health()["status"] == "ok"


async def test_simulated_feed_publishes_many_symbols(make_engine: EngineFactory) -> None:
    bus = MemoryBus()
    trade_sub = bus.subscribe("trades.*")
    quote_sub = bus.subscribe("quotes.*")
    engine = make_engine(
        bus, feed=FeedSource.SIM, speed=1.0, sim_symbols=5, sim_rate=20_000.0, bar_specs=("1s",)
    )
    await engine.start()
    await until(lambda: engine.progress.published["bars"] >= 5, timeout_s=10)
    await engine.stop()
    assert engine.state is EngineState.STOPPED
    trades_seen = await taken(trade_sub)
    quotes_seen = await taken(quote_sub)
    assert {e.channel for e in trades_seen} == {f"trades.SIM{i}" for i in range(5)}
    assert {e.channel for e in quotes_seen} == {f"quotes.SIM{i}" for i in range(5)}
    for channel in {e.channel for e in trades_seen}:
        seqs = [e.seq for e in trades_seen if e.channel == channel]
        assert seqs == list(range(1, len(seqs) + 1))
    quotes_ok = all(e.payload["b"] < e.payload["k"] for e in quotes_seen)
    assert quotes_ok
    assert all(e.payload["a"] in ("buy", "sell") for e in trades_seen)
    assert engine.latest_quotes.keys() == {f"SIM{i}" for i in range(5)}


def test_config_from_the_environment() -> None:
    spec = ENGINES["marketdata"]
    config = load_config(
        MarketDataConfig,
        {
            "NAUTILUS_MARKETDATA_FEED": "binance",
            "NAUTILUS_MARKETDATA_BAR_SPECS": "1m,tick100",
            "NAUTILUS_MARKETDATA_SPEED": "0",
        },
        defaults=spec.config_defaults(),
    )
    assert (config.name, config.port, config.feed, config.bar_specs, config.speed) == (
        "marketdata",
        8800,
        FeedSource.BINANCE,
        ("1m", "tick100"),
        0.0,
    )
    assert spec.load() is MarketDataEngine
    with pytest.raises(ConfigError, match="bar spec"):
        load_config(MarketDataConfig, {"NAUTILUS_MARKETDATA_BAR_SPECS": "1x"})
    with pytest.raises(ConfigError, match="FEED"):
        load_config(MarketDataConfig, {"NAUTILUS_MARKETDATA_FEED": "nasdaq"})
    with pytest.raises(ConfigError):
        load_config(MarketDataConfig, {"NAUTILUS_MARKETDATA_START": "9h30"})


def test_streams_and_declared_channels() -> None:
    bus = MemoryBus()
    engine = MarketDataEngine(
        MarketDataConfig(feed=FeedSource.BINANCE, bar_specs=("1m", "volume10")),
        bus=bus,
        clock=SystemClock(),
    )
    streams = {s.channel: s.delivery.value for s in engine.streams()}
    assert streams == {
        "trades.*": "ordered-lossless",
        "quotes.*": "latest-value",
        "book.*": "latest-value",
        "bars.1m.*": "ordered-lossless",
        "bars.volume10.*": "ordered-lossless",
    }
    assert engine.declared_channels() == (
        "trades.BTCUSDT",
        "quotes.BTCUSDT",
        "book.BTCUSDT",
        "bars.1m.BTCUSDT",
        "bars.volume10.BTCUSDT",
    )

"""Daily history served as ``1d`` bars: ``GET /bars?spec=1d&adjustment=`` on a real PostgreSQL.

The engine runs on the platform's PostgreSQL storage (``migrated_schema``); daily bars come from
its daily history, minute bars from PostgreSQL, through the one ``/bars`` endpoint.

Outside references: ``daily.read_daily_bars`` (checked in ``test_daily.py`` against Lean's factor
rows and Apple's published splits and dividends), Apple's split ratios (7:1 effective
2014-06-09, 4:1 effective 2020-08-31) and its published closes either side of them (645.57 and
93.70; 499.23 and 129.04) and the bundled factor file's rows read here with the ``csv`` module.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import numpy as np
import pytest
from falcon import testing

from engines.marketdata import daily
from engines.marketdata.service import FeedSource, MarketDataConfig, MarketDataEngine
from engines.shell import ConfigError, create_app, load_config
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.storage.migrations import quote_identifier
from tests.support import TEST_DSN, migrated_schema, until

DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    """One migrated schema for the module (each engine migrates it again: a no-op)."""
    with migrated_schema("nautilus_daily") as name:
        yield name


async def started(schema: str, **config: Any) -> MarketDataEngine:
    clock = SystemClock()
    settings = {
        "feed": FeedSource.NONE,
        "speed": 0.0,
        "loop": False,
        "db_dsn": TEST_DSN,
        "db_schema": schema,
        **config,
    }
    engine = MarketDataEngine(MarketDataConfig(**settings), bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    await until(lambda: engine.daily_progress.state != "loading" or engine.failure, 60)
    assert engine.failure is None
    return engine


@pytest.fixture
async def aapl(schema: str) -> AsyncIterator[tuple[MarketDataEngine, testing.ASGIConductor]]:
    engine = await started(schema, daily_symbols=("AAPL",))
    async with testing.ASGIConductor(create_app(engine, version="t")) as conductor:
        yield engine, conductor
    await engine.stop()


async def all_pages(client: testing.ASGIConductor, **params: Any) -> tuple[list[Any], int]:
    items: list[Any] = []
    cursor, pages = None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        result = await client.simulate_get("/bars", params=query)
        assert result.status_code == 200, result.json
        items += result.json["items"]
        pages += 1
        cursor = result.json["next_cursor"]
        if cursor is None:
            return items, pages


def session_dates(items: list[dict[str, Any]]) -> np.ndarray:
    return np.array([item["t"] for item in items], dtype="datetime64[ns]").astype("datetime64[D]")


def close_on(items: list[dict[str, Any]], when: str) -> float:
    (hits,) = np.nonzero(session_dates(items) == np.datetime64(when, "D"))
    assert len(hits) == 1, when
    return float(items[int(hits[0])]["c"])


# --------------------------------------------------------------------------- REST = reader


@pytest.mark.parametrize("adjustment", ["raw", "split", "total"])
async def test_whole_aapl_history_equals_the_reader(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor], adjustment: str
) -> None:
    _, client = aapl
    items, pages = await all_pages(
        client, symbol="AAPL", spec="1d", adjustment=adjustment, limit=1_000
    )
    expected = daily.read_daily_bars("AAPL", adjustment)
    assert len(items) == len(expected) == 5_849 and pages == 6
    assert (session_dates(items) == expected.date).all()
    wire = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
    for column, key in wire.items():  # bit for bit, through JSON
        served = np.array([item[key] for item in items])
        assert np.array_equal(served, getattr(expected, column)), column
    assert {item["spec"] for item in items} == {"1d"}
    assert all(item["te"] - item["t"] == DAY_NS for item in items)
    # The Lean daily files carry no trade count or dollar volume: 0 and null, not invented.
    assert {(item["n"], item["dv"]) for item in items} == {(0, None)}


@pytest.mark.parametrize(
    ("before", "ex_date", "ratio", "raw_closes"),
    [
        ("2014-06-06", "2014-06-09", 7, (645.57, 93.70)),
        ("2020-08-28", "2020-08-31", 4, (499.23, 129.04)),
    ],
)
async def test_aapl_splits_are_in_raw_and_gone_from_split_adjusted_closes(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor],
    before: str,
    ex_date: str,
    ratio: int,
    raw_closes: tuple[float, float],
) -> None:
    _, client = aapl
    window = {"symbol": "AAPL", "spec": "1d", "from": f"{before}T00:00:00Z"}
    window["to"] = f"{ex_date}T23:59:59Z"
    raw, _ = await all_pages(client, **window, adjustment="raw")
    split, _ = await all_pages(client, **window)  # default: raw
    assert split == raw
    split, _ = await all_pages(client, **window, adjustment="split")
    assert len(raw) == len(split) == 2  # the ex-date is the next session
    assert (close_on(raw, before), close_on(raw, ex_date)) == raw_closes
    raw_ratio = close_on(raw, before) / close_on(raw, ex_date)
    split_ratio = close_on(split, before) / close_on(split, ex_date)
    assert raw_ratio == pytest.approx(ratio, rel=0.05)  # the day's move is a few per cent
    assert split_ratio == pytest.approx(raw_ratio / ratio, rel=1e-6)
    # On and after the ex-date only later splits scale the price: 4:1 after 2014, none after 2020.
    later = 4 if ex_date < "2020" else 1
    assert close_on(split, ex_date) == pytest.approx(close_on(raw, ex_date) / later, rel=1e-12)


async def test_total_adjustment_is_split_times_the_factor_rows_price_factor(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor],
) -> None:
    _, client = aapl
    window = {"symbol": "AAPL", "spec": "1d", "from": "2014-06-06T00:00:00Z"}
    window["to"] = "2014-06-07T00:00:00Z"
    (raw,), (total,) = [
        (await all_pages(client, **window, adjustment=mode))[0] for mode in ("raw", "total")
    ]
    row = factor_row("aapl", "20140606")  # "20140606,0.9011818,0.03571430,645.57"
    assert float(row[3]) == raw["c"]  # the reference price is that day's raw close
    assert total["c"] == pytest.approx(raw["c"] * float(row[1]) * float(row[2]), 1e-12)
    assert total["v"] == round(raw["v"] / float(row[2]))


# --------------------------------------------------------------------------- paging, ranges


async def test_small_pages_return_every_row_once(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor],
) -> None:
    _, client = aapl
    items, pages = await all_pages(client, symbol="AAPL", spec="1d", limit=97)
    starts = [item["t"] for item in items]
    assert len(starts) == len(set(starts)) == 5_849 and pages == -(-5_849 // 97)
    assert starts == sorted(starts)
    whole, _ = await all_pages(client, symbol="AAPL", spec="1d", limit=10_000)
    assert whole == items


async def test_a_date_range_is_half_open_on_start_times(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor],
) -> None:
    _, client = aapl
    june, _ = await all_pages(
        client,
        symbol="AAPL",
        spec="1d",
        **{"from": "2014-06-01T00:00:00Z", "to": "2014-07-01T00:00:00Z"},
    )
    reader = daily.read_daily_bars("AAPL", "raw").date
    sessions = reader[
        (reader >= np.datetime64("2014-06-01")) & (reader < np.datetime64("2014-07-01"))
    ]
    assert (session_dates(june) == sessions).all() and len(june) == 21  # NYSE, June 2014
    first_ns = june[0]["t"]
    exact, _ = await all_pages(
        client, symbol="AAPL", spec="1d", **{"from": first_ns, "to": first_ns}
    )
    assert exact == []
    one, _ = await all_pages(
        client, symbol="AAPL", spec="1d", **{"from": first_ns, "to": first_ns + 1}
    )
    assert one == june[:1]


async def test_unknown_symbols_answer_an_empty_page_as_minute_bars_do(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor],
) -> None:
    _, client = aapl
    for symbol, spec in (("ZZZZ", "1d"), ("ZZZZ", "1m"), ("SPY", "1d"), ("aapl", "1d")):
        for adjustment in ("raw", "total"):
            result = await client.simulate_get(
                "/bars", params={"symbol": symbol, "spec": spec, "adjustment": adjustment}
            )
            assert result.status_code == 200
            assert result.json == {
                "symbol": symbol,
                "spec": spec,
                "adjustment": adjustment,
                "items": [],
                "next_cursor": None,
            }


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"adjustment": "dividend"}, "adjustment"),
        ({"adjustment": "RAW"}, "adjustment"),
        ({"spec": "1x"}, "spec"),
        ({"spec": ""}, "spec"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"from": "2014-06-01"}, "from"),
        ({"from": "2015-01-01T00:00:00Z", "to": "2014-01-01T00:00:00Z"}, "from"),
        ({"symbol": "AA PL"}, "symbol"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor], params: dict[str, str], parameter: str
) -> None:
    _, client = aapl
    query = {"symbol": "AAPL", "spec": "1d", **params}
    result = await client.simulate_get("/bars", params=query)
    assert result.status_code == 400, result.json
    assert result.json["error"]["parameter"] == parameter


# --------------------------------------------------------------------------- storage, loading


async def test_reloading_replaces_rows_and_postgresql_holds_no_daily_rows(
    aapl: tuple[MarketDataEngine, testing.ASGIConductor], schema: str
) -> None:
    engine, client = aapl
    before, _ = await all_pages(client, symbol="AAPL", spec="1d", limit=10_000)
    await engine._load_daily()  # a second load, as a restart would do: keyed, so no duplicates
    after, _ = await all_pages(client, symbol="AAPL", spec="1d", limit=10_000)
    assert after == before and len(after) == 5_849
    health = (await client.simulate_get("/health")).json
    assert health["status"] == "ok"
    loaded = health["daily"]
    assert (loaded["state"], loaded["symbols"], loaded["bars"]) == ("loaded", 1, 5_849)
    assert loaded["load_s"] >= 0
    # The platform's bars table (one partition per UTC day) received none of the 23 years.
    connection = await asyncpg.connect(TEST_DSN)
    try:
        count = await connection.fetchval(
            f"SELECT count(*) FROM {quote_identifier(schema)}.bars WHERE spec = '1d'"
        )
    finally:
        await connection.close()
    assert count == 0


async def test_the_configured_universe_and_date_range_are_what_is_loaded(schema: str) -> None:
    engine = await started(
        schema, daily_symbols=("spy", "AAPL", "SPY"), daily_from="2020-08-01", daily_to="2020-08-31"
    )
    try:
        assert engine.daily_symbols == {"SPY", "AAPL"}
        assert (engine.daily_progress.symbols, engine.daily_progress.bars) == (2, 2 * 21)
        page = await engine.bars_page("SPY", "1d", daily.Adjustment.RAW, 0, 2**63 - 1, 100)
        reader = daily.read_daily_bars("SPY", "raw")
        august = (reader.date >= np.datetime64("2020-08-01")) & (
            reader.date <= np.datetime64("2020-08-31")
        )
        assert [row.close for row in page.items] == reader.close[august].tolist()
    finally:
        await engine.stop()


async def test_daily_off_loads_nothing_and_1d_reads_the_platform_store(schema: str) -> None:
    engine = await started(schema, daily=False)
    try:
        assert engine.daily_progress.state == "off"
        page = await engine.bars_page("AAPL", "1d", daily.Adjustment.TOTAL, 0, 2**63 - 1, 10)
        assert page.items == [] and page.next_cursor is None
    finally:
        await engine.stop()


def test_daily_settings_from_the_environment() -> None:
    config = load_config(
        MarketDataConfig,
        {
            "NAUTILUS_MARKETDATA_DAILY_SYMBOLS": "aapl,SPY",
            "NAUTILUS_MARKETDATA_DAILY_FROM": "2010-01-04",
            "NAUTILUS_MARKETDATA_DAILY_TO": "2012-12-31",
        },
    )
    assert config.daily and config.daily_universe() == ("AAPL", "SPY")
    assert MarketDataConfig().daily_universe() == tuple(daily.daily_tickers())
    assert len(MarketDataConfig().daily_universe()) == 13
    assert not load_config(MarketDataConfig, {"NAUTILUS_MARKETDATA_DAILY": "false"}).daily
    with pytest.raises(ConfigError, match="MSFT"):
        load_config(MarketDataConfig, {"NAUTILUS_MARKETDATA_DAILY_SYMBOLS": "AAPL,MSFT"})
    with pytest.raises(ConfigError, match="daily_to must be a date"):
        load_config(MarketDataConfig, {"NAUTILUS_MARKETDATA_DAILY_TO": "2011"})
    with pytest.raises(ConfigError, match="daily_from 2013-01-02 is after daily_to"):
        load_config(
            MarketDataConfig,
            {
                "NAUTILUS_MARKETDATA_DAILY_FROM": "2013-01-02",
                "NAUTILUS_MARKETDATA_DAILY_TO": "2012-12-31",
            },
        )


# --------------------------------------------------------------------------- minute bars


def factor_row(ticker: str, on_or_after: str) -> list[str]:
    """The factor file's first row dated on or after ``on_or_after`` (yyyymmdd), read as CSV."""
    path = daily.DAILY_DIR / "factor_files" / f"{ticker}.csv"
    with path.open(newline="") as handle:
        rows = sorted(row for row in csv.reader(handle) if row)
    return next(row for row in rows if row[0] >= on_or_after)


async def test_minute_bars_in_postgresql_take_the_factors_of_their_new_york_date(
    schema: str,
) -> None:
    engine = await started(
        schema,
        feed=FeedSource.SPY,
        days=("2013-10-07",),
        start="09:30",
        end="09:40",
        bar_specs=("1m",),
        daily_symbols=("SPY",),
    )
    try:
        await until(lambda: engine.progress.done, 60)
        bars = engine.progress.published["bars"]
        stored = engine.progress.published["trades"] + bars  # every trade and bar written
        await until(lambda: engine.store.stats().rows_written == stored, 30)
        async with testing.ASGIConductor(create_app(engine, version="t")) as client:
            pages = {
                mode: (await all_pages(client, symbol="SPY", spec="1m", adjustment=mode))[0]
                for mode in ("raw", "split", "total")
            }
    finally:
        await engine.stop()
    raw, split, total = pages["raw"], pages["split"], pages["total"]
    assert len(raw) == bars == 10
    assert split == raw  # SPY has never split: its split factors are all 1
    row = factor_row("spy", "20131007")
    assert float(row[2]) == 1.0
    price_factor = float(row[1])
    for r, t in zip(raw, total, strict=True):
        assert t["c"] == pytest.approx(r["c"] * price_factor, rel=1e-12)
        assert t["v"] == r["v"] and t["n"] == r["n"]
        assert t["dv"] == pytest.approx(r["dv"] * price_factor, rel=1e-12)

"""The Store contract, run against both the PostgreSQL store and the memory store.

Expected orders come from Python's stable ``sorted`` over what was written (rows of equal time
keep their write order), never from the store under test.
"""

from __future__ import annotations

import datetime as dt
import random

import msgspec
import pytest

from protocol.records import Bar, Quote, Side, Trade
from realtime.storage import InstrumentRow, InvalidQuery, Page, RecordStore, SignalRow, Store
from realtime.storage.records import WriteHold
from tests.realtime.storage.conftest import settled

NS = 1_000_000_000
# 09:30 America/New_York on 2013-10-07 (EDT, UTC-4) and 2024-08-08 (EDT), as UTC nanoseconds.
SPY_OPEN_2013 = int(dt.datetime(2013, 10, 7, 13, 30, tzinfo=dt.UTC).timestamp()) * NS
SPY_OPEN_2024 = int(dt.datetime(2024, 8, 8, 13, 30, tzinfo=dt.UTC).timestamp()) * NS
FAR_PAST, FAR_FUTURE = 0, 2**62


def make_trades(symbol: str, start_ns: int, count: int, seed: int) -> list[Trade]:
    """Trades in shuffled time order with many equal timestamps (ties), every optional field
    both set and unset (sequence 0 included, condition flags up to the uint32 maximum)."""
    rng = random.Random(seed)
    rows = [
        Trade(
            symbol=symbol,
            event_ns=start_ns + rng.randrange(0, 40) * 1_000_000,
            receive_ns=start_ns + 10**9 + i,
            price=round(168.0 + rng.random(), 2),
            size=float(rng.randrange(1, 500) * 100),
            aggressor=rng.choice([None, Side.BUY, Side.SELL]),
            sequence=i - 1 if i % 3 else None,
            exchange=rng.choice(["P", "Q", "N", ""]),
            condition=rng.choice([0, 0x40, 0x4046, 2**32 - 1]),
        )
        for i in range(count)
    ]
    return rows


def by_time(rows: list[Trade]) -> list[Trade]:
    return sorted(rows, key=lambda r: r.event_ns)


async def all_pages(store: Store, symbol: str, from_ns: int, to_ns: int, limit: int) -> list:
    rows: list[Trade] = []
    cursor = None
    pages = 0
    while True:
        page: Page[Trade] = await store.fetch_trades(symbol, from_ns, to_ns, limit, cursor)
        assert len(page.items) <= limit
        rows.extend(page.items)
        pages += 1
        if page.next_cursor is None:
            return rows
        assert len(page.items) == limit
        cursor = page.next_cursor


async def test_trades_round_trip_in_stable_order(store: Store) -> None:
    rows = make_trades("SPY", SPY_OPEN_2013, 230, seed=1) + make_trades(
        "SPY", SPY_OPEN_2024, 170, seed=2
    )
    other = make_trades("QQQ", SPY_OPEN_2013, 40, seed=3)
    assert store.write_trades(rows[:200]) == 200
    assert store.write_trades(other) == 40
    assert store.write_trades(rows[200:]) == 200
    await settled(store)

    page = await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 1000)
    assert page.items == by_time(rows)
    assert page.next_cursor is None
    assert (await store.fetch_trades("QQQ", FAR_PAST, FAR_FUTURE, 1000)).items == by_time(other)
    assert store.stats().rows_written == 440


@pytest.mark.parametrize("limit", [1, 7, 64, 400])
async def test_pages_cover_every_row_exactly_once(store: Store, limit: int) -> None:
    rows = make_trades("SPY", SPY_OPEN_2013, 150, seed=4) + make_trades(
        "SPY", SPY_OPEN_2024, 50, seed=5
    )
    store.write_trades(rows)
    await settled(store)
    assert await all_pages(store, "SPY", FAR_PAST, FAR_FUTURE, limit) == by_time(rows)


async def test_time_range_is_half_open(store: Store) -> None:
    rows = make_trades("SPY", SPY_OPEN_2013, 200, seed=6)
    store.write_trades(rows)
    await settled(store)
    from_ns, to_ns = SPY_OPEN_2013 + 10_000_000, SPY_OPEN_2013 + 30_000_000
    expected = [r for r in by_time(rows) if from_ns <= r.event_ns < to_ns]
    assert 0 < len(expected) < len(rows)
    assert await all_pages(store, "SPY", from_ns, to_ns, 9) == expected


async def test_cursor_stays_valid_while_rows_arrive(store: Store) -> None:
    first = make_trades("SPY", SPY_OPEN_2013, 100, seed=7)
    store.write_trades(first)
    await settled(store)
    page = await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 30)
    assert page.items == by_time(first)[:30]
    # Later rows, including rows at the very time of the last row served: they sort after it.
    tie = Trade("SPY", page.items[-1].event_ns, 1, 1.0, 1.0)
    later = make_trades("SPY", SPY_OPEN_2024, 60, seed=8)
    store.write_trades([tie, *later])
    await settled(store)

    seen = list(page.items)
    cursor = page.next_cursor
    while cursor is not None:
        page = await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 30, cursor)
        seen.extend(page.items)
        cursor = page.next_cursor
    assert seen == by_time([*first, tie, *later])
    assert seen.count(tie) == 1


async def test_quotes_and_latest_quote(store: Store) -> None:
    rng = random.Random(9)
    quotes = [
        Quote(
            "BTCUSDT",
            SPY_OPEN_2024 + i * 100_000_000,
            SPY_OPEN_2024 + i * 100_000_000 + 5,
            round(61000 + rng.random() * 10, 2),
            round(rng.random(), 5),
            round(61010 + rng.random() * 10, 2),
            round(rng.random(), 5),
        )
        for i in range(120)
    ]
    assert await store.fetch_latest_quote("BTCUSDT") is None
    store.write_quotes(quotes[::-1])  # newest first: order comes from event time
    await settled(store)
    collected: list[Quote] = []
    cursor = None
    while True:
        page = await store.fetch_quotes("BTCUSDT", FAR_PAST, FAR_FUTURE, 50, cursor)
        collected.extend(page.items)
        if (cursor := page.next_cursor) is None:
            break
    assert collected == quotes
    assert await store.fetch_latest_quote("BTCUSDT") == quotes[-1]


async def test_bars_page_by_start_and_a_rewritten_bar_replaces_the_old(store: Store) -> None:
    minute = 60 * NS
    bars = [
        Bar(
            "SPY",
            "1m",
            SPY_OPEN_2013 + i * minute,
            SPY_OPEN_2013 + (i + 1) * minute,
            168.0 + i,
            169.0 + i,
            167.5 + i,
            168.5 + i,
            1000.0 * (i + 1),
            168.2 * 1000.0 * (i + 1),
            10 + i,
        )
        for i in range(25)
    ]
    other_spec = [
        Bar("SPY", "5m", SPY_OPEN_2013, SPY_OPEN_2013 + 5 * minute, 1, 2, 0.5, 1.5, 10, 15, 3)
    ]
    store.write_bars(bars[10:] + other_spec + bars[:10])
    await settled(store)
    corrected = msgspec.structs.replace(bars[3], trades=99)
    store.write_bars([corrected])
    await settled(store)
    expected = [corrected if b is bars[3] else b for b in bars]

    collected: list[Bar] = []
    cursor = None
    while True:
        page = await store.fetch_bars("SPY", "1m", FAR_PAST, FAR_FUTURE, 4, cursor)
        collected.extend(page.items)
        if (cursor := page.next_cursor) is None:
            break
    assert collected == expected
    window = await store.fetch_bars("SPY", "1m", bars[5].start_ns, bars[8].start_ns, 100)
    assert window.items == expected[5:8]
    assert (await store.fetch_bars("SPY", "5m", FAR_PAST, FAR_FUTURE, 10)).items == other_spec


async def test_signals_round_trip_payloads(store: Store) -> None:
    signals = [
        SignalRow(
            "vpin",
            "vpin.SPY",
            "SPY",
            SPY_OPEN_2013 + i * NS,
            i + 1,
            {"vpin": i / 64, "bucket": i, "flags": ["toxic"] if i % 5 == 0 else []},
        )
        for i in range(70)
    ]
    store.write_signals(signals)
    store.write_signals([SignalRow("vpin", "vpin.QQQ", "QQQ", SPY_OPEN_2013, 1, {"vpin": 0.5})])
    await settled(store)
    first = await store.fetch_signals("vpin.SPY", FAR_PAST, FAR_FUTURE, 40)
    rest = await store.fetch_signals("vpin.SPY", FAR_PAST, FAR_FUTURE, 40, first.next_cursor)
    assert first.items + rest.items == signals
    assert rest.next_cursor is None


class Mark(msgspec.Struct, frozen=True):
    symbol: str
    event_ns: int
    price: float


async def test_a_record_scan_reads_every_page_of_its_key_in_time_order(store: Store) -> None:
    marks = RecordStore(
        store, "portfolio", "marks", Mark, key=lambda m: m.symbol, time=lambda m: m.event_ns
    )
    rng = random.Random(5)
    written = [
        Mark(rng.choice(["SPY", "QQQ"]), SPY_OPEN_2013 + rng.randrange(20) * NS, i)
        for i in range(60)
    ]
    marks.append(written)
    await settled(store)
    spy = sorted((m for m in written if m.symbol == "SPY"), key=lambda m: m.event_ns)
    assert [m async for m in marks.scan("SPY", page_rows=7)] == spy
    since = SPY_OPEN_2013 + 10 * NS
    assert [m async for m in marks.scan("SPY", since, page_rows=4)] == [
        m for m in spy if m.event_ns >= since
    ]
    assert [m async for m in marks.scan("IWM")] == []


async def test_held_appends_wait_for_the_release_and_reads_see_them(store: Store) -> None:
    hold = WriteHold()
    marks, quotes = (
        RecordStore(store, "portfolio", stream, Mark, key=lambda m: m.symbol,
                    time=lambda m: m.event_ns, hold=hold)
        for stream in ("marks", "quotes")
    )  # fmt: skip
    first = Mark("SPY", SPY_OPEN_2013, 1.0)
    hold.hold()
    hold.hold()  # nested: a second consumer's batch
    marks.append([first, Mark("QQQ", SPY_OPEN_2013, 2.0)])
    quotes.append([Mark("SPY", SPY_OPEN_2013 + NS, 3.0)])
    await settled(store)
    assert (await store.fetch_signals("marks.SPY", FAR_PAST, FAR_FUTURE, 10)).items == []
    hold.release()  # every release writes what waits, held or not
    await settled(store)
    assert [
        r.payload["price"]
        for r in (await store.fetch_signals("quotes.SPY", FAR_PAST, FAR_FUTURE, 10)).items
    ] == [3.0]
    marks.append([Mark("SPY", SPY_OPEN_2013 + NS, 4.0)])  # still held by the outer batch
    [m async for m in marks.scan("SPY")]  # a read writes what waits first (queued, for PostgreSQL)
    await settled(store)
    assert [m.price async for m in marks.scan("SPY")] == [1.0, 4.0]
    hold.release()
    marks.append([Mark("SPY", SPY_OPEN_2013 + 2 * NS, 5.0)])  # released: straight to the store
    await settled(store)
    rows = await store.fetch_signals("marks.SPY", FAR_PAST, FAR_FUTURE, 10)
    assert [r.payload["price"] for r in rows.items] == [1.0, 4.0, 5.0]


async def test_instruments_upsert_and_list(store: Store) -> None:
    spy = InstrumentRow("SPY", "ARCA", "equity", 4, 0, "USD")
    btc = InstrumentRow("BTCUSDT", "BINANCE", "crypto", 2, 5, "USDT")
    await store.upsert_instruments([spy, btc])
    await store.upsert_instruments([InstrumentRow("SPY", "ARCA", "etf", 2, 0, "USD")])
    assert await store.fetch_instruments() == [
        btc,
        InstrumentRow("SPY", "ARCA", "etf", 2, 0, "USD"),
    ]


@pytest.mark.parametrize(
    ("from_ns", "to_ns", "limit", "cursor", "parameter"),
    [
        (10, 5, 10, None, "from"),
        (0, 5, 0, None, "limit"),
        (0, 5, 10_001, None, "limit"),
        (0, 5, 10, "not a cursor!", "cursor"),
        (0, 5, 10, "AAAA", "cursor"),
    ],
)
async def test_bad_read_parameters_are_named(
    store: Store, from_ns: int, to_ns: int, limit: int, cursor: str | None, parameter: str
) -> None:
    with pytest.raises(InvalidQuery) as raised:
        await store.fetch_trades("SPY", from_ns, to_ns, limit, cursor)
    assert raised.value.parameter == parameter


async def test_stats_say_what_kind_of_store(store: Store) -> None:
    stats = store.stats()
    assert stats.kind == store.kind in {"memory", "postgres"}
    assert stats.bound > 0
    assert stats.rows_dropped_overflow == stats.rows_rejected == 0

"""Memory-store specifics: the bounds per key and in bytes, eviction counted, late rows sorted in
place, rows kept as columns and read back equal."""

from __future__ import annotations

import math
import random

from protocol.records import Bar, Quote, Side, Trade
from realtime.storage import MemoryStore
from realtime.storage.base import SignalRow
from realtime.storage.memory import ColumnRing, TradeLayout


def trade(event_ns: int, price: float = 1.0) -> Trade:
    return Trade("SPY", event_ns, event_ns, price, 1.0)


async def test_ring_keeps_the_newest_rows_and_counts_evictions() -> None:
    store = MemoryStore(max_rows_per_key=100)
    rows = [trade(t) for t in range(250)]
    assert store.write_trades(rows) == 250
    store.write_trades([Trade("QQQ", 5, 5, 1.0, 1.0)])  # another key has its own ring
    page = await store.fetch_trades("SPY", 0, 10**6, 1000)
    assert page.items == rows[150:]
    stats = store.stats()
    assert (stats.kind, stats.bound, stats.rows_written, stats.rows_evicted) == (
        "memory",
        100,
        251,
        150,
    )


async def test_late_rows_are_kept_in_time_order() -> None:
    store = MemoryStore(max_rows_per_key=50)
    times = list(range(0, 1000, 10))
    random.Random(3).shuffle(times)
    store.write_trades(trade(t) for t in times)
    kept = (await store.fetch_trades("SPY", 0, 10**6, 1000)).items
    # A late row older than everything in a full ring is the one evicted: the newest 50 remain.
    assert [r.event_ns for r in kept] == sorted(times)[-50:]
    assert store.stats().rows_evicted == 50


def test_ring_page_reports_more_only_when_rows_follow() -> None:
    ring: ColumnRing[Trade] = ColumnRing("SPY", TradeLayout(), 10)
    for value in range(5):
        ring.insert(value * 10, value, trade(value * 10))

    def times(page: tuple[list[Trade], tuple[int, int] | None]) -> tuple[list[int], object]:
        return [r.event_ns for r in page[0]], page[1]

    assert times(ring.page(0, 100, None, 5)) == ([0, 10, 20, 30, 40], None)
    assert times(ring.page(0, 100, None, 4)) == ([0, 10, 20, 30], (30, 3))
    assert times(ring.page(0, 100, (30, 3), 4)) == ([40], None)
    assert times(ring.page(0, 40, (10, 1), 2)) == ([20, 30], None)


async def test_rows_read_back_equal_to_what_was_written() -> None:
    store = MemoryStore()
    trades = [
        Trade("SPY", 1, 2, 168.25, 100.0, Side.BUY, 7, "P", 0x40),
        Trade("SPY", 3, 4, 168.26, 5.0, None, None, "", 0),
        Trade("SPY", 5, 6, math.inf, 1e-9, Side.SELL, 2**62, "Q", 2**40),
    ]
    quotes = [Quote("SPY", 1, 2, 168.2, 3.0, 168.3, 4.0, 11), Quote("SPY", 5, 6, 1, 2, 3, 4)]
    bars = [Bar("SPY", "1m", 60, 120, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 3)]
    payload = {"v": [1.5, math.nan, None], "s": "x", "n": {"deep": True}, "big": 2**63 - 1}
    signals = [SignalRow("vpin", "vpin.SPY", "SPY", 9, 4, payload)]
    store.write_trades(trades)
    store.write_quotes(quotes)
    store.write_bars(bars)
    store.write_signals(signals)
    assert (await store.fetch_trades("SPY", 0, 10, 10)).items == trades
    assert (await store.fetch_quotes("SPY", 0, 10, 10)).items == quotes
    assert (await store.fetch_bars("SPY", "1m", 0, 200, 10)).items == bars
    (signal,) = (await store.fetch_signals("vpin.SPY", 0, 10, 10)).items
    assert signal.payload["v"][1] != signal.payload["v"][1]  # NaN kept, not turned into null
    assert repr(signal) == repr(signals[0])
    assert await store.fetch_latest_quote("SPY") == quotes[-1]


async def test_a_trade_costs_bytes_not_objects() -> None:
    store = MemoryStore()
    store.write_trades(trade(t) for t in range(1000))
    assert store.nbytes == 1000 * TradeLayout().row_bytes
    assert TradeLayout().row_bytes <= 64


async def test_store_bounded_by_bytes_busy_keys_give_way_and_quiet_keys_keep_their_rows() -> None:
    row = TradeLayout().row_bytes
    store = MemoryStore(max_bytes=300 * row)
    store.write_trades(Trade("QUIET", t, t, 1.0, 1.0) for t in range(20))
    for t in range(1000):
        store.write_trades([Trade("A", t, t, 1.0, 1.0), Trade("B", t, t, 1.0, 1.0)])
    assert store.nbytes <= store.max_bytes
    quiet = (await store.fetch_trades("QUIET", 0, 10**6, 1000)).items
    a = (await store.fetch_trades("A", 0, 10**6, 1000)).items
    b = (await store.fetch_trades("B", 0, 10**6, 1000)).items
    assert len(quiet) == 20
    assert len(a) + len(b) == 280 and abs(len(a) - len(b)) <= 1
    assert [r.event_ns for r in a] == list(range(1000 - len(a), 1000))  # the newest, in order
    assert store.stats().rows_evicted == 2000 - 280
    # the quiet key grows: the largest ring gives way, the quiet key keeps every row
    store.write_trades(Trade("QUIET", t, t, 1.0, 1.0) for t in range(20, 40))
    assert store.nbytes <= store.max_bytes
    assert len((await store.fetch_trades("QUIET", 0, 10**6, 1000)).items) == 40


async def test_eviction_and_compaction_keep_paging_exact() -> None:
    store = MemoryStore(max_rows_per_key=3000)
    store.write_trades(trade(t) for t in range(10_000))  # compacts several times
    seen, cursor = [], None
    while True:
        page = await store.fetch_trades("SPY", 0, 10**6, 700, cursor)
        seen += [r.event_ns for r in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == list(range(7000, 10_000))

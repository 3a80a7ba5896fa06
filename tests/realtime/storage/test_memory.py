"""Memory-store specifics: the bound per key, eviction counted, late rows sorted in place."""

from __future__ import annotations

import random

from protocol.records import Trade
from realtime.storage import MemoryStore
from realtime.storage.memory import SortedRing


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
    ring: SortedRing[int] = SortedRing(10)
    for value in range(5):
        ring.insert(value * 10, value, value)
    assert ring.page(0, 100, None, 5) == ([0, 1, 2, 3, 4], None)
    assert ring.page(0, 100, None, 4) == ([0, 1, 2, 3], (30, 3))
    assert ring.page(0, 100, (30, 3), 4) == ([4], None)
    assert ring.page(0, 40, (10, 1), 2) == ([2, 3], None)

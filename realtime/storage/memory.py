"""Bounded in-memory store for embedded mode without a DSN.

Per key (symbol, symbol and bar spec, signal channel) a ring of the newest ``max_rows_per_key``
rows, kept sorted by ``(event_ns, id)`` like the PostgreSQL reads, so both stores page the same
way. Rows pushed out by newer ones are counted in ``stats().rows_evicted``. Market data is kept
as the records written (immutable ``protocol.records`` structs), so a read returns them as is.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from operator import attrgetter
from typing import Generic, TypeVar

from protocol.records import Bar, Quote, Trade
from realtime.storage.base import (
    InstrumentRow,
    Page,
    SignalRow,
    StoreStats,
    check_range,
    decode_cursor,
    encode_cursor,
)

DEFAULT_MAX_ROWS_PER_KEY = 100_000

RowT = TypeVar("RowT")
KeyT = TypeVar("KeyT", bound=Hashable)


_symbol = attrgetter("symbol")
_event_ns = attrgetter("event_ns")


def _entry_key(entry: tuple[int, int, object]) -> tuple[int, int]:
    return entry[0], entry[1]


class SortedRing(Generic[RowT]):
    """The newest ``maxlen`` rows of one key, sorted by ``(time_ns, tie)``.

    In-order appends (the common case) are O(1); a late row is inserted at its place.
    """

    def __init__(self, maxlen: int) -> None:
        self._entries: deque[tuple[int, int, RowT]] = deque(maxlen=maxlen)
        self._maxlen = maxlen

    def __len__(self) -> int:
        return len(self._entries)

    def insert(self, time_ns: int, tie: int, row: RowT) -> int:
        """Keep ``row``; return how many older rows it evicted (0 or 1)."""
        entries = self._entries
        evicted = 1 if len(entries) == self._maxlen else 0
        if (
            not entries
            or (last := entries[-1])[0] < time_ns
            or (last[0] == time_ns and last[1] < tie)
        ):
            entries.append((time_ns, tie, row))
            return evicted
        if evicted and (time_ns, tie) < _entry_key(entries[0]):
            return 1  # older than everything kept in a full ring: it is the row evicted
        if evicted:
            entries.popleft()
        index = bisect.bisect_left(entries, (time_ns, tie), key=_entry_key)
        entries.insert(index, (time_ns, tie, row))
        return evicted

    def replace_or_insert(self, time_ns: int, row: RowT) -> int:
        """Keep ``row`` as the only one at ``time_ns`` (bars: one per start time)."""
        entries = self._entries
        index = bisect.bisect_left(entries, (time_ns, 0), key=_entry_key)
        if index < len(entries) and entries[index][0] == time_ns:
            entries[index] = (time_ns, 0, row)
            return 0
        return self.insert(time_ns, 0, row)

    def page(
        self, from_ns: int, to_ns: int, after: tuple[int, int] | None, limit: int
    ) -> tuple[list[RowT], tuple[int, int] | None]:
        """Up to ``limit`` rows in ``[from_ns, to_ns)`` after ``after``; the last key if more."""
        entries = self._entries
        start = bisect.bisect_left(entries, (from_ns, -(2**63)), key=_entry_key)
        if after is not None:
            start = max(start, bisect.bisect_right(entries, after, key=_entry_key))
        rows: list[RowT] = []
        last: tuple[int, int] | None = None
        for time_ns, tie, row in itertools.islice(entries, start, None):
            if time_ns >= to_ns:
                return rows, None
            if len(rows) == limit:
                return rows, last
            rows.append(row)
            last = (time_ns, tie)
        return rows, None

    def last(self) -> RowT | None:
        return self._entries[-1][2] if self._entries else None


class MemoryStore:
    """The :class:`~realtime.storage.base.Store` of embedded mode: nothing leaves the process."""

    kind = "memory"

    def __init__(self, max_rows_per_key: int = DEFAULT_MAX_ROWS_PER_KEY) -> None:
        if max_rows_per_key < 1:
            raise ValueError("max_rows_per_key must be positive")
        self.max_rows_per_key = max_rows_per_key
        self._trades: dict[str, SortedRing[Trade]] = {}
        self._quotes: dict[str, SortedRing[Quote]] = {}
        self._bars: dict[tuple[str, str], SortedRing[Bar]] = {}
        self._signals: dict[str, SortedRing[SignalRow]] = {}
        self._instruments: dict[str, InstrumentRow] = {}
        self._next_id = itertools.count(1)
        self._rows_written = 0
        self._rows_evicted = 0

    async def start(self) -> None:
        return None

    async def close(self, timeout_s: float | None = None) -> None:
        return None

    def stats(self) -> StoreStats:
        return StoreStats(
            kind=self.kind,
            bound=self.max_rows_per_key,
            connected=True,
            rows_written=self._rows_written,
            rows_evicted=self._rows_evicted,
        )

    def _ring(self, rings: dict[KeyT, SortedRing[RowT]], key: KeyT) -> SortedRing[RowT]:
        ring = rings.get(key)
        if ring is None:
            ring = rings[key] = SortedRing(self.max_rows_per_key)
        return ring

    def _keep(
        self,
        rings: dict[str, SortedRing[RowT]],
        rows: Iterable[RowT],
        key_of: Callable[[RowT], str],
        time_of: Callable[[RowT], int],
    ) -> int:
        count = evicted = 0
        next_id = self._next_id
        key, ring = None, None
        for row in rows:
            row_key = key_of(row)
            if row_key != key or ring is None:  # batches are mostly one symbol: look up once
                key, ring = row_key, self._ring(rings, row_key)
            evicted += ring.insert(time_of(row), next(next_id), row)
            count += 1
        self._rows_evicted += evicted
        self._rows_written += count
        return count

    def write_trades(self, rows: Iterable[Trade]) -> int:
        return self._keep(self._trades, rows, _symbol, _event_ns)

    def write_quotes(self, rows: Iterable[Quote]) -> int:
        return self._keep(self._quotes, rows, _symbol, _event_ns)

    def write_signals(self, rows: Iterable[SignalRow]) -> int:
        return self._keep(self._signals, rows, attrgetter("channel"), _event_ns)

    def write_bars(self, rows: Iterable[Bar]) -> int:
        count = 0
        for row in rows:
            ring = self._ring(self._bars, (row.symbol, row.spec))
            self._rows_evicted += ring.replace_or_insert(row.start_ns, row)
            count += 1
        self._rows_written += count
        return count

    async def upsert_instruments(self, rows: Iterable[InstrumentRow]) -> None:
        for row in rows:
            self._instruments[row.symbol] = row

    async def fetch_instruments(self) -> list[InstrumentRow]:
        return [self._instruments[symbol] for symbol in sorted(self._instruments)]

    @staticmethod
    def _page(
        ring: SortedRing[RowT] | None, from_ns: int, to_ns: int, limit: int, cursor: str | None
    ) -> Page[RowT]:
        check_range(from_ns, to_ns, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        if ring is None:
            return Page([], None)
        rows, last = ring.page(from_ns, to_ns, after, limit)
        return Page(rows, encode_cursor(*last) if last is not None else None)

    async def fetch_trades(
        self, symbol: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[Trade]:
        return self._page(self._trades.get(symbol), from_ns, to_ns, limit, cursor)

    async def fetch_quotes(
        self, symbol: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[Quote]:
        return self._page(self._quotes.get(symbol), from_ns, to_ns, limit, cursor)

    async def fetch_bars(
        self,
        symbol: str,
        spec: str,
        from_ns: int,
        to_ns: int,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Bar]:
        return self._page(self._bars.get((symbol, spec)), from_ns, to_ns, limit, cursor)

    async def fetch_signals(
        self, channel: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[SignalRow]:
        return self._page(self._signals.get(channel), from_ns, to_ns, limit, cursor)

    async def fetch_latest_quote(self, symbol: str) -> Quote | None:
        ring = self._quotes.get(symbol)
        return ring.last() if ring is not None else None

    async def fetch_latest_signal(self, channel: str) -> SignalRow | None:
        ring = self._signals.get(channel)
        return ring.last() if ring is not None else None

"""A typed store for an engine's output records: signals, features, predictions, orders, fills,
positions, risk results, backtest results — one class for all of them.

Records live in the store's ``signals`` table (PostgreSQL: COPY-batched, daily partitions,
``(channel, event_ns, id)`` index; memory: a bounded sorted ring per channel), one row per record:
the producing engine, the stream's channel ``<stream>.<key>``, the key, the record's time and its
payload. The record type is any ``msgspec``-convertible type (a ``protocol.records`` record, a
``msgspec.Struct`` of the engine's, or ``dict``): appends encode it once, reads validate it back.

``append`` never blocks (rows queue to the store's bound, every row not kept is counted in its
stats); ``query`` pages a key's records in a half-open time range with the store's keyset cursor;
``latest`` is the newest record of a key (what this process appended last, without waiting for
the write; else the newest stored). Reads raise ``InvalidQuery`` (400) and
``StoreUnavailable`` (503) like every store read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

import msgspec

from realtime.storage.base import END_OF_TIME_NS, MAX_PAGE_ROWS, Page, SignalRow, Store

R = TypeVar("R")


class RecordStore(Generic[R]):
    """``engine``'s records of type ``record_type`` on channels ``<stream>.<key>``."""

    def __init__(
        self,
        store: Store,
        engine: str,
        stream: str,
        record_type: type[R],
        *,
        key: Callable[[R], str],
        time: Callable[[R], int],
    ) -> None:
        self.store = store
        self.engine = engine
        self.stream = stream
        self.record_type = record_type
        self._key = key
        self._time = time
        self._newest: dict[str, tuple[int, R]] = {}

    def channel(self, key: str) -> str:
        return f"{self.stream}.{key}"

    def append(self, records: Iterable[R], *, seqs: Iterable[int] | None = None) -> int:
        """Queue ``records`` (with the bus ``seq`` each was published under, when known);
        returns how many the store accepted."""
        order = iter(seqs) if seqs is not None else None
        rows = []
        newest = self._newest
        for record in records:
            key, time_ns = self._key(record), self._time(record)
            if key not in newest or time_ns >= newest[key][0]:
                newest[key] = (time_ns, record)
            rows.append(
                SignalRow(
                    self.engine,
                    self.channel(key),
                    key,
                    time_ns,
                    next(order) if order is not None else 0,
                    msgspec.to_builtins(record),
                )
            )
        return self.store.write_signals(rows)

    async def query(
        self, key: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[R]:
        page = await self.store.fetch_signals(self.channel(key), from_ns, to_ns, limit, cursor)
        return Page([self._decode(row.payload) for row in page.items], page.next_cursor)

    async def scan(
        self,
        key: str,
        from_ns: int = 0,
        to_ns: int = END_OF_TIME_NS,
        *,
        page_rows: int = MAX_PAGE_ROWS,
    ) -> AsyncIterator[R]:
        """Every stored record of ``key`` in ``[from_ns, to_ns)``, in stored order (event time,
        then arrival), ``page_rows`` at a time: what a restarting engine rebuilds from."""
        cursor: str | None = None
        while True:
            page = await self.query(key, from_ns, to_ns, page_rows, cursor)
            for record in page.items:
                yield record
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def latest(self, key: str) -> R | None:
        if key in self._newest:
            return self._newest[key][1]
        row = await self.store.fetch_latest_signal(self.channel(key))
        return None if row is None else self._decode(row.payload)

    def _decode(self, payload: Any) -> R:
        return msgspec.convert(payload, self.record_type)

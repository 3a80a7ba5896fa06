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

Batches: record stores built with a ``WriteHold`` keep the rows appended while it is held and
write them when it is released, one ``write_signals`` call per record store, a channel's rows
together (the engine shell holds its record stores' ``WriteHold`` while it handles a batch of
input: one write per stream per batch, not one per record — the memory store's cost is mostly
per call). Holds nest (concurrent consumers); every ``release`` writes what waits, and appends go
straight to the store again once every hold is released. Reads write what waits first, so a
process reads what it appended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

import msgspec

from realtime.storage.base import END_OF_TIME_NS, MAX_PAGE_ROWS, Page, SignalRow, Store

R = TypeVar("R")


class WriteHold:
    """Shared by record stores whose appends are batched (module docstring, "Batches")."""

    __slots__ = ("_depth", "_waiting")

    def __init__(self) -> None:
        self._depth = 0
        self._waiting: list[RecordStore[Any]] = []

    @property
    def held(self) -> bool:
        return self._depth > 0

    def hold(self) -> None:
        self._depth += 1

    def release(self) -> None:
        """End one ``hold``: write every row waiting (one store call per record store)."""
        self._depth = max(0, self._depth - 1)
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for records in waiting:
                records.write_held()

    def wait(self, records: RecordStore[Any]) -> None:
        """``records`` holds rows now: write them at the next ``release``."""
        self._waiting.append(records)


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
        hold: WriteHold | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.stream = stream
        self.record_type = record_type
        self._key = key
        self._time = time
        self._newest: dict[str, tuple[int, R]] = {}
        self._hold = hold
        #: rows appended while ``hold`` is held, per channel
        self._held: dict[str, list[SignalRow]] = {}

    def channel(self, key: str) -> str:
        return f"{self.stream}.{key}"

    def append(
        self,
        records: Iterable[R],
        *,
        seqs: Iterable[int] | None = None,
        payloads: Iterable[Any] | None = None,
    ) -> int:
        """Queue ``records`` (with the bus ``seq`` each was published under, when known);
        returns how many the store accepted (while held: how many wait for ``release``).
        ``payloads``: the records already encoded to builtins (``protocol.records.encode``, the
        bus payload just published), so they are not encoded a second time."""
        order = iter(seqs) if seqs is not None else None
        encoded = iter(payloads) if payloads is not None else None
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
                    next(encoded) if encoded is not None else msgspec.to_builtins(record),
                )
            )
        if self._hold is None or not self._hold.held:
            return self.store.write_signals(rows)
        held = self._held
        if not held:
            self._hold.wait(self)
        for row in rows:
            queued = held.get(row.channel)
            if queued is None:
                held[row.channel] = [row]
            else:
                queued.append(row)
        return len(rows)

    async def query(
        self, key: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[R]:
        self.write_held()
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

    def write_held(self) -> int:
        """Write the rows appended while held (one store call); how many the store took."""
        if not self._held:
            return 0
        held, self._held = self._held, {}
        return self.store.write_signals([row for rows in held.values() for row in rows])

    def _decode(self, payload: Any) -> R:
        return msgspec.convert(payload, self.record_type)

"""Bounded in-memory store for embedded mode without a DSN.

Per key (symbol, symbol and bar spec, signal channel) a ring of the newest rows, kept sorted by
``(event_ns, id)`` like the PostgreSQL reads, so both stores page the same way. Rows are kept as
columns (``array.array`` of int64/float64, one per field; a signal's payload as MessagePack
bytes), not as objects: a trade costs 64 bytes instead of ~310 as a ``Trade`` struct with its
boxed ints and floats in a tuple. Reads build the records (``protocol.records`` structs,
``SignalRow``) from the columns.

Bounds: at most ``max_rows_per_key`` rows per key, and at most ``max_bytes`` bytes (columns as
counted by ``ColumnRing.nbytes``) across every key of the store. Over the byte budget the ring
just written drops its oldest rows when it holds at least the average ring's bytes, else the
largest ring does, so busy keys share the budget and a quiet key keeps its rows. A ring always
keeps its newest row (``fetch_latest_quote``). Every row pushed out is counted in
``stats().rows_evicted``.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from array import array
from collections.abc import Callable, Hashable, Iterable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import msgspec

from protocol.records import Bar, Quote, Side, Trade
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
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
#: An int64 column's stand-in for ``None`` (a quote's or trade's missing ``sequence``).
NONE_INT = -(2**63)
#: What one object kept in a list column costs besides its own size: its slot in the list.
SLOT_BYTES = 8
#: A ring compacts its columns (drops evicted rows' storage) once this many rows, or an eighth of
#: what it holds, were evicted: amortized O(1), at most ~1/8 of the memory is slack.
COMPACT_MIN_ROWS = 1024

RowT = TypeVar("RowT")
KeyT = TypeVar("KeyT", bound=Hashable)

if TYPE_CHECKING:
    Column: TypeAlias = array[Any] | list[Any]

_symbol = attrgetter("symbol")
_event_ns = attrgetter("event_ns")
_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.Decoder().decode


class Strings:
    """Small integers for repeated strings (exchanges, engines, keys): a column keeps the code."""

    __slots__ = ("codes", "names")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, name: str) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code


class Layout(Generic[RowT]):
    """How one record type is kept as columns besides ``(time, tie)``.

    ``codes``: one ``array`` type code per column, ``""`` for a list column (objects, counted
    by their ``sys.getsizeof``). ``split`` turns a row into the column values, ``build`` turns
    them back (``key`` is the ring's key: the symbol, or ``(symbol, spec)``).
    """

    codes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.row_bytes = 16 + sum(array(c).itemsize for c in self.codes if c)  # time + tie

    def split(self, row: RowT) -> tuple[Any, ...]:
        raise NotImplementedError

    def build(self, key: Any, time_ns: int, values: Sequence[Any]) -> RowT:
        raise NotImplementedError

    def split_many(self, rows: Sequence[RowT]) -> list[list[Any]]:
        """The columns of ``rows`` (one sequence per column): ``split`` transposed."""
        if not rows:
            return [[] for _ in self.codes]
        return [list(column) for column in zip(*map(self.split, rows), strict=True)]

    def build_many(
        self, key: Any, times: Sequence[int], columns: Sequence[Sequence[Any]]
    ) -> list[RowT]:
        build = self.build
        rows = zip(times, zip(*columns, strict=True), strict=True)
        return [build(key, t, values) for t, values in rows]


_SIDE_CODE = {None: 0, Side.BUY: 1, Side.SELL: -1}
_SIDE_OF = {0: None, 1: Side.BUY, -1: Side.SELL}


class TradeLayout(Layout[Trade]):
    codes = ("q", "d", "d", "b", "q", "i", "q")

    def __init__(self) -> None:
        super().__init__()
        self.exchanges = Strings()

    def split(self, row: Trade) -> tuple[Any, ...]:
        return (
            row.receive_ns,
            row.price,
            row.size,
            _SIDE_CODE[row.aggressor],
            NONE_INT if row.sequence is None else row.sequence,
            self.exchanges.code(row.exchange),
            row.condition,
        )

    def split_many(self, rows: Sequence[Trade]) -> list[list[Any]]:
        code, codes = self.exchanges.code, self.exchanges.codes
        buy, sell = Side.BUY, Side.SELL
        return [
            [r.receive_ns for r in rows],
            [r.price for r in rows],
            [r.size for r in rows],
            [1 if (a := r.aggressor) is buy else -1 if a is sell else 0 for r in rows],
            [NONE_INT if (i := r.sequence) is None else i for r in rows],
            [codes[x] if (x := r.exchange) in codes else code(x) for r in rows],
            [r.condition for r in rows],
        ]

    def build_many(
        self, key: str, times: Sequence[int], columns: Sequence[Sequence[Any]]
    ) -> list[Trade]:
        names, side_of = self.exchanges.names, _SIDE_OF
        return [
            Trade(key, t, r, p, q, side_of[a], None if i == NONE_INT else i, names[x], c)
            for t, r, p, q, a, i, x, c in zip(times, *columns, strict=True)
        ]

    def build(self, key: str, time_ns: int, values: Sequence[Any]) -> Trade:
        receive_ns, price, size, side, sequence, exchange, condition = values
        return Trade(
            key,
            time_ns,
            receive_ns,
            price,
            size,
            _SIDE_OF[side],
            None if sequence == NONE_INT else sequence,
            self.exchanges.names[exchange],
            condition,
        )


class QuoteLayout(Layout[Quote]):
    codes = ("q", "d", "d", "d", "d", "q")

    def split(self, row: Quote) -> tuple[Any, ...]:
        return (
            row.receive_ns,
            row.bid,
            row.bid_size,
            row.ask,
            row.ask_size,
            NONE_INT if row.sequence is None else row.sequence,
        )

    def split_many(self, rows: Sequence[Quote]) -> list[list[Any]]:
        return [
            [r.receive_ns for r in rows],
            [r.bid for r in rows],
            [r.bid_size for r in rows],
            [r.ask for r in rows],
            [r.ask_size for r in rows],
            [NONE_INT if r.sequence is None else r.sequence for r in rows],
        ]

    def build_many(
        self, key: str, times: Sequence[int], columns: Sequence[Sequence[Any]]
    ) -> list[Quote]:
        return [
            Quote(key, t, r, b, bq, k, kq, None if i == NONE_INT else i)
            for t, r, b, bq, k, kq, i in zip(times, *columns, strict=True)
        ]

    def build(self, key: str, time_ns: int, values: Sequence[Any]) -> Quote:
        receive_ns, bid, bid_size, ask, ask_size, sequence = values
        return Quote(
            key,
            time_ns,
            receive_ns,
            bid,
            bid_size,
            ask,
            ask_size,
            None if sequence == NONE_INT else sequence,
        )


class BarLayout(Layout[Bar]):
    codes = ("q", "d", "d", "d", "d", "d", "d", "q")

    def split(self, row: Bar) -> tuple[Any, ...]:
        return (
            row.end_ns,
            row.open,
            row.high,
            row.low,
            row.close,
            row.volume,
            row.dollar_volume,
            row.trades,
        )

    def build(self, key: tuple[str, str], time_ns: int, values: Sequence[Any]) -> Bar:
        symbol, spec = key
        return Bar(symbol, spec, time_ns, *values)


class SignalLayout(Layout[SignalRow]):
    """A signal's payload (JSON-ready builtins) is kept as MessagePack bytes: exact for every
    builtin a payload holds (floats bit for bit, NaN included), a few hundred bytes where the
    dict was kilobytes. A payload MessagePack cannot hold (an int past 64 bits) is kept as is."""

    codes = ("i", "i", "q", "")

    def __init__(self) -> None:
        super().__init__()
        self.strings = Strings()

    def split(self, row: SignalRow) -> tuple[Any, ...]:
        try:
            payload: Any = _msgpack_encode(row.payload)
        except (TypeError, OverflowError, msgspec.EncodeError):
            payload = _Raw(row.payload)
        return (self.strings.code(row.engine), self.strings.code(row.key), row.seq, payload)

    def build(self, key: str, time_ns: int, values: Sequence[Any]) -> SignalRow:
        engine, row_key, seq, payload = values
        names = self.strings.names
        data = payload.value if isinstance(payload, _Raw) else _msgpack_decode(payload)
        return SignalRow(names[engine], key, names[row_key], time_ns, seq, data)


class _Raw:
    """A payload kept as the object itself (counted at a nominal size)."""

    __slots__ = ("value",)
    NOMINAL_BYTES = 1024

    def __init__(self, value: Any) -> None:
        self.value = value

    def __sizeof__(self) -> int:
        return self.NOMINAL_BYTES


class ColumnRing(Generic[RowT]):
    """The newest rows of one key as columns, sorted by ``(time_ns, tie)``.

    Rows ``start ..`` of the columns are live; evicted rows stay until the next compaction.
    In-order appends (the common case) are O(1); a late row is inserted at its place.
    """

    __slots__ = ("columns", "key", "layout", "max_rows", "nbytes", "start", "ties", "times")

    def __init__(self, key: Any, layout: Layout[RowT], max_rows: int) -> None:
        self.key = key
        self.layout = layout
        self.max_rows = max_rows
        self.times: array[int] = array("q")
        self.ties: array[int] = array("q")
        self.columns: list[Column] = [array(c) if c else [] for c in layout.codes]
        self.start = 0
        #: bytes of the live rows: fixed columns plus ``sys.getsizeof`` of listed objects
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.times) - self.start

    def _row_bytes(self, values: Sequence[Any]) -> int:
        size = self.layout.row_bytes
        for code, value in zip(self.layout.codes, values, strict=True):
            if not code:
                size += sys.getsizeof(value) + SLOT_BYTES
        return size

    def insert(self, time_ns: int, tie: int, row: RowT) -> int:
        """Keep ``row``; return how many older rows it evicted (0 or 1)."""
        times, ties = self.times, self.ties
        n = len(times)
        full = n - self.start >= self.max_rows
        if n == self.start or times[-1] < time_ns or (times[-1] == time_ns and ties[-1] < tie):
            index = n
        else:
            index = self._position(time_ns, tie)
            if full and index == self.start:
                return 1  # older than everything kept in a full ring: it is the row evicted
        values = self.layout.split(row)
        if index == n:
            times.append(time_ns)
            ties.append(tie)
            for column, value in zip(self.columns, values, strict=True):
                column.append(value)
        else:
            times.insert(index, time_ns)
            ties.insert(index, tie)
            for column, value in zip(self.columns, values, strict=True):
                column.insert(index, value)
        self.nbytes += self._row_bytes(values)
        if full:
            self.drop_oldest(1)
            return 1
        return 0

    def extend(self, times: list[int], first_tie: int, rows: Sequence[RowT]) -> int | None:
        """Append ``rows`` (times ``times``, ties from ``first_tie`` on) at once when they are
        in order and none is older than the newest kept; return how many rows the count bound
        evicted, or None (nothing done) when they are not in order."""
        n = len(times)
        if n == 0:
            return 0
        if len(self.times) > self.start and times[0] < self.times[-1]:
            return None
        if times != sorted(times):
            return None
        columns = self.layout.split_many(rows)
        self.times.fromlist(times)
        self.ties.fromlist(list(range(first_tie, first_tie + n)))
        added = self.layout.row_bytes * n
        for code, column, values in zip(self.layout.codes, self.columns, columns, strict=True):
            if code:
                column.fromlist(values)  # type: ignore[union-attr]
            else:
                column.extend(values)
                added += sum(sys.getsizeof(v) + SLOT_BYTES for v in values)
        self.nbytes += added
        excess = len(self) - self.max_rows
        return self.drop_oldest(excess) if excess > 0 else 0

    def replace_or_insert(self, time_ns: int, row: RowT) -> int:
        """Keep ``row`` as the only one at ``time_ns`` (bars: one per start time)."""
        index = bisect.bisect_left(self.times, time_ns, self.start)
        if index < len(self.times) and self.times[index] == time_ns:
            values = self.layout.split(row)
            old = [column[index] for column in self.columns]
            for column, value in zip(self.columns, values, strict=True):
                column[index] = value
            self.ties[index] = 0
            self.nbytes += self._row_bytes(values) - self._row_bytes(old)
            return 0
        return self.insert(time_ns, 0, row)

    def drop_oldest(self, count: int) -> int:
        """Drop up to ``count`` of the oldest rows, never the newest; how many were dropped."""
        count = min(count, len(self) - 1)
        if count <= 0:
            return 0
        start, end = self.start, self.start + count
        dropped = self.layout.row_bytes * count
        for code, column in zip(self.layout.codes, self.columns, strict=True):
            if not code:
                listed: list[Any] = column  # type: ignore[assignment]
                dropped += sum(sys.getsizeof(v) + SLOT_BYTES for v in listed[start:end])
                listed[start:end] = itertools.repeat(None, count)  # freed now
        self.nbytes -= dropped
        self.start = end
        if end >= max(COMPACT_MIN_ROWS, len(self) // 8):
            self._compact()
        return count

    def _compact(self) -> None:
        start = self.start
        del self.times[:start]
        del self.ties[:start]
        for column in self.columns:
            del column[:start]
        self.start = 0

    def _position(self, time_ns: int, tie: int) -> int:
        """Index of the first row after ``(time_ns, tie)`` in ``(time, tie)`` order."""
        times, ties = self.times, self.ties
        index = bisect.bisect_left(times, time_ns, self.start)
        end = bisect.bisect_right(times, time_ns, index)
        while index < end and ties[index] <= tie:
            index += 1
        return index

    def _build(self, index: int) -> RowT:
        return self.layout.build(
            self.key, self.times[index], [column[index] for column in self.columns]
        )

    def page(
        self, from_ns: int, to_ns: int, after: tuple[int, int] | None, limit: int
    ) -> tuple[list[RowT], tuple[int, int] | None]:
        """Up to ``limit`` rows in ``[from_ns, to_ns)`` after ``after``; the last key if more."""
        times = self.times
        first = bisect.bisect_left(times, from_ns, self.start)
        if after is not None:
            first = max(first, self._position(*after))
        end = bisect.bisect_left(times, to_ns, first) if first < len(times) else first
        stop = min(end, first + limit)
        rows = self.layout.build_many(
            self.key, times[first:stop], [column[first:stop] for column in self.columns]
        )
        if stop < end and rows:
            return rows, (times[stop - 1], self.ties[stop - 1])
        return rows, None

    def last(self) -> RowT | None:
        return self._build(len(self.times) - 1) if len(self) else None


class MemoryStore:
    """The :class:`~realtime.storage.base.Store` of embedded mode: nothing leaves the process."""

    kind = "memory"

    def __init__(
        self, max_rows_per_key: int = DEFAULT_MAX_ROWS_PER_KEY, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_rows_per_key < 1:
            raise ValueError("max_rows_per_key must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_rows_per_key = max_rows_per_key
        self.max_bytes = max_bytes
        self._trade_layout = TradeLayout()
        self._quote_layout = QuoteLayout()
        self._bar_layout = BarLayout()
        self._signal_layout = SignalLayout()
        self._trades: dict[str, ColumnRing[Trade]] = {}
        self._quotes: dict[str, ColumnRing[Quote]] = {}
        self._bars: dict[tuple[str, str], ColumnRing[Bar]] = {}
        self._signals: dict[str, ColumnRing[SignalRow]] = {}
        self._rings: list[ColumnRing[Any]] = []
        self._largest: ColumnRing[Any] | None = None
        #: bytes of every ring together (``ColumnRing.nbytes`` summed, kept up to date)
        self._used = 0
        self._instruments: dict[str, InstrumentRow] = {}
        #: the last row id given (ids order rows of equal time: insertion order)
        self._last_id = 0
        self._rows_written = 0
        self._rows_evicted = 0

    async def start(self) -> None:
        return None

    async def close(self, timeout_s: float | None = None) -> None:
        return None

    @property
    def nbytes(self) -> int:
        """Bytes the rows of every key hold, as the budget counts them."""
        return self._used

    def stats(self) -> StoreStats:
        return StoreStats(
            kind=self.kind,
            bound=self.max_rows_per_key,
            connected=True,
            rows_written=self._rows_written,
            rows_evicted=self._rows_evicted,
        )

    def _ring(
        self, rings: dict[KeyT, ColumnRing[RowT]], key: KeyT, layout: Layout[RowT]
    ) -> ColumnRing[RowT]:
        ring = rings.get(key)
        if ring is None:
            ring = rings[key] = ColumnRing(key, layout, self.max_rows_per_key)
            self._rings.append(ring)
        return ring

    def _keep(
        self,
        rings: dict[str, ColumnRing[RowT]],
        layout: Layout[RowT],
        rows: Iterable[RowT],
        key_of: Callable[[RowT], str],
        time_of: Callable[[RowT], int],
    ) -> int:
        batch = rows if isinstance(rows, list) else list(rows)
        if len(batch) == 1:  # an engine's one record: no grouping, no per-run lists
            row = batch[0]
            ring = self._ring(rings, key_of(row), layout)
            before = ring.nbytes
            self._last_id += 1
            evicted = ring.insert(time_of(row), self._last_id, row)
            self._rows_evicted += evicted + self._settle(ring, before)
            self._rows_written += 1
            return 1
        evicted = 0
        for row_key, run in itertools.groupby(batch, key_of):  # batches: mostly one symbol
            part = list(run)
            ring = self._ring(rings, row_key, layout)
            before, first_tie = ring.nbytes, self._last_id + 1
            self._last_id += len(part)
            times = [time_of(row) for row in part]
            appended = ring.extend(times, first_tie, part)
            if appended is None:  # late rows among them: each at its place
                appended = 0
                for tie, (time_ns, row) in enumerate(zip(times, part, strict=True), first_tie):
                    appended += ring.insert(time_ns, tie, row)
            evicted += appended + self._settle(ring, before)
        count = len(batch)
        self._rows_evicted += evicted
        self._rows_written += count
        return count

    def _settle(self, grown: ColumnRing[Any], before: int) -> int:
        """Count what ``grown`` holds now (it held ``before``); enforce the byte budget."""
        self._used += grown.nbytes - before
        return self._enforce(grown) if self._used > self.max_bytes else 0

    def _enforce(self, grown: ColumnRing[Any]) -> int:
        """Bring every ring together back under ``max_bytes`` after ``grown`` received rows;
        the rows evicted (see the module's docstring for who gives way)."""
        used = self._used
        evicted = 0
        while used > self.max_bytes:
            holding = sum(1 for ring in self._rings if len(ring))
            average = used / max(1, holding)
            victim = grown if grown.nbytes >= average and len(grown) > 1 else self._largest
            if victim is None or len(victim) < 2 or victim.nbytes < average:
                victim = self._largest = max(self._rings, key=_evictable_bytes)
            if len(victim) < 2:
                break
            per_row = victim.nbytes / len(victim)
            wanted = -(-(used - self.max_bytes) // int(per_row or 1))
            before = victim.nbytes
            dropped = victim.drop_oldest(max(1, wanted))
            if not dropped:
                break
            evicted += dropped
            used -= before - victim.nbytes
        self._used = used
        return evicted

    def write_trades(self, rows: Iterable[Trade]) -> int:
        return self._keep(self._trades, self._trade_layout, rows, _symbol, _event_ns)

    def write_quotes(self, rows: Iterable[Quote]) -> int:
        return self._keep(self._quotes, self._quote_layout, rows, _symbol, _event_ns)

    def write_signals(self, rows: Iterable[SignalRow]) -> int:
        return self._keep(
            self._signals, self._signal_layout, rows, attrgetter("channel"), _event_ns
        )

    def write_bars(self, rows: Iterable[Bar]) -> int:
        count = evicted = 0
        for row in rows:
            ring = self._ring(self._bars, (row.symbol, row.spec), self._bar_layout)
            before = ring.nbytes
            evicted += ring.replace_or_insert(row.start_ns, row)
            evicted += self._settle(ring, before)
            count += 1
        self._rows_evicted += evicted
        self._rows_written += count
        return count

    async def upsert_instruments(self, rows: Iterable[InstrumentRow]) -> None:
        for row in rows:
            self._instruments[row.symbol] = row

    async def fetch_instruments(self) -> list[InstrumentRow]:
        return [self._instruments[symbol] for symbol in sorted(self._instruments)]

    @staticmethod
    def _page(
        ring: ColumnRing[RowT] | None, from_ns: int, to_ns: int, limit: int, cursor: str | None
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


def _evictable_bytes(ring: ColumnRing[Any]) -> int:
    return ring.nbytes if len(ring) > 1 else -1

"""PostgreSQL storage: COPY-batched writes from a bounded queue, keyset-paged reads.

Writes go through :class:`~realtime.storage.writer.BatchWriter` into :class:`CopySink`, which
holds one dedicated connection: per batch it makes sure the daily partitions of the days in the
batch exist (``ensure_partitions`` from ``realtime/storage/sql/001``; cached per day), then, in one
transaction, records the batch id in ``write_batches`` and COPYs the rows (binary COPY via
asyncpg's ``copy_records_to_table``; bars through a temp table and an upsert on
``(symbol, spec, start_ns)``). Reads use a small pool created on first use, so a store starts and
serves its engine while PostgreSQL is down; its reads then fail and its writes queue.

Reads see committed rows only, not rows still queued in the writer.

Records ⇄ columns. ``Quote`` and ``Bar`` fields are the ``quotes``/``bars`` columns in order (a
quote's ``sequence`` is not stored). A ``Trade`` maps onto ``trades`` as: ``aggressor`` ±1 (buy,
sell) or NULL; ``sequence`` → ``trade_id`` as decimal text; ``exchange`` ``""`` → NULL;
``condition`` (sale-condition flags) → lower-case hex text, 0 (none) → NULL. Each maps back to
the same record, so a trade read back equals the trade written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import operator
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import asyncpg
import msgspec
import orjson

from protocol.records import Bar, Quote, Side, Trade
from realtime.clock import Clock, SystemClock
from realtime.storage.base import (
    BAR_COLUMNS,
    INSTRUMENT_COLUMNS,
    QUOTE_COLUMNS,
    SIGNAL_COLUMNS,
    TRADE_COLUMNS,
    InstrumentRow,
    Page,
    SignalRow,
    StoreStats,
    StoreUnavailable,
    check_range,
    decode_cursor,
    encode_cursor,
)
from realtime.storage.migrations import DEFAULT_SCHEMA, quote_identifier
from realtime.storage.writer import Batch, BatchWriter, Record, WriterSettings

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[], Awaitable[asyncpg.Connection]]

NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH = dt.date(1970, 1, 1)
_MIN_KEY = -(2**63)

COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": TRADE_COLUMNS,
    "quotes": QUOTE_COLUMNS,
    "bars": BAR_COLUMNS,
    "signals": SIGNAL_COLUMNS,
}
# The partition key of each table, as its index in the COPY record.
TIME_COLUMN_INDEX = {
    table: columns.index("start_ns" if table == "bars" else "event_ns")
    for table, columns in COLUMNS.items()
}

# asyncpg errors a retry can outlive: connection loss, server restart or shutdown
# (class 57), resources (class 53), a read-only standby during failover, rollback races (class 40),
# and the client-side protocol-state error a killed backend can leave on the next use.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InternalClientError,
)


P = ParamSpec("P")
T = TypeVar("T")


def _unavailable_on_outage(
    read: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Reads raise the store's own ``StoreUnavailable`` when PostgreSQL cannot answer, so no
    engine needs to know asyncpg's exception types (REST maps it to 503)."""

    @functools.wraps(read)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await read(*args, **kwargs)
        except TRANSIENT_ERRORS as error:
            raise StoreUnavailable(f"PostgreSQL unreachable: {error!r}") from None

    return guarded


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """Storage settings. Sizing: COPY batches of 5k–50k rows reach ≥ 200k rows/s on one core.

    ``max_queued_rows`` bounds memory during an outage (about 100 B a trade row: 1M ≈ 100 MB).
    A failed batch waits a full-jitter draw from [0, ``min(retry_max_s, retry_base_s *
    2**failures)``] (``realtime.backoff``) before it is written again.
    """

    dsn: str
    schema: str = DEFAULT_SCHEMA
    pool_min_size: int = 1
    pool_max_size: int = 4
    batch_rows: int = 20_000
    flush_interval_s: float = 0.2
    max_queued_rows: int = 1_000_000
    retry_base_s: float = 0.1
    retry_max_s: float = 10.0
    write_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    close_timeout_s: float = 10.0
    partitions_ahead_days: int = 2
    application_name: str = "nautilus"

    def __post_init__(self) -> None:
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError("need 1 <= pool_min_size <= pool_max_size")
        if self.batch_rows < 1 or self.max_queued_rows < self.batch_rows:
            raise ValueError("need 1 <= batch_rows <= max_queued_rows")
        if self.flush_interval_s <= 0 or self.retry_base_s <= 0 or self.retry_max_s <= 0:
            raise ValueError("intervals must be positive")

    def writer_settings(self) -> WriterSettings:
        return WriterSettings(
            batch_rows=self.batch_rows,
            flush_interval_s=self.flush_interval_s,
            max_queued_rows=self.max_queued_rows,
            retry_base_s=self.retry_base_s,
            retry_max_s=self.retry_max_s,
            write_timeout_s=self.write_timeout_s,
        )


def connection_factory(config: PostgresConfig) -> ConnectionFactory:
    """Connections to ``config.dsn`` with ``search_path`` set to ``config.schema``."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            config.dsn,
            timeout=config.connect_timeout_s,
            server_settings={
                "search_path": quote_identifier(config.schema),
                "application_name": config.application_name,
            },
        )

    return connect


def day_of(time_ns: int) -> int:
    """UTC day number since 1970-01-01 of a nanosecond timestamp (the partition of the row)."""
    return time_ns // NS_PER_DAY


class CopySink:
    """Writes batches over one connection; see the module docstring for the transaction."""

    def __init__(
        self, connect: ConnectionFactory, schema: str, clock: Clock, ahead_days: int
    ) -> None:
        self._connect = connect
        self._schema = schema
        self._clock = clock
        self._ahead_days = ahead_days
        self._connection: asyncpg.Connection | None = None
        self._known_days: dict[str, set[int]] = {table: set() for table in COLUMNS}

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def connection(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            connection = await self._connect()
            self._connection = connection
            today = day_of(self._clock.now_ns())
            for table in COLUMNS:
                await self.ensure_days(table, range(today, today + self._ahead_days + 1))
        return self._connection

    async def ensure_days(self, table: str, days: Iterable[int]) -> None:
        """Create the daily partitions of ``table`` for ``days`` (UTC day numbers) if missing."""
        known = self._known_days[table]
        missing = sorted(set(days) - known)
        if not missing:
            return
        connection = await self.connection()
        parent = f"{quote_identifier(self._schema)}.{table}"
        for day in missing:
            date = _EPOCH + dt.timedelta(days=day)
            await connection.execute("SELECT ensure_partitions($1::regclass, $2, $2)", parent, date)
            known.add(day)

    async def write(self, batch: Batch) -> bool:
        connection = await self.connection()
        time_index = TIME_COLUMN_INDEX[batch.table]
        await self.ensure_days(batch.table, {day_of(r[time_index]) for r in batch.records})
        async with connection.transaction():
            status = await connection.execute(
                "INSERT INTO write_batches (batch_id, table_name, row_count) VALUES ($1, $2, $3)"
                " ON CONFLICT (batch_id) DO NOTHING",
                batch.batch_id,
                batch.table,
                len(batch.records),
            )
            if status == "INSERT 0 0":
                return False
            if batch.table == "bars":
                await self._upsert_bars(connection, batch.records)
            else:
                await connection.copy_records_to_table(
                    batch.table,
                    records=batch.records,
                    columns=COLUMNS[batch.table],
                    schema_name=self._schema,
                )
        return True

    async def _upsert_bars(self, connection: asyncpg.Connection, records: list[Record]) -> None:
        # The last version of a bar in the batch wins, as a later batch's version would.
        latest = {(r[0], r[1], r[2]): r for r in records}
        columns = ", ".join(BAR_COLUMNS)
        await connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bars_incoming ON COMMIT DELETE ROWS AS"
            f" SELECT {columns} FROM {quote_identifier(self._schema)}.bars WITH NO DATA"
        )
        await connection.copy_records_to_table(
            "bars_incoming", records=list(latest.values()), columns=BAR_COLUMNS
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in BAR_COLUMNS[3:])
        await connection.execute(
            f"INSERT INTO bars ({columns}) SELECT {columns} FROM bars_incoming"
            f" ON CONFLICT (symbol, spec, start_ns) DO UPDATE SET {updates}"
        )

    async def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    def is_transient(self, error: Exception) -> bool:
        """Retry after connection trouble, which a killed backend can surface as a client-side
        protocol-state error (``InternalClientError``) on the next use of the connection."""
        if isinstance(error, TRANSIENT_ERRORS):
            return True
        return self._connection is not None and self._connection.is_closed()


_AGGRESSOR_CODE = {Side.BUY: 1, Side.SELL: -1, None: None}
_AGGRESSOR_SIDE = {1: Side.BUY, -1: Side.SELL, None: None}
_quote_record = operator.attrgetter(*QUOTE_COLUMNS)
_bar_record = msgspec.structs.astuple
_instrument_record = operator.attrgetter(*INSTRUMENT_COLUMNS)


def trade_to_row(trade: Trade) -> Record:
    """The ``trades`` columns of ``trade`` (module docstring: records ⇄ columns)."""
    sequence, condition = trade.sequence, trade.condition
    return (
        trade.symbol,
        trade.event_ns,
        trade.receive_ns,
        trade.price,
        trade.size,
        _AGGRESSOR_CODE[trade.aggressor],
        None if sequence is None else str(sequence),
        trade.exchange or None,
        format(condition, "x") if condition else None,
    )


def trade_from_row(values: tuple[Any, ...]) -> Trade:
    """The ``Trade`` a ``trades`` row holds: the inverse of ``trade_to_row``."""
    symbol, event_ns, receive_ns, price, size, aggressor, trade_id, exchange, condition = values
    return Trade(
        symbol,
        event_ns,
        receive_ns,
        price,
        size,
        _AGGRESSOR_SIDE[aggressor],
        None if trade_id is None else int(trade_id),
        exchange or "",
        int(condition, 16) if condition else 0,
    )


def _signal_record(row: SignalRow) -> Record:
    payload = orjson.dumps(row.payload).decode()
    return (row.engine, row.channel, row.key, row.event_ns, row.seq, payload)


def _signal_row(values: tuple[Any, ...]) -> SignalRow:
    engine, channel, key, event_ns, seq, payload = values
    return SignalRow(engine, channel, key, event_ns, seq, orjson.loads(payload))


class PostgresStore:
    """The :class:`~realtime.storage.base.Store` backed by PostgreSQL (schema from ``migrate``).

    ``connect`` makes every connection (writer and read pool); inject one to choose the server
    at run time (tests point it at a closed port, then at the real server).
    """

    kind = "postgres"

    def __init__(
        self,
        config: PostgresConfig,
        *,
        clock: Clock | None = None,
        connect: ConnectionFactory | None = None,
    ) -> None:
        self.config = config
        self._connect = connect if connect is not None else connection_factory(config)
        self.sink = CopySink(
            self._connect, config.schema, clock or SystemClock(), config.partitions_ahead_days
        )
        self.writer = BatchWriter(self.sink, tuple(COLUMNS), config.writer_settings())
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the writer and create the partitions ahead; an outage here is not fatal."""
        self.writer.start()
        try:
            await self.sink.connection()
        except Exception as error:
            if not self.sink.is_transient(error):
                raise
            self.writer.last_error = f"{type(error).__name__}: {error}"
            log.warning("PostgreSQL unreachable at start (%s); writes will queue", error)

    async def close(self, timeout_s: float | None = None) -> None:
        await self.writer.close(self.config.close_timeout_s if timeout_s is None else timeout_s)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    def stats(self) -> StoreStats:
        writer = self.writer
        return StoreStats(
            kind=self.kind,
            bound=self.config.max_queued_rows,
            connected=self.sink.connected,
            rows_written=writer.rows_written,
            rows_queued=writer.rows_queued,
            batches_written=writer.batches_written,
            batches_failed=writer.batches_failed,
            retries=writer.retries,
            rows_dropped_overflow=writer.rows_dropped_overflow,
            rows_rejected=writer.rows_rejected,
            rows_dropped_shutdown=writer.rows_dropped_shutdown,
            last_error=writer.last_error,
        )

    def write_trades(self, rows: Iterable[Trade]) -> int:
        return self.writer.offer("trades", map(trade_to_row, rows))

    def write_quotes(self, rows: Iterable[Quote]) -> int:
        return self.writer.offer("quotes", map(_quote_record, rows))

    def write_bars(self, rows: Iterable[Bar]) -> int:
        return self.writer.offer("bars", map(_bar_record, rows))

    def write_signals(self, rows: Iterable[SignalRow]) -> int:
        return self.writer.offer("signals", map(_signal_record, rows))

    @_unavailable_on_outage
    async def pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                connect = self._connect

                async def pool_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
                    return await connect()

                self._pool = await asyncpg.create_pool(
                    min_size=self.config.pool_min_size,
                    max_size=self.config.pool_max_size,
                    connect=pool_connect,
                )
            return self._pool

    @_unavailable_on_outage
    async def upsert_instruments(self, rows: Iterable[InstrumentRow]) -> None:
        columns = ", ".join(INSTRUMENT_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in INSTRUMENT_COLUMNS[1:])
        pool = await self.pool()
        await pool.executemany(
            f"INSERT INTO instruments ({columns}) VALUES ($1, $2, $3, $4, $5, $6)"
            f" ON CONFLICT (symbol) DO UPDATE SET {updates}",
            [_instrument_record(row) for row in rows],
        )

    @_unavailable_on_outage
    async def fetch_instruments(self) -> list[InstrumentRow]:
        pool = await self.pool()
        records = await pool.fetch(
            f"SELECT {', '.join(INSTRUMENT_COLUMNS)} FROM instruments ORDER BY symbol"
        )
        return [InstrumentRow(*record) for record in records]

    @_unavailable_on_outage
    async def _page(
        self,
        table: str,
        key_column: str,
        key: str,
        from_ns: int,
        to_ns: int,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[tuple[Any, ...]], str | None]:
        """Rows of ``table`` for one key in ``[from_ns, to_ns)`` by ``(event_ns, id)``."""
        check_range(from_ns, to_ns, limit)
        after = decode_cursor(cursor) if cursor is not None else (_MIN_KEY, _MIN_KEY)
        pool = await self.pool()
        records = await pool.fetch(
            f"SELECT {', '.join(COLUMNS[table])}, id FROM {table}"
            f" WHERE {key_column} = $1 AND event_ns >= $2 AND event_ns < $3"
            " AND (event_ns, id) > ($4, $5) ORDER BY event_ns, id LIMIT $6",
            key,
            from_ns,
            to_ns,
            after[0],
            after[1],
            limit + 1,
        )
        rows = [tuple(record) for record in records]
        if len(rows) <= limit:
            return [row[:-1] for row in rows], None
        last = rows[limit - 1]
        time_index = TIME_COLUMN_INDEX[table]
        return [row[:-1] for row in rows[:limit]], encode_cursor(last[time_index], last[-1])

    async def fetch_trades(
        self, symbol: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[Trade]:
        rows, next_cursor = await self._page(
            "trades", "symbol", symbol, from_ns, to_ns, limit, cursor
        )
        return Page([trade_from_row(row) for row in rows], next_cursor)

    async def fetch_quotes(
        self, symbol: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[Quote]:
        rows, next_cursor = await self._page(
            "quotes", "symbol", symbol, from_ns, to_ns, limit, cursor
        )
        return Page([Quote(*row) for row in rows], next_cursor)

    async def fetch_signals(
        self, channel: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[SignalRow]:
        rows, next_cursor = await self._page(
            "signals", "channel", channel, from_ns, to_ns, limit, cursor
        )
        return Page([_signal_row(row) for row in rows], next_cursor)

    @_unavailable_on_outage
    async def fetch_bars(
        self,
        symbol: str,
        spec: str,
        from_ns: int,
        to_ns: int,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Bar]:
        """Bars by ``start_ns`` (unique per symbol and spec); the cursor's tie is always 0."""
        check_range(from_ns, to_ns, limit)
        after = decode_cursor(cursor)[0] if cursor is not None else _MIN_KEY
        pool = await self.pool()
        records = await pool.fetch(
            f"SELECT {', '.join(BAR_COLUMNS)} FROM bars"
            " WHERE symbol = $1 AND spec = $2 AND start_ns >= $3 AND start_ns < $4"
            " AND start_ns > $5 ORDER BY start_ns LIMIT $6",
            symbol,
            spec,
            from_ns,
            to_ns,
            after,
            limit + 1,
        )
        bars = [Bar(*record) for record in records]
        if len(bars) <= limit:
            return Page(bars, None)
        return Page(bars[:limit], encode_cursor(bars[limit - 1].start_ns, 0))

    @_unavailable_on_outage
    async def fetch_latest_signal(self, channel: str) -> SignalRow | None:
        pool = await self.pool()
        record = await pool.fetchrow(
            f"SELECT {', '.join(SIGNAL_COLUMNS)} FROM signals"
            " WHERE channel = $1 ORDER BY event_ns DESC, id DESC LIMIT 1",
            channel,
        )
        return _signal_row(tuple(record)) if record is not None else None

    @_unavailable_on_outage
    async def fetch_latest_quote(self, symbol: str) -> Quote | None:
        pool = await self.pool()
        record = await pool.fetchrow(
            f"SELECT {', '.join(QUOTE_COLUMNS)} FROM quotes"
            " WHERE symbol = $1 ORDER BY event_ns DESC, id DESC LIMIT 1",
            symbol,
        )
        return Quote(*record) if record is not None else None

"""PostgreSQL-only behaviour: partitions on demand, outages, exactly-once retries, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket

import asyncpg
import msgspec
import pytest

from protocol.records import Bar, Quote, Side, Trade
from realtime.clock import ManualClock
from realtime.storage import PostgresConfig, PostgresStore, SignalRow
from realtime.storage.base import BAR_COLUMNS, QUOTE_COLUMNS
from realtime.storage.migrations import quote_identifier
from realtime.storage.postgres import trade_to_row
from realtime.storage.writer import Batch, BatchWriter
from tests.realtime.storage.conftest import DSN, eventually, settled
from tests.realtime.storage.test_stores import (
    FAR_FUTURE,
    FAR_PAST,
    SPY_OPEN_2013,
    SPY_OPEN_2024,
    by_time,
    make_trades,
)


def closed_port_dsn() -> str:
    """A DSN whose port refuses connections: bound by us, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/test"


class SwitchableServer:
    """A connection factory whose target the test moves: down (closed port), then up."""

    def __init__(self, config: PostgresConfig, dsn: str) -> None:
        self.config = config
        self.dsn = dsn
        self.connects = 0

    async def __call__(self) -> asyncpg.Connection:
        self.connects += 1
        return await asyncpg.connect(
            self.dsn,
            timeout=2,
            server_settings={
                "search_path": quote_identifier(self.config.schema),
                "application_name": self.config.application_name,
            },
        )


async def count(admin: asyncpg.Connection, table: str) -> int:
    return int(await admin.fetchval(f"SELECT count(*) FROM {table}"))


async def partitions(admin: asyncpg.Connection, parent: str) -> set[str]:
    rows = await admin.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass",
        parent,
    )
    return {row["relname"] for row in rows}


async def test_writer_creates_daily_partitions_for_the_days_it_sees(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    store = PostgresStore(pg_config)
    await store.start()
    # 23:59:59.999 UTC on 2024-08-08 is still that day; one nanosecond later is the 9th.
    end_of_day = int(dt.datetime(2024, 8, 9, tzinfo=dt.UTC).timestamp()) * 10**9 - 1
    edge = [Trade("SPY", end_of_day, 0, 1.0, 1.0), Trade("SPY", end_of_day + 1, 0, 1.0, 1.0)]
    store.write_trades([*make_trades("SPY", SPY_OPEN_2013, 100, 1), *edge])
    store.write_trades(make_trades("SPY", SPY_OPEN_2024, 100, 2))
    await settled(store)
    await store.close()

    assert {"trades_p20131007", "trades_p20240808", "trades_p20240809"} <= await partitions(
        admin, "trades"
    )
    per_day = await admin.fetch(
        "SELECT tableoid::regclass::text AS part, count(*) AS n FROM trades GROUP BY 1"
    )
    counts = {row["part"].rsplit(".", 1)[-1]: row["n"] for row in per_day}
    assert counts == {"trades_p20131007": 100, "trades_p20240808": 101, "trades_p20240809": 1}
    indexes = await admin.fetch(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'trades_p20131007'"
    )
    definitions = " ".join(row["indexdef"] for row in indexes)
    assert "USING brin (event_ns)" in definitions
    assert "USING btree (symbol, event_ns, id)" in definitions


def test_bar_and_quote_fields_are_their_table_columns_in_order() -> None:
    """The store COPYs a ``Bar`` as its field tuple and reads ``Quote(*row)``: the record types
    must keep listing the tables' columns in order (``bars.trade_count`` is ``Bar.trades``)."""
    bar_fields = [f.name for f in msgspec.structs.fields(Bar)]
    quote_fields = [f.name for f in msgspec.structs.fields(Quote)]
    assert bar_fields == [*BAR_COLUMNS[:-1], "trades"] and BAR_COLUMNS[-1] == "trade_count"
    assert quote_fields == [*QUOTE_COLUMNS, "sequence"]


async def test_trades_keep_the_columns_rows_had_and_read_back_equal(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    """What ``realtime/storage/sql/002`` documents for ``trades``: aggressor 1 / -1 / NULL, the venue id as
    text, NULL for an unknown exchange and for no sale condition, condition flags in hex."""
    t = SPY_OPEN_2013
    trades = [
        Trade("SPY", t, t + 5, 168.25, 100.0, Side.BUY, 0, "P", 0x4046),
        Trade("SPY", t + 1, t + 6, 168.5, 0.00001, Side.SELL, 2**62, "", 0),
        Trade("SPY", t + 2, t + 7, 168.75, 3.0),
    ]
    store = PostgresStore(pg_config)
    await store.start()
    store.write_trades(trades)
    await settled(store)
    stored = await admin.fetch(
        "SELECT aggressor, trade_id, exchange, condition FROM trades ORDER BY event_ns"
    )
    assert [tuple(row) for row in stored] == [
        (1, "0", "P", "4046"),
        (-1, "4611686018427387904", None, None),
        (None, None, None, None),
    ]
    assert (await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 10)).items == trades
    await store.close()


async def test_partitions_are_created_ahead_of_the_clock(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    now = int(dt.datetime(2031, 2, 27, 12, tzinfo=dt.UTC).timestamp()) * 10**9
    store = PostgresStore(pg_config, clock=ManualClock(now))
    await store.start()
    await store.close()
    for table in ("trades", "quotes", "bars", "signals"):
        names = await partitions(admin, table)
        ahead = {f"{table}_p20310227", f"{table}_p20310228", f"{table}_p20310301"}
        assert ahead <= names
        assert f"{table}_p20310302" not in names


async def test_outage_queues_to_the_bound_counts_overflow_and_resumes_exactly_once(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    config = dataclasses.replace(pg_config, batch_rows=100, max_queued_rows=1000)
    server = SwitchableServer(config, closed_port_dsn())
    store = PostgresStore(config, connect=server)
    await store.start()  # PostgreSQL unreachable: the store still starts
    assert not store.stats().connected
    assert store.stats().last_error is not None

    rows = make_trades("SPY", SPY_OPEN_2013, 1500, seed=11)
    assert store.write_trades(rows[:600]) == 600
    assert store.write_trades(rows[600:]) == 400  # only what fits under the bound
    await eventually(lambda: store.stats().batches_failed >= 3)
    stats = store.stats()
    assert (stats.rows_queued, stats.rows_written, stats.rows_dropped_overflow) == (1000, 0, 500)
    assert stats.retries >= 2
    assert "Connect" in (stats.last_error or "") or "refused" in (stats.last_error or "")

    server.dsn = DSN  # the database is back
    await settled(store)
    stats = store.stats()
    assert (stats.rows_queued, stats.rows_written, stats.rows_dropped_overflow) == (0, 1000, 500)
    assert stats.connected
    assert await count(admin, "trades") == 1000
    page = await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 5000)
    assert page.items == by_time(rows[:1000])
    await store.close()


async def test_terminated_connections_are_replaced_and_nothing_is_lost(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    store = PostgresStore(pg_config)
    await store.start()
    rows = make_trades("SPY", SPY_OPEN_2024, 900, seed=12)
    for part in range(3):
        store.write_trades(rows[part * 300 : (part + 1) * 300])
        await settled(store)
        await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 1)  # the read pool too
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            pg_config.application_name,
        )
        assert killed >= 2  # the writer's connection and a pool connection
    store.write_trades(make_trades("QQQ", SPY_OPEN_2024, 10, seed=13))
    await settled(store)
    assert await count(admin, "trades") == 910
    assert (await store.fetch_trades("SPY", FAR_PAST, FAR_FUTURE, 5000)).items == by_time(rows)
    assert store.stats().rows_written == 910
    await store.close()


class LostAcknowledgement:
    """The real sink, except that the first commit's reply is 'lost' (the call then raises)."""

    def __init__(self, store: PostgresStore) -> None:
        self.sink = store.sink
        self.lost = 0

    @property
    def connected(self) -> bool:
        return self.sink.connected

    async def write(self, batch: Batch) -> bool:
        written = await self.sink.write(batch)
        if self.lost == 0:
            self.lost += 1
            raise ConnectionResetError("connection lost after COMMIT")
        return written

    async def disconnect(self) -> None:
        await self.sink.disconnect()

    def is_transient(self, error: Exception) -> bool:
        return self.sink.is_transient(error)


async def test_a_batch_committed_but_unacknowledged_is_not_written_twice(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    store = PostgresStore(pg_config)
    sink = LostAcknowledgement(store)
    writer = BatchWriter(sink, ("trades",), pg_config.writer_settings())
    writer.start()
    rows = make_trades("SPY", SPY_OPEN_2013, 50, seed=14)
    writer.offer("trades", [trade_to_row(r) for r in rows])
    await eventually(lambda: writer.rows_queued == 0)
    await writer.close(5)
    assert (sink.lost, writer.batches_failed, writer.retries) == (1, 1, 1)
    assert writer.rows_written == 50
    assert await count(admin, "trades") == 50
    assert await count(admin, "write_batches") == 1


async def test_a_refused_batch_is_counted_and_later_batches_still_go_in(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    config = dataclasses.replace(pg_config, batch_rows=10)
    store = PostgresStore(config)
    await store.start()
    good = make_trades("SPY", SPY_OPEN_2013, 20, seed=15)
    bad = msgspec.structs.replace(good[0], exchange="\x00")  # text cannot hold NUL
    store.write_trades(good[:10])
    await settled(store)
    store.write_trades([bad, *good[11:20]])
    await settled(store)
    store.write_trades(good[10:11])
    await settled(store)
    stats = store.stats()
    assert (stats.rows_written, stats.rows_rejected, stats.retries) == (11, 10, 0)
    assert "CharacterNotInRepertoireError" in (stats.last_error or "")
    assert await count(admin, "trades") == 11
    await store.close()


async def test_close_flushes_what_is_queued(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    config = dataclasses.replace(pg_config, batch_rows=1000, flush_interval_s=60)
    store = PostgresStore(config)
    await store.start()
    store.write_trades(make_trades("SPY", SPY_OPEN_2013, 120, seed=16))
    assert store.stats().rows_queued == 120
    await store.close(timeout_s=5)
    assert store.stats().rows_written == 120
    assert await count(admin, "trades") == 120
    with pytest.raises(RuntimeError, match="closed"):
        store.write_trades(make_trades("SPY", SPY_OPEN_2013, 1, seed=17))


async def test_close_during_an_outage_counts_what_it_could_not_write(
    pg_config: PostgresConfig,
) -> None:
    store = PostgresStore(pg_config, connect=SwitchableServer(pg_config, closed_port_dsn()))
    await store.start()
    store.write_trades(make_trades("SPY", SPY_OPEN_2013, 70, seed=18))
    await store.close(timeout_s=0.3)
    stats = store.stats()
    assert (stats.rows_written, stats.rows_queued, stats.rows_dropped_shutdown) == (0, 0, 70)


async def test_a_quiet_table_is_flushed_while_a_busy_one_keeps_the_writer_awake(
    pg_config: PostgresConfig, admin: asyncpg.Connection
) -> None:
    config = dataclasses.replace(pg_config, batch_rows=20, flush_interval_s=0.1)
    store = PostgresStore(config)
    await store.start()
    quiet = SignalRow("vpin", "vpin.SPY", "SPY", SPY_OPEN_2013, 1, {"vpin": 0.25})
    store.write_signals([quiet])
    busy = make_trades("SPY", SPY_OPEN_2013, 20_000, seed=19)
    # a full trades batch every 5 ms until the quiet row is in (bounded by the rows, ~0.5 s
    # unloaded; a loaded machine only takes longer, it never stops the busy table being busy)
    for start in range(0, len(busy), 20):
        store.write_trades(busy[start : start + 20])
        await asyncio.sleep(0.005)
        if await count(admin, "signals"):
            break
    assert start < len(busy) - 20, "the quiet row was never flushed while trades kept coming"
    assert await count(admin, "signals") == 1
    await store.close()

"""Real PostgreSQL for the storage tests: one throw-away schema per test session."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from realtime.storage import MemoryStore, PostgresConfig, PostgresStore, Store, migrate
from realtime.storage.migrations import quote_identifier
from tests.support import TEST_DSN
from tests.support import until as eventually

DSN = TEST_DSN
DATA_TABLES = "trades, quotes, bars, signals, instruments, write_batches"


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    schema = f"nautilus_test_{secrets.token_hex(4)}"
    asyncio.run(migrate(DSN, schema))
    yield schema

    async def drop() -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(f"DROP SCHEMA {quote_identifier(schema)} CASCADE")
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture
async def admin(pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, on the session schema, over empty tables."""
    connection = await asyncpg.connect(
        DSN, server_settings={"search_path": quote_identifier(pg_schema)}
    )
    await connection.execute(f"TRUNCATE {DATA_TABLES}")
    yield connection
    await connection.close()


@pytest.fixture
def pg_config(pg_schema: str) -> PostgresConfig:
    return PostgresConfig(
        dsn=DSN,
        schema=pg_schema,
        batch_rows=50,
        flush_interval_s=0.02,
        max_queued_rows=10_000,
        retry_base_s=0.01,
        retry_max_s=0.05,
        close_timeout_s=5.0,
        application_name=f"nautilus-test-{secrets.token_hex(4)}",
    )


@pytest.fixture(params=["memory", "postgres"])
async def store(
    request: pytest.FixtureRequest, pg_config: PostgresConfig, admin: asyncpg.Connection
) -> AsyncIterator[Store]:
    chosen: Store = MemoryStore() if request.param == "memory" else PostgresStore(pg_config)
    await chosen.start()
    yield chosen
    await chosen.close()


async def settled(store: Store) -> None:
    """Wait until every accepted row is written (immediate for the memory store)."""
    await eventually(lambda: store.stats().rows_queued == 0)

"""What many tests share, written once: waiting on a condition, the test DSN, throw-away schemas.

Tests use the real PostgreSQL and Redis of the machine (``NAUTILUS_TEST_DSN``, default the local
``test`` database); a missing service fails the test, it never skips.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg

from realtime.storage import migrate
from realtime.storage.migrations import quote_identifier

TEST_DSN = os.environ.get("NAUTILUS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NAUTILUS_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def until(condition: Callable[[], object], timeout_s: float = 20.0) -> None:
    """Wait until ``condition()`` is truthy (background work), failing after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@contextmanager
def migrated_schema(prefix: str = "nautilus_test") -> Iterator[str]:
    """A new schema with every migration applied, dropped afterwards (sync: for fixtures)."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(migrate(TEST_DSN, schema))
    try:
        yield schema
    finally:

        async def drop() -> None:
            connection = await asyncpg.connect(TEST_DSN)
            try:
                await connection.execute(
                    f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"
                )
            finally:
                await connection.close()

        asyncio.run(drop())

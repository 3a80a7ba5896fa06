"""The platform's storage service when PostgreSQL is down at start: migrations are retried in the
background with the shared backoff until PostgreSQL appears, then the store starts."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg

from realtime.storage import StorageConfig
from realtime.storage.service import Storage
from tests.support import TEST_DSN, until


class DrawCounter(random.Random):
    """A seeded ``random.Random`` that counts the backoff draws made from it."""

    count = 0

    def random(self) -> float:
        self.count += 1
        return super().random()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def postgres_on(port: int) -> AsyncIterator[None]:
    """PostgreSQL (the test database's server) reachable on ``port`` from now on: a TCP relay."""
    target = urlsplit(TEST_DSN)
    tasks: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 5432)
        for pipe in (_pipe(reader, up_writer), _pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_postgres_down_at_start_is_retried_with_backoff_until_it_appears() -> None:
    with socket.socket() as probe:  # a port nobody listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = urlsplit(TEST_DSN)
    dsn = target._replace(netloc=f"{target.username or 'postgres'}@127.0.0.1:{port}").geturl()
    schema = f"nautilus_test_{secrets.token_hex(4)}"
    draws = DrawCounter(1)
    storage = Storage(StorageConfig(dsn=dsn, schema=schema), rng=draws)
    try:
        await storage.open()  # returns at once: PostgreSQL is down
        assert not storage.ready.is_set() and storage.migration_error
        await until(lambda: draws.count >= 3, 30.0)  # three waits drawn, still down
        assert not storage.ready.is_set()
        assert any("migrations pending" in issue for issue in storage.issues())
        async with postgres_on(port):
            await until(storage.ready.is_set, 30.0)
            assert storage.migration_error is None
            assert storage.health()["migrations"] == "applied"
            await storage.close(5.0)
    finally:
        await storage.close(5.0)
        connection = await asyncpg.connect(TEST_DSN)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()

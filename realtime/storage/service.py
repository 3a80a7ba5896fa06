"""The platform's storage as a service the shell owns: one config, opened, migrated and closed once.

Engines receive a ``Storage`` like they receive the bus; none of them builds a store, migrates a
schema or knows which database is behind it. ``NAUTILUS_DB_DSN`` chooses PostgreSQL (COPY-batched
writes, daily partitions, keyset reads); without it a bounded in-memory store, same interface.

PostgreSQL unreachable at start is not fatal: ``open`` returns at once, the migrations are retried
with backoff in the background and rows queue (to ``queue_rows``) until the schema exists;
``health()`` and ``issues()`` say so meanwhile. ``ready`` is set once the store accepts writes;
an engine that rebuilds its state from the store awaits it (``wait_ready``, bounded by
``start_wait_s``) before its ``on_start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from realtime.backoff import Backoff, BackoffPolicy, Rng
from realtime.clock import Clock, SystemClock
from realtime.config import described
from realtime.storage.base import Store, StoreUnavailable
from realtime.storage.memory import MemoryStore
from realtime.storage.migrations import DEFAULT_SCHEMA, migrate
from realtime.storage.postgres import PostgresConfig, PostgresStore
from realtime.storage.records import RecordStore

log = logging.getLogger(__name__)

#: The one prefix of the platform-wide storage settings (``NAUTILUS_DB_DSN``, ...).
STORAGE_PREFIX = "NAUTILUS_DB_"
#: Waits between migration attempts while PostgreSQL is unreachable (full jitter, ≤ 10 s).
MIGRATION_RETRY = BackoffPolicy(initial_s=0.5, max_s=10.0)
#: Errors that mean "PostgreSQL is not reachable now": retried, never fatal.
UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)

R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """Storage settings of the whole platform (``NAUTILUS_DB_<FIELD>``)."""

    dsn: str = field(
        default="", metadata=described("PostgreSQL DSN ('' = bounded in-memory store)")
    )
    schema: str = field(default=DEFAULT_SCHEMA, metadata=described("PostgreSQL schema"))
    memory_rows: int = field(
        default=100_000, metadata=described("memory store: newest rows kept per key and table")
    )
    memory_bytes: int = field(
        default=128 * 1024 * 1024,
        metadata=described(
            "memory store: bytes of rows kept across every key (oldest rows of the busiest "
            "keys go first)"
        ),
    )
    queue_rows: int = field(
        default=1_000_000, metadata=described("PostgreSQL: most rows queued during an outage")
    )
    batch_rows: int = field(
        default=20_000, metadata=described("PostgreSQL: most rows per COPY batch")
    )
    start_wait_s: float = field(
        default=60.0,
        metadata=described(
            "PostgreSQL: seconds an engine that rebuilds its state from the store (Risk, "
            "Portfolio) waits for it at start before failing with one line"
        ),
    )

    def __post_init__(self) -> None:
        if min(self.memory_rows, self.memory_bytes, self.queue_rows, self.batch_rows) < 1:
            raise ValueError("memory_rows, memory_bytes, queue_rows and batch_rows must be >= 1")
        if self.start_wait_s < 0:
            raise ValueError(f"start_wait_s must be >= 0, got {self.start_wait_s}")

    @property
    def kind(self) -> str:
        return "postgres" if self.dsn else "memory"


class Storage:
    """One store (PostgreSQL or memory) with its lifecycle; shared by every engine of a process
    unless an engine names its own DSN."""

    def __init__(
        self,
        config: StorageConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
    ) -> None:
        self.config = config or StorageConfig()
        self.clock = clock or SystemClock()
        self._rng: Rng = rng if rng is not None else random.Random()
        self.store: Store = (
            PostgresStore(
                PostgresConfig(
                    dsn=self.config.dsn,
                    schema=self.config.schema,
                    batch_rows=min(self.config.batch_rows, self.config.queue_rows),
                    max_queued_rows=self.config.queue_rows,
                ),
                clock=self.clock,
            )
            if self.config.dsn
            else MemoryStore(self.config.memory_rows, self.config.memory_bytes)
        )
        self.ready = asyncio.Event()
        self.migration_error: str | None = None
        self._retry: asyncio.Task[None] | None = None
        self._opened = False

    @property
    def kind(self) -> str:
        return self.store.kind

    async def open(self) -> None:
        """Migrate (PostgreSQL) and start the store; with PostgreSQL down, retry in the
        background and return at once. Idempotent."""
        if self._opened:
            return
        self._opened = True
        if not self.config.dsn:
            await self._start_store()
            return
        try:
            await migrate(self.config.dsn, self.config.schema)
        except UNREACHABLE as exc:
            self.migration_error = f"{type(exc).__name__}: {exc}"
            log.warning("PostgreSQL unreachable at start (%s): retrying", exc)
            self._retry = asyncio.create_task(self._migrate_when_reachable(), name="migrations")
            return
        await self._start_store()

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop retrying, write what is queued (bounded by ``timeout_s``), release connections."""
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        await self.store.close(timeout_s)

    async def wait_ready(self) -> None:
        """Return once the store accepts reads and writes; ``StoreUnavailable`` (one line naming
        the cause) if that takes longer than ``start_wait_s``."""
        try:
            await asyncio.wait_for(self.ready.wait(), self.config.start_wait_s)
        except TimeoutError:
            raise StoreUnavailable(
                f"PostgreSQL unreachable for {self.config.start_wait_s:g} s "
                f"(NAUTILUS_DB_START_WAIT_S): {self.migration_error or 'not opened'}"
            ) from None

    def records(
        self,
        engine: str,
        stream: str,
        record_type: type[R],
        *,
        key: Callable[[R], str],
        time: Callable[[R], int],
    ) -> RecordStore[R]:
        """A typed view of ``engine``'s output records of one stream (see ``RecordStore``)."""
        return RecordStore(self.store, engine, stream, record_type, key=key, time=time)

    def health(self) -> dict[str, Any]:
        stats = dataclasses.asdict(self.store.stats())
        stats["migrations"] = "pending" if self.migration_error else "applied"
        return stats

    def issues(self) -> list[str]:
        found: list[str] = []
        stats = self.store.stats()
        if self.migration_error:
            found.append(f"PostgreSQL migrations pending: {self.migration_error}")
        elif stats.kind == "postgres" and not stats.connected and stats.last_error:
            found.append(
                f"PostgreSQL unreachable ({stats.last_error}); {stats.rows_queued} rows queued"
            )
        if stats.rows_dropped_overflow:
            found.append(f"{stats.rows_dropped_overflow} rows dropped: write queue full")
        if stats.rows_rejected:
            found.append(f"{stats.rows_rejected} rows rejected by PostgreSQL")
        return found

    async def _start_store(self) -> None:
        await self.store.start()
        self.ready.set()

    async def _migrate_when_reachable(self) -> None:
        """Rows queue meanwhile (the writer is not started: nothing is written into a schema
        that does not exist yet)."""
        backoff = Backoff(MIGRATION_RETRY, self._rng)
        while True:
            await asyncio.sleep(backoff.next_s())
            try:
                await migrate(self.config.dsn, self.config.schema)
            except UNREACHABLE as exc:
                self.migration_error = f"{type(exc).__name__}: {exc}"
                continue
            self.migration_error = None
            await self._start_store()
            return

"""Storage of market data and engine records: PostgreSQL (COPY-batched) or bounded memory.

``Storage`` (the shell-owned service: one config, opened, migrated, closed) wraps one ``Store``;
``RecordStore`` is the typed view an engine keeps its output records in. Market data goes in and
comes out as ``protocol.records`` ``Trade``, ``Quote`` and ``Bar``. Reads raise
``InvalidQuery`` or ``StoreUnavailable``; no caller needs to know the driver's exceptions.
"""

from __future__ import annotations

from realtime.storage.base import (
    END_OF_TIME_NS,
    MAX_PAGE_ROWS,
    InstrumentRow,
    InvalidQuery,
    Page,
    SignalRow,
    Store,
    StoreStats,
    StoreUnavailable,
)
from realtime.storage.memory import MemoryStore
from realtime.storage.migrations import DEFAULT_SCHEMA, MigrationError, migrate
from realtime.storage.postgres import PostgresConfig, PostgresStore
from realtime.storage.records import RecordStore
from realtime.storage.service import STORAGE_PREFIX, Storage, StorageConfig

__all__ = [
    "DEFAULT_SCHEMA",
    "END_OF_TIME_NS",
    "MAX_PAGE_ROWS",
    "STORAGE_PREFIX",
    "InstrumentRow",
    "InvalidQuery",
    "MemoryStore",
    "MigrationError",
    "Page",
    "PostgresConfig",
    "PostgresStore",
    "RecordStore",
    "SignalRow",
    "Storage",
    "StorageConfig",
    "Store",
    "StoreStats",
    "StoreUnavailable",
    "migrate",
]

"""Storage of market data and signals: PostgreSQL (COPY-batched) or bounded memory."""

from __future__ import annotations

from realtime.storage.base import (
    BarRow,
    InstrumentRow,
    InvalidQuery,
    Page,
    QuoteRow,
    SignalRow,
    Store,
    StoreStats,
    TradeRow,
)
from realtime.storage.memory import MemoryStore
from realtime.storage.migrations import DEFAULT_SCHEMA, MigrationError, migrate
from realtime.storage.postgres import PostgresConfig, PostgresStore

__all__ = [
    "DEFAULT_SCHEMA",
    "BarRow",
    "InstrumentRow",
    "InvalidQuery",
    "MemoryStore",
    "MigrationError",
    "Page",
    "PostgresConfig",
    "PostgresStore",
    "QuoteRow",
    "SignalRow",
    "Store",
    "StoreStats",
    "TradeRow",
    "migrate",
]

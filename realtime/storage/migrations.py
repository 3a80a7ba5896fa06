"""Apply the numbered SQL files of ``infra/sql`` to one schema, once each, in order.

``migrate`` takes a session advisory lock (keyed by schema) so concurrent processes apply each
file once; each file runs in its own transaction together with its ``schema_migrations`` row, so
a failing file leaves nothing half-applied. The files name no schema: they run with
``search_path`` set to the target schema, so tests migrate a throw-away schema and production the
default ``nautilus``. A changed checksum of an applied file is an error, not a silent skip.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "infra" / "sql"
DEFAULT_SCHEMA = "nautilus"
_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def quote_identifier(name: str) -> str:
    """SQL identifier quoting, as PostgreSQL's ``quote_ident``."""
    return '"' + name.replace('"', '""') + '"'


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: expected NNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version} used twice")
        migrations[version] = Migration(version, match.group(2), path.read_text())
    return [migrations[version] for version in sorted(migrations)]


async def migrate(
    dsn: str,
    schema: str = DEFAULT_SCHEMA,
    *,
    directory: Path = MIGRATIONS_DIR,
    connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
) -> list[int]:
    """Create ``schema`` if needed and apply pending migrations; return the versions applied."""
    migrations = load_migrations(directory)
    connection = await (connect() if connect is not None else asyncpg.connect(dsn))
    try:
        lock_key = f"nautilus.migrate:{schema}"
        await connection.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock_key)
        try:
            return await _apply(connection, schema, migrations)
        finally:
            await connection.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_key)
    finally:
        await connection.close()


async def _apply(
    connection: asyncpg.Connection, schema: str, migrations: list[Migration]
) -> list[int]:
    await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
    await connection.execute(
        "SELECT set_config('search_path', $1, false)", quote_identifier(schema)
    )
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = {
        row["version"]: row["checksum"]
        for row in await connection.fetch("SELECT version, checksum FROM schema_migrations")
    }
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:03d}_{migration.name} changed after it was "
                    f"applied to schema {schema!r}: add a new migration instead"
                )
            continue
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        done.append(migration.version)
    return done

"""Apply the numbered SQL files shipped in this package (``realtime/storage/sql``) to one schema,
once each, in order; and say which of them a schema has.

The files are package data, read with ``importlib.resources``: an installed wheel migrates
exactly like a checkout. ``migrate`` takes a session advisory lock (keyed by schema) so
concurrent processes apply each file once; each file runs in its own transaction together with
its ``schema_migrations`` row, so a failing file leaves nothing half-applied and is reported as
``MigrationFailed`` naming the file. The files name no schema: they run with ``search_path`` set
to the target schema, so tests migrate a throw-away schema and production the default
``nautilus``. A changed checksum of an applied file is an error, not a silent skip.

Connection errors (PostgreSQL unreachable) pass through unchanged: the storage service retries
on them and the CLI maps them at its edge.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Literal

import asyncpg

#: The migrations of this release, inside the installed package.
MIGRATIONS: Traversable = files("realtime.storage") / "sql"
DEFAULT_SCHEMA = "nautilus"
_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
#: Errors that mean the database could not be reached (or the connection was lost).
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
)

State = Literal["applied", "pending", "changed", "unknown"]


class MigrationError(RuntimeError):
    pass


class MigrationFailed(MigrationError):
    """One file's SQL failed; nothing of it was applied (its transaction rolled back)."""

    def __init__(self, file_name: str, error: BaseException) -> None:
        detail = " ".join(str(error).split()) or type(error).__name__
        super().__init__(f"{file_name}: {type(error).__name__}: {detail}")
        self.file_name = file_name


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def file_name(self) -> str:
        return f"{self.version:03d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One migration as a schema has it: ``applied``, ``pending``, ``changed`` (applied, but
    the file's checksum differs now) or ``unknown`` (applied by a release whose file this one
    lacks, e.g. a newer one)."""

    version: int
    file_name: str
    state: State
    applied_at: datetime | None = None


def quote_identifier(name: str) -> str:
    """SQL identifier quoting, as PostgreSQL's ``quote_ident``."""
    return '"' + name.replace('"', '""') + '"'


def load_migrations(directory: Traversable = MIGRATIONS) -> list[Migration]:
    """The ``NNN_name.sql`` files of ``directory`` (a package resource or a ``Path``), by
    version."""
    migrations: dict[int, Migration] = {}
    entries = sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    for entry in entries:
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: expected NNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{entry.name}: version {version} used twice")
        migrations[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [migrations[version] for version in sorted(migrations)]


async def migrate(
    dsn: str,
    schema: str = DEFAULT_SCHEMA,
    *,
    directory: Traversable = MIGRATIONS,
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


async def migration_status(
    dsn: str,
    schema: str = DEFAULT_SCHEMA,
    *,
    directory: Traversable = MIGRATIONS,
    connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
) -> list[MigrationState]:
    """Each migration file (and each applied version without a file) as ``schema`` has it.
    Reads only: a schema that does not exist yet has every file pending."""
    migrations = load_migrations(directory)
    connection = await (connect() if connect is not None else asyncpg.connect(dsn))
    try:
        table = await connection.fetchval(
            "SELECT to_regclass(format('%I.schema_migrations', $1::text)) IS NOT NULL", schema
        )
        rows = (
            await connection.fetch(
                "SELECT version, name, checksum, applied_at FROM "
                f"{quote_identifier(schema)}.schema_migrations ORDER BY version"
            )
            if table
            else []
        )
    finally:
        await connection.close()
    applied = {row["version"]: row for row in rows}
    states: list[MigrationState] = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        if row is None:
            states.append(MigrationState(migration.version, migration.file_name, "pending"))
        else:
            state: State = "applied" if row["checksum"] == migration.checksum else "changed"
            states.append(
                MigrationState(migration.version, migration.file_name, state, row["applied_at"])
            )
    for version, row in applied.items():
        file_name = f"{version:03d}_{row['name']}.sql"
        states.append(MigrationState(version, file_name, "unknown", row["applied_at"]))
    return sorted(states, key=lambda s: s.version)


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
                    f"{migration.file_name}: changed after it was applied to schema "
                    f"{schema!r}: add a new migration instead"
                )
            continue
        try:
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except _CONNECTION_ERRORS:
            raise  # unreachable, not a bad file: the caller may retry
        except asyncpg.PostgresError as exc:
            raise MigrationFailed(migration.file_name, exc) from exc
        done.append(migration.version)
    return done

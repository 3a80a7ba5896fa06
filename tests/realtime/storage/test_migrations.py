"""Migrations against real PostgreSQL: idempotent, recorded, locked, checksum-guarded."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from importlib.resources import as_file
from pathlib import Path

import asyncpg
import pytest

from realtime.storage import MigrationError, migrate
from realtime.storage.migrations import (
    MIGRATIONS,
    MigrationFailed,
    load_migrations,
    migration_status,
    quote_identifier,
)
from tests.realtime.storage.conftest import DSN


@pytest.fixture
async def fresh_schema() -> AsyncIterator[str]:
    schema = f"nautilus_test_{secrets.token_hex(4)}"
    yield schema
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
    finally:
        await connection.close()


async def table_names(schema: str) -> set[str]:
    connection = await asyncpg.connect(DSN)
    try:
        rows = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
        )
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_migrate_applies_every_file_once_and_is_idempotent(fresh_schema: str) -> None:
    files = sorted(p.name for p in MIGRATIONS.iterdir() if p.name.endswith(".sql"))
    versions = [int(name.split("_", 1)[0]) for name in files]
    assert versions == list(range(1, len(files) + 1))

    assert await migrate(DSN, fresh_schema) == versions
    assert await migrate(DSN, fresh_schema) == []
    assert {
        "schema_migrations",
        "instruments",
        "trades",
        "quotes",
        "bars",
        "signals",
        "write_batches",
    } <= await table_names(fresh_schema)
    connection = await asyncpg.connect(DSN)
    try:
        recorded = await connection.fetch(
            f"SELECT version, name FROM {quote_identifier(fresh_schema)}.schema_migrations"
            " ORDER BY version"
        )
        partitioned = await connection.fetch(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            fresh_schema,
        )
    finally:
        await connection.close()
    assert [(r["version"], r["name"]) for r in recorded] == [(int(n[:3]), n[4:-4]) for n in files]
    assert {r["relname"] for r in partitioned} == {"trades", "quotes", "bars", "signals"}
    assert "trades" not in await table_names("public")  # nothing leaked out of the schema


async def test_concurrent_migrations_apply_each_file_once(fresh_schema: str) -> None:
    results = await asyncio.gather(*(migrate(DSN, fresh_schema) for _ in range(3)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in load_migrations()]


def copy_of_migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "sql"
    with as_file(MIGRATIONS) as shipped:
        shutil.copytree(shipped, directory)
    return directory


async def test_an_applied_file_that_changed_is_an_error(fresh_schema: str, tmp_path: Path) -> None:
    directory = copy_of_migrations(tmp_path)
    await migrate(DSN, fresh_schema, directory=directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(DSN, fresh_schema, directory=directory)


async def test_a_failing_migration_leaves_nothing_behind(fresh_schema: str, tmp_path: Path) -> None:
    directory = copy_of_migrations(tmp_path)
    (directory / "900_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationFailed) as failed:
        await migrate(DSN, fresh_schema, directory=directory)
    # one line naming the file and PostgreSQL's error; the driver's exception is the cause
    assert str(failed.value) == (
        '900_broken.sql: UndefinedTableError: relation "no_such_table" does not exist'
    )
    assert isinstance(failed.value.__cause__, asyncpg.UndefinedTableError)
    assert "half_done" not in await table_names(fresh_schema)
    assert "trades" in await table_names(fresh_schema)  # the good files before it stay applied
    (directory / "900_broken.sql").unlink()
    assert await migrate(DSN, fresh_schema, directory=directory) == []


def test_file_names_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        load_migrations(tmp_path)


async def test_status_reads_pending_applied_changed_and_unknown(
    fresh_schema: str, tmp_path: Path
) -> None:
    directory = copy_of_migrations(tmp_path)
    names = sorted(p.name for p in directory.glob("*.sql"))
    before = await migration_status(DSN, fresh_schema, directory=directory)
    assert [(s.file_name, s.state, s.applied_at) for s in before] == [
        (name, "pending", None) for name in names
    ]
    assert fresh_schema not in await schema_names()  # status only reads

    await migrate(DSN, fresh_schema, directory=directory)
    after = await migration_status(DSN, fresh_schema, directory=directory)
    assert [(s.file_name, s.state) for s in after] == [(name, "applied") for name in names]
    assert all(s.applied_at is not None for s in after)

    (directory / names[0]).write_text((directory / names[0]).read_text() + "\n-- edited\n")
    (directory / names[-1]).unlink()  # as an older release, without the newest file, sees it
    (directory / "900_next.sql").write_text("CREATE TABLE next_one (x int);\n")
    drifted = {s.file_name: s.state for s in await migration_status(
        DSN, fresh_schema, directory=directory
    )}  # fmt: skip
    assert drifted[names[0]] == "changed"
    assert drifted[names[-1]] == "unknown"
    assert drifted["900_next.sql"] == "pending"
    assert [v for v, s in drifted.items() if s == "applied"] == names[1:-1]


async def test_an_unreachable_database_is_a_connection_error_not_a_migration_error() -> None:
    """The storage service retries on connection errors: they must pass through unchanged."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    dsn = f"postgresql://postgres@127.0.0.1:{port}/test"
    with pytest.raises(OSError):
        await migrate(dsn, "nautilus_never")
    with pytest.raises(OSError):
        await migration_status(dsn, "nautilus_never")


async def schema_names() -> set[str]:
    connection = await asyncpg.connect(DSN)
    try:
        rows = await connection.fetch("SELECT nspname FROM pg_namespace")
    finally:
        await connection.close()
    return {row["nspname"] for row in rows}

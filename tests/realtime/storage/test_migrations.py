"""Migrations against real PostgreSQL: idempotent, recorded, locked, checksum-guarded."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from realtime.storage import MigrationError, migrate
from realtime.storage.migrations import MIGRATIONS_DIR, load_migrations, quote_identifier
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
    files = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
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


async def test_an_applied_file_that_changed_is_an_error(fresh_schema: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(DSN, fresh_schema, directory=directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(DSN, fresh_schema, directory=directory)


async def test_a_failing_migration_leaves_nothing_behind(fresh_schema: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "900_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(DSN, fresh_schema, directory=directory)
    assert "half_done" not in await table_names(fresh_schema)
    assert "trades" in await table_names(fresh_schema)  # the good files before it stay applied
    (directory / "900_broken.sql").unlink()
    assert await migrate(DSN, fresh_schema, directory=directory) == []


def test_file_names_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        load_migrations(tmp_path)

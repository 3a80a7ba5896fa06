"""``nautilus db status`` / ``nautilus db migrate`` as a user runs them, against real PostgreSQL:
exit codes, ``--json``, and every failure as one line naming what failed (no traceback)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import orjson
import pytest

from realtime.storage.migrations import MIGRATIONS, quote_identifier
from tests.support import TEST_DSN

SHIPPED = sorted(entry.name for entry in MIGRATIONS.iterdir() if entry.name.endswith(".sql"))


def nautilus_db(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engines.shell.cli", "db", *args],
        env={"PATH": "", "NAUTILUS_DB_DSN": TEST_DSN},
        capture_output=True,
        text=True,
        timeout=60,
    )


def sql(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(TEST_DSN)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"nautilus_cli_{secrets.token_hex(4)}"
    yield name
    sql(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE")


def test_status_then_migrate_then_status(schema: str) -> None:
    before = nautilus_db("status", "--schema", schema)
    assert before.returncode == 3, before.stderr  # pending
    assert [line.split()[:2] for line in before.stdout.splitlines()[1:-1]] == [
        [name, "pending"] for name in SHIPPED
    ]
    assert f"{len(SHIPPED)} pending: nautilus db migrate applies them" in before.stdout

    migrated = nautilus_db("migrate", "--schema", schema)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip().endswith("applied " + ", ".join(name[:3] for name in SHIPPED))
    assert nautilus_db("migrate", "--schema", schema).stdout.strip().endswith("up to date")

    after = nautilus_db("status", "--schema", schema, "--json")
    assert after.returncode == 0, after.stderr
    document = orjson.loads(after.stdout)
    assert document["up_to_date"] is True
    assert [(m["file"], m["state"]) for m in document["migrations"]] == [
        (name, "applied") for name in SHIPPED
    ]
    assert all(m["applied_at"] for m in document["migrations"])


def test_a_failing_file_is_one_line_naming_it(schema: str) -> None:
    # a table in the way of 003_signals.sql: the first two files apply, the third fails
    sql(f"CREATE SCHEMA {quote_identifier(schema)}")
    sql(f"CREATE TABLE {quote_identifier(schema)}.signals (x int)")
    failed = nautilus_db("migrate", "--schema", schema)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        'nautilus db migrate: 003_signals.sql: DuplicateTableError: relation "signals" already'
        " exists"
    ]
    status = nautilus_db("status", "--schema", schema, "--json")
    assert status.returncode == 3
    states = {m["file"]: m["state"] for m in orjson.loads(status.stdout)["migrations"]}
    assert [states[name] for name in SHIPPED] == ["applied", "applied", "pending", "pending"]


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_an_unreachable_database_is_one_line_and_exit_1(command: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{port}/test"
    failed = nautilus_db(command, "--dsn", dsn)
    assert failed.returncode == 1
    [line] = failed.stderr.splitlines()
    assert line.startswith(f"nautilus db {command}: PostgreSQL postgresql://postgres:***@")
    assert f":{port}/test schema nautilus: ConnectionRefusedError" in line
    assert "s3cret" not in failed.stderr + failed.stdout  # the password is never printed

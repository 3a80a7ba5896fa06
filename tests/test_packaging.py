"""The wheel a user installs, built from a clean copy of the tree and installed into a fresh
virtual environment: it carries the migrations, typing markers and metadata, its ``nautilus``
migrates a fresh schema, and it refuses to run on another distribution's ``realtime``.

The fresh environment sees this environment's dependencies through a ``.pth`` line (its own
``.pth`` files, which put the checkout on ``sys.path``, are not processed), never the checkout:
the product comes from the wheel alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from realtime import __version__
from realtime.storage.migrations import quote_identifier
from tests.support import TEST_DSN

ROOT = Path(__file__).resolve().parents[1]
#: What a fresh clone has besides what git ignores: the build never sees the rest.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "results", "node_modules",
)  # fmt: skip
PACKAGES = ("protocol", "realtime", "engines")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Built:
    wheel: Path
    log: str
    names: list[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``pip wheel --no-deps`` of a clean copy (no stale ``build/``), with this environment's
    setuptools (the dev extra pins the one [build-system] asks for): offline, seconds."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_IN_A_CLONE)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(work / "out"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = (work / "out").glob("nautilus_realtime-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    return Built(wheel, done.stdout + done.stderr, names)


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that sees this one's dependencies (not its .pth files)."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)}))
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return path / "bin"


def pip_install(bin_dir: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
         "--no-deps", "--quiet", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def clean_env() -> dict[str, str]:
    """No PYTHONPATH, no NAUTILUS_* of the caller."""
    return {"PATH": os.environ.get("PATH", ""), "NAUTILUS_DB_DSN": TEST_DSN}


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bin_dir = fresh_venv(tmp_path_factory.mktemp("venv") / "venv")
    pip_install(bin_dir, str(built.wheel))
    return bin_dir


def run(
    bin_dir: Path, *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command of the venv, from a folder outside the checkout."""
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_wheel_holds_the_migrations_typing_markers_and_package_data(built: Built) -> None:
    names = set(built.names)
    sql = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "realtime/storage/sql").iterdir())
    assert sql and set(sql) <= names
    with zipfile.ZipFile(built.wheel) as archive:
        assert all(archive.read(n) == (ROOT / n).read_bytes() for n in sql)
    assert {f"{package}/py.typed" for package in PACKAGES} <= names
    for data in ("realtime/hub/static", "engines/marketdata/data", "engines/collateral/data"):
        files = {p.relative_to(ROOT).as_posix() for p in (ROOT / data).rglob("*") if p.is_file()}
        assert files <= names, sorted(files - names)[:5]
    tops = {name.split("/", 1)[0] for name in names}
    # loadtest/ (and tests/, infra/) stay in the checkout
    assert tops == {*PACKAGES, "nautilus_realtime.py", f"nautilus_realtime-{__version__}.dist-info"}


def test_the_metadata_has_one_version_an_spdx_licence_and_both_entry_points(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as archive:
        dist_info = f"nautilus_realtime-{__version__}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert re.search(rf"^Version: {re.escape(__version__)}$", metadata, re.M)
    assert re.search(r"^License-Expression: Apache-2.0$", metadata, re.M)
    assert not re.search(r"^License: ", metadata, re.M)  # the deprecated table's field
    assert "nautilus = nautilus_realtime:main" in entry_points
    assert "Warning" not in built.log  # e.g. setuptools' deprecation of the licence table


def test_the_installed_wheel_migrates_a_fresh_schema(installed: Path, tmp_path: Path) -> None:
    where = run(
        installed, "python", "-c", "import realtime; print(realtime.__file__)", cwd=tmp_path
    )
    assert where.stdout.startswith(str(installed.parent)), where  # the wheel, not the checkout
    schema = f"nautilus_wheel_{secrets.token_hex(4)}"
    try:
        pending = run(installed, "nautilus", "db", "status", "--schema", schema, cwd=tmp_path)
        assert pending.returncode == 3, pending.stderr
        assert "001_partition_function.sql  pending" in pending.stdout
        migrated = run(installed, "nautilus", "db", "migrate", "--schema", schema, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        assert "applied 001, 002" in migrated.stdout
        status = run(installed, "nautilus", "db", "status", "--schema", schema, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.rstrip().endswith("up to date")
    finally:
        asyncio.run(drop_schema(schema))


async def drop_schema(schema: str) -> None:
    connection = await asyncpg.connect(TEST_DSN)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
    finally:
        await connection.close()


def test_python_dash_m_and_the_script_say_one_version(installed: Path, tmp_path: Path) -> None:
    for argv in (("python", "-m", "nautilus_realtime", "--version"), ("nautilus", "version")):
        done = run(installed, *argv, cwd=tmp_path)
        assert (done.returncode, done.stdout.strip()) == (0, f"nautilus-realtime {__version__}")


def foreign_wheel(directory: Path, distribution: str, package: str) -> Path:
    """A minimal wheel of another project that ships a top-level ``package`` too (as PyPI's
    ``realtime``, a dependency of ``supabase``, does)."""
    files = {
        f"{package}/__init__.py": b'"""Somebody else\'s package."""\n',
        f"{distribution}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n".encode()
        ),
        f"{distribution}-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{distribution}-1.0.dist-info/RECORD"
    lines = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    path = directory / f"{distribution}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(record, "\n".join([*lines, f"{record},,"]) + "\n")
    return path


@pytest.fixture
def shared_venv(built: Built, tmp_path: Path) -> Path:
    """An environment of its own: the test installs another distribution into it."""
    bin_dir = fresh_venv(tmp_path / "shared")
    pip_install(bin_dir, str(built.wheel))
    return bin_dir


def test_another_distribution_of_the_same_package_name_is_refused_in_one_line(
    shared_venv: Path, tmp_path: Path
) -> None:
    pip_install(shared_venv, str(foreign_wheel(tmp_path, "other_realtime", "realtime")))
    clash = run(shared_venv, "nautilus", "version", cwd=tmp_path)
    assert clash.returncode == 2 and clash.stdout == ""
    [line] = clash.stderr.splitlines()
    assert line.startswith(
        "nautilus: the Python package 'realtime' is also installed by the distribution"
        " other_realtime 1.0: their files overwrite each other; install Nautilus Realtime in"
        " its own virtual environment"
    )
    # uninstalling the other one takes the overwritten realtime/__init__.py with it
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(shared_venv / "python"), "uninstall",
         "--yes", "--quiet", "other_realtime"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    damaged = run(shared_venv, "nautilus", "version", cwd=tmp_path)
    assert damaged.returncode == 2
    assert "realtime/__init__.py is missing" in damaged.stderr
    assert "Traceback" not in clash.stderr + damaged.stderr


def test_a_package_shadowing_one_of_the_products_is_refused(
    installed: Path, tmp_path: Path
) -> None:
    """``python -m`` puts the current folder first on ``sys.path``: a ``protocol/`` there."""
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "__init__.py").write_text("")
    shadowed = run(installed, "python", "-m", "nautilus_realtime", "version", cwd=tmp_path)
    assert shadowed.returncode == 2
    assert f"'protocol' is imported from {tmp_path / 'protocol'}, not from" in shadowed.stderr


def test_make_up_installs_runtime_dependencies_only(tmp_path: Path) -> None:
    """What each target would run on a fresh clone (``make -n``): ``up`` installs the project
    without extras; ``test``, ``lint`` and ``bench`` add dev and load."""

    # as from a shell: under `make test` a nested make prints its directory and inherits flags
    outside_make = {
        k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    }

    def recipe(target: str) -> str:
        done = subprocess.run(
            ["make", "--no-print-directory", "-n", target, f"VENV={tmp_path / 'venv'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True, env=outside_make,
        )  # fmt: skip
        return done.stdout

    up = recipe("up")
    assert re.search(r"pip install --quiet -e \. ", up) and "[dev" not in up
    assert up.rstrip().endswith("/venv/bin/nautilus up")
    for target in ("test", "lint", "bench", "test-fast"):
        assert "-e '.[dev,load]'" in recipe(target), target

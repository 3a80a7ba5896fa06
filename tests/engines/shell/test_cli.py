from __future__ import annotations

import subprocess
import sys

import pytest

from engines.shell.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("nautilus-realtime ")


def test_config_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "NAUTILUS_HUB_PORT" in out and "NAUTILUS_MARKETDATA_SPEED" in out


def test_bad_setting_is_a_clear_error_not_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engines.shell.cli", "hub"],
        env={"NAUTILUS_HUB_PORT": "nope", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "NAUTILUS_HUB_PORT" in proc.stderr and "Traceback" not in proc.stderr


def test_db_migrate_without_dsn_explains() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engines.shell.cli", "db", "migrate"],
        env={"PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "NAUTILUS_DB_DSN" in proc.stderr

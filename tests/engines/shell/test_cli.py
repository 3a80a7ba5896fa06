from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engines.shell.cli import CHATTY_LOGGERS, configure_logging, main
from realtime.config import ConfigError


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


def test_dash_dash_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("nautilus-realtime ")


@pytest.mark.parametrize("command", [["hub"], ["engine", "marketdata"]])
def test_a_taken_port_is_one_line_naming_it(command: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "engines.shell.cli", *command, "--port", str(port)],
            env={"PATH": "", "NAUTILUS_MARKETDATA_FEED": "none"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    variable = "NAUTILUS_HUB_PORT" if command == ["hub"] else "NAUTILUS_MARKETDATA_PORT"
    assert variable in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the tests after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in chatty.items():
        logging.getLogger(name).setLevel(was)


@pytest.mark.usefixtures("restore_logging")
def test_log_level_any_case_and_a_bad_one_named() -> None:
    configure_logging({"NAUTILUS_LOG_LEVEL": "debug"})
    assert logging.getLogger().level == logging.DEBUG
    configure_logging({"NAUTILUS_LOG_LEVEL": "Warning"})
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("websockets").level == logging.WARNING  # chatty below DEBUG
    with pytest.raises(ConfigError, match="NAUTILUS_LOG_LEVEL"):
        configure_logging({"NAUTILUS_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="NAUTILUS_LOG_FORMAT"):
        configure_logging({"NAUTILUS_LOG_FORMAT": "xml"})


@pytest.mark.usefixtures("restore_logging")
def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging({"NAUTILUS_LOG_FORMAT": "json", "NAUTILUS_LOG_LEVEL": "info"})
    logging.getLogger("nautilus.test").info("hub on %d", 8600)
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == (
        "info",
        "nautilus.test",
        "hub on 8600",
    )


def test_config_json_shows_effective_values_and_their_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAUTILUS_HUB_PORT", "8700")
    monkeypatch.delenv("NAUTILUS_BUS_URL", raising=False)
    assert main(["config", "--json"]) == 0
    rows = {r["variable"]: r for r in orjson.loads(capsys.readouterr().out)}
    assert {"NAUTILUS_LOG_LEVEL", "NAUTILUS_LOG_FORMAT", "NAUTILUS_DB_DSN"} <= set(rows)
    assert (rows["NAUTILUS_HUB_PORT"]["value"], rows["NAUTILUS_HUB_PORT"]["source"]) == (
        "8700",
        "env",
    )
    assert rows["NAUTILUS_HUB_HOST"]["source"] == "default"
    assert rows["NAUTILUS_BUS_URL"]["default"] == ""  # unset = the in-process bus


def test_a_misspelt_setting_suggests_the_nearest() -> None:
    from realtime.config import load_settings
    from realtime.hub import HubConfig

    with pytest.raises(ConfigError, match="did you mean NAUTILUS_HUB_PORT"):
        load_settings(HubConfig, {"NAUTILUS_HUB_PROT": "1"}, "NAUTILUS_HUB_")


def test_backtest_runs_a_toml_config_with_a_progress_bar(tmp_path: Path) -> None:
    from engines.backtesting.core import MaCrossParams, ma_cross_path
    from engines.backtesting.history import load_bars

    config = tmp_path / "job.toml"
    config.write_text(
        'strategy = "ma_cross"\nmode = "vectorized"\nfrom = "1998-01-01"\nto = "2021-04-01"\n'
        "[params]\nfast = 10\nslow = 30\n[costs]\nfee_bps = 2.5\n"
    )
    out, report = tmp_path / "result.json", tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "engines.shell.cli", "backtest", str(config), "--out", str(out),
         "--report", str(report)],
        env={"PATH": ""}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "100.0%" in proc.stderr and "[" + "#" * 30 + "]" in proc.stderr
    result = orjson.loads(out.read_bytes())
    # the same run in this process (the core is vectorbt's from_signals: test_core)
    path = ma_cross_path(load_bars("SPY", "1d", 0, 2**62), MaCrossParams(fee_bps=2.5))
    assert result["equity"]["v"] == path.equity.tolist()
    assert len(result["fills"]) == int((path.quantity != 0).sum()) > 50
    assert result["hash"] in proc.stdout and "svg" in report.read_text()

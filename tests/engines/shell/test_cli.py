from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engines.shell.cli import CHATTY_LOGGERS, configure_logging, main
from engines.shell.platform import stop_then_force
from realtime.config import ConfigError
from tests.support import closed_port


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


@pytest.mark.parametrize("command", [["hub"], ["engine", "marketdata"]])
@pytest.mark.parametrize("bus_url", [None, "memory"])
def test_a_lone_component_on_the_in_process_bus_is_warned_once(
    command: list[str], bus_url: str | None
) -> None:
    """``nautilus hub`` / ``engine`` without NAUTILUS_BUS_URL share no bus with anyone: one
    warning line at start; ``NAUTILUS_BUS_URL=memory`` chooses that on purpose, silently. (The
    taken port ends the run right after the start.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PATH": "", "NAUTILUS_MARKETDATA_FEED": "none"}
        if bus_url is not None:
            env["NAUTILUS_BUS_URL"] = bus_url
        proc = subprocess.run(
            [sys.executable, "-m", "engines.shell.cli", *command, "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning: NAUTILUS_BUS_URL" in line]
    if bus_url is None:
        name = "nautilus hub" if command == ["hub"] else "nautilus engine marketdata"
        assert len(warnings) == 1 and warnings[0].startswith(f"{name}: warning:")
        assert "in-process bus" in warnings[0] and "NAUTILUS_BUS_URL=redis://" in warnings[0]
    else:
        assert warnings == []


def test_the_first_signal_stops_the_second_forces_the_exit() -> None:
    stop = asyncio.Event()
    exits: list[int] = []
    on_signal = stop_then_force(stop, force_exit=exits.append)
    on_signal(signal.SIGINT)
    assert stop.is_set() and exits == []
    on_signal(signal.SIGINT)
    assert exits == [130]
    stop_then_force(asyncio.Event(), force_exit=exits.append)(signal.SIGTERM)
    assert exits == [130]  # each run counts its own signals


@pytest.mark.slow
def test_a_second_ctrl_c_during_shutdown_exits_at_once_quietly() -> None:
    """``nautilus up``, Ctrl-C (a clean shutdown of about 3 s starts), Ctrl-C again: exit 130
    at once, one line, no KeyboardInterrupt traceback."""
    from engines.shell.registry import ENGINES

    env = {
        "PATH": "",
        "NAUTILUS_HUB_PORT": "0",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "engines.shell.cli", "up", "--feed", "none"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert up.stdout is not None and up.stderr is not None
        for line in up.stdout:  # the last line of the start: every engine runs
            if line.startswith("storage"):
                break
        up.send_signal(signal.SIGINT)
        stderr = []
        for line in up.stderr:  # the first signal's handler has run: the shutdown is under way
            stderr.append(line)
            if line.startswith("nautilus: stopping"):
                break
        up.send_signal(signal.SIGINT)
        _, rest_err = up.communicate(timeout=30)
    finally:
        up.kill()
        up.wait()
    stderr.append(rest_err)
    assert up.returncode == 130
    assert "nautilus: interrupted again: exiting now" in rest_err
    assert "Traceback" not in "".join(stderr) and "KeyboardInterrupt" not in "".join(stderr)


def test_up_with_postgresql_down_waits_then_says_so_in_one_line() -> None:
    """Risk and Portfolio rebuild their books from the store: with PostgreSQL unreachable for
    ``NAUTILUS_DB_START_WAIT_S``, ``nautilus up`` exits 1 naming the engine and the cause."""
    from engines.shell.registry import ENGINES

    env = {
        "PATH": "",
        "NAUTILUS_HUB_PORT": "0",
        "NAUTILUS_DB_DSN": f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
        "NAUTILUS_DB_START_WAIT_S": "0.5",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "engines.shell.cli", "up", "--feed", "none"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("nautilus up:")]
    assert line.startswith("nautilus up: cannot start engine ")
    assert ": PostgreSQL unreachable for 0.5 s (NAUTILUS_DB_START_WAIT_S): " in line


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


def test_config_refuses_a_misspelt_setting_naming_the_nearest(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAUTILUS_MARKETDATA_SPEDE", "2")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "NAUTILUS_MARKETDATA_SPEDE" in err and "did you mean NAUTILUS_MARKETDATA_SPEED?" in err
    monkeypatch.delenv("NAUTILUS_MARKETDATA_SPEDE")
    monkeypatch.setenv("NAUTILUS_TEST_DSN", "x")  # no component's prefix: not a setting
    assert main(["config"]) == 0


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

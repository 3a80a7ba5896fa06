"""``nautilus backtest CONFIG``: one backtest job from a file, in this process, with a progress
bar, for people who would rather not use REST.

CONFIG is the ``POST /backtests`` body (``jobs.BacktestBody``) as TOML (stdlib ``tomllib``) or
JSON, chosen by the file's suffix; for example::

    strategy = "ma_cross"
    mode = "vectorized"
    from = "1998-01-01"
    to = "2021-04-01"
    [grid]
    fast = [5, 10, 20]
    slow = [50, 100]
    [costs]
    fee_bps = 1.0

The job is validated as the API validates it (``jobs.parse_job``, with the limits and
strategies of ``BacktestingConfig``: its ``NAUTILUS_BACKTESTING_*`` settings in ``environ``)
and run by ``jobs.run_job``; the bar (percent, simulated time, fills so far, ETA) goes to
stderr, one summary line to stdout, the result document to ``--out`` (JSON) and the report
page to ``--report`` (HTML) when given. Exit codes: 0 done, 1 the run failed (a strategy
raised; its traceback is printed), 2 a bad config or setting (the field is named).
YAML is not read: it would need a runtime dependency (PyYAML) for what TOML already says.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec
import orjson

from engines.backtesting.jobs import BacktestBody, JobInputError, parse_job, run_job
from engines.backtesting.replay import StrategyFailed
from engines.backtesting.report import report_html
from engines.backtesting.service import BacktestingConfig
from engines.shell.config import load_config
from realtime.clock import Clock, SystemClock
from realtime.config import ConfigError

__all__ = ["ProgressBar", "read_config", "run_config"]

SUFFIXES = (".toml", ".json")


class ConfigFileError(ValueError):
    """The file cannot be read as a job; the message names the field when one is at fault."""


def read_config(path: Path) -> BacktestBody:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigFileError(f"{path}: expected a .toml or .json file")
    try:
        text = path.read_bytes()
        data = tomllib.loads(text.decode()) if suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    try:
        return msgspec.convert(data, BacktestBody)
    except msgspec.ValidationError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


class ProgressBar:
    """``[#####-----]  50.0%  sim 2013-10-07 10:30  fills 12  ETA 3s`` on one line, redrawn
    at most every ``interval_s`` (and at 100 %)."""

    def __init__(
        self, stream: TextIO, clock: Clock, *, width: int = 30, interval_s: float = 0.1
    ) -> None:
        self.stream, self.clock, self.width = stream, clock, width
        self.interval_ns = int(interval_s * 1e9)
        self.started_ns = clock.now_ns()
        self._drawn_ns = -self.interval_ns

    def update(self, fraction: float, simulated_ns: int, fills: int) -> None:
        now = self.clock.now_ns()
        if fraction < 1.0 and now - self._drawn_ns < self.interval_ns:
            return
        self._drawn_ns = now
        elapsed = (now - self.started_ns) / 1e9
        eta = f"{elapsed * (1 - fraction) / fraction:.0f}s" if fraction > 0 else "?"
        done = round(self.width * fraction)
        self.stream.write(
            f"\r[{'#' * done}{'-' * (self.width - done)}] {100 * fraction:5.1f}%  "
            f"sim {_minute(simulated_ns)}  fills {fills}  ETA {eta} "
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _minute(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M")


def run_config(
    path: str | Path,
    *,
    out: str | Path | None = None,
    report: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """Run the job in ``path``; the exit code (see the module doc)."""
    try:
        body = read_config(Path(path))
        cfg = load_config(BacktestingConfig, environ or {})
        spec = parse_job(
            body, cfg.strategy_paths(), max_grid=cfg.max_grid, max_event_grid=cfg.max_event_grid,
            max_event_bars=cfg.max_event_bars, blocks=cfg.pbo_blocks,
        )  # fmt: skip
    except (ConfigFileError, ConfigError) as exc:
        print(f"nautilus backtest: {exc}", file=stderr)
        return 2
    except JobInputError as exc:
        print(f"nautilus backtest: {exc.parameter}: {exc}", file=stderr)
        return 2
    job_id = "cli-" + hashlib.sha256(msgspec.json.encode(body)).hexdigest()[:10]
    bar = ProgressBar(stderr, SystemClock())
    try:
        result = run_job(spec, job_id, progress=bar.update, blocks=cfg.pbo_blocks)
    except StrategyFailed as exc:
        bar.close()
        print(f"nautilus backtest: the strategy failed:\n{exc}", file=stderr)
        return 1
    bar.update(1.0, int(result["equity"]["t"][-1]), len(result["fills"]))
    bar.close()
    if out is not None:
        Path(out).write_bytes(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
    if report is not None:
        Path(report).write_text(report_html(job_id, result), encoding="utf-8")
    print(summary(job_id, result), file=stdout)
    return 0


def summary(job_id: str, result: dict[str, Any]) -> str:
    stats = result["statistics"]
    line = (
        f"{job_id}: {len(result['fills'])} fills, final equity {result['equity']['v'][-1]:.2f}, "
        f"Sharpe {stats['sharpe_ratio']}, max drawdown {stats['max_drawdown']}, "
        f"best {result['best_params']}, hash {result['hash']}"
    )
    overfit = result.get("overfitting")
    if overfit:
        line += f"; Deflated Sharpe {overfit['deflated_sharpe']}, PBO {overfit['pbo']}"
    return line

"""``run_config`` (``nautilus backtest CONFIG``) in process: TOML and JSON give the same job and
result, a bad file or field is exit 2 naming it, a strategy that raises is exit 1 with its
traceback, and the progress bar reaches 100 %. (The subprocess run: tests/engines/shell.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import msgspec
import orjson
import pytest

from engines.backtesting.cli import run_config
from engines.backtesting.jobs import BacktestBody, JobSpec, parse_job, run_job
from engines.backtesting.service import BacktestingConfig

JOB = {"strategy": "ma_cross", "symbols": ["SPY"], "bars": "1d", "from": "2019-01-01",
       "to": "2021-01-01", "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 1.0}}  # fmt: skip
TOML = """strategy = "ma_cross"
symbols = ["SPY"]
bars = "1d"
from = "2019-01-01"
to = "2021-01-01"
[params]
fast = 5
slow = 20
[costs]
fee_bps = 1.0
"""
EXPLODING = {
    "NAUTILUS_BACKTESTING_STRATEGIES": json.dumps(
        {"exploding": "tests.engines.backtesting.strategies:Exploding"}
    )
}


def run(path: Path, **kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_config(path, stdout=out, stderr=err, **kwargs)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


def test_toml_and_json_run_the_same_job_as_the_api(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(TOML)
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    results = []
    for name in ("job.toml", "job.json"):
        code, out, err = run(tmp_path / name, out=tmp_path / f"{name}.out")
        assert code == 0, err
        assert "100.0%" in err and "fills" in out
        results.append(orjson.loads((tmp_path / f"{name}.out").read_bytes()))
    assert results[0] == results[1]
    cfg = BacktestingConfig()
    spec: JobSpec = parse_job(
        msgspec.convert(JOB, BacktestBody), cfg.strategy_paths(), max_grid=10,
        max_event_grid=1, max_event_bars=10**6,
    )  # fmt: skip
    assert run_job(spec, "api")["hash"] == results[0]["hash"]


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("job.yaml", "strategy: ma_cross", ".toml or .json"),
        ("job.toml", "strategy = ", "job.toml"),
        ("job.toml", TOML.replace("fast = 5", "fastest = 5"), "params.fastest"),
        ("job.toml", TOML + "[walk_forward]\ntrain = 1\ntest = 5\n", "walk_forward.train"),
        ("job.json", json.dumps({**JOB, "to": "2018-01-01"}), "to"),
        ("job.json", json.dumps({**JOB, "symbols": ["ZZZZ"]}), "symbols"),
    ],
)
def test_a_bad_config_is_exit_2_naming_the_field(
    tmp_path: Path, name: str, text: str, named: str
) -> None:
    (tmp_path / name).write_text(text)
    code, out, err = run(tmp_path / name)
    assert code == 2 and out == ""
    assert named in err and "Traceback" not in err


def test_a_strategy_that_raises_is_exit_1_with_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(json.dumps({**JOB, "strategy": "exploding", "params": {}}))
    code, _, err = run(tmp_path / "job.json", environ=EXPLODING)
    assert code == 1 and "boom in on_bar" in err and "Traceback" in err
    code, _, err = run(tmp_path / "job.json", environ={"NAUTILUS_BACKTESTING_PBO_BLOCKS": "3"})
    assert code == 2 and "pbo_blocks" in err and "Traceback" not in err

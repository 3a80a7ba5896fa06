"""``loadtest.rest_bench`` end to end, small: the embedded platform in its own process, 50 req/s
for 1 s on two engines' ``/health`` and typical query; the table and the JSON have every column
and row, and no request failed (the bench's exit status says so too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from loadtest.rest_bench import TYPICAL_QUERY

COLUMNS = ("engine", "port", "path", "req/s", "p50 ms", "p99 ms", "max ms", "errors",
           "server CPU %", "gen CPU %", "gen-bound")  # fmt: skip
ROW_KEYS = {"engine", "port", "path", "rate", "duration_s", "sent", "ok", "errors", "statuses",
            "achieved_rps", "p50_ms", "p99_ms", "max_ms", "mean_ms", "server_cpu_pct",
            "generator_cpu_pct", "generator_bound", "first_status"}  # fmt: skip


def test_two_engines_at_50_per_second(tmp_path: Path) -> None:
    out = tmp_path / "rest_latency.json"
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.rest_bench", "--rate", "50", "--duration", "1",
         "--engines", "vpin,marketdata", "--window", "09:30-09:40", "--out", str(out)],
        capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    header, rule, *lines = [line for line in done.stdout.splitlines() if line][:6]
    assert header.split("  ")[0] == "engine" and all(c in header for c in COLUMNS)
    assert set(rule) == {"-", " "}
    document = orjson.loads(out.read_bytes())
    assert document["mode"] == "embedded" and document["settings"]["rate"] == 50.0
    rows = document["rows"]
    assert [(r["engine"], r["path"]) for r in rows] == [
        ("vpin", "/health"), ("vpin", TYPICAL_QUERY["vpin"]),
        ("marketdata", "/health"), ("marketdata", TYPICAL_QUERY["marketdata"]),
    ]  # fmt: skip
    for row, line in zip(rows, lines[:4], strict=True):
        assert set(row) == ROW_KEYS
        assert row["errors"] == 0 and row["ok"] == row["sent"] == 50, row
        assert row["statuses"] == {"200": 50} and row["first_status"] == 200
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["server_cpu_pct"] >= 0 and row["generator_cpu_pct"] >= 0
        assert line.split()[:3] == [row["engine"], str(row["port"]), row["path"]]

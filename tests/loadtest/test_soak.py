"""The soak harness: a short real run of ``nautilus up --feed sim`` sampled, and its pieces.

No performance assertion: the figures are the soak's output (loadtest/README), not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest

from loadtest.soak import (
    CountingSink,
    Sample,
    _read_proc,
    parse_duration,
    platform_environ,
    read_process,
    spread,
    summary,
)
from protocol.codec import encode_data, join_batch

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_samples_the_platform_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAUTILUS_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.soak",
            "--feed",
            "sim",
            "--duration",
            "20s",
            "--interval",
            "2",
            "--subscribers",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(out.read_bytes())
    assert result["feed"] == "sim" and result["subscribers"] == 5
    assert result["exit_code"] == 0 and not result["interrupted"]
    # a handshake the busy hub answered late is retried and counted; none may stay unconnected
    assert set(result["errors"]) <= {"connect:TimeoutError"}
    assert result["closed_subscribers"] == 0 and result["subscribed_channels"] >= 5
    samples = result["samples"]
    assert len(samples) >= 5  # one at start, then every 2 s for 20 s
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert set(samples[0]) == {
        "t_s",
        "rss_bytes",
        "rss_anon_bytes",
        "rss_file_bytes",
        "cpu_pct",
        "fds",
        "threads",
        "hub_messages",
        "delivered",
        "frames",
        "open_subscribers",
    }
    assert samples[0]["cpu_pct"] is None and all(s["cpu_pct"] >= 0 for s in samples[1:])
    assert all(s["rss_bytes"] > 0 and s["fds"] > 0 and s["threads"] > 0 for s in samples)
    # jaxlib alone is tens of MB of library pages; the rest of a running platform is anonymous
    assert all(s["rss_file_bytes"] > 10**7 and s["rss_anon_bytes"] > 10**8 for s in samples)
    assert all(s["open_subscribers"] == 5 for s in samples)
    # the simulator publishes all along: the hub and the subscribers see more at every sample
    assert samples[-1]["hub_messages"] > samples[0]["hub_messages"] > 0
    assert samples[-1]["delivered"] > samples[0]["delivered"]
    summ = result["summary"]
    assert summ["rss_max_mb"] == round(max(s["rss_bytes"] for s in samples) / 1e6, 1)
    assert summ["rss_at_mb"] == {"300": None, "600": None, "1800": None}  # a 20 s run
    assert "soak: nautilus up --feed sim" in done.stdout and "RSS start" in done.stdout


def test_a_signal_ends_the_soak_early_and_still_stops_the_platform(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAUTILUS_")}
    with subprocess.Popen(
        [sys.executable, "-m", "loadtest.soak", "--feed", "sim", "--duration", "1h",
         "--interval", "1", "--subscribers", "2", "--out", str(out)],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as soak:  # fmt: skip
        assert soak.stderr is not None
        lines = iter(soak.stderr.readline, "")
        samples = (line for line in lines if line.split() and line.split()[0].isdigit())
        next(samples), next(samples)  # the platform runs and is sampled
        soak.send_signal(signal.SIGTERM)
        assert soak.wait(timeout=120) == 0
    result = orjson.loads(out.read_bytes())
    assert result["interrupted"] and result["exit_code"] == 0  # stopped cleanly, not killed
    assert len(result["samples"]) >= 2


def test_proc_reading_agrees_with_psutil() -> None:
    mine = _read_proc(os.getpid())
    proc = psutil.Process()
    assert mine.fds == proc.num_fds() and mine.threads == proc.num_threads()
    assert abs(mine.rss_bytes - proc.memory_info().rss) < 0.1 * mine.rss_bytes
    # RSS is its anonymous and file-backed parts (and shared memory, none here)
    assert abs(mine.rss_anon_bytes + mine.rss_file_bytes - mine.rss_bytes) < 0.1 * mine.rss_bytes
    assert read_process(os.getpid()).rss_file_bytes > 0
    cpu = proc.cpu_times()
    assert abs(mine.cpu_s - (cpu.user + cpu.system)) < 0.5


def test_subscribers_spread_over_every_channel_of_the_feed() -> None:
    listed = ["pnl.paper", "quotes.A", "trades.A", "trades.B", "quotes.B", "bars.1m.A"]
    plans = spread(listed, subscribers=5, each=2)
    assert plans[0] == ["trades.A", "trades.B"] and all(len(p) == 2 for p in plans)
    covered = {c for p in plans for c in p}
    assert covered == set(listed) - {"pnl.paper"}  # kinds the feed publishes, every one
    assert spread(["pnl.paper"], 2, 3) == [["pnl.paper"], ["pnl.paper"]]
    assert spread([], 2, 3) == [[], []]


def test_counting_sink_counts_messages_without_parsing() -> None:
    one = encode_data("update", "trades.A", 1, "e", 1, 2, 3, {"p": 1.0})
    sink = CountingSink()
    sink.on_payload(one)
    sink.on_payload(join_batch([one, one, one]))
    sink.on_payload(b'{"type":"heartbeat","ts":5}')
    assert (sink.frames, sink.messages) == (3, 4)
    sink.open = True
    sink.on_closed()
    assert sink.closed and not sink.open


def test_durations_ports_and_summary() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h")] == [90, 90, 600, 5400]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("ten minutes")
    env = platform_environ({"NAUTILUS_HUB_PORT": "9600"})
    assert env["NAUTILUS_HUB_PORT"] == "9600" and env["NAUTILUS_VPIN_PORT"] == "0"
    # the heap grows 10 MB/min for 5 min, then levels off; library pages come in at 2 MB/min
    anon = [(400 + 10 * min(i, 5)) * 10**6 for i in range(12)]
    file = [(100 + 2 * i) * 10**6 for i in range(12)]
    samples = [
        Sample(60.0 * i, anon[i] + file[i], anon[i], file[i], 1.0, 9, 3, 0, 0, 0, 1)
        for i in range(12)
    ]
    summ = summary(samples)
    assert summ["rss_start_mb"] == 500 and summ["rss_max_mb"] == 572
    assert summ["rss_at_mb"] == {"300": 560, "600": 570, "1800": None}
    assert summ["growth_first_third_mb_per_min"] == 12.0
    assert summ["growth_last_third_mb_per_min"] == 2.0
    assert summ["anon_growth_last_third_mb_per_min"] == 0.0  # the heap levelled off
    assert (summ["rss_file_start_mb"], summ["rss_file_end_mb"]) == (100, 122)

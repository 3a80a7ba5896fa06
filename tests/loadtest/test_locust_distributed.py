"""Locust's distributed mode against the embedded platform: a headless master expecting two
workers, two ``--worker`` processes, every user class of ``loadtest/locustfile.py`` for a few
seconds (8). Both workers must have reported stats with requests in them, and nothing failed.

The master also loads ``tests/loadtest/locust_worker_reports.py``, which writes what each worker
reported (Locust's ``worker_report`` event) to a JSON file when the master quits. Locust runs as
subprocesses: importing it here would monkey-patch this process (gevent).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.loadtest.test_locust import CHANNELS, ROOT, USERS, _stats, _wait_for_channels
from tests.support import embedded_platform, replay_environ

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust (the load extra) not installed"
)

WORKERS = 2
LOCUSTFILES = (
    f"{ROOT / 'loadtest' / 'locustfile.py'},{ROOT / 'tests/loadtest/locust_worker_reports.py'}"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _spawn(*args: str, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", LOCUSTFILES, *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def test_locust_master_and_two_workers_against_the_embedded_platform(tmp_path: Path) -> None:
    environ = replay_environ(
        "09:30",
        "09:45",
        NAUTILUS_MARKETDATA_SPEED="30",
        NAUTILUS_MARKETDATA_LOOP="true",
        NAUTILUS_MARKETDATA_DAILY="false",
    )
    reports = tmp_path / "workers.json"
    prefix = tmp_path / "run"
    async with embedded_platform(environ) as run:
        await _wait_for_channels(run.hub.port, CHANNELS, 60)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LOCUST_WS_CHANNELS": ",".join(CHANNELS),
            "NAUTILUS_LOCUST_MARKETDATA_URL": f"http://127.0.0.1:{run.engines['marketdata'].port}",
            "NAUTILUS_TEST_WORKER_REPORTS": str(reports),
        }
        port = _free_port()
        master = await _spawn(
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--expect-workers", str(WORKERS), "--expect-workers-max-wait", "30",
            "--host", f"http://127.0.0.1:{run.hub.port}", "--headless", "-u", "12", "-r", "12",
            "-t", "8s", "--csv", str(prefix), "--stop-timeout", "2", "--only-summary",
            "--exit-code-on-error", "1", *USERS,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        worker_args = ("--worker", "--master-host", "127.0.0.1", "--master-port", str(port))
        workers = [await _spawn(*worker_args, cwd=tmp_path, env=env) for _ in range(WORKERS)]
        try:
            out, _ = await asyncio.wait_for(master.communicate(), 60)
            worker_logs = [
                (await asyncio.wait_for(w.communicate(), 20))[0].decode(errors="replace")
                for w in workers
            ]
        finally:
            for process in (master, *workers):
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        log = out.decode(errors="replace")
        assert master.returncode == 0, log[-4000:]
        for worker, worker_log in zip(workers, worker_logs, strict=True):
            assert worker.returncode == 0, worker_log[-4000:]

    by_worker = json.loads(reports.read_text())
    assert len(by_worker) == WORKERS, by_worker  # two distinct workers reported to the master
    for client_id, counts in by_worker.items():
        assert counts["reports"] > 0 and counts["requests"] > 0, (client_id, counts)
        assert counts["failures"] == 0, (client_id, counts)
    assert _stats(Path(f"{prefix}_failures.csv")) == []
    by_name = {row["Name"]: row for row in _stats(Path(f"{prefix}_stats.csv"))}
    total = by_name.pop("Aggregated")
    assert int(total["Failure Count"]) == 0, total
    # the master's totals are the workers' reports summed
    assert int(total["Request Count"]) == sum(c["requests"] for c in by_worker.values())
    assert int(by_name["WS subscribe"]["Request Count"]) > 0
    assert int(by_name["WS trades.SPY"]["Request Count"]) > 0

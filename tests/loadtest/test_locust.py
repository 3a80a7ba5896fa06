"""The Locust load test runs headless against the embedded platform (``nautilus up`` on OS-chosen
ports, a short SPY window replayed in a loop) with zero failures and non-empty stats.

Locust runs as a subprocess: importing it here would monkey-patch this process (gevent).
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from engines.shell.platform import Settings, run_embedded
from engines.shell.registry import ENGINES
from engines.shell.server import RunningEngines
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.hub import Hub

# a spec check, not an import: importing locust would monkey-patch this process
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust (the load extra) not installed"
)

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ("trades.SPY", "bars.1m.SPY", "vpin.SPY")  # what the SPY replay publishes
REST_ENGINES = ("marketdata", "vpin", "features", "portfolio", "risk")
USERS = ("HubUser", "MarketDataUser", "VpinUser", "FeaturesUser", "PortfolioUser", "RiskUser")


async def _wait_for_channels(port: int, channels: tuple[str, ...], timeout_s: float) -> None:
    """Until the hub carries every channel (it knows a channel once it was published)."""
    async with asyncio.timeout(timeout_s), connect(f"ws://127.0.0.1:{port}/") as ws:
        while True:
            await ws.send(orjson.dumps({"op": "list", "id": 1}).decode())
            while (answer := orjson.loads(await ws.recv()))["type"] != "ack":
                pass
            names = {c["name"] for c in answer["available"]}
            if set(channels) <= names:
                return
            await asyncio.sleep(0.2)


def _stats(path: Path) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


async def test_locust_runs_headless_against_the_embedded_platform(tmp_path: Path) -> None:
    environ = {
        "NAUTILUS_HUB_PORT": "0",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
        "NAUTILUS_VPIN_WARMUP_SYMBOLS": "0",
        "NAUTILUS_MARKETDATA_SPEED": "30",
        "NAUTILUS_MARKETDATA_DAYS": "2013-10-07",
        "NAUTILUS_MARKETDATA_START": "09:30",
        "NAUTILUS_MARKETDATA_END": "09:45",
        "NAUTILUS_MARKETDATA_LOOP": "true",
        "NAUTILUS_MARKETDATA_DAILY": "false",
    }
    clock = SystemClock()
    ready: asyncio.Future[tuple[Hub, RunningEngines]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    platform = asyncio.create_task(
        run_embedded(
            Settings.from_env(environ), environ, bus=MemoryBus(clock=clock), clock=clock,
            out=io.StringIO(), stop=stop,
            on_ready=lambda hub, engines: ready.set_result((hub, engines)),  # type: ignore[arg-type]
        )
    )  # fmt: skip
    try:
        hub, engines = await asyncio.wait_for(ready, 120)
        await _wait_for_channels(hub.port, CHANNELS, 60)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONFAULTHANDLER": "1",
            "LOCUST_WS_CHANNELS": ",".join(CHANNELS),
            # a marketdata URL by env; the other engines are found through the hub's /status
            "NAUTILUS_LOCUST_MARKETDATA_URL": f"http://127.0.0.1:{engines['marketdata'].port}",
        }
        prefix = tmp_path / "run"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
            "--host", f"http://127.0.0.1:{hub.port}", "--headless", "-u", "12", "-r", "12",
            "-t", "5s", "--csv", str(prefix), "--ws-reconnect-s", "1.5",
            "--ws-reconnect-pause-s", "0.5", "--stop-timeout", "2",
            "--only-summary", "--exit-code-on-error", "1", *USERS,
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:  # say what locust was doing, rather than a bare timeout
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: the child dumps its stacks
            await asyncio.sleep(1)
            proc.kill()
            out, _ = await proc.communicate()
            pytest.fail("locust did not exit within 90 s:\n" + out.decode(errors="replace")[-6000:])
        log = out.decode(errors="replace")
        assert proc.returncode == 0, log[-4000:]
    finally:
        stop.set()
        assert await asyncio.wait_for(platform, 60) == 0

    stats = _stats(Path(f"{prefix}_stats.csv"))
    failures = _stats(Path(f"{prefix}_failures.csv"))
    assert failures == [], failures
    by_name = {row["Name"]: row for row in stats}
    total = by_name.pop("Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, total
    # every REST user asked its engine, and the WebSocket users subscribed (and resubscribed)
    for engine in REST_ENGINES:
        asked = sum(int(r["Request Count"]) for n, r in by_name.items() if n.startswith(engine))
        assert asked > 0, (engine, sorted(by_name))
    assert int(by_name["WS subscribe"]["Request Count"]) > 0
    # reconnects every 1.5 s, each after 0.5 s away (15 s of the replay at 30x: SPY trades in
    # every such gap), resumed trades.SPY from the last seq held: replayed, not lost
    assert int(by_name["WS trades.SPY (replay)"]["Request Count"]) > 0
    # live trades reached the clients with an end-to-end latency from ts.publish
    trades = by_name["WS trades.SPY"]
    assert int(trades["Request Count"]) > 0
    assert 0 <= float(trades["Median Response Time"]) < 5_000

"""Trade in → ``vpin.SYM`` message at a WebSocket client, in an embedded run (issue 4 figure:
p99 ≤ 5 ms).

    python -m loadtest.vpin_e2e [--seconds 10] [--rate 2000] [--out PATH]

One process on core 0 runs the in-process bus, the hub and the VPIN engine, and publishes
trades on ``trades.SPY`` at ``--rate`` with ``event_ns`` = the publish time. Small bars (5 ms)
and buckets (50 trades) make a bucket complete every ~25 ms; the engine publishes each bucket
with the ``event_ns`` of the trade that completed it. A client process on core 1 subscribes to
``vpin.SPY`` and records receipt − ``ts.event``: the whole path trade → engine → bus → hub →
socket → client.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.process import install_uvloop, pin_to_core
from loadtest.report import aligned, machine, write_results


async def client(url: str, seconds: float) -> list[int]:
    from websockets.asyncio.client import connect

    latencies: list[int] = []
    async with connect(url) as ws:
        await ws.send('{"op":"subscribe","id":1,"channels":["vpin.SPY"],"snapshot":false}')
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            now = time.time_ns()
            frame = orjson.loads(raw)
            for msg in frame["messages"] if frame["type"] == "batch" else [frame]:
                if msg["type"] == "update":
                    latencies.append(now - msg["ts"]["event"])
    return latencies


async def platform(rate: float, seconds: float) -> dict[str, Any]:
    from realtime.bus import MemoryBus
    from realtime.clock import SystemClock
    from realtime.hub import Hub, HubConfig

    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    hub = Hub(HubConfig(port=0), bus, clock=clock)
    await hub.start()
    hub.declare(["vpin.SPY", "trades.SPY"])
    proc = await asyncio.create_subprocess_exec(  # forked before JAX starts its threads
        sys.executable,
        "-m",
        "loadtest.vpin_e2e",
        "--client",
        f"ws://127.0.0.1:{hub.port}/",
        "--seconds",
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    from engines.shell.server import run_engine
    from engines.vpin.service import VpinConfig, VpinEngine

    config = VpinConfig(port=0, bar_ns=5_000_000, bucket_volume=5_000.0, window=10)
    running = await run_engine(VpinEngine(config, bus=bus, clock=clock))
    rng = np.random.default_rng(7)
    price, published = 167.0, 0
    try:
        await asyncio.sleep(0.5)  # the client connects and subscribes
        start = time.perf_counter()  # after the wait: no burst of "overdue" trades
        while proc.returncode is None and time.perf_counter() - start < seconds + 5:
            due = int((time.perf_counter() - start) * rate)
            while published < due:
                price += float(rng.choice((-0.01, 0.0, 0.01)))
                now = clock.now_ns()
                payload = {"s": "SPY", "t": now, "r": now, "p": round(price, 2), "q": 100.0}
                bus.publish_nowait("trades.SPY", payload, event_ns=now)
                published += 1
            await asyncio.sleep(0.001)
            if proc.stdout is not None and proc.stdout.at_eof():
                break
        out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
        await running.stop()
        await hub.stop()
        await bus.close()
    latencies = np.array(orjson.loads(out), dtype=np.float64) / 1e6
    pct = {
        k: round(float(np.percentile(latencies, q)), 3)
        for k, q in (("p50", 50), ("p99", 99), ("p99.9", 99.9))
    }
    return {
        "trades": published,
        "updates": len(latencies),
        **pct,
        "max": round(float(latencies.max()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.vpin_e2e")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2_000.0, help="trades per second")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    install_uvloop()
    if args.client:
        pin_to_core(1)
        sys.stdout.write(orjson.dumps(asyncio.run(client(args.client, args.seconds))).decode())
        return 0
    pin_to_core(0)
    started = dt.datetime.now(dt.UTC)
    result = asyncio.run(platform(args.rate, args.seconds))
    head = ("trade → vpin at client", "trades", "updates", "p50 ms", "p99 ms", "p99.9 ms", "max ms")
    row = (
        "embedded, hub + VPIN core 0",
        str(result["trades"]),
        str(result["updates"]),
        str(result["p50"]),
        str(result["p99"]),
        str(result["p99.9"]),
        str(result["max"]),
    )
    print(aligned(head, [row]))
    write_results(
        "vpin-e2e",
        {"started": started.isoformat(), "machine": machine(), **result},
        started,
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""REST latency over every port of the embedded platform: ``/health`` and one typical query each.

    python -m loadtest.rest_bench [--rate 1000] [--duration 10] [--engines hub,vpin,...]
                                  [--window 09:30-10:00] [--connections 8] [--out PATH]

Starts ``nautilus up`` (embedded: the hub and the thirteen engines in one process, in-process bus,
memory store) in a subprocess on free ports from the environment, replaying a short SPY window
at max speed, and waits until the hub's ``/status`` lists every engine running and the replay is
done, so the queries have data and the load is not measured against the replay. Then, one port
and one path at a time, an open-loop load at ``--rate`` requests/s for ``--duration`` seconds
(after a 1 s warm-up at a quarter of the rate): requests are due on a fixed schedule and latency
is measured from the *due* time, so a slow answer delays the requests behind it and that wait is
counted (no coordinated omission). The client is raw HTTP/1.1 on a few keep-alive connections on
uvloop, one request in flight per connection, a fixed pool of workers (no task per request).

On a machine with two or more cores the platform is pinned to core 0 and this generator to core
1. Each row reports the platform process's CPU (all engines: it is one process) and the
generator's own; a row whose generator used more than ``GENERATOR_BOUND_PCT`` of a core is marked
generator-bound (its latency and rate say more about the client than the server), as
``loadtest.fanout`` does. The hub's port is ``websockets``' HTTP, which answers
``Connection: close``: there every request opens a connection (counted in its latency). The
hub's ``/status`` asks every engine's ``/health`` per answer, so it is loaded at ``PATH_RATE``
(20/s, a dashboard's poll), not ``--rate``. A 2xx answer is a success; anything else, or a
broken connection, is an error. The typical queries are the documented reads
(``loadtest/locustfile.py`` for MarketData, VPIN, Features, Portfolio and Risk; each engine's
``api.py`` for the rest); Backtesting's is ``GET /backtests/{id}`` of a small vectorized job
posted before the load.

Distributed mode (one process per engine under the supervisor, ``/health`` on 8599) is not run
here: the same client and table apply to it, but this bench measures the embedded default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import uvloop

from engines.shell.registry import ENGINES
from loadtest.fanout import cpu_seconds
from loadtest.generator import GENERATOR_BOUND_PCT
from loadtest.http_load import LoadResult
from loadtest.process import pin_to_core
from loadtest.report import aligned, machine, write_results

SYMBOL = "SPY"
ACCOUNT = "paper"
#: One documented read per port (``{job}``: the backtest posted before the load).
TYPICAL_QUERY: dict[str, str] = {
    "hub": "/status",
    "marketdata": f"/bars?symbol={SYMBOL}&spec=1m&limit=100",
    "vpin": f"/vpin/{SYMBOL}/latest",
    "evpin": f"/evpin/{SYMBOL}/latest",
    "features": f"/features/{SYMBOL}/latest",
    "analytics": f"/analytics/{SYMBOL}",
    "strategy": "/strategy/strategies",
    "risk": f"/risk/{ACCOUNT}",
    "backtesting": "/backtests/{job}",
    "factor": "/factor/market/SPY/latest",
    "ml": "/ml/models",
    "portfolio": f"/portfolio/{ACCOUNT}/positions",
    "collateral": "/collateral/agreements",
}
#: A small job for Backtesting's typical read (vectorized, daily bars: done in about a second).
BACKTEST_JOB = {
    "strategy": "ma_cross",
    "symbols": [SYMBOL],
    "bars": "1d",
    "from": "2019-01-01",
    "to": "2021-01-01",
    "mode": "vectorized",
    "grid": {"fast": [5], "slow": [30]},
}
#: Paths loaded at their own rate, not ``--rate``: the hub's ``/status`` asks every engine's
#: ``/health`` for each answer (13 requests), so it is loaded as dashboards poll it.
PATH_RATE: dict[str, float] = {"/status": 20.0}
READY_TIMEOUT_S = 300.0


# ── the load generator ──────────────────────────────────────────────────────────────────────


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response (Content-Length or chunked body): its status, and whether the
    server keeps the connection open (not ``Connection: close``)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep_alive = 0, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive


async def open_loop(
    host: str, port: int, path: str, *, rate: float, duration_s: float, connections: int
) -> LoadResult:
    """``rate`` × ``duration_s`` GETs of ``path`` due on a fixed schedule, over ``connections``
    keep-alive connections (one worker each, one request in flight per connection)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    total = int(rate * duration_s)
    interval_ns = 1e9 / rate
    result = LoadResult()
    next_slot = 0
    start_ns = time.perf_counter_ns() + 20_000_000  # every worker connected first

    async def worker() -> None:
        nonlocal next_slot
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_slot < total:
                due = start_ns + int(next_slot * interval_ns)
                next_slot += 1
                delay = due - time.perf_counter_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                result.sent += 1
                try:
                    writer.write(request)
                    status, keep_alive = await _answer(reader)
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ValueError,
                ):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                if not keep_alive:  # the hub's port: one request per connection
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                result.record(status, time.perf_counter_ns() - due)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed_s = (time.perf_counter_ns() - start_ns) / 1e9
    return result


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    target: str,
    port: int,
    path: str,
    *,
    rate: float,
    duration_s: float,
    connections: int,
    server_pid: int,
) -> dict[str, Any]:
    """Warm-up, then one measured run with both processes' CPU over it."""
    await open_loop("127.0.0.1", port, path, rate=rate / 4, duration_s=1.0, connections=2)
    wall0, server0, own0 = time.monotonic(), cpu_seconds(server_pid), own_cpu_seconds()
    load = await open_loop(
        "127.0.0.1", port, path, rate=rate, duration_s=duration_s, connections=connections
    )
    wall = time.monotonic() - wall0
    generator_pct = round(100 * (own_cpu_seconds() - own0) / wall, 1)
    return {
        "engine": target,
        "port": port,
        "path": path,
        "rate": rate,
        "duration_s": duration_s,
        **load.summary(percentiles=(50, 99)),
        "server_cpu_pct": round(100 * (cpu_seconds(server_pid) - server0) / wall, 1),
        "generator_cpu_pct": generator_pct,
        "generator_bound": generator_pct > GENERATOR_BOUND_PCT,
    }


# ── the platform under test ─────────────────────────────────────────────────────────────────


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nothing listens on (bound together, then released)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def platform_environ(ports: dict[str, int], window: str) -> dict[str, str]:
    start, _, end = window.partition("-")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAUTILUS_")}
    environ |= {f"NAUTILUS_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    environ |= {
        "NAUTILUS_MARKETDATA_SPEED": "0",
        "NAUTILUS_MARKETDATA_DAYS": "2013-10-07",
        "NAUTILUS_MARKETDATA_START": start,
        "NAUTILUS_MARKETDATA_END": end,
        "NAUTILUS_MARKETDATA_LOOP": "false",
    }
    return environ


def http_json(url: str, body: Any = None, timeout_s: float = 5.0) -> Any:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        return orjson.loads(answer.read())


async def until_ready(hub: str, marketdata: str, process: subprocess.Popen[bytes]) -> Any:
    """The hub's ``/status`` once every engine is running and MarketData's replay is done."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nautilus up exited with {process.returncode} before ready")
        with contextlib.suppress(OSError, ValueError, KeyError):
            status = await asyncio.to_thread(http_json, hub + "/status")
            rows = status["engines"]["rows"]
            running = all(r["state"] in ("running", "degraded") for r in rows if "port" in r)
            health = await asyncio.to_thread(http_json, marketdata + "/health")
            if running and rows and health["feed"]["done"]:
                return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"the platform was not ready in {READY_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.5)


async def posted_backtest(base: str) -> str:
    job = str((await asyncio.to_thread(http_json, base + "/backtests", BACKTEST_JOB))["job"])
    deadline = time.monotonic() + 120
    while (await asyncio.to_thread(http_json, f"{base}/backtests/{job}"))["status"] != "done":
        if time.monotonic() > deadline:
            raise TimeoutError(f"backtest {job} not done in 120 s")
        await asyncio.sleep(0.2)
    return job


def first_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def bench(
    targets: Sequence[str],
    *,
    rate: float,
    duration_s: float,
    connections: int,
    window: str,
    log: Path,
) -> dict[str, Any]:
    names = ["hub", *ENGINES]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    command = [sys.executable, "-m", "engines.shell.cli", "up"]
    pinned = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1
    if pinned:
        command = ["taskset", "-c", "0", *command]
        pin_to_core(1)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=platform_environ(ports, window),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        status = await until_ready(base["hub"], base["marketdata"], process)
        job = await posted_backtest(base["backtesting"]) if "backtesting" in targets else ""
        rows = []
        for target in targets:
            for path in ("/health", TYPICAL_QUERY[target].format(job=job)):
                row = await measure(
                    target,
                    ports[target],
                    path,
                    rate=PATH_RATE.get(path, rate),
                    duration_s=duration_s,
                    connections=connections,
                    server_pid=process.pid,
                )
                row["first_status"] = await asyncio.to_thread(first_status, base[target] + path)
                rows.append(row)
                print(
                    f"{target} {path}: {row['achieved_rps']} req/s,"
                    f" p50 {_ms(row.get('p50_ms'))} ms, p99 {_ms(row.get('p99_ms'))} ms,"
                    f" {row['errors']} errors",
                    file=sys.stderr,
                    flush=True,
                )
        return {
            "mode": "embedded",
            "engines_running": status["engines"]["running"],
            "pinned": pinned,
            "rows": rows,
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ── output ──────────────────────────────────────────────────────────────────────────────────


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "engine",
        "port",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "server CPU %",
        "gen CPU %",
        "gen-bound",
    )
    lines = [
        (
            r["engine"],
            str(r["port"]),
            r["path"] if len(r["path"]) <= 40 else r["path"][:37] + "...",
            f"{r['achieved_rps']:,.0f}",
            _ms(r.get("p50_ms")),
            _ms(r.get("p99_ms")),
            _ms(r.get("max_ms")),
            str(r["errors"]),
            str(r["server_cpu_pct"]),
            str(r["generator_cpu_pct"]),
            "YES" if r["generator_bound"] else "no",
        )
        for r in rows
    ]
    return aligned(head, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.rest_bench")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s per path")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per path")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument(
        "--engines", default="", help="ports to load, comma-separated ('' = hub and every engine)"
    )
    parser.add_argument(
        "--window", default="09:30-10:00", help="SPY replay window, New York time (START-END)"
    )
    parser.add_argument("--out", default=None, help="JSON path (default: loadtest/results/)")
    args = parser.parse_args(argv)
    targets = [t for t in args.engines.split(",") if t] or ["hub", *ENGINES]
    unknown = sorted(set(targets) - set(TYPICAL_QUERY))
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(TYPICAL_QUERY)}")
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("--rate and --duration must be > 0, --connections >= 1")
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "nautilus.log"
        try:
            result = uvloop.run(
                bench(
                    targets,
                    rate=args.rate,
                    duration_s=args.duration,
                    connections=args.connections,
                    window=args.window,
                    log=log,
                )
            )
        except (RuntimeError, TimeoutError) as exc:
            print(f"rest_bench: {exc}\n{log.read_text()[-4000:]}", file=sys.stderr)
            return 1
    rows = result["rows"]
    print(table(rows))
    bound = [f"{r['engine']} {r['path']}" for r in rows if r["generator_bound"]]
    if bound:
        print(
            f"generator-bound (generator > {GENERATOR_BOUND_PCT:.0f}% CPU; latency and rate "
            f"measure the client): {', '.join(bound)}"
        )
    document = {
        "bench": "rest_latency",
        "started": started.isoformat(),
        "machine": machine(),
        "settings": {
            "rate": args.rate,
            "duration_s": args.duration,
            "connections": args.connections,
            "window": args.window,
            "generator_bound_pct": GENERATOR_BOUND_PCT,
        },
        **result,
    }
    path = write_results("rest_latency", document, started, Path(args.out) if args.out else None)
    print(f"written: {path}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

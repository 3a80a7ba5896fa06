"""MarketData figures (issue 3): replay throughput, PostgreSQL COPY ingest, REST latency.

    python -m loadtest.marketdata_bench [--quick] [--dsn DSN] [--out PATH]

* replay: every bundled SPY trade (1.89M, 5 days, 04:00-20:00) through the engine at max speed
  (normalize → 1m/5m/volume bars → bus → a draining subscriber), pinned to one core, without
  storage (the issue's pipeline) and with the memory store; best of 3. The day files are parsed
  beforehand (timed separately): "trades/s" is the pipeline, "with parse" adds the zip reading.
* copy: the same trades as ``Trade`` records written through ``PostgresStore`` (binary COPY,
  batched), from the first write until PostgreSQL has every row; a throw-away schema, dropped
  after.
* rest: ``nautilus engine marketdata`` in its own process on core 0 after replaying one day;
  open-loop load from this process on core 1 (latency from the scheduled send time).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import orjson

from engines.marketdata.feeds import lean_days, lean_tick_path, read_lean_trade_ticks
from engines.marketdata.records import TradeColumns
from engines.marketdata.service import FeedSource, MarketDataConfig, MarketDataEngine
from loadtest.http_load import run_load
from loadtest.process import pin_to_core
from loadtest.report import aligned, machine, write_results
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.storage.migrations import migrate, quote_identifier
from realtime.storage.postgres import PostgresConfig, PostgresStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class _PreParsedMarketData(MarketDataEngine):
    """The engine with its day files already parsed: times the pipeline, not the zip reader."""

    parsed: ClassVar[dict[dt.date, TradeColumns]] = {}

    def _read_spy_day(self, day: dt.date) -> TradeColumns:
        return self.parsed[day]


async def bench_replay(days: list[str], *, persist: bool, repeat: int = 3) -> dict[str, Any]:
    """Best of ``repeat`` runs (noise only ever adds time)."""
    dates = [dt.date.fromisoformat(d) for d in days]
    parse_runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        parsed = {d: read_lean_trade_ticks(lean_tick_path(d)) for d in dates}
        parse_runs.append(time.perf_counter() - started)
    _PreParsedMarketData.parsed = parsed
    n_trades = sum(len(c) for c in parsed.values())
    runs = [await _replay_once(days, persist) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["elapsed_s"])
    parse_s = min(parse_runs)
    return {
        "store": "memory" if persist else "none",
        "trades": n_trades,
        **best,
        "parse_s": round(parse_s, 3),
        "trades_per_s": round(n_trades / best["elapsed_s"]),
        "trades_per_s_with_parse": round(n_trades / (best["elapsed_s"] + parse_s)),
    }


async def _replay_once(days: list[str], persist: bool) -> dict[str, Any]:
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    received = 0
    sub = bus.subscribe(">")

    async def drain() -> None:
        nonlocal received
        while batch := await sub.next_batch(16384):
            received += len(batch)

    drainer = asyncio.create_task(drain())
    config = MarketDataConfig(
        feed=FeedSource.SPY,
        speed=0.0,
        days=tuple(days),
        start="",
        end="",
        loop=False,
        persist=persist,
    )
    engine = _PreParsedMarketData(config, bus=bus, clock=clock)
    started = time.perf_counter()
    await engine.start()
    while not engine.progress.done:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await engine.stop()
    await bus.close()
    await drainer
    return {
        "published": dict(engine.progress.published),
        "received": received,
        "elapsed_s": round(elapsed, 3),
    }


async def bench_copy(dsn: str, days: list[str]) -> dict[str, Any]:
    rows = []
    for d in days:
        columns = read_lean_trade_ticks(lean_tick_path(dt.date.fromisoformat(d)))
        rows.extend(columns.trades())
    schema = f"nautilus_bench_{secrets.token_hex(4)}"
    await migrate(dsn, schema)
    store = PostgresStore(PostgresConfig(dsn=dsn, schema=schema, max_queued_rows=len(rows) + 1))
    try:
        await store.start()
        started = time.perf_counter()
        accepted = store.write_trades(rows)
        while store.stats().rows_written < accepted:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stats = store.stats()
    finally:
        await store.close(30)
        connection = await asyncpg.connect(dsn)
        await connection.execute(f"DROP SCHEMA {quote_identifier(schema)} CASCADE")
        await connection.close()
    return {
        "rows": accepted,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(accepted / elapsed),
        "batches": stats.batches_written,
        "failed_batches": stats.batches_failed,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: dict[str, Any] = orjson.loads(r.read())
        return body


async def bench_rest(day: str, duration_s: float) -> list[dict[str, Any]]:
    port = _free_port()
    env = {
        **os.environ,
        "NAUTILUS_MARKETDATA_FEED": "spy",
        "NAUTILUS_MARKETDATA_DAYS": day,
        "NAUTILUS_MARKETDATA_SPEED": "0",
        "NAUTILUS_MARKETDATA_LOOP": "false",
        "NAUTILUS_MARKETDATA_START": "",
        "NAUTILUS_LOG_LEVEL": "WARNING",
    }
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "engines.shell.cli"]
    proc = subprocess.Popen(
        [*cmd, "engine", "marketdata", "--port", str(port)], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (await asyncio.to_thread(_get, base + "/health"))["feed"]["done"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("marketdata did not finish its replay in 120 s")
            await asyncio.sleep(0.5)
        start = dt.datetime.fromisoformat(f"{day}T00:00:00+00:00")
        end = start + dt.timedelta(days=1)
        bars = f"/bars?symbol=SPY&spec=1m&from={start.isoformat()}&to={end.isoformat()}&limit=2000"
        bars = bars.replace("+", "%2B")
        n_bars = len((await asyncio.to_thread(_get, base + bars))["items"])
        out = []
        for path, rate in (("/health", 2000.0), (bars, 200.0)):
            await run_load("127.0.0.1", port, path, rate=rate / 4, duration_s=1.0)  # warm-up
            result = await run_load("127.0.0.1", port, path, rate=rate, duration_s=duration_s)
            label = "/bars (1 day, 1m)" if path == bars else path
            out.append({"endpoint": label, "rate": rate, "bars": n_bars, **result.summary()})
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.marketdata_bench")
    parser.add_argument("--quick", action="store_true", help="one day, 3 s REST windows")
    parser.add_argument("--dsn", default=os.environ.get("NAUTILUS_DB_DSN", DEFAULT_DSN))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    days = [d.isoformat() for d in lean_days()]
    if args.quick:
        days = days[:1]
    started = dt.datetime.now(dt.UTC)
    pin_to_core(0)
    replay = [asyncio.run(bench_replay(days, persist=p)) for p in (False, True)]
    copy = asyncio.run(bench_copy(args.dsn, days))
    pin_to_core(1)
    rest = asyncio.run(bench_rest(days[0], 3.0 if args.quick else 10.0))

    print(
        aligned(
            (
                "replay, one core",
                "store",
                "trades",
                "elapsed s",
                "parse s",
                "trades/s",
                "excl. parse",
            ),
            [
                (
                    f"SPY {len(days)} day(s), max speed",
                    r["store"],
                    f"{r['trades']:,}",
                    str(r["elapsed_s"]),
                    str(r["parse_s"]),
                    f"{r['trades_per_s']:,}",
                    f"{r['trades_per_s_with_parse']:,}",
                )
                for r in replay
            ],
        )
    )
    print()
    print(
        aligned(
            ("PostgreSQL COPY", "rows", "elapsed s", "rows/s", "batches"),
            [
                (
                    "trades",
                    f"{copy['rows']:,}",
                    str(copy["elapsed_s"]),
                    f"{copy['rows_per_s']:,}",
                    str(copy["batches"]),
                )
            ],
        )
    )
    print()
    print(
        aligned(
            (
                "REST (engine core 0)",
                "rate/s",
                "ok",
                "errors",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
            ),
            [
                (
                    r["endpoint"],
                    f"{r['rate']:.0f}",
                    str(r["ok"]),
                    str(r["errors"]),
                    str(r.get("p50_ms", "-")),
                    str(r.get("p99_ms", "-")),
                    str(r.get("p99.9_ms", "-")),
                    str(r.get("max_ms", "-")),
                )
                for r in rest
            ],
        )
    )
    document = {
        "started": started.isoformat(),
        "quick": args.quick,
        "machine": machine(),
        "replay": replay,
        "copy": copy,
        "rest": rest,
    }
    write_results("marketdata", document, started, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

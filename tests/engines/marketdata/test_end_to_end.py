"""End to end: a full SPY day into real PostgreSQL and back out through REST; an embedded run
(bus + hub + engine on real ports) serving the same trades over WebSocket and REST."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import asyncpg
import orjson
import pytest
from falcon import testing
from websockets.asyncio.client import connect

from engines.marketdata import feeds
from engines.marketdata.core import SaleConditionFilter, time_bars
from engines.marketdata.normalize import trade_payloads
from engines.marketdata.records import TradeColumns
from engines.marketdata.service import MarketDataConfig, MarketDataEngine
from engines.shell import create_app, run_engine
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from realtime.hub import Hub, HubConfig
from realtime.storage.migrations import quote_identifier
from tests.support import TEST_DSN, until

DSN = TEST_DSN
DAY = date(2013, 10, 7)  # the smallest bundled day: 250,601 trades


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    """A throw-away schema; the engine itself migrates it on start."""
    schema = f"nautilus_md_{secrets.token_hex(4)}"
    yield schema

    async def drop() -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture(scope="module")
def day_ticks() -> TradeColumns:
    return feeds.read_lean_trade_ticks(feeds.lean_tick_path(DAY))


def trade_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["t"], row["p"], row["q"], row["i"], row["x"])


async def test_full_day_through_postgresql_and_rest_equals_the_feed(
    pg_schema: str, day_ticks: TradeColumns
) -> None:
    clock = SystemClock()
    config = MarketDataConfig(
        days=(DAY.isoformat(),),
        start="",
        speed=0.0,
        loop=False,
        bar_specs=("1m",),
        db_dsn=DSN,
        db_schema=pg_schema,
    )
    engine = MarketDataEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    started = time.perf_counter()
    await engine.start()
    try:
        await until(lambda: engine.progress.done, 60)
        replayed_s = time.perf_counter() - started
        expected_rows = len(day_ticks) + engine.progress.published["bars"]
        await until(lambda: engine.store.stats().rows_written == expected_rows, 60)
        stored_s = time.perf_counter() - started
        assert engine.health()["status"] == "ok"

        async with testing.ASGIConductor(create_app(engine, version="t")) as client:
            rows: list[dict[str, Any]] = []
            cursor = None
            pages = 0
            while True:
                params: dict[str, Any] = {"symbol": "SPY", "limit": 10_000}
                if cursor:
                    params["cursor"] = cursor
                result = await client.simulate_get("/trades", params=params)
                assert result.status_code == 200
                rows += result.json["items"]
                cursor = result.json["next_cursor"]
                pages += 1
                if cursor is None:
                    break
            read_s = time.perf_counter() - started - stored_s
            bars_page = await client.simulate_get(
                "/bars", params={"symbol": "SPY", "spec": "1m", "limit": 10_000}
            )
    finally:
        await engine.stop()
    print(
        f"\nfull day: {len(day_ticks)} trades replayed in {replayed_s:.2f}s, stored in "
        f"{stored_s:.2f}s, read back through REST in {read_s:.2f}s ({pages} pages)"
    )

    assert len(rows) == len(day_ticks) == 250_601
    assert pages == 26
    first, last = day_ticks.trade(0), day_ticks.trade(len(day_ticks) - 1)
    for row, trade in ((rows[0], first), (rows[-1], last)):
        assert trade_key(row) == (
            trade.event_ns,
            trade.price,
            trade.size,
            trade.sequence,
            trade.exchange,
        )
        assert row["c"] == trade.condition
    assert sum(r["q"] for r in rows) == day_ticks.size.sum()
    assert math.fsum(r["p"] * r["q"] for r in rows) == math.fsum(
        (day_ticks.price * day_ticks.size).tolist()
    )
    assert [r["i"] for r in rows] == day_ticks.sequence.tolist()
    # Through PostgreSQL and back, every /trades item is the trades.SPY payload of its trade.
    assert rows == trade_payloads(day_ticks)

    reference = time_bars(day_ticks, "1m", SaleConditionFilter.lean_default())
    ohlcv = ("t", "o", "h", "l", "c", "v")
    assert [tuple(b[k] for k in ohlcv) for b in bars_page.json["items"]] == [
        (b.start_ns, b.open, b.high, b.low, b.close, b.volume) for b in reference
    ]
    assert bars_page.json["items"] == [b.to_payload() for b in reference]


async def http_get(port: int, path: str) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_embedded_run_serves_the_same_trades_over_websocket_and_rest(
    day_ticks: TradeColumns,
) -> None:
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    hub = Hub(HubConfig(port=0, max_pending_messages=100_000), bus, clock=clock)
    config = MarketDataConfig(
        days=(DAY.isoformat(),), start="09:30", end="09:35", speed=0.0, loop=False,
        bar_specs=("1m",), port=0,
    )  # fmt: skip
    engine = MarketDataEngine(config, bus=bus, clock=clock)
    window = day_ticks.select(
        (day_ticks.event_ns >= 1381152600_000_000_000)
        & (day_ticks.event_ns < 1381152900_000_000_000)
    )
    reference_bars = time_bars(window, "1m", SaleConditionFilter.lean_default())
    await hub.start()
    hub.declare(engine.declared_channels())
    running = None
    try:
        async with connect(f"ws://127.0.0.1:{hub.port}/ws", max_size=None) as ws:
            await ws.send(
                orjson.dumps(
                    {"op": "subscribe", "id": 1, "channels": ["trades.SPY", "bars.1m.SPY"]}
                ).decode()
            )
            running = await run_engine(engine, port=0)
            trades_seen: list[dict[str, Any]] = []
            bars_seen: list[dict[str, Any]] = []
            while len(trades_seen) < len(window) or len(bars_seen) < len(reference_bars):
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                for msg in frame["messages"] if frame["type"] == "batch" else [frame]:
                    if msg["type"] != "update":
                        assert msg["type"] in ("ack", "heartbeat", "status"), msg
                        continue
                    (trades_seen if msg["channel"] == "trades.SPY" else bars_seen).append(msg)

            assert [m["seq"] for m in trades_seen] == list(range(1, len(window) + 1))
            assert [m["data"]["p"] for m in trades_seen] == window.price.tolist()
            assert [m["data"]["q"] for m in trades_seen] == window.size.tolist()
            assert [m["seq"] for m in bars_seen] == list(range(1, len(reference_bars) + 1))
            assert [m["data"] for m in bars_seen] == [b.to_payload() for b in reference_bars]

            # REST serves the same trades: seq 2001..3000 is the third page of 1000.
            await until(lambda: engine.progress.done, 10)
            status, page1 = await http_get(running.port, "/trades?symbol=SPY&limit=1000")
            status, page2 = await http_get(
                running.port, f"/trades?symbol=SPY&limit=1000&cursor={page1['next_cursor']}"
            )
            status, page3 = await http_get(
                running.port, f"/trades?symbol=SPY&limit=1000&cursor={page2['next_cursor']}"
            )
            assert status == 200
            ws_range = trades_seen[2000:3000]
            assert page3["items"] == [m["data"] for m in ws_range]  # one wire form
            status, health = await http_get(running.port, "/health")
            assert (status, health["status"], health["published"]["trades"]) == (
                200,
                "ok",
                len(window),
            )
    finally:
        if running is not None:
            await running.stop()
        await hub.stop()
        await bus.close()

"""What many tests share, written once: waiting on a condition, the test DSN, throw-away schemas.

Tests use the real PostgreSQL and Redis of the machine (``NAUTILUS_TEST_DSN``, default the local
``test`` database); a missing service fails the test, it never skips.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from protocol.records import Trade
from realtime.bus import Envelope, Subscription
from realtime.clock import ManualClock
from realtime.storage import Storage, StorageConfig, migrate
from realtime.storage.migrations import quote_identifier

TEST_DSN = os.environ.get("NAUTILUS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NAUTILUS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def closed_port() -> int:
    """A local port nothing listens on (bound for a moment, then released): connecting to it
    is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until(condition: Callable[[], object], timeout_s: float = 20.0) -> None:
    """Wait until ``condition()`` is truthy (background work), failing after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@contextmanager
def migrated_schema(prefix: str = "nautilus_test") -> Iterator[str]:
    """A new schema with every migration applied, dropped afterwards (sync: for fixtures)."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(migrate(TEST_DSN, schema))
    try:
        yield schema
    finally:

        async def drop() -> None:
            connection = await asyncpg.connect(TEST_DSN)
            try:
                await connection.execute(
                    f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"
                )
            finally:
                await connection.close()

        asyncio.run(drop())


def replay_environ(
    start: str, end: str, day: str = "2013-10-07", **settings: str
) -> dict[str, str]:
    """Settings of an embedded run on ports 0 over ``start``–``end`` of one SPY day at max
    speed, no loop; ``settings`` (full variable names) add to or override them."""
    from engines.shell.registry import ENGINES

    return {
        "NAUTILUS_HUB_PORT": "0",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
        "NAUTILUS_VPIN_WARMUP_SYMBOLS": "0",
        "NAUTILUS_MARKETDATA_SPEED": "0",
        "NAUTILUS_MARKETDATA_DAYS": day,
        "NAUTILUS_MARKETDATA_START": start,
        "NAUTILUS_MARKETDATA_END": end,
        "NAUTILUS_MARKETDATA_LOOP": "false",
        **settings,
    }


@dataclass
class EmbeddedRun:
    """A running embedded platform: its hub, engines and every bus message so far by channel."""

    hub: Any
    engines: Any
    on_bus: dict[str, list[Any]]


@asynccontextmanager
async def embedded_platform(environ: dict[str, str]) -> AsyncIterator[EmbeddedRun]:
    """``run_embedded`` on ``environ`` with every bus message recorded from before the first
    engine starts; on exit the platform must stop cleanly (exit 0)."""
    from engines.shell.platform import Settings, run_embedded
    from realtime.bus import MemoryBus
    from realtime.clock import SystemClock

    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    on_bus: dict[str, list[Any]] = collections.defaultdict(list)
    everything = bus.subscribe(">")  # before any engine: the complete record

    async def record() -> None:
        while batch := await everything.next_batch(10_000):
            for envelope in batch:
                on_bus[envelope.channel].append(envelope)

    ready: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    recorder = asyncio.create_task(record())
    platform = asyncio.create_task(
        run_embedded(
            Settings.from_env(environ), environ, bus=bus, clock=clock, out=io.StringIO(),
            stop=stop, on_ready=lambda hub, engines: ready.set_result((hub, engines)),
        )
    )  # fmt: skip
    try:
        hub, engines = await asyncio.wait_for(ready, 120)
        yield EmbeddedRun(hub, engines, on_bus)
    finally:
        stop.set()
        assert await asyncio.wait_for(platform, 60) == 0
        recorder.cancel()


async def store_trades(schema: str, trades: list[Trade]) -> None:
    """Write ``trades`` to the test database's ``schema`` as MarketData would store them."""
    clock = ManualClock(trades[0].event_ns if trades else 0)
    storage = Storage(StorageConfig(dsn=TEST_DSN, schema=schema), clock=clock)
    await storage.open()
    try:
        storage.store.write_trades(trades)
    finally:
        await storage.close(5.0)


async def take(sub: Subscription, n: int, timeout_s: float = 10.0) -> list[Envelope]:
    """The next ``n`` messages of ``sub``, failing if one batch takes longer than ``timeout_s``."""
    got: list[Envelope] = []
    while len(got) < n:
        got += await asyncio.wait_for(sub.next_batch(n - len(got)), timeout_s)
    return got

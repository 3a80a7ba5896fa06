from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.backoff import Rng
from realtime.bus.redis import RedisBus, RedisBusConfig

REDIS_URL = "redis://127.0.0.1:6379/0"

BusFactory = Callable[..., Any]


class TopDraw:
    """Backoff randomness that always draws 1.0: a reconnect waits exactly its ceiling, so a
    test can act while the subscriber is away."""

    def random(self) -> float:
        return 1.0


class RedisRelay:
    """A TCP relay in front of Redis (bound to port 0) that can break connections the way a
    crash or a network cut does, at a chosen moment of a command. redis-py 8 replaces a
    connection that Redis closed while it sat idle in the pool before using it again, so a
    ``CLIENT KILL`` between two commands goes unnoticed; a break during a command does not.

    * ``drop_next_reply()``: the next reply from Redis is dropped and its connection closed:
      Redis ran the command, the client never hears back (the case a publish retry exists for).
    * ``refusing = True``: every connection closes as soon as its client sends anything (the
      handshake included), until set back to ``False``."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 6379)) -> None:
        self.target = target
        self.refusing = False
        self.replies_to_drop = 0
        #: connections this relay closed on purpose
        self.breaks = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def drop_next_reply(self) -> None:
        self.replies_to_drop += 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _breaks_on(self, *, data_from_client: bool) -> bool:
        if data_from_client and self.refusing:
            self.breaks += 1
            return True
        if not data_from_client and self.replies_to_drop:
            self.replies_to_drop -= 1
            self.breaks += 1
            return True
        return False

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_reader, upstream = await asyncio.open_connection(*self.target)
        ends = (writer, upstream)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, up: bool) -> None:
            while data := await source.read(65536):
                if self._breaks_on(data_from_client=up):
                    break
                sink.write(data)
                await sink.drain()
            for end in ends:
                end.close()

        try:
            with contextlib.suppress(ConnectionError):
                await asyncio.gather(
                    pump(reader, upstream, True), pump(upstream_reader, writer, False)
                )
        finally:
            self._tasks.discard(task)


@pytest.fixture
async def redis_relay() -> AsyncIterator[tuple[RedisRelay, str]]:
    """A ``RedisRelay`` and the URL that reaches Redis through it."""
    relay = RedisRelay()
    url = await relay.start()
    yield relay, url
    await relay.close()


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    """A separate connection for inspecting keys and killing the bus's connections."""
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(admin: Redis) -> AsyncIterator[str]:
    """A key prefix of this test only; every key under it is deleted afterwards."""
    value = f"nautilus-test:{secrets.token_hex(4)}:"
    yield value
    keys = [key async for key in admin.scan_iter(match=f"{value}*", count=1000)]
    if keys:
        await admin.delete(*keys)


@pytest.fixture
async def bus_factory(prefix: str) -> AsyncIterator[BusFactory]:
    buses: list[RedisBus] = []

    @asynccontextmanager
    async def make(rng: Rng | None = None, **overrides: Any) -> AsyncIterator[RedisBus]:
        config = replace(RedisBusConfig(url=REDIS_URL, key_prefix=prefix), **overrides)
        bus = await RedisBus.connect(config, rng=rng)
        buses.append(bus)
        try:
            yield bus
        finally:
            await bus.close()

    yield make

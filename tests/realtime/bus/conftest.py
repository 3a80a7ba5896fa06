from __future__ import annotations

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

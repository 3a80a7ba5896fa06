from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from realtime.bus import MemoryBus
from realtime.hub import Hub, HubConfig

#: Where browser tests leave their screenshots (kept after the run, unlike ``tmp_path``):
#: ``NAUTILUS_TEST_ARTIFACTS`` or ``test-artifacts/`` at the repository root (git-ignored).
ARTIFACTS = Path(
    os.environ.get("NAUTILUS_TEST_ARTIFACTS") or Path(__file__).parents[3] / "test-artifacts"
)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact folder, ``<ARTIFACTS>/<test name>/``, created empty."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    return folder


class Client:
    """A test client that unpacks batch frames and reads with a deadline."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    async def request(self, op: str, **fields: Any) -> int:
        self.next_id += 1
        await self.ws.send(orjson.dumps({"op": op, "id": self.next_id, **fields}).decode())
        return self.next_id

    async def frame(self, timeout: float = 2.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        obj: dict[str, Any] = orjson.loads(raw)
        return obj

    async def messages(
        self, count: int, timeout: float = 2.0, skip_heartbeats: bool = True
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < count:
            obj = await self.frame(timeout)
            for msg in obj["messages"] if obj["type"] == "batch" else [obj]:
                if skip_heartbeats and msg["type"] == "heartbeat":
                    continue
                out.append(msg)
        return out

    async def reply(self, op: str, **fields: Any) -> dict[str, Any]:
        await self.request(op, **fields)
        return (await self.messages(1))[0]

    async def messages_until_reply(
        self, request_id: int, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Every message up to the one answering ``request_id`` (a frame is taken whole)."""
        got: list[dict[str, Any]] = []
        while not got or got[-1].get("id") != request_id:
            got.extend(await self.messages(1, timeout))
        return got


HubFactory = Callable[..., Any]


@pytest.fixture
async def hub_factory() -> AsyncIterator[HubFactory]:
    hubs: list[Hub] = []

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[tuple[Hub, MemoryBus]]:
        bus = MemoryBus(epoch="ep1")
        hub = Hub(replace(HubConfig(port=0, heartbeat_interval_s=30.0), **overrides), bus)
        await hub.start()
        hubs.append(hub)
        hub.declare(["trades.SPY", "quotes.SPY", "trades.QQQ"])
        try:
            yield hub, bus
        finally:
            await hub.stop()

    yield make


@asynccontextmanager
async def client(hub: Hub, path: str = "/ws", **kwargs: Any) -> AsyncIterator[Client]:
    async with connect(f"ws://127.0.0.1:{hub.port}{path}", **kwargs) as ws:
        yield Client(ws)


@asynccontextmanager
async def resume_flood(hub: Hub, loops: int) -> AsyncIterator[tuple[Client, Client]]:
    """A client that never reads and asks ``loops`` times for trades.SPY's whole history
    (subscribe resuming from seq 0, then unsubscribe), then pings; beside it a healthy client
    subscribed to trades.QQQ. Yields ``(flooder, healthy)`` with the flooder's reading still
    paused; its ping is its last request (``flooder.next_id``)."""
    async with (
        connect(f"ws://127.0.0.1:{hub.port}/", max_queue=1) as ws,
        client(hub) as healthy,
    ):
        await healthy.reply("subscribe", channels=["trades.QQQ"])
        ws.transport.pause_reading()
        flooder = Client(ws)
        resume = {"trades.SPY": {"epoch": "ep1", "seq": 0}}
        for _ in range(loops):
            await flooder.request("subscribe", channels=["trades.SPY"], resume=resume)
            await flooder.request("unsubscribe", channels=["trades.SPY"])
        await flooder.request("ping")
        yield flooder, healthy


async def settle() -> None:
    """Let the hub's consumer task run the pending fan-out."""
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)

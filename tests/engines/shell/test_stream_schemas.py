"""Real traffic against the documented schemas (protocol/schemas.py): the embedded platform
replays an hour of the bundled SPY day (09:30–10:30, speed 0) through every engine; every
message every engine published on the bus is validated, as the hub puts it on the wire (orjson:
NaN → null), against its stream kind's payload schema, and every frame a WebSocket client
receives from the hub against the protocol message schemas (with ``data`` against the kind's
payload schema). The hub's own ``GET /asyncapi.json`` is read from the running hub."""

from __future__ import annotations

import asyncio
import collections
import io
import urllib.request
from typing import Any

import jsonschema
import orjson
import pytest
from websockets.asyncio.client import connect

from engines.shell.platform import Settings, run_embedded
from engines.shell.registry import ENGINES
from engines.shell.server import RunningEngines
from protocol.channels import kind_of
from protocol.schemas import SERVER_MESSAGES, message_schema, payload_schema
from realtime.bus import Envelope, MemoryBus
from realtime.clock import SystemClock
from realtime.hub import Hub
from tests.support import until

#: Kinds an hour of SPY with the default engines must produce (the test fails if one is silent:
#: a schema never checked against real traffic is a schema nobody knows to be true).
EXPECTED_KINDS = {
    "trades", "bars", "vpin", "evpin", "features", "ml", "factor", "intents",
    "orders", "fills", "positions", "pnl", "risk", "analytics", "collateral",
}  # fmt: skip
WATCHED = (
    "trades.SPY", "bars.1m.SPY", "features.SPY", "vpin.SPY", "evpin.SPY",
    "orders.paper", "fills.paper", "positions.paper", "pnl.paper", "risk.var.paper",
    "analytics.paper", "collateral.paper",
)  # fmt: skip


def validators() -> dict[str, jsonschema.Draft202012Validator]:
    from protocol.channels import STREAM_KINDS

    out = {}
    for kind in STREAM_KINDS:
        schema = payload_schema(kind)
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


def first_errors(
    validator: jsonschema.Draft202012Validator, instance: Any, where: str
) -> list[str]:
    return [
        f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in list(validator.iter_errors(instance))[:3]
    ]


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_every_published_message_matches_its_kinds_schema() -> None:
    environ = {
        "NAUTILUS_HUB_PORT": "0",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
        "NAUTILUS_VPIN_WARMUP_SYMBOLS": "0",
        "NAUTILUS_MARKETDATA_SPEED": "0",
        "NAUTILUS_MARKETDATA_DAYS": "2013-10-07",
        "NAUTILUS_MARKETDATA_START": "09:30",
        "NAUTILUS_MARKETDATA_END": "10:30",
        "NAUTILUS_MARKETDATA_LOOP": "false",
    }
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    on_bus: dict[str, list[Envelope]] = collections.defaultdict(list)
    everything = bus.subscribe(">")  # before any engine: the complete record

    async def record() -> None:
        while batch := await everything.next_batch(10_000):
            for envelope in batch:
                on_bus[envelope.channel].append(envelope)

    ready: asyncio.Future[tuple[Hub, RunningEngines]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    recorder = asyncio.create_task(record())
    platform = asyncio.create_task(
        run_embedded(
            Settings.from_env(environ), environ, bus=bus, clock=clock, out=io.StringIO(),
            stop=stop, on_ready=lambda hub, engines: ready.set_result((hub, engines)),  # type: ignore[arg-type]
        )
    )  # fmt: skip
    frames: list[dict[str, Any]] = []
    try:
        hub, engines = await asyncio.wait_for(ready, 120)
        marketdata: Any = engines["marketdata"].engine
        url = f"http://127.0.0.1:{hub.port}/asyncapi.json"
        raw = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        asyncapi = orjson.loads(raw)
        async with connect(f"ws://127.0.0.1:{hub.port}/", max_size=None) as ws:

            async def receive() -> None:
                async for frame in ws:
                    frames.append(orjson.loads(frame))

            receiver = asyncio.create_task(receive())
            await ws.send(orjson.dumps({"op": "subscribe", "id": 1, "channels": WATCHED}).decode())
            await ws.send(orjson.dumps({"op": "list", "id": "list"}).decode())
            await ws.send(orjson.dumps({"op": "ping", "id": 3}).decode())
            await ws.send(
                orjson.dumps({"op": "subscribe", "id": 4, "channels": ["nope.X"]}).decode()
            )
            await until(lambda: marketdata.progress.done, timeout_s=150)
            await asyncio.sleep(2.0)  # the last states settle on the bus and reach the client
            latest = ["pnl.paper", "features.SPY", "vpin.SPY"]  # again: their snapshots
            await ws.send(orjson.dumps({"op": "unsubscribe", "id": 5, "channels": latest}).decode())
            await ws.send(orjson.dumps({"op": "subscribe", "id": 6, "channels": latest}).decode())
            await until(lambda: "snapshot" in str(frames[-5:]), timeout_s=10)
            receiver.cancel()
    finally:
        stop.set()
        assert await asyncio.wait_for(platform, 60) == 0
        recorder.cancel()

    assert asyncapi["asyncapi"] == "3.0.0" and asyncapi["servers"]["hub"]["protocol"] == "ws"
    by_kind = validators()
    errors: list[str] = []
    counts: collections.Counter[str] = collections.Counter()
    for name, envelopes in on_bus.items():
        kind = kind_of(name)
        for envelope in envelopes:
            wire = orjson.loads(orjson.dumps(envelope.payload))  # what the hub sends as data
            errors += first_errors(by_kind[kind], wire, f"{name} seq {envelope.seq}")
            counts[kind] += 1
        if len(errors) > 20:
            break
    assert errors == []
    assert set(counts) >= EXPECTED_KINDS, sorted(EXPECTED_KINDS - set(counts))

    server = {
        name: jsonschema.Draft202012Validator(message_schema(name)) for name in SERVER_MESSAGES
    }
    types: collections.Counter[str] = collections.Counter()
    for i, frame in enumerate(frames):
        errors += first_errors(server[frame["type"]], frame, f"frame {i} ({frame['type']})")
        if frame["type"] == "batch":
            types["batch"] += 1
        for message in frame["messages"] if frame["type"] == "batch" else [frame]:
            types[message["type"]] += 1
            if message["type"] in ("update", "snapshot"):
                validator = by_kind[kind_of(message["channel"])]
                errors += first_errors(validator, message["data"], message["channel"])
    assert errors == []
    assert {"ack", "error", "pong", "update", "snapshot", "batch"} <= set(types), types
    assert types["update"] + types["snapshot"] > 1_000, types

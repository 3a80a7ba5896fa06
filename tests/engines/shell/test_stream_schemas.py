"""Real traffic against the documented schemas (protocol/schemas.py): the embedded platform
replays an hour of the bundled SPY day (09:30–10:30, speed 0) through every engine; every
message every engine published on the bus is validated, as the hub puts it on the wire (orjson:
NaN → null), against its stream kind's payload schema, and every frame a WebSocket client
receives from the hub against the protocol message schemas (with ``data`` against the kind's
payload schema). The hub's own ``GET /asyncapi.json`` is read from the running hub. Every
channel published on the bus was declared to the hub before the first message (issue 14: a
client may subscribe to any of them at once).

The SPY replay carries no quote, book, denial, margin call or backtest: a second run, on the
bundled Binance BTCUSDT feed (trades, quotes, depth), provokes the rest through the engines' REST
APIs and checks every bus message the same way."""

from __future__ import annotations

import asyncio
import collections
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import jsonschema
import orjson
import pytest
from websockets.asyncio.client import connect

from protocol.channels import kind_of
from protocol.schemas import SERVER_MESSAGES, message_schema, payload_schema
from realtime.hub import Hub
from tests.support import embedded_platform, replay_environ, until

#: Kinds an hour of SPY with the default engines must produce (the test fails if one is silent:
#: a schema never checked against real traffic is a schema nobody knows to be true).
EXPECTED_KINDS = {
    "trades", "bars", "vpin", "evpin", "features", "ml", "factor", "intents",
    "orders", "fills", "positions", "pnl", "risk", "analytics", "collateral",
}  # fmt: skip
WATCHED = (
    "trades.SPY", "bars.1m.SPY", "features.SPY", "vpin.SPY", "evpin.SPY",
    "orders.paper", "fills.paper", "positions.paper", "pnl.paper", "risk.var.paper",
    "analytics.paper", "collateral.paper", "factor.market.SPY", "ml.logistic.SPY",
    "ml.linear.SPY", "ml.hoeffding_tree.SPY", "ml.bagging.SPY",
)  # fmt: skip

#: Kinds whose channels cannot be known at start, so published undeclared (subscribing before
#: the first message answers unknown_channel): ``backtest.<job>``, the job id is made per POST.
UNDECLARED_KINDS = {"backtest"}


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


def wire(envelope: Any) -> Any:
    """A bus message's payload as the hub sends it as ``data`` (orjson: NaN → null)."""
    return orjson.loads(orjson.dumps(envelope.payload))


def bus_errors(on_bus: Mapping[str, list[Any]]) -> tuple[list[str], collections.Counter[str]]:
    """Every bus message checked, as the hub puts it on the wire, against its kind's payload
    schema: the first errors (stopping past 20) and the messages per kind."""
    by_kind = validators()
    errors: list[str] = []
    counts: collections.Counter[str] = collections.Counter()
    for name, envelopes in on_bus.items():
        kind = kind_of(name)
        for envelope in envelopes:
            errors += first_errors(by_kind[kind], wire(envelope), f"{name} seq {envelope.seq}")
            counts[kind] += 1
        if len(errors) > 20:
            break
    return errors, counts


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_every_published_message_matches_its_kinds_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = replay_environ("09:30", "10:30")
    frames: list[dict[str, Any]] = []
    declared: set[str] = set()
    #: messages the hub had taken from the bus at each ``declare`` (0: before the first)
    seen_at_declare: list[int] = []
    declare = Hub.declare

    def recording_declare(hub: Hub, names: Any) -> None:
        names = list(names)
        declared.update(names)
        seen_at_declare.append(hub.stats.messages_in)
        declare(hub, names)

    monkeypatch.setattr(Hub, "declare", recording_declare)
    async with embedded_platform(environ) as run:
        hub, engines, on_bus = run.hub, run.engines, run.on_bus
        declared_at_ready = set(declared)
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

    # every channel seen on the bus was declared before the first message, save the job kinds
    assert seen_at_declare and set(seen_at_declare) == {0}, seen_at_declare
    assert declared == declared_at_ready  # nothing declared after the start
    undeclared = {name for name in on_bus if kind_of(name) not in UNDECLARED_KINDS} - declared
    assert undeclared == set(), sorted(undeclared)

    assert asyncapi["asyncapi"] == "3.0.0" and asyncapi["servers"]["hub"]["protocol"] == "ws"
    by_kind = validators()
    errors, counts = bus_errors(on_bus)
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
    # every watched channel reached the client (the factor model and all four ML models too)
    updated = {m["channel"] for f in frames for m in (f["messages"] if f["type"] == "batch" else [f])
               if m["type"] == "update"}  # fmt: skip
    assert set(WATCHED) <= updated, sorted(set(WATCHED) - updated)


# ── the kinds the SPY replay never carries ───────────────────────────────────────────────────

#: Kinds the Binance run must carry besides what the SPY replay checks. ``signals`` is left
#: out: only the example engine (engines/example, not in the registry) publishes it, so no
#: ``nautilus up`` run carries one.
PROVOKED_KINDS = {"quotes", "book", "risk.denials", "collateral.calls", "backtest"}
#: One strategy on BTCUSDT on an account halted from the start: its first intent is denied.
BTC_STRATEGY = "btc_guard"
BTC_STRATEGIES = orjson.dumps([{
    "name": BTC_STRATEGY, "path": "engines.strategy.strategies:VpinGuard", "account": "paper",
    "symbols": ["BTCUSDT"], "params": {"quantity": 1},
}]).decode()  # fmt: skip
TINY_BACKTEST = {"strategy": "ma_cross", "mode": "vectorized", "symbols": ["SPY"], "bars": "1d",
                 "from": "2020-01-01", "to": "2021-01-01"}  # fmt: skip


def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON answer) of one request to a running engine (blocking: run it in a thread)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=orjson.dumps(body),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_quotes_book_denials_calls_and_backtests_match_their_schemas() -> None:
    environ = replay_environ(
        "",
        "",
        NAUTILUS_MARKETDATA_FEED="binance",
        NAUTILUS_STRATEGY_STRATEGIES=BTC_STRATEGIES,
        NAUTILUS_RISK_TRADING_STATE="halted",  # before the first bar: no race with the feed
    )
    async with embedded_platform(environ) as run:
        engines, on_bus = run.engines, run.on_bus

        async def call(name: str, method: str, path: str, body: Any = None) -> Any:
            status, answer = await asyncio.to_thread(http, engines[name].port, method, path, body)
            assert status in (200, 202), (name, method, path, status, answer)
            return answer

        # an exposure past the MTA at the first valuation issues a call
        await call("collateral", "POST", "/collateral/paper/exposure", {"exposure": 2.5e6})
        job = (await call("backtesting", "POST", "/backtests", TINY_BACKTEST))["job"]
        progress = on_bus[f"backtest.{job}"]
        marketdata: Any = engines["marketdata"].engine
        await until(lambda: marketdata.progress.done, timeout_s=60)
        ended = ("done", "failed", "cancelled")
        await until(lambda: progress and wire(progress[-1])["status"] in ended, timeout_s=60)
        await until(lambda: on_bus["risk.denials.paper"], timeout_s=10)

    errors, counts = bus_errors(on_bus)
    assert errors == []
    assert set(counts) >= PROVOKED_KINDS, (sorted(PROVOKED_KINDS - set(counts)), counts)
    assert wire(progress[-1])["status"] == "done", wire(progress[-1])  # with its result
    assert wire(on_bus["risk.denials.paper"][0])["reason"] == "halted"
    assert wire(on_bus["collateral.calls.paper"][0])["to_state"] == "issued"

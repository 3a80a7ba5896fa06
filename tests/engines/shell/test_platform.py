"""`nautilus up` end to end: the real CLI process, the bundled SPY replay, a WebSocket client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import orjson
from websockets.asyncio.client import connect

from protocol.sequence import SeqTracker
from tests.support import until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(url: str, deadline: float) -> bytes:
    while True:
        try:
            return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=1).read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_nautilus_up_streams_real_spy_trades_in_order() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "NAUTILUS_HUB_PORT": str(port),
        "NAUTILUS_MARKETDATA_SPEED": "50",
        # engines get ports from the OS so a test never collides with a running platform
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ("marketdata", "vpin", "evpin")},
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - a real `nautilus up` process
        [sys.executable, "-m", "engines.shell.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        health = orjson.loads(
            await _wait_http(f"http://127.0.0.1:{port}/health", time.monotonic() + 60)
        )
        assert health["status"] == "ok"
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send('{"op":"subscribe","id":1,"channels":["trades.SPY"]}')
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "ack" and ack["channels"] == ["trades.SPY"]
            tracker, trades = SeqTracker(), []
            while len(trades) < 200:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                for msg in frame["messages"] if frame["type"] == "batch" else [frame]:
                    if msg["type"] == "update":
                        tracker.observe(msg["epoch"], msg["seq"])
                        trades.append(msg["data"])
        assert tracker.missing == 0 and tracker.duplicates == 0
        # real SPY prints of 7 Oct 2013 from 09:30 New York (13:30 UTC): price and time sane
        assert all(160 < t["p"] < 175 and t["s"] == "SPY" for t in trades)
        first_utc = time.gmtime(trades[0]["t"] / 1e9)
        assert (first_utc.tm_year, first_utc.tm_mon, first_utc.tm_mday) == (2013, 10, 7)
        assert (first_utc.tm_hour, first_utc.tm_min) >= (13, 30)
        assert [t["t"] for t in trades] == sorted(t["t"] for t in trades)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert f"ws://127.0.0.1:{port}/" in out.decode()


async def test_every_consumer_sees_the_feed_from_its_first_trade() -> None:
    """Embedded start order: consumers subscribe before the feed publishes (registry order)."""
    from engines.shell.platform import Settings, run_embedded
    from engines.shell.registry import ENGINES
    from engines.shell.server import RunningEngines
    from realtime.http import get_json
    from realtime.hub import Hub

    environ = {
        "NAUTILUS_HUB_PORT": "0",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
        "NAUTILUS_VPIN_WARMUP_SYMBOLS": "0",
        "NAUTILUS_MARKETDATA_SPEED": "0",
        "NAUTILUS_MARKETDATA_DAYS": "2013-10-07",
        "NAUTILUS_MARKETDATA_START": "09:30",
        "NAUTILUS_MARKETDATA_END": "09:35",
        "NAUTILUS_MARKETDATA_LOOP": "false",
    }
    ready: asyncio.Future[RunningEngines] = asyncio.get_running_loop().create_future()

    hub_port: list[int] = []

    def on_ready(hub: Hub, engines: RunningEngines | None) -> None:
        assert engines is not None
        hub_port.append(hub.port)
        ready.set_result(engines)

    stop = asyncio.Event()
    with io.StringIO() as out:
        task = asyncio.create_task(
            run_embedded(Settings.from_env(environ), environ, out=out, stop=stop, on_ready=on_ready)
        )
        try:
            running = await asyncio.wait_for(ready, 60)
            # GET /status on the hub: every registered engine up, counted, not written
            status = (await get_json(f"http://127.0.0.1:{hub_port[0]}/status", timeout_s=5)).body
            rows = {r["name"]: r for r in status["engines"]["rows"]}
            assert {n for n, r in rows.items() if r["state"] in ("running", "degraded")} == set(
                ENGINES
            ), rows
            assert status["summary"].startswith(f"engines {len(ENGINES)}/{len(ENGINES)} running")
            assert status["ok"] is True and status["bus"]["kind"] == "memory"
            assert status["hub"]["state"] == "running" and status["storage"]["state"] == "running"
            md: Any = running["marketdata"].engine
            while not md.progress.done:  # noqa: ASYNC110 - the engine exposes no event for it
                await asyncio.sleep(0.1)
            published = md.progress.published["trades"]
            assert published > 5_000
            for name in ("vpin", "evpin"):  # each consumer, once it has drained the bus
                counts = running[name].engine.calculators["SPY"].counts  # type: ignore[attr-defined]

                def seen(c: Any = counts) -> int:
                    return int(c.accepted + c.bad_size + c.bad_price + c.late)

                await until(lambda: seen() >= published, timeout_s=30)
                assert seen() == published, name
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0


def declared_at_start(environ: dict[str, str]) -> set[str]:
    """What ``run_embedded`` declares to the hub before the first message, for ``environ``."""
    from engines.shell.platform import accounts, feed_symbols, per_key_channels
    from engines.shell.registry import ENGINES, engine_spec, start_order
    from engines.shell.server import build_engine
    from realtime.bus import MemoryBus
    from realtime.clock import ManualClock

    clock = ManualClock(0)
    bus = MemoryBus(clock=clock)
    built = [
        build_engine(engine_spec(name), environ, bus=bus, clock=clock)
        for name in start_order(ENGINES)
    ]
    own = [name for engine in built for name in engine.declared_channels()]
    return {*own, *per_key_channels(built, feed_symbols(own), accounts(own))}


def test_every_default_channel_is_declared_at_start() -> None:
    """Issue 14: with default settings the hub knows every channel the engines will publish,
    the two-parameter ``ml.<model>.<SYM>`` and ``factor.<model>.<SYM>`` included, and none the
    SPY replay never publishes (it has no quotes and no book)."""
    declared = declared_at_start({})
    per_symbol = {"features", "vpin", "evpin", "factor.market", "analytics"}
    models = ("logistic", "linear", "hoeffding_tree", "bagging")
    assert {f"{kind}.SPY" for kind in per_symbol} <= declared
    assert {f"ml.{model}.SPY" for model in models} <= declared
    assert {"trades.SPY", "bars.1m.SPY", "analytics.paper", "pnl.paper"} <= declared
    assert not {"quotes.SPY", "book.SPY"} & declared
    # a job's channel is made per request: nothing of the kind is known at start
    assert not [name for name in declared if name.startswith("backtest.")]


def test_binance_feed_keeps_its_quotes_and_book() -> None:
    declared = declared_at_start({"NAUTILUS_MARKETDATA_FEED": "binance"})
    assert {"trades.BTCUSDT", "quotes.BTCUSDT", "book.BTCUSDT"} <= declared
    assert {"vpin.BTCUSDT", "ml.logistic.BTCUSDT", "factor.market.BTCUSDT"} <= declared
    # the one SPY name left is Analytics' benchmark, which that engine declares itself
    assert {name for name in declared if name.endswith(".SPY")} <= {"analytics.SPY"}


def test_per_key_channels_fills_only_the_wildcards_it_can_know() -> None:
    """A ``symbol`` takes every feed symbol and a ``key`` every symbol and account; an account,
    job, agreement or model wildcard is left to its engine (or its first message)."""
    from engines.shell.lifecycle import StreamInfo
    from engines.shell.platform import per_key_channels
    from protocol.channels import delivery_of

    class Consumer:
        name = "consumer"  # not in the registry: not a feed

        def streams(self) -> list[StreamInfo]:
            patterns = (
                "ml.logistic.*", "analytics.*", "bars.5m.*", "backtest.*", "orders.*",
                "risk.var.*", "collateral.calls.*", "intents.ma_cross", "factor.*.*",
            )  # fmt: skip
            return [StreamInfo(p, delivery_of(p.replace("*", "X")), "") for p in patterns]

    engine: Any = Consumer()
    assert sorted(per_key_channels([engine], ["SPY", "QQQ"], ["paper"])) == sorted([
        "ml.logistic.SPY", "ml.logistic.QQQ",
        "analytics.SPY", "analytics.QQQ", "analytics.paper",
        "bars.5m.SPY", "bars.5m.QQQ",
    ])  # fmt: skip

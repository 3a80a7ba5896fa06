"""Distributed mode through real processes on the real Redis: bus selection, Redis unreachable at
start, ``nautilus up --distributed`` with two hubs, and a client resuming on hub B after hub A
with nothing lost (checked against the Redis stream itself)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from engines.marketdata.service import MarketDataConfig
from engines.shell.platform import FEED_RANK, HUB_RANK, distributed_children
from realtime.bus.redis import RedisBusConfig, RedisKeys, decode_message
from realtime.config import ConfigError
from realtime.distributed import choose_bus, distributed_bus

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the hubs' layout: 8600, 8601, ...)."""
    while True:
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            base = int(first.getsockname()[1])
            try:
                for i in range(1, count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", base + i))
            except OSError:
                continue
            return base


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    return free_port()


# --- processes -----------------------------------------------------------------------------------


class Process:
    """A real ``nautilus`` process in its own process group, output in a file."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "engines.shell.cli", *argv],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.extra_groups: set[int] = set()  # the supervisor's children, noted from /health

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait, then SIGKILL the group (and any noted child group); the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.popen.wait, timeout_s)
        for group in {self.popen.pid, *self.extra_groups}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        code = self.popen.wait()
        self._out.close()
        return code


@contextlib.asynccontextmanager
async def nautilus(
    argv: Sequence[str], env: Mapping[str, str], log: Path
) -> AsyncIterator[Process]:
    process = Process(argv, env, log)
    try:
        yield process
    finally:
        await process.terminate()


async def http_json(url: str, timeout_s: float = 20.0) -> Any:
    """GET ``url`` (retrying until it answers) and decode its JSON."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read())
            return orjson.loads(body)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def supervisor_health(
    process: Process, port: int, ready: bool = True, timeout_s: float = 25.0
) -> dict[str, Any]:
    """The supervisor's /health, once every child runs (``ready``); notes children to kill."""
    deadline = time.monotonic() + timeout_s
    while True:
        health: dict[str, Any] = await http_json(f"http://127.0.0.1:{port}/health", timeout_s)
        process.extra_groups |= {c["pid"] for c in health["children"] if c["pid"]}
        if not ready or health["status"] == "ok":
            return health
        assert time.monotonic() < deadline, f"children not running: {health}\n{process.output}"
        await asyncio.sleep(0.1)


async def engine_state(url: str, engine: str, state: str, timeout_s: float = 30.0) -> Any:
    """The hub's /status once ``engine``'s row is in ``state``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await http_json(url)
        rows = {r["name"]: r for r in status["engines"]["rows"]}
        if rows[engine]["state"] == state:
            return status
        assert time.monotonic() < deadline, f"{engine} never {state}: {rows[engine]}"
        await asyncio.sleep(0.1)


# --- Redis keys ----------------------------------------------------------------------------------


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test only (``NAUTILUS_BUS_KEY_PREFIX``); its keys deleted after."""
    prefix = f"nautilus-test:{secrets.token_hex(4)}:"
    yield prefix
    admin = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


# --- WebSocket clients ---------------------------------------------------------------------------


async def receive(ws: ClientConnection, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The messages of the next frame (batches unpacked, heartbeats dropped)."""
    frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    messages = frame["messages"] if frame["type"] == "batch" else [frame]
    return [m for m in messages if m["type"] != "heartbeat"]


async def request(ws: ClientConnection, op: str, **fields: Any) -> dict[str, Any]:
    """Send one request; return its reply (data that arrives first is skipped)."""
    request_id = secrets.randbelow(1 << 30)
    await ws.send(orjson.dumps({"op": op, "id": request_id, **fields}).decode())
    while True:
        for message in await receive(ws):
            if message.get("id") == request_id:
                return message


async def wait_for_channel(url: str, channel: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The hub's ``list`` entry for ``channel`` once its first message reached the hub."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with connect(url) as ws:
                reply = await request(ws, "list")
        except OSError:  # the hub is not listening yet
            reply = {}
        found = [c for c in reply.get("available") or [] if c["name"] == channel]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"{channel} never reached {url}"
        await asyncio.sleep(0.1)


# --- tests ---------------------------------------------------------------------------------------


def test_bus_choice_reads_one_variable() -> None:
    assert choose_bus({}).redis is None
    assert choose_bus({"NAUTILUS_BUS_URL": "memory"}).shared is False
    choice = choose_bus({"NAUTILUS_BUS_URL": "redis://h:6380/2", "NAUTILUS_BUS_KEY_PREFIX": "p:"})
    assert choice.redis == RedisBusConfig(url="redis://h:6380/2", key_prefix="p:")
    with pytest.raises(ConfigError) as caught:
        choose_bus({"NAUTILUS_BUS_URL": "kafka://x"})
    assert caught.value.variable == "NAUTILUS_BUS_URL"
    with pytest.raises(ConfigError) as typo:  # a typo is an error even on the in-process bus
        choose_bus({"NAUTILUS_BUS_KEYPREFIX": "p:"})
    assert typo.value.variable == "NAUTILUS_BUS_KEYPREFIX"
    with pytest.raises(ConfigError):
        distributed_bus({"NAUTILUS_BUS_URL": "memory"})
    assert distributed_bus({}).url == RedisBusConfig().url


def test_layout_hubs_on_consecutive_ports_feed_engine_last() -> None:
    env = {"NAUTILUS_HUB_PORT": "9600", "NAUTILUS_MARKETDATA_PORT": "9800", "OTHER": "x"}
    children = distributed_children(
        env, RedisBusConfig(url="redis://h:1/0"), hubs=3, engines=["marketdata"], python="py"
    )
    assert [(c.name, c.port, c.rank) for c in children] == [
        ("hub-0", 9600, HUB_RANK),
        ("hub-1", 9601, HUB_RANK),
        ("hub-2", 9602, HUB_RANK),
        ("marketdata", 9800, FEED_RANK),
    ]
    assert children[1].env["NAUTILUS_HUB_PORT"] == "9601"
    assert children[3].argv == (
        "py",
        "-m",
        "engines.shell.cli",
        "engine",
        "marketdata",
        "--port",
        "9800",
    )
    assert all(c.env["NAUTILUS_BUS_URL"] == "redis://h:1/0" for c in children)
    assert all("OTHER" not in c.env for c in children)
    with pytest.raises(LookupError):
        distributed_children(env, RedisBusConfig(), hubs=1, engines=["nope"])


async def test_unreachable_redis_is_a_clear_error_for_every_process(tmp_path: Path) -> None:
    url = f"redis://:secret@127.0.0.1:{closed_port()}/0"
    env = {
        "NAUTILUS_BUS_URL": url,
        "NAUTILUS_BUS_CONNECT_TIMEOUT_S": "1",
        "NAUTILUS_HUB_PORT": str(free_port()),
        "NAUTILUS_MARKETDATA_PORT": str(free_port()),
        "NAUTILUS_SUPERVISOR_PORT": str(free_port()),
    }
    commands = {
        "hub": ["hub"],
        "engine": ["engine", "marketdata"],
        "supervisor": ["up", "--distributed"],
    }
    processes = {k: Process(argv, env, tmp_path / f"{k}.log") for k, argv in commands.items()}
    started = time.monotonic()
    try:
        while any(p.popen.poll() is None for p in processes.values()):
            assert time.monotonic() - started < 20, "a process hangs on an unreachable Redis"
            await asyncio.sleep(0.05)
    finally:
        codes = {k: await p.terminate(timeout_s=0.1) for k, p in processes.items()}
    shown = url.replace(":secret@", ":***@")
    for name, process in processes.items():
        assert codes[name] == 1, process.output
        assert f"bus unavailable at {shown}" in process.output, process.output
        assert "secret" not in process.output and "Traceback" not in process.output


async def test_client_resumes_on_hub_b_after_hub_a_with_nothing_lost(
    tmp_path: Path, redis_prefix: str
) -> None:
    hub_port, supervisor_port = free_ports(2), free_port()
    env = {
        "NAUTILUS_BUS_URL": REDIS_URL,
        "NAUTILUS_BUS_KEY_PREFIX": redis_prefix,
        "NAUTILUS_HUB_PORT": str(hub_port),
        "NAUTILUS_SUPERVISOR_PORT": str(supervisor_port),
        "NAUTILUS_MARKETDATA_PORT": str(free_port()),
        "NAUTILUS_MARKETDATA_FEED": "sim",
        "NAUTILUS_MARKETDATA_SIM_SYMBOLS": "2",
        "NAUTILUS_MARKETDATA_SIM_RATE": "400",
    }
    symbol = MarketDataConfig(sim_symbols=2).simulator().symbols()[0]
    channel = f"trades.{symbol}"
    hub_a, hub_b = (f"ws://127.0.0.1:{hub_port + i}/ws" for i in (0, 1))
    argv = ["up", "--distributed", "--hubs", "2", "--engines", "marketdata"]
    async with nautilus(argv, env, tmp_path / "supervisor.log") as platform:
        health = await supervisor_health(platform, supervisor_port)
        assert [c["name"] for c in health["children"]] == ["hub-0", "hub-1", "marketdata"]
        await wait_for_channel(hub_a, channel)
        updates: list[dict[str, Any]] = []
        async with connect(hub_a) as ws:
            ack = await request(ws, "subscribe", channels=[channel])
            assert ack["type"] == "ack", ack
            while len(updates) < 20:
                updates += [m for m in await receive(ws) if m["type"] == "update"]
        on_a = len(updates)
        position = {"epoch": updates[-1]["epoch"], "seq": updates[-1]["seq"]}
        await asyncio.sleep(0.5)  # the feed goes on while the client moves
        statuses: list[dict[str, Any]] = []
        async with connect(hub_b) as ws:
            ack = await request(ws, "subscribe", channels=[channel], resume={channel: position})
            assert ack["recovery"][channel]["recovered"] is True, ack
            while len(updates) < on_a + 40:
                for message in await receive(ws):
                    if message["type"] == "update":
                        updates.append(message)
                    else:
                        statuses.append(message)
        # the hub's /status shows the engine; SIGKILLed it shows down, then running again once
        # the supervisor has restarted it
        status_url = f"http://127.0.0.1:{hub_port}/status"
        await engine_state(status_url, "marketdata", "running")
        killed = next(c["pid"] for c in health["children"] if c["name"] == "marketdata")
        os.kill(killed, signal.SIGKILL)
        down = await engine_state(status_url, "marketdata", "down")
        assert down["engines"]["running"] == 0 and down["ok"] is False
        assert "unreachable" in down["engines"]["rows"][0]["reason"]
        back = await engine_state(status_url, "marketdata", "running")
        assert back["ok"] is True and back["summary"].startswith("engines 1/1 running")
        await supervisor_health(platform, supervisor_port)  # note the new pid for cleanup
        exit_code = await platform.terminate()
    assert exit_code == 0, platform.output
    assert [s["state"] for s in statuses] == ["recovered"]
    seqs = [u["seq"] for u in updates]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost, nothing twice
    assert {u["epoch"] for u in updates} == {position["epoch"]}
    # what the client got on both hubs is what Redis stored for those seqs
    admin = Redis.from_url(REDIS_URL)
    try:
        stream = RedisKeys(redis_prefix, None).stream(channel)
        entries: Any = await admin.xrange(stream, f"{seqs[0]}-0", f"{seqs[-1]}-0")
    finally:
        await admin.aclose()
    stored = [decode_message(fields[b"m"]) for _, fields in entries]
    assert [(e.seq, e.payload) for e in stored] == [(u["seq"], u["data"]) for u in updates]
    # ordered shutdown: the feed engine stopped before the hubs
    log = platform.output
    assert log.index("marketdata stopped") < log.index("hub-0 stopped")
    assert log.index("marketdata stopped") < log.index("hub-1 stopped")

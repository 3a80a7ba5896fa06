"""The README's quick start, run as a user runs it: ``nautilus up`` in its own process, then a plain
``websockets`` client sending the README's subscribe message verbatim.

Ports come from the environment (every component on a free port, so a running platform on the
default ports does not matter). The replay runs at ``--speed 10``: at 1× the first VPIN bucket
(ELO's 2,514,583 shares, SPY's first three minutes of 7 Oct 2013) arrives ~3 minutes after the
replay starts, and the first 1-minute bar after one (measured: trades 16 s after launch, the first
bar at 76 s, the first ``vpin.SPY`` at 196 s), which no quick test waits for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from engines.shell.registry import ENGINES

#: README, "Quick start": the message to send once connected (verbatim)
README_SUBSCRIBE = '{"op":"subscribe","id":1,"channels":["trades.SPY","bars.1m.SPY","vpin.SPY"]}'
#: what runs after ``make up``'s install: ``nautilus up``, at ten times the recorded pace
QUICK_START = ("up", "--speed", "10")
#: seconds from launch: the hub answering, then each channel's first data
HUB_UP_S = 20.0
TRADES_S = 45.0
VPIN_S = 60.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nothing listens on (bound together, then released)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def nautilus() -> list[str]:
    """The installed console script, or its ``python -m`` equivalent."""
    script = Path(sys.executable).with_name("nautilus")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engines.shell.cli"]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, float]]:
    hub_port, *engine_ports = free_ports(1 + len(ENGINES))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAUTILUS_")}
    environ["NAUTILUS_HUB_PORT"] = str(hub_port)
    for name, port in zip(ENGINES, engine_ports, strict=True):
        environ[f"NAUTILUS_{name.upper()}_PORT"] = str(port)
    log = tmp_path / "nautilus.log"
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            [*nautilus(), *QUICK_START], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process, hub_port, log, started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def hub_connection(port: int, deadline: float) -> ClientConnection:
    """Connect as the README does (``ws://HOST:PORT/``), retrying until the hub listens."""
    while True:
        try:
            return await connect(f"ws://127.0.0.1:{port}/", max_size=None)
        except OSError:
            assert time.monotonic() < deadline, "the hub did not come up in time"
            await asyncio.sleep(0.2)


def messages(frame: str | bytes) -> list[dict[str, Any]]:
    decoded = orjson.loads(frame)
    return decoded["messages"] if decoded.get("type") == "batch" else [decoded]


async def test_readme_quick_start(
    platform: tuple[subprocess.Popen[bytes], int, Path, float],
) -> None:
    process, port, log, started = platform
    first: dict[str, float] = {}
    async with await hub_connection(port, started + HUB_UP_S) as ws:
        sent = time.monotonic()
        await ws.send(README_SUBSCRIBE)
        ack = messages(await asyncio.wait_for(ws.recv(), 5))[0]
        # every channel is declared at start: the ack comes at once and names all three
        assert ack["type"] == "ack" and ack["id"] == 1, ack
        assert sorted(ack["channels"]) == ["bars.1m.SPY", "trades.SPY", "vpin.SPY"]
        assert time.monotonic() - sent < 5
        while "vpin.SPY" not in first:
            left = started + VPIN_S - time.monotonic()
            assert left > 0, f"no vpin.SPY within {VPIN_S} s of launch (seen: {first})"
            try:
                frame = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                continue
            for message in messages(frame):
                assert message["type"] != "error", message
                if message["type"] == "update":
                    first.setdefault(message["channel"], time.monotonic() - started)
    print(f"first data, seconds from launch: {first}")
    assert first["trades.SPY"] < TRADES_S, first
    assert first["vpin.SPY"] < VPIN_S, first
    process.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(process.wait, 30) == 0
    text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text

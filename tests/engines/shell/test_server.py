from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import sys
import time
from typing import Any

import orjson
import pytest

from engines.shell import EngineState, main_engine, run_engine, run_engines
from engines.shell.lifecycle import CANCEL_GRACE_S
from engines.shell.registry import EngineSpec
from engines.shell.server import SERVER_STOP_GRACE_S
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from tests.engines.shell.vwap_engine import VwapConfig, VwapEngine, routes

REPO = pathlib.Path(__file__).resolve().parents[3]
REGISTRY = {
    "vpin": EngineSpec(
        "vpin",
        "tests.engines.shell.vwap_engine:VwapEngine",
        "tests.engines.shell.vwap_engine:routes",
    )
}


async def serve(engine: VwapEngine, **where: Any) -> Any:
    """``run_engine`` with the test engine's routes (it is not in the platform's registry)."""
    return await run_engine(engine, routes=routes(engine), **where)


def make_engine(**config: object) -> VwapEngine:
    clock = SystemClock()
    return VwapEngine(VwapConfig(**config), bus=MemoryBus(clock=clock), clock=clock)  # type: ignore[arg-type]


async def http_get(port: int, path: str) -> tuple[int, dict[str, object]]:
    """One HTTP/1.1 request over a real TCP connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_real_server_on_port_zero_answers_health() -> None:
    sigint_before = signal.getsignal(signal.SIGINT)
    running = await serve(make_engine())
    try:
        assert running.port > 0
        assert signal.getsignal(signal.SIGINT) is sigint_before  # uvicorn left signals alone
        status, body = await http_get(running.port, "/health")
        assert status == 200
        assert (body["status"], body["engine"]) == ("ok", "vwap")
        assert isinstance(body["version"], str)
    finally:
        await running.stop()
    assert running.engine.state is EngineState.STOPPED
    with pytest.raises(OSError):
        await http_get(running.port, "/health")


async def test_several_engines_serve_from_one_process() -> None:
    group = await run_engines([make_engine(name="one"), make_engine(name="two")])
    try:
        ports = [r.port for r in group.running]
        assert len(set(ports)) == 2
        for name in ("one", "two"):
            status, body = await http_get(group[name].port, "/health")
            assert (status, body["engine"]) == (200, name)
    finally:
        await group.stop()
    assert [r.engine.state for r in group.running] == [EngineState.STOPPED] * 2


async def test_failed_start_closes_the_server_and_the_group() -> None:
    good = make_engine(name="good")
    with pytest.raises(RuntimeError, match="pretend"):
        await run_engines([good, make_engine(name="bad", fail_on_start=True)])
    assert good.state is EngineState.STOPPED  # the one already running was stopped


async def test_stop_is_bounded_with_a_request_in_flight() -> None:
    running = await serve(make_engine(http_hang_s=60.0, drain_timeout_s=0.2))
    request = asyncio.create_task(http_get(running.port, "/slow"))
    await asyncio.sleep(0.1)  # the request is inside the hanging handler
    started = time.perf_counter()
    await running.stop()
    elapsed = time.perf_counter() - started
    # uvicorn's graceful timeout is whole seconds: ceil(0.2) = 1
    assert elapsed < 1.0 + SERVER_STOP_GRACE_S + CANCEL_GRACE_S
    assert running.engine.state is EngineState.STOPPED
    with pytest.raises((ValueError, IndexError, OSError)):  # cut off, no response
        await asyncio.wait_for(request, 2)


async def test_main_engine_runs_until_sigterm_and_exits_zero() -> None:
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from engines.shell.registry import EngineSpec\n"
        "from engines.shell.server import main_engine\n"
        "registry = {'vpin': EngineSpec('vpin', 'tests.engines.shell.vwap_engine:VwapEngine')}\n"
        "sys.exit(main_engine('vpin', sys.argv[1:], registry=registry))\n"
    )
    env = {**os.environ, "NAUTILUS_VPIN_DRAIN_TIMEOUT_S": "0.5", "NAUTILUS_VPIN_PORT": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "--port", "0", cwd=REPO, env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        port = None
        async with asyncio.timeout(20):
            while port is None:
                line = (await process.stderr.readline()).decode()
                assert line, "engine exited before serving"
                if found := re.search(r"serving on http://127\.0\.0\.1:(\d+)", line):
                    port = int(found.group(1))
        assert port != 1  # --port 0 won over NAUTILUS_VPIN_PORT
        status, body = await http_get(port, "/health")
        assert (status, body["engine"], body["status"]) == (200, "vpin", "ok")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = (await process.stderr.read()).decode()
            assert await process.wait() == 0
        assert "engine vpin stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_main_engine_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"NAUTILUS_VPIN_PORT": "eighty"}
    assert main_engine("vpin", [], environ=environ, registry=REGISTRY) == 2
    assert "NAUTILUS_VPIN_PORT: expected an integer" in capsys.readouterr().err
    assert main_engine("nope", [], environ={}, registry=REGISTRY) == 2
    assert "unknown engine 'nope' (known: vpin)" in capsys.readouterr().err
    assert main_engine("vpin", ["--port", "x"], environ={}, registry=REGISTRY) == 2


async def test_port_in_use_is_an_error_before_the_engine_starts() -> None:
    first = await serve(make_engine(name="first"))
    second = make_engine(name="second")
    try:
        with pytest.raises(OSError):
            await serve(second, port=first.port)
    finally:
        await first.stop()
    assert second.state is EngineState.CREATED

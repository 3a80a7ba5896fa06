"""The platform status view: rows from real /health answers, every failure a reason within the
bound, Redis down shows the bus down, ``nautilus status`` exit codes, and the page in Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from engines.example.api import routes as example_routes
from engines.example.service import ExampleConfig, ExampleEngine
from engines.shell.cli import main
from engines.shell.registry import ENGINE_PORTS
from engines.shell.server import RunningEngine, run_engine
from engines.shell.status import (
    EngineTarget,
    StatusConfig,
    collect_status,
    engine_row,
    render_text,
    scrape_state,
)
from realtime.bus import MemoryBus
from realtime.bus.redis import RedisBus, RedisBusConfig
from realtime.clock import SystemClock
from realtime.hub import Hub, HubConfig
from tests.realtime.hub.test_page import CHROMIUM, CHROMIUM_ARGS
from tests.support import until

TARGET = EngineTarget("vpin", "127.0.0.1", 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("body", "state", "reason"),
    [
        ({"status": "ok", "issues": []}, "running", ""),
        ({"status": "degraded", "issues": ["PostgreSQL unreachable"]}, "degraded", "PostgreSQL"),
        ({"status": "starting"}, "starting", "starting"),
        ({"status": "failed", "issues": ["input broke"]}, "down", "input broke"),
        ({"status": "ok", "rest_latency": {"count": 9, "p50_ms": 3, "p99_ms": 80}}, "degraded",
         "REST p99 80 ms over 50 ms"),
        (["not", "a", "health"], "down", "malformed /health (HTTP 200)"),
        ({"state": "running"}, "down", "malformed /health (HTTP 200)"),
    ],
)  # fmt: skip
def test_a_row_says_what_health_says(body: Any, state: str, reason: str) -> None:
    row = engine_row(TARGET, 200, body, None, slow_ms=50.0)
    assert row["state"] == state and reason in row["reason"]


@contextlib.asynccontextmanager
async def example_engine() -> AsyncIterator[RunningEngine]:
    clock = SystemClock()
    engine = ExampleEngine(ExampleConfig(), bus=MemoryBus(clock=clock), clock=clock)
    running = await run_engine(engine, host="127.0.0.1", port=0, routes=example_routes(engine))
    try:
        yield running
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts and never answers."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_every_row_within_the_bound_with_its_reason() -> None:
    config = StatusConfig(timeout_s=0.3)
    async with example_engine() as running, silent_port() as silent:
        targets = [
            EngineTarget("vpin", "127.0.0.1", running.port),
            EngineTarget("evpin", "127.0.0.1", silent),
            EngineTarget("marketdata", "127.0.0.1", free_port()),
        ]
        started = asyncio.get_running_loop().time()
        hub = Hub(HubConfig(port=0), MemoryBus())
        await hub.start()
        try:
            status = await collect_status(
                targets, config, clock=SystemClock(), hub=hub.status_section()
            )
        finally:
            await hub.stop()
        assert asyncio.get_running_loop().time() - started < 2.0
    rows = {r["name"]: r for r in status["engines"]["rows"]}
    assert rows["vpin"]["state"] == "running" and rows["vpin"]["version"]
    assert (rows["evpin"]["state"], rows["evpin"]["reason"]) == ("down", "no answer within 0.3 s")
    assert rows["marketdata"]["state"] == "down"
    assert rows["marketdata"]["reason"].startswith("unreachable")
    assert {n for n, r in rows.items() if r["state"] == "not built"} == set(ENGINE_PORTS) - {
        "vpin", "evpin", "marketdata"
    }  # fmt: skip
    assert status["ok"] is False
    assert status["summary"].startswith("engines 1/3 running (9 of 12 planned not built)")
    assert status["bus"] == {**status["bus"], "kind": "memory", "state": "running"}
    text = render_text(status)
    assert "no answer within 0.3 s" in text and "not built" in text


@pytest.fixture
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis of this test only, to be stopped mid-test (the machine's Redis stays up)."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield port, process
    finally:
        process.kill()
        process.wait()


async def test_redis_down_shows_the_bus_down(
    private_redis: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = private_redis
    config = RedisBusConfig(url=f"redis://127.0.0.1:{port}/0", reconnect_max_s=0.2)
    clock = SystemClock()
    for _ in range(100):  # redis-server takes a moment to listen
        with contextlib.suppress(Exception):
            bus = await RedisBus.connect(config, clock=clock)
            break
        await asyncio.sleep(0.05)
    hub = Hub(HubConfig(port=0), bus, clock=clock)
    await hub.start()
    try:
        up = await collect_status([], StatusConfig(), clock=clock, hub=hub.status_section())
        assert (up["bus"]["kind"], up["bus"]["state"]) == ("redis", "running")
        process.kill()
        process.wait()
        await until(lambda: hub.issues() != [], timeout_s=10)
        down = await collect_status([], StatusConfig(), clock=clock, hub=hub.status_section())
        assert down["bus"]["state"] == "down" and "bus unreachable" in down["bus"]["reason"]
        assert down["hub"]["state"] == "degraded" and down["ok"] is False
    finally:
        await hub.stop()
        await bus.close()


def test_nautilus_status_with_nothing_running_exits_1_naming_the_hub(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    for name in ("vpin", "evpin", "marketdata"):
        monkeypatch.setenv(f"NAUTILUS_{name.upper()}_PORT", str(free_port()))
    monkeypatch.setenv("NAUTILUS_STATUS_TIMEOUT_S", "0.5")
    code = main(["status", "--url", f"http://127.0.0.1:{closed}", "--timeout", "0.5"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("engines 0/")
    assert f"hub        down: http://127.0.0.1:{closed}: unreachable" in out


async def test_status_page_renders_the_view_in_chromium() -> None:
    async with example_engine() as running:
        targets = [
            EngineTarget("vpin", "127.0.0.1", running.port),
            EngineTarget("marketdata", "127.0.0.1", free_port()),
        ]
        clock = SystemClock()
        hub: Hub

        async def provider() -> dict[str, Any]:
            return await collect_status(
                targets, StatusConfig(), clock=clock, hub=hub.status_section()
            )

        hub = Hub(HubConfig(port=0), MemoryBus(), clock=clock, status=provider)
        await hub.start()
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    await page.goto(f"http://127.0.0.1:{hub.port}/status.html")
                    summary = page.locator("#summary")
                    await expect(summary).to_contain_text("engines 1/2 running")
                    await expect(summary).to_have_attribute("data-ok", "false")
                    state = page.locator('tr[data-engine="vpin"] td[data-state]')
                    await expect(state).to_have_attribute("data-state", "running")
                    down = page.locator('tr[data-engine="marketdata"] td[data-state]')
                    await expect(down).to_have_attribute("data-state", "down")
                    await expect(page.locator('tr[data-engine="ml"] td[data-state]')).to_have_text(
                        "not built"
                    )
                    dot = page.locator('tr[data-engine="vpin"] .dot')
                    colour = await dot.evaluate("e => getComputedStyle(e).backgroundColor")
                    assert colour == "rgb(63, 185, 80)"  # green
                    assert errors == []
                finally:
                    await browser.close()
        finally:
            await hub.stop()


def test_a_down_supervisor_target_does_not_degrade_the_scrape_state() -> None:
    up = {"health": "up", "labels": {"role": "engine"}}
    supervisor = {"health": "down", "labels": {"role": "supervisor"}}  # embedded: by design
    assert scrape_state([up, up, supervisor]) == {"state": "running", "targets": 2, "targets_up": 2}
    # any other target down degrades it; an up supervisor counts
    engine_down = {"health": "down", "labels": {"role": "engine"}}
    assert scrape_state([up, engine_down])["state"] == "degraded"
    assert scrape_state([engine_down])["state"] == "down"
    assert scrape_state([up, {**supervisor, "health": "up"}])["targets_up"] == 2

"""The trading UI (realtime/hub/static/index.html) in headless Chromium.

Against the embedded platform replaying 22 minutes of the bundled SPY day at 90×, with VPIN and
Enhanced VPIN buckets of 100,000 shares (about five a minute) so both draw lines: the chart's
candles and volumes equal MarketData's ``GET /bars``, the VPIN line, CDF band, alert markers and
Enhanced VPIN line equal ``GET /vpin/SPY/history`` and ``GET /evpin/SPY/history`` reduced the
way the page documents (the last bucket closed at each bar end), the Bollinger overlay follows
``GET /features/SPY/history``, and a hub restart mid-replay is survived without a reload: the
page shows that it is reconnecting, then candles keep coming. Against a plain hub: a
schema-invalid payload, a refused subscription and malformed frames each show a banner while the
page keeps drawing. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Page, async_playwright, expect
from websockets.asyncio.server import ServerConnection, serve

from realtime.bus import MemoryBus
from realtime.http import get_json
from realtime.hub import Hub, HubConfig
from tests.realtime.hub.test_page import CHROMIUM, CHROMIUM_ARGS
from tests.support import embedded_platform, replay_environ, until

SECOND = 1_000_000_000
BUCKET = "100000"  # shares per VPIN bucket: several buckets a minute in SPY's first minutes
ENVIRON = replay_environ(
    "09:30",
    "09:52",
    NAUTILUS_MARKETDATA_SPEED="90",
    NAUTILUS_VPIN_BUCKET_VOLUME=BUCKET,
    NAUTILUS_VPIN_WINDOW="10",
    NAUTILUS_EVPIN_BUCKET_VOLUME=BUCKET,
    NAUTILUS_EVPIN_WINDOW="10",
)


@asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    """A 1280×800 headless Chromium page; an uncaught page error fails the test."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == [], errors
        finally:
            await browser.close()


async def rest(url: str) -> Any:
    answer = await get_json(url, timeout_s=10)
    assert answer.status == 200, (url, answer.status, answer.body)
    return answer.body


async def wait_js(page: Page, expression: str, timeout_ms: int = 20_000) -> None:
    await page.wait_for_function(expression, timeout=timeout_ms)


def by_end_second(buckets: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The page's reduction: the last bucket closed at each bar end, by time."""
    last: dict[int, dict[str, Any]] = {}
    for bucket in sorted(buckets, key=lambda b: b["bucket"]):
        last[bucket["end_ns"] // SECOND] = bucket
    return sorted(last.items())


def alert_onsets(buckets: list[dict[str, Any]]) -> list[int]:
    """Bar ends where a new alert run began (the ``events`` counter moved)."""
    times: list[int] = []
    ordered = sorted(buckets, key=lambda b: b["bucket"])
    for previous, bucket in itertools.pairwise(ordered):
        t = bucket["end_ns"] // SECOND
        if bucket["events"] > previous["events"] and (not times or times[-1] != t):
            times.append(t)
    return times


def primary(bucket: dict[str, Any]) -> float | None:
    """Enhanced VPIN's primary value: its first classifier with a value."""
    return next((v for v in bucket["vpin"].values() if v is not None), None)


def points(pairs: list[tuple[int, float | None]]) -> list[dict[str, Any]]:
    return [{"time": t, "value": v} if v is not None else {"time": t} for t, v in pairs]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_chart_matches_rest_history_and_survives_a_hub_restart(artifacts: Path) -> None:
    async with embedded_platform(ENVIRON) as run, browser_page() as page:
        hub = run.hub
        marketdata: Any = run.engines["marketdata"].engine
        port = hub.port
        await page.goto(f"http://127.0.0.1:{port}/?symbol=SPY")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        await wait_js(page, "nautilusUI.candles().length >= 3")
        await page.evaluate("window.loadedOnce = true")  # gone if the page reloads

        # The hub goes away mid-replay and comes back on the same port.
        await hub.stop()
        reconnecting = page.locator('#banners .banner[data-key="connection"]')
        await expect(reconnecting).to_contain_text("reconnecting")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
        drawn = await page.evaluate("nautilusUI.candles().length")
        received = await page.evaluate("nautilusUI.state().messages")
        replaying = not marketdata.progress.done
        await page.screenshot(path=artifacts / "trading-ui-reconnecting.png")
        hub.config = replace(hub.config, port=port)
        await hub.start()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)
        await expect(reconnecting).to_have_count(0)
        # data again on the same page: snapshots of the resumed channels, and candles while the
        # replay runs (on a slow machine it may have ended while the hub was down)
        await wait_js(page, f"nautilusUI.state().messages > {received}")
        if replaying:
            await wait_js(page, f"nautilusUI.candles().length > {drawn}")
        assert await page.evaluate("window.loadedOnce") is True

        await until(lambda: marketdata.progress.done, timeout_s=60)
        status = await rest(f"http://127.0.0.1:{port}/status")
        url = {row["name"]: row["url"] for row in status["engines"]["rows"]}

        # Candles and volumes: exactly MarketData's bars.
        bars = (await rest(url["marketdata"] + "/bars?symbol=SPY&spec=1m&limit=10000"))["items"]
        assert len(bars) == 22
        await wait_js(page, f"nautilusUI.candles().length === {len(bars)}")
        candles = [
            {
                "time": b["t"] // SECOND,
                "open": b["o"],
                "high": b["h"],
                "low": b["l"],
                "close": b["c"],
            }
            for b in bars
        ]
        assert await page.evaluate("nautilusUI.candles()") == candles
        volumes = [{"time": b["t"] // SECOND, "value": b["v"]} for b in bars]
        assert await page.evaluate("nautilusUI.volumes()") == volumes

        # VPIN, its CDF band and alert markers: exactly VPIN's stored buckets.
        vpin = (await rest(url["vpin"] + "/vpin/SPY/history?limit=10000"))["items"]
        assert len(vpin) > 2 * len(bars)  # several buckets a bar: the reduction is exercised
        reduced = by_end_second(vpin)
        expected = points([(t, b["vpin"]) for t, b in reduced])
        await wait_js(page, f"nautilusUI.vpin().length === {len(expected)}")
        assert await page.evaluate("nautilusUI.vpin()") == expected
        cdf = points([(t, b["cdf_lognormal"]) for t, b in reduced])
        assert await page.evaluate("nautilusUI.cdf()") == cdf
        markers = await page.evaluate("nautilusUI.markers()")
        assert [m["time"] for m in markers] == alert_onsets(vpin)

        evpin = (await rest(url["evpin"] + "/evpin/SPY/history?limit=10000"))["items"]
        expected_e = points([(t, primary(b)) for t, b in by_end_second(evpin)])
        await wait_js(page, f"nautilusUI.evpin().length === {len(expected_e)}")
        assert await page.evaluate("nautilusUI.evpin()") == expected_e

        # Bollinger middle band (20 bars): every bar whose feature value is defined.
        features = (await rest(url["features"] + "/features/SPY/history?limit=10000"))["items"]
        middle = [
            {"time": f["start_ns"] // SECOND, "value": f["values"]["bbands.middleband"]}
            for f in features
            if f["spec"] == "1m" and f["values"].get("bbands.middleband") is not None
        ]
        assert middle
        await wait_js(page, f"nautilusUI.bbands().length === {len(middle)}")
        assert await page.evaluate("nautilusUI.bbands()") == middle

        # The account panels exist because the trading engines publish; the ticker is filled.
        await expect(page.locator("#orders-panel")).to_be_visible()
        await expect(page.locator("#pnl-panel")).to_be_visible()
        await expect(page.locator("#last")).to_have_text(f"{bars[-1]['c']:.2f}")
        await expect(page.locator("#lat-hub")).not_to_have_text("–")
        errors = [b for b in await page.evaluate("nautilusUI.banners()") if b["level"] == "error"]
        assert errors == []
        await page.screenshot(path=artifacts / "trading-ui.png")


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def test_hub_serves_the_ui_the_explorer_and_the_vendored_chart_library() -> None:
    hub = Hub(HubConfig(port=0), MemoryBus())
    await hub.start()
    try:
        vendor = Path(__file__).parents[3] / "realtime" / "hub" / "static" / "vendor"
        library = "lightweight-charts-4.2.3.standalone.production.js"
        status, headers, body = await asyncio.to_thread(http_get, hub.port, "/vendor/" + library)
        assert status == 200 and body == (vendor / library).read_bytes()
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        status, headers, body = await asyncio.to_thread(http_get, hub.port, "/vendor/NOTICE")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b"lightweight-charts@4.2.3" in body
        for outside in (
            "/vendor/../server.py",
            "/vendor/",
            "/vendor/%2e%2e/server.py",
            "/server.py",
        ):
            status, headers, _ = await asyncio.to_thread(http_get, hub.port, outside)
            assert status == 404 and "cache-control" not in headers, outside
        status, _, page = await asyncio.to_thread(http_get, hub.port, "/")
        assert status == 200 and b"<title>Nautilus \xc2\xb7 trading</title>" in page
        assert b'src="/vendor/' + library.encode() + b'"' in page
        status, headers, explorer = await asyncio.to_thread(http_get, hub.port, "/explorer")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert b"stream explorer" in explorer
    finally:
        await hub.stop()


def bar(minute: int, close: float) -> dict[str, Any]:
    t = (1_381_152_600 + 60 * minute) * SECOND
    return {
        "s": "SPY", "spec": "1m", "t": t, "te": t + 60 * SECOND, "o": 167.0, "h": 168.0,
        "l": 166.5, "c": close, "v": 1000.0, "dv": 167_000.0, "n": 10,
    }  # fmt: skip


@pytest.mark.timeout(60)
async def test_bad_input_shows_a_banner_and_the_page_keeps_drawing(artifacts: Path) -> None:
    bus = MemoryBus(epoch="ep1")
    hub = Hub(HubConfig(port=0, heartbeat_interval_s=30.0), bus)
    await hub.start()
    hub.declare(["bars.1m.SPY", "trades.SPY"])

    script = ["{not json", orjson.dumps({"type": "martian"}).decode()]

    async def scripted(ws: ServerConnection) -> None:
        for frame in script:
            await ws.send(frame)
        await ws.wait_closed()

    try:
        async with serve(scripted, "127.0.0.1", 0) as server, browser_page() as page:
            base = f"http://127.0.0.1:{hub.port}"
            await page.goto(base + "/?symbol=SPY")
            await wait_js(page, "nautilusUI.state().subscribed.includes('bars.1m.SPY')")
            bus.publish_nowait("bars.1m.SPY", bar(0, 167.5))
            await wait_js(page, "nautilusUI.candles().length === 1")

            # A payload its schema refuses: a banner naming the channel and field, not drawn.
            bus.publish_nowait("bars.1m.SPY", {**bar(1, 167.6), "t": "09:31"})
            invalid = page.locator('#banners .banner[data-key="error:schema:bars.1m.SPY"]')
            await expect(invalid).to_contain_text("invalid payload")
            await expect(invalid).to_contain_text("bars.1m.SPY: data.t: expected integer")
            bus.publish_nowait("bars.1m.SPY", bar(2, 167.7))
            await wait_js(page, "nautilusUI.candles().length === 2")
            times = [c["time"] for c in await page.evaluate("nautilusUI.candles()")]
            assert times == [bar(0, 0)["t"] // SECOND, bar(2, 0)["t"] // SECOND]
            await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            await expect(page.locator("#error-count")).to_have_text("1")
            await page.screenshot(path=artifacts / "bad-payload.png")

            # A symbol the hub does not carry: its error reply is a banner.
            await page.goto(base + "/?symbol=NOPE")
            refused = page.locator('#banners .banner[data-key^="error:server"]')
            await expect(refused).to_contain_text("unknown_channel")
            await expect(refused).to_contain_text("bars.1m.NOPE")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "open")

            # Malformed frames from the socket: a banner, the page still standing.
            scripted_port = next(iter(server.sockets)).getsockname()[1]
            await page.goto(base + f"/?ws=ws://127.0.0.1:{scripted_port}/")
            malformed = page.locator('#banners .banner[data-key="error:malformed:"]')
            await expect(malformed).to_contain_text("malformed message")
            await expect(malformed).to_contain_text("2×")
            await expect(page.locator("#symbol")).to_be_visible()
            await expect(page.locator("#price-chart canvas").first).to_be_visible()
            await page.screenshot(path=artifacts / "malformed.png")
    finally:
        await hub.stop()

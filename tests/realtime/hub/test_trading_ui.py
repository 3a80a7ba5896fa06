"""The trading UI (realtime/hub/static/index.html) in headless Chromium.

Against the embedded platform replaying 22 minutes of the bundled SPY day at 90×, with VPIN and
Enhanced VPIN buckets of 100,000 shares (about five a minute) so both draw lines: the chart's
candles and volumes equal MarketData's ``GET /bars``, the VPIN line, CDF band, alert markers and
Enhanced VPIN line equal ``GET /vpin/SPY/history`` and ``GET /evpin/SPY/history`` reduced the
way the page documents (the last bucket closed at each bar end), the Bollinger overlay follows
``GET /features/SPY/history``, and a hub restart mid-replay is survived without a reload: the
page shows that it is reconnecting, then candles keep coming. Against a plain hub: a
schema-invalid payload, a refused subscription and malformed frames each show a banner while the
page keeps drawing.

The bundled Binance BTCUSDT feed at max speed: while messages pour in, frames keep being painted
(``nautilusUI.paints()``, sampled inside the page: the replay shares the test's event loop; the
paint times are saved with the artifacts, measured, not asserted: this is not a benchmark); once the replay is over (nothing moves) the book ladder equals
``GET /book/BTCUSDT``, the spread ``ask − bid`` of ``GET /quotes/latest``, the tape the last
trades published, every candle is in view; the picker switches to a second, quiet symbol (no book:
no ladder; nothing drawn) and back (all of it again, the tape now from ``GET /trades``). The SPY
replay with the default strategies: the orders, fills, positions, PnL and VaR panels equal the
Strategy, Portfolio and Risk REST, and an exposure posted to the demo agreement shows its margin
call. Screenshots go to ``test-artifacts/<test>/`` (``NAUTILUS_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
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
        received = await page.evaluate("nautilusUI.state().messages")
        await page.screenshot(path=artifacts / "trading-ui-reconnecting.png")
        hub.config = replace(hub.config, port=port)
        await hub.start()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)
        await expect(reconnecting).to_have_count(0)
        # data again on the same page: snapshots of the resumed channels; the candles published
        # while the hub was down and after come below (every bar, on the page never reloaded)
        await wait_js(page, f"nautilusUI.state().messages > {received}")

        await until(lambda: marketdata.progress.done, timeout_s=60)
        status = await rest(f"http://127.0.0.1:{port}/status")
        url = {row["name"]: row["url"] for row in status["engines"]["rows"]}

        # Candles and volumes: exactly MarketData's bars.
        bars = (await rest(url["marketdata"] + "/bars?symbol=SPY&spec=1m&limit=10000"))["items"]
        assert len(bars) == 22
        await wait_js(page, f"nautilusUI.candles().length === {len(bars)}")
        # the same page throughout: every bar published after the stop reached it over the
        # resumed connection
        assert await page.evaluate("window.loadedOnce") is True
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


# ── the rest of the page: book ladder, tape, spread, picker, paint time; the account panels ──

BINANCE = replay_environ("09:30", "09:52", NAUTILUS_MARKETDATA_FEED="binance")  # max speed
#: A second symbol the hub carries in the Binance run (declared, nothing publishes it).
QUIET = "ETHUSDT"
TAPE_ROWS = 60  # index.html's TAPE_ROWS
TABLE_ROWS = 12  # ... and TABLE_ROWS (orders, fills, margin calls)
#: Every 250 ms: [ms since load, frames painted, messages received] (window.samples).
SAMPLER = """
window.samples = [];
setInterval(() => {
  if (!window.nautilusUI) return;
  window.samples.push([performance.now(), nautilusUI.paints().count, nautilusUI.state().messages]);
}, 250);
"""


async def settled(check: Callable[[], Awaitable[None]], timeout_s: float = 20.0) -> None:
    """Run ``check`` until it stops failing an assertion (page and REST may lag each other)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await check()
            return
        except AssertionError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)


def number(text: str) -> float:
    """A number as the page prints it (``fmt``: en-US grouping, ``+`` sign, ``—`` for none)."""
    return float(text.replace(",", "").replace("+", ""))


def shown(text: str, value: Any, digits: int) -> bool:
    """``text`` is ``value`` printed with ``digits`` decimals (either rounding of a tie)."""
    if value is None:
        return text == "—"
    return abs(number(text) - float(value)) <= 0.5 * 10**-digits + 1e-9


def clock(ns: int) -> str:
    """The page's ``clock``: HH:MM:SS UTC of the millisecond."""
    return datetime.fromtimestamp(round(ns / 1e6) / 1000, UTC).strftime("%H:%M:%S")


Cell = str | tuple[Any, int]  # exact text, or (value, decimals) for a number


def row_matches(cells: list[str], expected: list[Cell]) -> bool:
    if len(cells) != len(expected):
        return False
    for text, want in zip(cells, expected, strict=True):
        if isinstance(want, tuple):
            if not shown(text, *want):
                return False
        elif text != want:
            return False
    return True


async def table(page: Page, selector: str) -> list[list[str]]:
    """The text of every cell of every row of ``selector``'s body."""
    rows: list[list[str]] = await page.eval_on_selector_all(
        selector + " tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    return rows


async def assert_table(page: Page, selector: str, expected: list[list[Cell]]) -> None:
    rows = await table(page, selector)
    assert len(rows) == len(expected), (selector, rows, expected)
    for row, want in zip(rows, expected, strict=True):
        assert row_matches(row, want), (selector, row, want)


def ladder(book: dict[str, Any]) -> list[list[Cell]]:
    """index.html's ladder: asks best last, the spread, bids best first (price 2, size 4)."""
    asks, bids = book["asks"][:10], book["bids"][:10]
    spread = f"spread {asks[0][0] - bids[0][0]:,.2f}"
    return [
        *[[(p, 2), (q, 4)] for p, q in reversed(asks)],
        [spread],
        *[[(p, 2), (q, 4)] for p, q in bids],
    ]


def tape(trades: list[dict[str, Any]]) -> list[list[Cell]]:
    """The tape: the last ``TAPE_ROWS`` trades, newest first (time, price 2, size 6)."""
    return [[clock(t["t"]), (t["p"], 2), (t["q"], 6)] for t in reversed(trades[-TAPE_ROWS:])]


async def assert_quote_and_book(page: Page, md_url: str, symbol: str) -> None:
    """The ladder shows ``GET /book`` and the header's spread ``ask − bid`` of the last quote."""
    book = await rest(f"{md_url}/book/{symbol}?depth=10")
    assert book["state"] == "live" and len(book["asks"]) == len(book["bids"]) == 10
    await assert_table(page, "#book", ladder(book))
    quote = await rest(f"{md_url}/quotes/latest?symbol={symbol}")
    spread, mid = quote["k"] - quote["b"], (quote["k"] + quote["b"]) / 2
    value, bp = (await page.locator("#spread").text_content() or "").split(" (")
    assert shown(value, spread, 4) and shown(bp.removesuffix(" bp)"), 1e4 * spread / mid, 1)


async def rest_trades(md_url: str, symbol: str, from_ns: int) -> list[dict[str, Any]]:
    """Every stored trade of ``symbol`` from ``from_ns`` on, in the store's order."""
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await rest(f"{md_url}/trades?symbol={symbol}&from={from_ns}&limit=10000{cursor}")
        items += page["items"]
        if not page["next_cursor"]:
            return items
        cursor = "&cursor=" + urllib.parse.quote(page["next_cursor"])


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_binance_book_tape_spread_and_picker_at_max_speed(artifacts: Path) -> None:
    async with browser_page() as page, embedded_platform(BINANCE) as run:
        hub = run.hub
        marketdata: Any = run.engines["marketdata"].engine
        hub.declare([f"bars.1m.{QUIET}", f"trades.{QUIET}"])
        # sampled inside the page: the replay shares this process's event loop with the test
        await page.add_init_script(SAMPLER)
        await page.goto(f"http://127.0.0.1:{hub.port}/?symbol=BTCUSDT")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")

        # Max speed: while messages pour in, frames keep being painted.
        await until(lambda: marketdata.progress.done, timeout_s=60)
        samples = await page.evaluate("window.samples")
        paints = await page.evaluate("nautilusUI.paints()")
        (artifacts / "paints.json").write_bytes(orjson.dumps({"samples": samples, **paints}))
        # frames were painted while messages poured in (counted inside the page, so the test's
        # own event loop, busy with the replay, cannot hide them): from the sample before the
        # first that saw messages arrive to the one after the last (a frame may be due just
        # after a sample), the paint count rose — the page did not freeze until the end
        busy = [i for i in range(1, len(samples)) if samples[i][2] > samples[i - 1][2]]
        assert busy, samples  # the page saw the replay, not only its end
        after = samples[busy[-1] + 1][1] if busy[-1] + 1 < len(samples) else paints["count"]
        assert after > samples[busy[0] - 1][1], samples
        await page.screenshot(path=artifacts / "binance-max-speed.png")

        # The replay is over and nothing moves: the page equals REST and the bus.
        status = await rest(f"http://127.0.0.1:{hub.port}/status")
        url = {row["name"]: row["url"] for row in status["engines"]["rows"]}
        md = url["marketdata"]
        await expect(page.locator("#book-panel")).to_be_visible()
        await settled(lambda: assert_quote_and_book(page, md, "BTCUSDT"))
        live = [e.payload for e in run.on_bus["trades.BTCUSDT"]]
        await settled(lambda: assert_table(page, "#tape", tape(live)))
        await expect(page.locator("#last")).to_have_text(f"{live[-1]['p']:,.2f}")
        bars = (await rest(f"{md}/bars?symbol=BTCUSDT&spec=1m&limit=10000"))["items"]
        assert len(bars) >= 10
        await wait_js(page, f"nautilusUI.candles().length === {len(bars)}")
        closes = [c["close"] for c in await page.evaluate("nautilusUI.candles()")]
        assert closes == [b["c"] for b in bars]
        # every bar is in view, though the page opened before the first one (live bars only)
        visible = await page.evaluate("nautilusUI.visible()")
        assert visible["price"]["from"] <= 0 and visible["price"]["to"] >= len(bars) - 1, visible
        assert visible["vpin"] == visible["price"]  # the VPIN chart in step, bar for bar
        # nothing trades BTCUSDT on the paper account: its panels are there, and empty
        assert (await rest(url["strategy"] + "/strategy/orders?account=paper"))["items"] == []
        await expect(page.locator("#orders tbody")).to_have_text("no orders yet")
        errors = [b for b in await page.evaluate("nautilusUI.banners()") if b["level"] == "error"]
        assert errors == []
        await page.screenshot(path=artifacts / "binance-book.png")

        # The picker: a symbol with no book, no trades and no bars hides the ladder and clears.
        symbols = page.locator("#symbol option")
        await expect(symbols).to_have_text(["BTCUSDT", QUIET])
        await page.select_option("#symbol", QUIET)
        await expect(page.locator("#book-panel")).to_be_hidden()
        await expect(page.locator("#price-empty")).to_be_visible()
        await expect(page.locator("#tape tbody tr")).to_have_count(0)
        for field in ("#last", "#spread"):
            await expect(page.locator(field)).to_have_text("—")
        await wait_js(page, f"nautilusUI.state().subscribed.includes('bars.1m.{QUIET}')")
        state = await page.evaluate("nautilusUI.state()")
        assert not [c for c in state["subscribed"] if c.endswith(".BTCUSDT")], state
        assert page.url.endswith(f"symbol={QUIET}")
        await page.screenshot(path=artifacts / "binance-picker-quiet.png")

        # ... and back: the ladder, the spread, candles and the tape (now from REST) return.
        last_bar_ns = bars[-1]["t"]
        in_last_bar = [t for t in live if t["t"] >= last_bar_ns]
        stored: list[dict[str, Any]] = []

        async def all_stored() -> None:  # the page reads the store: wait for its last writes
            stored[:] = await rest_trades(md, "BTCUSDT", last_bar_ns)
            assert len(stored) == len(in_last_bar) >= TAPE_ROWS
            key = [(t["t"], t["p"], t["q"]) for t in stored]
            assert key == [(t["t"], t["p"], t["q"]) for t in in_last_bar]  # REST is the bus

        await settled(all_stored)
        await page.select_option("#symbol", "BTCUSDT")
        await expect(page.locator("#book-panel")).to_be_visible()
        await settled(lambda: assert_quote_and_book(page, md, "BTCUSDT"))
        await wait_js(page, f"nautilusUI.candles().length === {len(bars)}")
        await settled(lambda: assert_table(page, "#tape", tape(stored)))
        assert page.url.endswith("symbol=BTCUSDT")
        errors = [b for b in await page.evaluate("nautilusUI.banners()") if b["level"] == "error"]
        assert errors == []
        await page.screenshot(path=artifacts / "binance-picker-back.png")


SPY_TRADING = replay_environ("09:30", "09:40")  # max speed; the default strategies trade paper


def http_post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(
            "POST", parts.path, orjson.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


async def assert_account(page: Page, url: dict[str, str]) -> None:
    """Orders, fills, positions, PnL and VaR as the page shows them equal the engines' REST."""
    strategy, portfolio = url["strategy"], url["portfolio"]
    orders = (await rest(strategy + "/strategy/orders?account=paper"))["items"]
    orders = sorted(orders, key=lambda o: o["event_ns"], reverse=True)[:TABLE_ROWS]
    await assert_table(page, "#orders", [
        [clock(o["event_ns"]), o["side"], (o["quantity"], 6), o["symbol"], o["status"],
         (o["filled_quantity"], 6), (o["average_price"], 2)]
        for o in orders
    ])  # fmt: skip
    fills = (await rest(portfolio + "/portfolio/paper/fills?limit=10000"))["items"]
    fills = sorted(fills, key=lambda f: f["event_ns"])[-TABLE_ROWS:][::-1]
    await assert_table(page, "#fills", [
        [clock(f["event_ns"]), f["side"], (f["quantity"], 6), (f["price"], 2), (f["fee"], 2)]
        for f in fills
    ])  # fmt: skip
    positions = (await rest(portfolio + "/portfolio/paper/positions"))["positions"]
    await assert_table(page, "#positions", [
        [p["symbol"], (p["quantity"], 6), (p["average_price"], 2), (p["mark_price"], 2),
         (p["unrealized_pnl"], 2)]
        for p in positions
    ] or [["flat"]])  # fmt: skip
    pnl = await rest(portfolio + "/portfolio/paper/pnl")
    names = ["equity", "cash", "realized_pnl", "unrealized_pnl", "fees", "gross_exposure",
             "net_exposure"]  # fmt: skip
    shown_pnl = await page.locator("#pnl dd").all_text_contents()
    assert len(shown_pnl) == len(names)
    for name, text in zip(names, shown_pnl, strict=True):
        assert shown(text, pnl[name], 2), (name, text, pnl[name])
    # VaR · ES: the first four methods at their highest confidence level, whole units
    var = await rest(url["risk"] + "/risk/var/paper")
    expected = []
    for method, levels in list(var["var"].items())[:4]:
        level = max(levels)
        expected.append((f"{method} {level}", levels[level]["var"], levels[level]["es"]))
    terms = await page.locator("#var dt").all_text_contents()
    values = await page.locator("#var dd").all_text_contents()
    assert terms == [name for name, _, _ in expected], (terms, expected)
    for (_, v, es), text in zip(expected, values, strict=True):
        shown_var, shown_es = text.split(" · ")
        assert shown(shown_var, v, 0) and shown(shown_es, es, 0), (text, v, es)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_account_panels_match_the_trading_engines_rest(artifacts: Path) -> None:
    async with embedded_platform(SPY_TRADING) as run, browser_page() as page:
        hub = run.hub
        marketdata: Any = run.engines["marketdata"].engine
        await page.goto(f"http://127.0.0.1:{hub.port}/?symbol=SPY")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        status = await rest(f"http://127.0.0.1:{hub.port}/status")
        url = {row["name"]: row["url"] for row in status["engines"]["rows"]}
        await until(lambda: marketdata.progress.done, timeout_s=60)

        # No book on SPY: no ladder. Every account stream exists: every account panel.
        for panel in ("#orders-panel", "#fills-panel", "#positions-panel", "#pnl-panel"):
            await expect(page.locator(panel)).to_be_visible()
        await expect(page.locator("#book-panel")).to_be_hidden()
        await expect(page.locator("#pnl-account")).to_have_text("paper · USD")
        await expect(page.locator("#var-head")).to_be_visible()

        # The strategies traded: the page shows what the engines' REST answers.
        orders = (await rest(url["strategy"] + "/strategy/orders?account=paper"))["items"]
        assert [o for o in orders if o["status"] == "filled"], orders
        await settled(lambda: assert_account(page, url))
        await page.screenshot(path=artifacts / "account.png")

        # A margin call: an exposure posted to the demo agreement is called at once.
        status_code, state = await asyncio.to_thread(
            http_post, url["collateral"] + "/collateral/paper/exposure", {"exposure": 1.5e6}
        )
        assert status_code == 200 and state["open_call"] is not None, state
        call = state["open_call"]
        row = [call["call_id"][:10], "issued", (call["amount"], 0), clock(call["issued_ns"])]

        async def call_shown() -> None:
            stored = (await rest(url["collateral"] + "/collateral/paper/calls"))["items"]
            assert [c["call_id"] for c in stored] == [call["call_id"]]
            await assert_table(page, "#calls", [row])

        await settled(call_shown)
        await expect(page.locator("#calls-head")).to_contain_text(
            f"paper held 0 due {call['amount']:,.0f}"
        )
        errors = [b for b in await page.evaluate("nautilusUI.banners()") if b["level"] == "error"]
        assert errors == []
        await page.screenshot(path=artifacts / "margin-call.png")

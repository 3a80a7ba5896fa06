"""The stream explorer page (realtime/hub/static/explorer.html) in headless Chromium, against a
real hub.

The page is loaded from the hub's own ``GET /explorer`` and talks to its WebSocket on the same
port. What the page shows is checked against what the test itself published on the bus: the
payload of each ``seq``, the bus's publish stamps (latency must land between publish and the moment
the DOM was read) and the bus's drop bound (the gap indicator must count exactly the messages it
dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from playwright.async_api import Page, async_playwright, expect

from realtime.bus import MemoryBus
from realtime.hub import Hub, HubConfig

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRADES = "trades.SPY"
QUOTES = "quotes.SPY"
PUBLISH_INTERVAL_S = 0.02  # 50 trades/s
#: Event times lie this far before publish (a replay), so mixing up ts.event and ts.publish shows.
EVENT_LAG_NS = 3_000_000_000
MAX_ROWS = 200  # the page's cap on message rows
#: Slack on latency bounds: the page's clock is anchored to Date.now() (1 ms steps) ± rounding.
CLOCK_SLACK_MS = 2.0


@dataclass
class Feed:
    """Publishes trades at 50/s and a quote every 10th trade; remembers every payload by seq."""

    bus: MemoryBus
    trades: dict[int, tuple[Any, int]] = field(default_factory=dict)  # seq -> (payload, publish_ns)
    quotes: dict[int, Any] = field(default_factory=dict)
    ticks: int = 0
    running: bool = True

    def trade(self, *, quote: bool = True) -> None:
        self.ticks += 1
        i = self.ticks
        px = 430.0 + (i % 97) * 0.25
        payload: dict[str, Any] = {"px": px, "sz": i % 7 + 1, "side": "BS"[i % 2]}
        env = self.bus.publish_nowait(TRADES, payload, event_ns=time.time_ns() - EVENT_LAG_NS)
        self.trades[env.seq] = (payload, env.publish_ns)
        if quote and i % 10 == 1:
            bbo = {"bid": px - 0.01, "ask": px + 0.01, "n": i}
            self.quotes[self.bus.publish_nowait(QUOTES, bbo).seq] = bbo

    async def run(self) -> None:
        while True:
            if self.running:
                self.trade()
            await asyncio.sleep(PUBLISH_INTERVAL_S)


@dataclass
class Session:
    hub: Hub
    bus: MemoryBus
    feed: Feed
    page: Page


@asynccontextmanager
async def explorer(*, bus_max_pending: int = 1_000_000) -> AsyncIterator[Session]:
    """A hub on port 0 with a live feed, and the page it serves open in headless Chromium."""
    bus = MemoryBus(max_pending=bus_max_pending)
    hub = Hub(HubConfig(port=0), bus)
    await hub.start()
    hub.declare([TRADES, QUOTES])
    feed = Feed(bus)
    publisher = asyncio.create_task(feed.run(), name="test-feed")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 820})
                page_errors: list[str] = []
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                await page.goto(f"http://127.0.0.1:{hub.port}/explorer")
                yield Session(hub, bus, feed, page)
                assert page_errors == [], page_errors
            finally:
                await browser.close()
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await hub.stop()


_ROWS_JS = """rows => rows.map(r => ({
    seq: Number(r.dataset.seq), type: r.dataset.type, channel: r.dataset.channel,
    hub: r.querySelector('[data-testid=lat-hub]').textContent,
    pub: r.querySelector('[data-testid=lat-publish]').textContent,
    data: r.querySelector('[data-testid=data]').textContent,
}))"""


async def rows(page: Page, channel: str, kind: str = "update") -> list[dict[str, Any]]:
    """Message rows of one channel and type, newest first, as the page shows them."""
    selector = f'#messages tr[data-channel="{channel}"][data-type="{kind}"]'
    result: list[dict[str, Any]] = await page.eval_on_selector_all(selector, _ROWS_JS)
    return result


async def wait_rows(page: Page, channel: str, count: int) -> None:
    selector = f'#messages tr[data-channel="{channel}"][data-type="update"]'
    await page.wait_for_function(
        f"document.querySelectorAll('{selector}').length >= {count}", timeout=5_000
    )


def channel_row(page: Page, channel: str) -> Any:
    return page.locator(f'#channels tr[data-channel="{channel}"]')


def shown_data(row: dict[str, Any]) -> Any:
    """The ``data`` a row shows (compact JSON; JS prints 445.0 as 445, equal as numbers)."""
    return orjson.loads(row["data"])


def assert_contiguous(seqs: list[int]) -> None:
    """Newest first and nothing missing: an ordered-lossless stream seen in full."""
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1)), seqs


async def test_page_lists_subscribes_and_shows_live_messages_with_latency(artifacts: Path) -> None:
    async with explorer() as s:
        page = s.page
        await expect(page.locator("#conn-status")).to_have_attribute("data-state", "open")
        assert await page.locator("#ws-url").input_value() == f"ws://127.0.0.1:{s.hub.port}/ws"

        # The channel list comes from `list`, with each channel's delivery class.
        trades_row, quotes_row = channel_row(page, TRADES), channel_row(page, QUOTES)
        delivery = "data-delivery"
        await expect(trades_row.get_by_test_id("delivery")).to_have_attribute(
            delivery, "ordered-lossless"
        )
        await expect(quotes_row.get_by_test_id("delivery")).to_have_attribute(
            delivery, "latest-value"
        )
        await page.click("#refresh")
        await expect(trades_row.get_by_test_id("hub-seq")).not_to_have_text("")

        # Subscribe to trades: live updates, seq contiguous, payloads exactly as published.
        await trades_row.get_by_test_id("toggle").click()
        await expect(trades_row.get_by_test_id("toggle")).to_have_text("unsubscribe")
        await wait_rows(page, TRADES, 15)
        shown = await rows(page, TRADES)
        read_ms = time.time_ns() / 1e6
        assert_contiguous([r["seq"] for r in shown])
        assert shown[0]["seq"] <= s.bus.last_seq(TRADES)
        for r in shown:
            payload, publish_ns = s.feed.trades[r["seq"]]
            assert shown_data(r) == payload
            hub_ms, pub_ms = float(r["hub"]), float(r["pub"])
            # publish ≤ hub send ≤ receipt ≤ now: received = publish + pub_ms lies in between.
            received_ms = publish_ns / 1e6 + pub_ms
            assert publish_ns / 1e6 - CLOCK_SLACK_MS <= received_ms <= read_ms + CLOCK_SLACK_MS
            assert pub_ms >= hub_ms - 0.01  # publish ≤ hub send; both shown to 0.01 ms
            assert hub_ms >= -CLOCK_SLACK_MS

        # A burst arrives as batch frames; the view stays capped, still contiguous, gaps 0.
        for _ in range(300):
            s.feed.trade(quote=False)
        burst_end = s.bus.last_seq(TRADES)
        await page.wait_for_function(
            f"Number(document.querySelector('#messages tr[data-channel=\"{TRADES}\"]')"
            f".dataset.seq) >= {burst_end}",
            timeout=5_000,
        )
        shown = await rows(page, TRADES)
        assert await page.locator("#messages tbody tr").count() <= MAX_ROWS
        assert len(shown) >= MAX_ROWS - 5  # only trades flow (plus nothing else subscribed)
        assert_contiguous([r["seq"] for r in shown])
        await expect(trades_row.get_by_test_id("gaps")).to_have_text("0")
        await expect(page.locator("#rate")).not_to_have_text("0")

        # Subscribe to quotes: the snapshot comes first, holding the value published for its seq.
        await quotes_row.get_by_test_id("toggle").click()
        snapshot = page.locator(f'#messages tr[data-channel="{QUOTES}"][data-type="snapshot"]')
        await expect(snapshot).to_have_count(1)
        snap = (await rows(page, QUOTES, "snapshot"))[0]
        assert shown_data(snap) == s.feed.quotes[snap["seq"]]

        # Errors are shown: an undeclared channel and a malformed name, each with its code.
        await page.fill("#channel-input", "trades.BOGUS")
        await page.click("#subscribe-input")
        errors = page.locator('#events tr[data-kind="error"]')
        await expect(errors.first).to_contain_text("unknown_channel")
        await expect(errors.first).to_contain_text("trades.BOGUS")
        await page.fill("#channel-input", "nope")
        await page.press("#channel-input", "Enter")
        await expect(errors.first).to_contain_text("bad_channel")
        await expect(page.locator("#error-count")).to_have_text("2")
        await expect(page.locator("#conn-status")).to_have_attribute("data-state", "open")

        await page.wait_for_timeout(1_100)  # one stats tick: rate, p50/p99, channel counters
        await page.screenshot(path=artifacts / "explorer.png")

        # Unsubscribe: trades stop arriving while the feed goes on.
        await trades_row.get_by_test_id("toggle").click()
        await expect(trades_row.get_by_test_id("toggle")).to_have_text("subscribe")
        last = (await rows(page, TRADES))[0]["seq"]
        published = s.bus.last_seq(TRADES)
        await page.wait_for_timeout(300)
        assert s.bus.last_seq(TRADES) > published
        assert (await rows(page, TRADES))[0]["seq"] == last


async def test_page_resumes_after_a_dropped_connection_without_losing_messages() -> None:
    async with explorer() as s:
        page = s.page
        await expect(page.locator("#conn-status")).to_have_attribute("data-state", "open")
        await channel_row(page, TRADES).get_by_test_id("toggle").click()
        await wait_rows(page, TRADES, 5)

        await page.evaluate("window.explorer.dropConnection()")
        acks = page.locator('#events tr[data-kind="ack"]', has_text="recovered")
        await expect(acks.first).to_contain_text(f"{TRADES} recovered")
        replayed = int((await acks.first.inner_text()).rsplit("recovered", 1)[1].split()[0])
        assert replayed > 0  # the feed kept publishing through the backoff
        await expect(page.locator("#conn-status")).to_have_attribute("data-state", "open")
        resumed_at = s.bus.last_seq(TRADES)
        await page.wait_for_function(
            f"Number(document.querySelector('#messages tr[data-channel=\"{TRADES}\"]')"
            f".dataset.seq) > {resumed_at}",
            timeout=5_000,
        )
        shown = await rows(page, TRADES)
        assert_contiguous([r["seq"] for r in shown])
        await expect(channel_row(page, TRADES).get_by_test_id("gaps")).to_have_text("0")


async def test_page_counts_a_gap_the_bus_made() -> None:
    """A bus that keeps 50 pending messages drops 250 of a 300 burst: the page must count 250."""
    async with explorer(bus_max_pending=50) as s:
        page = s.page
        row = channel_row(page, TRADES)
        await row.get_by_test_id("toggle").click()
        await wait_rows(page, TRADES, 3)
        s.feed.running = False  # the hub must have consumed everything before the burst
        before = s.bus.last_seq(TRADES)
        await page.wait_for_function(
            f"Number(document.querySelector('#messages tr[data-channel=\"{TRADES}\"]')"
            f".dataset.seq) >= {before}",
            timeout=5_000,
        )
        for _ in range(300):
            s.feed.trade(quote=False)
        await expect(row.get_by_test_id("gaps")).to_have_text("250")
        gap_row = page.locator('#messages tr.seq-gap[data-channel="trades.SPY"]')
        await expect(gap_row).to_have_count(1)
        assert await gap_row.get_attribute("data-seq") == str(before + 251)
        status = page.locator('#events tr[data-kind="status"]', has_text="gap")
        await expect(status.first).to_contain_text(f"from_seq={before + 1} to_seq={before + 250}")

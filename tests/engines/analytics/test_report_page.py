"""The tear sheet (``GET /analytics/{key}/report``) in headless Chromium, served on port 0 by an
engine fed SPY's daily bars: each of the four charts occupies its box and a screenshot of that box
shows what was drawn there (the line's, the area's or the cells' colours), not a blank frame."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import async_playwright

from engines.analytics.api import routes
from engines.analytics.service import AnalyticsConfig, AnalyticsEngine
from engines.shell import create_app
from engines.shell.server import serve_app
from tests.engines.analytics.test_api import feed_daily, started
from tests.realtime.hub.test_page import CHROMIUM, CHROMIUM_ARGS

LINE = (0x1F, 0x77, 0xB4)  # report.py: the equity and rolling Sharpe polylines
AREA = (0xD9, 0x53, 0x4F)  # the underwater polygon (stroke; fill at 50 % over white)
CHARTS = ("equity", "underwater", "heatmap", "rolling-sharpe")


def near(pixels: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels lie within ``tol`` of ``colour`` on every channel."""
    return int((np.abs(pixels[..., :3].astype(int) - colour) <= tol).all(axis=-1).sum())


@pytest.fixture
async def engine() -> AsyncIterator[AnalyticsEngine]:
    async for running in started(AnalyticsConfig(bar_spec="1d", rolling_window=126)):
        yield running


async def test_report_charts_draw_in_chromium(engine: AnalyticsEngine) -> None:
    dates, spy_r, _ = await feed_daily(engine, since="2015-01-01")
    server = await serve_app(
        create_app(engine, version="t", routes=routes(engine)), host="127.0.0.1", port=0
    )
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1000, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                resp = await page.goto(f"http://127.0.0.1:{server.port}/analytics/SPY/report")
                assert resp is not None and resp.status == 200
                assert "SPY" in await page.title()
                shot = Image.open(io.BytesIO(await page.screenshot(full_page=True)))
                pixels = np.asarray(shot.convert("RGB"))
                drawn: dict[str, dict[str, int]] = {}
                for chart in CHARTS:
                    svg = page.locator(f"svg.chart.{chart}")
                    box = await svg.bounding_box()
                    assert box is not None and box["width"] > 300 and box["height"] > 100, chart
                    x0, y0 = int(box["x"]), int(box["y"])
                    crop = pixels[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
                    drawn[chart] = {
                        "ink": int((crop.min(axis=-1) < 200).sum()),  # not white/background
                        "line": near(crop, LINE),
                        "area": near(crop, AREA, 60),
                        "green": int(((crop[..., 1] > 200) & (crop[..., 0] < 200)).sum()),
                        "red": int(((crop[..., 0] > 200) & (crop[..., 1] < 200)).sum()),
                    }
                    counts = await svg.evaluate(
                        "s => ({poly: s.querySelectorAll('polyline').length,"
                        " polygons: s.querySelectorAll('polygon').length,"
                        " cells: s.querySelectorAll('rect').length,"
                        " points: (s.querySelector('polyline, polygon')?.points ?? []).length})"
                    )
                    drawn[chart] |= counts
                assert errors == []
                worst = await page.locator("table").nth(1).locator("tr").nth(1).inner_text()
            finally:
                await browser.close()
    finally:
        await server.stop()

    n = spy_r.size
    years = int(str(dates[-1])[:4]) - int(str(dates[1])[:4]) + 1
    # the equity curve and the rolling Sharpe: one polyline each, one point per value
    assert drawn["equity"]["poly"] == 1 and drawn["equity"]["points"] == n
    assert drawn["rolling-sharpe"]["poly"] == 1
    assert drawn["rolling-sharpe"]["points"] == n - 126 + 1
    for chart in ("equity", "rolling-sharpe"):
        assert drawn[chart]["line"] > 600, (chart, drawn[chart])
    # the underwater area: one polygon (the n points plus two on the zero line), red pixels
    assert drawn["underwater"]["polygons"] == 1 and drawn["underwater"]["points"] == n + 2
    assert drawn["underwater"]["area"] > 2_000, drawn["underwater"]
    # the heatmap: 12 cells a year, both gains (green) and losses (red) painted
    assert drawn["heatmap"]["cells"] == 12 * years
    assert drawn["heatmap"]["green"] > 5_000 and drawn["heatmap"]["red"] > 2_000, drawn["heatmap"]
    for chart in CHARTS:
        assert drawn[chart]["ink"] > 500, (chart, drawn[chart])
    # dated by the bar's session: SPY's 2020 crash, close high 19 Feb, low 23 Mar (−33.7 %)
    assert worst.split()[:2] == ["2020-02-19", "2020-03-23"], worst
    assert worst.split()[3] == "-33.72%"

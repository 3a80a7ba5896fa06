"""``GET /backtests/{id}/report`` in headless Chromium, served on port 0: a vectorized grid job
with walk-forward over SPY daily. The trades-on-price chart draws one polyline point per bar and
one triangle per fill (buys green, sells red, each titled with its fill), the grid heat map one
cell per grid pair coloured by its Sharpe with the best one outlined, and screenshots of both
boxes show those colours actually painted."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from falcon import testing
from PIL import Image
from playwright.async_api import async_playwright

from engines.backtesting.api import routes
from engines.backtesting.report import BUY, SELL
from engines.backtesting.service import BacktestingConfig, BacktestingEngine
from engines.shell import create_app
from engines.shell.server import serve_app
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from tests.engines.analytics.test_report_page import LINE, near
from tests.realtime.hub.test_page import CHROMIUM, CHROMIUM_ARGS
from tests.support import until

FAST, SLOW = [5, 10, 20], [30, 60, 90]
BODY = {
    "strategy": "ma_cross", "mode": "vectorized", "symbols": ["SPY"], "bars": "1d",
    "from": "2012-01-01", "to": "2021-01-01", "costs": {"fee_bps": 1.0},
    "grid": {"fast": FAST, "slow": SLOW}, "walk_forward": {"train": 500, "test": 250},
}  # fmt: skip


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@pytest.fixture
async def engine() -> AsyncIterator[BacktestingEngine]:
    clock = SystemClock()
    config = BacktestingConfig(pbo_blocks=8, progress_interval_s=0.01)
    running = BacktestingEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await running.start()
    yield running
    await running.stop()


async def test_report_draws_trades_on_price_and_the_grid_heat_map(
    engine: BacktestingEngine,
) -> None:
    app = create_app(engine, version="t", routes=routes(engine))
    async with testing.ASGIConductor(app) as c:
        job = (await c.simulate_post("/backtests", json=BODY)).json["job"]
        await until(lambda: engine.jobs[job].status in ("done", "failed"), 120.0)
        result: dict[str, Any] = (await c.simulate_get(f"/backtests/{job}")).json["result"]
    assert engine.jobs[job].status == "done", engine.jobs[job].log
    server = await serve_app(app, host="127.0.0.1", port=0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1000, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                resp = await page.goto(f"http://127.0.0.1:{server.port}/backtests/{job}/report")
                assert resp is not None and resp.status == 200
                shot = Image.open(io.BytesIO(await page.screenshot(full_page=True)))
                pixels = np.asarray(shot.convert("RGB"))
                crops = {}
                for chart in ("price", "grid", "equity", "underwater"):
                    box = await page.locator(f"svg.chart.{chart}").bounding_box()
                    assert box is not None and box["width"] > 100 and box["height"] > 80, chart
                    x0, y0 = int(box["x"]), int(box["y"])
                    crops[chart] = pixels[y0 : y0 + int(box["height"]),
                                          x0 : x0 + int(box["width"])]  # fmt: skip
                price = await page.locator("svg.chart.price").evaluate(
                    "s => ({points: s.querySelector('polyline').points.length,"
                    " buys: [...s.querySelectorAll('polygon.fill.buy')].map(p => p.textContent),"
                    " sells: [...s.querySelectorAll('polygon.fill.sell')].map(p => p.textContent)})"
                )
                grid = await page.locator("svg.chart.grid").evaluate(
                    "s => [...s.querySelectorAll('rect')].map(r => ({title: r.textContent,"
                    " stroke: r.getAttribute('stroke'), fill: r.getAttribute('fill'),"
                    " box: (b => [b.x + scrollX, b.y + scrollY, b.width, b.height])"
                    "(r.getBoundingClientRect())}))"
                )
                windows = await page.locator("table.walk-forward tr").count()
            finally:
                await browser.close()
    finally:
        await server.stop()
    assert errors == []
    # the price chart: every bar's close, every fill as a titled marker of its side
    assert price["points"] == len(result["prices"]["close"]) > 1000
    fills = result["fills"]
    assert len(fills) > 20
    assert len(price["buys"]) == sum(f["side"] == "buy" for f in fills)
    assert len(price["sells"]) == sum(f["side"] == "sell" for f in fills)
    assert sorted(price["buys"] + price["sells"]) == sorted(
        f"{f['side']} {f['quantity']} @ {f['price']} " + title_time(f["event_ns"]) for f in fills
    )
    assert near(crops["price"], LINE) > 500
    assert near(crops["price"], rgb(BUY)) > 200 and near(crops["price"], rgb(SELL)) > 200
    # the heat map: one cell per (fast, slow), its Sharpe in its title, the best one outlined
    assert len(grid) == len(FAST) * len(SLOW)
    for point in result["grid"]:
        p = point["params"]
        title = f"fast={p['fast']}, slow={p['slow']}: Sharpe {point['sharpe']:.5f}"
        assert sum(cell["title"] == title for cell in grid) == 1, title
    outlined = [cell["title"] for cell in grid if cell["stroke"] == "#000"]
    best = result["best_params"]
    assert len(outlined) == 1 and outlined[0].startswith(
        f"fast={best['fast']}, slow={best['slow']}"
    )
    painted = set()
    for cell in grid:  # the screenshot shows each cell's colour at its centre
        x, y, w, h = cell["box"]
        level = [int(v) for v in cell["fill"][4:-1].split(",")]
        centre = pixels[int(y + h / 2), int(x + w / 2)].astype(int)
        assert np.abs(centre - level).max() <= 3, (cell, centre)
        painted.add("green" if level[1] > level[0] else "red" if level[0] > level[1] else "-")
    signs = {"green" if point["sharpe"] > 0 else "red" for point in result["grid"]}
    assert painted == signs
    # walk-forward: a header row and one per window
    assert windows == 1 + len(result["walk_forward"]["windows"]) >= 4


def title_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")

"""Regenerate docs/ui.png: the trading UI at 1280×800 over a replayed SPY day.

Starts the embedded platform in this process (hub and every engine on ports the OS picks, the
bundled SPY day replayed at max speed, no loop), opens the hub's ``/`` in headless Chromium
(``/usr/bin/chromium``, as the tests use) while the replay streams, waits until the replay is done
and the page has drawn its candles and VPIN, and writes the PNG. Prints what the page painted
(paints, the longest paint) so a freeze at max speed would show. Needs the dev extras
(Playwright) and Chromium: ``make screenshot``.

    .venv/bin/python infra/scripts/screenshot.py [--out docs/ui.png] [--day 2013-10-07]
        [--start 09:30] [--end 16:00] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Any

from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import async_playwright

from engines.shell.platform import Settings, run_embedded
from engines.shell.registry import ENGINES

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
#: The page's newest trade lies in its last candle's minute.
CAUGHT_UP = """(() => {
  const c = nautilusUI.candles(), s = nautilusUI.state();
  return c.length > 0 && s.lastTradeNs !== null && s.lastTradeNs / 1e9 >= c[c.length - 1].time;
})()"""


def environ(day: str, start: str, end: str) -> dict[str, str]:
    """One replayed day at max speed, every port chosen by the OS, default engine settings
    except VPIN's buckets (a tenth of the default volume: ten times the points on the chart)."""
    return {
        "NAUTILUS_HUB_PORT": "0",
        **{f"NAUTILUS_{name.upper()}_PORT": "0" for name in ENGINES},
        "NAUTILUS_VPIN_WARMUP_SYMBOLS": "0",
        "NAUTILUS_VPIN_BUCKET_VOLUME": "251458",
        "NAUTILUS_EVPIN_BUCKET_VOLUME": "251458",
        "NAUTILUS_MARKETDATA_SPEED": "0",
        "NAUTILUS_MARKETDATA_DAYS": day,
        "NAUTILUS_MARKETDATA_START": start,
        "NAUTILUS_MARKETDATA_END": end,
        "NAUTILUS_MARKETDATA_LOOP": "false",
    }


async def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def shoot(args: argparse.Namespace) -> int:
    env = environ(args.day, args.start, args.end)
    ready: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    platform = asyncio.create_task(
        run_embedded(
            Settings.from_env(env), env, out=io.StringIO(), stop=stop,
            on_ready=lambda hub, engines: ready.set_result((hub, engines)),
        )
    )  # fmt: skip
    try:
        hub, engines = await asyncio.wait_for(ready, 120)
        marketdata = engines["marketdata"].engine
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport=VIEWPORT)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"http://127.0.0.1:{hub.port}/?symbol=SPY")
                await wait_until(lambda: marketdata.progress.done, 600, "the replay")
                await page.wait_for_function(
                    "nautilusUI.candles().length > 30 && nautilusUI.vpin().length > 5",
                    timeout=60_000,
                )
                # the page has read the whole stream: its newest trade is in the last bar (on a
                # busy machine the browser may still be reading the backlog: then say so)
                try:
                    await page.wait_for_function(CAUGHT_UP, timeout=60_000)
                except PlaywrightTimeout:
                    for what in ("state", "banners"):
                        shown = await page.evaluate(f"JSON.stringify(nautilusUI.{what}())")
                        print(f"the page had not caught up; {what}: {shown}", file=sys.stderr)
                # a reconnect at max speed (the hub drops a browser that falls behind) leaves
                # notices that clear themselves once the page reloaded what it missed
                with contextlib.suppress(PlaywrightTimeout):
                    await page.wait_for_function(
                        "nautilusUI.banners().every(b => b.level === 'error')", timeout=15_000
                    )
                await page.wait_for_timeout(1_500)  # one status-bar tick, the last states
                args.out.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=args.out)
                paints = await page.evaluate("nautilusUI.paints()")
                state = await page.evaluate("nautilusUI.state()")
                if errors:
                    print("page errors:", *errors, sep="\n  ", file=sys.stderr)
                    return 1
            finally:
                await browser.close()
    finally:
        stop.set()
        code = await asyncio.wait_for(platform, 60)
    mean_ms = paints["totalMs"] / max(1, paints["count"])
    print(
        f"wrote {args.out} ({VIEWPORT['width']}×{VIEWPORT['height']}); "
        f"{state['messages']} messages, {paints['count']} paints, "
        f"longest paint {paints['maxMs']:.1f} ms, mean {mean_ms:.2f} ms"
    )
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui.png")
    parser.add_argument("--day", default="2013-10-07")
    parser.add_argument("--start", default="09:30")
    parser.add_argument("--end", default="16:00")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    return asyncio.run(shoot(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

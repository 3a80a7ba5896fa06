"""Embedded mode (``nautilus up``): one process, in-process bus, the hub, a feed, every engine.

Start order: bus → hub → engines → feed; shutdown is the reverse, each step bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from typing import Any, TextIO

from realtime.bus import MemoryBus
from realtime.clock import Clock, SystemClock
from realtime.config import load_settings
from realtime.hub import Hub, HubConfig
from realtime.replay import ReplayChunk, ReplayStats, replay

log = logging.getLogger("nautilus.embedded")

HUB_PREFIX = "NAUTILUS_HUB_"
FEED_PREFIX = "NAUTILUS_FEED_"


class FeedSource(StrEnum):
    SPY = "spy"  # the bundled SPY trades of 7-11 Oct 2013
    SIM = "sim"  # the seeded synthetic multi-symbol market
    NONE = "none"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True)
class FeedConfig:
    source: FeedSource = field(default=FeedSource.SPY, metadata=_help("spy, sim or none"))
    speed: float = field(default=1.0, metadata=_help("replay speed (1 = real time, 0 = max)"))
    start: str = field(
        default="09:30", metadata=_help("SPY: New York time of day to start from ('' = 04:00)")
    )
    loop: bool = field(default=True, metadata=_help("start again after the last event"))
    sim_symbols: int = field(default=20, metadata=_help("sim: number of symbols"))
    sim_rate: float = field(default=2_000.0, metadata=_help("sim: events per second"))
    seed: int = field(default=7, metadata=_help("sim: random seed"))

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if self.start:
            time.fromisoformat(self.start)

    def start_time(self) -> time | None:
        return time.fromisoformat(self.start) if self.start else None


@dataclass(frozen=True, slots=True)
class Feed:
    """What a feed publishes: channels to declare up front and a chunk source to pace."""

    channels: tuple[str, ...]
    chunks: Callable[[], Iterable[ReplayChunk]]
    speed: float
    loop: bool


def build_feed(config: FeedConfig) -> Feed | None:
    # Imported here: the feeds read numpy data files, which a hub-only process never needs.
    from engines.marketdata.feeds import SimulatorConfig
    from engines.marketdata.replay import simulated_chunks, spy_trade_chunks
    from protocol.channels import quotes, trades

    if config.source is FeedSource.NONE:
        return None
    if config.source is FeedSource.SPY:
        start = config.start_time()
        return Feed(
            (trades("SPY"),), lambda: spy_trade_chunks(start=start), config.speed, config.loop
        )
    sim = SimulatorConfig(
        n_symbols=config.sim_symbols, events_per_second=config.sim_rate, seed=config.seed
    )
    channels = tuple(f(s) for s in sim.symbols() for f in (trades, quotes))
    # The simulator is endless and already paced by its own event times.
    return Feed(channels, lambda: simulated_chunks(sim), max(config.speed, 1e-9), False)


@dataclass(frozen=True, slots=True)
class Settings:
    hub: HubConfig
    feed: FeedConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **hub_overrides: Any) -> Settings:
        hub = load_settings(HubConfig, environ, HUB_PREFIX, defaults=hub_overrides)
        return cls(hub, load_settings(FeedConfig, environ, FEED_PREFIX))


async def run_embedded(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    with_engines: bool = True,
    clock: Clock | None = None,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or ``stop`` is set); 0 on a clean stop."""
    from engines.shell.registry import ENGINES
    from engines.shell.server import RunningEngines, build_engine, run_engines

    clock = clock or SystemClock()
    bus = MemoryBus(clock=clock)
    hub = Hub(settings.hub, bus, clock=clock)
    feed = build_feed(settings.feed)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engines: RunningEngines | None = None
    feed_task: asyncio.Task[ReplayStats] | None = None
    try:
        await hub.start()
        host = settings.hub.host
        print(f"hub        ws://{host}:{hub.port}/   explorer http://{host}:{hub.port}/", file=out)
        print(
            f"           http://{host}:{hub.port}/health   http://{host}:{hub.port}/metrics",
            file=out,
        )
        if with_engines and ENGINES:
            built = [build_engine(spec, environ, bus=bus, clock=clock) for spec in ENGINES.values()]
            engines = await run_engines(built)
            for running in engines.running:
                print(
                    f"{running.engine.name:<10} http://{running.host}:{running.port}/health",
                    file=out,
                )
        if feed is not None:
            hub.declare(feed.channels)
            feed_task = asyncio.create_task(
                replay(bus, feed.chunks, speed=feed.speed, clock=clock, loop_forever=feed.loop),
                name="feed",
            )
            shown = ", ".join(feed.channels[:4]) + (" ..." if len(feed.channels) > 4 else "")
            print(
                f"feed       {settings.feed.source.value} x{settings.feed.speed}: {shown}", file=out
            )
        out.flush()
        await _until(stop, feed_task)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if feed_task is not None:
            feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed_task
        if engines is not None:
            await engines.stop()
        await hub.stop()
        await bus.close()


async def _until(stop: asyncio.Event, feed_task: asyncio.Task[Any] | None) -> None:
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if feed_task is not None:
        waits.append(feed_task)
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    waits[0].cancel()
    if feed_task is not None and feed_task in done and not feed_task.cancelled():
        exc = feed_task.exception()
        if exc is not None:
            log.error("feed stopped: %r", exc)
            raise exc
        await stop.wait()  # a finite replay ended: keep serving until told to stop

"""Embedded mode (``nautilus up``): one process, in-process bus, the hub and every engine.

The MarketData engine owns the feed (a replay of the bundled SPY trades by default); its
channels, like every engine's, are declared to the hub before anything is published. Start order:
bus → hub → engines; shutdown is the reverse, each step bounded.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from realtime.bus import Bus, MemoryBus
from realtime.clock import Clock, SystemClock
from realtime.config import load_settings
from realtime.hub import Hub, HubConfig

if TYPE_CHECKING:
    from engines.shell.server import RunningEngines

HUB_PREFIX = "NAUTILUS_HUB_"


@dataclass(frozen=True, slots=True)
class Settings:
    hub: HubConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **hub_overrides: Any) -> Settings:
        return cls(load_settings(HubConfig, environ, HUB_PREFIX, defaults=hub_overrides))


async def run_embedded(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    with_engines: bool = True,
    engine_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    bus: Bus | None = None,
    clock: Clock | None = None,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Hub, RunningEngines | None], None] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or ``stop`` is set); 0 on a clean stop.

    ``engine_overrides`` maps an engine name to config fields that win over the environment
    (command-line flags such as ``--feed``). ``bus``: the bus to serve (a connected ``RedisBus``
    in distributed mode, see ``realtime.distributed.open_bus``); by default a new in-process
    ``MemoryBus``. Closed on return either way. ``on_ready`` is called once everything runs
    (tests and embedders reach the hub and the engines through it).
    """
    from engines.shell.registry import ENGINES
    from engines.shell.server import build_engine, run_engines

    clock = clock or SystemClock()
    bus = bus or MemoryBus(clock=clock)
    hub = Hub(settings.hub, bus, clock=clock)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engines: RunningEngines | None = None
    overrides = engine_overrides or {}
    try:
        await hub.start()
        host = settings.hub.host
        print(f"hub        ws://{host}:{hub.port}/   explorer http://{host}:{hub.port}/", file=out)
        print(
            f"           http://{host}:{hub.port}/health   http://{host}:{hub.port}/metrics",
            file=out,
        )
        if with_engines and ENGINES:
            built = [
                build_engine(spec, environ, bus=bus, clock=clock, overrides=overrides.get(name))
                for name, spec in ENGINES.items()
            ]
            for engine in built:
                hub.declare(engine.declared_channels())
            engines = await run_engines(built)
            for running in engines.running:
                print(
                    f"{running.engine.name:<10} http://{running.host}:{running.port}/health",
                    file=out,
                )
        out.flush()
        if on_ready is not None:
            on_ready(hub, engines)
        await stop.wait()
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if engines is not None:
            await engines.stop()
        await hub.stop()
        await bus.close()

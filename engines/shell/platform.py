"""The composition root: the whole platform assembled from the registry, embedded or distributed.

This module sits above both layers: it may import every engine (through the registry) and
``realtime`` (hub, bus, storage, supervisor); ``realtime/`` never imports ``engines/``.

**Embedded** (``nautilus up``): one process, in-process bus, the hub, the platform's storage and
every engine. Start order: bus → storage → hub → engines in ``registry.start_order`` (consumers
before feeds, so every consumer is subscribed before the first message); every engine's channels
are declared to the hub first. Shutdown is the reverse, each step bounded.

**Distributed** (``nautilus up --distributed``): the supervisor (``realtime.supervisor``) runs N
hubs, then every engine as its own process, in the same start order, all on one Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from engines.shell.lifecycle import Engine
from engines.shell.registry import ENGINES, Role, engine_spec, start_order
from engines.shell.server import RunningEngines, build_engine, run_engines
from engines.shell.status import (
    STATUS_PREFIX,
    EngineTarget,
    StatusConfig,
    collect_status,
    configured_targets,
)
from protocol.channels import STREAM_KINDS, channel, kind_of
from realtime.bus import Bus, BusUnavailable, MemoryBus
from realtime.bus.redis import RedisBus, RedisBusConfig, redacted_url
from realtime.clock import Clock, SystemClock
from realtime.config import ConfigError, load_settings
from realtime.distributed import (
    BUS_URL_VARIABLE,
    HUB_PREFIX,
    SUPERVISOR_PREFIX,
    distributed_bus,
)
from realtime.hub import Hub, HubConfig
from realtime.shutdown import stop_then_force
from realtime.storage import STORAGE_PREFIX, Storage, StorageConfig
from realtime.supervisor import ChildSpec, Supervisor, SupervisorConfig

__all__ = [
    "FEED_RANK",
    "HUB_RANK",
    "Settings",
    "distributed_children",
    "run_distributed",
    "run_embedded",
    "stop_then_force",
]

#: Supervisor start ranks (stop runs them backwards): hubs, then engines by registry order.
HUB_RANK = 0
ENGINE_RANK_BASE = 1
#: The rank a feed engine gets (after every consumer), for the tests and the printed layout.
FEED_RANK = ENGINE_RANK_BASE + 1


@dataclass(frozen=True, slots=True)
class Settings:
    """What one embedded process reads from the environment besides the engines' own settings."""

    hub: HubConfig
    storage: StorageConfig
    status: StatusConfig = field(default_factory=StatusConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **hub_overrides: Any) -> Settings:
        return cls(
            load_settings(HubConfig, environ, HUB_PREFIX, defaults=hub_overrides),
            load_settings(StorageConfig, environ, STORAGE_PREFIX),
            load_settings(StatusConfig, environ, STATUS_PREFIX),
        )


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
    clock = clock or SystemClock()
    bus = bus or MemoryBus(clock=clock)
    storage = Storage(settings.storage, clock=clock)
    # GET /status: the engines this process runs (their real ports, filled in once they run),
    # or, for a hub alone (distributed), every registered engine where its settings put it
    targets: list[EngineTarget] = (
        [] if with_engines else configured_targets(environ, settings.status)
    )

    async def platform_status() -> dict[str, Any]:
        return await collect_status(
            targets,
            settings.status,
            clock=clock,
            hub=hub.status_section(),
            storage=storage.health() if with_engines else None,
        )

    hub = Hub(settings.hub, bus, clock=clock, status=platform_status)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    on_signal = stop_then_force(stop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    engines: RunningEngines | None = None
    overrides = engine_overrides or {}
    try:
        built: list[Engine[Any]] = []
        if with_engines:
            await storage.open()
            # declared before the hub accepts a connection: a subscribe to any channel an
            # engine will publish succeeds from the first moment (data follows when it exists)
            built = [
                build_engine(
                    engine_spec(name),
                    environ,
                    bus=bus,
                    clock=clock,
                    storage=storage,
                    overrides=overrides.get(name),
                )
                for name in start_order(ENGINES)
            ]
            declared = [name for engine in built for name in engine.declared_channels()]
            hub.declare(declared)
            hub.declare(per_key_channels(built, feed_symbols(declared), accounts(declared)))
        await hub.start()
        host = settings.hub.host
        base = f"http://{host}:{hub.port}"
        print(
            f"hub        ws://{host}:{hub.port}/   trading UI {base}/   explorer {base}/explorer",
            file=out,
        )
        print(f"           {base}/health   {base}/metrics   {base}/status", file=out)
        if built:
            engines = await run_engines(built)
            targets[:] = [
                EngineTarget(r.engine.name, _reachable(r.host), r.port) for r in engines.running
            ]
            for running in engines.running:
                print(
                    f"{running.engine.name:<10} http://{running.host}:{running.port}/health",
                    file=out,
                )
            print(f"storage    {storage.kind}", file=out)
        out.flush()
        if on_ready is not None:
            on_ready(hub, engines)
        await stop.wait()
        return 0
    finally:
        try:
            if engines is not None:
                await engines.stop()
            await hub.stop()
            await storage.close()
            await bus.close()
        finally:
            # only now: a signal during the shutdown above must reach ``on_signal``, not
            # Python's default handler (a KeyboardInterrupt traceback)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def feed_symbols(declared: Sequence[str]) -> list[str]:
    """The symbols the feeds will trade: those of the declared ``trades.<symbol>`` channels."""
    return sorted({name.split(".", 1)[1] for name in declared if kind_of(name) == "trades"})


def accounts(declared: Sequence[str]) -> list[str]:
    """The accounts the platform keeps: those of the declared ``pnl.<account>`` channels."""
    return sorted({name.split(".", 1)[1] for name in declared if kind_of(name) == "pnl"})


def per_key_channels(
    engines: Sequence[Engine[Any]], symbols: Sequence[str], accounts: Sequence[str]
) -> list[str]:
    """What consumers will publish per feed symbol (and per account), declared before the
    first message so a client may subscribe to ``features.SPY`` or ``ml.logistic.SPY`` at once.

    Every ``*`` of a consumer's stream pattern is filled by the parameter it stands for (the
    kind's parameters, ``protocol.channels.STREAM_KINDS``): a ``symbol`` with every feed symbol
    (``vpin.*``, ``ml.logistic.*``, ``factor.market.*``), a ``key`` with every symbol and account
    (``analytics.*``). A pattern with any other wildcard (``backtest.<job>``, ``orders.<account>``,
    ``collateral.<agreement>``) is left to the engine's own ``declared_channels`` or to its first
    message. A feed is not expanded: its ``declared_channels`` names exactly what the configured
    feed publishes (the SPY replay has trades and bars, no quotes or book).
    """
    values: dict[str, Sequence[str]] = {"symbol": symbols, "key": (*symbols, *accounts)}
    names: list[str] = []
    for engine in engines:
        spec = ENGINES.get(engine.name)
        if spec is not None and spec.role is Role.FEED:
            continue
        for stream in engine.streams():
            names += _expand(stream.channel, values)
    return names


def _expand(pattern: str, values: Mapping[str, Sequence[str]]) -> list[str]:
    """The channels ``pattern`` names when each ``*`` takes every value of its parameter in
    ``values``; none when it is literal, malformed, or has a wildcard ``values`` cannot fill."""
    kind = kind_of(pattern)
    spec = STREAM_KINDS.get(kind)
    segments = pattern.split(".")[kind.count(".") + 1 :]
    if spec is None or "*" not in segments or len(segments) != len(spec.params):
        return []
    choices: list[Sequence[str]] = []
    for param, segment in zip(spec.params, segments, strict=True):
        if segment != "*":
            choices.append((segment,))
        elif param in values:
            choices.append(values[param])
        else:
            return []
    return [channel(kind, *combination) for combination in itertools.product(*choices)]


def _reachable(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def distributed_children(
    environ: Mapping[str, str],
    bus: RedisBusConfig,
    *,
    hubs: int,
    engines: Sequence[str],
    python: str = sys.executable,
) -> list[ChildSpec]:
    """The supervised processes: ``hubs`` hubs, then ``engines`` in registry start order (each
    rank after the previous one's, so feeds come last)."""
    if hubs < 1:
        raise ConfigError("--hubs", f"at least one hub, got {hubs}")
    cli = (python, "-m", "engines.shell.cli")
    # every NAUTILUS_ setting of this process (flags included) reaches every child
    shared = {k: v for k, v in environ.items() if k.startswith("NAUTILUS_")}
    shared[BUS_URL_VARIABLE] = bus.url
    # the hubs' /status expects exactly the engines this layout runs
    shared[f"{STATUS_PREFIX}ENGINES"] = ",".join(start_order(engines))
    base = load_settings(HubConfig, environ, HUB_PREFIX).port
    children = []
    for i in range(hubs):
        port = base + i if base else 0
        # the port goes in the environment: NAUTILUS_HUB_PORT wins over `nautilus hub --port`
        env = {**shared, f"{HUB_PREFIX}PORT": str(port)}
        # engines in other processes declare nothing to this hub: channels appear when published
        env.setdefault(f"{HUB_PREFIX}IMPLICIT_CHANNELS", "true")
        children.append(ChildSpec(f"hub-{i}", (*cli, "hub"), HUB_RANK, env, port or None))
    # one supervisor rank per distinct registry start rank: consumers, then feeds
    ranks = sorted(
        {s.start_rank for s in ENGINES.values()} | {engine_spec(n).start_rank for n in engines}
    )
    for name in start_order(engines):
        spec = engine_spec(name)
        variable = f"NAUTILUS_{name.upper()}_PORT"
        try:
            port = int(environ.get(variable, spec.port))
        except ValueError:
            raise ConfigError(variable, f"expected an integer, got {environ[variable]!r}") from None
        rank = ENGINE_RANK_BASE + ranks.index(spec.start_rank)
        argv = (*cli, "engine", name, "--port", str(port))
        children.append(ChildSpec(name, argv, rank, shared, port or None))
    return children


async def run_distributed(
    environ: Mapping[str, str],
    *,
    hubs: int,
    engines: Sequence[str] | None = None,
    clock: Clock | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """``nautilus up --distributed``: check Redis, then supervise until SIGTERM/SIGINT.

    ``engines`` defaults to every registered engine. Returns 0 after a clean stop, 1 if Redis
    cannot be reached at start, 2 for a configuration error.
    """
    clock = clock or SystemClock()
    try:
        bus = distributed_bus(environ)
        config = load_settings(SupervisorConfig, environ, SUPERVISOR_PREFIX)
        names = list(ENGINES) if engines is None else list(engines)
        children = distributed_children(environ, bus, hubs=hubs, engines=names)
    except (ConfigError, LookupError) as exc:
        print(f"nautilus up --distributed: {exc}", file=sys.stderr)
        return 2
    try:
        probe = await RedisBus.connect(bus, clock=clock)
    except BusUnavailable as exc:
        print(f"nautilus up --distributed: {exc}", file=sys.stderr)
        return 1
    await probe.close()
    supervisor = Supervisor(
        config, children, clock=clock, describe={"bus": redacted_url(bus.url), "hubs": hubs}
    )
    print(
        f"supervisor http://{config.host}:{config.port}/health  bus {redacted_url(bus.url)}",
        file=out,
    )
    for child in children:
        where = f"port {child.port}" if child.port else "port chosen by the OS"
        print(f"{child.name:<12} rank {child.rank}  {where}", file=out)
    out.flush()
    return await supervisor.run()

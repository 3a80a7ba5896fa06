"""Distributed mode: the bus chosen by configuration, and the processes of ``up --distributed``.

**The bus**, decided here for every process (``nautilus hub``, ``nautilus engine NAME``, the
supervisor): ``NAUTILUS_BUS_URL`` unset or ``memory`` is the in-process ``MemoryBus``; a
``redis://``, ``rediss://`` or ``unix://`` URL is the ``RedisBus`` with every other field of
``RedisBusConfig`` read from ``NAUTILUS_BUS_*`` (``NAUTILUS_BUS_KEY_PREFIX``,
``NAUTILUS_BUS_STREAM_MAXLEN``, ...). Redis unreachable at start is ``BusUnavailable`` naming the
URL within ``NAUTILUS_BUS_CONNECT_TIMEOUT_S``: the process prints it and exits 1, never hangs.

**The layout** ``nautilus up --distributed [--hubs N] [--engines a,b]`` supervises
(``realtime.supervisor``), all on one Redis:

* ``hub-0`` .. ``hub-{N-1}``: ``nautilus hub`` on ``NAUTILUS_HUB_PORT`` + i (8600, 8601, ...).
  Separate ports rather than SO_REUSEPORT: a client (or a load balancer) picks its hub and can
  move to another one. Each hub subscribes to every channel, so its resume ring holds every
  message and a client resumes on any hub (numbering is Redis's, shared by all).
* every registered engine as ``nautilus engine NAME --port P`` on its registry port
  (``NAUTILUS_<NAME>_PORT`` overrides). The MarketData engine owns the feed.
* start order hubs → engines → feed engine (consumers subscribe before anything is published);
  stop order the reverse: feed → engines → hubs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from realtime.bus import Bus, MemoryBus
from realtime.bus.redis import RedisBus, RedisBusConfig, redacted_url
from realtime.clock import Clock, SystemClock
from realtime.config import ConfigError, load_settings
from realtime.hub import HubConfig
from realtime.supervisor import ChildSpec, Supervisor, SupervisorConfig

BUS_PREFIX = "NAUTILUS_BUS_"
BUS_URL_VARIABLE = "NAUTILUS_BUS_URL"
SUPERVISOR_PREFIX = "NAUTILUS_SUPERVISOR_"
HUB_PREFIX = "NAUTILUS_HUB_"
MEMORY = "memory"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: Engines that own a feed: started last and stopped first (the source of the data).
FEED_ENGINES = frozenset({"marketdata"})
#: Start ranks (stop runs them backwards).
HUB_RANK, ENGINE_RANK, FEED_RANK = 0, 1, 2


@dataclass(frozen=True, slots=True)
class BusChoice:
    """The configured bus: ``redis`` is None for the in-process bus."""

    redis: RedisBusConfig | None

    @property
    def shared(self) -> bool:
        """True when several processes can share it (Redis)."""
        return self.redis is not None

    def describe(self) -> str:
        return f"{MEMORY} (in-process)" if self.redis is None else redacted_url(self.redis.url)


def choose_bus(environ: Mapping[str, str]) -> BusChoice:
    """Read ``NAUTILUS_BUS_*``; ``ConfigError`` names a bad variable (checked for either bus)."""
    url = environ.get(BUS_URL_VARIABLE, "").strip()
    if url in ("", MEMORY):
        rest = {
            k: v for k, v in environ.items() if k.startswith(BUS_PREFIX) and k != BUS_URL_VARIABLE
        }
        load_settings(RedisBusConfig, rest, BUS_PREFIX)  # a typo is an error on either bus
        return BusChoice(None)
    if not url.startswith(REDIS_SCHEMES):
        raise ConfigError(BUS_URL_VARIABLE, f"expected '{MEMORY}' or a redis:// URL, got {url!r}")
    return BusChoice(load_settings(RedisBusConfig, environ, BUS_PREFIX))


async def open_bus(choice: BusChoice, clock: Clock) -> Bus:
    """The chosen bus, connected; ``BusUnavailable`` (naming the URL) if Redis cannot be reached."""
    if choice.redis is None:
        return MemoryBus(clock=clock)
    return await RedisBus.connect(choice.redis, clock=clock)


def distributed_bus(environ: Mapping[str, str]) -> RedisBusConfig:
    """The Redis of ``up --distributed``: ``NAUTILUS_BUS_URL``, by default RedisBusConfig's."""
    if environ.get(BUS_URL_VARIABLE, "").strip() in ("", MEMORY):
        if environ.get(BUS_URL_VARIABLE, "").strip() == MEMORY:
            raise ConfigError(BUS_URL_VARIABLE, "distributed mode needs a redis:// URL, not memory")
        environ = {**environ, BUS_URL_VARIABLE: RedisBusConfig().url}
    choice = choose_bus(environ)
    assert choice.redis is not None
    return choice.redis


def distributed_children(
    environ: Mapping[str, str],
    bus: RedisBusConfig,
    *,
    hubs: int,
    engines: Sequence[str],
    python: str = sys.executable,
) -> list[ChildSpec]:
    """The supervised processes: ``hubs`` hubs, then ``engines``, the feed engine last."""
    from engines.shell.registry import engine_spec

    if hubs < 1:
        raise ConfigError("--hubs", f"at least one hub, got {hubs}")
    cli = (python, "-m", "realtime.cli")
    # every NAUTILUS_ setting of this process (flags included) reaches every child
    shared = {k: v for k, v in environ.items() if k.startswith("NAUTILUS_")}
    shared[BUS_URL_VARIABLE] = bus.url
    base = load_settings(HubConfig, environ, HUB_PREFIX).port
    children = []
    for i in range(hubs):
        port = base + i if base else 0
        # the port goes in the environment: NAUTILUS_HUB_PORT wins over `nautilus hub --port`
        env = {**shared, f"{HUB_PREFIX}PORT": str(port)}
        # engines in other processes declare nothing to this hub: channels appear when published
        env.setdefault(f"{HUB_PREFIX}IMPLICIT_CHANNELS", "true")
        children.append(ChildSpec(f"hub-{i}", (*cli, "hub"), HUB_RANK, env, port or None))
    for name in engines:
        spec = engine_spec(name)
        variable = f"NAUTILUS_{name.upper()}_PORT"
        try:
            port = int(environ.get(variable, spec.port))
        except ValueError:
            raise ConfigError(variable, f"expected an integer, got {environ[variable]!r}") from None
        rank = FEED_RANK if name in FEED_ENGINES else ENGINE_RANK
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
    from engines.shell.registry import ENGINES
    from realtime.bus import BusUnavailable

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

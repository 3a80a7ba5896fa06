"""Distributed mode: the bus chosen by configuration, and the processes of ``up --distributed``.

**The bus**, decided here for every process (``nautilus hub``, ``nautilus engine NAME``, the
supervisor): ``NAUTILUS_BUS_URL`` unset or ``memory`` is the in-process ``MemoryBus``; a
``redis://``, ``rediss://`` or ``unix://`` URL is the ``RedisBus`` with every other field of
``RedisBusConfig`` read from ``NAUTILUS_BUS_*`` (``NAUTILUS_BUS_KEY_PREFIX``,
``NAUTILUS_BUS_STREAM_MAXLEN``, ...). Redis unreachable at start is ``BusUnavailable`` naming the
URL within ``NAUTILUS_BUS_CONNECT_TIMEOUT_S``: the process prints it and exits 1, never hangs.
``NAUTILUS_BUS_CLUSTER=true`` makes it a Redis Cluster client (the URL names any one master;
sharded pub/sub, each channel's keys in one slot: ``realtime.bus.redis.RedisKeys``); a plain bus
pointed at a cluster node, or the reverse, is refused at start the same way.

**The layout** ``nautilus up --distributed [--hubs N] [--engines a,b]`` supervises
(``realtime.supervisor``), all on one Redis; it is composed above both layers, in
``engines.shell.platform`` (which may import every engine; ``realtime/`` imports none):

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

from collections.abc import Mapping
from dataclasses import dataclass

from realtime.bus import Bus, MemoryBus
from realtime.bus.redis import RedisBus, RedisBusConfig, redacted_url
from realtime.clock import Clock
from realtime.config import ConfigError, load_settings

BUS_PREFIX = "NAUTILUS_BUS_"
BUS_URL_VARIABLE = "NAUTILUS_BUS_URL"
SUPERVISOR_PREFIX = "NAUTILUS_SUPERVISOR_"
HUB_PREFIX = "NAUTILUS_HUB_"
MEMORY = "memory"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


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

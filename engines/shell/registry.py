"""Which engines exist, where their code lives, their role, start rank and default port.

``ENGINES`` lists only engines whose code exists. Each entry names its ``Engine`` class and its
REST factory (``api.routes``) by dotted path, imported lazily: listing the registry imports no
engine (and no JAX), and ``service.py`` never imports its ``api.py`` (nor the reverse at import
time). Adding an engine is one line::

    EngineSpec("features", "engines.features.service:FeaturesEngine", "engines.features.api:routes")

Start order comes from ``role`` and ``rank``, never from dict order: consumers start first (each
subscribed before anything is published), feeds last; the embedded runner, the supervisor and the
CLI all read ``start_order()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engines.shell.lifecycle import Engine, Route

#: The platform's original deployment ports; defaults only (``NAUTILUS_<ENGINE>_PORT`` overrides).
ENGINE_PORTS: dict[str, int] = {
    "analytics": 8100,
    "backtesting": 8110,
    "risk": 8200,
    "factor": 8300,
    "ml": 8400,
    "features": 8500,
    "strategy": 8700,
    "marketdata": 8800,
    "portfolio": 8900,
    "collateral": 9000,
    "vpin": 10000,
    "evpin": 10001,
}
#: The WebSocket hub's port: not an engine, listed so no engine is ever given it.
HUB_PORT = 8600


class Role(StrEnum):
    """What an engine is to the others: a ``feed`` publishes market data from outside the bus
    (starts last, so every consumer is subscribed first); a ``consumer`` reads the bus."""

    CONSUMER = "consumer"
    FEED = "feed"


#: Where each role starts: lower first. Within a role, ``EngineSpec.rank`` orders.
ROLE_RANK = {Role.CONSUMER: 10, Role.FEED: 20}


class UnknownEngine(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        listed = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown engine {name!r} (known: {listed})")
        self.name = name


RoutesFactory = Callable[[Any], Sequence[Route]]


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One registry line: name, ``"module:Class"`` of the engine, ``"module:function"`` of its
    REST routes (``function(engine) -> [(uri, resource), ...]``), role and rank in its role."""

    name: str
    target: str
    api: str = ""
    role: Role = Role.CONSUMER
    rank: int = 0

    def __post_init__(self) -> None:
        if self.name not in ENGINE_PORTS:
            raise ValueError(f"engine {self.name!r} has no port in ENGINE_PORTS: add it there")
        for path in (self.target, self.api):
            if path and ":" not in path:
                raise ValueError(f"need 'module:Class' / 'module:function', got {path!r}")

    @property
    def port(self) -> int:
        """The default port (docs/architecture.md, "Processes and ports")."""
        return ENGINE_PORTS[self.name]

    @property
    def start_rank(self) -> tuple[int, int]:
        return ROLE_RANK[self.role], self.rank

    def config_defaults(self) -> dict[str, Any]:
        """What the registry decides about the engine's config: its name and default port.
        Pass to ``load_config``/``describe_config`` as ``defaults=``."""
        return {"name": self.name, "port": self.port}

    def load(self) -> type[Engine[Any]]:
        """Import the engine class (the first time the engine is actually used)."""
        engine_class = _import(self.target)
        if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
            raise TypeError(f"{self.target} is not an Engine subclass")
        return engine_class

    def routes(self, engine: Engine[Any]) -> Sequence[Route]:
        """The engine's REST routes, built by its ``api`` factory (none without one)."""
        if not self.api:
            return ()
        factory: RoutesFactory = _import(self.api)
        return factory(engine)


def _import(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


#: The engines that exist. One line per engine.
ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            "analytics", "engines.analytics.service:AnalyticsEngine", "engines.analytics.api:routes"
        ),
        EngineSpec(
            "backtesting",
            "engines.backtesting.service:BacktestingEngine",
            "engines.backtesting.api:routes",
        ),
        EngineSpec(
            "collateral",
            "engines.collateral.service:CollateralEngine",
            "engines.collateral.api:routes",
        ),
        EngineSpec("factor", "engines.factor.service:FactorEngine", "engines.factor.api:routes"),
        EngineSpec(
            "features", "engines.features.service:FeaturesEngine", "engines.features.api:routes"
        ),
        EngineSpec("ml", "engines.ml.service:MlEngine", "engines.ml.api:routes"),
        EngineSpec(
            "portfolio", "engines.portfolio.service:PortfolioEngine", "engines.portfolio.api:routes"
        ),
        EngineSpec("risk", "engines.risk.service:RiskEngine", "engines.risk.api:routes"),
        EngineSpec(
            "strategy", "engines.strategy.service:StrategyEngine", "engines.strategy.api:routes"
        ),
        EngineSpec("vpin", "engines.vpin.service:VpinEngine", "engines.vpin.api:routes"),
        EngineSpec("evpin", "engines.evpin.service:EnhancedVpinEngine", "engines.evpin.api:routes"),
        EngineSpec(
            "marketdata",
            "engines.marketdata.service:MarketDataEngine",
            "engines.marketdata.api:routes",
            role=Role.FEED,
        ),
    )
}


def engine_spec(name: str, registry: dict[str, EngineSpec] | None = None) -> EngineSpec:
    """The registry entry for ``name``; ``UnknownEngine`` lists the known ones."""
    specs = ENGINES if registry is None else registry
    try:
        return specs[name]
    except KeyError:
        raise UnknownEngine(name, specs) from None


def start_order(names: Iterable[str], registry: dict[str, EngineSpec] | None = None) -> list[str]:
    """``names`` in start order: consumers before feeds, then by rank, then by name."""
    specs = [engine_spec(name, registry) for name in names]
    return [s.name for s in sorted(specs, key=lambda s: (*s.start_rank, s.name))]


def routes_for(engine: Engine[Any], registry: dict[str, EngineSpec] | None = None) -> list[Route]:
    """The REST routes the registry's factory builds for ``engine`` (matched by its class);
    an engine outside the registry (a test's) has none."""
    specs = ENGINES if registry is None else registry
    cls = type(engine)
    for spec in specs.values():
        module_name, _, class_name = spec.target.partition(":")
        if cls.__module__ == module_name and cls.__qualname__ == class_name:
            return list(spec.routes(engine))
    return []

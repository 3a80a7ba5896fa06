"""Which engines exist, where their code lives, and their default ports (DESIGN.md, "Ports").

``ENGINES`` lists only engines whose code exists; each entry names its class by dotted path and
is imported lazily, so listing the registry imports no engine (and no JAX). Adding an engine is
one line::

    "marketdata": EngineSpec("marketdata", "engines.marketdata.service:MarketDataEngine"),
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engines.shell.lifecycle import Engine

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


class UnknownEngine(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        listed = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown engine {name!r} (known: {listed})")
        self.name = name


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One registry line: the engine's name and its class as ``"module:Class"``."""

    name: str
    target: str

    def __post_init__(self) -> None:
        if self.name not in ENGINE_PORTS:
            raise ValueError(f"engine {self.name!r} has no port in ENGINE_PORTS: add it there")
        if ":" not in self.target:
            raise ValueError(f"target must be 'module:Class', got {self.target!r}")

    @property
    def port(self) -> int:
        """The default port (DESIGN.md table)."""
        return ENGINE_PORTS[self.name]

    def config_defaults(self) -> dict[str, Any]:
        """What the registry decides about the engine's config: its name and default port.
        Pass to ``load_config``/``describe_config`` as ``defaults=``."""
        return {"name": self.name, "port": self.port}

    def load(self) -> type[Engine[Any]]:
        """Import the engine class (the first time the engine is actually used)."""
        module_name, _, class_name = self.target.partition(":")
        engine_class = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
            raise TypeError(f"{self.target} is not an Engine subclass")
        return engine_class


#: The engines that exist, in start order for embedded mode. One line per engine.
ENGINES: dict[str, EngineSpec] = {
    # consumers first, so each is subscribed before the feed publishes its first message
    "vpin": EngineSpec("vpin", "engines.vpin.service:VpinEngine"),
    "evpin": EngineSpec("evpin", "engines.evpin.service:EnhancedVpinEngine"),
    # the feed last
    "marketdata": EngineSpec("marketdata", "engines.marketdata.service:MarketDataEngine"),
}


def engine_spec(name: str, registry: dict[str, EngineSpec] | None = None) -> EngineSpec:
    """The registry entry for ``name``; ``UnknownEngine`` lists the known ones."""
    specs = ENGINES if registry is None else registry
    try:
        return specs[name]
    except KeyError:
        raise UnknownEngine(name, specs) from None

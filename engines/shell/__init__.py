"""The shell every engine stands on: lifecycle, config, registry, Falcon app, server.

A newcomer who knows one engine knows all twelve: subclass ``Engine`` and ``EngineConfig``,
add Falcon resources, add one line to ``registry.ENGINES``.
"""

from __future__ import annotations

from engines.shell.app import EngineApp, create_app, error_body
from engines.shell.config import (
    ConfigError,
    ConfigVariable,
    EngineConfig,
    describe_config,
    load_config,
)
from engines.shell.errors import ConflictError, DomainError, NotFoundError, ValidationError
from engines.shell.lifecycle import Engine, EngineState, Route, StreamInfo
from engines.shell.registry import ENGINE_PORTS, ENGINES, HUB_PORT, EngineSpec, engine_spec
from engines.shell.server import (
    RunningEngine,
    RunningEngines,
    build_engine,
    main_engine,
    run_engine,
    run_engines,
)

__all__ = [
    "ENGINES",
    "ENGINE_PORTS",
    "HUB_PORT",
    "ConfigError",
    "ConfigVariable",
    "ConflictError",
    "DomainError",
    "Engine",
    "EngineApp",
    "EngineConfig",
    "EngineSpec",
    "EngineState",
    "NotFoundError",
    "Route",
    "RunningEngine",
    "RunningEngines",
    "StreamInfo",
    "ValidationError",
    "build_engine",
    "create_app",
    "describe_config",
    "engine_spec",
    "error_body",
    "load_config",
    "main_engine",
    "run_engine",
    "run_engines",
]

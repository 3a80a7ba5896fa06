"""Engine configuration: one frozen typed dataclass per engine, read from the environment once.

Each engine subclasses ``EngineConfig`` with its own fields (defaults documented by
``field(metadata={"help": ...})``). ``load_config`` is the one place a process reads them:
``NAUTILUS_<ENGINE>_<FIELD>``, e.g. ``NAUTILUS_MARKETDATA_PORT=8801``, converted by the field's
declared type. Typos are errors: an unknown variable under the engine's prefix is rejected, so a
misspelt setting never silently keeps its default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from realtime.config import ConfigError, ConfigVariable, describe_settings, described, load_settings

__all__ = [
    "ConfigError",
    "ConfigVariable",
    "EngineConfig",
    "describe_config",
    "env_prefix",
    "load_config",
]

DEFAULT_PREFIX = "NAUTILUS_"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Settings every engine has. ``name`` is the registry name and is not read from the env."""

    name: str = field(default="engine", metadata={"help": "engine name", "env": False})
    host: str = field(default="127.0.0.1", metadata=described("interface the REST server binds"))
    port: int = field(default=0, metadata=described("REST port (0 = any free port)"))
    drain_timeout_s: float = field(
        default=5.0, metadata=described("seconds stop() waits for queued input before cancelling")
    )
    max_batch: int = field(default=1024, metadata=described("most bus messages handled per batch"))
    compute_threads: int = field(
        default=2, metadata=described("threads for CPU-heavy work run off the event loop")
    )
    db_dsn: str = field(
        default="",
        metadata=described(
            "this engine's own PostgreSQL DSN ('' = the platform's NAUTILUS_DB_DSN)"
        ),
    )
    db_schema: str = field(
        default="nautilus", metadata=described("schema for db_dsn (when it is set)")
    )
    max_body_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=described("largest REST request body; larger answers 413 before it is read"),
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.compute_threads < 1:
            raise ValueError(f"compute_threads must be >= 1, got {self.compute_threads}")
        if self.max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {self.max_body_bytes}")


ConfigT = TypeVar("ConfigT", bound=EngineConfig)


def env_prefix(engine: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``env_prefix("marketdata") == "NAUTILUS_MARKETDATA_"``."""
    return f"{prefix}{engine.upper()}_"


def load_config(
    cls: type[ConfigT],
    environ: Mapping[str, str],
    *,
    prefix: str = DEFAULT_PREFIX,
    defaults: Mapping[str, Any] | None = None,
) -> ConfigT:
    """Build ``cls`` from ``defaults`` (e.g. the registry's name and port) overridden by
    ``NAUTILUS_<ENGINE>_<FIELD>``; raises ``ConfigError`` naming the variable."""
    engine = str((defaults or {}).get("name", _engine_name(cls)))
    return load_settings(cls, environ, env_prefix(engine, prefix), defaults=defaults)


def describe_config(
    cls: type[EngineConfig],
    *,
    prefix: str = DEFAULT_PREFIX,
    defaults: Mapping[str, Any] | None = None,
) -> list[ConfigVariable]:
    """Every variable ``load_config`` reads for ``cls``, with its type, default and help text."""
    engine = str((defaults or {}).get("name", _engine_name(cls)))
    return describe_settings(cls, env_prefix(engine, prefix), defaults=defaults)


def _engine_name(cls: type[EngineConfig]) -> str:
    return str(next(f.default for f in dataclasses.fields(cls) if f.name == "name"))

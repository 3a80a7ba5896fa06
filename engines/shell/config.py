"""Engine configuration: one frozen typed dataclass per engine, read from the environment once.

Each engine subclasses ``EngineConfig`` with its own fields (defaults documented by
``field(metadata={"help": ...})``). ``load_config`` is the one place a process reads them:
``NAUTILUS_<ENGINE>_<FIELD>``, e.g. ``NAUTILUS_MARKETDATA_PORT=8801``, converted by the field's
declared type. Typos are errors: an unknown variable under the engine's prefix is rejected, so a
misspelt setting never silently keeps its default.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

DEFAULT_PREFIX = "NAUTILUS_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``variable`` names the environment variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Settings every engine has. ``name`` is the registry name and is not read from the env."""

    name: str = field(default="engine", metadata={"help": "engine name", "env": False})
    host: str = field(default="127.0.0.1", metadata=_help("interface the REST server binds"))
    port: int = field(default=0, metadata=_help("REST port (0 = any free port)"))
    drain_timeout_s: float = field(
        default=5.0, metadata=_help("seconds stop() waits for queued input before cancelling")
    )
    max_batch: int = field(default=1024, metadata=_help("most bus messages handled per batch"))
    compute_threads: int = field(
        default=2, metadata=_help("threads for CPU-heavy work run off the event loop")
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


ConfigT = TypeVar("ConfigT", bound=EngineConfig)


@dataclass(frozen=True, slots=True)
class ConfigVariable:
    """One documented environment variable: what ``describe_config`` lists for the README."""

    variable: str
    type: str
    default: str
    help: str


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
    """Build ``cls`` from ``defaults`` (e.g. the registry's name and port) overridden by the env.

    Raises ``ConfigError`` naming the variable for an unknown variable under the engine's prefix,
    a value that does not convert to the field's type, or one the config's checks reject.
    """
    values: dict[str, Any] = dict(defaults or {})
    engine = str(values.get("name", _field_default(_fields(cls)["name"])))
    var_prefix = env_prefix(engine, prefix)
    fields = {name: f for name, f in _fields(cls).items() if f.metadata.get("env", True)}
    hints = typing.get_type_hints(cls)
    for variable, raw in environ.items():
        if not variable.startswith(var_prefix):
            continue
        name = variable[len(var_prefix) :].lower()
        if name not in fields:
            known = ", ".join(var_prefix + n.upper() for n in fields)
            raise ConfigError(variable, f"unknown setting (known: {known})")
        try:
            values[name] = _convert(hints[name], raw)
        except ValueError as exc:
            raise ConfigError(variable, f"{exc} (got {raw!r})") from None
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{var_prefix}*", str(exc)) from None


def describe_config(
    cls: type[EngineConfig],
    *,
    prefix: str = DEFAULT_PREFIX,
    defaults: Mapping[str, Any] | None = None,
) -> list[ConfigVariable]:
    """Every variable ``load_config`` reads for ``cls``, with its type, default and help text."""
    overrides = dict(defaults or {})
    engine = str(overrides.get("name", _field_default(_fields(cls)["name"])))
    var_prefix = env_prefix(engine, prefix)
    hints = typing.get_type_hints(cls)
    described = []
    for name, f in _fields(cls).items():
        if not f.metadata.get("env", True):
            continue
        default = overrides.get(name, _field_default(f))
        described.append(
            ConfigVariable(
                variable=var_prefix + name.upper(),
                type=_type_name(hints[name]),
                default=_format_default(default),
                help=str(f.metadata.get("help", "")),
            )
        )
    return described


def _fields(cls: type[EngineConfig]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _convert(hint: Any, raw: str) -> Any:
    """Convert one environment string to ``hint``: str, int, float, bool, Path, an Enum,
    ``tuple[X, ...]`` (comma-separated, empty string = empty tuple), or ``X | None``
    (empty string or ``none`` = None)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw.strip().lower() in ("", "none", "null"):
            return None
        if len(members) != 1:
            raise ValueError(f"unsupported union type {hint}")
        return _convert(members[0], raw)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise ValueError(f"only tuple[X, ...] is supported, not {hint}")
        text = raw.strip()
        return tuple(_convert(args[0], part.strip()) for part in text.split(",")) if text else ()
    if hint is bool:
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("expected a boolean (true/false, 1/0, yes/no, on/off)")
    if hint is int:
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError("expected an integer") from None
    if hint is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if hint is str:
        return raw
    if hint is pathlib.Path:
        return pathlib.Path(raw)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(raw.strip())
        except ValueError:
            choices = ", ".join(str(m.value) for m in hint)
            raise ValueError(f"expected one of {choices}") from None
    raise ValueError(f"unsupported config type {hint}")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("pathlib.", "")


def _format_default(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(_format_default(v) for v in value)
    return str(value)

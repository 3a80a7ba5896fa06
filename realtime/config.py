"""Settings from the environment: one frozen typed dataclass per component, read once.

``load_settings(cls, environ, prefix)`` fills a dataclass from variables ``<prefix><FIELD>``
(``NAUTILUS_HUB_PORT=8601``), converting by the field's declared type; ``describe_settings``
lists every variable with its type, default and help (``field(metadata={"help": ...})``) for
``nautilus config`` and the README. Typos are errors: an unknown variable under the prefix is
rejected, so a misspelt setting never silently keeps its default.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import pathlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``variable`` names the environment variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class ConfigVariable:
    """One documented environment variable: what ``describe_config`` lists for the README."""

    variable: str
    type: str
    default: str
    help: str


def described(text: str) -> dict[str, str]:
    """A settings field's metadata: the help text ``describe_settings`` (and README) show."""
    return {"help": text}


def load_settings(
    cls: type[T],
    environ: Mapping[str, str],
    prefix: str,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from ``defaults`` overridden by ``<prefix><FIELD>`` variables.

    Raises ``ConfigError`` naming the variable for an unknown variable under ``prefix``, a value
    that does not convert to the field's type, or one the dataclass's own checks reject. Fields
    with ``metadata={"env": False}`` are not read from the environment.
    """
    values: dict[str, Any] = dict(defaults or {})
    fields = {name: f for name, f in _fields(cls).items() if f.metadata.get("env", True)}
    hints = typing.get_type_hints(cls)
    for variable, raw in environ.items():
        if not variable.startswith(prefix):
            continue
        name = variable[len(prefix) :].lower()
        if name not in fields:
            known = [prefix + n.upper() for n in fields]
            near = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(variable, f"unknown setting ({hint}known: {', '.join(known)})")
        try:
            values[name] = _convert(hints[name], raw)
        except ValueError as exc:
            raise ConfigError(variable, f"{exc} (got {raw!r})") from None
    try:
        return cls(**values)
    except ConfigError:
        raise  # the class's own checks already named the variable
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix}*", str(exc)) from None


def describe_settings(
    cls: type[Any], prefix: str, *, defaults: Mapping[str, Any] | None = None
) -> list[ConfigVariable]:
    """Every variable ``load_settings`` reads for ``cls``, with its type, default and help."""
    overrides = dict(defaults or {})
    hints = typing.get_type_hints(cls)
    described = []
    for name, f in _fields(cls).items():
        if not f.metadata.get("env", True):
            continue
        default = overrides.get(name, _field_default(f))
        described.append(
            ConfigVariable(
                variable=prefix + name.upper(),
                type=_type_name(hints[name]),
                default=_format_default(default),
                help=str(f.metadata.get("help", "")),
            )
        )
    return described


def _fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
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

"""Query-parameter parsing for engine REST resources.

Each helper reads one parameter and raises ``ValidationError`` naming it, so a bad request
becomes ``400 {"error": {"code": "invalid_parameter", "parameter": "limit", ...}}`` without the
resource writing any error handling. A missing optional parameter returns ``default``.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, datetime
from typing import TypeVar, overload

from falcon.asgi import Request

from engines.shell.errors import ValidationError

E = TypeVar("E", bound=enum.Enum)

_SYMBOL = re.compile(r"[A-Za-z0-9_\-]{1,40}")  # one channel segment (protocol.channels)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _raw(req: Request, name: str, required: bool) -> str | None:
    raw = req.get_param(name)
    if raw is None or raw == "":
        if required:
            raise ValidationError(f"{name} is required", parameter=name, code="missing_parameter")
        return None
    return raw


@overload
def query_int(
    req: Request, name: str, *, default: int, minimum: int | None = ..., maximum: int | None = ...
) -> int: ...
@overload
def query_int(
    req: Request,
    name: str,
    *,
    default: None = ...,
    required: bool = ...,
    minimum: int | None = ...,
    maximum: int | None = ...,
) -> int | None: ...
def query_int(
    req: Request,
    name: str,
    *,
    default: int | None = None,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer within ``[minimum, maximum]``."""
    raw = _raw(req, name, required)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer, got {raw!r}", parameter=name) from None
    _check_bounds(name, value, minimum, maximum)
    return value


@overload
def query_float(
    req: Request,
    name: str,
    *,
    default: float,
    minimum: float | None = ...,
    maximum: float | None = ...,
) -> float: ...
@overload
def query_float(
    req: Request,
    name: str,
    *,
    default: None = ...,
    required: bool = ...,
    minimum: float | None = ...,
    maximum: float | None = ...,
) -> float | None: ...
def query_float(
    req: Request,
    name: str,
    *,
    default: float | None = None,
    required: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float | None:
    """A finite number within ``[minimum, maximum]``."""
    raw = _raw(req, name, required)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number, got {raw!r}", parameter=name) from None
    if not math.isfinite(value):
        raise ValidationError(f"{name} must be finite, got {raw!r}", parameter=name)
    _check_bounds(name, value, minimum, maximum)
    return value


def query_time_ns(
    req: Request, name: str, *, default: int | None = None, required: bool = False
) -> int | None:
    """A timestamp as ns since the Unix epoch: either an integer of ns, or ISO-8601 with an
    explicit offset (``2013-10-07T09:30:00-04:00``, ``...Z``). A naive time is refused: the
    feeds live in several time zones and guessing one silently shifts every query."""
    raw = _raw(req, name, required)
    if raw is None:
        return default
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"{name} must be ns since the epoch or ISO-8601, got {raw!r}", parameter=name
        ) from None
    if moment.tzinfo is None:
        raise ValidationError(
            f"{name} needs a UTC offset or Z (e.g. {raw}Z), got {raw!r}", parameter=name
        )
    delta = moment - _EPOCH  # exact integer arithmetic, no float seconds
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def query_symbol(
    req: Request, name: str = "symbol", *, default: str | None = None, required: bool = False
) -> str | None:
    """An instrument symbol: one channel segment (1-40 of A-Z a-z 0-9 _ -), as given."""
    raw = _raw(req, name, required)
    if raw is None:
        return default
    if not _SYMBOL.fullmatch(raw):
        raise ValidationError(
            f"{name} must be 1-40 of A-Z a-z 0-9 _ -, got {raw!r}", parameter=name
        )
    return raw


def query_enum(
    req: Request, name: str, enum_type: type[E], *, default: E | None = None, required: bool = False
) -> E | None:
    """One of ``enum_type``'s values."""
    raw = _raw(req, name, required)
    if raw is None:
        return default
    try:
        return enum_type(raw)
    except ValueError:
        choices = ", ".join(str(member.value) for member in enum_type)
        raise ValidationError(
            f"{name} must be one of {choices}, got {raw!r}", parameter=name
        ) from None


def _check_bounds(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValidationError(f"{name} must be >= {minimum}, got {value}", parameter=name)
    if maximum is not None and value > maximum:
        raise ValidationError(f"{name} must be <= {maximum}, got {value}", parameter=name)

"""Features REST: the catalog, batch compute over posted or stored bars, latest and history.

* ``GET /features/catalog`` — every function with its group, inputs, parameters (type, default,
  range), outputs and lookback at the defaults (what ``talib.abstract`` tells a user), and the
  streamed set (spec and value keys);
* ``POST /features/compute`` — ``{"functions": ["RSI", {"name": "SMA", "params":
  {"timeperiod": 50}}], "open": [...], "high": [...], "low": [...], "close": [...],
  "volume": [...]}`` (``real``/``real0``/``real1`` default to close/high/low as in
  ``talib.abstract``; ``session_start`` to one session), or ``{"functions", "symbol", "from",
  "to", "spec"}`` over the stored bars (``from <= start < to``, ns; ``spec`` defaults to the
  engine's; ``session_start`` from the bar times as the stream does). Answers per function its
  resolved parameters, lookback and every output (``null`` during the lookback) — the values the
  stream publishes for the same bars. A 400 names what is wrong: ``functions[1].name`` (unknown
  function), ``functions[0].params.timeperiod`` (out of range, wrong type, unknown), ``close``
  (non-finite, negative, misaligned, missing), ``to`` (range holds too many bars). Limits
  (config): ``max_compute_bars`` bars, ``max_compute_functions`` functions;
* ``GET /features/{symbol}/latest`` — the last published values (404 before the first);
* ``GET /features/{symbol}/history?from=&to=&limit=&cursor=`` — stored values by bar start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import falcon.asgi
import msgspec
import numpy as np
import numpy.typing as npt

from engines.features import core
from engines.marketdata.core import BarSpec
from engines.shell import Route, ValidationError
from engines.shell.rest import HistoryResource, LatestResource, read_body

if TYPE_CHECKING:
    from engines.features.service import FeaturesEngine

Array = npt.NDArray[np.float64]
#: Posted arrays in the order their lengths are checked (the first present is the reference).
ARRAY_FIELDS = ("open", "high", "low", "close", "volume", "real", "real0", "real1", "session_start")
#: Prices and volumes: must be ≥ 0 (``real``/``real0``/``real1`` may be negative).
NON_NEGATIVE = frozenset({"open", "high", "low", "close", "volume"})
#: ``talib.abstract``'s defaults for the generic inputs.
INPUT_DEFAULTS = {"real": "close", "real0": "high", "real1": "low"}


class FunctionCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class ComputeBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Posted arrays, or ``symbol`` + ``from``/``to`` (+ ``spec``) over stored bars."""

    functions: list[str | FunctionCall]
    open: list[float] | None = None
    high: list[float] | None = None
    low: list[float] | None = None
    close: list[float] | None = None
    volume: list[float] | None = None
    real: list[float] | None = None
    real0: list[float] | None = None
    real1: list[float] | None = None
    session_start: list[float] | None = None
    symbol: str | None = None
    from_ns: int | None = msgspec.field(name="from", default=None)
    to_ns: int | None = msgspec.field(name="to", default=None)
    spec: str | None = None


#: One validated call: the catalog's function name and its resolved parameters.
Call = tuple[str, dict[str, Any]]


class CatalogResource:
    """``GET /features/catalog``."""

    def __init__(self, engine: FeaturesEngine) -> None:
        self._answer = {
            "functions": core.catalog(),
            "stream": {"spec": engine.config.bar_spec, "features": list(engine.keys)},
        }

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._answer


class ComputeResource:
    """``POST /features/compute``: the named functions over posted or stored bars."""

    body_type = ComputeBody

    def __init__(self, engine: FeaturesEngine) -> None:
        self._engine = engine
        self._max_bars = engine.config.max_compute_bars
        self._max_functions = engine.config.max_compute_functions

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, ComputeBody)
        posted = {k: getattr(body, k) for k in ARRAY_FIELDS if getattr(body, k) is not None}
        if bool(posted) == (body.symbol is not None):
            raise ValidationError(
                "give either the bar arrays or symbol with from and to", parameter="body"
            )
        calls = self._calls(body.functions)
        answer: dict[str, Any] = {}
        if posted:
            arrays = self._arrays(posted)
        else:
            arrays, answer = await self._stored(body)
        columns = [self._columns(i, name, arrays) for i, (name, _) in enumerate(calls)]
        results = await self._engine.run_in_executor(_compute_all, calls, columns)
        resp.media = {"bars": _length(arrays), **answer, "results": results}

    def _calls(self, functions: list[str | FunctionCall]) -> list[Call]:
        if not functions:
            raise ValidationError("name at least one function", parameter="functions")
        if len(functions) > self._max_functions:
            raise ValidationError(
                f"at most {self._max_functions} functions per request", parameter="functions"
            )
        calls: list[Call] = []
        for i, call in enumerate(functions):
            name, params = (call, {}) if isinstance(call, str) else (call.name, call.params)
            try:
                spec = core.CATALOG.get(name.upper())
                if spec is None:
                    raise core.FeatureInputError("function", f"unknown function {name!r}")
                resolved = core.validate_params(spec.name, params)
            except core.FeatureInputError as exc:
                field = "name" if exc.parameter == "function" else f"params.{exc.parameter}"
                raise ValidationError(str(exc), parameter=f"functions[{i}].{field}") from None
            calls.append((spec.name, resolved))
        return calls

    def _arrays(self, posted: Mapping[str, list[float]]) -> dict[str, Array]:
        arrays: dict[str, Array] = {}
        length: int | None = None
        for key, values in posted.items():
            arr = np.asarray(values, dtype=np.float64)
            if length is None:
                length = arr.shape[0]
                if length > self._max_bars:
                    raise ValidationError(
                        f"at most {self._max_bars} bars per request", parameter=key
                    )
            elif arr.shape[0] != length:
                raise ValidationError(
                    f"{key} has {arr.shape[0]} values, {length} expected (misaligned)",
                    parameter=key,
                )
            bad = ~np.isfinite(arr)
            if key in NON_NEGATIVE:
                bad |= arr < 0
            if bad.any():
                at = int(np.flatnonzero(bad)[0])
                rule = "finite and ≥ 0" if key in NON_NEGATIVE else "finite"
                raise ValidationError(f"{key}[{at}] = {arr[at]!r}: must be {rule}", parameter=key)
            arrays[key] = arr
        return arrays

    async def _stored(self, body: ComputeBody) -> tuple[dict[str, Array], dict[str, Any]]:
        if not body.symbol:
            raise ValidationError("symbol must be a non-empty string", parameter="symbol")
        for name, value in (("from", body.from_ns), ("to", body.to_ns)):
            if value is None:
                raise ValidationError(f"{name} (ns since the epoch) is required", parameter=name)
        assert body.from_ns is not None and body.to_ns is not None
        spec = body.spec or self._engine.config.bar_spec
        try:
            BarSpec.parse(spec)
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="spec") from None
        rows = await self._engine.stored_bars(
            body.symbol, spec, body.from_ns, body.to_ns, most=self._max_bars
        )
        if len(rows) > self._max_bars:
            raise ValidationError(
                f"the range holds more than {self._max_bars} bars", parameter="to"
            )
        start_ns, arrays = self._engine.bar_columns(rows)
        return arrays, {"symbol": body.symbol, "spec": spec, "start_ns": start_ns}

    def _columns(self, i: int, name: str, arrays: Mapping[str, Array]) -> dict[str, Array]:
        """The function's inputs from the arrays (``real`` → ``close`` etc. when not given)."""
        columns: dict[str, Array] = {}
        for key in core.CATALOG[name].inputs:
            source = key if key in arrays else INPUT_DEFAULTS.get(key, key)
            if source in arrays:
                columns[key] = arrays[source]
            elif key == "session_start":
                columns[key] = np.zeros(_length(arrays))
            else:
                raise ValidationError(
                    f"functions[{i}] ({name}) needs the {key!r} array", parameter=key
                )
        return columns


def _length(arrays: Mapping[str, Array]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _compute_all(calls: Sequence[Call], columns: Sequence[Mapping[str, Array]]) -> list[Any]:
    """Every call (runs on the compute threads); NaN answers as ``null``."""
    results = []
    for (name, params), inputs in zip(calls, columns, strict=True):
        spec = core.CATALOG[name]
        try:
            outputs = core.compute(name, inputs, **params)
        except core.FeatureInputError as exc:
            raise ValidationError(str(exc), parameter=exc.parameter) from None
        results.append(
            {
                "name": name,
                "params": params,
                "lookback": core.lookback(name, **params),
                "outputs": dict(zip(spec.outputs, outputs, strict=True)),
            }
        )
    return results


def routes(engine: FeaturesEngine) -> Sequence[Route]:
    return (
        ("/features/catalog", CatalogResource(engine)),
        ("/features/compute", ComputeResource(engine)),
        ("/features/{symbol}/latest", LatestResource(engine.values)),
        ("/features/{symbol}/history", HistoryResource(engine.values)),
    )

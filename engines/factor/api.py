"""Factor REST: batch exposures over posted arrays, published exposures, the signal's IC.

* ``POST /factor/exposures`` — ``{"returns": {"AAPL": [...], ...}, "factors": {"SPY": [...]},
  "window": 60, "decay": 1.0, "min_obs": 0, "hac_lags": null}``: per symbol the rolling alpha,
  betas, t-stats, R² and residual volatility per row (``null`` before ``min_obs`` rows) from one
  vmapped JAX call, plus a full-sample OLS with Newey–West t-stats. Every array must have the same
  length, at least ``min_obs`` (default: the window) rows, finite values. A 400 names what is wrong:
  ``returns.AAPL[3]`` (not finite), ``factors.QQQ`` (misaligned), ``returns.AAPL`` (too short),
  ``window``/``decay``/``min_obs``/``hac_lags`` (out of range). Limits (config):
  ``max_batch_symbols`` symbols and ``max_batch_bars`` rows;
* ``GET /factor/{model}/{symbol}/latest`` — the last published estimates (404 before the first,
  400 for a model the engine does not run);
* ``GET /factor/{model}/{symbol}/history?from=&to=&limit=&cursor=`` — stored estimates by bar
  start;
* ``GET /factor/ic?signal=&horizon=&from=&to=&limit=&cursor=`` — the running IC summary of the
  evaluated signal at that horizon (n, mean, std, IR, t) and the stored per-date ICs (400 for a
  signal or horizon the engine does not evaluate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import falcon.asgi
import msgspec
import numpy as np

from engines.factor import core
from engines.shell import Route, ValidationError
from engines.shell.params import query_int
from engines.shell.rest import HistoryResource, LatestResource, TimeRange, read_body
from protocol.records import error_path

if TYPE_CHECKING:
    from engines.factor.service import FactorEngine


class ExposuresBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``returns`` and ``factors`` stay raw here so a 400 can name the series
    (``returns.AAPL[3]``): each list is validated on its own."""

    returns: dict[str, Any]
    factors: dict[str, Any]
    window: int = 60
    decay: float = 1.0
    min_obs: int = 0
    hac_lags: int | None = None


def _arrays(name: str, posted: dict[str, Any], most: int) -> dict[str, np.ndarray]:
    """Each posted series as a float array; 400 naming the series or the value at fault."""
    if not posted:
        raise ValidationError(f"{name} must name at least one series", parameter=name)
    out: dict[str, np.ndarray] = {}
    for key, raw in posted.items():
        if not key:
            raise ValidationError("a series name must be non-empty", parameter=name)
        try:
            values = msgspec.convert(raw, list[float])
        except msgspec.ValidationError as exc:
            path = (error_path(exc) or "$").removeprefix("$")
            raise ValidationError(str(exc), parameter=f"{name}.{key}{path}") from None
        if len(values) > most:
            raise ValidationError(f"at most {most} rows per series", parameter=f"{name}.{key}")
        array = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValidationError("values must be finite", parameter=f"{name}.{key}[{bad[0]}]")
        out[key] = array
    return out


class ExposuresResource:
    """``POST /factor/exposures``."""

    body_type = ExposuresBody

    def __init__(self, engine: FactorEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, ExposuresBody)
        config = self._engine.config
        if len(body.returns) > config.max_batch_symbols:
            raise ValidationError(
                f"at most {config.max_batch_symbols} symbols per request", parameter="returns"
            )
        returns = _arrays("returns", body.returns, config.max_batch_bars)
        factors = _arrays("factors", body.factors, config.max_batch_bars)
        k = len(factors)
        if body.window < 0 or 0 < body.window <= k + 1:
            raise ValidationError(
                f"window must be 0 (expanding) or > {k + 1} (factors + 1)", parameter="window"
            )
        if not 0.0 < body.decay <= 1.0:
            raise ValidationError("decay must be in (0, 1]", parameter="decay")
        try:
            min_obs = core.check_params(k, body.window, body.decay, body.min_obs)
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="min_obs") from None
        rows = len(next(iter(returns.values())))
        for name, series in (("returns", returns), ("factors", factors)):
            for key, array in series.items():
                if len(array) != rows:
                    raise ValidationError(
                        f"{len(array)} rows, the first series has {rows}",
                        parameter=f"{name}.{key}",
                    )
        if rows < min_obs:
            first = next(iter(returns))
            raise ValidationError(
                f"{rows} rows, fewer than min_obs = {min_obs}", parameter=f"returns.{first}"
            )
        if body.hac_lags is not None and not 0 <= body.hac_lags < rows:
            raise ValidationError(f"hac_lags must be in [0, {rows})", parameter="hac_lags")
        resp.media = await self._engine.run_in_executor(
            self._engine.batch_exposures,
            returns,
            factors,
            window=body.window,
            decay=body.decay,
            min_obs=body.min_obs,
            hac_lags=body.hac_lags,
        )


class ModelResource:
    """A latest/history resource behind a check that ``{model}`` is the engine's."""

    def __init__(self, model: str, inner: Any) -> None:
        self._model = model
        self._inner = inner

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model: str, symbol: str
    ) -> None:
        if model != self._model:
            raise ValidationError(
                f"unknown model {model!r}; this engine runs {self._model!r}", parameter="model"
            )
        await self._inner.on_get(req, resp, symbol=symbol)


class IcResource:
    """``GET /factor/ic?signal=&horizon=``."""

    def __init__(self, engine: FactorEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        engine = self._engine
        signal = req.get_param("signal") or ""
        if not engine.signal or signal != engine.signal:
            known = engine.signal or "none configured"
            raise ValidationError(
                f"unknown signal {signal!r} (evaluated: {known})", parameter="signal"
            )
        horizon = query_int(req, "horizon", default=engine.horizons[0], minimum=1)
        if horizon not in engine.running_ic:
            raise ValidationError(
                f"horizon {horizon} is not evaluated (horizons: {list(engine.horizons)})",
                parameter="horizon",
            )
        span = TimeRange.from_request(req)
        page = await engine.ics.query(
            f"{signal}.{horizon}", span.from_ns, span.to_ns, span.limit, span.cursor
        )
        resp.media = {
            "signal": signal,
            "source": engine.config.ic_signal,
            "horizon": horizon,
            "summary": engine.running_ic[horizon].summary().to_payload(),
            "items": [
                {"start_ns": p["start_ns"], "ic": p["ic"], "symbols": p["symbols"]}
                for p in page.items
            ],
            "next_cursor": page.next_cursor,
        }


def routes(engine: FactorEngine) -> Sequence[Route]:
    model = engine.config.model
    return (
        ("/factor/exposures", ExposuresResource(engine)),
        ("/factor/ic", IcResource(engine)),
        ("/factor/{model}/{symbol}/latest", ModelResource(model, LatestResource(engine.exposures))),
        (
            "/factor/{model}/{symbol}/history",
            ModelResource(model, HistoryResource(engine.exposures)),
        ),
    )

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
  signal or horizon the engine does not evaluate);
* ``GET /factor/tables?signal=&horizons=1,5,20&quantiles=5&from=&to=`` — alphalens' tear-sheet
  tables (``core.factor_tables``, equal to alphalens-reloaded) of the evaluated signal on the
  engine's panel of closes and signal values: per horizon the IC summary and the mean return by
  quantile (raw and demeaned, with standard errors) and the top-minus-bottom spread; the mean
  turnover per quantile and the mean rank autocorrelation. 400 naming ``signal``, ``horizons``
  (not 1..``MAX_TABLE_HORIZON`` integers), ``quantiles`` (2..``MAX_QUANTILES``), ``from``/``to``;
  a panel without a usable row answers ``rows: 0`` and nulls;
* ``POST /factor/traded`` — ``{"portfolios": {"AAPL": [...], ...}, "factors": {"SPY": [...]},
  "cov_type": "robust"|"kernel", "debiased": true, "bandwidth": null}``: linearmodels'
  ``TradedFactorModel`` (``traded_factor.traded_factor_model``): alphas, betas with standard
  errors and t-stats per portfolio, risk premia with theirs, the J test of zero alphas, R², the
  kernel bandwidth (the full covariance is not returned). 400 naming ``portfolios.AAPL[3]`` (not
  finite), ``factors.QQQ`` (misaligned), ``portfolios.AAPL`` (too short: more than factors + 1
  rows needed, or too few for the automatic bandwidth), ``bandwidth``, ``cov_type``;
* ``POST /factor/cross-section`` — per date, OLS (or WLS) of returns on characteristics, the
  Fama–MacBeth averages of the slopes with standard errors and t-stats (plain, or Newey–West
  with ``nw_lags``: linearmodels ``FamaMacBeth`` ``unadjusted``/``kernel``), R² and counts, and
  per characteristic the long–short (top − bottom quantile) return series
  (``cross_section.cross_section_payload``). Either a posted panel ``{"dates": [...],
  "symbols": [...], "returns": [[...]], "characteristics": {"size": [[...]], ...}, "weights":
  [[...]], "quantiles": 5, "nw_lags": null}`` (dates × symbols matrices, ``null`` = missing), or
  ``{"universe": ["AAPL", ...], "from": "2015-01-02", "to": "2019-12-31", "horizon": 21,
  "characteristics": ["size", ...], "weights": "dollar_volume"}`` built from the bundled daily
  history (``cross_section.universe_panel``). 400 naming the field: ``returns[3][2]`` (not a
  finite number), ``characteristics.size[3]`` (misaligned), ``characteristics[1]`` (unknown),
  ``universe[0]`` (not bundled), ``to`` (not after ``from``, or fewer than 2 dates),
  ``symbols``/``dates``/``universe`` (past ``max_batch_symbols``, ``max_batch_bars`` or
  ``cross_section.MAX_PANEL_CELLS`` dates × symbols), ``quantiles``, ``nw_lags``, ``horizon``.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import falcon.asgi
import msgspec
import numpy as np

from engines.factor import core, cross_section
from engines.factor.traded_factor import TradedFactorFit, traded_factor_model
from engines.marketdata.daily import daily_tickers
from engines.shell import Route, ValidationError
from engines.shell.openapi import Payload, stored_answer
from engines.shell.params import query_int, query_time_ns
from engines.shell.rest import (
    HistoryResource,
    LatestResource,
    TimeRange,
    read_body,
)
from protocol.records import error_path
from realtime.storage import END_OF_TIME_NS

if TYPE_CHECKING:
    from engines.factor.service import FactorEngine


class ExposuresBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``returns`` and ``factors`` stay raw JSON here so a 400 can name the series
    (``returns.AAPL[3]``): each list is decoded on its own."""

    returns: dict[str, msgspec.Raw]
    factors: dict[str, msgspec.Raw]
    window: int = 60
    decay: float = 1.0
    min_obs: int = 0
    hac_lags: int | None = None


def _arrays(name: str, posted: dict[str, msgspec.Raw], most: int) -> dict[str, np.ndarray]:
    """Each posted series as a float array; 400 naming the series or the value at fault."""
    if not posted:
        raise ValidationError(f"{name} must name at least one series", parameter=name)
    out: dict[str, np.ndarray] = {}
    for key, raw in posted.items():
        if not key:
            raise ValidationError("a series name must be non-empty", parameter=name)
        try:
            values = msgspec.json.decode(raw, type=list[float])
        except msgspec.ValidationError as exc:  # a DecodeError too: caught first
            path = (error_path(exc) or "$").removeprefix("$")
            raise ValidationError(str(exc), parameter=f"{name}.{key}{path}") from None
        except msgspec.DecodeError as exc:
            raise ValidationError(str(exc), parameter=f"{name}.{key}") from None
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

    @property
    def response_type(self) -> Any:
        """The inner resource's answer: ``factor`` payloads (stored on stream ``exposures``)."""
        return stored_answer(self._inner, item=Payload("factor"))

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model: str, symbol: str
    ) -> None:
        if model != self._model:
            raise ValidationError(
                f"unknown model {model!r}; this engine runs {self._model!r}", parameter="model"
            )
        await self._inner.on_get(req, resp, symbol=symbol)


def _evaluated_signal(req: falcon.asgi.Request, engine: FactorEngine) -> str:
    """The ``signal`` parameter, which must name the signal this engine evaluates."""
    signal = req.get_param("signal") or ""
    if not engine.signal or signal != engine.signal:
        known = engine.signal or "none configured"
        raise ValidationError(f"unknown signal {signal!r} (evaluated: {known})", parameter="signal")
    return signal


class IcResource:
    """``GET /factor/ic?signal=&horizon=``."""

    def __init__(self, engine: FactorEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        engine = self._engine
        signal = _evaluated_signal(req, engine)
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


MAX_QUANTILES = 20
MAX_TABLE_HORIZON = 1_000


def _horizons(req: falcon.asgi.Request, default: tuple[int, ...]) -> tuple[int, ...]:
    """``horizons=1,5,20``: distinct integers in 1..MAX_TABLE_HORIZON, sorted."""
    raw = req.get_param("horizons")
    if not raw:
        return default
    try:
        values = sorted({int(part) for part in raw.split(",")})
    except ValueError:
        raise ValidationError(
            f"horizons must be comma-separated integers, got {raw!r}", parameter="horizons"
        ) from None
    if values[0] < 1 or values[-1] > MAX_TABLE_HORIZON:
        raise ValidationError(
            f"horizons must be in 1..{MAX_TABLE_HORIZON}, got {raw!r}", parameter="horizons"
        )
    return tuple(values)


def _floats(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def tables_payload(
    dates: np.ndarray,
    symbols: list[str],
    signal: np.ndarray,
    close: np.ndarray,
    horizons: tuple[int, ...],
    quantiles: int,
) -> dict[str, Any]:
    """``core.factor_tables`` on the panel, as JSON (NaN → null)."""
    with warnings.catch_warnings():  # "mean of empty slice": an all-NaN column is a null
        warnings.simplefilter("ignore", RuntimeWarning)
        tables = core.factor_tables(signal, close, horizons=horizons, quantiles=quantiles)
        turnover = np.nanmean(tables["turnover"], axis=0)
        autocorrelation = float(np.nanmean(tables["rank_autocorrelation"]))
    used = tables["rows"]
    by_horizon: dict[str, Any] = {}
    for h, table in tables["horizons"].items():
        q: core.QuantileTable = table["quantiles"]
        by_horizon[str(h)] = {
            "ic": table["ic_summary"].to_payload(),
            "quantiles": {
                "mean": _floats(q.mean),
                "std_error": _floats(q.std_error),
                "mean_demeaned": _floats(q.mean_demeaned),
                "std_error_demeaned": _floats(q.std_error_demeaned),
                "spread_mean": core.finite_or_none(q.spread_mean),
                "spread_std_error": core.finite_or_none(q.spread_std_error),
            },
        }
    on = np.flatnonzero(used.any(axis=1))
    return {
        "dates": int(dates.size),
        "symbols": symbols,
        "rows": int(used.sum()),
        "first_ns": int(dates[on[0]]) if on.size else None,
        "last_ns": int(dates[on[-1]]) if on.size else None,
        "quantiles": quantiles,
        "horizons": by_horizon,
        "turnover": _floats(turnover),
        "rank_autocorrelation": core.finite_or_none(autocorrelation),
    }


class TablesResource:
    """``GET /factor/tables?signal=&horizons=&quantiles=&from=&to=``."""

    def __init__(self, engine: FactorEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        engine = self._engine
        signal = _evaluated_signal(req, engine)
        horizons = _horizons(req, engine.horizons)
        quantiles = query_int(req, "quantiles", default=5, minimum=2, maximum=MAX_QUANTILES)
        from_ns = query_time_ns(req, "from", default=0)
        to_ns = query_time_ns(req, "to", default=END_OF_TIME_NS)
        assert from_ns is not None and to_ns is not None
        if to_ns <= from_ns:
            raise ValidationError("to must be after from", parameter="to")
        dates, symbols, values, close = engine.tables_panel(from_ns, to_ns)
        answer = await engine.run_in_executor(
            tables_payload, dates, symbols, values, close, horizons, quantiles
        )
        resp.media = {"signal": signal, "source": engine.config.ic_signal, **answer}


class TradedBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``portfolios`` and ``factors`` stay raw JSON so a 400 can name the series."""

    portfolios: dict[str, msgspec.Raw]
    factors: dict[str, msgspec.Raw]
    cov_type: Literal["robust", "kernel"] = "robust"
    debiased: bool = True
    bandwidth: float | None = None


def traded_payload(fit: TradedFactorFit, portfolios: list[str], factors: list[str]) -> Any:
    """The fit as JSON: per portfolio alpha/betas with standard errors and t-stats."""

    def named(row: np.ndarray) -> dict[str, Any]:
        values = _floats(row)
        return {"alpha": values[0], "betas": dict(zip(factors, values[1:], strict=True))}

    return {
        "factors": factors,
        "nobs": fit.nobs,
        "portfolios": {
            name: {
                "estimate": named(fit.params[i]),
                "std_error": named(fit.std_errors[i]),
                "t": named(fit.tstats[i]),
            }
            for i, name in enumerate(portfolios)
        },
        "risk_premia": {
            f: {
                "estimate": core.finite_or_none(float(fit.risk_premia[j])),
                "std_error": core.finite_or_none(float(fit.risk_premia_se[j])),
                "t": core.finite_or_none(float(fit.risk_premia_tstats[j])),
            }
            for j, f in enumerate(factors)
        },
        "j_stat": core.finite_or_none(fit.j_stat),
        "j_pvalue": core.finite_or_none(fit.j_pvalue),
        "rsquared": core.finite_or_none(fit.rsquared),
        "bandwidth": fit.bandwidth,
    }


class TradedResource:
    """``POST /factor/traded``: linearmodels' ``TradedFactorModel`` on posted returns."""

    body_type = TradedBody

    def __init__(self, engine: FactorEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, TradedBody)
        config = self._engine.config
        if len(body.portfolios) > config.max_batch_symbols:
            raise ValidationError(
                f"at most {config.max_batch_symbols} portfolios per request",
                parameter="portfolios",
            )
        portfolios = _arrays("portfolios", body.portfolios, config.max_batch_bars)
        factors = _arrays("factors", body.factors, config.max_batch_bars)
        first = f"portfolios.{next(iter(portfolios))}"
        rows = len(next(iter(portfolios.values())))
        for name, series in (("portfolios", portfolios), ("factors", factors)):
            for key, array in series.items():
                if len(array) != rows:
                    raise ValidationError(
                        f"{len(array)} rows, the first series has {rows}",
                        parameter=f"{name}.{key}",
                    )
        least = len(factors) + 2
        if rows < least:
            raise ValidationError(f"{rows} rows, fewer than factors + 2 = {least}", parameter=first)
        if body.bandwidth is not None:
            if body.cov_type != "kernel":
                raise ValidationError("bandwidth needs cov_type 'kernel'", parameter="bandwidth")
            if not (math.isfinite(body.bandwidth) and 0 <= body.bandwidth < rows):
                raise ValidationError(f"bandwidth must be in [0, {rows})", parameter="bandwidth")
        p = np.column_stack(list(portfolios.values()))
        f = np.column_stack(list(factors.values()))

        def fit() -> Any:
            try:
                result = traded_factor_model(
                    p, f, cov_type=body.cov_type, debiased=body.debiased,
                    bandwidth=body.bandwidth,
                )  # fmt: skip
            except ValueError as exc:  # the automatic bandwidth: too few rows or no variance
                raise ValidationError(str(exc), parameter=first) from None
            return traded_payload(result, list(portfolios), list(factors))

        resp.media = await self._engine.run_in_executor(fit)


class CrossSectionBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A posted panel (``dates``, ``symbols``, ``returns``, ``characteristics`` as an object of
    dates × symbols matrices, optional ``weights`` matrix) or a bundled ``universe`` with
    ``from``/``to`` (``characteristics`` a list of names, ``weights`` ``"dollar_volume"``).
    ``null`` in a matrix is a missing value; each characteristic stays raw JSON so a 400 can
    name it (``characteristics.size[3][1]``)."""

    dates: list[str] | None = None
    symbols: list[str] | None = None
    returns: list[list[float | None]] | None = None
    characteristics: dict[str, msgspec.Raw] | list[str] | None = None
    weights: list[list[float | None]] | Literal["dollar_volume"] | None = None
    universe: list[str] | None = None
    from_: dt.date | None = msgspec.field(default=None, name="from")
    to: dt.date | None = None
    horizon: int | None = None
    quantiles: int = 5
    nw_lags: int | None = None


def _distinct(name: str, values: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if not value or value in seen:
            raise ValidationError(f"{value!r}: empty or repeated", parameter=f"{name}[{i}]")
        seen.add(value)


def _matrix(name: str, rows: list[list[float | None]], d: int, n: int) -> np.ndarray:
    """A dates × symbols matrix (``null`` → NaN); 400 naming the row at fault."""
    if len(rows) != d:
        raise ValidationError(f"{len(rows)} rows, dates has {d}", parameter=name)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValidationError(f"{len(row)} values, symbols has {n}", parameter=f"{name}[{i}]")
    return np.array(rows, dtype=np.float64).reshape(d, n)


def _posted_matrix(name: str, raw: msgspec.Raw, d: int, n: int) -> np.ndarray:
    try:
        rows = msgspec.json.decode(raw, type=list[list[float | None]])
    except msgspec.ValidationError as exc:  # a DecodeError too: caught first
        path = (error_path(exc) or "$").removeprefix("$")
        raise ValidationError(str(exc), parameter=f"{name}{path}") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(str(exc), parameter=name) from None
    return _matrix(name, rows, d, n)


def _check_shape(body: CrossSectionBody, dates: int, symbols: int, k: int, who: str) -> None:
    """Enough symbols for ``k`` characteristics, ``quantiles`` and ``nw_lags`` in range."""
    if symbols < k + 2:
        raise ValidationError(
            f"{symbols} symbols, at least characteristics + 2 = {k + 2} needed", parameter=who
        )
    if body.quantiles > symbols:
        raise ValidationError(
            f"quantiles must be at most the {symbols} symbols", parameter="quantiles"
        )
    if body.nw_lags is not None and body.nw_lags >= dates:
        raise ValidationError(f"nw_lags must be in [0, {dates})", parameter="nw_lags")


class CrossSectionResource:
    """``POST /factor/cross-section``: Fama–MacBeth over a posted or a bundled panel."""

    body_type = CrossSectionBody

    def __init__(self, engine: FactorEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, CrossSectionBody)
        if not 2 <= body.quantiles <= MAX_QUANTILES:
            raise ValidationError(f"quantiles must be in 2..{MAX_QUANTILES}", parameter="quantiles")
        if body.nw_lags is not None and body.nw_lags < 0:
            raise ValidationError("nw_lags must be >= 0", parameter="nw_lags")
        work = self._universe(body) if body.universe is not None else self._posted(body)
        resp.media = await self._engine.run_in_executor(work)

    def _posted(self, body: CrossSectionBody) -> Any:
        for name, value in (("from", body.from_), ("to", body.to), ("horizon", body.horizon)):
            if value is not None:
                raise ValidationError(f"{name} goes with universe", parameter=name)
        if body.dates is None or body.symbols is None or body.returns is None:
            missing = next(n for n in ("dates", "symbols", "returns") if getattr(body, n) is None)
            raise ValidationError(
                f"{missing} is required (or post universe, from, to)", parameter=missing
            )
        if not isinstance(body.characteristics, dict) or not body.characteristics:
            raise ValidationError(
                "characteristics must name at least one dates × symbols matrix",
                parameter="characteristics",
            )
        if isinstance(body.weights, str):
            raise ValidationError("'dollar_volume' goes with universe", parameter="weights")
        config = self._engine.config
        d, n, k = len(body.dates), len(body.symbols), len(body.characteristics)
        if n > config.max_batch_symbols:
            raise ValidationError(
                f"at most {config.max_batch_symbols} symbols per request", parameter="symbols"
            )
        if d > config.max_batch_bars:
            raise ValidationError(
                f"at most {config.max_batch_bars} dates per request", parameter="dates"
            )
        if d < 2:
            raise ValidationError("at least 2 dates are needed", parameter="dates")
        cross_section.check_cells(d, n, "dates")
        if k > cross_section.MAX_CHARACTERISTICS:
            raise ValidationError(
                f"at most {cross_section.MAX_CHARACTERISTICS} characteristics",
                parameter="characteristics",
            )
        _distinct("dates", body.dates)
        _distinct("symbols", body.symbols)
        _check_shape(body, d, n, k, "symbols")
        returns = _matrix("returns", body.returns, d, n)
        chars: dict[str, np.ndarray] = {}
        for name, raw in body.characteristics.items():
            if not name or name == cross_section.INTERCEPT:
                raise ValidationError(
                    f"a characteristic's name must be non-empty and not "
                    f"{cross_section.INTERCEPT!r}",
                    parameter=f"characteristics.{name}",
                )
            chars[name] = _posted_matrix(f"characteristics.{name}", raw, d, n)
        weights = None
        if body.weights is not None:
            weights = _matrix("weights", body.weights, d, n)
            negative = np.argwhere(weights < 0)
            if negative.size:
                i, j = negative[0]
                raise ValidationError("weights must be >= 0", parameter=f"weights[{i}][{j}]")
        panel = cross_section.Panel(list(body.dates), list(body.symbols), returns, chars, weights)
        quantiles, nw_lags = body.quantiles, body.nw_lags
        return lambda: cross_section.cross_section_payload(
            panel, quantiles=quantiles, nw_lags=nw_lags
        )

    def _universe(self, body: CrossSectionBody) -> Any:
        for name in ("dates", "symbols", "returns"):
            if getattr(body, name) is not None:
                raise ValidationError(f"{name} does not go with universe", parameter=name)
        if isinstance(body.weights, list):
            raise ValidationError(
                "with universe, weights is 'dollar_volume' or absent", parameter="weights"
            )
        config = self._engine.config
        universe = [s.strip().upper() for s in body.universe or []]
        if len(universe) > config.max_batch_symbols:
            raise ValidationError(
                f"at most {config.max_batch_symbols} symbols per request", parameter="universe"
            )
        known = daily_tickers()
        for i, symbol in enumerate(universe):
            if symbol not in known:
                raise ValidationError(
                    f"no bundled daily history of {symbol!r}; known: {', '.join(known)}",
                    parameter=f"universe[{i}]",
                )
        _distinct("universe", universe)
        names: tuple[str, ...] = cross_section.CHARACTERISTICS
        if isinstance(body.characteristics, dict):
            raise ValidationError(
                "with universe, characteristics is a list of names", parameter="characteristics"
            )
        if body.characteristics is not None:
            if not body.characteristics:
                raise ValidationError(
                    "characteristics must name at least one", parameter="characteristics"
                )
            for i, name in enumerate(body.characteristics):
                if name not in cross_section.CHARACTERISTICS:
                    raise ValidationError(
                        f"unknown characteristic {name!r}; known: "
                        f"{', '.join(cross_section.CHARACTERISTICS)}",
                        parameter=f"characteristics[{i}]",
                    )
            _distinct("characteristics", body.characteristics)
            names = tuple(body.characteristics)
        if body.from_ is None:
            raise ValidationError("from is required with universe", parameter="from")
        if body.to is None:
            raise ValidationError("to is required with universe", parameter="to")
        if body.to <= body.from_:
            raise ValidationError("to must be after from", parameter="to")
        horizon = cross_section.DEFAULT_HORIZON if body.horizon is None else body.horizon
        if not 1 <= horizon <= cross_section.MAX_HORIZON:
            raise ValidationError(
                f"horizon must be in 1..{cross_section.MAX_HORIZON} sessions", parameter="horizon"
            )
        first, last = body.from_, body.to
        weighted = body.weights == "dollar_volume"

        def work() -> Any:
            panel = cross_section.universe_panel(
                universe, first, last, horizon=horizon, names=names, weighted=weighted
            )
            d = len(panel.dates)
            if d < 2:
                raise ValidationError(
                    f"{d} rebalance dates between from and to (every {horizon} sessions, the "
                    "last return ending by to): at least 2 are needed",
                    parameter="to",
                )
            if d > config.max_batch_bars:
                raise ValidationError(
                    f"{d} dates, at most {config.max_batch_bars} per request", parameter="to"
                )
            cross_section.check_cells(d, len(universe), "universe")
            _check_shape(body, d, len(universe), len(names), "universe")
            answer = cross_section.cross_section_payload(
                panel, quantiles=body.quantiles, nw_lags=body.nw_lags
            )
            return {"horizon": horizon, **answer}

        return work


def routes(engine: FactorEngine) -> Sequence[Route]:
    model = engine.config.model
    return (
        ("/factor/exposures", ExposuresResource(engine)),
        ("/factor/ic", IcResource(engine)),
        ("/factor/tables", TablesResource(engine)),
        ("/factor/traded", TradedResource(engine)),
        ("/factor/cross-section", CrossSectionResource(engine)),
        ("/factor/{model}/{symbol}/latest", ModelResource(model, LatestResource(engine.exposures))),
        (
            "/factor/{model}/{symbol}/history",
            ModelResource(model, HistoryResource(engine.exposures)),
        ),
    )

"""Analytics REST: the latest statistics of a key, their history, a batch compute, and views of a
key's retained return series (drawdowns, rolling windows, the HTML tear sheet).

* ``GET /analytics/{key}`` — the last published statistic set (404 before the first return);
* ``GET /analytics/{key}/history?from=&to=&limit=&cursor=`` — stored statistic sets by time;
* ``POST /analytics/compute`` — ``{"returns": [...]}`` or ``{"prices": [...]}``, optional
  ``benchmark`` (returns) or ``benchmark_prices`` aligned with them, ``dates`` (ISO-8601, aligned
  with the posted array; they name the periodicity when ``period`` is absent), ``period``,
  ``annualization``, ``convention``, ``risk_free``, ``required_return``, ``cutoff`` → the full
  statistic set (same payload shape as the stream) and the five worst drawdowns. Arrays hold at
  most ``max_post_returns`` values; a non-finite, non-positive (prices) or misaligned array is a
  400 naming it;
* ``GET /analytics/{key}/drawdowns?top=`` — the worst drawdowns of the retained series (times in
  ns: ``peak_ns`` is the high before the fall, ``recovery_ns`` ``null`` while under water);
* ``GET /analytics/{key}/rolling?window=`` — rolling Sharpe and volatility (and beta over the
  benchmark pairs), one value per full trailing window, stamped by the window's last return;
* ``GET /analytics/{key}/report?window=`` — the tear sheet (``engines.analytics.report``): equity
  curve, underwater plot, monthly heatmap, rolling Sharpe, as self-contained HTML; each return is
  dated by the start of the bar it ends at (a daily bar's session date, not the next midnight).

``compute`` is a reserved word (the POST route): no key can be named so. The views cover what the
engine retains per key (``max_returns``, see ``engines.analytics.service``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import falcon
import falcon.asgi
import msgspec
import numpy as np

from engines.analytics import core, report
from engines.analytics.service import Snapshot, finite_or_none, statistics_payload
from engines.shell import ConflictError, Route, ValidationError
from engines.shell.openapi import Text
from engines.shell.params import query_int
from engines.shell.rest import HistoryResource, LatestResource, read_body

if TYPE_CHECKING:
    from engines.analytics.service import AnalyticsEngine

TOP_DRAWDOWNS = 5


class ComputeBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /analytics/compute``: a series (returns or prices) and what the numbers depend on."""

    returns: list[float] | None = None
    prices: list[float] | None = None
    benchmark: list[float] | None = None
    benchmark_prices: list[float] | None = None
    dates: list[str] | None = None
    period: str | None = None
    annualization: float | None = None
    convention: Literal["empyrical", "quantstats"] | None = None
    risk_free: float = 0.0
    required_return: float = 0.0
    cutoff: float = 0.05


def routes(engine: AnalyticsEngine) -> Sequence[Route]:
    return (
        ("/analytics/compute", ComputeResource(engine)),
        ("/analytics/{key}", LatestResource(engine.stats_records, key="key")),
        ("/analytics/{key}/history", HistoryResource(engine.stats_records, key="key")),
        ("/analytics/{key}/drawdowns", DrawdownsResource(engine)),
        ("/analytics/{key}/rolling", RollingResource(engine)),
        ("/analytics/{key}/report", ReportResource(engine)),
    )


# ── batch compute ──────────────────────────────────────────────────────────────────────────────


def _series(
    returns: tuple[str, list[float] | None], prices: tuple[str, list[float] | None], limit: int
) -> core.F64 | None:
    """The posted returns, or the simple returns of the posted prices (``(name, values)``
    each); 400 naming the array at fault."""
    given = [(name, values) for name, values in (returns, prices) if values is not None]
    if len(given) > 1:
        raise ValidationError(f"give {returns[0]} or {prices[0]}, not both", parameter=prices[0])
    if not given:
        return None
    name, values = given[0]
    if len(values) > limit:
        raise ValidationError(f"{name} holds {len(values)} values, at most {limit}", parameter=name)
    arr = _checked(values, name)
    if name == returns[0]:
        return arr
    if arr.size < 2:
        raise ValidationError(f"{name} needs at least 2 prices", parameter=name)
    bad = np.flatnonzero(~(arr > 0))
    if bad.size:
        raise ValidationError(f"{name}[{bad[0]}] must be > 0, got {arr[bad[0]]}", parameter=name)
    out: core.F64 = arr[1:] / arr[:-1] - 1.0
    return out


def _checked(values: list[float], name: str) -> core.F64:
    try:
        return core.as_returns(values, name, allow_nan=False)
    except core.AnalyticsInputError as exc:
        raise ValidationError(str(exc), parameter=name) from None


def _dates(body: ComputeBody, n_values: int) -> np.ndarray[Any, np.dtype[np.datetime64]] | None:
    if body.dates is None:
        return None
    if len(body.dates) != n_values:
        raise ValidationError(
            f"{len(body.dates)} dates for {n_values} posted values", parameter="dates"
        )
    try:
        stamps = np.array(body.dates, dtype="datetime64[ns]")
    except ValueError as exc:
        raise ValidationError(f"not ISO-8601 dates: {exc}", parameter="dates") from None
    if stamps.size > 1 and not (np.diff(stamps.astype(np.int64)) > 0).all():
        raise ValidationError("dates must be strictly increasing", parameter="dates")
    return stamps


def compute(body: ComputeBody, limit: int, default_convention: str) -> dict[str, Any]:
    """The answer of ``POST /analytics/compute`` (runs on the compute threads)."""
    r = _series(("returns", body.returns), ("prices", body.prices), limit)
    if r is None:
        raise ValidationError("give returns or prices", parameter="returns")
    if r.size == 0:
        raise ValidationError("returns is empty", parameter="returns")
    b = _series(("benchmark", body.benchmark), ("benchmark_prices", body.benchmark_prices), limit)
    if b is not None and b.size != r.size:
        name = "benchmark" if body.benchmark is not None else "benchmark_prices"
        raise ValidationError(f"{name} gives {b.size} returns, the series {r.size}", parameter=name)
    posted = r.size + 1 if body.prices is not None else r.size
    stamps = _dates(body, posted)
    if stamps is not None and body.prices is not None:
        stamps = stamps[1:]  # a return is dated by the price it ends at
    source = "given"
    period = body.period
    if period is None and stamps is not None and stamps.size >= 2:
        period, source = core.infer_period(stamps), "inferred from dates"
    elif period is None:
        period, source = "daily", "default"
    try:
        params = core.AnalyticsParams(
            period=period,
            annualization=body.annualization,
            risk_free=body.risk_free,
            required_return=body.required_return,
            cutoff=body.cutoff,
            convention=body.convention or default_convention,  # type: ignore[arg-type]
        )
        stats = core.compute_stats(r, b, params)
        drawdowns = core.drawdown_table(r, stamps, top=TOP_DRAWDOWNS)
    except core.AnalyticsInputError as exc:
        raise ValidationError(str(exc), parameter=exc.parameter) from None
    return {
        "period": params.period,
        "period_source": source,
        "periods_per_year": params.periods_per_year,
        "convention": params.convention,
        **statistics_payload(
            stats, stats if b is not None else None, "posted" if b is not None else None
        ),
        "drawdowns": [_posted_drawdown(d) for d in drawdowns],
    }


def _posted_drawdown(d: core.Drawdown) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peak": d.peak, "start": d.start, "trough": d.trough, "end": d.end,
        "recovery": d.recovery, "depth": d.depth, "periods": d.periods,
    }  # fmt: skip
    if d.trough_date is not None:
        out |= {
            "peak_date": None if d.peak_date is None else str(d.peak_date),
            "trough_date": str(d.trough_date),
            "recovery_date": None if d.recovery_date is None else str(d.recovery_date),
            "days": d.days,
        }
    return out


class ComputeResource:
    body_type = ComputeBody

    def __init__(self, engine: AnalyticsEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, ComputeBody)
        cfg = self._engine.config
        resp.media = await self._engine.run_in_executor(
            compute, body, cfg.max_post_returns, cfg.convention
        )


# ── views of a key's retained series ───────────────────────────────────────────────────────────


def drawdowns(snap: Snapshot, top: int) -> list[dict[str, Any]]:
    """The ``top`` worst drawdowns of the retained series, times in ns."""
    t = snap.times
    return [
        {
            "peak_ns": snap.origin_ns if d.peak < 0 else int(t[d.peak]),
            "start_ns": int(t[d.start]),
            "trough_ns": int(t[d.trough]),
            "end_ns": int(t[d.end]),
            "recovery_ns": None if d.recovery is None else int(t[d.recovery]),
            "depth": d.depth,
            "periods": d.periods,
        }
        for d in core.drawdown_table(snap.returns, top=top)
    ]


def rolling(snap: Snapshot, window: int, params: core.AnalyticsParams) -> dict[str, Any]:
    """Rolling Sharpe and volatility (and beta over the pairs), one per full window."""

    def values(a: core.F64) -> list[float | None]:
        return [finite_or_none(float(x)) for x in a]

    out: dict[str, Any] = {"times": [], "sharpe": [], "volatility": [], "beta": None}
    per, ann = params.period, params.annualization
    if snap.returns.size >= window:
        out["times"] = snap.times[window - 1 :].tolist()
        out["sharpe"] = values(core.roll_sharpe_ratio(snap.returns, window, 0.0, per, ann))
        out["volatility"] = values(core.roll_annual_volatility(snap.returns, window, per, ann))
    if snap.pair_returns.size >= window:
        out["beta"] = {
            "times": snap.pair_times[window - 1 :].tolist(),
            "values": values(core.roll_beta(snap.pair_returns, snap.pair_benchmark, window)),
        }
    return out


class DrawdownsResource:
    def __init__(self, engine: AnalyticsEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key: str) -> None:
        top = query_int(req, "top", default=10, minimum=1, maximum=1_000)
        snap = self._engine.snapshot(key)
        items = await self._engine.run_in_executor(drawdowns, snap, top)
        resp.media = {"key": key, "n": snap.returns.size, "from_ns": snap.origin_ns, "items": items}


class RollingResource:
    def __init__(self, engine: AnalyticsEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key: str) -> None:
        engine = self._engine
        window = query_int(
            req, "window", default=engine.config.rolling_window, minimum=2,
            maximum=engine.config.max_returns,
        )  # fmt: skip
        snap = engine.snapshot(key)
        views = await engine.run_in_executor(rolling, snap, window, engine.params)
        resp.media = {
            "key": key,
            "window": window,
            "n": snap.returns.size,
            "periods_per_year": engine.periods_per_year,
            **views,
        }


class ReportResource:
    response_type = Text("text/html")

    def __init__(self, engine: AnalyticsEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key: str) -> None:
        engine = self._engine
        window = query_int(
            req, "window", default=engine.config.rolling_window, minimum=2,
            maximum=engine.config.max_returns,
        )  # fmt: skip
        snap = engine.snapshot(key)
        if snap.returns.size < 2:
            raise ConflictError(f"{key} has {snap.returns.size} return(s); a report needs 2")
        title = f"{key}: {snap.source} ({engine.annualization_basis})"
        resp.content_type = falcon.MEDIA_HTML
        resp.text = await engine.run_in_executor(
            report.render_report,
            snap.returns,
            (snap.times - engine.bar_ns).astype("datetime64[ns]"),  # the last bar's own date
            title=title,
            params=engine.params,
            rolling_window=window,
        )

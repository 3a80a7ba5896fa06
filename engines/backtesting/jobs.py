"""A backtest job: its request (validated into a ``JobSpec``), and the blocking run that turns
it into a result (event-driven or vectorized, one point or a grid, statistics, overfitting).

``parse_job`` raises ``JobInputError`` naming the field at fault (the API's 400): an unknown
strategy or parameter, a grid over the limit, an empty or reversed period, an unknown symbol.
``run_job`` runs on a worker thread; ``progress`` and ``cancel`` connect it to the engine.
The seed is recorded and hashed with the result; nothing in either mode draws random numbers.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from engines.analytics import core as analytics
from engines.backtesting import core
from engines.backtesting.core import BarArrays, FillRule, MaCrossParams
from engines.backtesting.history import UnknownHistory, load_bars
from engines.backtesting.replay import EventResult, EventRun, Progress, run_event
from engines.strategy.core import load_strategy_class

__all__ = [
    "BacktestBody", "JobInputError", "JobSpec", "WalkForwardBody", "parse_job", "run_job",
]  # fmt: skip

MA_CROSS = "engines.strategy.strategies:MovingAverageCross"
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class Costs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fee_bps: NonNegative = 0.0
    slippage_bps: NonNegative = 0.0
    latency_ms: NonNegative = 0.0


class WalkForwardBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rolling walk-forward of a vectorized grid, in bars: ``train`` in sample, ``test`` out
    of sample, windows ``step`` bars apart (default ``test``)."""

    train: Annotated[int, msgspec.Meta(ge=2)]
    test: Annotated[int, msgspec.Meta(ge=2)]
    step: Annotated[int, msgspec.Meta(ge=1)] | None = None


class BacktestBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /backtests``. ``from``/``to``: ISO dates (``1998-01-01``) or ns since the epoch;
    ``grid``: parameter → list of values (the cartesian product is run)."""

    strategy: str
    from_: str | int = msgspec.field(name="from")
    to: str | int
    mode: Literal["event", "vectorized"] = "event"
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    grid: dict[str, list[Any]] | None = None
    symbols: list[str] = msgspec.field(default_factory=lambda: ["SPY"])
    bars: str = "1d"
    costs: Costs = msgspec.field(default_factory=Costs)
    fill: FillRule = FillRule.NEXT_OPEN
    cash: Annotated[float, msgspec.Meta(gt=0)] = 1_000_000.0
    seed: int = 0
    walk_forward: WalkForwardBody | None = None


class JobInputError(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """A validated request: the strategy's path and the points to run (each a full params
    dict), with the bars already loaded."""

    body: BacktestBody
    path: str
    points: list[dict[str, Any]]
    bars: list[BarArrays] = field(repr=False)

    @property
    def is_grid(self) -> bool:
        return self.body.grid is not None


def parse_job(
    body: BacktestBody, strategies: dict[str, str], *, max_grid: int, max_event_grid: int,
    max_event_bars: int, blocks: int = 16,
) -> JobSpec:  # fmt: skip
    path = strategies.get(body.strategy)
    if path is None:
        raise JobInputError("strategy", f"unknown strategy {body.strategy!r}; known: "
                            f"{sorted(strategies)}")  # fmt: skip
    params_type = load_strategy_class(path).params_type
    known = set(getattr(params_type, "__struct_fields__", ()))
    for name in body.params:
        if name not in known:
            raise JobInputError(f"params.{name}", f"{body.strategy} has no parameter {name!r}")
    grid = body.grid or {}
    for name, values in grid.items():
        if name not in known:
            raise JobInputError(f"grid.{name}", f"{body.strategy} has no parameter {name!r}")
        if not values:
            raise JobInputError(f"grid.{name}", "a grid axis needs at least one value")
    size = math.prod(len(v) for v in grid.values()) if grid else 1
    limit = max_grid if body.mode == "vectorized" else max_event_grid
    if size > limit:
        raise JobInputError("grid", f"{size} points is over the {body.mode} limit of {limit}")
    if body.mode == "vectorized":
        if path != MA_CROSS:
            raise JobInputError("mode", "vectorized mode runs the MA crossover (ma_cross) only")
        if len(body.symbols) != 1:
            raise JobInputError("symbols", "vectorized mode runs one symbol")
    points: list[dict[str, Any]] = []
    names = list(grid)
    first_error = ""
    for combo in itertools.product(*(grid[n] for n in names)) if grid else [()]:
        point = {**body.params, **dict(zip(names, combo, strict=True))}
        try:
            msgspec.convert(point, params_type)
        except msgspec.ValidationError as exc:
            if not grid:
                where = str(exc).rpartition("`$.")[2].rstrip("`") if "`$." in str(exc) else ""
                raise JobInputError(f"params.{where}" if where else "params", str(exc)) from None
            first_error = first_error or f"{exc} (at {point})"
            continue  # a corner the strategy refuses (fast >= slow) is skipped
        points.append(point)
    if not points:
        raise JobInputError("grid", f"no valid point in the grid: {first_error}")
    from_ns, to_ns = _time(body.from_, "from"), _time(body.to, "to")
    if from_ns >= to_ns:
        raise JobInputError("to", "the period is empty or reversed: need from < to")
    if not body.symbols or len(set(body.symbols)) != len(body.symbols):
        raise JobInputError("symbols", "name each symbol once, at least one")
    bars: list[BarArrays] = []
    for symbol in body.symbols:
        try:
            series = load_bars(symbol, body.bars, from_ns, to_ns)
        except UnknownHistory as exc:
            raise JobInputError(exc.parameter, str(exc)) from None
        if len(series) < 2:
            raise JobInputError("from", f"fewer than 2 {body.bars} bars of {symbol} in the period")
        bars.append(series)
    if body.walk_forward is not None:
        _check_walk_forward(body.walk_forward, body, len(bars[0]), blocks)
    total = sum(len(b) for b in bars) * len(points)
    if body.mode == "event" and total > max_event_bars:
        raise JobInputError("grid", f"{total} bar events (bars × points) is over the event "
                            f"limit of {max_event_bars}")  # fmt: skip
    return JobSpec(body=body, path=path, points=points, bars=bars)


def _check_walk_forward(wf: WalkForwardBody, body: BacktestBody, bars: int, blocks: int) -> None:
    if body.mode != "vectorized" or body.grid is None:
        raise JobInputError("walk_forward", "walk-forward needs a vectorized grid job")
    if wf.train < blocks:
        raise JobInputError("walk_forward.train", f"train must be >= {blocks} bars (CSCV blocks)")
    if wf.train + wf.test > bars:
        raise JobInputError("walk_forward.test", f"train + test = {wf.train + wf.test} bars, "
                            f"but the period has {bars}")  # fmt: skip


def _time(value: str | int, parameter: str) -> int:
    if isinstance(value, int):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise JobInputError(parameter, f"{value!r} is not an ISO date or ns") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1_000


# ── the run ──────────────────────────────────────────────────────────────────────────────────


def run_job(
    spec: JobSpec,
    job_id: str,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    blocks: int = 16,
    map_chunks: core.ChunkMap = core.map_in_process,
) -> dict[str, Any]:
    """The result document of a job (JSON-ready): fills, equity, statistics, hash, and for a
    grid the per-point summary, the Deflated Sharpe ratio and PBO. ``map_chunks`` runs a
    vectorized grid's chunks (in this process, or ``cluster.DaskGrid``: the same result)."""
    if spec.body.mode == "vectorized":
        return _vectorized(spec, progress, blocks, map_chunks)
    return _event(spec, job_id, progress, cancel, blocks)


def _event(
    spec: JobSpec,
    job_id: str,
    progress: Progress | None,
    cancel: threading.Event | None,
    blocks: int,
) -> dict[str, Any]:
    body = spec.body
    results: list[EventResult] = []
    n = len(spec.points)
    for k, point in enumerate(spec.points):

        def scaled(done: float, t: int, fills: int, k: int = k) -> None:
            if progress is not None:
                progress((k + done) / n, t, fills)

        run = EventRun(
            strategy_path=spec.path, params=point, cash=Decimal(repr(body.cash)),
            fill=body.fill, fee_bps=body.costs.fee_bps, slippage_bps=body.costs.slippage_bps,
            latency_ms=body.costs.latency_ms, run_id=f"{job_id}-{k}",
        )  # fmt: skip
        results.append(run_event(run, spec.bars, progress=scaled, cancel=cancel))
    equities = np.array([r.equity_floats() for r in results])
    returns = _returns(equities, body.cash)
    best = 0
    document = _single(spec, results[0].equity_ns, equities[0], returns[0])
    overfit = None
    if spec.is_grid and n > 1:
        summary = _summary_of(returns, equities, blocks)
        of = core.overfitting(summary, returns[int(np.nanargmax(_sharpes(summary)))])
        best = of.best
        overfit = _overfitting_doc(of, n)
        document = _single(spec, results[best].equity_ns, equities[best], returns[best])
        document["grid"] = _grid_doc(spec.points, summary, [r.hash for r in results])
    chosen = results[best]
    document.update(
        best_params=spec.points[best],
        fills=[msgspec.to_builtins(f) for f in chosen.fills],
        denied=sum(1 for o in chosen.orders if o.status.value == "denied"),
        hash=core.sha256_hex([r.hash.encode() for r in results] + [str(body.seed).encode()]),
        overfitting=overfit,
    )
    return document


def _vectorized(
    spec: JobSpec, progress: Progress | None, blocks: int, map_chunks: core.ChunkMap
) -> dict[str, Any]:
    body = spec.body
    bars = spec.bars[0]
    bases = [_ma_params(p, body) for p in spec.points]
    best = 0
    overfit = None
    grid_doc = None
    if spec.is_grid and len(bases) > 1:
        base = bases[0]
        summary = core.ma_cross_sweep(
            bars, [b.fast for b in bases], [b.slow for b in bases],
            MaCrossParams(**{**core._fields(base), "fast": 1, "slow": 2}), blocks=blocks,
            map_chunks=map_chunks,
        )  # fmt: skip
        sharpes = _sharpes(summary)
        best = int(np.nanargmax(np.where(np.isfinite(sharpes), sharpes, -np.inf)))
        path = core.ma_cross_path(bars, bases[best])
        returns = _returns(path.equity[None, :], body.cash)[0]
        of = core.overfitting(summary, returns)
        overfit = _overfitting_doc(of, len(bases))
        grid_doc = _grid_doc(spec.points, summary, None)
    else:
        path = core.ma_cross_path(bars, bases[0])
        returns = _returns(path.equity[None, :], body.cash)[0]
    if progress is not None:
        progress(1.0, int(bars.end_ns[-1]), int(np.count_nonzero(path.quantity)))
    document = _single(spec, bars.end_ns, path.equity, returns)
    filled = np.nonzero(path.quantity)[0]
    at = bars.start_ns if body.fill is FillRule.NEXT_OPEN else bars.end_ns
    fills = [
        {"event_ns": int(at[i]), "symbol": bars.symbol,
         "side": "buy" if path.quantity[i] > 0 else "sell",
         "quantity": abs(float(path.quantity[i])), "price": float(path.fill_price[i]),
         "fee": float(path.fee[i])}
        for i in filled.tolist()
    ]  # fmt: skip
    document.update(
        best_params=spec.points[best],
        fills=fills,
        denied=0,
        hash=core.sha256_hex(
            [msgspec.json.encode(fills), path.equity.tobytes(), str(body.seed).encode()]
        ),
        overfitting=overfit,
    )
    if grid_doc is not None:
        document["grid"] = grid_doc
    if body.walk_forward is not None:
        document["walk_forward"] = _walk_forward_doc(spec, bases, blocks, map_chunks)
    return document


def _walk_forward_doc(
    spec: JobSpec, bases: list[MaCrossParams], blocks: int, map_chunks: core.ChunkMap
) -> dict[str, Any]:
    wf = spec.body.walk_forward
    assert wf is not None
    bars = spec.bars[0]
    base = MaCrossParams(**{**core._fields(bases[0]), "fast": 1, "slow": 2})
    result = core.walk_forward(
        bars, [b.fast for b in bases], [b.slow for b in bases], base, train=wf.train,
        test=wf.test, step=wf.step, blocks=blocks, map_chunks=map_chunks,
    )  # fmt: skip
    params = analytics.AnalyticsParams(period=_period(spec))
    stats = analytics.compute_stats(result.returns, params=params)
    in_sample = np.array([w.in_sample_sharpe for w in result.windows])
    out_sample = np.array([w.out_of_sample_sharpe for w in result.windows])
    equity = spec.body.cash * np.cumprod(1.0 + result.returns)
    return {
        "train": wf.train,
        "test": wf.test,
        "step": wf.step or wf.test,
        "windows": [
            {
                "train_from_ns": int(bars.start_ns[w.train_from]),
                "test_from_ns": int(bars.start_ns[w.test_from]),
                "test_to_ns": int(bars.end_ns[w.test_to - 1]),
                "best_params": spec.points[w.best],
                "in_sample_sharpe": _finite(w.in_sample_sharpe),
                "out_of_sample_sharpe": _finite(w.out_of_sample_sharpe),
                "deflated_sharpe": _finite(w.deflated_sharpe),
                "pbo": _finite(w.pbo),
            }
            for w in result.windows
        ],
        # mean out-of-sample over mean in-sample per-period Sharpe (Pardo's efficiency)
        "efficiency": _finite(float(np.nanmean(out_sample) / np.nanmean(in_sample))),
        "equity": {
            "t": [int(bars.end_ns[i]) for i in result.bar.tolist()],
            "v": [float(v) for v in equity],
        },
        "statistics": {k: _finite(v) for k, v in stats._asdict().items()},
    }


def _ma_params(point: dict[str, Any], body: BacktestBody) -> MaCrossParams:
    from engines.strategy.strategies import MovingAverageCrossParams

    p = msgspec.convert(point, MovingAverageCrossParams)
    return MaCrossParams(
        fast=p.fast, slow=p.slow, quantity=p.quantity, atr_period=p.atr_period,
        atr_stop=p.atr_stop, allow_short=p.allow_short, fee_bps=body.costs.fee_bps,
        slippage_bps=body.costs.slippage_bps, fill=body.fill, cash=body.cash,
    )  # fmt: skip


def _returns(equities: np.ndarray[Any, Any], cash: float) -> np.ndarray[Any, Any]:
    previous = np.concatenate((np.full((equities.shape[0], 1), cash), equities[:, :-1]), axis=1)
    return np.asarray(equities / previous - 1.0)


def _summary_of(
    returns: np.ndarray[Any, Any], equities: np.ndarray[Any, Any], blocks: int
) -> core.GridSummary:
    t = returns.shape[1]
    block_of = core.cscv_blocks(t, blocks)
    bsum: core.F64 = np.stack(
        [np.bincount(block_of, weights=r, minlength=blocks) for r in returns]
    ).astype(np.float64)
    bsq: core.F64 = np.stack(
        [np.bincount(block_of, weights=r * r, minlength=blocks) for r in returns]
    ).astype(np.float64)
    return core.GridSummary(
        equities[:, -1], np.zeros(len(returns), dtype=np.int64), returns.mean(axis=1),
        returns.std(axis=1, ddof=1), bsum, bsq, np.bincount(block_of, minlength=blocks),
    )  # fmt: skip


def _sharpes(summary: core.GridSummary) -> np.ndarray[Any, Any]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(summary.std > 0, summary.mean / summary.std, np.nan)


def _period(spec: JobSpec) -> str:
    return "daily" if spec.body.bars == "1d" else "minute"


def _single(
    spec: JobSpec, times: np.ndarray[Any, Any], equity: np.ndarray[Any, Any],
    returns: np.ndarray[Any, Any],
) -> dict[str, Any]:  # fmt: skip
    stats = analytics.compute_stats(returns, params=analytics.AnalyticsParams(period=_period(spec)))
    priced = spec.bars[0]
    return {
        "mode": spec.body.mode,
        "prices": {
            "symbol": priced.symbol,
            "t": [int(t) for t in priced.end_ns],
            "close": [float(c) for c in priced.close],
        },
        "period": _period(spec),
        "equity": {"t": [int(t) for t in times], "v": [float(v) for v in equity]},
        "statistics": {k: _finite(v) for k, v in stats._asdict().items()},
    }


def _grid_doc(
    points: list[dict[str, Any]], summary: core.GridSummary, hashes: list[str] | None
) -> list[dict[str, Any]]:
    sharpes = _sharpes(summary)
    return [
        {"params": p, "final_equity": float(summary.final_equity[i]),
         "sharpe": _finite(float(sharpes[i])), **({"hash": hashes[i]} if hashes else {})}
        for i, p in enumerate(points)
    ]  # fmt: skip


def _overfitting_doc(of: core.Overfitting, trials: int) -> dict[str, Any]:
    return {
        "trials": trials,
        "best": of.best,
        "sharpe": _finite(of.sharpe),
        "deflated_sharpe": _finite(of.deflated_sharpe),
        "pbo": _finite(of.pbo),
        "splits": len(of.logits),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None

"""Backtesting core, pure: bar arrays, the O→H→L→C print path, the vectorized MA-crossover
sweep (the path's ``lax.scan`` over time batched over the parameter grid, as ``jax.vmap``
would, in padded chunks that a ``ChunkMap`` runs here or on a cluster), and the overfitting
statistics of a grid (Deflated Sharpe, PBO by CSCV).

Sweep cost: each distinct window's average is computed once (``sma_table``: W rows, not one
per point) and gathered per point inside the scan; the scan keeps O(points) state (the
returns are summed per CSCV block as it goes, Kahan-compensated), so a chunk stays in cache.

The vectorized sweep is the event-driven run of ``engines.strategy.strategies.MovingAverageCross``
written as arrays, so the two modes agree trade for trade (``tests/engines/backtesting``):

* the moving averages are the strategy's own numbers: ``math.fsum`` of the window over its
  length. ``sma_table`` gets them exactly (the window sums of the doubles are formed as exact
  integers in units of the smallest binade's ulp, then rounded once, as ``fsum`` rounds), so a
  near-tie between the averages goes the same way in both modes;
* the ATR is Wilder's, replayed with the same float operations as ``AverageTrueRange``;
* the regime / ATR-stop / target logic is the strategy's ``on_bar``; a target becomes a market
  order for ``target − position`` (``StrategyContext.target``), filled in full either at the next
  bar's open (``next_open``) or at the bar's own close (``close``, a market-on-close order:
  close-to-close returns), with fees in bps of the notional and slippage in bps of the price
  (against the order: a buy pays more).

Limits: one symbol per sweep; fills are never partial (the event-driven venue fills at most the
print's size: parity holds while orders are smaller than the bars' prints); no risk limits (the
event-driven run asks Risk; parity holds while Risk approves every order).

PBO: Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest Overfitting",
J. Computational Finance 20(4), section 2 (CSCV): the T×N performance matrix in ``S`` blocks,
every half of the blocks in-sample and the rest out, ``ω = rank_OOS(n*)/(N+1)`` of the
in-sample best ``n*``, ``λ = ln(ω/(1−ω))``, PBO = share of splits with ``λ ≤ 0``. Performance
is the per-period Sharpe ratio of each half.

Walk-forward (Pardo, "The Evaluation and Optimization of Trading Strategies", 2nd ed. 2008, ch.
11): rolling windows of ``train`` bars in sample followed by ``test`` bars out of sample, moved on
by ``step`` bars; in each, the grid is swept over the in-sample bars, its best point (highest
per-period Sharpe, the first on a tie) is run over in-sample + out-of-sample bars (so its
indicators and position are those the in-sample history implies, as a deployed strategy warmed
up on it would hold) and its returns over the test bars are kept. The out-of-sample returns of
the windows, in order, are the walk-forward record; each window also reports its in-sample
grid's Deflated Sharpe and PBO. Limits: rolling only (not anchored: every window has the same
shape, so one compile serves all); the test segments may overlap when ``step < test``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from engines.analytics import core as analytics

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = [
    "BarArrays",
    "ChunkMap",
    "FillRule",
    "GridSummary",
    "MaCrossParams",
    "Overfitting",
    "PathResult",
    "SweepInputs",
    "WalkForward",
    "WalkForwardWindow",
    "cscv_blocks",
    "ma_cross_path",
    "ma_cross_sweep",
    "map_in_process",
    "overfitting",
    "pbo_cscv",
    "print_path",
    "quantize",
    "sha256_hex",
    "sma_table",
    "sweep_chunk",
    "sweep_inputs",
    "walk_forward",
    "wilder_atr",
]


class FillRule(StrEnum):
    """When an order made on bar *t* fills: at the open of *t+1*, or at the close of *t*."""

    NEXT_OPEN = "next_open"
    CLOSE = "close"


@dataclass(frozen=True, slots=True, eq=False)
class BarArrays:
    """One symbol's bars, ascending: ``[start_ns, end_ns)`` and OHLCV."""

    symbol: str
    spec: str
    start_ns: I64
    end_ns: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64

    def __len__(self) -> int:
        return len(self.start_ns)

    def select(self, keep: npt.NDArray[np.bool_]) -> BarArrays:
        return BarArrays(
            self.symbol, self.spec, self.start_ns[keep], self.end_ns[keep], self.open[keep],
            self.high[keep], self.low[keep], self.close[keep], self.volume[keep],
        )  # fmt: skip


def quantize(values: F64, places: int) -> F64:
    """Prices on the data's decimal grid (what the venue and the ledger see), as floats."""
    return np.round(values, places)


def print_path(open_: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike,
               close: npt.ArrayLike) -> F64:  # fmt: skip
    """The four prints each bar stands for (``(..., 4)``): O→H→L→C, or O→L→H→C when the open is
    nearer the low (the usual intrabar assumption: the nearer extreme is visited first)."""
    o, h, lo, c = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                        for a in (open_, high, low, close)))  # fmt: skip
    low_first = o - lo < h - o
    return np.stack((o, np.where(low_first, lo, h), np.where(low_first, h, lo), c), axis=-1)


# ── the strategy's indicators, as arrays ─────────────────────────────────────────────────────


def sma_table(close: F64, windows: npt.ArrayLike) -> F64:
    """``(len(windows), T)``: the mean of the last ``w`` closes as ``SimpleMovingAverage`` gives
    it (``math.fsum(window) / w``, bit for bit); NaN before ``w`` values.

    Every positive double is an integer multiple of the ulp of the smallest binade present, so
    the window sums are exact integers (Python ints: no overflow); ``float(int)`` rounds half to
    even, as ``fsum`` does, and the power-of-two rescaling is exact.
    """
    x = np.asarray(close, dtype=np.float64)
    ws = np.asarray(windows, dtype=np.int64).reshape(-1)
    out = np.full((ws.size, x.size), np.nan)
    if x.size == 0:
        return out
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("closes must be finite and > 0")
    _, exponents = np.frexp(x)
    shift = 53 - int(exponents.min())  # x · 2**shift is an integer for every x
    ints = [int(v) for v in np.ldexp(x, shift)]
    cumulative = np.array([0, *itertools.accumulate(ints)], dtype=object)
    for row, w in enumerate(ws.tolist()):
        if w < 1:
            raise ValueError(f"window must be >= 1, got {w}")
        if w > x.size:
            continue
        exact = cumulative[w:] - cumulative[:-w]  # Python ints: exact window sums
        out[row, w - 1 :] = np.ldexp(exact.astype(np.float64), -shift) / w
    return out


def wilder_atr(high: F64, low: F64, close: F64, period: int) -> F64:
    """Wilder's ATR with the float operations of ``engines.strategy.core.AverageTrueRange``
    (NaN while it is ``None``)."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    out = np.full(len(close), np.nan)
    previous: float | None = None
    seed: list[float] = []
    value: float | None = None
    for t, (h, lo, c) in enumerate(zip(high.tolist(), low.tolist(), close.tolist(), strict=True)):
        prev, previous = previous, c
        if prev is None:
            continue
        true_range = max(h - lo, abs(h - prev), abs(lo - prev))
        if value is None:
            seed.append(true_range)
            if len(seed) == period:
                value = sum(seed) / period
        else:
            value = (value * (period - 1) + true_range) / period
        if value is not None:
            out[t] = value
    return out


# ── the vectorized MA crossover ──────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True, kw_only=True)
class MaCrossParams:
    """What ``MovingAverageCrossParams`` holds, plus the costs and fill rule of the run."""

    fast: int = 10
    slow: int = 30
    quantity: int = 100
    atr_period: int = 14
    atr_stop: float = 3.0
    allow_short: bool = True
    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    fill: FillRule = FillRule.NEXT_OPEN
    cash: float = 1_000_000.0


class PathResult(NamedTuple):
    """One parameter point over time: the fill of each bar (quantity signed, 0 = none, at
    ``fill_price`` with ``fee``; on bar *t* for ``close``, on bar *t* for an order of *t − 1*
    under ``next_open``), position, cash and equity (marked at the close) after each bar."""

    quantity: F64
    fill_price: F64
    fee: F64
    position: F64
    cash: F64
    equity: F64


class GridSummary(NamedTuple):
    """Per grid point: final equity, number of fills, per-period mean and std (ddof 1) of the
    bar returns, and per-block sums of returns and of their squares (for CSCV)."""

    final_equity: F64
    fills: I64
    mean: F64
    std: F64
    block_sum: F64  # (points, blocks)
    block_sumsq: F64
    block_count: I64  # (blocks,)


class _State(NamedTuple):
    """What ``MovingAverageCross`` and the venue carry from bar to bar, per point (scalars on a
    path, vectors over the points of a sweep): regime (−1, 0, 1, as a float), entry price and
    ATR at the last regime change, whether the ATR stop hit since, position, cash, and the
    order waiting for the next open (``next_open``)."""

    regime: jax.Array
    entry: jax.Array
    entry_atr: jax.Array
    stopped: jax.Array
    position: jax.Array
    cash: jax.Array
    pending: jax.Array


class _Costs(NamedTuple):
    """A run's scalars as the step uses them: order size, stop distance in ATRs, whether a
    short is allowed, the slipped price factors of a buy and a sell, and the fee rate."""

    quantity: jax.Array
    atr_stop: jax.Array
    allow_short: jax.Array
    up: jax.Array
    down: jax.Array
    fee_rate: jax.Array


def _start(cash: jax.Array, points: tuple[int, ...] = ()) -> _State:
    zero = jnp.zeros(points, dtype=jnp.float64)
    return _State(zero, zero, jnp.full(points, jnp.nan), jnp.zeros(points, dtype=bool), zero,
                  jnp.full(points, cash), zero)  # fmt: skip


def _step(
    state: _State,
    open_: jax.Array,
    close: jax.Array,
    fast: jax.Array,
    slow: jax.Array,
    atr: jax.Array,
    costs: _Costs,
    *,
    close_fill: bool,
) -> tuple[_State, jax.Array, jax.Array, jax.Array]:
    """One bar of ``MovingAverageCross.on_bar`` plus execution: the new state and the bar's fill
    (signed quantity, 0 for none; price paid; fee). The one definition of the path, for
    ``ma_cross_path`` (one point) and ``_sweep`` (a vector of points) alike.

    It is ``on_bar`` with what cannot change a number left out: the strategy's ``target`` (after
    the first valid bar the position at decision time *is* the last target, orders filling in
    full, so ``wanted − position`` is the order, 0 when nothing changed) and its ``valid`` /
    ``has_atr`` guards (a NaN average or ATR makes every comparison false). The event-driven
    run agrees with it fill for fill (``tests/engines/backtesting/test_replay.py``)."""
    regime, entry, entry_atr, stopped, position, cash, pending = state

    def fill(q: jax.Array, price: jax.Array, cash: jax.Array) -> tuple[jax.Array, ...]:
        paid = jnp.where(q > 0, price * costs.up, price * costs.down)
        fee = jnp.abs(q) * paid * costs.fee_rate
        return cash - q * paid - fee, paid, fee

    if not close_fill:  # the order of the previous bar, at this bar's open
        filled = pending
        cash, paid, fee = fill(filled, open_, cash)
        position = position + filled
    new = jnp.where(fast > slow, 1.0, jnp.where(fast < slow, -1.0, regime))
    new = jnp.where((new < 0) & ~costs.allow_short, 0.0, new)
    changed = new != regime
    distance = costs.atr_stop * entry_atr
    hit = jnp.where(regime > 0, close <= entry - distance, close >= entry + distance)
    stopped = ~changed & (stopped | ((regime != 0) & hit))
    entry = jnp.where(changed, close, entry)
    entry_atr = jnp.where(changed, atr, entry_atr)
    order = jnp.where(stopped, 0.0, new * costs.quantity) - position
    if close_fill:  # a market-on-close order: nothing is ever pending
        filled = order
        cash, paid, fee = fill(filled, close, cash)
        position = position + filled
    else:
        pending = order
    return _State(new, entry, entry_atr, stopped, position, cash, pending), filled, paid, fee


def _costs(scalars: jax.Array, allow_short: jax.Array) -> _Costs:
    """``scalars`` = quantity, atr_stop, fee rate, slippage rate (``SweepInputs.scalars``)."""
    quantity, atr_stop, fee_rate, slip = (scalars[i] for i in range(4))
    return _Costs(quantity, atr_stop, allow_short, 1.0 + slip, 1.0 - slip, fee_rate)


@partial(jax.jit, static_argnames=("close_fill",))
def _path(
    open_: jax.Array,
    close: jax.Array,
    fast: jax.Array,
    slow: jax.Array,
    atr: jax.Array,
    scalars: jax.Array,
    allow_short: jax.Array,
    *,
    close_fill: bool,
) -> tuple[jax.Array, ...]:
    """One point over time, every bar kept (``PathResult``'s columns)."""
    costs = _costs(scalars, allow_short)

    def bar(state: _State, inputs: tuple[jax.Array, ...]) -> tuple[_State, tuple[jax.Array, ...]]:
        o, c, fast, slow, atr = inputs
        state, filled, paid, fee = _step(state, o, c, fast, slow, atr, costs,
                                         close_fill=close_fill)  # fmt: skip
        done = filled != 0
        equity = state.cash + state.position * c
        kept = (filled, jnp.where(done, paid, 0.0), jnp.where(done, fee, 0.0))
        return state, (*kept, state.position, state.cash, equity)

    _, out = jax.lax.scan(bar, _start(scalars[4]), (open_, close, fast, slow, atr))
    return out


def _atr_for(high: F64, low: F64, close: F64, period: int) -> F64:
    return wilder_atr(high, low, close, period)


def _scalars(params: MaCrossParams) -> F64:
    """quantity, atr_stop, fee rate, slippage rate, cash: what ``_costs`` and ``_start`` read."""
    return np.array([float(params.quantity), params.atr_stop, params.fee_bps / 10_000.0,
                     params.slippage_bps / 10_000.0, params.cash], dtype=np.float64)  # fmt: skip


def ma_cross_path(bars: BarArrays, params: MaCrossParams) -> PathResult:
    """One parameter point, bar by bar (what the event-driven run should reproduce)."""
    _check(params.fast, params.slow)
    table = sma_table(bars.close, [params.fast, params.slow])
    atr = _atr_for(bars.high, bars.low, bars.close, params.atr_period)
    out = _path(
        jnp.asarray(bars.open), jnp.asarray(bars.close), jnp.asarray(table[0]),
        jnp.asarray(table[1]), jnp.asarray(atr), jnp.asarray(_scalars(params)),
        jnp.asarray(params.allow_short), close_fill=params.fill is FillRule.CLOSE,
    )  # fmt: skip
    return PathResult(*(np.asarray(a, dtype=np.float64) for a in out))


class SweepInputs(NamedTuple):
    """What every chunk of a sweep shares (plain arrays: it pickles to a cluster's workers):
    the bars, the moving averages of each distinct window, time-major (``(T, windows)``), the
    ATR, each bar's CSCV block, and ``base``'s scalars."""

    open: F64
    close: F64
    averages: F64
    atr: F64
    block_of: I64
    scalars: F64  # quantity, atr_stop, fee rate, slippage rate, cash
    allow_short: bool
    close_fill: bool
    blocks: int


def _kahan(total: jax.Array, compensation: jax.Array, x: jax.Array) -> tuple[jax.Array, ...]:
    """One step of Kahan's compensated sum (``total`` is the sum, ``compensation`` the low
    part it lost, to subtract from the next term)."""
    y = x - compensation
    t = total + y
    return t, (t - total) - y


@partial(jax.jit, static_argnames=("close_fill", "blocks"))
def _sweep(
    open_: jax.Array,
    close: jax.Array,
    averages: jax.Array,
    atr: jax.Array,
    block_of: jax.Array,
    fast_col: jax.Array,
    slow_col: jax.Array,
    scalars: jax.Array,
    allow_short: jax.Array,
    *,
    close_fill: bool,
    blocks: int,
) -> tuple[jax.Array, ...]:
    """Every point of a chunk at once: a ``lax.scan`` over the CSCV blocks of a loop over each
    block's bars, whose state is a vector over the points (the bar inputs shared, each point's
    averages gathered from the table). Nothing per bar is kept: fills are counted and the
    returns summed (compensated) as the loop goes, a block's sums leaving it once, so memory is
    O(points × blocks), not O(points × T), and a bar touches O(points) (updating the
    ``(blocks, points)`` sums at every bar cost an H200 20 %: 10⁶ points 1.89 → 1.58 s).

    The step is ``_step``, ``ma_cross_path``'s: one definition of the path (``test_core``
    checks the two bit for bit at every point of a grid, both fill rules, stops hit)."""
    costs = _costs(scalars, allow_short)
    points = fast_col.shape[0]

    def bar(i: jax.Array, carry: tuple[Any, ...]) -> tuple[Any, ...]:
        state, previous, fills, sums = carry
        row = averages[i]
        state, filled, _, _ = _step(state, open_[i], close[i], row[fast_col], row[slow_col],
                                    atr[i], costs, close_fill=close_fill)  # fmt: skip
        equity = state.cash + state.position * close[i]
        r = equity / previous - 1.0
        total, lost = _kahan(sums[0], sums[1], r)
        squares, squares_lost = _kahan(sums[2], sums[3], r * r)
        return state, equity, fills + (filled != 0), jnp.stack((total, lost, squares, squares_lost))

    def block(carry: tuple[Any, ...], bounds: jax.Array) -> tuple[tuple[Any, ...], jax.Array]:
        sums = jnp.zeros((4, points), dtype=jnp.float64)  # Σr, its error, Σr², its error
        *carry, sums = jax.lax.fori_loop(bounds[0], bounds[1], bar, (*carry, sums))
        return tuple(carry), sums

    cash = scalars[4]
    init = (_start(cash, (points,)), jnp.full(points, cash), jnp.zeros(points, dtype=jnp.int64))
    numbers = jnp.arange(blocks)
    bounds = jnp.stack((jnp.searchsorted(block_of, numbers, side="left"),
                        jnp.searchsorted(block_of, numbers, side="right")), axis=1)  # fmt: skip
    (_, equity, fills), sums = jax.lax.scan(block, init, bounds)  # sums: (blocks, 4, points)
    return equity, fills, sums[:, 0] - sums[:, 1], sums[:, 2] - sums[:, 3]


def cscv_blocks(bars: int, blocks: int) -> I64:
    """Each bar's CSCV block: ``blocks`` contiguous runs of (nearly) equal length, in order."""
    return np.minimum(np.arange(bars) * blocks // bars, blocks - 1).astype(np.int64)


def sweep_inputs(
    bars: BarArrays, windows: npt.ArrayLike, base: MaCrossParams, *, blocks: int
) -> SweepInputs:
    """The shared inputs of a sweep over ``windows`` (ascending, distinct): each moving average
    once (``sma_table``), not once per point."""
    t = len(bars)
    return SweepInputs(
        open=np.ascontiguousarray(bars.open, dtype=np.float64),
        close=np.ascontiguousarray(bars.close, dtype=np.float64),
        averages=np.ascontiguousarray(sma_table(bars.close, windows).T),
        atr=_atr_for(bars.high, bars.low, bars.close, base.atr_period),
        block_of=cscv_blocks(t, blocks),
        scalars=_scalars(base),
        allow_short=bool(base.allow_short),
        close_fill=base.fill is FillRule.CLOSE,
        blocks=blocks,
    )


ChunkResult = tuple[F64, I64, F64, F64]
ChunkFn = Callable[[SweepInputs, I64, I64], ChunkResult]
# runs ``fn(inputs, fast_cols[k], slow_cols[k])`` for every k and returns the results in order
ChunkMap = Callable[[ChunkFn, SweepInputs, list[I64], list[I64]], list[ChunkResult]]


def sweep_chunk(inputs: SweepInputs, fast_col: I64, slow_col: I64) -> ChunkResult:
    """One chunk of points (columns of ``inputs.averages``): final equity, fills, and the
    per-block sums of the returns and of their squares (``(points, blocks)``). A point's
    numbers do not depend on the chunk it is in (every operation is per point)."""
    equity, fills, bsum, bsq = _sweep(
        inputs.open, inputs.close, inputs.averages, inputs.atr, inputs.block_of,
        jnp.asarray(fast_col), jnp.asarray(slow_col), inputs.scalars,
        jnp.asarray(inputs.allow_short), close_fill=inputs.close_fill, blocks=inputs.blocks,
    )  # fmt: skip
    return (
        np.asarray(equity), np.asarray(fills, dtype=np.int64), np.asarray(bsum).T.copy(),
        np.asarray(bsq).T.copy(),
    )  # fmt: skip


def map_in_process(
    fn: ChunkFn, inputs: SweepInputs, fast_cols: list[I64], slow_cols: list[I64]
) -> list[ChunkResult]:
    """The chunks one after another in this process (``ma_cross_sweep``'s default)."""
    return [fn(inputs, f, s) for f, s in zip(fast_cols, slow_cols, strict=True)]


def ma_cross_sweep(
    bars: BarArrays,
    fast: npt.ArrayLike,
    slow: npt.ArrayLike,
    base: MaCrossParams,
    *,
    blocks: int = 16,
    chunk: int = 4_096,
    map_chunks: ChunkMap = map_in_process,
) -> GridSummary:
    """Every ``(fast[i], slow[i])`` pair with ``base``'s other settings: the points in
    fixed-size padded chunks (one compile), each chunk one ``lax.scan`` over the bars with the
    points as a vector (``_sweep``). ``map_chunks`` runs the chunks: in this process, or on a
    cluster (``engines.backtesting.cluster``); the result is the same bit for bit."""
    f = np.asarray(fast, dtype=np.int64).reshape(-1)
    s = np.asarray(slow, dtype=np.int64).reshape(-1)
    if f.size != s.size or f.size == 0:
        raise ValueError("fast and slow must be equally long and not empty")
    bad = np.flatnonzero((f < 1) | (f >= s))  # vectorized: a 10⁶-point grid checks in ms
    if bad.size:
        _check(int(f[bad[0]]), int(s[bad[0]]))
    if len(bars) < blocks:
        raise ValueError(f"need at least {blocks} bars for {blocks} CSCV blocks")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    windows = np.unique(np.concatenate((f, s)))
    inputs = sweep_inputs(bars, windows, base, blocks=blocks)
    fi = np.searchsorted(windows, f)
    si = np.searchsorted(windows, s)
    # equal chunks, rounded up to a multiple of 256 points (few shapes, so few compiles)
    size = min(chunk, math.ceil(f.size / math.ceil(f.size / chunk) / 256) * 256)
    fast_cols: list[I64] = []
    slow_cols: list[I64] = []
    for start in range(0, f.size, size):
        n = min(size, f.size - start)
        idx_f = np.full(size, fi[0], dtype=np.int64)  # padding: a repeated valid point,
        idx_s = np.full(size, si[0], dtype=np.int64)  # dropped below
        idx_f[:n], idx_s[:n] = fi[start : start + n], si[start : start + n]
        fast_cols.append(idx_f)
        slow_cols.append(idx_s)
    parts = map_chunks(sweep_chunk, inputs, fast_cols, slow_cols)
    final, fills, bsum, bsq = (
        np.concatenate(p)[: f.size] for p in zip(*parts, strict=True)
    )  # fmt: skip
    t = len(bars)
    total = bsum.sum(axis=1)
    mean = total / t
    variance = np.maximum(bsq.sum(axis=1) - total * mean, 0.0) / (t - 1)
    counts = np.bincount(inputs.block_of, minlength=blocks)
    return GridSummary(final, fills, mean, np.sqrt(variance), bsum, bsq, counts)


def _check(fast: int, slow: int) -> None:
    if not 1 <= fast < slow:
        raise ValueError(f"need 1 <= fast < slow, got fast={fast} slow={slow}")


# ── overfitting ──────────────────────────────────────────────────────────────────────────────


class Overfitting(NamedTuple):
    """A grid's selection statistics: the in-sample best point, its per-period Sharpe, the
    Deflated Sharpe ratio of it given all trials, and PBO with its logits."""

    best: int
    sharpe: float
    deflated_sharpe: float
    pbo: float
    logits: F64


def pbo_cscv(block_sum: F64, block_sumsq: F64, block_count: I64) -> tuple[float, F64]:
    """PBO of a grid from its per-block return sums (``(points, S)``), Bailey et al. (2017)
    §2: every split of the ``S`` blocks into halves, Sharpe in and out of sample."""
    points, blocks = block_sum.shape
    if blocks < 2 or blocks % 2:
        raise ValueError(f"CSCV needs an even number of blocks >= 2, got {blocks}")
    if points < 2:
        raise ValueError("PBO needs at least 2 grid points")
    combos = np.array(list(itertools.combinations(range(blocks), blocks // 2)))
    inside = np.zeros((len(combos), blocks))
    inside[np.arange(len(combos))[:, None], combos] = 1.0
    logits = np.empty(len(combos))
    for part in range(0, len(combos), 512):
        rows = inside[part : part + 512]
        sharpe_in = _half_sharpe(rows, block_sum, block_sumsq, block_count)
        sharpe_out = _half_sharpe(1.0 - rows, block_sum, block_sumsq, block_count)
        best = np.argmax(sharpe_in, axis=1)
        chosen = sharpe_out[np.arange(len(rows)), best]
        rank = (sharpe_out < chosen[:, None]).sum(axis=1) + 1  # 1 = worst out of sample
        omega = rank / (points + 1.0)
        logits[part : part + len(rows)] = np.log(omega / (1.0 - omega))
    return float(np.mean(logits <= 0.0)), logits


def _half_sharpe(rows: F64, bsum: F64, bsq: F64, count: I64) -> F64:
    n = rows @ count.astype(np.float64)  # (combos,)
    s = rows @ bsum.T  # (combos, points)
    q = rows @ bsq.T
    mean = s / n[:, None]
    var = (q - n[:, None] * mean**2) / (n[:, None] - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = mean / np.sqrt(np.maximum(var, 0.0))
    return np.where(np.isfinite(sharpe), sharpe, -np.inf)


def overfitting(summary: GridSummary, best_returns: F64) -> Overfitting:
    """Deflated Sharpe (Bailey & López de Prado 2014, via ``engines.analytics.core``) of the
    in-sample best point over the grid's trials, and PBO (CSCV) of the grid."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpes = np.where(summary.std > 0, summary.mean / summary.std, np.nan)
    finite = np.isfinite(sharpes)
    best = int(np.nanargmax(np.where(finite, sharpes, -np.inf)))
    r = np.asarray(best_returns, dtype=np.float64)
    variance = float(np.var(sharpes[finite], ddof=1)) if finite.sum() > 1 else 0.0
    deflated = math.nan
    if finite[best] and r.size > 1:
        deflated = analytics.deflated_sharpe_ratio(
            float(sharpes[best]), int(r.size), int(finite.sum()), variance,
            analytics.skew(r), analytics.kurtosis(r) + 3.0,
        )  # fmt: skip
    pbo, logits = (
        pbo_cscv(summary.block_sum, summary.block_sumsq, summary.block_count)
        if len(sharpes) > 1
        else (math.nan, np.empty(0))
    )
    return Overfitting(best, float(sharpes[best]), deflated, pbo, logits)


class WalkForwardWindow(NamedTuple):
    """One window: bar indices ``[train_from, test_from)`` in sample and ``[test_from,
    test_to)`` out of sample, the chosen grid point and how it did on each side."""

    train_from: int
    test_from: int
    test_to: int
    best: int
    in_sample_sharpe: float
    out_of_sample_sharpe: float
    deflated_sharpe: float
    pbo: float


class WalkForward(NamedTuple):
    """The windows, and the out-of-sample returns of each window's choice, concatenated
    (``bar``: the bar of each return)."""

    windows: list[WalkForwardWindow]
    returns: F64
    bar: I64


def walk_forward(
    bars: BarArrays,
    fast: npt.ArrayLike,
    slow: npt.ArrayLike,
    base: MaCrossParams,
    *,
    train: int,
    test: int,
    step: int | None = None,
    blocks: int = 16,
    map_chunks: ChunkMap = map_in_process,
) -> WalkForward:
    """Rolling walk-forward of the ``(fast[i], slow[i])`` grid (see the module doc)."""
    step = test if step is None else step
    if train < blocks or test < 2 or step < 1:
        raise ValueError(f"need train >= {blocks} (CSCV blocks), test >= 2, step >= 1")
    if train + test > len(bars):
        raise ValueError(f"train + test = {train + test} bars, but only {len(bars)} in the period")
    f = np.asarray(fast, dtype=np.int64).reshape(-1)
    s = np.asarray(slow, dtype=np.int64).reshape(-1)
    windows: list[WalkForwardWindow] = []
    returns: list[F64] = []
    index: list[I64] = []
    for start in range(0, len(bars) - train - test + 1, step):
        span = np.arange(len(bars))
        inside = bars.select((span >= start) & (span < start + train))
        summary = ma_cross_sweep(inside, f, s, base, blocks=blocks, map_chunks=map_chunks)
        with np.errstate(divide="ignore", invalid="ignore"):
            sharpes = np.where(summary.std > 0, summary.mean / summary.std, np.nan)
        best = int(np.nanargmax(np.where(np.isfinite(sharpes), sharpes, -np.inf)))
        chosen = MaCrossParams(**{**_fields(base), "fast": int(f[best]), "slow": int(s[best])})
        both = bars.select((span >= start) & (span < start + train + test))
        equity = ma_cross_path(both, chosen).equity
        r = equity / np.concatenate(([base.cash], equity[:-1])) - 1.0
        of = overfitting(summary, r[:train]) if f.size > 1 else None
        out = r[train:]
        windows.append(
            WalkForwardWindow(
                start, start + train, start + train + test, best, float(sharpes[best]),
                _sharpe(out), of.deflated_sharpe if of else math.nan,
                of.pbo if of else math.nan,
            )
        )  # fmt: skip
        returns.append(out)
        index.append(np.arange(start + train, start + train + test, dtype=np.int64))
    return WalkForward(windows, np.concatenate(returns), np.concatenate(index))


def _sharpe(r: F64) -> float:
    std = float(np.std(r, ddof=1)) if r.size > 1 else 0.0
    return float(np.mean(r)) / std if std > 0 else math.nan


def _fields(p: MaCrossParams) -> dict[str, Any]:
    return {name: getattr(p, name) for name in MaCrossParams.__dataclass_fields__}


def sha256_hex(chunks: list[bytes]) -> str:
    """The hash of a result: its canonical bytes, in order."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(len(chunk).to_bytes(8, "big"))
        digest.update(chunk)
    return digest.hexdigest()

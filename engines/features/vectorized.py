"""Features over many symbols at once: the TA-Lib functions of ``core.CATALOG`` on ``(symbols,
bars)`` blocks, written once for two array backends.

Each function below is written against an :class:`_Ops` (an array module ``xp`` and a ``scan``),
on the last axis, so the same text runs as

* the **numpy path** (``backend="numpy"``): whole-block numpy for the window functions (running
  sums from cumulative sums, rolling extremes and weighted sums from shifted slices — strided
  views of the block), and the recursive filters (EMA, Wilder smoothing, KAMA, T3, SAR, ADX, …)
  as a time loop whose every step updates all symbols at once;
* the **JAX path** (``backend="jax"``, the default): one compiled program per (function,
  parameters, block shape) that maps the function over the symbols (``lax.map``), each symbol's
  row traced as 1-D ``(bars,)`` arrays: the recursions are ``jax.lax.scan`` over scalars, which
  XLA compiles into one native loop each (``xla_cpu_small_call``), and a row's intermediates
  (80 kB at 10,000 bars) stay in the core's cache. float64 (``jax_enable_x64``, set on import).
  Batching symbols inside the scans (``(64, bars)`` groups, a ``(bars, symbols)`` transpose per
  scan) ran each scan step as a loop of kernels and streamed every intermediate through memory:
  3–6× slower per function on one core (measured, ``loadtest/features_bench.py``). Rolling
  extremes are XLA's ``reduce_window``. Chained recursions share one scan where TA-Lib's loop
  does or where the chain allows (T3's six EMAs; DEMA/TEMA/TRIX's EMA chains; RSI/CMO's gains
  and losses; ADX's DM smoothing and DX average; DX's DM smoothing and carry-over).
  :func:`warm_up` compiles a set ahead of use (an engine calls it in ``on_start``, so no request
  pays a compile); :func:`compute_many` pads a block up to the smallest warmed shape that holds
  it (repeating each row's last bar — every function is causal, so the bars that matter are
  untouched) and cuts the result back. Inputs are read in place when 64-byte aligned (else
  copied once); :func:`prepare` checks and aligns a block once for many functions.

Both paths follow the streaming kernels of ``core`` (TA-Lib 0.8 seeding, lookbacks, zero guards);
they are checked against TA-Lib and against each other in ``tests/engines/features``. Where a
kernel keeps a running sum with add/subtract, the window sums here come from a cumulative sum of
values centred on the row's first value (or a direct sum of the window for short ones): equal to
TA-Lib's to rounding (~1e-13 relative), not bit for bit.

Limits: only the TA-Lib functions (``spec.talib``) are vectorized; the microstructure and range
estimators run through ``core.compute`` per symbol. MAMA is not provided (as in ``core``). All
rows of a block share one length (pad or split ragged histories before calling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from engines.features import core

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

__all__ = ["VECTORIZED", "Column", "compute_many", "prepare", "warm_up", "warmed_shapes"]

Array = npt.NDArray[np.float64]
_EPS = 1e-14
_NAN = math.nan


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class _Ops:
    """An array module and a scan over the last axis: ``scan(step, carry, xs) -> ys``, where
    ``step(carry, x_t) -> (carry, y_t)`` and ``xs``/``ys`` are tuples of arrays."""

    xp: Any
    scan: Callable[..., tuple[Any, ...]]
    cumsum: Callable[[Any], Any]
    extreme: Callable[[Any, int, bool], Any]


def _numpy_scan(
    step: Callable[[tuple[Any, ...], tuple[Any, ...]], tuple[tuple[Any, ...], tuple[Any, ...]]],
    carry: tuple[Any, ...],
    xs: tuple[Array, ...],
) -> tuple[Array, ...]:
    """The recursion as a Python loop over time; each step updates every symbol (axis 0)."""
    cols = [np.ascontiguousarray(np.moveaxis(x, -1, 0)) for x in xs]
    length = cols[0].shape[0]
    outs: list[list[Any]] | None = None
    for t in range(length):
        carry, ys = step(carry, tuple(c[t] for c in cols))
        if outs is None:
            outs = [[] for _ in ys]
        for acc, y in zip(outs, ys, strict=True):
            acc.append(y)
    if outs is None:  # empty: probe the step for its output count
        _, ys = step(carry, tuple(np.zeros(c.shape[1:]) for c in cols))
        shape = cols[0].shape[1:]
        return tuple(np.zeros((*shape, 0)) for _ in ys)
    return tuple(np.moveaxis(np.asarray(acc, dtype=np.float64), 0, -1) for acc in outs)


def _jax_scan(
    step: Callable[[tuple[Any, ...], tuple[Any, ...]], tuple[tuple[Any, ...], tuple[Any, ...]]],
    carry: tuple[Any, ...],
    xs: tuple[Any, ...],
) -> tuple[Any, ...]:
    """``lax.scan`` over the bars of a ``(symbols, bars)`` block: the inputs are transposed to
    ``(bars, symbols)`` first, so each step reads and writes one contiguous row of all symbols
    (a scan over the last axis would gather a strided column per step)."""
    _, ys = jax.lax.scan(step, carry, tuple(jnp.moveaxis(x, -1, 0) for x in xs))
    return tuple(jnp.moveaxis(y, 0, -1) for y in ys)


def _jax_cumsum(v: Any) -> Any:
    """Running sum over the last axis as a sequential scan (numpy's ``cumsum`` order). XLA's
    CPU ``cumsum`` is a log-depth associative scan that costs ~20 ns per element."""

    def step(c: Any, x: Any) -> tuple[Any, Any]:
        c = c + x
        return c, c

    _, ys = jax.lax.scan(step, jnp.zeros(v.shape[:-1], v.dtype), jnp.moveaxis(v, -1, 0))
    return jnp.moveaxis(ys, 0, -1)


def _numpy_extreme(v: Array, n: int, maximum: bool) -> Array:
    """Rolling max/min over the last ``n`` values (valid from index ``n − 1``): ``n`` shifted
    slices."""
    f = np.maximum if maximum else np.minimum
    slices = _win_slices(v, n)
    acc: Array = slices[0]
    for sl in slices[1:]:
        acc = f(acc, sl)
    return acc


def _jax_extreme(v: Any, n: int, maximum: bool) -> Any:
    """Rolling max/min as XLA's ``reduce_window`` (one tight loop; the same values as the
    slices, max/min being exact)."""
    init = -jnp.inf if maximum else jnp.inf
    op = jax.lax.max if maximum else jax.lax.min
    dims = (1,) * (v.ndim - 1) + (n,)
    return jax.lax.reduce_window(v, init, op, dims, (1,) * v.ndim, "VALID")


_NP = _Ops(np, _numpy_scan, partial(np.cumsum, axis=-1), _numpy_extreme)
_JAX = _Ops(jnp, _jax_scan, _jax_cumsum, _jax_extreme)


# --------------------------------------------------------------------------- series helpers
# A series is (values, start): ``values[..., i]`` is bar ``start + i``; bars before ``start`` are
# warm-up. Starts are static Python ints, so every shape is known when tracing.

_S = tuple[Any, int]


def _at(o: _Ops, s: _S, start: int) -> Any:
    """The values of ``s`` from bar ``start`` on (``start`` ≥ the series' own start)."""
    v, s0 = s
    return v[..., start - s0 :]


def _cat(o: _Ops, head: Any, tail: Any) -> Any:
    return o.xp.concatenate([head[..., None], tail], axis=-1)


def _seq_sum(o: _Ops, v: Any, n: int) -> Any:
    """``v[..., 0] + v[..., 1] + …`` over the first ``n`` values, in that order (TA-Lib's seed
    loops)."""
    acc = v[..., 0]
    for j in range(1, n):
        acc = acc + v[..., j]
    return acc


def _win_slices(v: Any, n: int) -> list[Any]:
    """The ``n`` aligned slices of a window ending at each bar, oldest first."""
    length = v.shape[-1]
    return [v[..., j : length - n + 1 + j] for j in range(n)]


def _win_sum(o: _Ops, s: _S, n: int, direct: bool = False) -> _S:
    """Sum over the last ``n`` values, valid from ``start + n − 1``. Short windows (``direct``)
    add the slices oldest first; long ones subtract cumulative sums of the values centred on the
    row's first value (exact zero for a flat row)."""
    v, s0 = s
    if n == 1:
        return v, s0
    if direct or n <= 4:
        return _seq_sum_list(_win_slices(v, n)), s0 + n - 1
    xp = o.xp
    base = v[..., :1]
    c = o.cumsum(v - base)
    zero = xp.zeros_like(c[..., :1])
    c = xp.concatenate([zero, c], axis=-1)
    return (c[..., n:] - c[..., :-n]) + n * base, s0 + n - 1


def _win_extreme(o: _Ops, s: _S, n: int, maximum: bool) -> _S:
    v, s0 = s
    if n == 1:
        return v, s0
    return o.extreme(v, n, maximum), s0 + n - 1


def _lag(o: _Ops, s: _S, n: int) -> tuple[Any, Any, int]:
    """(current, value ``n`` bars ago, start) for bars from ``start + n``."""
    v, s0 = s
    return v[..., n:], v[..., : v.shape[-1] - n], s0 + n


def _zero(o: _Ops, x: Any) -> Any:
    """TA-Lib ``TA_IS_ZERO``."""
    return (x > -_EPS) & (x < _EPS)


# --------------------------------------------------------------------------- moving averages


def _ema(o: _Ops, s: _S, n: int, k: float | None = None, t3: bool = False) -> _S:
    """``TA_INT_EMA``: seeded with the mean of the first ``n`` values, then ``(x − e)·k + e``
    (T3's stages: ``k·x + (1 − k)·e``)."""
    v, s0 = s
    k = 2.0 / (n + 1) if k is None else k
    omk = 1.0 - k
    seed = _seq_sum(o, v, n) / n

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        e = (k * x[0]) + (omk * c[0]) if t3 else ((x[0] - c[0]) * k) + c[0]
        return (e,), (e,)

    (rest,) = o.scan(step, (seed,), (v[..., n:],))
    return _cat(o, seed, rest), s0 + n - 1


def _sma(o: _Ops, s: _S, n: int) -> _S:
    """Window mean; the long-window form adds the row's first value back after dividing, so a
    flat row gives that value exactly (as TA-Lib's running sum does)."""
    v, s0 = s
    if n == 1:
        return s
    if n <= 4:
        w, st = _win_sum(o, s, n)
        return w / n, st
    xp = o.xp
    base = v[..., :1]
    c = o.cumsum(v - base)
    c = xp.concatenate([xp.zeros_like(c[..., :1]), c], axis=-1)
    return (c[..., n:] - c[..., :-n]) / n + base, s0 + n - 1


def _wma(o: _Ops, s: _S, n: int) -> _S:
    v, s0 = s
    weighted = [sl * w for w, sl in enumerate(_win_slices(v, n), start=1)]
    return _seq_sum_list(weighted) / (n * (n + 1) / 2.0), s0 + n - 1


def _ema_chain(o: _Ops, s: _S, n: int, depth: int) -> tuple[list[Any], int]:
    """``depth`` chained EMAs (each the EMA of the one before, TA-Lib's DEMA/TEMA/TRIX), all
    from the bar where the last is seeded: the stages are seeded one after another over the
    first ``depth·(n − 1) + 1`` bars (short scans on that prefix), then one scan steps them all
    together — one pass over the bars instead of ``depth``."""
    v, s0 = s
    k = 2.0 / (n + 1)
    st = s0 + depth * (n - 1)
    stages = [(v[..., : st - s0 + 1], s0)]
    for _ in range(depth):
        stages.append(_ema(o, stages[-1], n))
    first = [stages[j][0][..., -1] for j in range(1, depth + 1)]

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        out = []
        e = x[0]
        for prev in c:
            e = ((e - prev) * k) + prev
            out.append(e)
        return tuple(out), tuple(out)

    rest = o.scan(step, tuple(first), (v[..., st - s0 + 1 :],))
    return [_cat(o, a, r) for a, r in zip(first, rest, strict=True)], st


def _dema(o: _Ops, s: _S, n: int) -> _S:
    (e1, e2), st = _ema_chain(o, s, n, 2)
    return 2.0 * e1 - e2, st


def _tema(o: _Ops, s: _S, n: int) -> _S:
    (e1, e2, e3), st = _ema_chain(o, s, n, 3)
    return e3 + ((3.0 * e1) - (3.0 * e2)), st


def _trima(o: _Ops, s: _S, n: int) -> _S:
    if n % 2:
        half = (n + 1) // 2
        return _sma(o, _sma(o, s, half), half)
    return _sma(o, _sma(o, s, n // 2), n // 2 + 1)


def _kama(o: _Ops, s: _S, n: int) -> _S:
    """``TA_KAMA`` as ``core._KAMA``: ER over ``n`` moves (flat window: ER 1), smoothing
    ``(ER·(2/3 − 2/31) + 2/31)²``, seeded with the bar before the first output."""
    xp = o.xp
    v, s0 = s
    moves = xp.abs(v[..., 1:] - v[..., :-1])
    total, _ = _win_sum(o, (moves, s0 + 1), n, direct=True)
    cur, old, st = _lag(o, s, n)
    roc = cur - old
    er = xp.where(
        (total <= roc) | (total <= 0.0),
        1.0,
        xp.minimum(xp.abs(roc / xp.where(total > 0, total, 1.0)), 1.0),
    )
    sc = (er * core._KAMA._DIFF) + core._KAMA._MAX
    sc = sc * sc

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        p = ((x[0] - c[0]) * x[1]) + c[0]
        return (p,), (p,)

    (out,) = o.scan(step, (v[..., n - 1],), (cur, sc))
    return out, st


def _t3(o: _Ops, s: _S, n: int, vfactor: float) -> _S:
    """``TA_T3`` as ``core._T3``: the six stages are seeded one after another over the first
    ``6·(n − 1) + 1`` bars (short scans on that prefix), then one scan carries all six EMAs
    together — one pass over the bars instead of six."""
    k = 2.0 / (n + 1.0)
    omk = 1.0 - k
    v, s0 = s
    st = s0 + 6 * (n - 1)
    head = (v[..., : st - s0 + 1], s0)
    stages = [head]
    for _ in range(6):
        stages.append(_ema(o, stages[-1], n, k, t3=True))
    v2 = vfactor * vfactor
    c1 = -(v2 * vfactor)
    c2 = 3.0 * (v2 - c1)
    c3 = -6.0 * v2 - 3.0 * (vfactor - c1)
    c4 = 1.0 + 3.0 * vfactor - c1 + 3.0 * v2
    e = [stages[j][0][..., -1] for j in range(1, 7)]
    first = c1 * e[5] + c2 * e[4] + c3 * e[3] + c4 * e[2]

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        e1 = (k * x[0]) + (omk * c[0])
        e2 = (k * e1) + (omk * c[1])
        e3 = (k * e2) + (omk * c[2])
        e4 = (k * e3) + (omk * c[3])
        e5 = (k * e4) + (omk * c[4])
        e6 = (k * e5) + (omk * c[5])
        return (e1, e2, e3, e4, e5, e6), (c1 * e6 + c2 * e5 + c3 * e4 + c4 * e3,)

    (rest,) = o.scan(step, tuple(e), (v[..., st - s0 + 1 :],))
    return _cat(o, first, rest), st


def _ma(o: _Ops, s: _S, matype: int, n: int) -> _S:
    """``TA_MA``."""
    if n == 1:
        return s
    if matype == 0:
        return _sma(o, s, n)
    if matype == 1:
        return _ema(o, s, n)
    if matype == 2:
        return _wma(o, s, n)
    if matype == 3:
        return _dema(o, s, n)
    if matype == 4:
        return _tema(o, s, n)
    if matype == 5:
        return _trima(o, s, n)
    if matype == 6:
        return _kama(o, s, n)
    if matype == 8:
        return _t3(o, s, n, 0.7)
    raise core.FeatureInputError("matype", f"moving-average type {matype} is not supported")


# --------------------------------------------------------------------------- statistics


def _var(o: _Ops, s: _S, n: int) -> _S:
    """Population variance over ``n`` values, two-pass over the window (TA-Lib 0.8 re-anchors
    its shifted sums to the same two-pass whenever they lose precision)."""
    v, s0 = s
    if n == 1:
        return o.xp.zeros_like(v), s0
    sl = _win_slices(v, n)
    mean = _seq_sum_list(sl) / n
    acc = _seq_sum_list([(x - mean) * (x - mean) for x in sl])
    return o.xp.maximum(acc / n, 0.0), s0 + n - 1


def _seq_sum_list(items: Sequence[Any]) -> Any:
    acc = items[0]
    for x in items[1:]:
        acc = acc + x
    return acc


def _linreg(o: _Ops, s: _S, n: int, slope: bool) -> _S:
    v, s0 = s
    sl = _win_slices(v, n)
    sy = _seq_sum_list(sl)
    sxy = _seq_sum_list([x * float(n - 1 - j) for j, x in enumerate(sl)])
    sum_x = n * (n - 1) * 0.5
    div = sum_x * sum_x - n * (n * (n - 1) * (2 * n - 1) / 6)
    m = (n * sxy - sum_x * sy) / div
    if slope:
        return m, s0 + n - 1
    b = (sy - m * sum_x) / n
    return b + m * (n - 1), s0 + n - 1


def _returns(o: _Ops, v: Any) -> Any:
    prev = v[..., :-1]
    safe = o.xp.where(_zero(o, prev), 1.0, prev)
    return o.xp.where(_zero(o, prev), 0.0, (v[..., 1:] - prev) / safe)


def _beta(o: _Ops, a: Any, b: Any, n: int) -> _S:
    """``TA_BETA``: OLS slope of real1's returns on real0's over ``n`` returns, from window sums
    of deviations from the window means; 0 when the denominator is ≤ 1e-14·n·Sxx."""
    xp = o.xp
    rx = _win_slices(_returns(o, a), n)
    ry = _win_slices(_returns(o, b), n)
    mx = _seq_sum_list(rx) / n
    my = _seq_sum_list(ry) / n
    dx = [x - mx for x in rx]
    dy = [y - my for y in ry]
    sx = _seq_sum_list(dx)
    sy = _seq_sum_list(dy)
    sxx = _seq_sum_list([x * x for x in dx])
    sxy = _seq_sum_list([x * y for x, y in zip(dx, dy, strict=True)])
    scale = n * sxx
    den = xp.maximum(scale - sx * sx, 0.0)
    ok = den > 1e-14 * scale
    out = xp.where(ok, ((n * sxy) - (sx * sy)) / xp.where(ok, den, 1.0), 0.0)
    return out, n


def _correl(o: _Ops, a: Any, b: Any, n: int) -> _S:
    xp = o.xp
    ax = _win_slices(a, n)
    by = _win_slices(b, n)
    mx = _seq_sum_list(ax) / n
    my = _seq_sum_list(by) / n
    dx = [x - mx for x in ax]
    dy = [y - my for y in by]
    sx = _seq_sum_list(dx)
    sy = _seq_sum_list(dy)
    sx2 = _seq_sum_list([x * x for x in dx])
    sy2 = _seq_sum_list([y * y for y in dy])
    sxy = _seq_sum_list([x * y for x, y in zip(dx, dy, strict=True)])
    ss_x = xp.maximum(sx2 - sx * sx / n, 0.0)
    ss_y = xp.maximum(sy2 - sy * sy / n, 0.0)
    sp = sxy - sx * sy / n
    ok = (ss_x > 1e-14 * sx2) & (ss_y > 1e-14 * sy2)
    out = xp.where(ok, sp / xp.sqrt(xp.where(ok, ss_x * ss_y, 1.0)), 0.0)
    return xp.clip(out, -1.0, 1.0), n - 1


# --------------------------------------------------------------------------- momentum


def _true_range(o: _Ops, h: Any, lo: Any, c: Any) -> Any:
    """``TRUE_RANGE`` from bar 1: max(h − l, |h − c₋₁|, |l − c₋₁|)."""
    xp = o.xp
    hh = h[..., 1:]
    ll = lo[..., 1:]
    yc = c[..., :-1]
    return xp.maximum(xp.maximum(hh - ll, xp.abs(hh - yc)), xp.abs(ll - yc))


def _wilder_mean(o: _Ops, terms: Any, s0: int, n: int) -> _S:
    """Seeded with the mean of the first ``n`` terms, then ``(m·(n−1) + x)/n`` (RSI, ATR)."""
    seed = _seq_sum(o, terms, n) / n

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        m = ((c[0] * (n - 1)) + x[0]) / n
        return (m,), (m,)

    (rest,) = o.scan(step, (seed,), (terms[..., n:],))
    return _cat(o, seed, rest), s0 + n - 1


def _rsi(o: _Ops, s: _S, n: int, cmo: bool = False) -> _S:
    xp = o.xp
    v, s0 = s
    d = v[..., 1:] - v[..., :-1]
    gains = xp.where(d < 0, 0.0, d)
    losses = xp.where(d < 0, -d, 0.0)
    (g, lo), st = _wilder_means(o, (gains, losses), s0 + 1, n)
    tot = g + lo
    z = _zero(o, tot)
    safe = xp.where(z, 1.0, tot)
    out = 100.0 * ((g - lo) / safe) if cmo else 100.0 * (g / safe)
    return xp.where(z, 0.0, out), st


def _wilder_means(o: _Ops, terms: tuple[Any, ...], s0: int, n: int) -> tuple[tuple[Any, ...], int]:
    """``_wilder_mean`` of several term series in one scan (RSI's gains and losses: the kernel
    multiplies, adds, then divides, ``(m·(n−1) + x)/n``)."""
    seeds = tuple(_seq_sum(o, t, n) / n for t in terms)

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        m = tuple(((a * (n - 1)) + v) / n for a, v in zip(c, x, strict=True))
        return m, m

    rest = o.scan(step, seeds, tuple(t[..., n:] for t in terms))
    return tuple(_cat(o, a, r) for a, r in zip(seeds, rest, strict=True)), s0 + n - 1


def _dm_terms(o: _Ops, h: Any, lo: Any, c: Any, n: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """+DM, −DM and TR from bar 1, and their seeds: the sums over the first ``n − 1`` moves."""
    xp = o.xp
    diff_p = h[..., 1:] - h[..., :-1]
    diff_m = lo[..., :-1] - lo[..., 1:]
    mdm = xp.where((diff_m > 0) & (diff_p < diff_m), diff_m, 0.0)
    pdm = xp.where(
        (diff_p > 0) & (diff_p > diff_m) & ~((diff_m > 0) & (diff_p < diff_m)), diff_p, 0.0
    )
    tr = _true_range(o, h, lo, c)
    if n > 1:
        seeds = (_seq_sum(o, pdm, n - 1), _seq_sum(o, mdm, n - 1), _seq_sum(o, tr, n - 1))
    else:
        zero = xp.zeros_like(tr[..., 0])
        seeds = (zero, zero, zero)
    return (pdm, mdm, tr), seeds


def _dm_step(cr: tuple[Any, ...], x: tuple[Any, ...], n: int) -> tuple[Any, Any, Any]:
    """One Wilder step of +DM, −DM and TR (``s − s/n + v``)."""
    p = cr[0] - cr[0] / n + x[0]
    m = cr[1] - cr[1] / n + x[1]
    t = cr[2] - (cr[2] / n) + x[2]
    return p, m, t


def _dm(o: _Ops, h: Any, lo: Any, c: Any, n: int) -> tuple[Any, Any, Any, int]:
    """Wilder-smoothed +DM, −DM and TR (``s − s/n + v``), seeded with their sums over the first
    ``n − 1`` moves; values from bar ``n``."""
    terms, seeds = _dm_terms(o, h, lo, c, n)

    def step(cr: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        pmt = _dm_step(cr, x, n)
        return pmt, pmt

    sl = slice(n - 1, None)
    p, m, t = o.scan(step, seeds, tuple(x[..., sl] for x in terms))
    return p, m, t, n


def _di(o: _Ops, dm: Any, tr: Any) -> Any:
    z = _zero(o, tr)
    return o.xp.where(z, 0.0, 100.0 * (dm / o.xp.where(z, 1.0, tr)))


def _dx_raw(o: _Ops, p: Any, m: Any, t: Any) -> tuple[Any, Any]:
    """DX and whether it is defined (TR and DI sum not zero)."""
    xp = o.xp
    zt = _zero(o, t)
    safe_t = xp.where(zt, 1.0, t)
    minus_di = 100.0 * (m / safe_t)
    plus_di = 100.0 * (p / safe_t)
    tot = minus_di + plus_di
    zs = _zero(o, tot)
    ok = ~zt & ~zs
    dx = 100.0 * (xp.abs(minus_di - plus_di) / xp.where(ok, tot, 1.0))
    return dx, ok


def _dx(o: _Ops, h: Any, lo: Any, c: Any, n: int) -> _S:
    """DX, the last defined value carried over an undefined bar: one scan with the DM
    smoothing."""
    xp = o.xp
    terms, seeds = _dm_terms(o, h, lo, c, n)

    def step(cr: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        p, m, t = _dm_step(cr, x, n)
        dx, ok = _dx_raw(o, p, m, t)
        d = xp.where(ok, dx, cr[3])
        return (p, m, t, d), (d,)

    sl = slice(n - 1, None)
    carry = (*seeds, xp.zeros_like(seeds[0]))
    (out,) = o.scan(step, carry, tuple(x[..., sl] for x in terms))
    return out, n


def _adx(o: _Ops, h: Any, lo: Any, c: Any, n: int) -> _S:
    """ADX: the DM smoothing over its first ``n`` outputs (the ADX seed: their mean DX), then
    one scan that carries the DM sums and the Wilder-averaged DX together."""
    xp = o.xp
    terms, seeds = _dm_terms(o, h, lo, c, n)
    head = tuple(x[..., n - 1 : 2 * n - 1] for x in terms)

    def dm_step(cr: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        pmt = _dm_step(cr, x, n)
        return pmt, pmt

    p, m, t = o.scan(dm_step, seeds, head)
    dx, ok = _dx_raw(o, p, m, t)
    seed = _seq_sum(o, xp.where(ok, dx, 0.0), n) / n

    def step(cr: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        p, m, t = _dm_step(cr, x, n)
        d, okay = _dx_raw(o, p, m, t)
        a = xp.where(okay, ((cr[3] * (n - 1)) + d) / n, cr[3])
        return (p, m, t, a), (a,)

    carry = (p[..., -1], m[..., -1], t[..., -1], seed)
    (rest,) = o.scan(step, carry, tuple(x[..., 2 * n - 1 :] for x in terms))
    return _cat(o, seed, rest), 2 * n - 1


def _stochf_k(o: _Ops, h: Any, lo: Any, c: Any, k: int) -> _S:
    xp = o.xp
    hh, st = _win_extreme(o, (h, 0), k, True)
    ll, _ = _win_extreme(o, (lo, 0), k, False)
    rng = hh - ll
    flat = xp.abs(rng) <= _EPS * (xp.abs(hh) + xp.abs(ll))
    out = (c[..., st:] - ll) / xp.where(flat, 1.0, rng) * 100.0
    return xp.where(flat, 0.0, out), st


def _aroon_age(o: _Ops, v: Any, n: int, maximum: bool) -> Any:
    """Bars since the window's extreme over ``n`` values (ties to the latest bar), for the bars
    from ``n − 1`` on, as a sparse table: a window of ``w + s`` values (``s ≤ w``) is the window
    of ``w`` ending ``s`` bars earlier joined with the one of ``w`` ending now, the later one
    winning ties (where they overlap both name the same latest bar). ⌈log₂ n⌉ joins instead of
    ``n − 1`` slices (with the warm-up joined outside the row map, AROON 0.49 → 0.14 s and
    AROONOSC 0.53 → 0.12 s CPU on the benchmark block); max/min are exact, so the values are
    those of the slice-by-slice scan, bit for bit."""
    xp = o.xp
    val = v
    age = xp.zeros_like(v)
    width = 1
    while width < n:
        s = min(width, n - width)
        older, newer = val[..., :-s], val[..., s:]
        later = newer >= older if maximum else newer <= older
        val = xp.where(later, newer, older)
        age = xp.where(later, age[..., s:], age[..., :-s] + float(s))
        width += s
    return age


# --------------------------------------------------------------------------- the functions


def _one(s: _S) -> tuple[tuple[Any, int], ...]:
    return (s,)


def f_sma(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_sma(o, (real, 0), timeperiod))


def f_ema(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_ema(o, (real, 0), timeperiod))


def f_wma(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_wma(o, (real, 0), timeperiod))


def f_dema(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_dema(o, (real, 0), timeperiod))


def f_tema(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_tema(o, (real, 0), timeperiod))


def f_trima(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_trima(o, (real, 0), timeperiod))


def f_kama(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_kama(o, (real, 0), timeperiod))


def f_t3(o: _Ops, real: Any, timeperiod: int, vfactor: float) -> Any:
    return _one(_t3(o, (real, 0), timeperiod, vfactor))


def f_midpoint(o: _Ops, real: Any, timeperiod: int) -> Any:
    hi, st = _win_extreme(o, (real, 0), timeperiod, True)
    lo, _ = _win_extreme(o, (real, 0), timeperiod, False)
    return (((hi + lo) / 2.0, st),)


def f_midprice(o: _Ops, high: Any, low: Any, timeperiod: int) -> Any:
    hi, st = _win_extreme(o, (high, 0), timeperiod, True)
    lo, _ = _win_extreme(o, (low, 0), timeperiod, False)
    return (((hi + lo) / 2.0, st),)


def f_bbands(
    o: _Ops, real: Any, timeperiod: int, nbdevup: float, nbdevdn: float, matype: int
) -> Any:
    mid = _ma(o, (real, 0), matype, timeperiod)
    var = _var(o, (real, 0), timeperiod)
    st = max(mid[1], var[1])
    m = _at(o, mid, st)
    sd = o.xp.sqrt(_at(o, var, st))
    if nbdevup == nbdevdn:
        t = sd * nbdevup
        return (m + t, st), (m, st), (m - t, st)
    return (m + (sd * nbdevup), st), (m, st), (m - (sd * nbdevdn), st)


def f_sar(o: _Ops, high: Any, low: Any, acceleration: float, maximum: float) -> Any:
    """``TA_SAR`` as ``core._SAR``: one scan over bars 1…, state (prev high/low, long, AF, EP,
    SAR)."""
    xp = o.xp
    acc = min(acceleration, maximum)
    mx = maximum
    h1 = high[..., 1]
    l1 = low[..., 1]
    diff_p = h1 - high[..., 0]
    diff_m = low[..., 0] - l1
    long0 = ~((diff_m > 0) & (diff_p < diff_m))
    ep0 = xp.where(long0, h1, l1)
    sar0 = xp.where(long0, low[..., 0], high[..., 0])
    init = (h1, l1, long0.astype(h1.dtype), xp.full_like(h1, acc), ep0, sar0)

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        ph, pl, lg, af, ep, sar = c
        h, lo = x
        is_long = lg > 0
        # long, reversed to short
        s1 = xp.maximum(xp.maximum(ep, ph), h)
        n1 = xp.maximum(xp.maximum(s1 + acc * (lo - s1), ph), h)
        # long, continuing
        up = h > ep
        ep2 = xp.where(up, h, ep)
        af2 = xp.where(up, xp.minimum(af + acc, mx), af)
        n2 = xp.minimum(xp.minimum(sar + af2 * (ep2 - sar), pl), lo)
        # short, reversed to long
        s3 = xp.minimum(xp.minimum(ep, pl), lo)
        n3 = xp.minimum(xp.minimum(s3 + acc * (h - s3), pl), lo)
        # short, continuing
        dn = lo < ep
        ep4 = xp.where(dn, lo, ep)
        af4 = xp.where(dn, xp.minimum(af + acc, mx), af)
        n4 = xp.maximum(xp.maximum(sar + af4 * (ep4 - sar), ph), h)
        rev_l = is_long & (lo <= sar)
        rev_s = ~is_long & (h >= sar)
        out = xp.where(rev_l, s1, xp.where(rev_s, s3, sar))
        new_sar = xp.where(is_long, xp.where(rev_l, n1, n2), xp.where(rev_s, n3, n4))
        new_ep = xp.where(is_long, xp.where(rev_l, lo, ep2), xp.where(rev_s, h, ep4))
        new_af = xp.where(rev_l | rev_s, acc, xp.where(is_long, af2, af4))
        new_long = xp.where(is_long, ~rev_l, rev_s).astype(h.dtype)
        return (h, lo, new_long, new_af, new_ep, new_sar), (out,)

    (out,) = o.scan(step, init, (high[..., 1:], low[..., 1:]))
    return ((out, 1),)


def f_rsi(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_rsi(o, (real, 0), timeperiod))


def f_cmo(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_rsi(o, (real, 0), timeperiod, cmo=True))


def _macd_core(
    o: _Ops, real: Any, fast: int, fast_t: int, slow: int, slow_t: int, sig: int, sig_t: int
) -> Any:
    if slow < fast:
        fast, slow, fast_t, slow_t = slow, fast, slow_t, fast_t
    lb_f = core._ma_lookback(fast_t, fast)
    lb_s = core._ma_lookback(slow_t, slow)
    largest = max(lb_f, lb_s)
    d_f = largest - lb_f
    d_s = largest - lb_s
    f = _ma(o, (real[..., d_f:], d_f), fast_t, fast)
    s = _ma(o, (real[..., d_s:], d_s), slow_t, slow)
    st = max(f[1], s[1])
    m = (_at(o, f, st) - _at(o, s, st), st)
    sg = _ma(o, m, sig_t, sig)
    end = sg[1]
    mm = _at(o, m, end)
    return (mm, end), sg, (mm - sg[0], end)


def f_macd(o: _Ops, real: Any, fastperiod: int, slowperiod: int, signalperiod: int) -> Any:
    return _macd_core(o, real, fastperiod, 1, slowperiod, 1, signalperiod, 1)


def f_macdext(
    o: _Ops,
    real: Any,
    fastperiod: int,
    fastmatype: int,
    slowperiod: int,
    slowmatype: int,
    signalperiod: int,
    signalmatype: int,
) -> Any:
    return _macd_core(
        o, real, fastperiod, fastmatype, slowperiod, slowmatype, signalperiod, signalmatype
    )


def f_stoch(
    o: _Ops,
    high: Any,
    low: Any,
    close: Any,
    fastk_period: int,
    slowk_period: int,
    slowk_matype: int,
    slowd_period: int,
    slowd_matype: int,
) -> Any:
    fk = _stochf_k(o, high, low, close, fastk_period)
    k = _ma(o, fk, slowk_matype, slowk_period)
    d = _ma(o, k, slowd_matype, slowd_period)
    return (_at(o, k, d[1]), d[1]), d


def f_stochf(
    o: _Ops,
    high: Any,
    low: Any,
    close: Any,
    fastk_period: int,
    fastd_period: int,
    fastd_matype: int,
) -> Any:
    fk = _stochf_k(o, high, low, close, fastk_period)
    d = _ma(o, fk, fastd_matype, fastd_period)
    return (_at(o, fk, d[1]), d[1]), d


def f_stochrsi(
    o: _Ops, real: Any, timeperiod: int, fastk_period: int, fastd_period: int, fastd_matype: int
) -> Any:
    r, s0 = _rsi(o, (real, 0), timeperiod)
    (k, ks), (d, ds) = f_stochf(o, r, r, r, fastk_period, fastd_period, fastd_matype)
    return (k, ks + s0), (d, ds + s0)


def f_adx(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    return _one(_adx(o, high, low, close, timeperiod))


def f_adxr(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    a = _adx(o, high, low, close, timeperiod)
    cur, old, st = _lag(o, a, timeperiod - 1)
    return (((cur + old) / 2.0, st),)


def f_dx(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    return _one(_dx(o, high, low, close, timeperiod))


def f_plus_di(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    p, _, t, st = _dm(o, high, low, close, timeperiod)
    return ((_di(o, p, t), st),)


def f_minus_di(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    _, m, t, st = _dm(o, high, low, close, timeperiod)
    return ((_di(o, m, t), st),)


def f_cci(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    xp = o.xp
    n = timeperiod
    tp = (high + low + close) / 3.0
    sl = _win_slices(tp, n)
    avg = _seq_sum_list(sl) * (1.0 / n)  # a product: XLA and numpy round it alike
    dev = _seq_sum_list([xp.abs(x - avg) for x in sl])
    num = sl[-1] - avg
    ok = (num != 0.0) & (dev != 0.0)
    out = xp.where(ok, num / (0.015 * (xp.where(ok, dev, 1.0) / n)), 0.0)
    return ((out, n - 1),)


def f_mfi(o: _Ops, high: Any, low: Any, close: Any, volume: Any, timeperiod: int) -> Any:
    xp = o.xp
    n = timeperiod
    tp = (high + low + close) / 3.0
    cur = tp[..., 1:]
    prev = tp[..., :-1]
    d = cur - prev
    mf = xp.where(xp.abs(d) <= _EPS * (xp.abs(cur) + xp.abs(prev)), 0.0, cur * volume[..., 1:])
    pos, st = _win_sum(o, (xp.where(d < 0.0, 0.0, mf), 1), n, direct=True)
    neg, _ = _win_sum(o, (xp.where(d < 0.0, mf, 0.0), 1), n, direct=True)
    total = pos + neg
    p = xp.clip(pos, 0.0, xp.maximum(total, 0.0))
    out = xp.where(total <= 0.0, 0.0, 100.0 * (p / xp.where(total <= 0.0, 1.0, total)))
    return ((out, st),)


def f_willr(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    xp = o.xp
    hh, st = _win_extreme(o, (high, 0), timeperiod, True)
    ll, _ = _win_extreme(o, (low, 0), timeperiod, False)
    diff = (hh - ll) / (-100.0)
    ok = diff != 0.0
    return ((xp.where(ok, (hh - close[..., st:]) / xp.where(ok, diff, 1.0), 0.0), st),)


def f_aroon(o: _Ops, high: Any, low: Any, timeperiod: int) -> Any:
    n = timeperiod
    f = 100.0 / n
    up = f * (n - _aroon_age(o, high, n + 1, True))
    down = f * (n - _aroon_age(o, low, n + 1, False))
    return (down, n), (up, n)


def f_aroonosc(o: _Ops, high: Any, low: Any, timeperiod: int) -> Any:
    n = timeperiod
    age_hi = _aroon_age(o, high, n + 1, True)
    age_lo = _aroon_age(o, low, n + 1, False)
    return (((100.0 / n) * (age_lo - age_hi), n),)


def f_mom(o: _Ops, real: Any, timeperiod: int) -> Any:
    cur, old, st = _lag(o, (real, 0), timeperiod)
    return ((cur - old, st),)


def _roc_like(o: _Ops, cur: Any, old: Any, pct: bool) -> Any:
    xp = o.xp
    z = old == 0.0
    safe = xp.where(z, 1.0, old)
    out = ((cur / safe) - 1.0) * 100.0 if pct else (cur - old) / safe
    return xp.where(z, 0.0, out)


def f_roc(o: _Ops, real: Any, timeperiod: int) -> Any:
    cur, old, st = _lag(o, (real, 0), timeperiod)
    return ((_roc_like(o, cur, old, True), st),)


def f_rocp(o: _Ops, real: Any, timeperiod: int) -> Any:
    cur, old, st = _lag(o, (real, 0), timeperiod)
    return ((_roc_like(o, cur, old, False), st),)


def f_trix(o: _Ops, real: Any, timeperiod: int) -> Any:
    n = timeperiod
    if n == 1:
        e: _S = (real, 0)
        for _ in range(3):
            e = _ema(o, e, n)
    else:
        (_, _, e3), st3 = _ema_chain(o, (real, 0), n, 3)
        e = (e3, st3)
    cur, old, st = _lag(o, e, 1)
    return ((_roc_like(o, cur, old, True), st),)


def f_ultosc(
    o: _Ops, high: Any, low: Any, close: Any, timeperiod1: int, timeperiod2: int, timeperiod3: int
) -> Any:
    xp = o.xp
    p = sorted((timeperiod1, timeperiod2, timeperiod3))
    pc = close[..., :-1]
    lo = low[..., 1:]
    a_term = close[..., 1:] - xp.where(lo < pc, lo, pc)
    b_term = _true_range(o, high, low, close)
    st = p[2]
    out: Any = None
    for w, n in zip((4.0, 2.0, 1.0), p, strict=True):
        a = _at(o, _win_sum(o, (a_term, 1), n, direct=True), st)
        b = _at(o, _win_sum(o, (b_term, 1), n, direct=True), st)
        z = _zero(o, b)
        term = xp.where(
            z, 0.0, (w * (a / xp.where(z, 1.0, b))) if w != 1.0 else a / xp.where(z, 1.0, b)
        )
        out = term if out is None else out + term
    return ((100.0 * (out / 7.0), st),)


def f_apo(o: _Ops, real: Any, fastperiod: int, slowperiod: int, matype: int) -> Any:
    return ((_po(o, real, fastperiod, slowperiod, matype, False)),)


def f_ppo(o: _Ops, real: Any, fastperiod: int, slowperiod: int, matype: int) -> Any:
    return ((_po(o, real, fastperiod, slowperiod, matype, True)),)


def _po(o: _Ops, real: Any, fast: int, slow: int, matype: int, pct: bool) -> _S:
    xp = o.xp
    if slow < fast:
        fast, slow = slow, fast
    f = _ma(o, (real, 0), matype, fast)
    s = _ma(o, (real, 0), matype, slow)
    st = max(f[1], s[1])
    fv = _at(o, f, st)
    sv = _at(o, s, st)
    if not pct:
        return fv - sv, st
    z = _zero(o, sv)
    return xp.where(z, 0.0, ((fv - sv) / xp.where(z, 1.0, sv)) * 100.0), st


def f_bop(o: _Ops, open_: Any, high: Any, low: Any, close: Any) -> Any:
    xp = o.xp
    r = high - low
    flat = r < _EPS
    return ((xp.where(flat, 0.0, (close - open_) / xp.where(flat, 1.0, r)), 0),)


def _atr(o: _Ops, high: Any, low: Any, close: Any, n: int) -> _S:
    tr = _true_range(o, high, low, close)
    if n == 1:
        return tr, 1
    return _wilder_mean(o, tr, 1, n)


def f_atr(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    return _one(_atr(o, high, low, close, timeperiod))


def f_natr(o: _Ops, high: Any, low: Any, close: Any, timeperiod: int) -> Any:
    xp = o.xp
    a, st = _atr(o, high, low, close, timeperiod)
    c = close[..., st:]
    z = _zero(o, c)
    return ((xp.where(z, 0.0, (a / xp.where(z, 1.0, c)) * 100.0), st),)


def f_trange(o: _Ops, high: Any, low: Any, close: Any) -> Any:
    return ((_true_range(o, high, low, close), 1),)


def f_obv(o: _Ops, real: Any, volume: Any) -> Any:
    xp = o.xp
    d = real[..., 1:] - real[..., :-1]
    signed = xp.where(d > 0, volume[..., 1:], xp.where(d < 0, -volume[..., 1:], 0.0))
    return ((o.cumsum(xp.concatenate([volume[..., :1], signed], axis=-1)), 0),)


def _ad(o: _Ops, high: Any, low: Any, close: Any, volume: Any) -> Any:
    xp = o.xp
    r = high - low
    pos = r > 0.0
    term = xp.where(pos, (((close - low) - (high - close)) / xp.where(pos, r, 1.0)) * volume, 0.0)
    return o.cumsum(term)


def f_ad(o: _Ops, high: Any, low: Any, close: Any, volume: Any) -> Any:
    return ((_ad(o, high, low, close, volume), 0),)


def f_adosc(
    o: _Ops, high: Any, low: Any, close: Any, volume: Any, fastperiod: int, slowperiod: int
) -> Any:
    ad = _ad(o, high, low, close, volume)
    fk = 2.0 / (fastperiod + 1)
    sk = 2.0 / (slowperiod + 1)

    def step(c: tuple[Any, ...], x: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        f = (fk * x[0]) + ((1.0 - fk) * c[0])
        s = (sk * x[0]) + ((1.0 - sk) * c[1])
        return (f, s), (f - s,)

    first = ad[..., 0]
    (rest,) = o.scan(step, (first, first), (ad[..., 1:],))
    out = _cat(o, first - first, rest)
    st = max(fastperiod, slowperiod) - 1
    return ((out[..., st:], st),)


def f_stddev(o: _Ops, real: Any, timeperiod: int, nbdev: float) -> Any:
    v, st = _var(o, (real, 0), timeperiod)
    sd = o.xp.sqrt(v)
    return ((sd if nbdev == 1.0 else sd * nbdev, st),)


def f_var(o: _Ops, real: Any, timeperiod: int, nbdev: float) -> Any:
    return _one(_var(o, (real, 0), timeperiod))


def f_linearreg(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_linreg(o, (real, 0), timeperiod, slope=False))


def f_linearreg_slope(o: _Ops, real: Any, timeperiod: int) -> Any:
    return _one(_linreg(o, (real, 0), timeperiod, slope=True))


def f_beta(o: _Ops, real0: Any, real1: Any, timeperiod: int) -> Any:
    return _one(_beta(o, real0, real1, timeperiod))


def f_correl(o: _Ops, real0: Any, real1: Any, timeperiod: int) -> Any:
    return _one(_correl(o, real0, real1, timeperiod))


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name[2:].upper(): fn for name, fn in dict(globals()).items() if name.startswith("f_")
}
#: The catalog functions this module vectorizes (every TA-Lib one).
VECTORIZED: frozenset[str] = frozenset(_FUNCTIONS)


# --------------------------------------------------------------------------- running a function


def _pad(o: _Ops, v: Any, start: int) -> Any:
    """``v`` (bars ``start…``) preceded by NaN over the ``start`` warm-up bars."""
    xp = o.xp
    return xp.concatenate([xp.full((*v.shape[:-1], start), _NAN), v], axis=-1)


def _run(o: _Ops, name: str, params: Mapping[str, Any], cols: Sequence[Any]) -> tuple[Any, ...]:
    """The outputs as full-length arrays: NaN over each output's warm-up."""
    spec = core.CATALOG[name]
    if cols[0].shape[-1] <= spec.lookback(**params):
        return tuple(o.xp.full(cols[0].shape, _NAN) for _ in spec.outputs)
    return tuple(_pad(o, v, st) for v, st in _FUNCTIONS[name](o, *cols, **params))


@dataclass(frozen=True)
class Column:
    """One input block, checked once (``prepare``) and held as a 64-byte-aligned float64 array
    that the JAX path reads in place. Pass it to ``compute_many`` in place of an array when one
    block feeds many functions: each call then skips the checks and the copy."""

    array: Array
    non_negative: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def _aligned_copy(arr: Array) -> Array:
    """``arr`` in a fresh 64-byte-aligned buffer (XLA reads such a buffer in place; from any
    other it copies the block itself, ~4× slower than this copy)."""
    raw = np.empty(arr.size + 8, dtype=np.float64)
    offset = (-raw.ctypes.data % 64) // 8
    out = raw[offset : offset + arr.size].reshape(arr.shape)
    out[...] = arr
    return out


def _check(key: str, value: Any, ndim: int) -> tuple[Array, bool]:
    """``value`` as a float64 array of ``ndim`` dimensions, finite, and non-negative where
    ``key`` is a price or size; ``FeatureInputError`` naming ``key`` otherwise. Two reductions
    (min, max) find a bad value without a temporary array; the message is worked out only then."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise core.FeatureInputError(key, "must be an array of numbers") from exc
    if arr.ndim != ndim:
        raise core.FeatureInputError(
            key, "must be two-dimensional (symbols, bars)" if ndim == 2 else "wrong shape"
        )
    non_negative = key in core._NON_NEGATIVE
    if arr.size:
        lo = float(arr.min())
        hi = float(arr.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise core.FeatureInputError(key, "contains a non-finite value")
        if non_negative and lo < 0:
            raise core.FeatureInputError(key, "contains a negative value")
    return arr, non_negative


def prepare(key: str, value: Any) -> Column:
    """A ``(symbols, bars)`` block checked as input ``key`` (finite; non-negative for prices and
    sizes) and aligned for the JAX path, to be passed to many ``compute_many`` calls."""
    arr, non_negative = _check(key, value, 2)
    if arr.ctypes.data % 64 or not arr.flags.c_contiguous:
        arr = _aligned_copy(arr)
    return Column(arr, non_negative)


def _block(name: str, inputs: Mapping[str, Any]) -> list[Array]:
    """The function's inputs as equal-shape ``(symbols, bars)`` float64 blocks, checked as
    ``core.validate_inputs`` checks one symbol's (a ``Column`` was checked by ``prepare``; it
    is re-checked only when this input must be non-negative and it was not checked so)."""
    spec = core.CATALOG[name]
    out: list[Array] = []
    shape: tuple[int, ...] | None = None
    for key in spec.inputs:
        if key not in inputs:
            raise core.FeatureInputError(key, f"{spec.name} needs input {key!r}")
        value = inputs[key]
        if isinstance(value, Column) and (value.non_negative or key not in core._NON_NEGATIVE):
            arr = value.array
        else:
            arr, _ = _check(key, value.array if isinstance(value, Column) else value, 2)
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise core.FeatureInputError(key, f"shape {arr.shape} != {shape} (misaligned)")
        out.append(arr)
    return out


_Key = tuple[str, tuple[tuple[str, Any], ...], int, int]
_COMPILED: dict[_Key, Any] = {}


#: Functions whose rows are mapped without their warm-up, the NaN columns joined once outside
#: the map. Joined inside, XLA fuses the function's last window arithmetic (many shifted slices)
#: into the loop that writes the padded row; that loop tests every element against the warm-up
#: edge and is no longer vectorized: MFI 4.3×, ULTOSC 1.8×, WMA 2× slower on one core, AROON
#: 1.8× and AROONOSC 3.3× (their sparse-table joins; measured, ``loadtest/features_bench.py``).
#: For the others the join outside costs one more pass over the block than it saves (scan
#: outputs are written once either way), so they keep it inside.
_JOIN_OUTSIDE = frozenset({"AROON", "AROONOSC", "MFI", "ULTOSC", "WMA"})


def _run_rows(name: str, params: Mapping[str, Any], *cols: Any) -> tuple[Any, ...]:
    """``name`` over a ``(symbols, bars)`` block, one symbol at a time: ``lax.map`` over the
    rows, each row's function traced on 1-D ``(bars,)`` arrays. A row's intermediates (80 kB at
    10,000 bars) stay in the core's cache, and its recursions are scans over scalars, which XLA
    compiles into one native loop each (``xla_cpu_small_call``) instead of stepping a loop of
    kernels; batching symbols inside the scans (``vmap``) was 3–6× slower on CPU (measured)."""
    spec = core.CATALOG[name]
    if name not in _JOIN_OUTSIDE or cols[0].shape[-1] <= spec.lookback(**params):
        return tuple(jax.lax.map(lambda row: _run(_JAX, name, params, row), cols))
    starts: list[int] = []

    def row(r: tuple[Any, ...]) -> tuple[Any, ...]:
        outs = _FUNCTIONS[name](_JAX, *r, **params)
        starts[:] = [st for _, st in outs]
        return tuple(v for v, _ in outs)

    values = jax.lax.map(row, cols)
    return tuple(_pad(_JAX, v, st) for v, st in zip(values, starts, strict=True))


def _program(name: str, params: Mapping[str, Any], symbols: int, bars: int) -> Any:
    """The compiled program of ``name`` for a ``(symbols, bars)`` block."""
    key = (name, tuple(sorted(params.items())), symbols, bars)
    fn = _COMPILED.get(key)
    if fn is None:
        spec = core.CATALOG[name]
        shapes = [
            jax.ShapeDtypeStruct((symbols, bars), jnp.float64)  # type: ignore[no-untyped-call]
            for _ in spec.inputs
        ]
        fn = jax.jit(partial(_run_rows, name, dict(params))).lower(*shapes).compile()
        # one run on a flat block: the first execution of a program pays one-time set-up,
        # which belongs to the warm-up, not to a request
        for out in fn(*(np.ones((symbols, bars)) for _ in spec.inputs)):
            np.asarray(out)
        _COMPILED[key] = fn
    return fn


def warm_up(
    symbols: int, bars: int, functions: Iterable[str | core.FeatureRequest] | None = None
) -> int:
    """Compile the JAX path for ``(symbols, bars)`` blocks (every vectorized function at its
    defaults unless ``functions`` names some, with parameters through ``FeatureRequest``).
    Returns the number of programs compiled. Call it at start-up: a compile takes ~0.2–1 s."""
    requests = [
        f if isinstance(f, core.FeatureRequest) else core.FeatureRequest(f)
        for f in (sorted(VECTORIZED) if functions is None else functions)
    ]
    before = len(_COMPILED)
    for req in requests:
        name = req.function.upper()
        if name not in _FUNCTIONS:
            raise core.FeatureInputError("function", f"{name} is not vectorized")
        _program(name, core.validate_params(name, req.params), symbols, bars)
    return len(_COMPILED) - before


def warmed_shapes(name: str, **params: Any) -> list[tuple[int, int]]:
    """The ``(symbols, bars)`` shapes compiled for ``name`` with these parameters."""
    resolved = tuple(sorted(core.validate_params(name, params).items()))
    return sorted((k[2], k[3]) for k in _COMPILED if k[0] == name.upper() and k[1] == resolved)


def compute_many(
    name: str, inputs: Mapping[str, Any], backend: str = "jax", **params: Any
) -> tuple[Array, ...]:
    """Run ``name`` over ``(symbols, bars)`` input blocks (arrays, or ``Column``s from
    ``prepare``): one ``(symbols, bars)`` float64 array per output, row ``i`` equal to
    ``core.compute`` on symbol ``i`` (NaN over the warm-up).

    ``backend="jax"`` runs the compiled program of the smallest warmed shape that holds the
    block (padding it), compiling one for the exact shape if none was warmed; its outputs are
    read-only views of the program's buffers. ``backend="numpy"`` runs the numpy path."""
    spec = core.CATALOG.get(name.upper())
    if spec is None or spec.name not in _FUNCTIONS:
        raise core.FeatureInputError("function", f"{name!r} is not vectorized")
    resolved = core.validate_params(spec.name, params)
    cols = _block(spec.name, inputs)
    symbols, bars = cols[0].shape
    if backend == "numpy":
        return tuple(np.asarray(a) for a in _run(_NP, spec.name, resolved, cols))
    if backend != "jax":
        raise core.FeatureInputError("backend", f"unknown backend {backend!r}")
    if symbols == 0 or bars == 0:
        return tuple(np.full((symbols, bars), _NAN) for _ in spec.outputs)
    shapes = [s for s in warmed_shapes(spec.name, **resolved) if s[0] >= symbols and s[1] >= bars]
    ps, pb = min(shapes, key=lambda s: s[0] * s[1]) if shapes else (symbols, bars)
    if (ps, pb) != (symbols, bars):
        cols = [np.pad(c, ((0, ps - symbols), (0, pb - bars)), mode="edge") for c in cols]
    cols = [c if c.ctypes.data % 64 == 0 else _aligned_copy(c) for c in cols]
    outs = _program(spec.name, resolved, ps, pb)(*cols)
    return tuple(np.asarray(a)[:symbols, :bars] for a in outs)

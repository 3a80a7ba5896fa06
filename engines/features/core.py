"""Features: indicators and microstructure estimators, streaming and batch, one definition.

Every indicator is written once, as a small state machine (a *kernel*) whose ``update`` consumes one
bar and returns that bar's value (NaN during warm-up). Both paths run that same code:

* streaming (``FeatureStream``): one kernel per feature and symbol, stepped as each bar closes —
  O(1) amortised work per bar (running sums, monotonic deques for rolling extrema), never a
  recomputation over the window (exceptions named in ``CATALOG``: CCI's mean absolute deviation,
  whose O(n) window scan is TA-Lib's own definition);
* batch (``compute`` and the TA-Lib-named functions ``SMA``, ``RSI``, …): the kernel stepped over
  the arrays, so the value at bar ``t`` is the streaming value after bar ``t`` by construction.

The TA-Lib functions mirror TA-Lib's C sources (TA-Lib 0.8.1, ``ta_codegen/input/<name>/<name>.c``;
compatibility mode default, no unstable period): the same seeding (EMA seeded with the SMA of its
first ``n`` inputs, Wilder smoothing seeded the way each function does it), the same running sums
in the same order, the same zero guards (``TA_IS_ZERO``: ``|v| < 1e-14``), hence the same output
length and NaN lookback. Where TA-Lib computes an inner moving average from a later start index
(MACD's fast EMA, MACDEXT) the kernel delays that average's input the same way.

The vectorized many-symbol path (``vectorized_*``, JAX ``lax.scan`` + ``vmap``, float64) runs the
recursive filters over a padded ``(symbols, bars)`` block; it is checked against these kernels.

This module is pure: numpy/JAX/math only, no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "CATALOG",
    "DEFAULT_FEATURES",
    "MA_TYPES",
    "FeatureInputError",
    "FeatureRequest",
    "FeatureStream",
    "FunctionSpec",
    "Param",
    "catalog",
    "compute",
    "lookback",
    "validate_inputs",
    "validate_params",
]

Array = npt.NDArray[np.float64]
NAN = math.nan
#: TA-Lib ``TA_EPSILON`` (ta_utility.h): ``TA_IS_ZERO(v)`` is ``-ε < v < ε``,
#: ``TA_IS_ZERO_OR_NEG(v)`` is ``v < ε``.
_EPS = 1e-14
_MAX_PERIOD = 100_000
_BIG = 3.0e37
_fabs = math.fabs
_sqrt = math.sqrt
_log = math.log
_exp = math.exp
_PARKINSON = 4.0 * math.log(2.0)
_GARMAN_KLASS = 2.0 * math.log(2.0) - 1.0


class FeatureInputError(ValueError):
    """Bad input to a feature (the API maps it to a 400 naming ``parameter``)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class Kernel(Protocol):
    """One indicator's state: ``update`` takes one bar's inputs, returns its value(s) or NaN."""

    @property
    def update(self) -> Callable[..., Any]: ...


# --------------------------------------------------------------------------- building blocks


class _Identity:
    """TA_MA with period 1 returns its input (``TA_MA``: ``optInTimePeriod == 1`` copies)."""

    __slots__ = ()

    def update(self, x: float) -> float:
        return x


class _Skip:
    """Feeds ``inner`` only from the ``d``-th input on: TA-Lib computing an inner average from a
    later start index seeds it there (``TA_INT_MACD``'s fast EMA, ``TA_INT_PO``, ``TA_MACDEXT``)."""

    __slots__ = ("_inner", "_left")

    def __init__(self, inner: Kernel, d: int) -> None:
        self._inner = inner
        self._left = d

    def update(self, x: float) -> float:
        if self._left > 0:
            self._left -= 1
            return NAN
        out: float = self._inner.update(x)
        return out


class _SMA:
    """``TA_INT_SMA``: ``total += x; out = total / n; total -= x[t-n+1]`` (that order)."""

    __slots__ = ("_buf", "_count", "_i", "_n", "_total")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0
        self._total = 0.0

    def update(self, x: float) -> float:
        self._total += x
        i = self._i
        self._buf[i] = x
        i += 1
        if i == self._n:
            i = 0
        self._i = i
        if self._count < self._n - 1:
            self._count += 1
            return NAN
        out = self._total / self._n
        self._total -= self._buf[i]
        return out


class _EMA:
    """``TA_INT_EMA`` (classic compatibility): seeded with the SMA of the first ``n`` inputs,
    then ``e = (x - e)·k + e`` with ``k = 2/(n+1)``."""

    __slots__ = ("_count", "_k", "_n", "_prev")

    def __init__(self, n: int) -> None:
        self._n = n
        self._k = 2.0 / float(n + 1)
        self._count = 0
        self._prev = 0.0

    def update(self, x: float) -> float:
        if self._count >= self._n:
            self._prev = ((x - self._prev) * self._k) + self._prev
            return self._prev
        self._prev += x
        self._count += 1
        if self._count == self._n:
            self._prev = self._prev / self._n
            return self._prev
        return NAN


class _WMA:
    """``TA_WMA`` (0.8 ``wma.c``, #255): a weighted sum kept with ``periodSum``/``periodSub``,
    rebuilt from the window every ``8·n`` bars (O(1) amortised, bounded drift)."""

    __slots__ = ("_buf", "_count", "_div", "_i", "_n", "_reseed", "_sub", "_sum", "_trailing")

    def __init__(self, n: int) -> None:
        self._n = n
        self._div = float(n) * (n + 1) / 2.0
        self._reseed = 8 * n
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0
        self._sub = 0.0
        self._sum = 0.0
        self._trailing = 0.0

    def update(self, x: float) -> float:
        n = self._n
        i = self._i
        self._buf[i] = x
        i += 1
        if i == n:
            i = 0
        self._i = i
        if self._count < n - 1:
            self._count += 1
            self._sub += x
            self._sum += x * self._count
            return NAN
        self._sub += x
        self._sub -= self._trailing
        self._sum += x * n
        self._reseed -= 1
        if self._reseed <= 0:
            self._reseed = 8 * n
            sub = 0.0
            tot = 0.0
            for w in range(1, n + 1):
                v = self._buf[(i + w - 1) % n]
                sub += v
                tot += v * w
            self._sub = sub
            self._sum = tot
        self._trailing = self._buf[i]
        out = self._sum / self._div
        self._sum -= self._sub
        return out


class _Chain:
    """Kernels applied one after another, each fed only once the previous one is warm."""

    __slots__ = ("_stages",)

    def __init__(self, *stages: Kernel) -> None:
        self._stages = stages

    def update(self, x: float) -> float:
        for stage in self._stages:
            x = stage.update(x)
            if x != x:
                return NAN
        return x


class _DEMA:
    """``TA_DEMA``: ``2·EMA(x) − EMA(EMA(x))``."""

    __slots__ = ("_e1", "_e2")

    def __init__(self, n: int) -> None:
        self._e1 = _EMA(n)
        self._e2 = _EMA(n)

    def update(self, x: float) -> float:
        a = self._e1.update(x)
        if a != a:
            return NAN
        b = self._e2.update(a)
        if b != b:
            return NAN
        return (2.0 * a) - b


class _TEMA:
    """``TA_TEMA``: ``EMA3 + (3·EMA1 − 3·EMA2)``."""

    __slots__ = ("_e1", "_e2", "_e3")

    def __init__(self, n: int) -> None:
        self._e1 = _EMA(n)
        self._e2 = _EMA(n)
        self._e3 = _EMA(n)

    def update(self, x: float) -> float:
        a = self._e1.update(x)
        if a != a:
            return NAN
        b = self._e2.update(a)
        if b != b:
            return NAN
        c = self._e3.update(b)
        if c != c:
            return NAN
        return c + ((3.0 * a) - (3.0 * b))


def _trima(n: int) -> Kernel:
    """``TA_TRIMA``: triangular weights = SMA of an SMA (odd ``n``: ⌈n/2⌉ twice; even: n/2 then
    n/2+1), which is the weight table TA-Lib's running numerator implements."""
    if n % 2:
        half = (n + 1) // 2
        return _Chain(_SMA(half), _SMA(half))
    return _Chain(_SMA(n // 2), _SMA(n // 2 + 1))


class _KAMA:
    """``TA_KAMA`` (0.8 ``kama.c``, #253/#385/#390): Kaufman's adaptive average; efficiency ratio
    over ``n`` one-bar moves with a running sum of ``|Δx|`` (reset to exactly 0 after ``n``
    unchanged bars; a flat window has ER 1), bounded by 1;
    smoothing ``(ER·(2/3 − 2/31) + 2/31)²``."""

    __slots__ = ("_count", "_n", "_null", "_prev", "_sum", "_trailing", "_win")

    _MAX = 2.0 / (30.0 + 1.0)
    _DIFF = 2.0 / (2.0 + 1.0) - 2.0 / (30.0 + 1.0)

    def __init__(self, n: int) -> None:
        self._n = n
        self._win: deque[float] = deque(maxlen=n + 1)
        self._count = 0
        self._sum = 0.0
        self._prev = 0.0
        self._trailing = 0.0
        self._null = 0

    def update(self, x: float) -> float:
        win = self._win
        win.append(x)
        t = self._count
        self._count = t + 1
        n = self._n
        if t >= 1:
            # a run of n unchanged bars empties the window: drop the add/subtract residue (#253)
            self._null = self._null + 1 if x == win[-2] else 0
        if t < n:
            if t >= 1:
                self._sum += _fabs(win[-2] - x)
                if self._null >= n:
                    self._sum = 0.0
            return NAN
        if t == n:
            self._sum += _fabs(win[-2] - x)
            self._prev = win[-2]
            first = win[0]
            roc = x - first
            self._trailing = first
        else:
            first = win[0]
            roc = x - first
            self._sum -= _fabs(self._trailing - first)
            self._sum += _fabs(x - win[-2])
            self._trailing = first
        if self._null >= n:
            self._sum = 0.0
        s = self._sum
        er = 1.0 if (s <= roc or s <= 0.0) else min(_fabs(roc / s), 1.0)
        sc = (er * self._DIFF) + self._MAX
        sc *= sc
        self._prev = ((x - self._prev) * sc) + self._prev
        return self._prev


class _T3:
    """``TA_T3``: Tillson's six chained EMAs (``k·x + (1−k)·e``), each seeded with the mean of its
    first ``n`` values, combined with the volume-factor coefficients c1..c4."""

    __slots__ = ("_acc", "_c", "_cnt", "_e", "_k", "_n", "_omk", "_stage")

    def __init__(self, n: int, vfactor: float) -> None:
        self._n = n
        self._k = 2.0 / (n + 1.0)
        self._omk = 1.0 - self._k
        self._e = [0.0] * 6
        self._stage = 0
        self._cnt = 0
        self._acc = 0.0
        v2 = vfactor * vfactor
        c1 = -(v2 * vfactor)
        c2 = 3.0 * (v2 - c1)
        c3 = -6.0 * v2 - 3.0 * (vfactor - c1)
        c4 = 1.0 + 3.0 * vfactor - c1 + 3.0 * v2
        self._c = (c1, c2, c3, c4)

    def _out(self) -> float:
        e = self._e
        c1, c2, c3, c4 = self._c
        return c1 * e[5] + c2 * e[4] + c3 * e[3] + c4 * e[2]

    def update(self, x: float) -> float:
        e = self._e
        k = self._k
        omk = self._omk
        stage = self._stage
        if stage == 6:
            v = x
            for j in range(6):
                v = e[j] = (k * v) + (omk * e[j])
            return self._out()
        if stage == 0:
            self._acc += x
            self._cnt += 1
            if self._cnt == self._n:
                e[0] = self._acc / self._n
                self._acc = e[0]
                self._cnt = 0
                self._stage = 1
            return NAN
        v = x
        for j in range(stage):
            v = e[j] = (k * v) + (omk * e[j])
        self._acc += v
        self._cnt += 1
        if self._cnt == self._n - 1:
            e[stage] = self._acc / self._n
            self._acc = e[stage]
            self._cnt = 0
            self._stage = stage + 1
            if self._stage == 6:
                return self._out()
        return NAN


#: TA-Lib ``TA_MAType``: 0 SMA, 1 EMA, 2 WMA, 3 DEMA, 4 TEMA, 5 TRIMA, 6 KAMA, 7 MAMA, 8 T3.
MA_TYPES = ("SMA", "EMA", "WMA", "DEMA", "TEMA", "TRIMA", "KAMA", "MAMA", "T3")


def _ma(matype: int, n: int) -> Kernel:
    """``TA_MA``: the moving average of type ``matype`` (MAMA is not provided)."""
    if n == 1:
        return _Identity()
    if matype == 0:
        return _SMA(n)
    if matype == 1:
        return _EMA(n)
    if matype == 2:
        return _WMA(n)
    if matype == 3:
        return _DEMA(n)
    if matype == 4:
        return _TEMA(n)
    if matype == 5:
        return _trima(n)
    if matype == 6:
        return _KAMA(n)
    if matype == 8:
        return _T3(n, 0.7)
    raise FeatureInputError("matype", f"moving-average type {matype} is not supported")


def _ma_lookback(matype: int, n: int) -> int:
    """``TA_MA_Lookback``."""
    if n <= 1:
        return 0
    return {0: n - 1, 1: n - 1, 2: n - 1, 3: 2 * (n - 1), 4: 3 * (n - 1), 5: n - 1, 6: n}.get(
        matype, 6 * (n - 1)
    )


class _Extreme:
    """Rolling max (``sign=+1``) or min (``sign=-1``) over the last ``n`` values with its bar
    index, by a monotonic deque (O(1) amortised). Ties resolve to the latest bar, as TA-Lib's
    ``>=``/``<=`` rescans do (AROON)."""

    __slots__ = ("_dq", "_max", "_n", "_t")

    def __init__(self, n: int, maximum: bool) -> None:
        self._n = n
        self._max = maximum
        self._dq: deque[tuple[int, float]] = deque()
        self._t = -1

    def update(self, x: float) -> tuple[int, float]:
        t = self._t + 1
        self._t = t
        dq = self._dq
        if self._max:
            while dq and dq[-1][1] <= x:
                dq.pop()
        else:
            while dq and dq[-1][1] >= x:
                dq.pop()
        dq.append((t, x))
        if dq[0][0] <= t - self._n:
            dq.popleft()
        return dq[0]


class _HighLow:
    """The highest high and lowest low over the last ``n`` bars, ``(NaN, NaN)`` until there are
    ``n``: two monotonic deques (O(1) amortised), stepped in one call. The front that MIDPRICE,
    WILLR, STOCH and STOCHF read (``Fed``): a stream steps one per (period, inputs) for all of
    them. Inline rather than two ``_Extreme``: 1.33 vs 1.65 µs a bar (thread CPU, SPY minutes)."""

    __slots__ = ("_hi", "_lo", "_n", "_t")

    _WARM = (NAN, NAN)

    def __init__(self, n: int) -> None:
        self._n = n
        self._hi: deque[tuple[int, float]] = deque()
        self._lo: deque[tuple[int, float]] = deque()
        self._t = -1

    def update(self, high: float, low: float) -> tuple[float, float]:
        t = self._t + 1
        self._t = t
        gone = t - self._n  # the bar that just left the window
        hi = self._hi
        while hi and hi[-1][1] <= high:
            hi.pop()
        hi.append((t, high))
        if hi[0][0] <= gone:
            hi.popleft()
        lo = self._lo
        while lo and lo[-1][1] >= low:
            lo.pop()
        lo.append((t, low))
        if lo[0][0] <= gone:
            lo.popleft()
        if gone < -1:
            return self._WARM
        return hi[0][1], lo[0][1]


def _true_range(h: float, lo: float, yc: float) -> float:
    """TA-Lib ``TRUE_RANGE`` macro: max of ``h−l``, ``|h−yc|``, ``|l−yc|``."""
    out = h - lo
    t = _fabs(h - yc)
    if t > out:
        out = t
    t = _fabs(lo - yc)
    if t > out:
        out = t
    return out


# --------------------------------------------------------------------------- overlap studies


class _MidPoint:
    """``TA_MIDPOINT``: ``(max + min)/2`` over ``n`` values."""

    __slots__ = ("_range",)

    def __init__(self, n: int) -> None:
        self._range = _HighLow(n)

    def update(self, x: float) -> float:
        hi, lo = self._range.update(x, x)
        return (hi + lo) / 2.0  # NaN over the warm-up


class _MidPrice:
    """``TA_MIDPRICE``: ``(highest high + lowest low)/2`` over ``n`` bars, from the window's
    extremes (``_HighLow``, NaN over the warm-up)."""

    __slots__ = ()

    def update(self, hh: float, ll: float) -> float:
        return (hh + ll) / 2.0


class _Var:
    """``TA_VAR`` (TA-Lib 0.8 ``var.c``, issues #118/#243): cancellation-free running variance.
    Deviations are summed against a shift ``K`` (first value, later the window mean):
    ``var = Σ(x−K)²/n − (Σ(x−K)/n)²``. The shift is re-anchored by a two-pass over the window
    when the variance falls under 1e-6 of the mean squared deviation, when a leaving value's
    square dwarfs the sum (×1e6), or every ``32·n`` bars (so O(1) amortised); a re-anchored
    variance under 1e-12 of its scale is exactly 0."""

    __slots__ = ("_buf", "_count", "_i", "_inv", "_n", "_reseed", "_s1", "_s2", "_shift")

    def __init__(self, n: int) -> None:
        self._n = n
        self._inv = 1.0 / float(n)
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0
        self._s1 = 0.0
        self._s2 = 0.0
        self._shift = 0.0
        self._reseed = 32 * n

    def update(self, x: float) -> float:
        n = self._n
        i = self._i
        self._buf[i] = x
        i += 1
        if i == n:
            i = 0
        self._i = i
        c = self._count
        if c == 0:
            self._shift = x
        d = x - self._shift
        self._s1 += d
        self._s2 += d * d
        if c < n - 1:
            self._count = c + 1
            return NAN
        inv = self._inv
        m1 = self._s1 * inv
        var = self._s2 * inv - m1 * m1
        d = self._buf[i] - self._shift  # the oldest value of this window leaves
        self._s1 -= d
        d *= d
        self._s2 -= d
        self._reseed -= 1
        if var < 0.000001 * (self._s2 * inv) or d > 1000000.0 * self._s2 or self._reseed <= 0:
            self._reseed = 32 * n
            buf = self._buf
            window = [buf[(i + j) % n] for j in range(n)]  # oldest first, as TA-Lib walks it
            t = 0.0
            for v in window:
                t += v
            shift = self._shift = t * inv
            s1 = 0.0
            s2 = 0.0
            for v in window:
                e = v - shift
                s1 += e
                s2 += e * e
            m1 = s1 * inv
            var = s2 * inv - m1 * m1
            if var < 0.000000000001 * (s2 * inv):
                var = 0.0
            e = window[0] - shift
            self._s1 = s1 - e
            self._s2 = s2 - e * e
        return var


class _StdDev:
    """``TA_STDDEV`` (0.8): ``sqrt(VAR)``, times ``nbdev`` unless it is 1."""

    __slots__ = ("_dev", "_var")

    def __init__(self, n: int, nbdev: float) -> None:
        self._var = _Var(n)
        self._dev = nbdev

    def update(self, x: float) -> float:
        v = self._var.update(x)
        if v != v:
            return NAN
        return _sqrt(v) if self._dev == 1.0 else _sqrt(v) * self._dev


class _BBands:
    """``TA_BBANDS`` (0.8 ``bbands.c``): middle = MA(matype), bands = middle ± nbdev·STDDEV(n)
    (the SMA fast path is bit-identical to this composition)."""

    __slots__ = ("_dn", "_ma", "_sd", "_up")

    def __init__(self, n: int, nbdevup: float, nbdevdn: float, matype: int) -> None:
        self._up = nbdevup
        self._dn = nbdevdn
        self._ma = _ma(matype, n)
        self._sd = _StdDev(n, 1.0)

    def update(self, x: float) -> tuple[float, float, float]:
        mid = self._ma.update(x)
        sd = self._sd.update(x)
        if mid != mid or sd != sd:
            return NAN, NAN, NAN
        if self._up == self._dn:
            t = sd * self._up
            return mid + t, mid, mid - t
        return mid + (sd * self._up), mid, mid - (sd * self._dn)


class _SAR:
    """``TA_SAR``: Wilder's parabolic stop-and-reverse; the first direction is short when bar 1
    has a positive ``MINUS_DM`` (period 1), long otherwise; the first SAR is bar 0's low/high."""

    __slots__ = ("_acc", "_af", "_ep", "_long", "_max", "_new_high", "_new_low", "_sar", "_t")

    def __init__(self, acceleration: float, maximum: float) -> None:
        self._acc = min(acceleration, maximum)
        self._max = maximum
        self._t = 0
        self._af = self._acc
        self._long = True
        self._ep = 0.0
        self._sar = 0.0
        self._new_high = 0.0
        self._new_low = 0.0

    def update(self, high: float, low: float) -> float:
        t = self._t
        self._t = t + 1
        if t == 0:
            self._new_high = high
            self._new_low = low
            return NAN
        if t == 1:
            diff_p = high - self._new_high
            diff_m = self._new_low - low
            self._long = not (diff_m > 0 and diff_p < diff_m)
            if self._long:
                self._ep = high
                self._sar = self._new_low
            else:
                self._ep = low
                self._sar = self._new_high
            self._new_low = low
            self._new_high = high
        prev_low = self._new_low
        prev_high = self._new_high
        self._new_low = new_low = low
        self._new_high = new_high = high
        sar = self._sar
        acc = self._acc
        if self._long:
            if new_low <= sar:
                self._long = False
                sar = self._ep
                sar = max(sar, prev_high, new_high)
                out = sar
                self._af = acc
                self._ep = new_low
                sar = sar + self._af * (self._ep - sar)
                sar = max(sar, prev_high, new_high)
            else:
                out = sar
                if new_high > self._ep:
                    self._ep = new_high
                    self._af = min(self._af + acc, self._max)
                sar = sar + self._af * (self._ep - sar)
                sar = min(sar, prev_low, new_low)
        elif new_high >= sar:
            self._long = True
            sar = self._ep
            sar = min(sar, prev_low, new_low)
            out = sar
            self._af = acc
            self._ep = new_high
            sar = sar + self._af * (self._ep - sar)
            sar = min(sar, prev_low, new_low)
        else:
            out = sar
            if new_low < self._ep:
                self._ep = new_low
                self._af = min(self._af + acc, self._max)
            sar = sar + self._af * (self._ep - sar)
            sar = max(sar, prev_high, new_high)
        self._sar = sar
        return out


# --------------------------------------------------------------------------- momentum


class _RSI:
    """``TA_RSI`` / ``TA_CMO``: Wilder-smoothed gains and losses, seeded with their mean over the
    first ``n`` changes; RSI = 100·G/(G+L), CMO = 100·(G−L)/(G+L), 0 when G+L is zero."""

    __slots__ = ("_cmo", "_count", "_gain", "_loss", "_n", "_prev")

    def __init__(self, n: int, cmo: bool = False) -> None:
        self._n = n
        self._cmo = cmo
        self._count = 0
        self._gain = 0.0
        self._loss = 0.0
        self._prev = 0.0

    def update(self, x: float) -> float:
        c = self._count
        self._count = c + 1
        if c == 0:
            self._prev = x
            return NAN
        d = x - self._prev
        self._prev = x
        n = self._n
        if c < n:
            if d < 0:
                self._loss -= d
            else:
                self._gain += d
            return NAN
        if c == n:
            if d < 0:
                self._loss -= d
            else:
                self._gain += d
            self._loss /= n
            self._gain /= n
        else:
            self._loss *= n - 1
            self._gain *= n - 1
            if d < 0:
                self._loss -= d
            else:
                self._gain += d
            self._loss /= n
            self._gain /= n
        s = self._gain + self._loss
        if -_EPS < s < _EPS:
            return 0.0
        if self._cmo:
            return 100.0 * ((self._gain - self._loss) / s)
        return 100.0 * (self._gain / s)


class _Lag:
    """The value ``n`` bars ago (NaN until there is one)."""

    __slots__ = ("_buf", "_count", "_i", "_n")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0

    def update(self, x: float) -> float:
        i = self._i
        old = self._buf[i]
        self._buf[i] = x
        i += 1
        self._i = 0 if i == self._n else i
        if self._count < self._n:
            self._count += 1
            return NAN
        return old


class _Mom:
    """``TA_MOM`` (``x − x[t−n]``), ``TA_ROC`` (``(x/x[t−n] − 1)·100``), ``TA_ROCP``
    (``(x − x[t−n])/x[t−n]``); ROC/ROCP are 0 when the old value is 0."""

    __slots__ = ("_kind", "_lag")

    def __init__(self, n: int, kind: str) -> None:
        self._lag = _Lag(n)
        self._kind = kind

    def update(self, x: float) -> float:
        old = self._lag.update(x)
        if old != old:
            return NAN
        if self._kind == "MOM":
            return x - old
        if old == 0.0:
            return 0.0
        if self._kind == "ROC":
            return ((x / old) - 1.0) * 100.0
        return (x - old) / old


class _TRIX:
    """``TA_TRIX``: 1-bar ROC of a triple EMA."""

    __slots__ = ("_ema", "_roc")

    def __init__(self, n: int) -> None:
        self._ema = _Chain(_EMA(n), _EMA(n), _EMA(n))
        self._roc = _Mom(1, "ROC")

    def update(self, x: float) -> float:
        e = self._ema.update(x)
        if e != e:
            return NAN
        return self._roc.update(e)


class _MACD:
    """``TA_MACD`` / ``TA_MACDEXT``: fast MA − slow MA, a signal MA of it, and the histogram.
    Both averages first output at the larger lookback (TA-Lib seeds the shorter one there)."""

    __slots__ = ("_fast", "_signal", "_slow")

    def __init__(
        self, fast: int, fast_type: int, slow: int, slow_type: int, signal: int, signal_type: int
    ) -> None:
        if slow < fast:
            fast, slow, fast_type, slow_type = slow, fast, slow_type, fast_type
        lb_fast = _ma_lookback(fast_type, fast)
        lb_slow = _ma_lookback(slow_type, slow)
        largest = max(lb_fast, lb_slow)
        self._fast = _Skip(_ma(fast_type, fast), largest - lb_fast)
        self._slow = _Skip(_ma(slow_type, slow), largest - lb_slow)
        self._signal = _ma(signal_type, signal)

    def update(self, x: float) -> tuple[float, float, float]:
        f = self._fast.update(x)
        s = self._slow.update(x)
        if f != f or s != s:
            return NAN, NAN, NAN
        m = f - s
        sig = self._signal.update(m)
        if sig != sig:
            return NAN, NAN, NAN
        return m, sig, m - sig


def _macd(fastperiod: int, slowperiod: int, signalperiod: int) -> Kernel:
    return _MACD(fastperiod, 1, slowperiod, 1, signalperiod, 1)


class _PO:
    """``TA_INT_PO`` (APO, PPO): fast MA − slow MA, PPO as a percentage of the slow MA. In TA-Lib
    0.8 both averages run from the first bar (unlike MACD, whose fast EMA is seeded late)."""

    __slots__ = ("_fast", "_pct", "_slow")

    def __init__(self, fast: int, slow: int, matype: int, pct: bool) -> None:
        if slow < fast:
            fast, slow = slow, fast
        self._fast = _ma(matype, fast)
        self._slow = _ma(matype, slow)
        self._pct = pct

    def update(self, x: float) -> float:
        f: float = self._fast.update(x)
        s: float = self._slow.update(x)
        if f != f or s != s:
            return NAN
        if not self._pct:
            return f - s
        if -_EPS < s < _EPS:
            return 0.0
        return ((f - s) / s) * 100.0


def _fast_k(hh: float, ll: float, close: float) -> float:
    """``TA_STOCHF``'s fast %K from the ``fastk`` window's extremes: 100·(c − LL)/(HH − LL),
    0 when HH − LL is zero relative to |HH| + |LL|."""
    if _fabs(hh - ll) <= _EPS * (_fabs(hh) + _fabs(ll)):  # TA_IS_ZERO_SCALED (0.8, #253)
        return 0.0
    return (close - ll) / (hh - ll) * 100.0  # divided by the range, then scaled (#390)


class _StochF:
    """``TA_STOCHF`` from the ``fastk``-bar extremes (``_HighLow``, NaN over its warm-up): fast
    %K and fast %D, its MA. Both outputs start at the total lookback."""

    __slots__ = ("_d",)

    def __init__(self, fastd: int, fastd_matype: int) -> None:
        self._d = _ma(fastd_matype, fastd)

    def update(self, hh: float, ll: float, close: float) -> tuple[float, float]:
        if hh != hh:
            return NAN, NAN
        k = _fast_k(hh, ll, close)
        d = self._d.update(k)
        if d != d:
            return NAN, NAN
        return k, d


class _Stoch:
    """``TA_STOCH`` from the ``fastk``-bar extremes (``_HighLow``): slow %K = MA(fast %K),
    slow %D = MA(slow %K)."""

    __slots__ = ("_d", "_k")

    def __init__(self, slowk: int, slowk_matype: int, slowd: int, slowd_m: int) -> None:
        self._k = _ma(slowk_matype, slowk)
        self._d = _ma(slowd_m, slowd)

    def update(self, hh: float, ll: float, close: float) -> tuple[float, float]:
        if hh != hh:
            return NAN, NAN
        k = self._k.update(_fast_k(hh, ll, close))
        if k != k:
            return NAN, NAN
        d = self._d.update(k)
        if d != d:
            return NAN, NAN
        return k, d


class _StochRSI:
    """``TA_STOCHRSI``: STOCHF applied to RSI (high = low = close = RSI)."""

    __slots__ = ("_range", "_rsi", "_st")

    def __init__(self, n: int, fastk: int, fastd: int, fastd_matype: int) -> None:
        self._rsi = _RSI(n)
        self._range = _HighLow(fastk)
        self._st = _StochF(fastd, fastd_matype)

    def update(self, x: float) -> tuple[float, float]:
        r = self._rsi.update(x)
        if r != r:
            return NAN, NAN
        hh, ll = self._range.update(r, r)
        return self._st.update(hh, ll, r)


class _DM:
    """Wilder's directional movement, one pass for the whole family: +DM, −DM and TR summed over
    the first ``n−1`` moves, then Wilder-smoothed (``s − s/n + v``); each bar gives
    ``(PLUS_DI, MINUS_DI, DX, ADX, ADXR)`` (``TA_PLUS_DI``, ``TA_MINUS_DI``, ``TA_DX``,
    ``TA_ADX``, ``TA_ADXR``), each NaN over its own lookback. The catalog functions are views
    of it (``_Pick``); a stream that carries several of them steps it once (``Shared``)."""

    __slots__ = (
        "_adx",
        "_adxr_lag",
        "_dx",
        "_mdm",
        "_n",
        "_pc",
        "_pdm",
        "_ph",
        "_pl",
        "_sum_dx",
        "_t",
        "_tr",
    )

    _WARM = (NAN, NAN, NAN, NAN, NAN)

    def __init__(self, n: int) -> None:
        self._n = n
        self._t = 0
        self._pdm = 0.0
        self._mdm = 0.0
        self._tr = 0.0
        self._ph = 0.0
        self._pl = 0.0
        self._pc = 0.0
        self._dx = 0.0
        self._sum_dx = 0.0
        self._adx = NAN
        self._adxr_lag = _Lag(n - 1)

    def update(self, high: float, low: float, close: float) -> tuple[float, ...]:
        t = self._t
        self._t = t + 1
        n = self._n
        if t == 0:
            self._ph, self._pl, self._pc = high, low, close
            return self._WARM
        diff_p = high - self._ph
        diff_m = self._pl - low
        self._ph = high
        self._pl = low
        tr = _true_range(high, low, self._pc)
        self._pc = close
        if t < n:
            if diff_m > 0 and diff_p < diff_m:
                self._mdm += diff_m
            elif diff_p > 0 and diff_p > diff_m:
                self._pdm += diff_p
            self._tr += tr
            return self._WARM
        self._mdm -= self._mdm / n
        self._pdm -= self._pdm / n
        if diff_m > 0 and diff_p < diff_m:
            self._mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            self._pdm += diff_p
        self._tr = self._tr - (self._tr / n) + tr
        ptr = self._tr
        if -_EPS < ptr < _EPS:
            plus_di = minus_di = 0.0
            dx = NAN
        else:
            minus_di = 100.0 * (self._mdm / ptr)
            plus_di = 100.0 * (self._pdm / ptr)
            s = minus_di + plus_di
            dx = NAN if -_EPS < s < _EPS else 100.0 * (_fabs(minus_di - plus_di) / s)
        if dx == dx:
            self._dx = dx
        if t < 2 * n:
            if dx == dx:
                self._sum_dx += dx
            if t < 2 * n - 1:
                return plus_di, minus_di, self._dx, NAN, NAN
            self._adx = self._sum_dx / n
        elif dx == dx:
            self._adx = ((self._adx * (n - 1)) + dx) / n
        adx = self._adx
        old = self._adxr_lag.update(adx)
        return plus_di, minus_di, self._dx, adx, NAN if old != old else (adx + old) / 2.0


class _CCI:
    """``TA_CCI``: (tp − mean)/(0.015·mean|tp − mean|) over ``n`` typical prices (h+l+c)/3.
    The mean absolute deviation needs the window (O(n) per bar, TA-Lib's definition); the sums run
    over the ring in TA-Lib's circular-buffer order."""

    __slots__ = ("_buf", "_count", "_i", "_n")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0

    def update(self, high: float, low: float, close: float) -> float:
        tp = (high + low + close) / 3.0
        buf = self._buf
        i = self._i
        buf[i] = tp
        i += 1
        self._i = 0 if i == self._n else i
        if self._count < self._n - 1:
            self._count += 1
            return NAN
        avg = 0.0
        for v in buf:
            avg += v
        avg /= self._n
        fabs = _fabs  # a local: the loop runs n times a bar
        dev = 0.0
        for v in buf:
            dev += fabs(v - avg)
        num = tp - avg
        if num != 0.0 and dev != 0.0:
            return num / (0.015 * (dev / self._n))
        return 0.0


class _MFI:
    """``TA_MFI`` (TA-Lib 0.8 ``mfi.c``, issues #107/#244): money flow tp·volume, positive or
    negative by the sign of Δtp; a change within 1e-14·(|tp|+|tp₋₁|) counts as no move. Sums over
    ``n`` bars; once ``n`` bars in a row carried no flow both sums are reset to exactly 0.
    MFI = 100·pos/(pos+neg) with pos clamped into [0, total], 0 for an empty window."""

    __slots__ = ("_buf_n", "_buf_p", "_count", "_i", "_n", "_neg", "_null", "_pos", "_prev")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf_p = [0.0] * n
        self._buf_n = [0.0] * n
        self._i = 0
        self._count = 0
        self._pos = 0.0
        self._neg = 0.0
        self._prev = 0.0
        self._null = 0

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        tp = (high + low + close) / 3.0
        c = self._count
        self._count = c + 1
        if c == 0:
            self._prev = tp
            return NAN
        n = self._n
        i = self._i
        if c > n:
            self._pos -= self._buf_p[i]
            self._neg -= self._buf_n[i]
        d = tp - self._prev
        scale = _fabs(tp) + _fabs(self._prev)
        self._prev = tp
        mf = 0.0 if _fabs(d) <= _EPS * scale else tp * volume
        pos = 0.0 if d < 0.0 else mf
        neg = mf if d < 0.0 else 0.0
        self._buf_p[i] = pos
        self._buf_n[i] = neg
        self._pos += pos
        self._neg += neg
        self._null = self._null + 1 if mf == 0.0 else 0
        if self._null >= n:
            self._null = n
            self._pos = 0.0
            self._neg = 0.0
        i += 1
        self._i = 0 if i == n else i
        if c < n:
            return NAN
        total = self._pos + self._neg
        p = self._pos
        p = 0.0 if p < 0.0 else (total if p > total else p)
        return 0.0 if total <= 0.0 else 100.0 * (p / total)


class _WillR:
    """``TA_WILLR``: (HH − c)/((HH − LL)/−100) from the ``n``-bar extremes (``_HighLow``, NaN
    over its warm-up), 0 when flat."""

    __slots__ = ()

    def update(self, hh: float, ll: float, close: float) -> float:
        if hh != hh:
            return NAN
        diff = (hh - ll) / (-100.0)
        return (hh - close) / diff if diff != 0.0 else 0.0


class _Aroon:
    """``TA_AROON`` and ``TA_AROONOSC`` over ``n+1`` bars, one pass: ``(aroondown, aroonup,
    aroonosc)`` with up = (100/n)·(n − bars since HH), osc = (100/n)·(bar of HH − bar of LL)."""

    __slots__ = ("_count", "_factor", "_hi", "_lo", "_n")

    _WARM = (NAN, NAN, NAN)

    def __init__(self, n: int) -> None:
        self._n = n
        self._factor = 100.0 / n
        self._hi = _Extreme(n + 1, True)
        self._lo = _Extreme(n + 1, False)
        self._count = 0

    def update(self, high: float, low: float) -> tuple[float, float, float]:
        hi_idx = self._hi.update(high)[0]
        lo_idx = self._lo.update(low)[0]
        t = self._count
        self._count = t + 1
        if t < self._n:
            return self._WARM
        f = self._factor
        n = self._n
        return f * (n - (t - lo_idx)), f * (n - (t - hi_idx)), f * (hi_idx - lo_idx)


class _Pick:
    """Some outputs of a kernel that computes several functions at once (``_DM``, ``_Aroon``):
    the catalog function run on its own."""

    __slots__ = ("_inner", "_picks")

    def __init__(self, inner: Kernel, picks: tuple[int, ...]) -> None:
        self._inner = inner
        self._picks = picks

    def update(self, *inputs: float) -> Any:
        out = self._inner.update(*inputs)
        if len(self._picks) == 1:
            return out[self._picks[0]]
        return tuple(out[i] for i in self._picks)


class _Fed:
    """A kernel that reads a front kernel's outputs (``Fed``) run on its own: the front reads
    the first ``reads`` inputs, the reader the front's outputs followed by the other inputs."""

    __slots__ = ("_front", "_reader", "_reads")

    def __init__(self, front: Kernel, reader: Kernel, reads: int) -> None:
        self._front = front
        self._reader = reader
        self._reads = reads

    def update(self, *inputs: float) -> Any:
        r = self._reads
        return self._reader.update(*self._front.update(*inputs[:r]), *inputs[r:])


class _UltOsc:
    """``TA_ULTOSC``: 100·(4·A₁/B₁ + 2·A₂/B₂ + A₃/B₃)/7 with A = Σ(c − min(l, c₋₁)), B = Σ TR over
    the three periods (sorted, the shortest weighted 4)."""

    __slots__ = ("_a", "_b", "_buf", "_pc", "_periods", "_t")

    def __init__(self, p1: int, p2: int, p3: int) -> None:
        self._periods = tuple(sorted((p1, p2, p3)))
        self._buf: list[tuple[float, float]] = [(0.0, 0.0)] * self._periods[2]
        self._a = [0.0, 0.0, 0.0]
        self._b = [0.0, 0.0, 0.0]
        self._t = 0
        self._pc = 0.0

    def update(self, high: float, low: float, close: float) -> float:
        t = self._t
        self._t = t + 1
        pc = self._pc
        self._pc = close
        if t == 0:
            return NAN
        true_low = low if low < pc else pc
        a_term = close - true_low
        b_term = _true_range(high, low, pc)
        p0, p1, size = self._periods
        buf = self._buf
        buf[t % size] = (a_term, b_term)
        a = self._a
        b = self._b
        if t >= size - p0 + 1:
            a[0] += a_term
            b[0] += b_term
        if t >= size - p1 + 1:
            a[1] += a_term
            b[1] += b_term
        a[2] += a_term
        b[2] += b_term
        if t < size:
            return NAN
        out = 0.0
        if not -_EPS < b[0] < _EPS:
            out += 4.0 * (a[0] / b[0])
        if not -_EPS < b[1] < _EPS:
            out += 2.0 * (a[1] / b[1])
        if not -_EPS < b[2] < _EPS:
            out += a[2] / b[2]
        old_a, old_b = buf[(t - p0 + 1) % size]
        a[0] -= old_a
        b[0] -= old_b
        old_a, old_b = buf[(t - p1 + 1) % size]
        a[1] -= old_a
        b[1] -= old_b
        old_a, old_b = buf[(t + 1) % size]
        a[2] -= old_a
        b[2] -= old_b
        return 100.0 * (out / 7.0)


class _BOP:
    """``TA_BOP``: (c − o)/(h − l), 0 when h − l ≤ ε."""

    __slots__ = ()

    def update(self, open_: float, high: float, low: float, close: float) -> float:
        r = high - low
        return 0.0 if r < _EPS else (close - open_) / r


# --------------------------------------------------------------------------- volatility / volume


class _TRange:
    """``TA_TRANGE``: true range from bar 1 on."""

    __slots__ = ("_pc", "_t")

    def __init__(self) -> None:
        self._t = 0
        self._pc = 0.0

    def update(self, high: float, low: float, close: float) -> float:
        pc = self._pc
        self._pc = close
        if self._t == 0:
            self._t = 1
            return NAN
        return _true_range(high, low, pc)


class _ATR:
    """``TA_ATR`` / ``TA_NATR``: Wilder's average true range seeded with the SMA of the first
    ``n`` true ranges, ``atr = (atr·(n−1) + tr)/n``; NATR = 100·ATR/close (0 if close is 0)."""

    __slots__ = ("_atr", "_count", "_n", "_natr", "_tr")

    def __init__(self, n: int, natr: bool) -> None:
        self._n = n
        self._natr = natr
        self._tr = _TRange()
        self._count = 0
        self._atr = 0.0

    def update(self, high: float, low: float, close: float) -> float:
        tr = self._tr.update(high, low, close)
        if tr != tr:
            return NAN
        n = self._n
        c = self._count
        self._count = c + 1
        if n == 1:
            atr = tr
        elif c < n:
            self._atr += tr
            if c < n - 1:
                return NAN
            atr = self._atr = self._atr / n
        else:
            atr = self._atr * (n - 1)
            atr += tr
            atr /= n
            self._atr = atr
        if not self._natr:
            return atr
        return 0.0 if -_EPS < close < _EPS else (atr / close) * 100.0


class _OBV:
    """``TA_OBV``: starts at the first bar's volume; ± volume on up/down closes."""

    __slots__ = ("_obv", "_prev", "_started")

    def __init__(self) -> None:
        self._started = False
        self._obv = 0.0
        self._prev = 0.0

    def update(self, close: float, volume: float) -> float:
        if not self._started:
            self._started = True
            self._obv = volume
        elif close > self._prev:
            self._obv += volume
        elif close < self._prev:
            self._obv -= volume
        self._prev = close
        return self._obv


class _AD:
    """``TA_AD``: Chaikin accumulation/distribution, ``Σ ((c−l)−(h−c))/(h−l)·v`` (h > l)."""

    __slots__ = ("_ad",)

    def __init__(self) -> None:
        self._ad = 0.0

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        r = high - low
        if r > 0.0:
            self._ad += (((close - low) - (high - close)) / r) * volume
        return self._ad


class _ADOSC:
    """``TA_ADOSC``: EMA_fast(AD) − EMA_slow(AD), both seeded with the first AD value
    (``k·ad + (1−k)·e``), output from the slow lookback."""

    __slots__ = ("_ad", "_count", "_f", "_fk", "_lb", "_s", "_sk")

    def __init__(self, fast: int, slow: int) -> None:
        self._ad = _AD()
        self._fk = 2.0 / (fast + 1)
        self._sk = 2.0 / (slow + 1)
        self._lb = max(fast, slow) - 1
        self._count = 0
        self._f = 0.0
        self._s = 0.0

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        ad = self._ad.update(high, low, close, volume)
        c = self._count
        self._count = c + 1
        if c == 0:
            self._f = ad
            self._s = ad
        else:
            self._f = (self._fk * ad) + ((1.0 - self._fk) * self._f)
            self._s = (self._sk * ad) + ((1.0 - self._sk) * self._s)
        if c < self._lb:
            return NAN
        return self._f - self._s


# --------------------------------------------------------------------------- statistics


class _LinReg:
    """``TA_LINEARREG`` / ``TA_LINEARREG_SLOPE``: OLS of the last ``n`` values on x = n−1…0.
    ΣY and ΣXY are updated in O(1) (``ΣXY' = ΣXY − (n−1)·x_old + ΣY − x_old``) and recomputed in
    TA-Lib's order every ``n`` bars, which keeps rounding drift bounded (amortised O(1))."""

    __slots__ = ("_buf", "_count", "_div", "_i", "_n", "_slope", "_sum_x", "_sxy", "_sy")

    def __init__(self, n: int, slope: bool) -> None:
        self._n = n
        self._slope = slope
        self._sum_x = n * (n - 1) * 0.5
        sum_x_sqr = n * (n - 1) * (2 * n - 1) / 6
        self._div = self._sum_x * self._sum_x - n * sum_x_sqr
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0
        self._sxy = 0.0
        self._sy = 0.0

    def update(self, x: float) -> float:
        n = self._n
        i = self._i
        old = self._buf[i]
        self._buf[i] = x
        i += 1
        self._i = 0 if i == n else i
        c = self._count
        self._count = c + 1
        if c < n - 1:
            return NAN
        if (c - (n - 1)) % n == 0:
            sy = 0.0
            sxy = 0.0
            buf = self._buf
            for age in range(n - 1, -1, -1):
                v = buf[(self._i + (n - 1 - age)) % n]
                sy += v
                sxy += age * v
        else:
            sxy = self._sxy - (n - 1) * old + (self._sy - old)
            sy = self._sy - old + x
        self._sy = sy
        self._sxy = sxy
        m = (n * sxy - self._sum_x * sy) / self._div
        if self._slope:
            return m
        b = (sy - m * self._sum_x) / n
        return b + m * (n - 1)


class _Beta:
    """``TA_BETA`` (TA-Lib 0.8 ``beta.c``): OLS slope of real1's one-bar returns on real0's over
    ``n`` returns (a return is 0 when its base price is zero), from sums of returns measured
    against a shift (first return, later the window mean) re-anchored by a two-pass when the
    denominator falls under 1e-6 of n·Sxx, when a leaving return dominates (×1e3), or every
    ``32·n`` bars; 0 when the denominator is ≤ 1e-14·n·Sxx."""

    __slots__ = (
        "_buf",
        "_count",
        "_kx",
        "_ky",
        "_leaving",
        "_n",
        "_px",
        "_py",
        "_reseed",
        "_sx",
        "_sxx",
        "_sxy",
        "_sy",
    )

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf: list[tuple[float, float]] = [(0.0, 0.0)] * n
        self._count = 0
        self._px = self._py = 0.0
        self._kx = self._ky = 0.0
        self._sx = self._sxx = self._sxy = self._sy = 0.0
        self._leaving = 0.0
        self._reseed = 32 * n

    def update(self, real0: float, real1: float) -> float:
        t = self._count
        self._count = t + 1
        if t == 0:
            self._px = real0
            self._py = real1
            return NAN
        px = self._px
        py = self._py
        rx = 0.0 if -_EPS < px < _EPS else (real0 - px) / px
        ry = 0.0 if -_EPS < py < _EPS else (real1 - py) / py
        self._px = real0
        self._py = real1
        if t == 1:
            self._kx = rx
            self._ky = ry
        n = self._n
        self._buf[t % n] = (rx, ry)
        x = rx - self._kx
        y = ry - self._ky
        self._sxx += x * x
        self._sxy += x * y
        self._sx += x
        self._sy += y
        if t < n:
            return NAN
        nf = float(n)
        scale = nf * self._sxx
        den = scale - (self._sx * self._sx)
        self._reseed -= 1
        if den < 0.000001 * scale or self._leaving > 1000.0 * self._sxx or self._reseed <= 0:
            self._reseed = 32 * n
            window = [self._buf[(t + 1 + j) % n] for j in range(n)]
            tx = 0.0
            ty = 0.0
            for a, b in window:
                tx += a
                ty += b
            kx = self._kx = tx / nf
            ky = self._ky = ty / nf
            sxx = sxy = sx = sy = 0.0
            for a, b in window:
                x = a - kx
                y = b - ky
                sxx += x * x
                sxy += x * y
                sx += x
                sy += y
            self._sxx, self._sxy, self._sx, self._sy = sxx, sxy, sx, sy
            scale = nf * sxx
            den = max(scale - (sx * sx), 0.0)
        ox, oy = self._buf[(t + 1) % n]
        x = ox - self._kx
        y = oy - self._ky
        out = 0.0
        if den > 0.00000000000001 * scale:
            out = ((nf * self._sxy) - (self._sx * self._sy)) / den
        self._leaving = x * x
        self._sxx -= x * x
        self._sxy -= x * y
        self._sx -= x
        self._sy -= y
        return out


class _Correl:
    """``TA_CORREL`` (TA-Lib 0.8 ``correl.c``, issue #242): Pearson correlation over ``n`` bars
    from sums of deviations from per-series shifts (first value, later the window means),
    re-anchored by a two-pass under the same triggers as ``TA_VAR``; 0 when either sum of
    squares is ≤ 1e-14 of its scale; clamped into [−1, 1]."""

    __slots__ = (
        "_buf",
        "_count",
        "_inv",
        "_kx",
        "_ky",
        "_lx",
        "_ly",
        "_n",
        "_reseed",
        "_sx",
        "_sx2",
        "_sxy",
        "_sy",
        "_sy2",
    )

    def __init__(self, n: int) -> None:
        self._n = n
        self._inv = 1.0 / float(n)
        self._buf: list[tuple[float, float]] = [(0.0, 0.0)] * n
        self._count = 0
        self._sx = self._sx2 = self._sxy = self._sy = self._sy2 = 0.0
        self._kx = self._ky = 0.0
        self._lx = self._ly = 0.0
        self._reseed = 32 * n

    def update(self, real0: float, real1: float) -> float:
        t = self._count
        self._count = t + 1
        n = self._n
        self._buf[t % n] = (real0, real1)
        if t == 0:
            self._kx = real0
            self._ky = real1
        x = real0 - self._kx
        y = real1 - self._ky
        self._sx += x
        self._sx2 += x * x
        self._sxy += x * y
        self._sy += y
        self._sy2 += y * y
        if t < n - 1:
            return NAN
        inv = self._inv
        ss_x = self._sx2 - ((self._sx * self._sx) * inv)
        ss_y = self._sy2 - ((self._sy * self._sy) * inv)
        sp = self._sxy - ((self._sx * self._sy) * inv)
        self._reseed -= 1
        if (
            ss_x < 0.000001 * self._sx2
            or ss_y < 0.000001 * self._sy2
            or self._lx > 1000000.0 * self._sx2
            or self._ly > 1000000.0 * self._sy2
            or self._reseed <= 0
        ):
            self._reseed = 32 * n
            window = [self._buf[(t + 1 + j) % n] for j in range(n)]
            tx = 0.0
            ty = 0.0
            for a, b in window:
                tx += a
                ty += b
            kx = self._kx = tx * inv
            ky = self._ky = ty * inv
            sx = sx2 = sxy = sy = sy2 = 0.0
            for a, b in window:
                x = a - kx
                sx += x
                sx2 += x * x
                y = b - ky
                sxy += x * y
                sy += y
                sy2 += y * y
            self._sx, self._sx2, self._sxy, self._sy, self._sy2 = sx, sx2, sxy, sy, sy2
            ss_x = sx2 - ((sx * sx) * inv)
            ss_y = sy2 - ((sy * sy) * inv)
            sp = sxy - ((sx * sy) * inv)
            ss_x = max(ss_x, 0.0)
            ss_y = max(ss_y, 0.0)
        ox, oy = self._buf[(t + 1) % n]
        tx = ox - self._kx
        ty = oy - self._ky
        if ss_x > 0.00000000000001 * self._sx2 and ss_y > 0.00000000000001 * self._sy2:
            out = sp / _sqrt(ss_x * ss_y)
            out = 1.0 if out > 1.0 else (-1.0 if out < -1.0 else out)
        else:
            out = 0.0
        self._lx = tx * tx
        self._ly = ty * ty
        self._sx -= tx
        self._sx2 -= self._lx
        self._sxy -= tx * ty
        self._sy -= ty
        self._sy2 -= self._ly
        return out


# --------------------------------------------------------------------------- beyond TA-Lib


class _VWAP:
    """Session-anchored VWAP: Σ tp·v / Σ v since the session's first bar, tp = (h+l+c)/3.
    NaN until the session has volume."""

    __slots__ = ("_pv", "_v")

    def __init__(self) -> None:
        self._pv = 0.0
        self._v = 0.0

    def update(self, high: float, low: float, close: float, volume: float, new: float) -> float:
        if new:
            self._pv = 0.0
            self._v = 0.0
        self._pv += (high + low + close) / 3.0 * volume
        self._v += volume
        return self._pv / self._v if self._v > 0.0 else NAN


class _RollingMean:
    """Mean of the last ``n`` values of a term series (running sum, TA_INT_SMA order)."""

    __slots__ = ("_sma",)

    def __init__(self, n: int) -> None:
        self._sma = _SMA(n)

    def update(self, x: float) -> float:
        return self._sma.update(x)


class _RangeVol:
    """Per-bar volatility estimators, ``sqrt`` of the mean of a per-bar variance term over ``n``
    bars:

    * realized: r² with r = ln(c/c₋₁) (Andersen & Bollerslev 1998);
    * Parkinson (1980, eq. 1): ln(h/l)²/(4 ln 2);
    * Garman & Klass (1980, σ̂₅): ½ ln(h/l)² − (2 ln 2 − 1) ln(c/o)²;
    * Rogers & Satchell (1991): ln(h/c)·ln(h/o) + ln(l/c)·ln(l/o).
    """

    __slots__ = ("_kind", "_mean", "_pc")

    def __init__(self, n: int, kind: str) -> None:
        self._kind = kind
        self._mean = _SMA(n)
        self._pc = NAN

    def update(self, open_: float, high: float, low: float, close: float) -> float:
        kind = self._kind
        if kind == "realized":
            pc = self._pc
            self._pc = close
            if pc != pc:
                return NAN
            r = _log(close / pc)
            term = r * r
        elif kind == "parkinson":
            hl = _log(high / low)
            term = hl * hl / _PARKINSON
        elif kind == "garman_klass":
            hl = _log(high / low)
            co = _log(close / open_)
            term = 0.5 * hl * hl - _GARMAN_KLASS * co * co
        else:
            term = _log(high / close) * _log(high / open_) + _log(low / close) * _log(low / open_)
        m = self._mean.update(term)
        return NAN if m != m else _sqrt(max(m, 0.0))


class _RollingMoments:
    """Running Σx, Σy, Σx², Σxy over the last ``n`` pairs: sample variance and covariance."""

    __slots__ = ("_buf", "_count", "_n", "_sx", "_sxx", "_sxy", "_sy", "_syy")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf: list[tuple[float, float]] = [(0.0, 0.0)] * n
        self._count = 0
        self._sx = self._sy = self._sxx = self._sxy = self._syy = 0.0

    def push(self, x: float, y: float) -> bool:
        t = self._count
        self._count = t + 1
        n = self._n
        if t >= n:
            ox, oy = self._buf[t % n]
            self._sx -= ox
            self._sy -= oy
            self._sxx -= ox * ox
            self._sxy -= ox * oy
            self._syy -= oy * oy
        self._buf[t % n] = (x, y)
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        self._syy += y * y
        return t >= n - 1

    def var_x(self) -> float:
        n = self._n
        return (self._sxx - self._sx * self._sx / n) / (n - 1)

    def var_y(self) -> float:
        n = self._n
        return (self._syy - self._sy * self._sy / n) / (n - 1)

    def cov(self) -> float:
        n = self._n
        return (self._sxy - self._sx * self._sy / n) / (n - 1)


class _YangZhang:
    """Yang & Zhang (2000, eq. 10): σ² = σ_o² + k·σ_c² + (1−k)·σ_RS², k = 0.34/(1.34 + (n+1)/(n−1)),
    σ_o², σ_c² the sample variances of ln(o/c₋₁) and ln(c/o) over ``n`` bars, σ_RS² the mean
    Rogers–Satchell term. One ring of ``(ln(o/c₋₁), ln(c/o), RS)`` and its running sums, in the
    order ``_RollingMoments`` (the two variances) and ``_SMA`` (the RS mean) keep them, so the
    values are theirs bit for bit at about half the calls (the costliest default kernel)."""

    __slots__ = ("_buf", "_count", "_k", "_n", "_pc", "_rs", "_sx", "_sxx", "_sy", "_syy")

    def __init__(self, n: int) -> None:
        self._n = n
        self._k = 0.34 / (1.34 + (n + 1) / (n - 1))
        self._buf: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * n
        self._count = 0
        self._sx = self._sy = self._sxx = self._syy = 0.0
        self._rs = 0.0
        self._pc = NAN

    def update(self, open_: float, high: float, low: float, close: float) -> float:
        pc = self._pc
        self._pc = close
        if pc != pc:
            return NAN
        rs = _log(high / close) * _log(high / open_) + _log(low / close) * _log(low / open_)
        x = _log(open_ / pc)
        y = _log(close / open_)
        t = self._count
        self._count = t + 1
        n = self._n
        buf = self._buf
        if t >= n:
            ox, oy, _ = buf[t % n]
            self._sx -= ox
            self._sy -= oy
            self._sxx -= ox * ox
            self._syy -= oy * oy
        buf[t % n] = (x, y, rs)
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._syy += y * y
        self._rs += rs
        if t < n - 1:
            return NAN
        m_rs = self._rs / n
        self._rs -= buf[(t + 1) % n][2]  # the oldest term leaves (``_SMA``'s order)
        var_x = (self._sxx - self._sx * self._sx / n) / (n - 1)
        var_y = (self._syy - self._sy * self._sy / n) / (n - 1)
        k = self._k
        var = var_x + k * var_y + (1.0 - k) * m_rs
        return _sqrt(max(var, 0.0))


class _Roll:
    """Roll (1984): spread = 2·sqrt(−cov(Δp_t, Δp_{t−1})) over ``n`` pairs of close changes;
    0 when the serial covariance is not negative (the model does not apply)."""

    __slots__ = ("_dp", "_mom", "_pc")

    def __init__(self, n: int) -> None:
        self._mom = _RollingMoments(n)
        self._pc = NAN
        self._dp = NAN

    def update(self, close: float) -> float:
        pc = self._pc
        self._pc = close
        if pc != pc:
            return NAN
        dp = close - pc
        prev = self._dp
        self._dp = dp
        if prev != prev:
            return NAN
        if not self._mom.push(dp, prev):
            return NAN
        c = self._mom.cov()
        return 2.0 * _sqrt(-c) if c < 0.0 else 0.0


_CS_DEN = 3.0 - 2.0 * math.sqrt(2.0)


def corwin_schultz_pair(h0: float, l0: float, h1: float, l1: float) -> float:
    """Corwin & Schultz (2012, eqs. 14 and 18): the two-bar high–low spread estimate,
    β = ln(h₀/l₀)² + ln(h₁/l₁)², γ = ln(max h / min l)²,
    α = (√(2β) − √β)/(3 − 2√2) − √(γ/(3 − 2√2)), S = 2(e^α − 1)/(1 + e^α);
    negative estimates are set to 0 (the paper's §III.A choice)."""
    b0 = _log(h0 / l0)
    b1 = _log(h1 / l1)
    beta = b0 * b0 + b1 * b1
    g = _log((h0 if h0 > h1 else h1) / (l0 if l0 < l1 else l1))
    gamma = g * g
    alpha = (_sqrt(2.0 * beta) - _sqrt(beta)) / _CS_DEN - _sqrt(gamma / _CS_DEN)
    ea = _exp(alpha)
    s = 2.0 * (ea - 1.0) / (1.0 + ea)
    return max(s, 0.0)


class _CorwinSchultz:
    """Mean of the two-bar Corwin–Schultz estimates over ``n`` bar pairs (relative spread)."""

    __slots__ = ("_h", "_l", "_mean")

    def __init__(self, n: int) -> None:
        self._mean = _SMA(n)
        self._h = NAN
        self._l = NAN

    def update(self, high: float, low: float) -> float:
        h0, l0 = self._h, self._l
        self._h, self._l = high, low
        if h0 != h0:
            return NAN
        return self._mean.update(corwin_schultz_pair(h0, l0, high, low))


class _Amihud:
    """Amihud (2002, eq. 1): mean of |r_t|/(close_t·volume_t) over the bars of the last ``n``
    that traded (r = c/c₋₁ − 1); NaN when none did."""

    __slots__ = ("_cnt", "_pc", "_sum")

    def __init__(self, n: int) -> None:
        self._sum = _Lagged(n)
        self._cnt = _Lagged(n)
        self._pc = NAN

    def update(self, close: float, volume: float) -> float:
        pc = self._pc
        self._pc = close
        if pc != pc:
            return NAN
        traded = volume > 0.0
        term = _fabs(close / pc - 1.0) / (close * volume) if traded else 0.0
        s = self._sum.update(term)
        c = self._cnt.update(1.0 if traded else 0.0)
        if s != s:
            return NAN
        return s / c if c > 0.0 else NAN


class _Lagged:
    """Rolling sum of the last ``n`` values (NaN until ``n`` were seen)."""

    __slots__ = ("_lag", "_sum")

    def __init__(self, n: int) -> None:
        self._lag = _Lag(n)
        self._sum = 0.0

    def update(self, x: float) -> float:
        old = self._lag.update(x)
        self._sum += x
        if old != old:
            # still filling: report only once the window is complete
            return NAN if self._lag._count < self._lag._n else self._sum
        self._sum -= old
        return self._sum


class _KyleLambda:
    """Kyle's λ (Kyle 1985; estimation as in Hasbrouck 2009, §4): OLS slope of Δp_t on the
    signed volume q_t = s_t·v_t over ``n`` bars, s_t the tick-rule sign of Δp (the last non-zero
    sign when Δp = 0). NaN while the signed volume has no variance."""

    __slots__ = ("_mom", "_pc", "_sign")

    def __init__(self, n: int) -> None:
        self._mom = _RollingMoments(n)
        self._pc = NAN
        self._sign = 0.0

    def update(self, close: float, volume: float) -> float:
        pc = self._pc
        self._pc = close
        if pc != pc:
            return NAN
        dp = close - pc
        if dp > 0.0:
            self._sign = 1.0
        elif dp < 0.0:
            self._sign = -1.0
        if not self._mom.push(self._sign * volume, dp):
            return NAN
        v = self._mom.var_x()
        return self._mom.cov() / v if v > 0.0 else NAN


class _OFI:
    """Order-flow imbalance (Cont, Kukanov & Stoikov 2014, eq. 2) between consecutive bar-end
    quotes, summed over ``n`` bars: e = 1{b ≥ b₋₁}·qb − 1{b ≤ b₋₁}·qb₋₁ − 1{a ≤ a₋₁}·qa
    + 1{a ≥ a₋₁}·qa₋₁."""

    __slots__ = ("_prev", "_sum")

    def __init__(self, n: int) -> None:
        self._sum = _Lagged(n)
        self._prev: tuple[float, float, float, float] | None = None

    def update(self, bid: float, ask: float, bid_size: float, ask_size: float) -> float:
        prev = self._prev
        self._prev = (bid, ask, bid_size, ask_size)
        if prev is None:
            return NAN
        pb, pa, pqb, pqa = prev
        e = 0.0
        if bid >= pb:
            e += bid_size
        if bid <= pb:
            e -= pqb
        if ask <= pa:
            e -= ask_size
        if ask >= pa:
            e += pqa
        return self._sum.update(e)


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: default and inclusive range (TA-Lib's ``TA_OptInputParameterInfo``)."""

    name: str
    default: float
    low: float
    high: float
    integer: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "integer" if self.integer else "real",
            "default": self.default,
            "min": self.low,
            "max": self.high,
        }


@dataclass(frozen=True, slots=True)
class Shared:
    """A function that is some outputs (``picks``) of a kernel computing a family at once
    (``_DM``: PLUS_DI … ADXR; ``_Aroon``: AROON, AROONOSC). Built alone it is a ``_Pick`` of a
    fresh kernel; a ``FeatureStream`` builds one kernel per (kernel, parameters, inputs) and
    steps it once per bar for every function of the family it carries."""

    kernel: Callable[..., Kernel]
    width: int  # how many values the kernel returns
    picks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Fed:
    """A function computed from the outputs of a front kernel that several functions read
    (``_HighLow``: the rolling extremes of MIDPRICE, WILLR, STOCH, STOCHF). The front,
    ``front(params[period])``, reads the function's first ``reads`` inputs and returns ``width``
    values; ``reader(*params)`` reads those values followed by the function's other inputs.
    Built alone it is a ``_Fed`` pair; a ``FeatureStream`` steps one front per (front, period,
    inputs) and passes its values to every reader."""

    front: Callable[[int], Kernel]
    period: str
    reads: int
    width: int
    reader: Callable[..., Kernel]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A feature function: its inputs (bar fields), parameters, outputs and how to build it."""

    name: str
    group: str
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    factory: Callable[..., Kernel] | Shared | Fed
    lookback: Callable[..., int]
    talib: bool = True
    note: str = ""

    def build(self, params: Mapping[str, Any]) -> Kernel:
        """A fresh kernel for validated ``params`` (positional, in catalog order)."""
        args = [params[p.name] for p in self.params]
        factory = self.factory
        if isinstance(factory, Shared):
            return _Pick(factory.kernel(*args), factory.picks)
        if isinstance(factory, Fed):
            front = factory.front(params[factory.period])
            return _Fed(front, factory.reader(*args), factory.reads)
        return factory(*args)

    def as_dict(self) -> dict[str, Any]:
        defaults = {p.name: p.default for p in self.params}
        return {
            "name": self.name,
            "group": self.group,
            "inputs": list(self.inputs),
            "parameters": [p.as_dict() for p in self.params],
            "outputs": list(self.outputs),
            "lookback": self.lookback(**defaults),
            "talib": self.talib,
            "note": self.note,
        }


def _p(name: str, default: int, low: int = 2) -> Param:
    return Param(name, default, low, _MAX_PERIOD)


def _r(name: str, default: float, low: float = -_BIG, high: float = _BIG) -> Param:
    return Param(name, default, low, high, integer=False)


def _mt(name: str, default: int = 0) -> Param:
    return Param(name, default, 0, 8)


_C = ("close",)
_HL = ("high", "low")
_HLC = ("high", "low", "close")
_HLCV = ("high", "low", "close", "volume")
_OHLC = ("open", "high", "low", "close")
_R = ("real",)
_REAL = ("real",)


def _spec(
    name: str,
    group: str,
    inputs: tuple[str, ...],
    params: tuple[Param, ...],
    factory: Callable[..., Kernel] | Shared | Fed,
    lb: Callable[..., int],
    outputs: tuple[str, ...] = ("real",),
    *,
    talib: bool = True,
    note: str = "",
) -> FunctionSpec:
    return FunctionSpec(name, group, inputs, params, outputs, factory, lb, talib, note)


def _macdext_lb(
    fastperiod: int,
    fastmatype: int,
    slowperiod: int,
    slowmatype: int,
    signalperiod: int,
    signalmatype: int,
) -> int:
    largest = max(_ma_lookback(fastmatype, fastperiod), _ma_lookback(slowmatype, slowperiod))
    return largest + _ma_lookback(signalmatype, signalperiod)


def _stochf_lb(fastk_period: int, fastd_period: int, fastd_matype: int) -> int:
    return fastk_period - 1 + _ma_lookback(fastd_matype, fastd_period)


_SPECS: tuple[FunctionSpec, ...] = (
    # overlap studies
    _spec(
        "SMA",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 30),),
        _SMA,
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "EMA",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 30),),
        _EMA,
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "WMA",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 30),),
        _WMA,
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "DEMA",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 30),),
        _DEMA,
        lambda timeperiod: 2 * (timeperiod - 1),
    ),
    _spec(
        "TEMA",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 30),),
        _TEMA,
        lambda timeperiod: 3 * (timeperiod - 1),
    ),
    _spec(
        "TRIMA",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 30),),
        _trima,
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "KAMA", "Overlap Studies", _R, (_p("timeperiod", 30),), _KAMA, lambda timeperiod: timeperiod
    ),
    _spec(
        "T3",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 5), _r("vfactor", 0.7, 0.0, 1.0)),
        _T3,
        lambda timeperiod, vfactor: 6 * (timeperiod - 1),
    ),
    _spec(
        "MIDPOINT",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 14),),
        _MidPoint,
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "MIDPRICE",
        "Overlap Studies",
        _HL,
        (_p("timeperiod", 14),),
        Fed(_HighLow, "timeperiod", 2, 2, lambda timeperiod: _MidPrice()),
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "BBANDS",
        "Overlap Studies",
        _R,
        (_p("timeperiod", 20), _r("nbdevup", 2.0), _r("nbdevdn", 2.0), _mt("matype")),
        _BBands,
        lambda timeperiod, nbdevup, nbdevdn, matype: max(
            _ma_lookback(matype, timeperiod), timeperiod - 1
        ),
        ("upperband", "middleband", "lowerband"),
    ),
    _spec(
        "SAR",
        "Overlap Studies",
        _HL,
        (_r("acceleration", 0.02, 0.0), _r("maximum", 0.2, 0.0)),
        _SAR,
        lambda acceleration, maximum: 1,
    ),
    # momentum
    _spec(
        "RSI",
        "Momentum Indicators",
        _R,
        (_p("timeperiod", 14),),
        _RSI,
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "CMO",
        "Momentum Indicators",
        _R,
        (_p("timeperiod", 14),),
        lambda timeperiod: _RSI(timeperiod, cmo=True),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "MACD",
        "Momentum Indicators",
        _R,
        (_p("fastperiod", 12), _p("slowperiod", 26), _p("signalperiod", 9, 1)),
        _macd,
        lambda fastperiod, slowperiod, signalperiod: (
            max(fastperiod, slowperiod) - 1 + signalperiod - 1
        ),
        ("macd", "macdsignal", "macdhist"),
    ),
    _spec(
        "MACDEXT",
        "Momentum Indicators",
        _R,
        (
            _p("fastperiod", 12),
            _mt("fastmatype"),
            _p("slowperiod", 26),
            _mt("slowmatype"),
            _p("signalperiod", 9, 1),
            _mt("signalmatype"),
        ),
        _MACD,
        _macdext_lb,
        ("macd", "macdsignal", "macdhist"),
    ),
    _spec(
        "STOCH",
        "Momentum Indicators",
        _HLC,
        (
            _p("fastk_period", 5, 1),
            _p("slowk_period", 3, 1),
            _mt("slowk_matype"),
            _p("slowd_period", 3, 1),
            _mt("slowd_matype"),
        ),
        Fed(
            _HighLow,
            "fastk_period",
            2,
            2,
            lambda fastk_period, slowk_period, slowk_matype, slowd_period, slowd_matype: _Stoch(
                slowk_period, slowk_matype, slowd_period, slowd_matype
            ),
        ),
        lambda fastk_period, slowk_period, slowk_matype, slowd_period, slowd_matype: (
            fastk_period
            - 1
            + _ma_lookback(slowk_matype, slowk_period)
            + _ma_lookback(slowd_matype, slowd_period)
        ),
        ("slowk", "slowd"),
    ),
    _spec(
        "STOCHF",
        "Momentum Indicators",
        _HLC,
        (_p("fastk_period", 5, 1), _p("fastd_period", 3, 1), _mt("fastd_matype")),
        Fed(
            _HighLow,
            "fastk_period",
            2,
            2,
            lambda fastk_period, fastd_period, fastd_matype: _StochF(fastd_period, fastd_matype),
        ),
        _stochf_lb,
        ("fastk", "fastd"),
    ),
    _spec(
        "STOCHRSI",
        "Momentum Indicators",
        _R,
        (
            _p("timeperiod", 14),
            _p("fastk_period", 5, 1),
            _p("fastd_period", 3, 1),
            _mt("fastd_matype"),
        ),
        _StochRSI,
        lambda timeperiod, fastk_period, fastd_period, fastd_matype: (
            timeperiod + _stochf_lb(fastk_period, fastd_period, fastd_matype)
        ),
        ("fastk", "fastd"),
    ),
    _spec(
        "ADX",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        Shared(_DM, 5, (3,)),
        lambda timeperiod: 2 * timeperiod - 1,
    ),
    _spec(
        "ADXR",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        Shared(_DM, 5, (4,)),
        lambda timeperiod: 3 * timeperiod - 2,
    ),
    _spec(
        "DX",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        Shared(_DM, 5, (2,)),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "PLUS_DI",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        Shared(_DM, 5, (0,)),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "MINUS_DI",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        Shared(_DM, 5, (1,)),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "CCI",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        _CCI,
        lambda timeperiod: timeperiod - 1,
        note="mean absolute deviation rescans the window: O(n) per bar (TA-Lib's definition)",
    ),
    _spec(
        "MFI",
        "Momentum Indicators",
        _HLCV,
        (_p("timeperiod", 14),),
        _MFI,
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "WILLR",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod", 14),),
        Fed(_HighLow, "timeperiod", 2, 2, lambda timeperiod: _WillR()),
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "MOM",
        "Momentum Indicators",
        _R,
        (_p("timeperiod", 10, 1),),
        lambda timeperiod: _Mom(timeperiod, "MOM"),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "ROC",
        "Momentum Indicators",
        _R,
        (_p("timeperiod", 10, 1),),
        lambda timeperiod: _Mom(timeperiod, "ROC"),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "ROCP",
        "Momentum Indicators",
        _R,
        (_p("timeperiod", 10, 1),),
        lambda timeperiod: _Mom(timeperiod, "ROCP"),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "TRIX",
        "Momentum Indicators",
        _R,
        (_p("timeperiod", 30, 1),),
        _TRIX,
        lambda timeperiod: 3 * (timeperiod - 1) + 1,
    ),
    _spec(
        "ULTOSC",
        "Momentum Indicators",
        _HLC,
        (_p("timeperiod1", 7, 1), _p("timeperiod2", 14, 1), _p("timeperiod3", 28, 1)),
        _UltOsc,
        lambda timeperiod1, timeperiod2, timeperiod3: max(timeperiod1, timeperiod2, timeperiod3),
    ),
    _spec(
        "AROON",
        "Momentum Indicators",
        _HL,
        (_p("timeperiod", 14),),
        Shared(_Aroon, 3, (0, 1)),
        lambda timeperiod: timeperiod,
        ("aroondown", "aroonup"),
    ),
    _spec(
        "AROONOSC",
        "Momentum Indicators",
        _HL,
        (_p("timeperiod", 14),),
        Shared(_Aroon, 3, (2,)),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "APO",
        "Momentum Indicators",
        _R,
        (_p("fastperiod", 12), _p("slowperiod", 26), _mt("matype", 1)),
        lambda fastperiod, slowperiod, matype: _PO(fastperiod, slowperiod, matype, pct=False),
        lambda fastperiod, slowperiod, matype: _ma_lookback(matype, max(fastperiod, slowperiod)),
    ),
    _spec(
        "PPO",
        "Momentum Indicators",
        _R,
        (_p("fastperiod", 12), _p("slowperiod", 26), _mt("matype", 1)),
        lambda fastperiod, slowperiod, matype: _PO(fastperiod, slowperiod, matype, pct=True),
        lambda fastperiod, slowperiod, matype: _ma_lookback(matype, max(fastperiod, slowperiod)),
    ),
    _spec("BOP", "Momentum Indicators", _OHLC, (), _BOP, lambda: 0),
    # volatility
    _spec(
        "ATR",
        "Volatility Indicators",
        _HLC,
        (_p("timeperiod", 14, 1),),
        lambda timeperiod: _ATR(timeperiod, natr=False),
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "NATR",
        "Volatility Indicators",
        _HLC,
        (_p("timeperiod", 14, 1),),
        lambda timeperiod: _ATR(timeperiod, natr=True),
        lambda timeperiod: timeperiod,
    ),
    _spec("TRANGE", "Volatility Indicators", _HLC, (), _TRange, lambda: 1),
    # volume
    _spec("OBV", "Volume Indicators", ("real", "volume"), (), _OBV, lambda: 0),
    _spec("AD", "Volume Indicators", _HLCV, (), _AD, lambda: 0),
    _spec(
        "ADOSC",
        "Volume Indicators",
        _HLCV,
        (_p("fastperiod", 3), _p("slowperiod", 10)),
        _ADOSC,
        lambda fastperiod, slowperiod: max(fastperiod, slowperiod) - 1,
    ),
    # statistics
    _spec(
        "STDDEV",
        "Statistic Functions",
        _R,
        (_p("timeperiod", 5), _r("nbdev", 1.0)),
        _StdDev,
        lambda timeperiod, nbdev: timeperiod - 1,
    ),
    _spec(
        "VAR",
        "Statistic Functions",
        _R,
        (_p("timeperiod", 5, 1), _r("nbdev", 1.0)),
        lambda timeperiod, nbdev: _Var(timeperiod),
        lambda timeperiod, nbdev: timeperiod - 1,
    ),
    _spec(
        "LINEARREG",
        "Statistic Functions",
        _R,
        (_p("timeperiod", 14),),
        lambda timeperiod: _LinReg(timeperiod, slope=False),
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "LINEARREG_SLOPE",
        "Statistic Functions",
        _R,
        (_p("timeperiod", 14),),
        lambda timeperiod: _LinReg(timeperiod, slope=True),
        lambda timeperiod: timeperiod - 1,
    ),
    _spec(
        "BETA",
        "Statistic Functions",
        ("real0", "real1"),
        (_p("timeperiod", 5, 1),),
        _Beta,
        lambda timeperiod: timeperiod,
    ),
    _spec(
        "CORREL",
        "Statistic Functions",
        ("real0", "real1"),
        (_p("timeperiod", 30, 1),),
        _Correl,
        lambda timeperiod: timeperiod - 1,
    ),
    # beyond TA-Lib
    _spec(
        "VWAP",
        "Microstructure",
        (*_HLCV, "session_start"),
        (),
        _VWAP,
        lambda: 0,
        talib=False,
        note="session-anchored: resets where session_start is non-zero; NaN before any volume",
    ),
    _spec(
        "REALIZED_VOL",
        "Volatility Estimators",
        _OHLC,
        (_p("timeperiod", 20, 1),),
        lambda timeperiod: _RangeVol(timeperiod, "realized"),
        lambda timeperiod: timeperiod,
        talib=False,
        note="per-bar σ: sqrt(mean ln(c/c₋₁)²)",
    ),
    _spec(
        "PARKINSON",
        "Volatility Estimators",
        _OHLC,
        (_p("timeperiod", 20, 1),),
        lambda timeperiod: _RangeVol(timeperiod, "parkinson"),
        lambda timeperiod: timeperiod - 1,
        talib=False,
        note="per-bar σ, Parkinson (1980)",
    ),
    _spec(
        "GARMAN_KLASS",
        "Volatility Estimators",
        _OHLC,
        (_p("timeperiod", 20, 1),),
        lambda timeperiod: _RangeVol(timeperiod, "garman_klass"),
        lambda timeperiod: timeperiod - 1,
        talib=False,
        note="per-bar σ, Garman & Klass (1980)",
    ),
    _spec(
        "ROGERS_SATCHELL",
        "Volatility Estimators",
        _OHLC,
        (_p("timeperiod", 20, 1),),
        lambda timeperiod: _RangeVol(timeperiod, "rogers_satchell"),
        lambda timeperiod: timeperiod - 1,
        talib=False,
        note="per-bar σ, Rogers & Satchell (1991)",
    ),
    _spec(
        "YANG_ZHANG",
        "Volatility Estimators",
        _OHLC,
        (_p("timeperiod", 20),),
        _YangZhang,
        lambda timeperiod: timeperiod,
        talib=False,
        note="per-bar σ, Yang & Zhang (2000)",
    ),
    _spec(
        "ROLL_SPREAD",
        "Microstructure",
        _C,
        (_p("timeperiod", 20),),
        _Roll,
        lambda timeperiod: timeperiod + 1,
        talib=False,
        note="Roll (1984), price units",
    ),
    _spec(
        "CORWIN_SCHULTZ",
        "Microstructure",
        _HL,
        (_p("timeperiod", 20, 1),),
        _CorwinSchultz,
        lambda timeperiod: timeperiod,
        talib=False,
        note="Corwin & Schultz (2012), relative spread; no overnight adjustment",
    ),
    _spec(
        "AMIHUD",
        "Microstructure",
        ("close", "volume"),
        (_p("timeperiod", 20, 1),),
        _Amihud,
        lambda timeperiod: timeperiod,
        talib=False,
        note="Amihud (2002), |r| per dollar of volume",
    ),
    _spec(
        "KYLE_LAMBDA",
        "Microstructure",
        ("close", "volume"),
        (_p("timeperiod", 20),),
        _KyleLambda,
        lambda timeperiod: timeperiod,
        talib=False,
        note="OLS slope of Δp on tick-rule-signed volume",
    ),
    _spec(
        "OFI",
        "Microstructure",
        ("bid", "ask", "bid_size", "ask_size"),
        (_p("timeperiod", 1, 1),),
        _OFI,
        lambda timeperiod: timeperiod,
        talib=False,
        note="Cont, Kukanov & Stoikov (2014) between bar-end quotes, summed over timeperiod bars",
    ),
)

#: name → spec, for ``GET /features/catalog`` and validation.
CATALOG: dict[str, FunctionSpec] = {s.name: s for s in _SPECS}


def catalog() -> list[dict[str, Any]]:
    """Every function with inputs, parameters (default, range), outputs and default lookback."""
    return [s.as_dict() for s in _SPECS]


# --------------------------------------------------------------------------- validation


def _spec_of(name: str) -> FunctionSpec:
    spec = CATALOG.get(name.upper())
    if spec is None:
        raise FeatureInputError("function", f"unknown function {name!r}")
    return spec


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``params`` against the catalog: unknown names, wrong types and values outside the
    range raise ``FeatureInputError`` naming the parameter; missing ones take the default."""
    spec = _spec_of(name)
    known = {p.name for p in spec.params}
    for key in params:
        if key not in known:
            raise FeatureInputError(key, f"{spec.name} has no parameter {key!r}")
    out: dict[str, Any] = {}
    for p in spec.params:
        v = params.get(p.name, p.default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise FeatureInputError(p.name, f"must be a number, got {v!r}")
        if not math.isfinite(v):
            raise FeatureInputError(p.name, "must be finite")
        if p.integer:
            if float(v) != int(v):
                raise FeatureInputError(p.name, f"must be an integer, got {v!r}")
            v = int(v)
        else:
            v = float(v)
        if not p.low <= v <= p.high:
            raise FeatureInputError(p.name, f"{v} outside [{p.low}, {p.high}]")
        out[p.name] = v
    for key in (
        "matype",
        "fastmatype",
        "slowmatype",
        "signalmatype",
        "slowk_matype",
        "slowd_matype",
        "fastd_matype",
    ):
        if out.get(key) == 7:
            raise FeatureInputError(key, "MAMA (7) is not supported")
    return out


#: Inputs that are prices or sizes: must be ≥ 0. ``real``/``real0``/``real1`` may be negative.
_NON_NEGATIVE = frozenset(
    {"open", "high", "low", "close", "volume", "bid", "ask", "bid_size", "ask_size"}
)


def validate_inputs(name: str, inputs: Mapping[str, Any]) -> dict[str, Array]:
    """The function's input arrays as float64: present, 1-D, equal lengths, finite, and
    non-negative for prices and volumes; otherwise ``FeatureInputError`` naming the input."""
    spec = _spec_of(name)
    out: dict[str, Array] = {}
    length: int | None = None
    for key in spec.inputs:
        if key not in inputs:
            raise FeatureInputError(key, f"{spec.name} needs input {key!r}")
        try:
            arr = np.asarray(inputs[key], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FeatureInputError(key, "must be an array of numbers") from exc
        if arr.ndim != 1:
            raise FeatureInputError(key, "must be one-dimensional")
        if length is None:
            length = arr.shape[0]
        elif arr.shape[0] != length:
            raise FeatureInputError(key, f"length {arr.shape[0]} != {length} (misaligned)")
        if not np.isfinite(arr).all():
            raise FeatureInputError(key, "contains a non-finite value")
        if key in _NON_NEGATIVE and (arr < 0).any():
            raise FeatureInputError(key, "contains a negative value")
        out[key] = arr
    return out


def lookback(name: str, **params: Any) -> int:
    """Bars of warm-up before the first value (``TA_<NAME>_Lookback``)."""
    spec = _spec_of(name)
    return spec.lookback(**validate_params(spec.name, params))


# --------------------------------------------------------------------------- batch


def compute(name: str, inputs: Mapping[str, Any], **params: Any) -> tuple[Array, ...]:
    """Run ``name`` over input arrays: one float64 array per output, same length as the inputs,
    NaN for the first ``lookback`` bars — the streaming kernel stepped over the bars."""
    spec = _spec_of(name)
    resolved = validate_params(spec.name, params)
    arrays = validate_inputs(spec.name, inputs)
    return _run(spec, resolved, [arrays[k] for k in spec.inputs])


def _run(
    spec: FunctionSpec, params: Mapping[str, Any], columns: Sequence[Array]
) -> tuple[Array, ...]:
    n = columns[0].shape[0] if columns else 0
    nout = len(spec.outputs)
    update = spec.build(params).update
    rows = zip(*(c.tolist() for c in columns), strict=True)
    if nout == 1:
        return (np.fromiter((update(*row) for row in rows), dtype=np.float64, count=n),)
    values = np.array([update(*row) for row in rows], dtype=np.float64).reshape(n, nout)
    return tuple(np.ascontiguousarray(values[:, j]) for j in range(nout))


# --------------------------------------------------------------------------- streaming

#: Bar fields a ``FeatureStream.update`` receives, in order.
BAR_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "session_start",
)
#: TA-Lib's abstract-API defaults for the generic inputs (``talib.abstract``: real=close,
#: real0/real1=high/low).
_INPUT_FIELD = {"real": "close", "real0": "high", "real1": "low"}


@dataclass(frozen=True, slots=True)
class FeatureRequest:
    """One configured feature: function, parameters, and the key prefix of its outputs."""

    function: str
    params: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None

    def keys(self) -> tuple[str, ...]:
        spec = _spec_of(self.function)
        base = self.key or spec.name.lower()
        if len(spec.outputs) == 1:
            return (base,)
        return tuple(f"{base}.{o}" for o in spec.outputs)


#: The default streaming set: every TA-Lib function above at its defaults plus the bar-only
#: estimators (OFI needs quotes; add it when the bar source has them).
DEFAULT_FEATURES: tuple[FeatureRequest, ...] = tuple(
    FeatureRequest(s.name) for s in _SPECS if s.name != "OFI"
)


class FeatureStream:
    """One symbol's features, updated bar by bar in O(1) amortised per feature.

    ``update`` returns every configured value (``None`` during warm-up, and for a non-finite
    result). A bar with a non-finite or negative field raises ``FeatureInputError`` before any
    state changes, so the caller can count it and skip it.

    The per-bar step is one generated function (``_step_source``): it checks the bar fields the
    set reads, calls each kernel's bound ``update`` with its inputs as plain positional
    arguments and builds the result dict in one literal. Stepping a list of kernels in a loop
    (argument lists, per-feature ``len``/``zip``) cost as much as the kernels themselves.
    """

    def __init__(self, features: Sequence[FeatureRequest] = DEFAULT_FEATURES) -> None:
        calls: list[tuple[Callable[..., Any], tuple[str, ...], int]] = []
        shared: dict[tuple[Any, ...], int] = {}  # (kernel or front, its parameters, inputs) → call
        seen: set[str] = set()
        needs: set[int] = set()
        keys: list[str] = []
        values: list[tuple[int, int]] = []  # per key: (call, output of that call)
        for req in features:
            spec = _spec_of(req.function)
            params = validate_params(spec.name, req.params)
            names = req.keys()
            for k in names:
                if k in seen:
                    raise FeatureInputError("key", f"duplicate feature key {k!r}")
                seen.add(k)
                keys.append(k)
            idx = tuple(BAR_FIELDS.index(_INPUT_FIELD.get(i, i)) for i in spec.inputs)
            needs.update(idx)
            fields = tuple(f"f{i}" for i in idx)
            family = spec.factory
            args = tuple(params[p.name] for p in spec.params)
            if isinstance(family, Shared):
                key = (family.kernel, args, idx)
                if key not in shared:
                    shared[key] = len(calls)
                    calls.append((family.kernel(*args).update, fields, family.width))
                values.extend((shared[key], i) for i in family.picks)
                continue
            if isinstance(family, Fed):
                period = params[family.period]
                key = (family.front, period, idx[: family.reads])
                if key not in shared:
                    shared[key] = len(calls)
                    front = family.front(period).update
                    calls.append((front, fields[: family.reads], family.width))
                front_values = tuple(f"r{shared[key]}_{m}" for m in range(family.width))
                update = family.reader(*args).update
                fields = front_values + fields[family.reads :]
            else:
                update = spec.build(params).update
            values.extend((len(calls), i) for i in range(len(spec.outputs)))
            calls.append((update, fields, len(spec.outputs)))
        check = tuple(sorted(i for i in needs if BAR_FIELDS[i] != "session_start"))
        self.keys: tuple[str, ...] = tuple(keys)
        namespace: dict[str, Any] = {"_FeatureInputError": FeatureInputError, "_inf": math.inf}
        namespace.update({f"_u{j}": call[0] for j, call in enumerate(calls)})
        namespace.update({f"_k{j}": k for j, k in enumerate(keys)})
        exec(_step_source(calls, values, check), namespace)
        self._step: Callable[..., dict[str, float | None]] = namespace["_step"]

    def update(
        self,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        bid: float = NAN,
        ask: float = NAN,
        bid_size: float = NAN,
        ask_size: float = NAN,
        *,
        session_start: bool = False,
    ) -> dict[str, float | None]:
        return self._step(
            open,
            high,
            low,
            close,
            volume,
            bid,
            ask,
            bid_size,
            ask_size,
            1.0 if session_start else 0.0,
        )


def _step_source(
    calls: Sequence[tuple[Any, tuple[str, ...], int]],
    values: Sequence[tuple[int, int]],
    check: Sequence[int],
) -> str:
    """Python source of ``_step(f0, …, f9)`` for a feature set: each call (kernel ``_u<j>``, its
    arguments: bar fields ``f<i>`` or an earlier call's outputs ``r<j>_<m>``, its output count)
    once, in order, then the result dict of ``values`` (per key: which call, which of its
    outputs). Only generated identifiers and integers enter the text: kernels (``_u<j>``) and
    keys (``_k<j>``) are looked up by name in the namespace the source runs in, so a configured
    key can never become code."""
    args = ", ".join(f"f{i}" for i in range(len(BAR_FIELDS)))
    lines = [f"def _step({args}):"]
    for i in check:
        lines.append(f"    if not 0.0 <= f{i} < _inf:")
        lines.append(
            f"        raise _FeatureInputError({BAR_FIELDS[i]!r}, f'bad value {{f{i}!r}}')"
        )
    for j, (_, arguments, nout) in enumerate(calls):
        call = f"_u{j}({', '.join(arguments)})"
        if nout == 1:
            lines.append(f"    r{j}_0 = {call}")
        else:
            lines.append(f"    {', '.join(f'r{j}_{m}' for m in range(nout))} = {call}")
    body = ", ".join(
        f"_k{k}: (r{j}_{m} if r{j}_{m} == r{j}_{m} else None)" for k, (j, m) in enumerate(values)
    )
    lines.append(f"    return {{{body}}}")
    return "\n".join(lines) + "\n"

"""VPIN: volume-synchronized probability of informed trading, realtime and batch, same numbers.

Easley, López de Prado & O'Hara (2012), "Flow Toxicity and Liquidity in a High-frequency
World", RFS 25(5), §2 and appendix A.1:

1. time bars (default 1 minute); ``ΔP_i = close_i − close_{i−1}``;
2. bulk volume classification (BVC): ``V_B = V_i · Φ(ΔP_i / σ_ΔP)``, ``V_S = V_i − V_B``;
3. volume buckets of ``V`` shares each (``V = ADV / 50``); a bar that crosses a bucket boundary
   is split pro rata, each piece keeping the bar's buy fraction;
4. ``OI_τ = |V_S,τ − V_B,τ|`` per bucket;
5. ``VPIN_τ = Σ_{j=τ−n+1..τ} OI_j / (n·V)`` (n = 50). With bucket sizes that change (trailing ADV)
   this is ``Σ OI_j / Σ V_j`` over the window, which equals the paper's formula for a fixed ``V``.

Realtime uses only the past. The paper standardizes ΔP by the sample σ of the whole history
(ex post); here σ is an EWMA that only knows bars before the one it classifies:
``var_i = λ·var_{i−1} + (1−λ)·ΔP_{i−1}²`` (RiskMetrics recursion), seeded with ``sigma_seed²``.
Batch mode (``compute_vpin``) runs the same recursions over stored history and returns the same
numbers as ``VpinCalculator`` fed the same trades one by one.

Rules for bad or awkward input (every case is counted in ``InputCounts``, nothing becomes NaN):

* size ≤ 0 or not finite: trade rejected (``bad_size``);
* price ≤ 0 or not finite: trade rejected (``bad_price``);
* a trade whose bar is earlier than the bar already open (late, out of order): rejected
  (``late``); a trade out of order *within* the open bar is accepted (bar volume does not depend
  on order; the close is the last trade to arrive);
* bars without trades do not exist (no volume to classify; σ is not updated by them);
* the very first bar has no previous close: ``ΔP = close − open`` of that bar;
* σ = 0 (before any price change, or seed 0): Φ(ΔP/σ) is taken at its limit, 1 for ΔP > 0,
  0 for ΔP < 0, ½ for ΔP = 0 (``zero_sigma_bars``);
* fewer than ``n`` buckets so far (window longer than history): VPIN over the buckets there are,
  ``window < n`` in the result, and no alert is raised until the window is full;
* CDF of fewer than 2 values, or of values with zero spread: the log-normal CDF degenerates to
  a step at the mean (0 below, 1 at or above).

CDF and alerts (Easley, López de Prado & O'Hara 2011, "The Microstructure of the Flash Crash",
J. Portfolio Management 37(2), §4: VPIN's CDF under a log-normal fit): ``cdf_empirical`` is the
share of the last ``cdf_window`` VPIN values (current included) at or below the current one;
``cdf_lognormal`` is Φ((ln VPIN − μ)/s) with μ, s the mean and standard deviation of ln VPIN over
the same window (VPIN = 0 gives 0). The alert is on while the chosen CDF is ≥ the threshold;
each switch from off to on starts a new event.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.scipy.stats import norm as jax_norm

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

NS_PER_DAY = 86_400 * 1_000_000_000
#: Padded lengths the batch classifier is compiled for (powers of two from 2^10).
MIN_PADDED_BARS = 1 << 10
#: Most symbols one vmapped batch call takes (more are split into calls of this many).
MAX_PADDED_SYMBOLS = 64


class CdfKind(StrEnum):
    EMPIRICAL = "empirical"
    LOGNORMAL = "lognormal"


@dataclass(frozen=True, slots=True, kw_only=True)
class VpinParams:
    """Everything a VPIN value depends on besides the trades (the 'parameters in force').

    ``bucket_volume`` is V; ``adv_days`` > 0 replaces it from the second session day on by the
    trailing average daily volume of the previous ``adv_days`` days / ``buckets_per_day``
    (ex ante: day d only uses days before d; ``bucket_volume`` stays the first day's size).
    ``day_offset_ns`` shifts UTC midnight to the session boundary used to cut days.
    """

    bar_ns: int = 60 * 1_000_000_000
    bucket_volume: float = 2_514_583.0
    window: int = 50
    sigma_decay: float = 0.94
    sigma_seed: float = 0.0
    adv_days: int = 0
    buckets_per_day: int = 50
    day_offset_ns: int = 0
    cdf_window: int = 1_000
    cdf_kind: CdfKind = CdfKind.LOGNORMAL
    alert_threshold: float = 0.9

    def __post_init__(self) -> None:
        if self.bar_ns <= 0:
            raise ValueError(f"bar_ns must be > 0, got {self.bar_ns}")
        if not (math.isfinite(self.bucket_volume) and self.bucket_volume > 0):
            raise ValueError(f"bucket_volume must be finite and > 0, got {self.bucket_volume}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0.0 <= self.sigma_decay < 1.0:
            raise ValueError(f"sigma_decay must be in [0, 1), got {self.sigma_decay}")
        if not (math.isfinite(self.sigma_seed) and self.sigma_seed >= 0):
            raise ValueError(f"sigma_seed must be finite and >= 0, got {self.sigma_seed}")
        if self.adv_days < 0 or self.buckets_per_day < 1:
            raise ValueError("adv_days must be >= 0 and buckets_per_day >= 1")
        if self.cdf_window < 1:
            raise ValueError(f"cdf_window must be >= 1, got {self.cdf_window}")
        if not 0.0 < self.alert_threshold <= 1.0:
            raise ValueError(f"alert_threshold must be in (0, 1], got {self.alert_threshold}")

    def to_payload(self) -> dict[str, Any]:
        return {
            "bar_ns": self.bar_ns,
            "bucket_volume": self.bucket_volume,
            "window": self.window,
            "sigma_decay": self.sigma_decay,
            "sigma_seed": self.sigma_seed,
            "adv_days": self.adv_days,
            "buckets_per_day": self.buckets_per_day,
            "cdf_window": self.cdf_window,
            "cdf_kind": self.cdf_kind.value,
            "alert_threshold": self.alert_threshold,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], base: VpinParams | None = None) -> VpinParams:
        """``base`` with the fields ``payload`` names replaced (``ValueError`` on bad ones)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        values = dict(payload)
        if "cdf_kind" in values:
            values["cdf_kind"] = CdfKind(values["cdf_kind"])
        for name in ("bar_ns", "window", "adv_days", "buckets_per_day", "day_offset_ns"):
            if name in values and (
                isinstance(values[name], bool) or not isinstance(values[name], int)
            ):
                raise ValueError(f"{name} must be an integer")
        for name in ("bucket_volume", "sigma_decay", "sigma_seed", "alert_threshold"):
            if name in values and (
                isinstance(values[name], bool) or not isinstance(values[name], int | float)
            ):
                raise ValueError(f"{name} must be a number")
        return replace(base or cls(), **values)


@dataclass(slots=True)
class InputCounts:
    """Trades seen and what became of them (the documented bad-input rules)."""

    accepted: int = 0
    bad_size: int = 0
    bad_price: int = 0
    late: int = 0
    zero_sigma_bars: int = 0
    discarded_volume: float = 0.0

    def to_payload(self) -> dict[str, float]:
        return {
            "accepted": self.accepted,
            "bad_size": self.bad_size,
            "bad_price": self.bad_price,
            "late": self.late,
            "zero_sigma_bars": self.zero_sigma_bars,
            "discarded_volume": self.discarded_volume,
        }


#: The reasons ``InputCounts`` refuses a trade for (a documented bad-input rule each).
REJECTION_REASONS = ("bad_size", "bad_price", "late")


def rejections(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The trades refused between two ``InputCounts.to_payload()`` readings, by reason."""
    return {r: after[r] - before[r] for r in REJECTION_REASONS if after[r] != before[r]}


@dataclass(frozen=True, slots=True)
class VpinBucket:
    """One completed volume bucket and the VPIN known at its end."""

    bucket: int
    start_ns: int
    end_ns: int
    volume: float
    buy: float
    sell: float
    oi: float
    vpin: float
    window: int
    cdf_empirical: float
    cdf_lognormal: float
    alert: bool
    events: int
    sigma: float

    def to_payload(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "volume": self.volume,
            "buy": self.buy,
            "sell": self.sell,
            "oi": self.oi,
            "vpin": self.vpin,
            "window": self.window,
            "cdf_empirical": self.cdf_empirical,
            "cdf_lognormal": self.cdf_lognormal,
            "alert": self.alert,
            "events": self.events,
            "sigma": self.sigma,
        }


# ── scalar formulas shared by both modes ─────────────────────────────────────────────────────


def normal_cdf(x: float) -> float:
    """Φ(x) = ½·erfc(−x/√2) (accurate in both tails)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def bvc_buy_fraction(dp: float, sigma: float) -> float:
    """Φ(ΔP/σ) (ELO 2012 eq. 2), with the σ = 0 limit: 1, 0 or ½ by the sign of ΔP."""
    if sigma > 0.0 and math.isfinite(sigma):
        return normal_cdf(dp / sigma)
    return 1.0 if dp > 0 else 0.0 if dp < 0 else 0.5


def ewma_next_variance(variance: float, dp: float, decay: float) -> float:
    """RiskMetrics EWMA: ``λ·var + (1−λ)·ΔP²`` (zero-mean price changes)."""
    return decay * variance + (1.0 - decay) * dp * dp


def lognormal_cdf(value: float, logs: F64) -> float:
    """Φ((ln x − μ)/s) with μ, s of ``logs`` (ELO 2011 §4); degenerate cases per module doc."""
    if value <= 0.0:
        return 0.0
    mean = float(np.mean(logs)) if len(logs) else math.log(value)
    spread = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
    x = math.log(value)
    if spread > 0.0:
        return normal_cdf((x - mean) / spread)
    return 1.0 if x >= mean else 0.0


class CdfTracker:
    """Trailing CDF of VPIN, alert state and event count (one instance per series).

    O(log W) per value: a sorted copy of the window for the empirical rank, running sums of
    ln VPIN and its square for the log-normal fit (μ, s with ddof = 1).
    """

    __slots__ = (
        "_kind",
        "_log_sq_sum",
        "_log_sum",
        "_logs",
        "_sorted",
        "_threshold",
        "_values",
        "_width",
        "_window",
        "alert",
        "events",
    )

    def __init__(self, params: VpinParams) -> None:
        self._values: deque[float] = deque()
        self._sorted: list[float] = []
        self._logs = 0
        self._log_sum = 0.0
        self._log_sq_sum = 0.0
        self._width = params.cdf_window
        self._threshold = params.alert_threshold
        self._kind = params.cdf_kind
        self._window = params.window
        self.alert = False
        self.events = 0

    def add(self, vpin: float, window: int) -> tuple[float, float, bool, int]:
        self._push(vpin)
        if len(self._values) > self._width:
            self._pop(self._values.popleft())
        empirical = bisect.bisect_right(self._sorted, vpin) / len(self._sorted)
        lognormal = self._lognormal(vpin)
        chosen = empirical if self._kind is CdfKind.EMPIRICAL else lognormal
        alert = window >= self._window and chosen >= self._threshold
        if alert and not self.alert:
            self.events += 1
        self.alert = alert
        return empirical, lognormal, alert, self.events

    def _push(self, vpin: float) -> None:
        self._values.append(vpin)
        bisect.insort(self._sorted, vpin)
        if vpin > 0.0:
            x = math.log(vpin)
            self._logs += 1
            self._log_sum += x
            self._log_sq_sum += x * x

    def _pop(self, vpin: float) -> None:
        del self._sorted[bisect.bisect_left(self._sorted, vpin)]
        if vpin > 0.0:
            x = math.log(vpin)
            self._logs -= 1
            self._log_sum -= x
            self._log_sq_sum -= x * x

    def _lognormal(self, vpin: float) -> float:
        """``lognormal_cdf`` from the running sums (same degenerate rules)."""
        if vpin <= 0.0:
            return 0.0
        x = math.log(vpin)
        m = self._logs
        mean = self._log_sum / m
        variance = (self._log_sq_sum - m * mean * mean) / (m - 1) if m > 1 else 0.0
        spread = math.sqrt(variance) if variance > 1e-24 else 0.0
        if spread > 0.0:
            return normal_cdf((x - mean) / spread)
        return 1.0 if x >= mean else 0.0


# ── realtime stepping shared by VPIN and Enhanced VPIN ───────────────────────────────────────
#
# Both realtime calculators (this module's ``VpinCalculator`` and ``engines.evpin.core``'s
# ``EnhancedVpinCalculator``) hold a ``BarStepper`` (trades → closed time bars with ΔP and the
# ex-ante σ) and a ``VolumeBucketer`` (classified bars → volume buckets, split pro rata). What
# they do with a closed bar in between (how it is classified) and with a completed bucket
# (which statistics) is theirs.

#: A bar's buy volume: one number (VPIN) or one per classifier (Enhanced VPIN); the bucketer's
#: arithmetic is elementwise, so each entry of a vector gets the same floats as a scalar would.
BuyT = TypeVar("BuyT", float, F64)


@dataclass(frozen=True, slots=True)
class ClosedBar:
    """A time bar as the realtime path closes it (``BarStepper``).

    ``dp`` is ΔP (close − previous close; the first bar: close − open) and ``sigma`` the
    ex-ante EWMA σ in force for it (it knows the bars before this one only; module doc).
    ``new_day`` is set on the first bar of a later session day than the previous bar's.
    """

    start_ns: int
    end_ns: int
    day: int
    volume: float
    dp: float
    sigma: float
    new_day: bool


class BarStepper:
    """Trades of one symbol → time bars, each closed with its ΔP and ex-ante σ.

    Applies the module's bad-input rules, counting them in ``counts`` (the holder's object). A
    bar closes on the first trade of a later bar or at ``flush``, so a bar's numbers depend
    only on trades before its end. σ is the RiskMetrics recursion (``ewma_next_variance``),
    advanced with a bar's ΔP after that bar is closed (ELO 2012 §2 with an ex-ante σ).
    """

    __slots__ = (
        "_bar",
        "_close",
        "_day",
        "_open",
        "_prev_close",
        "_sigma",
        "_variance",
        "_volume",
        "counts",
        "params",
    )

    def __init__(self, params: VpinParams, counts: InputCounts) -> None:
        self.params = params
        self.counts = counts
        self._bar: int | None = None
        self._open = 0.0
        self._close = 0.0
        self._volume = 0.0
        self._prev_close: float | None = None
        self._variance = params.sigma_seed * params.sigma_seed
        self._sigma = params.sigma_seed
        self._day: int | None = None

    def add_trade(self, event_ns: int, price: float, size: float) -> tuple[bool, ClosedBar | None]:
        """``(accepted, the bar this trade closed)``; a refused trade closes nothing."""
        if not (math.isfinite(size) and size > 0.0):
            self.counts.bad_size += 1
            return False, None
        if not (math.isfinite(price) and price > 0.0):
            self.counts.bad_price += 1
            return False, None
        bar = event_ns // self.params.bar_ns
        closed: ClosedBar | None = None
        if self._bar is None or bar > self._bar:
            if self._bar is not None:
                closed = self._close_bar(self._bar)
            self._bar, self._open, self._volume = bar, price, 0.0
        elif bar < self._bar:
            self.counts.late += 1
            return False, None
        self.counts.accepted += 1
        self._close = price
        self._volume += size
        return True, closed

    def flush(self) -> ClosedBar | None:
        """Close the open bar now (end of a batch or of the session)."""
        if self._bar is None:
            return None
        closed = self._close_bar(self._bar)
        self._bar = None
        return closed

    def _close_bar(self, bar: int) -> ClosedBar:
        p = self.params
        reference = self._open if self._prev_close is None else self._prev_close
        dp = self._close - reference
        sigma = self._sigma
        if not sigma > 0.0:
            self.counts.zero_sigma_bars += 1
        start_ns = bar * p.bar_ns
        day = (start_ns + p.day_offset_ns) // NS_PER_DAY
        new_day = self._day is not None and day != self._day
        self._day = day
        self._variance = ewma_next_variance(self._variance, dp, p.sigma_decay)
        self._sigma = math.sqrt(self._variance)
        self._prev_close = self._close
        return ClosedBar(start_ns, start_ns + p.bar_ns, day, self._volume, dp, sigma, new_day)


@dataclass(frozen=True, slots=True)
class BucketPiece(Generic[BuyT]):
    """A completed bucket as the bucketer cuts it: time span, size and (unclipped) buy volume."""

    start_ns: int
    end_ns: int
    volume: float
    buy: BuyT


class VolumeBucketer(Generic[BuyT]):
    """Classified bars → volume buckets (ELO 2012 §2 step 3), a bar crossing a boundary split
    pro rata, each piece keeping the bar's buy fraction.

    The size of a bucket is the one in force on the day of the bar it opens in
    (``_TrailingAdv``: ``bucket_volume``, or the trailing ADV / ``buckets_per_day``). With
    ``restart_daily`` (Andersen & Bondarenko 2014) the partial bucket open at a day change is
    dropped and its volume counted in ``counts.discarded_volume``.

    Positions are cumulative volume ``C`` and cumulative buy volume ``B`` (running sums, so the
    batch path's ``np.cumsum`` gives the same floats); a boundary at position ``x`` inside a bar
    gets ``B(x)`` by linear interpolation in that bar (``_interpolate``). ``zero`` is the
    empty buy volume: ``0.0``, or a zero vector of the classifiers' length.
    """

    __slots__ = (
        "_adv",
        "_b",
        "_c",
        "_empty",
        "_end_c",
        "_restart_daily",
        "_size",
        "_start_b",
        "_start_c",
        "_start_ns",
        "counts",
    )

    def __init__(
        self, params: VpinParams, counts: InputCounts, zero: BuyT, *, restart_daily: bool
    ) -> None:
        self.counts = counts
        self._adv = _TrailingAdv(params)
        self._restart_daily = restart_daily
        self._size = params.bucket_volume
        self._c = 0.0
        self._b: BuyT = zero
        self._start_c = 0.0
        self._start_b: BuyT = zero
        self._end_c = params.bucket_volume
        self._start_ns = 0
        self._empty = True

    def add(self, bar: ClosedBar, buy: BuyT) -> list[BucketPiece[BuyT]]:
        """Add one bar with its buy volume; returns the buckets it completed."""
        size = self._adv.size_for(bar.day, bar.volume)
        if bar.new_day and self._restart_daily and not self._empty:
            self.counts.discarded_volume += self._c - self._start_c
            self._empty = True
        c0, b0 = self._c, self._b
        self._c = c1 = c0 + bar.volume
        self._b = b1 = b0 + buy
        if self._empty:
            self._open(c0, b0, bar.start_ns, size)
        done: list[BucketPiece[BuyT]] = []
        while c1 >= self._end_c:
            end_b = _interpolate(self._end_c, c0, c1, b0, b1)
            done.append(BucketPiece(self._start_ns, bar.end_ns, self._size, end_b - self._start_b))
            if c1 > self._end_c:
                self._open(self._end_c, end_b, bar.start_ns, size)
            else:
                self._empty = True
                break
        return done

    def _open(self, c: float, b: BuyT, start_ns: int, size: float) -> None:
        self._size = size
        self._start_c, self._start_b = c, b
        self._end_c = c + size
        self._start_ns = start_ns
        self._empty = False


def _interpolate(x: float, c0: float, c1: float, b0: BuyT, b1: BuyT) -> BuyT:
    """``B(x)`` for ``c0 <= x <= c1`` (pro rata split of a unit)."""
    if x >= c1:
        return b1
    return b0 + (x - c0) * ((b1 - b0) / (c1 - c0))


@dataclass(slots=True)
class _TrailingAdv:
    """Bucket size per session day: ``bucket_volume`` on the first day, then (if ``adv_days``)
    the mean volume of the previous ``adv_days`` complete days / ``buckets_per_day``."""

    params: VpinParams
    day: int | None = None
    day_volume: float = 0.0
    past: deque[float] = field(default_factory=deque)
    size: float = 0.0

    def size_for(self, day: int, volume: float) -> float:
        """The size in force on ``day``; ``volume`` is added to that day's total afterwards."""
        p = self.params
        if self.day is None:
            self.size = p.bucket_volume
        elif day != self.day:
            self.past.append(self.day_volume)
            while len(self.past) > p.adv_days:
                self.past.popleft()
            if p.adv_days and self.past:
                adv = math.fsum(self.past) / len(self.past)
                self.size = adv / p.buckets_per_day if adv > 0 else p.bucket_volume
            self.day_volume = 0.0
        self.day = day
        self.day_volume += volume
        return self.size


class _VpinWindow:
    """Σ OI / Σ V over the last ``n`` buckets, recomputed from the window (no drift)."""

    __slots__ = ("_oi", "_volume")

    def __init__(self, n: int) -> None:
        self._oi: deque[float] = deque(maxlen=n)
        self._volume: deque[float] = deque(maxlen=n)

    def add(self, oi: float, volume: float) -> tuple[float, int]:
        self._oi.append(oi)
        self._volume.append(volume)
        vpin = math.fsum(self._oi) / math.fsum(self._volume)
        return min(1.0, max(0.0, vpin)), len(self._oi)


# ── realtime ─────────────────────────────────────────────────────────────────────────────────


class VpinCalculator:
    """Realtime VPIN for one symbol: ``add_trade`` per trade, returns the buckets it completed.

    A bar is classified when the first trade of a later bar arrives (or at ``flush``), so a
    bucket published at time t depends only on trades before the end of its last bar. Bars come
    from a ``BarStepper``, buckets from a ``VolumeBucketer`` (no daily restart); what is VPIN's
    own is the classification (BVC, ``bvc_buy_fraction``) and the per-bucket statistics.
    """

    def __init__(self, params: VpinParams) -> None:
        self.params = params
        self.counts = InputCounts()
        self._bars = BarStepper(params, self.counts)
        self._buckets = VolumeBucketer(params, self.counts, 0.0, restart_daily=False)
        self._window = _VpinWindow(params.window)
        self._cdf = CdfTracker(params)
        self._next_bucket = 0
        self.last: VpinBucket | None = None

    def add_trade(self, event_ns: int, price: float, size: float) -> list[VpinBucket]:
        _, closed = self._bars.add_trade(event_ns, price, size)
        return [] if closed is None else self._classify(closed)

    def flush(self) -> list[VpinBucket]:
        """Classify the open bar now (end of a batch or of the session)."""
        closed = self._bars.flush()
        return [] if closed is None else self._classify(closed)

    def _classify(self, bar: ClosedBar) -> list[VpinBucket]:
        buy = bar.volume * bvc_buy_fraction(bar.dp, bar.sigma)
        return [self._bucket(piece, bar.sigma) for piece in self._buckets.add(bar, buy)]

    def _bucket(self, piece: BucketPiece[float], sigma: float) -> VpinBucket:
        volume = piece.volume
        buy = min(volume, max(0.0, piece.buy))
        sell = volume - buy
        oi = abs(sell - buy)
        vpin, window = self._window.add(oi, volume)
        empirical, lognormal, alert, events = self._cdf.add(vpin, window)
        bucket = VpinBucket(
            self._next_bucket,
            piece.start_ns,
            piece.end_ns,
            volume,
            buy,
            sell,
            oi,
            vpin,
            window,
            empirical,
            lognormal,
            alert,
            events,
            sigma,
        )
        self._next_bucket += 1
        self.last = bucket
        return bucket


# ── bucket size from a symbol's first bars (the default rule without reference data) ────────


def probed_bucket_volume(probe_volume: float, params: VpinParams, probe_bars: int) -> float:
    """ELO's V = ADV / ``buckets_per_day`` with the ADV estimated ex ante from a symbol's first
    ``probe_bars`` time bars: their volume per unit of time × one 24-hour day (a market that
    trades around the clock: crypto, the simulator; a symbol with a shorter session belongs in
    the reference data or the per-symbol table)."""
    span_ns = probe_bars * params.bar_ns
    return probe_volume * (NS_PER_DAY / span_ns) / params.buckets_per_day


class BucketVolumeProbe:
    """A symbol's first ``probe_bars`` time bars, watched trade by trade until they are over.

    The probe opens at the bar of the first trade the realtime rules could accept (size and
    price finite and > 0) and sums the sizes of such trades in bars ``[b0, b0 + probe_bars)``.
    ``add`` answers the bucket volume (``probed_bucket_volume``) at the first acceptable trade
    of a later bar, that trade not included; ``None`` before. ``probe_bucket_volume`` is the same
    over columns (batch).
    """

    __slots__ = ("_first_bar", "_params", "_probe_bars", "_volume")

    def __init__(self, params: VpinParams, probe_bars: int) -> None:
        if probe_bars < 1:
            raise ValueError(f"probe_bars must be >= 1, got {probe_bars}")
        self._params = params
        self._probe_bars = probe_bars
        self._first_bar: int | None = None
        self._volume = 0.0

    def add(self, event_ns: int, price: float, size: float) -> float | None:
        if not (math.isfinite(size) and size > 0.0 and math.isfinite(price) and price > 0.0):
            return None
        bar = event_ns // self._params.bar_ns
        if self._first_bar is None:
            self._first_bar = bar
        elif bar >= self._first_bar + self._probe_bars:
            return probed_bucket_volume(self._volume, self._params, self._probe_bars)
        if bar >= self._first_bar:
            self._volume += size
        return None


def probe_bucket_volume(
    event_ns: I64, price: F64, size: F64, params: VpinParams, probe_bars: int
) -> float | None:
    """``BucketVolumeProbe`` over trades in arrival order: the bucket volume, or ``None`` when the
    trades end before the probe is over (realtime would not have cut a bucket yet)."""
    probe = BucketVolumeProbe(params, probe_bars)
    for t, p, q in zip(
        np.asarray(event_ns).tolist(),
        np.asarray(price).tolist(),
        np.asarray(size).tolist(),
        strict=True,
    ):
        volume = probe.add(t, p, q)
        if volume is not None:
            return volume
    return None


# ── batch ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class TimeBars:
    """Time bars of the accepted trades: bar index (start = index·bar_ns), open, close, volume."""

    index: I64
    open: F64
    close: F64
    volume: F64


def accept_trades(
    event_ns: I64, price: F64, size: F64, bar_ns: int, counts: InputCounts
) -> npt.NDArray[np.bool_]:
    """The mask of trades the realtime rules accept (module doc), counting the rejected."""
    good_size = np.isfinite(size) & (size > 0)
    good_price = np.isfinite(price) & (price > 0)
    counts.bad_size += int(np.count_nonzero(~good_size))
    counts.bad_price += int(np.count_nonzero(good_size & ~good_price))
    keep = good_size & good_price
    bar = event_ns // bar_ns
    kept_bars = bar[keep]
    on_time = kept_bars >= np.maximum.accumulate(kept_bars) if len(kept_bars) else kept_bars > 0
    counts.late += int(np.count_nonzero(~on_time))
    positions = np.flatnonzero(keep)
    keep[positions[~on_time]] = False
    counts.accepted += int(np.count_nonzero(keep))
    return keep


def time_bars(event_ns: I64, price: F64, size: F64, bar_ns: int) -> TimeBars:
    """Bars of already accepted trades (bar index non-decreasing). Volumes are summed by
    ``np.add.reduceat``, whose order (first trade + pairwise sum of the rest) is not the
    realtime running sum's: equal for whole-share sizes, otherwise a few ulps apart."""
    bar = event_ns // bar_ns
    if len(bar) == 0:
        empty = np.empty(0)
        return TimeBars(np.empty(0, dtype=np.int64), empty, empty, empty)
    starts = np.flatnonzero(np.diff(bar, prepend=bar[0] - 1))
    ends = np.append(starts[1:], len(bar)) - 1
    volume = np.add.reduceat(size, starts)
    return TimeBars(bar[starts], price[starts], price[ends], volume)


def _classify_bars_kernel(
    dp: jax.Array, valid: jax.Array, seed_variance: jax.Array, decay: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Ex-ante EWMA σ per bar and the BVC buy fraction Φ(ΔP/σ) (σ = 0: sign limit)."""

    def step(variance: jax.Array, item: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        change, ok = item
        following = decay * variance + (1.0 - decay) * change * change
        return jnp.where(ok, following, variance), variance

    _, variance = jax.lax.scan(step, seed_variance, (dp, valid))
    sigma = jnp.sqrt(variance)
    safe = jnp.where(sigma > 0, sigma, 1.0)
    limit = jnp.where(dp > 0, 1.0, jnp.where(dp < 0, 0.0, 0.5))
    fraction = jnp.where(sigma > 0, jax_norm.cdf(dp / safe), limit)
    return sigma, fraction


#: One symbol's bars: ``(L,)`` arrays in, ``(L,)`` out.
_classify_bars_jax = jax.jit(_classify_bars_kernel)
#: Many symbols' bars at once: ``(S, L)`` arrays in (one row per symbol, same parameters for
#: all), ``(S, L)`` out; each row is the one-symbol scan, run side by side (``jax.vmap``).
_classify_many_jax = jax.jit(jax.vmap(_classify_bars_kernel, in_axes=(0, 0, None, None)))


def padded_length(n: int) -> int:
    """The fixed shape ``n`` bars are padded to: the next power of two ≥ ``MIN_PADDED_BARS``."""
    return max(MIN_PADDED_BARS, 1 << max(0, (n - 1).bit_length()))


def padded_symbols(n: int) -> int:
    """Rows ``n`` symbols are padded to in one vmapped call: the next power of two ≥ ``n``
    (1, 2, 4, ..., ``MAX_PADDED_SYMBOLS``); more symbols are split into calls of that many."""
    return 1 << max(0, (min(n, MAX_PADDED_SYMBOLS) - 1).bit_length())


def bar_price_changes(bars: TimeBars) -> F64:
    """ΔP per bar: close − previous close; the first bar has no previous close, so close − open
    (module doc)."""
    n = len(bars.close)
    dp = np.empty(n)
    if n:
        dp[0] = bars.close[0] - bars.open[0]
        dp[1:] = np.diff(bars.close)
    return dp


def classify_bars(bars: TimeBars, params: VpinParams) -> tuple[F64, F64, F64]:
    """``(ΔP, σ, Φ(ΔP/σ))`` per bar, ex ante, via the JAX scan on a padded shape."""
    dp = bar_price_changes(bars)
    n = len(dp)
    size = padded_length(n)
    dp_padded = np.zeros(size)
    dp_padded[:n] = dp
    valid = np.zeros(size, dtype=bool)
    valid[:n] = True
    sigma, fraction = _classify_bars_jax(
        jnp.asarray(dp_padded),
        jnp.asarray(valid),
        jnp.asarray(params.sigma_seed * params.sigma_seed),
        jnp.asarray(params.sigma_decay),
    )
    return dp, np.asarray(sigma)[:n].copy(), np.asarray(fraction)[:n].copy()


def classify_many(
    bars_by_symbol: Sequence[TimeBars], params: VpinParams
) -> list[tuple[F64, F64, F64]]:
    """``classify_bars`` for many symbols, in vmapped calls of at most ``MAX_PADDED_SYMBOLS``
    rows: each call pads every symbol's ΔP to the longest one's ``padded_length`` and the symbol
    count to ``padded_symbols`` (padding rows are all-invalid, empty symbols), so only the shapes
    ``warm_up`` compiled are met. Same elementwise operations as the one-symbol scan."""
    dps = [bar_price_changes(bars) for bars in bars_by_symbol]
    out: list[tuple[F64, F64, F64]] = []
    seed_variance = jnp.asarray(params.sigma_seed * params.sigma_seed)
    decay = jnp.asarray(params.sigma_decay)
    for first in range(0, len(dps), MAX_PADDED_SYMBOLS):
        chunk = dps[first : first + MAX_PADDED_SYMBOLS]
        rows = padded_symbols(len(chunk))
        length = padded_length(max(len(dp) for dp in chunk))
        dp_padded = np.zeros((rows, length))
        valid = np.zeros((rows, length), dtype=bool)
        for row, dp in enumerate(chunk):
            dp_padded[row, : len(dp)] = dp
            valid[row, : len(dp)] = True
        sigma, fraction = _classify_many_jax(
            jnp.asarray(dp_padded), jnp.asarray(valid), seed_variance, decay
        )
        sigma_np, fraction_np = np.asarray(sigma), np.asarray(fraction)
        for row, dp in enumerate(chunk):
            n = len(dp)
            out.append((dp, sigma_np[row, :n].copy(), fraction_np[row, :n].copy()))
    return out


def warm_up(
    max_bars: int = 1 << 14, max_symbols: int = 0, stop: Callable[[], bool] = lambda: False
) -> bool:
    """Compile the batch classifier for every padded shape up to ``max_bars`` (engine start),
    and, if ``max_symbols`` > 0, the vmapped one for every padded symbol count up to
    ``min(max_symbols, MAX_PADDED_SYMBOLS)`` × those bar shapes: log2(max_bars / 1024) + 1
    bar shapes × log2(symbols) + 1 symbol counts (5 × 7 = 35 compiles with the engine's
    defaults, 16 384 bars × 64 symbols). ``stop()`` is asked before each compile (an engine
    stopping mid-way); returns whether every shape was compiled."""
    size = MIN_PADDED_BARS
    while size <= max_bars:
        if stop():
            return False
        _classify_bars_jax(
            jnp.zeros(size), jnp.zeros(size, dtype=bool), jnp.asarray(0.0), jnp.asarray(0.9)
        )
        rows = 1
        while rows <= min(max_symbols, MAX_PADDED_SYMBOLS):
            if stop():
                return False
            _classify_many_jax(
                jnp.zeros((rows, size)),
                jnp.zeros((rows, size), dtype=bool),
                jnp.asarray(0.0),
                jnp.asarray(0.9),
            )
            rows *= 2
        size *= 2
    return True


@dataclass(frozen=True, slots=True)
class BucketSeries:
    """Completed buckets as columns (batch mode), plus the counts of the input rules."""

    start_ns: I64
    end_ns: I64
    volume: F64
    buy: F64
    sell: F64
    oi: F64
    vpin: F64
    window: I64
    cdf_empirical: F64
    cdf_lognormal: F64
    alert: npt.NDArray[np.bool_]
    events: I64
    sigma: F64
    counts: InputCounts

    def __len__(self) -> int:
        return len(self.vpin)

    def bucket(self, i: int) -> VpinBucket:
        return VpinBucket(
            i,
            int(self.start_ns[i]),
            int(self.end_ns[i]),
            float(self.volume[i]),
            float(self.buy[i]),
            float(self.sell[i]),
            float(self.oi[i]),
            float(self.vpin[i]),
            int(self.window[i]),
            float(self.cdf_empirical[i]),
            float(self.cdf_lognormal[i]),
            bool(self.alert[i]),
            int(self.events[i]),
            float(self.sigma[i]),
        )


def bucket_units(
    volume: F64,
    buy: F64,
    start_ns: I64,
    end_ns: I64,
    day: I64,
    sizes: F64,
    *,
    restart_daily: bool,
    counts: InputCounts,
) -> tuple[I64, F64, F64, I64, I64]:
    """Cut units (bars or trades) into volume buckets, vectorised per unit.

    ``sizes[i]`` is the bucket size in force if a bucket opens in unit ``i``. Returns per
    completed bucket: the unit it ends in, its size, its buy volume, start and end time.
    Positions and interpolation are the realtime ``VolumeBucketer``'s, float for float.
    """
    n = len(volume)
    cum_c = np.cumsum(volume)
    cum_b = np.cumsum(buy)
    prev_c = np.concatenate(([0.0], cum_c[:-1]))
    prev_b = np.concatenate(([0.0], cum_b[:-1]))
    new_day = np.ones(n, dtype=bool)
    new_day[1:] = day[1:] != day[:-1]
    day_starts = np.append(np.flatnonzero(new_day), n)
    next_day_of = day_starts[np.searchsorted(day_starts, np.arange(n), side="right")]
    ends: list[int] = []
    out_size: list[float] = []
    out_buy: list[float] = []
    out_start: list[int] = []
    empty = True
    start_c = start_b = end_c = 0.0
    size = 0.0
    start_unit = 0
    i = 0
    while i < n:
        if new_day[i] and restart_daily and i > 0 and not empty:
            counts.discarded_volume += prev_c[i] - start_c
            empty = True
        if empty:
            size = float(sizes[i])
            start_c, start_b, start_unit = prev_c[i], prev_b[i], i
            end_c = start_c + size
            empty = False
        # the unit where this bucket ends, or the next day's start, whichever first
        j = int(np.searchsorted(cum_c, end_c, side="left"))
        if restart_daily:
            next_day = int(next_day_of[i])
            if j >= next_day:
                i = next_day
                continue
        if j >= n:
            break
        c0, c1, b0, b1 = float(prev_c[j]), float(cum_c[j]), float(prev_b[j]), float(cum_b[j])
        end_b = _interpolate(end_c, c0, c1, b0, b1)
        ends.append(j)
        out_size.append(size)
        out_buy.append(end_b - start_b)
        out_start.append(int(start_ns[start_unit]))
        if c1 > end_c:
            size = float(sizes[j])
            start_c, start_b, start_unit = end_c, end_b, j
            end_c = start_c + size
            i = j
        else:
            empty = True
            i = j + 1
    end_units = np.asarray(ends, dtype=np.int64)
    return (
        end_units,
        np.asarray(out_size, dtype=np.float64),
        np.asarray(out_buy, dtype=np.float64),
        np.asarray(out_start, dtype=np.int64),
        end_ns[end_units] if len(end_units) else np.empty(0, dtype=np.int64),
    )


def trailing_adv_sizes(day: I64, volume: F64, params: VpinParams) -> F64:
    """Per unit, the bucket size in force on its day (``_TrailingAdv``'s rule, vectorised)."""
    adv = _TrailingAdv(params)
    sizes = np.empty(len(day))
    if len(day) == 0:
        return sizes
    starts = np.flatnonzero(np.diff(day, prepend=day[0] - 1))
    bounds = np.append(starts, len(day))
    for first, stop in itertools.pairwise(bounds):
        sizes[first:stop] = adv.size_for(int(day[first]), 0.0)
        adv.day_volume = float(np.cumsum(volume[first:stop])[-1])  # the realtime running sum
    return sizes


def finish_buckets(
    volume: F64, buy: F64, params: VpinParams
) -> tuple[F64, F64, F64, F64, I64, F64, F64, npt.NDArray[np.bool_], I64]:
    """From bucket sizes and buy volumes: sell, OI, VPIN, window, CDFs, alert, events."""
    buy = np.minimum(volume, np.maximum(0.0, buy))
    sell = volume - buy
    oi = np.abs(sell - buy)
    k = len(volume)
    vpin = np.empty(k)
    window = np.empty(k, dtype=np.int64)
    empirical = np.empty(k)
    lognormal = np.empty(k)
    alert = np.zeros(k, dtype=bool)
    events = np.zeros(k, dtype=np.int64)
    rolling = _VpinWindow(params.window)
    cdf = CdfTracker(params)
    for i in range(k):
        vpin[i], window[i] = rolling.add(float(oi[i]), float(volume[i]))
        empirical[i], lognormal[i], alert[i], events[i] = cdf.add(float(vpin[i]), int(window[i]))
    return buy, sell, oi, vpin, window, empirical, lognormal, alert, events


def bucket_series(
    start_ns: I64,
    end_ns: I64,
    volume: F64,
    buy: F64,
    sigma: F64,
    params: VpinParams,
    counts: InputCounts,
    *,
    restart_daily: bool = False,
) -> BucketSeries:
    """Buckets, VPIN, CDF and alerts from classified units (bars or trades): ``buy`` is each
    unit's buy volume, ``sigma`` the σ in force when it was classified (reported per bucket)."""
    day = (start_ns + params.day_offset_ns) // NS_PER_DAY
    sizes = trailing_adv_sizes(day, volume, params)
    end_units, size, bucket_buy, bucket_start, bucket_end = bucket_units(
        volume, buy, start_ns, end_ns, day, sizes, restart_daily=restart_daily, counts=counts
    )
    bucket_buy, sell, oi, vpin, window, empirical, lognormal, alert, events = finish_buckets(
        size, bucket_buy, params
    )
    return BucketSeries(
        bucket_start,
        bucket_end,
        size,
        bucket_buy,
        sell,
        oi,
        vpin,
        window,
        empirical,
        lognormal,
        alert,
        events,
        sigma[end_units] if len(end_units) else np.empty(0),
        counts,
    )


def accepted_bars(
    event_ns: I64, price: F64, size: F64, params: VpinParams
) -> tuple[TimeBars, InputCounts]:
    """Time bars of the trades the realtime rules accept, and the counts of those refused."""
    counts = InputCounts()
    event_ns = np.asarray(event_ns, dtype=np.int64)
    price = np.asarray(price, dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    keep = accept_trades(event_ns, price, size, params.bar_ns, counts)
    return time_bars(event_ns[keep], price[keep], size[keep], params.bar_ns), counts


def compute_vpin(event_ns: I64, price: F64, size: F64, params: VpinParams) -> BucketSeries:
    """Batch VPIN over trades in arrival order: the realtime numbers, all at once (with the
    last bar closed, as ``VpinCalculator.flush`` does)."""
    bars, counts = accepted_bars(event_ns, price, size, params)
    _, sigma, fraction = classify_bars(bars, params)
    return classified_series(bars, sigma, fraction, params, counts)


def compute_vpin_many(
    trades_by_symbol: Mapping[str, tuple[I64, F64, F64]], params: VpinParams
) -> dict[str, BucketSeries]:
    """``compute_vpin`` for every symbol, same numbers (bit for bit on CPU, the equality test),
    with the σ/BVC scan of all symbols in one vmapped call (``classify_many``; ≤ 64 symbols a
    call). Bars and buckets stay numpy per symbol (ragged; the bucket walk is sequential).

    On one CPU core the vmapped scan does the same elementwise work as the per-symbol calls
    (plus the padding to the longest symbol), so what it saves is the per-call dispatch and
    sync: ``loadtest/vpin_bench.py`` measures 50 symbols × 40 000 trades (390 bars each) at
    1.9× the loop for the whole batch, 3.3× for the scan alone; with thousands of bars per
    symbol the gain shrinks to nothing. Rows running in parallel (a GPU) is where vmap pays."""
    built = {
        symbol: accepted_bars(t, p, q, params) for symbol, (t, p, q) in trades_by_symbol.items()
    }
    classified = classify_many([bars for bars, _ in built.values()], params)
    return {
        symbol: classified_series(bars, sigma, fraction, params, counts)
        for (symbol, (bars, counts)), (_, sigma, fraction) in zip(
            built.items(), classified, strict=True
        )
    }


def classified_series(
    bars: TimeBars, sigma: F64, fraction: F64, params: VpinParams, counts: InputCounts
) -> BucketSeries:
    """Buckets and VPIN of bars already classified (σ and Φ(ΔP/σ) per bar)."""
    counts.zero_sigma_bars = int(np.count_nonzero(~(sigma > 0)))
    bar_start = bars.index * params.bar_ns
    return bucket_series(
        bar_start,
        bar_start + params.bar_ns,
        bars.volume,
        bars.volume * fraction,
        sigma,
        params,
        counts,
    )

"""Enhanced VPIN: the variants the literature argues about, computed side by side.

One set of volume buckets (1-minute bars cut pro rata, as in ``engines.vpin.core``), and for
each bucket the VPIN every classifier gives on it:

* ``bvc_normal``: V·Φ(ΔP/σ) (Easley, López de Prado & O'Hara 2012);
* ``bvc_t``: V·t_ν(ΔP/σ·√(ν/(ν−2))), a unit-variance Student-t; ν is configured or fitted each
  day on the previous day's standardized bar changes by the kurtosis moment,
  ν = 4 + 6/κ_excess (Easley, López de Prado & O'Hara 2016, "Discerning information from trade
  data", JFE 120(2), use a fitted t for BVC);
* ``tick``: the tick rule (Lee & Ready 1991 §II) per trade;
* ``quote``: Lee–Ready: above the prevailing midquote a buy, below a sell, at the mid the tick
  rule (Lee & Ready 1991 §III; prevailing = last quote received before the trade);
* ``aggressor``: the exchange's taker side where the feed reports it (Binance ``m``).

Trade-level classifiers give a bar's buy volume as Σ size over buys, + ½ size for a trade they
cannot sign (tick rule before the first price change). A classifier with no input (no quotes,
no aggressor flag) is reported as unavailable (``None``), never as a number.

Andersen & Bondarenko (2014, "VPIN and the Flash Crash", JFM 17) ask for bucket sizes known ex
ante and no mixing of days: here the size on day d is the mean volume of the previous
``adv_days`` days / ``buckets_per_day`` (the configured size on the first day), and buckets
restart each day: the partial bucket at a day change is discarded and its volume counted.

Also per bucket: signed VPIN Σ(V_B − V_S)/ΣV over the window (the direction VPIN's absolute
value hides), a confidence band VPIN ± z·s/√m where s is the sample standard deviation of
OI_j/V_j over the m buckets of the window (VPIN is their mean), clipped to [0, 1], and the
order-flow imbalance of Cont, Kukanov & Stoikov (2014, "The Price Impact of Order Book
Events", J. Financial Econometrics 12(1), eq. 10) summed over the quotes received since the
previous bucket completed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import stdtr

from engines.vpin.core import (
    BarStepper,
    BucketPiece,
    CdfTracker,
    ClosedBar,
    InputCounts,
    VolumeBucketer,
    VpinParams,
    bvc_buy_fraction,
    ewma_next_variance,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Classifier(StrEnum):
    BVC_NORMAL = "bvc_normal"
    BVC_T = "bvc_t"
    TICK = "tick"
    QUOTE = "quote"
    AGGRESSOR = "aggressor"


CLASSIFIERS = tuple(Classifier)
_INDEX = {c: i for i, c in enumerate(CLASSIFIERS)}

MIN_T_DF = 2.5
MAX_T_DF = 200.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EnhancedParams:
    """``base``: the VPIN parameters (bar, bucket size, window, σ EWMA, ADV, CDF, alert);
    ``t_df`` the Student-t ν (``fit_t_df``: refit daily, ``t_df`` until a day is seen);
    ``band_z`` the band's half-width in standard errors."""

    base: VpinParams = field(default_factory=lambda: VpinParams(adv_days=5))
    t_df: float = 4.0
    fit_t_df: bool = True
    band_z: float = 1.96

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t_df) and MIN_T_DF <= self.t_df <= MAX_T_DF):
            raise ValueError(f"t_df must be in [{MIN_T_DF}, {MAX_T_DF}], got {self.t_df}")
        if not (math.isfinite(self.band_z) and self.band_z >= 0):
            raise ValueError(f"band_z must be >= 0, got {self.band_z}")

    def to_payload(self) -> dict[str, Any]:
        return {
            **self.base.to_payload(),
            "t_df": self.t_df,
            "fit_t_df": self.fit_t_df,
            "band_z": self.band_z,
            "restart_daily": True,
        }


def student_t_buy_fraction(dp: float, sigma: float, df: float) -> float:
    """Unit-variance Student-t CDF at ΔP/σ; the σ = 0 limit as for the normal."""
    if sigma > 0.0 and math.isfinite(sigma):
        return float(stdtr(df, dp / sigma * math.sqrt(df / (df - 2.0))))
    return 1.0 if dp > 0 else 0.0 if dp < 0 else 0.5


def fit_t_df(standardized: F64, fallback: float) -> float:
    """ν from the excess kurtosis κ of ``standardized`` changes: ν = 4 + 6/κ (the t's fourth
    moment), clipped to [2.5, 200]; κ ≤ 0 (no fat tails) gives 200, under 8 values ``fallback``."""
    x = standardized[np.isfinite(standardized)]
    if len(x) < 8:
        return fallback
    centred = x - x.mean()
    variance = float(np.mean(centred**2))
    if variance <= 0:
        return fallback
    excess = float(np.mean(centred**4)) / variance**2 - 3.0
    if excess <= 0:
        return MAX_T_DF
    return min(MAX_T_DF, max(MIN_T_DF, 4.0 + 6.0 / excess))


def ofi_increment(
    bid: float,
    bid_size: float,
    ask: float,
    ask_size: float,
    prev_bid: float,
    prev_bid_size: float,
    prev_ask: float,
    prev_ask_size: float,
) -> float:
    """Cont, Kukanov & Stoikov (2014) eq. 10: e_n = 1{b≥b'}q_b − 1{b≤b'}q_b' − 1{a≤a'}q_a
    + 1{a≥a'}q_a' (primed: the previous quote)."""
    e = 0.0
    if bid >= prev_bid:
        e += bid_size
    if bid <= prev_bid:
        e -= prev_bid_size
    if ask <= prev_ask:
        e -= ask_size
    if ask >= prev_ask:
        e += prev_ask_size
    return e


def order_flow_imbalance(bid: F64, bid_size: F64, ask: F64, ask_size: F64) -> F64:
    """``ofi_increment`` for every quote after the first (vectorised; the first gives 0)."""
    e = np.zeros(len(bid))
    if len(bid) < 2:
        return e
    b, bq, a, aq = bid[1:], bid_size[1:], ask[1:], ask_size[1:]
    pb, pbq, pa, paq = bid[:-1], bid_size[:-1], ask[:-1], ask_size[:-1]
    e[1:] = (
        np.where(b >= pb, bq, 0.0)
        - np.where(b <= pb, pbq, 0.0)
        - np.where(a <= pa, aq, 0.0)
        + np.where(a >= pa, paq, 0.0)
    )
    return e


@dataclass(frozen=True, slots=True)
class EnhancedBucket:
    """One completed bucket with every classifier's numbers (``None``: classifier unavailable)."""

    bucket: int
    start_ns: int
    end_ns: int
    volume: float
    buy: dict[str, float | None]
    vpin: dict[str, float | None]
    signed_vpin: dict[str, float | None]
    window: int
    band_low: float
    band_high: float
    cdf_empirical: float
    cdf_lognormal: float
    alert: bool
    events: int
    ofi: float
    sigma: float
    t_df: float
    day: int

    def to_payload(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "volume": self.volume,
            "buy": self.buy,
            "vpin": self.vpin,
            "signed_vpin": self.signed_vpin,
            "window": self.window,
            "band": [self.band_low, self.band_high],
            "cdf_empirical": self.cdf_empirical,
            "cdf_lognormal": self.cdf_lognormal,
            "alert": self.alert,
            "events": self.events,
            "ofi": self.ofi,
            "sigma": self.sigma,
            "t_df": self.t_df,
            "day": self.day,
        }


class EnhancedVpinCalculator:
    """Realtime enhanced VPIN for one symbol: ``add_trade``/``add_quote``.

    Bars and buckets are VPIN's own machinery, held rather than inherited: a ``BarStepper``
    (the same input rules, bars closing on the first trade of a later bar or at ``flush``, the
    same ex-ante σ) and a ``VolumeBucketer`` that restarts daily and carries one buy volume per
    classifier. What is Enhanced VPIN's own: the trade-level classifiers (signed as trades
    arrive), the Student-t ν refit at each day change, and the per-bucket statistics.
    """

    def __init__(self, params: EnhancedParams) -> None:
        self.params = params
        base = params.base
        self.counts = InputCounts()
        self._bars = BarStepper(base, self.counts)
        self._buckets = VolumeBucketer(
            base, self.counts, np.zeros(len(CLASSIFIERS)), restart_daily=True
        )
        self._trade_buy = np.zeros(3)  # tick, quote, aggressor: the open bar's buy volume
        self._df = params.t_df
        self._day_changes: list[float] = []
        self._oi: deque[F64] = deque(maxlen=base.window)
        self._net: deque[F64] = deque(maxlen=base.window)
        self._volumes: deque[float] = deque(maxlen=base.window)
        self._cdf = CdfTracker(base)
        self._next_bucket = 0
        self._last_price: float | None = None
        self._tick_sign = 0
        self._quote: tuple[float, float, float, float] | None = None
        self._ofi = 0.0
        self.seen_quotes = False
        self.seen_aggressor = False
        self.last: EnhancedBucket | None = None

    def add_quote(self, bid: float, bid_size: float, ask: float, ask_size: float) -> None:
        """A new best bid/offer; crossed, non-positive or NaN quotes are ignored (counted as
        ``bad_price``)."""
        if not (bid > 0 and ask > 0 and ask >= bid and bid_size >= 0 and ask_size >= 0):
            self.counts.bad_price += 1
            return
        if self._quote is not None:
            self._ofi += ofi_increment(bid, bid_size, ask, ask_size, *self._quote)
        self._quote = (bid, bid_size, ask, ask_size)
        self.seen_quotes = True

    def add_trade(
        self, event_ns: int, price: float, size: float, aggressor: int = 0
    ) -> list[EnhancedBucket]:
        """``aggressor``: +1 buyer-initiated, −1 seller-initiated, 0 not reported."""
        accepted, closed = self._bars.add_trade(event_ns, price, size)
        if not accepted:
            return []
        done = [] if closed is None else self._classify(closed)
        if self._last_price is not None and price != self._last_price:
            self._tick_sign = 1 if price > self._last_price else -1
        self._last_price = price
        quote_sign = self._tick_sign
        if self._quote is not None:
            mid = 0.5 * (self._quote[0] + self._quote[2])
            quote_sign = 1 if price > mid else -1 if price < mid else self._tick_sign
        if aggressor:
            self.seen_aggressor = True
        buy = self._trade_buy
        buy[0] += _signed_buy(self._tick_sign, size)
        buy[1] += _signed_buy(quote_sign, size)
        buy[2] += _signed_buy(aggressor, size)
        return done

    def flush(self) -> list[EnhancedBucket]:
        closed = self._bars.flush()
        return [] if closed is None else self._classify(closed)

    def _classify(self, bar: ClosedBar) -> list[EnhancedBucket]:
        """Every classifier's buy volume for ``bar``, then its buckets; the trade-level sums
        restart with the next bar."""
        if bar.new_day:
            self._new_day()
        if bar.sigma > 0.0:
            self._day_changes.append(bar.dp / bar.sigma)
        buy = np.empty(len(CLASSIFIERS))
        buy[0] = bar.volume * bvc_buy_fraction(bar.dp, bar.sigma)
        buy[1] = bar.volume * student_t_buy_fraction(bar.dp, bar.sigma, self._df)
        buy[2:] = self._trade_buy
        self._trade_buy = np.zeros(3)
        return [self._bucket(piece, bar.sigma, bar.day) for piece in self._buckets.add(bar, buy)]

    def _new_day(self) -> None:
        if self.params.fit_t_df:
            self._df = fit_t_df(np.asarray(self._day_changes), self._df)
        self._day_changes = []

    def _bucket(self, piece: BucketPiece[F64], sigma: float, day: int) -> EnhancedBucket:
        volume = piece.volume
        buy = np.minimum(volume, np.maximum(0.0, piece.buy))
        net = 2.0 * buy - volume
        self._oi.append(np.abs(net))
        self._net.append(net)
        self._volumes.append(volume)
        total = math.fsum(self._volumes)
        oi = np.array(self._oi)
        vpin = np.clip(oi.sum(axis=0) / total, 0.0, 1.0)
        signed = np.clip(np.array(self._net).sum(axis=0) / total, -1.0, 1.0)
        m = len(self._volumes)
        ratio = oi[:, 0] / np.array(self._volumes)
        spread = float(np.std(ratio, ddof=1)) if m > 1 else 0.0
        half = self.params.band_z * spread / math.sqrt(m)
        primary = float(vpin[0])
        empirical, lognormal, alert, events = self._cdf.add(primary, m)
        available = self._available()
        bucket = EnhancedBucket(
            self._next_bucket,
            piece.start_ns,
            piece.end_ns,
            volume,
            _by_classifier(buy, available),
            _by_classifier(vpin, available),
            _by_classifier(signed, available),
            m,
            max(0.0, primary - half),
            min(1.0, primary + half),
            empirical,
            lognormal,
            alert,
            events,
            self._ofi,
            sigma,
            self._df,
            day,
        )
        self._ofi = 0.0
        self._next_bucket += 1
        self.last = bucket
        return bucket

    def _available(self) -> tuple[bool, ...]:
        return (True, True, True, self.seen_quotes, self.seen_aggressor)


def _signed_buy(sign: int, size: float) -> float:
    return size if sign > 0 else 0.0 if sign < 0 else 0.5 * size


def _by_classifier(values: F64, available: tuple[bool, ...]) -> dict[str, float | None]:
    return {
        c.value: float(values[i]) if ok else None
        for i, (c, ok) in enumerate(zip(CLASSIFIERS, available, strict=True))
    }


def run_enhanced(
    event_ns: I64,
    price: F64,
    size: F64,
    params: EnhancedParams,
    aggressor: npt.NDArray[np.int8] | None = None,
    quotes: tuple[I64, F64, F64, F64, F64] | None = None,
) -> tuple[list[EnhancedBucket], InputCounts]:
    """Replay columns through the calculator (batch mode over stored history: the realtime
    numbers by construction); ``quotes`` = (event_ns, bid, bid size, ask, ask size), applied
    before any trade with a later time (a quote and a trade at the same ns: quote first)."""
    calc = EnhancedVpinCalculator(params)
    out: list[EnhancedBucket] = []
    sides = np.zeros(len(event_ns), dtype=np.int64) if aggressor is None else aggressor
    q_t: list[int] = []
    q_rows: list[tuple[float, float, float, float]] = []
    if quotes is not None:
        q_t = quotes[0].tolist()
        q_rows = list(zip(*(a.tolist() for a in quotes[1:]), strict=True))
    j = 0
    for t, p, q, a in zip(
        event_ns.tolist(), price.tolist(), size.tolist(), sides.tolist(), strict=True
    ):
        while j < len(q_t) and q_t[j] <= t:
            calc.add_quote(*q_rows[j])
            j += 1
        out += calc.add_trade(t, p, q, a)
    out += calc.flush()
    return out, calc.counts


# ── classifier accuracy against a true aggressor flag ───────────────────────────────────────


@dataclass(frozen=True, slots=True)
class ClassifierAccuracy:
    """Share of trades and of volume a classifier signs as the exchange did. BVC signs no
    trade (``trades`` is None); its volume share is the bar-level overlap
    Σ_bars [min(V̂_B, V_B) + min(V̂_S, V_S)] / ΣV (Chakrabarty, Pascual & Shkilko 2015, JFM)."""

    classifier: str
    trades: float | None
    volume: float

    def to_payload(self) -> dict[str, Any]:
        return {"classifier": self.classifier, "trades": self.trades, "volume": self.volume}


def classifier_accuracy(
    event_ns: I64,
    price: F64,
    size: F64,
    aggressor: npt.NDArray[np.int8],
    quotes: tuple[I64, F64, F64] | None,
    params: EnhancedParams,
    *,
    quote_lag_ns: int = 0,
) -> list[ClassifierAccuracy]:
    """Accuracy of each classifier against ``aggressor`` (+1/−1 on every trade). ``quotes``
    (receive time, bid, ask) give the prevailing mid: the last quote received more than
    ``quote_lag_ns`` before the trade (Lee & Ready 1991 lag quotes because a feed may report
    the quote a trade caused before the trade itself; Binance's bookTicker stream does).
    An unsigned trade (tick rule before the first price change) counts as wrong."""
    from engines.marketdata.core import tick_rule

    truth = aggressor.astype(np.int64)
    total_volume = float(size.sum())
    tick = tick_rule(price).astype(np.int64)
    result = [
        ClassifierAccuracy(
            Classifier.TICK.value,
            float(np.mean(tick == truth)),
            float(size[tick == truth].sum() / total_volume),
        )
    ]
    if quotes is not None:
        q_t, bid, ask = quotes
        last = np.searchsorted(q_t, event_ns - quote_lag_ns, side="left") - 1
        has_quote = last >= 0
        mid = np.where(has_quote, 0.5 * (bid[np.maximum(last, 0)] + ask[np.maximum(last, 0)]), 0)
        quote = np.where(price > mid, 1, np.where(price < mid, -1, tick))
        quote = np.where(has_quote, quote, tick)
        result.append(
            ClassifierAccuracy(
                Classifier.QUOTE.value,
                float(np.mean(quote == truth)),
                float(size[quote == truth].sum() / total_volume),
            )
        )
    # BVC: bars of the accepted trades, both σ rules as the calculator applies them
    bars = _bvc_bars(event_ns, price, size, params)
    true_buy_bar = np.add.reduceat(np.where(truth > 0, size, 0.0), bars.starts)
    for name, fraction in (
        (Classifier.BVC_NORMAL.value, bars.normal),
        (Classifier.BVC_T.value, bars.student),
    ):
        est_buy = bars.volume * fraction
        overlap = np.minimum(est_buy, true_buy_bar) + np.minimum(
            bars.volume - est_buy, bars.volume - true_buy_bar
        )
        result.append(ClassifierAccuracy(name, None, float(overlap.sum() / total_volume)))
    return result


@dataclass(frozen=True, slots=True)
class _BvcBars:
    starts: I64
    volume: F64
    normal: F64
    student: F64


def _bvc_bars(event_ns: I64, price: F64, size: F64, params: EnhancedParams) -> _BvcBars:
    """Bars (in time order, all trades valid) with both BVC fractions under the ex-ante EWMA σ."""
    base = params.base
    bar = event_ns // base.bar_ns
    starts = np.flatnonzero(np.diff(bar, prepend=bar[0] - 1))
    ends = np.append(starts[1:], len(bar)) - 1
    volume = np.add.reduceat(size, starts)
    close = price[ends]
    dp = np.empty(len(starts))
    dp[0] = close[0] - price[0]
    dp[1:] = np.diff(close)
    variance = base.sigma_seed**2
    normal = np.empty(len(dp))
    student = np.empty(len(dp))
    for i, change in enumerate(dp.tolist()):
        sigma = math.sqrt(variance)
        normal[i] = bvc_buy_fraction(change, sigma)
        student[i] = student_t_buy_fraction(change, sigma, params.t_df)
        variance = ewma_next_variance(variance, change, base.sigma_decay)
    return _BvcBars(starts, volume, normal, student)

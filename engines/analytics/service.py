"""Analytics engine (port 8100): return streams in, ``analytics.<key>`` statistics per return.

Two kinds of return stream, one statistic set each (``engines.analytics.core.StreamingStats``,
empyrical's conventions unless ``convention`` says quantstats):

* **buy-and-hold of a symbol** (key = the symbol): close-to-close simple returns of the
  ``bars.<bar_spec>.*`` time bars (``protocol.records.Bar``). Minutes without a bar are not filled:
  the next return spans the gap;
* **an account's equity** (key = the account): ``pnl.*`` (``AccountState``) sampled on the same
  grid, the last equity of each bar interval; the interval's return is published when the first
  state of a later interval arrives (one interval late, never a guess at the close).

Periodicity and annualisation are stated in every payload. With ``hours="regular"`` (default) only
bars starting 09:30–16:00 America/New_York on weekdays count: 390 one-minute returns a session
(389 intraday and one that spans the overnight gap), annualised with 252 × 390 = 98 280 periods;
``hours="all"`` (a 24/7 market such as BTCUSDT) counts every bar, 365 × 1 440 minutes a year.
Daily bars (``1d``) use 252. ``annualization`` overrides the derived number.

Versus the ``benchmark`` symbol (SPY) each key also has alpha, beta, information ratio and
up/down capture over the *pairs* of its returns and the benchmark's over the same interval (same
previous and same current bar start); a return without one (a missing minute on either side) is
left out (counted, ``unpaired``); one whose benchmark bar comes later is paired then and shows
in the key's next publication (the section states its own ``n``).

Memory, bounded per key: the returns (and pairs) the statistics cover, at most ``max_returns``;
on reaching it the key's state is rebuilt off the event loop from the newest half, so statistics
then cover a trailing window that starts at ``from_ns`` (stated in the payload). The REST views
(drawdowns, rolling windows, the tear sheet) read the same retained series.

Bad input never crashes the engine: a payload that is not a bar/account state is counted by the
shell; a bar of another spec, a non-finite or non-positive close or equity, or one not newer than
the key's last is refused with ``BadInput`` (counted per reason).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from engines.analytics import core
from engines.shell import Engine, EngineConfig, NotFoundError, StreamInfo
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass, channel
from protocol.errors import ProtocolError
from protocol.records import AccountState, BadInput, Bar
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage

#: A published statistic set (see ``AnalyticsEngine.payload``).
StatsPayload = dict[str, Any]

NS = 1_000_000_000
DAY_S = 86_400
SESSION_S = 23_400  # 09:30–16:00
SESSIONS_PER_YEAR = 252
_TIME_BAR = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": DAY_S}
_NEW_YORK = ZoneInfo("America/New_York")
#: Stats fields that need a benchmark: published in the ``benchmark`` section, not in ``stats``.
BENCHMARK_FIELDS = ("alpha", "beta", "information_ratio", "up_capture", "down_capture")
STATS_FIELDS = tuple(f for f in core.Stats._fields if f not in BENCHMARK_FIELDS)
#: Benchmark returns remembered for pairing, and returns a key may hold waiting for them.
BENCHMARK_MEMORY = 8_192
MAX_WAITING = 1_024


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalyticsConfig(EngineConfig):
    """Defaults: buy-and-hold on regular-hours 1-minute bars, empyrical conventions, SPY."""

    name: str = field(default="analytics", metadata={"help": "engine name", "env": False})
    bar_spec: str = field(
        default="1m", metadata=described("time bars the buy-and-hold returns come from")
    )
    hours: str = field(
        default="regular",
        metadata=described(
            "'regular': only bars starting 09:30-16:00 New York on weekdays (252 x 390 minutes "
            "a year); 'all': every bar (a 24/7 market, 365 x 1440 minutes a year)"
        ),
    )
    annualization: float = field(
        default=0.0, metadata=described("periods per year (0 = derived from bar_spec and hours)")
    )
    benchmark: str = field(
        default="SPY", metadata=described("symbol alpha/beta are measured against ('' = none)")
    )
    convention: str = field(
        default="empyrical", metadata=described("'empyrical' or 'quantstats' formulas")
    )
    rolling_window: int = field(
        default=390,
        metadata=described("returns per rolling window (390 = one session of 1m returns)"),
    )
    max_returns: int = field(
        default=100_000,
        metadata=described("returns kept per key (statistics then cover the newest ones)"),
    )
    max_post_returns: int = field(
        default=1_000_000, metadata=described("most values one POST /analytics/compute array holds")
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        if self.hours not in ("regular", "all"):
            raise ValueError(f"hours must be 'regular' or 'all', got {self.hours!r}")
        if self.convention not in ("empyrical", "quantstats"):
            raise ValueError(
                f"convention must be 'empyrical' or 'quantstats', got {self.convention!r}"
            )
        if not (math.isfinite(self.annualization) and self.annualization >= 0):
            raise ValueError("annualization must be finite and >= 0")
        if self.rolling_window < 2:
            raise ValueError("rolling_window must be >= 2")
        if self.max_returns < 4 or self.max_post_returns < 2:
            raise ValueError("max_returns must be >= 4 and max_post_returns >= 2")
        self.periodicity()  # validates bar_spec
        if self.benchmark:
            try:
                channel("analytics", self.benchmark)
            except ProtocolError as exc:
                raise ValueError(f"benchmark {self.benchmark!r} is not a symbol: {exc}") from None

    @property
    def bar_seconds(self) -> int:
        match = _TIME_BAR.fullmatch(self.bar_spec)
        if match is None:
            raise ValueError(f"bar_spec must be a time bar (1m, 5m, 1h, 1d), got {self.bar_spec!r}")
        return int(match.group(1)) * _UNIT_S[match.group(2)]

    @property
    def regular_hours(self) -> bool:
        """Whether bars outside the US regular session are skipped (intraday bars only)."""
        return self.hours == "regular" and self.bar_seconds < DAY_S

    def periodicity(self) -> tuple[str, float, str]:
        """``(period name, periods per year, how that number was reached)``."""
        seconds = self.bar_seconds
        spec = self.bar_spec
        if seconds >= DAY_S:
            period = "daily" if seconds == DAY_S else spec
            ann = SESSIONS_PER_YEAR * DAY_S / seconds
            how = f"{SESSIONS_PER_YEAR} sessions a year, one {spec} return each"
        elif self.hours == "regular":
            if SESSION_S % seconds:
                raise ValueError(
                    f"bar_spec {spec} does not divide the 6.5 h regular session: set annualization"
                )
            per_session = SESSION_S // seconds
            period = "minute" if seconds == 60 else spec
            ann = float(SESSIONS_PER_YEAR * per_session)
            how = (
                f"{SESSIONS_PER_YEAR} sessions x {per_session} {spec} returns per regular "
                "session (09:30-16:00 America/New_York; the first spans the overnight gap)"
            )
        else:
            period = "minute" if seconds == 60 else spec
            ann = 365.0 * DAY_S / seconds
            how = f"365 days x {DAY_S // seconds} {spec} returns a day (a 24/7 market)"
        if self.annualization:
            return period, self.annualization, f"{self.annualization:g} periods a year (configured)"
        return period, ann, how

    def params(self) -> core.AnalyticsParams:
        period, ann, _ = self.periodicity()
        convention: core.Convention = (
            "quantstats" if self.convention == "quantstats" else "empyrical"
        )
        return core.AnalyticsParams(period=period, annualization=ann, convention=convention)


class RegularSession:
    """Whether a time lies in the US regular session, 09:30–16:00 America/New_York on weekdays.

    Bounds are computed once per UTC day (the session never crosses UTC midnight); exchange
    holidays need no calendar because no bars arrive on them.
    """

    def __init__(self) -> None:
        self._bounds: dict[int, tuple[int, int]] = {}

    def __contains__(self, t_ns: int) -> bool:
        day = t_ns // (DAY_S * NS)
        bounds = self._bounds.get(day)
        if bounds is None:
            if len(self._bounds) > 4_096:
                self._bounds.clear()
            bounds = self._bounds[day] = _session_bounds(date(1970, 1, 1) + timedelta(days=day))
        return bounds[0] <= t_ns < bounds[1]


def _session_bounds(day: date) -> tuple[int, int]:
    if day.weekday() >= 5:
        return (0, 0)
    open_ = datetime(day.year, day.month, day.day, 9, 30, tzinfo=_NEW_YORK)
    close = datetime(day.year, day.month, day.day, 16, 0, tzinfo=_NEW_YORK)
    return int(open_.timestamp()) * NS, int(close.timestamp()) * NS


@dataclass(slots=True, eq=False)
class ReturnSeries:
    """One key's statistics and the (bounded) series behind them."""

    key: str
    source: str  # the input stream family: "bars.1m" or "pnl"
    stats: core.StreamingStats
    relative: core.StreamingStats | None  # over (return, benchmark return) pairs
    origin_ns: int  # time of the value the first covered return grows from
    times: deque[int] = field(default_factory=deque)  # end time of each return
    returns: deque[float] = field(default_factory=deque)
    pair_times: deque[int] = field(default_factory=deque)
    pair_returns: deque[float] = field(default_factory=deque)
    pair_benchmark: deque[float] = field(default_factory=deque)
    #: returns waiting for the benchmark's of the same interval: (previous start, start, end, r)
    waiting: deque[tuple[int, int, int, float]] = field(default_factory=deque)
    unpaired: int = 0
    last_start_ns: int = -1  # the newest bar start (bucket start for accounts) seen
    last_value: float = math.nan  # the newest close (equity) seen
    base_start_ns: int = -1  # accounts: the interval whose closing equity the next grows from
    base_value: float = math.nan
    latest: core.Stats | None = None
    latest_relative: core.Stats | None = None


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or ±inf: an undefined or infinite statistic is ``null``."""
    return value if math.isfinite(value) else None


def statistics_payload(
    stats: core.Stats, relative: core.Stats | None, benchmark: str | None
) -> dict[str, Any]:
    """``{"stats": {n, ...}, "benchmark": {"symbol", "n", alpha, beta, ...}}`` (NaN, ±inf →
    null); ``relative`` is the statistic set over the (return, benchmark) pairs, ``None`` before
    the first pair; the section is ``None`` without a benchmark."""
    values = stats._asdict()
    out: dict[str, Any] = {"stats": {f: finite_or_none(values[f]) for f in STATS_FIELDS}}
    if not benchmark:
        out["benchmark"] = None
        return out
    rel = relative._asdict() if relative is not None else {}
    out["benchmark"] = {
        "symbol": benchmark,
        "n": 0 if relative is None else relative.n,
        **{f: finite_or_none(rel.get(f, math.nan)) for f in BENCHMARK_FIELDS},
    }
    return out


def replayed(
    params: core.AnalyticsParams, returns: Sequence[float], benchmark: Sequence[float] | None = None
) -> tuple[core.StreamingStats, core.Stats | None]:
    """A fresh streaming state fed ``returns`` (and the benchmark's): the rebuild at the bound."""
    state = core.StreamingStats(params, benchmark=benchmark is not None)
    latest = None
    if benchmark is None:
        for r in returns:
            latest = state.update(r)
    else:
        for r, b in zip(returns, benchmark, strict=True):
            latest = state.update(r, b)
    return state, latest


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """A copy of one key's retained series, for the REST views (taken on the event loop, read
    on the compute threads)."""

    key: str
    source: str
    origin_ns: int
    times: npt.NDArray[np.int64]  # end time of each return
    returns: core.F64
    pair_times: npt.NDArray[np.int64]
    pair_returns: core.F64
    pair_benchmark: core.F64


class AnalyticsEngine(Engine[AnalyticsConfig]):
    """One ``ReturnSeries`` per key; each new return publishes ``analytics.<key>`` and stores it."""

    config_type = AnalyticsConfig

    def __init__(
        self, config: AnalyticsConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.params = config.params()
        self.period, self.periods_per_year, self.annualization_basis = config.periodicity()
        self.bar_ns = config.bar_seconds * NS
        self.bar_source = f"bars.{config.bar_spec}"
        self.session = RegularSession() if config.regular_hours else None
        self.series: dict[str, ReturnSeries] = {}
        #: benchmark (previous bar start, return) by bar start, the newest ``BENCHMARK_MEMORY``
        self.benchmark_returns: dict[int, tuple[int, float]] = {}
        self._benchmark_order: deque[int] = deque()
        self._benchmark_last_start = -1
        self._waiting_keys: set[str] = set()
        self.stats_records: RecordStore[StatsPayload] = self.storage.records(
            self.name, "analytics", dict, key=itemgetter("key"), time=itemgetter("event_ns")
        )
        self.updates = Counter(
            "nautilus_analytics_updates",
            "statistic sets published (one per new return)",
            ["source"],
            registry=self.metrics.registry,
        )
        self.outside_session = Counter(
            "nautilus_analytics_outside_session",
            "bars and account states skipped outside the regular session",
            registry=self.metrics.registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {
            f"bars.{self.config.bar_spec}.*": on(Bar, self.on_bar),
            "pnl.*": on(AccountState, self.on_account),
        }

    def streams(self) -> list[StreamInfo]:
        return [
            StreamInfo(
                "analytics.*",
                DeliveryClass.LATEST_VALUE,
                "performance statistics per new return (symbol buy-and-hold, account equity)",
            )
        ]

    def declared_channels(self) -> Sequence[str]:
        return (channel("analytics", self.config.benchmark),) if self.config.benchmark else ()

    def health_extra(self) -> Mapping[str, object]:
        return {
            "keys": {
                key: {"source": s.source, "n": s.stats.n, "unpaired": s.unpaired}
                for key, s in self.series.items()
            },
            "periods_per_year": self.periods_per_year,
        }

    # ── per message ────────────────────────────────────────────────────────────────────────

    async def on_bar(self, bar: Bar, envelope: Envelope) -> None:
        if bar.spec != self.config.bar_spec:
            raise BadInput(
                "wrong_spec", f"bar spec {bar.spec} is not {self.config.bar_spec}", "spec"
            )
        if not (math.isfinite(bar.close) and bar.close > 0):
            raise BadInput("bad_close", f"close {bar.close} must be finite and > 0", "c")
        if self.session is not None and bar.start_ns not in self.session:
            self.outside_session.inc()
            return
        series = self._series(bar.symbol, self.bar_source, bar.end_ns)
        if bar.start_ns <= series.last_start_ns:
            raise BadInput("late_bar", f"bar at {bar.start_ns} is not after the last one", "t")
        previous, previous_start = series.last_value, series.last_start_ns
        series.last_start_ns, series.last_value = bar.start_ns, bar.close
        if math.isnan(previous):
            series.origin_ns = bar.end_ns
            return
        await self._add_return(
            series, previous_start, bar.start_ns, bar.end_ns, bar.close / previous - 1.0
        )

    async def on_account(self, state: AccountState, envelope: Envelope) -> None:
        equity = float(state.equity)
        if not (math.isfinite(equity) and equity > 0):
            raise BadInput("bad_equity", f"equity {state.equity} must be > 0", "equity")
        start = state.event_ns - state.event_ns % self.bar_ns
        if self.session is not None and start not in self.session:
            self.outside_session.inc()
            return
        series = self._series(state.account, "pnl", start + self.bar_ns)
        if start < series.last_start_ns:
            raise BadInput(
                "late_state", f"state at {state.event_ns} is older than the last", "event_ns"
            )
        if start > series.last_start_ns:  # the previous interval closed: its return is known
            closed_start, closed_equity = series.last_start_ns, series.last_value
            base_start, base = series.base_start_ns, series.base_value
            series.base_start_ns, series.base_value = closed_start, closed_equity
            series.last_start_ns = start
            if closed_start >= 0 and base_start < 0:
                series.origin_ns = closed_start + self.bar_ns  # the first interval's close
            elif closed_start >= 0:
                end = closed_start + self.bar_ns
                await self._add_return(
                    series, base_start, closed_start, end, closed_equity / base - 1.0
                )
        series.last_value = equity

    # ── the streaming step ─────────────────────────────────────────────────────────────────

    def _series(self, key: str, source: str, time_ns: int) -> ReturnSeries:
        series = self.series.get(key)
        if series is None:
            try:
                channel("analytics", key)
            except ProtocolError as exc:
                raise BadInput("bad_key", f"{key!r} cannot name a channel: {exc}", "key") from None
            relative = (
                core.StreamingStats(self.params, benchmark=True) if self.config.benchmark else None
            )
            series = self.series[key] = ReturnSeries(
                key, source, core.StreamingStats(self.params), relative, origin_ns=time_ns
            )
        elif series.source != source:
            raise BadInput("key_taken", f"key {key} is already a {series.source} stream", "key")
        return series

    async def _add_return(
        self, series: ReturnSeries, previous_ns: int, start_ns: int, end_ns: int, ret: float
    ) -> None:
        """One new return over the bar interval(s) from ``previous_ns``'s close to ``start_ns``'s
        (both bar starts): update, publish, store."""
        if len(series.returns) >= self.config.max_returns:
            await self._rebuild(series)
        series.latest = series.stats.update(ret)
        series.times.append(end_ns)
        series.returns.append(ret)
        if series.relative is not None:
            if series.key == self.config.benchmark and series.source == self.bar_source:
                self._add_benchmark(previous_ns, start_ns, ret)
            self._pair(series, previous_ns, start_ns, end_ns, ret)
        payload = self.payload(series, end_ns)
        published = await self.publish(f"analytics.{series.key}", payload, event_ns=end_ns)
        self.stats_records.append([payload], seqs=[published.seq])
        self.updates.labels(series.source).inc()

    def _add_benchmark(self, previous_ns: int, start_ns: int, ret: float) -> None:
        self.benchmark_returns[start_ns] = (previous_ns, ret)
        self._benchmark_order.append(start_ns)
        self._benchmark_last_start = max(self._benchmark_last_start, start_ns)
        if len(self._benchmark_order) > BENCHMARK_MEMORY:
            del self.benchmark_returns[self._benchmark_order.popleft()]
        for key in list(self._waiting_keys):
            waiting = self.series[key]
            while waiting.waiting and waiting.waiting[0][1] <= start_ns:
                self._pair(waiting, *waiting.waiting.popleft())
            if not waiting.waiting:
                self._waiting_keys.discard(key)

    def _pair(
        self, series: ReturnSeries, previous_ns: int, start_ns: int, end_ns: int, ret: float
    ) -> None:
        """Pair a return with the benchmark's over the same interval (same previous and same
        bar start), park it until the benchmark's bar comes, or count it unpaired."""
        assert series.relative is not None
        bench = self.benchmark_returns.get(start_ns)
        if bench is not None and bench[0] == previous_ns:
            series.latest_relative = series.relative.update(ret, bench[1])
            series.pair_times.append(end_ns)
            series.pair_returns.append(ret)
            series.pair_benchmark.append(bench[1])
        elif bench is None and start_ns > self._benchmark_last_start:
            series.waiting.append((previous_ns, start_ns, end_ns, ret))
            self._waiting_keys.add(series.key)
            if len(series.waiting) > MAX_WAITING:
                series.waiting.popleft()
                series.unpaired += 1
        else:
            series.unpaired += 1

    async def _rebuild(self, series: ReturnSeries) -> None:
        """At the bound: keep the newest half of the returns (and pairs) and rebuild the
        streaming state from them on the compute threads (one O(n) pass every n/2 returns)."""
        for _ in range(len(series.returns) - self.config.max_returns // 2):
            series.origin_ns = series.times.popleft()
            series.returns.popleft()
        series.stats, series.latest = await self.run_in_executor(
            replayed, self.params, list(series.returns)
        )
        if series.relative is not None:
            cut = np.searchsorted(np.fromiter(series.pair_times, np.int64), series.times[0])
            for _ in range(int(cut)):
                series.pair_times.popleft()
                series.pair_returns.popleft()
                series.pair_benchmark.popleft()
            series.relative, series.latest_relative = await self.run_in_executor(
                replayed, self.params, list(series.pair_returns), list(series.pair_benchmark)
            )

    def snapshot(self, key: str) -> Snapshot:
        """The retained series of ``key`` (404 for a key without a return yet)."""
        series = self.series.get(key)
        if series is None or not series.returns:
            raise NotFoundError(f"no returns yet for {key}", parameter="key")
        n, m = len(series.returns), len(series.pair_returns)
        return Snapshot(
            key=key,
            source=series.source,
            origin_ns=series.origin_ns,
            times=np.fromiter(series.times, np.int64, n),
            returns=np.fromiter(series.returns, np.float64, n),
            pair_times=np.fromiter(series.pair_times, np.int64, m),
            pair_returns=np.fromiter(series.pair_returns, np.float64, m),
            pair_benchmark=np.fromiter(series.pair_benchmark, np.float64, m),
        )

    def payload(self, series: ReturnSeries, event_ns: int) -> StatsPayload:
        """What ``analytics.<key>`` carries and the store keeps."""
        assert series.latest is not None
        return {
            "key": series.key,
            "source": series.source,
            "event_ns": event_ns,
            "from_ns": series.origin_ns,
            "period": self.period,
            "bar_spec": self.config.bar_spec,
            "periods_per_year": self.periods_per_year,
            "annualization": self.annualization_basis,
            "convention": self.params.convention,
            **statistics_payload(series.latest, series.latest_relative, self.config.benchmark),
        }

"""Factor engine (port 8300): ``bars.<spec>.*`` in; rolling exposures on ``factor.<model>.SYM``
and a signal's information coefficient on ``factor.ic.<signal>`` out.

Exposures. Each bar's close-to-close return (against the symbol's previous bar) waits until every
factor (``factors``, SPY by default; a spread ``IWM-SPY`` is IWM's return minus SPY's, both legs
needed) has a return for the bar with the same start; then the symbol's ``core.RollingOls`` slot
takes the bar (O(k²)) and the estimates after it — alpha, betas, t-stats (plain and Newey–West),
R², residual volatility per bar, the rows in the window — are published on ``factor.<model>.SYM``
(latest-value) and appended to the store, which ``GET /factor/{model}/{symbol}/latest|history``
read. The handlers only queue: after each input batch (``after_batch`` → ``flush``) every symbol
whose bar became ready in the batch is regressed in ONE ``RollingOls.update`` call (Newey–West
vectorized across them; a symbol with several ready bars takes them in successive calls), then
everything queued — exposures and ICs — is published in the order it was queued, which is the order
a bar-at-a-time engine would publish in, whatever the batch boundaries (the deterministic driver
and the live consumers publish the same). A factor symbol regressed on itself is published too (β =
1, R² = 1, t = null). A bar whose start a factor has passed without a bar of its own is dropped
(counted: ``unmatched``). Every estimate at bar t uses bars ≤ t only.

Factors from a file. With ``factor_file`` (daily bars only) the factors are columns of a CSV in
Kenneth French's layout (``factor_file.parse_factor_table``: F-F_Research_Data_Factors_daily.CSV
as downloaded, percent by default) read at construction: a bar's return is regressed on the row
of its date (the UTC date of its start) at once, minus the ``risk_free`` column (``RF``: excess
returns, the Fama–French convention; named in each payload as ``risk_free``); a date the file
lacks, or marks missing (-99.99), is not regressed (``unmatched``). Every symbol on the bus is a
regressed symbol; none is a factor.

Signal evaluation. With ``ic_signal = "<kind>:<field path>"`` (``features:values.rsi``,
``vpin:vpin``, ``ml.logistic:probability``, ``factor.market:betas.SPY``) the engine also consumes
``<kind>.*`` — the kind may be dotted, so ``ml.<model>.SYM`` predictions are one ``<kind>.SYM`` —
and keeps each symbol's values (symbol: the payload's ``symbol``, else the channel's last segment)
by event time (the payload's ``event_ns``, else the envelope's). When a symbol's bar i arrives, the
bar h back (each horizon h) resolves: its forward return close_i/close_{i−h} − 1 is paired with the
newest signal value whose event time is ≤ that bar's end. A date (bar start) is closed for horizon
h once a later date resolves; with at least ``ic_min_symbols`` pairs its cross-sectional Spearman
IC updates the running mean/std/IR/t (``core.RunningIc``) and is published on
``factor.ic.<signal>`` and stored (``GET /factor/ic``), stamped with the end of the newest bar
behind it (``event_ns``). A pair resolving for a date already closed is counted (``late``).

Tables. With a signal, the engine also keeps a panel of the last ``tables_dates`` dates: per date
(bar start) and symbol the bar's close and the signal the IC pairs with it (the newest value with
event time ≤ the bar's end, read when the symbol's next bar arrives — when its 1-bar forward
return resolves). ``GET /factor/tables`` runs ``core.factor_tables`` (alphalens' tear-sheet
tables) on it: forward returns are row-based on that date grid, as alphalens computes them from
its price table.

Bad input is counted by the shell and skipped, never fatal: a bar of another spec
(``wrong_spec``), out of order or duplicate (``out_of_order``, ``duplicate_bar``), a close that is
not finite and positive (``invalid_value``); a signal payload whose field is non-numeric or not
finite (NaN, ±inf, an int beyond float), or whose ``event_ns`` is not an int (``invalid_signal``;
``null`` during a signal's warm-up is simply not used).

Limits: one model (one factor set) and one signal per engine; the cross-sectional IC needs
several symbols on the bus (the SPY-only replay publishes exposures but no IC); no warm-up from
stored bars (exposures start after ``min_obs`` live bars) and the tables' panel lives in memory (a
restart starts it empty); the streaming regressions run on the event loop, one vectorized call
per input batch; the batch (JAX), the tables and the traded-factor fit (numpy) on the compute
threads.

Compiles. ``on_start`` compiles the batch kernel (``core.rolling_ols_many``) for ONE shape, on a
compute thread: ``padded(warmup_bars)`` bars × ``padded(warmup_symbols)`` symbols ×
``len(factors) + 1`` columns (default 4096 × 8 × 2). Every other shape compiles on its first
``POST /factor/exposures`` (measured 3–5 s per shape on the 2-core dev box; cached for the
process's life): bars pad to the next of 2ʲ·(1, 1.25, 1.5, 1.75) at least 256 (36 sizes up to
``max_batch_bars`` = 100,000), symbols to the same grid at least 8 (25 sizes up to
``max_batch_symbols`` = 512: 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, …, 384, 448, 512), columns are
the posted factors + 1; the window, decay and min_obs are traced values and never recompile. A
request of 3,585–4,096 bars, 1–8 symbols and ``len(factors)`` factors is served compiled; all 900
(bars × symbols) shapes per factor count would take about an hour to compile at start, so none
of the others is warmed. The streaming path is numpy and compiles nothing.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter

from engines.factor import core
from engines.factor.factor_file import FactorFileError, day_of_ns, parse_factor_table
from engines.marketdata.core import BarSpec
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass, channel
from protocol.errors import ProtocolError
from protocol.records import BadInput, Bar
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,40}")
#: ``factor_file_units`` → the scale from the file's values to returns.
_UNITS = {"percent": 0.01, "decimal": 1.0}
#: A published exposure or IC record as stored and served.
Payload = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FactorConfig(EngineConfig):
    """Which bars, which factors, the regression window, the evaluated signal, batch limits."""

    name: str = field(default="factor", metadata={"help": "engine name", "env": False})
    bar_spec: str = field(default="1m", metadata=described("bar spec consumed: bars.<spec>.*"))
    model: str = field(default="market", metadata=described("model name: factor.<model>.SYM"))
    factors: tuple[str, ...] = field(
        default=("SPY",),
        metadata=described(
            "factors, comma-separated: symbols (SPY,QQQ,IWM) or spreads A-B (IWM-SPY: IWM's"
            " return minus SPY's per bar)"
        ),
    )
    window: int = field(default=60, metadata=described("bars per regression (0 = expanding)"))
    decay: float = field(default=1.0, metadata=described("EWMA weight λ per bar (1 = equal)"))
    min_obs: int = field(default=0, metadata=described("rows before a first estimate (0 = window)"))
    factor_file: str = field(
        default="",
        metadata=described(
            "factor returns by date from a CSV in Kenneth French's layout (e.g."
            " F-F_Research_Data_Factors_daily.CSV); factors then name its columns"
            " (Mkt-RF,SMB,HML) and bar_spec must be 1d ('' = factors are symbols on the bus)"
        ),
    )
    factor_file_units: str = field(
        default="percent",
        metadata=described("the file's values: percent (French's files) or decimal"),
    )
    risk_free: str = field(
        default="RF",
        metadata=described(
            "the file's risk-free column: each bar's return minus it is regressed (excess"
            " returns; '' = raw returns)"
        ),
    )
    hac: bool = field(default=True, metadata=described("Newey–West t-stats (rolling windows)"))
    hac_lags: int | None = field(
        default=None, metadata=described("Newey–West lags ('' = statsmodels' rule on the window)")
    )
    ic_signal: str = field(
        default="",
        metadata=described(
            "evaluated signal, <kind>:<field path> (features:values.rsi, vpin:vpin,"
            " ml.logistic:probability; the kind may be dotted: <kind>.SYM is consumed; '' = none)"
        ),
    )
    ic_name: str = field(
        default="", metadata=described("name in factor.ic.<name> ('' = <kind>_<last field>)")
    )
    ic_horizons: tuple[int, ...] = field(
        default=core.DEFAULT_HORIZONS, metadata=described("forward-return horizons, bars")
    )
    ic_min_symbols: int = field(default=3, metadata=described("symbols a date's IC needs"))
    max_pending: int = field(
        default=1_000, metadata=described("bars a symbol waits for its factors' bars at most")
    )
    warmup_bars: int = field(
        default=4_096, metadata=described("compile the batch path for this many bars at start")
    )
    warmup_symbols: int = field(
        default=8, metadata=described("compile the batch path for this many symbols at start")
    )
    max_batch_bars: int = field(
        default=100_000, metadata=described("most bars per series one POST may carry")
    )
    max_batch_symbols: int = field(
        default=512, metadata=described("most symbols one POST may carry")
    )
    tables_dates: int = field(
        default=5_000, metadata=described("dates of closes and signal GET /factor/tables keeps")
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        BarSpec.parse(self.bar_spec)
        if not _NAME.fullmatch(self.model):
            raise ValueError(f"model must be 1-40 of [A-Za-z0-9_-], got {self.model!r}")
        if not self.factors or len(set(self.factors)) != len(self.factors):
            raise ValueError(f"factors must be distinct symbols, got {self.factors!r}")
        if self.factor_file:
            spec = BarSpec.parse(self.bar_spec)
            if spec.kind != "time" or spec.size != 86_400:
                raise ValueError(
                    f"a factor_file's rows are days: bar_spec must be 1d, not {self.bar_spec!r}"
                )
            if self.factor_file_units not in _UNITS:
                raise ValueError(
                    f"factor_file_units must be percent or decimal, got {self.factor_file_units!r}"
                )
            if self.risk_free in self.factors:
                raise ValueError(f"the risk-free column {self.risk_free!r} cannot be a factor")
        for factor in () if self.factor_file else self.factors:
            legs = factor_legs(factor)
            if not all(legs) or len(legs) > 2 or len(set(legs)) != len(legs):
                raise ValueError(f"a factor is a symbol or a spread A-B, got {factor!r}")
        core.RollingOls(
            len(self.factors),
            window=self.window,
            decay=self.decay,
            min_obs=self.min_obs,
            hac=self.hac,
            hac_lags=self.hac_lags,
        )
        if self.ic_signal:
            kind, sep, path = self.ic_signal.partition(":")
            if not sep or not all(map(_NAME.fullmatch, kind.split("."))) or not path:
                raise ValueError(f"ic_signal must be <kind>:<field path>, got {self.ic_signal!r}")
            if kind == f"bars.{self.bar_spec}":
                raise ValueError(f"ic_signal {self.ic_signal!r} is the bar input itself")
            if not _NAME.fullmatch(self.signal_name()):
                raise ValueError(f"ic_name must be 1-40 of [A-Za-z0-9_-], got {self.ic_name!r}")
        if not self.ic_horizons or min(self.ic_horizons) < 1:
            raise ValueError(f"ic_horizons must be >= 1, got {self.ic_horizons!r}")
        if self.ic_min_symbols < 2:
            raise ValueError(f"ic_min_symbols must be >= 2, got {self.ic_min_symbols}")
        for name in ("max_pending", "max_batch_bars", "max_batch_symbols", "tables_dates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.warmup_bars < 0 or self.warmup_symbols < 0:
            raise ValueError("warmup_bars and warmup_symbols must be >= 0")

    def signal_name(self) -> str:
        """The IC's channel name segment: ``ic_name`` or ``<kind>_<last field>``."""
        if self.ic_name:
            return self.ic_name
        kind, _, path = self.ic_signal.partition(":")
        return re.sub(r"[^A-Za-z0-9_\-]", "_", f"{kind}_{path.rsplit('.', 1)[-1]}")[:40]

    def regression(self) -> core.RollingOls:
        return core.RollingOls(
            len(self.factors),
            window=self.window,
            decay=self.decay,
            min_obs=self.min_obs,
            hac=self.hac,
            hac_lags=self.hac_lags,
        )


def load_factor_file(config: FactorConfig) -> dict[int, tuple[list[float], float]]:
    """``config.factor_file`` read: day → (the configured factors' returns in order, the
    risk-free return or 0); days with a missing value of either are left out."""
    path = Path(config.factor_file)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"factor_file {path}: {exc.strerror or exc}") from None
    try:
        table = parse_factor_table(text, scale=_UNITS[config.factor_file_units])
    except FactorFileError as exc:
        raise ValueError(f"factor_file {path}: {exc}") from None
    wanted = [*config.factors, *([config.risk_free] if config.risk_free else [])]
    absent = [c for c in wanted if c not in table.columns]
    if absent:
        raise ValueError(
            f"factor_file {path} has no column {', '.join(absent)} (it has"
            f" {', '.join(table.columns)}; set factors and risk_free to its names)"
        )
    index = [table.columns.index(c) for c in wanted]
    k = len(config.factors)
    out: dict[int, tuple[list[float], float]] = {}
    for day, row in table.rows.items():
        values = [row[i] for i in index]
        if all(math.isfinite(v) for v in values):
            out[day] = (values[:k], values[k] if config.risk_free else 0.0)
    return out


def factor_legs(factor: str) -> tuple[str, ...]:
    """A factor's symbols: ``("SPY",)`` for ``SPY``, ``("IWM", "SPY")`` for the spread
    ``IWM-SPY`` (a symbol with a ``-`` of its own cannot be a factor)."""
    return tuple(factor.split("-"))


@dataclass(slots=True)
class _Regress:
    """A bar return whose factors are in: regressed and published by ``flush``."""

    symbol: str
    slot: int
    start: int
    end: int
    ret: float
    x: list[float]
    event_ns: int


@dataclass(slots=True)
class _Publish:
    """An IC record ready to publish (kept in order with the exposures around it)."""

    payload: Payload
    event_ns: int


class SymbolState:
    """One symbol: its slot, last bar, returns waiting for the factors, recent closes and
    signal values (for the IC)."""

    __slots__ = ("closes", "last_close", "last_start", "pending", "signals", "slot")

    def __init__(self, slot: int, max_pending: int, max_horizon: int) -> None:
        self.slot = slot
        self.last_start: int | None = None
        self.last_close = math.nan
        self.pending: deque[tuple[int, int, float]] = deque(maxlen=max_pending)
        self.closes: deque[tuple[int, int, float]] = deque(maxlen=max_horizon + 1)
        self.signals: deque[tuple[int, float]] = deque(maxlen=max_pending)

    def signal_at(self, time_ns: int) -> float:
        """The newest signal value with event time ≤ ``time_ns`` (NaN when none)."""
        for event_ns, value in reversed(self.signals):
            if event_ns <= time_ns:
                return value
        return math.nan


def field_value(payload: Any, path: str) -> Any:
    """``payload`` at a dotted ``path`` (``values.rsi``); ``None`` when absent."""
    for part in path.split("."):
        if not isinstance(payload, dict):
            return None
        payload = payload.get(part)
    return payload


class FactorEngine(Engine[FactorConfig]):
    """Rolling exposures per symbol on ``factor.<model>.SYM``; a signal's IC on
    ``factor.ic.<signal>``; batch regressions over posted arrays (``exposures``)."""

    config_type = FactorConfig

    def __init__(
        self, config: FactorConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.factors = config.factors
        self.regression = config.regression()
        self.symbols: dict[str, SymbolState] = {}
        #: with a ``factor_file``: day → (factor returns, risk-free return); else None
        self.file_rows = load_factor_file(config) if config.factor_file else None
        #: each factor's symbols on the bus (one, or a spread's two: long, short; none when
        #: the factors come from a file)
        self._risk_free = (
            {"risk_free": config.risk_free} if config.factor_file and config.risk_free else {}
        )
        self.legs = {} if config.factor_file else {f: factor_legs(f) for f in self.factors}
        #: factor (leg) symbol → bar start → return (the last ``max_pending`` bars)
        self.factor_returns: dict[str, OrderedDict[int, float]] = {
            leg: OrderedDict() for legs in self.legs.values() for leg in legs
        }
        self.signal = config.signal_name() if config.ic_signal else ""
        self.horizons = tuple(sorted(set(config.ic_horizons)))
        self.running_ic = {h: core.RunningIc() for h in self.horizons}
        #: horizon → date (bar start) → symbol → (signal, forward return, end of the bar that
        #: resolved it)
        self._open_dates: dict[int, dict[int, dict[str, tuple[float, float, int]]]] = {
            h: {} for h in self.horizons
        }
        self._closed_through = dict.fromkeys(self.horizons, -1)
        #: date (bar start) → symbol → [close, signal at the bar's end] (the tables' panel)
        self.panel: OrderedDict[int, dict[str, list[float]]] = OrderedDict()
        #: what this batch of input will publish, in order: ``flush`` (after the batch)
        #: regresses every ready symbol's bar in one ``RollingOls.update`` and publishes
        self._outbox: list[_Regress | _Publish] = []
        self._flushing = asyncio.Lock()
        #: symbol → its ``factor.<model>.SYM`` channel (validated once)
        self._channels: dict[str, str] = {}
        self.exposures: RecordStore[Payload] = self.storage.records(
            self.name, "exposures", dict, key=lambda p: p["symbol"], time=lambda p: p["start_ns"]
        )
        self.ics: RecordStore[Payload] = self.storage.records(
            self.name,
            "ic",
            dict,
            key=lambda p: f"{p['signal']}.{p['horizon']}",
            time=lambda p: p["start_ns"],
        )
        registry = self.metrics.registry
        self.published_total = Counter(
            "nautilus_factor_exposures", "exposure estimates published", registry=registry
        )
        self.skipped_total = Counter(
            "nautilus_factor_skipped_bars",
            "bar returns never regressed (no factor bar at that start, or pushed out)",
            ["reason"],
            registry=registry,
        )
        self.ic_total = Counter(
            "nautilus_factor_ic_dates", "per-date ICs published", registry=registry
        )
        self.ic_skipped_total = Counter(
            "nautilus_factor_ic_skipped",
            "IC pairs or dates not used",
            ["reason"],
            registry=registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        wanted: dict[str, Input[Any]] = {f"bars.{self.config.bar_spec}.*": on(Bar, self.on_bar)}
        if self.signal:
            kind = self.config.ic_signal.partition(":")[0]
            wanted[f"{kind}.*"] = on(dict, self.on_signal)
        return wanted

    def streams(self) -> Sequence[StreamInfo]:
        out = [
            StreamInfo(
                f"factor.{self.config.model}.*",
                DeliveryClass.LATEST_VALUE,
                f"rolling exposures on {','.join(self.factors)} after each "
                f"{self.config.bar_spec} bar",
            )
        ]
        if self.signal:
            out.append(
                StreamInfo(
                    f"factor.ic.{self.signal}",
                    DeliveryClass.LATEST_VALUE,
                    f"per-date Spearman IC of {self.config.ic_signal} and its running summary",
                )
            )
        return out

    def health_extra(self) -> Mapping[str, object]:
        return {
            "model": self.config.model,
            "factors": list(self.factors),
            "symbols": len(self.symbols),
            "signal": self.signal or None,
            "ic_dates": {h: r.n for h, r in self.running_ic.items()},
            "factor_file": None if self.file_rows is None else self._file_summary(),
        }

    def _file_summary(self) -> dict[str, object]:
        days = self.file_rows or {}
        first, last = (min(days), max(days)) if days else (None, None)
        return {
            "path": self.config.factor_file,
            "days": len(days),
            "first": None if first is None else str(np.datetime64(first, "D")),
            "last": None if last is None else str(np.datetime64(last, "D")),
            "risk_free": self.config.risk_free or None,
        }

    async def on_start(self) -> None:
        if self.config.warmup_bars and self.config.warmup_symbols:
            await self.run_in_executor(
                core.warm_up,
                self.config.warmup_bars,
                self.config.warmup_symbols,
                len(self.factors),
            )

    # ── bars → returns → exposures ─────────────────────────────────────────────────────────

    async def on_bar(self, bar: Bar, envelope: Envelope) -> None:
        if bar.spec != self.config.bar_spec:
            raise BadInput("wrong_spec", f"bar spec {bar.spec!r} is not {self.config.bar_spec!r}")
        if not (math.isfinite(bar.close) and bar.close > 0):
            raise BadInput("invalid_value", f"close {bar.close!r} is not finite and > 0", "$.c")
        if bar.symbol not in self._channels:  # checked before any state changes
            try:
                self._channels[bar.symbol] = channel("factor", self.config.model, bar.symbol)
            except ProtocolError as exc:
                raise BadInput("invalid_symbol", str(exc), "$.s") from None
        state = self.symbols.get(bar.symbol)
        if state is None:
            state = self.symbols[bar.symbol] = SymbolState(
                self.regression.add_series(), self.config.max_pending, max(self.horizons)
            )
        elif state.last_start is not None and bar.start_ns <= state.last_start:
            reason = "duplicate_bar" if bar.start_ns == state.last_start else "out_of_order"
            raise BadInput(reason, f"{bar.symbol} bar at {bar.start_ns}", "$.t")
        previous = state.last_close
        state.last_start, state.last_close = bar.start_ns, bar.close
        state.closes.append((bar.start_ns, bar.end_ns, bar.close))
        if self.signal:
            self._record_panel(bar, state)
            self._resolve_ic(bar.symbol, state)
        if math.isnan(previous):
            return
        ret = bar.close / previous - 1.0
        if bar.symbol in self.factor_returns:
            returns = self.factor_returns[bar.symbol]
            returns[bar.start_ns] = ret
            while len(returns) > self.config.max_pending:
                returns.popitem(last=False)
        if len(state.pending) == state.pending.maxlen:
            self.skipped_total.labels("pushed_out").inc()
        state.pending.append((bar.start_ns, bar.end_ns, ret))
        waiting = self.symbols if bar.symbol in self.factor_returns else {bar.symbol: state}
        for symbol, each in list(waiting.items()):
            if each.pending:
                self._drain(symbol, each, envelope)

    def _factor_return(self, factor: str, start: int) -> float | None:
        """The factor's return for the bar at ``start`` (a spread: long leg's minus short
        leg's); ``None`` until every leg has it."""
        legs = self.legs[factor]
        first = self.factor_returns[legs[0]].get(start)
        if len(legs) == 1 or first is None:
            return first
        second = self.factor_returns[legs[1]].get(start)
        return None if second is None else first - second

    async def after_batch(self) -> None:
        await self.flush()

    def _drain(self, symbol: str, state: SymbolState, envelope: Envelope) -> None:
        """Queue the symbol's waiting returns whose factor returns are all in, in order (the
        batch's ``flush`` regresses them)."""
        if self.file_rows is not None:
            self._drain_from_file(self.file_rows, symbol, state, envelope)
            return
        while state.pending:
            start, end, ret = state.pending[0]
            x = [self._factor_return(f, start) for f in self.factors]
            if None in x:
                passed = any(
                    (r and next(reversed(r)) >= start) and start not in r
                    for r in self.factor_returns.values()
                )
                if not passed:
                    return  # the factors' bar for this start may still come
                state.pending.popleft()
                self.skipped_total.labels("unmatched").inc()
                continue
            state.pending.popleft()
            self._outbox.append(
                _Regress(symbol, state.slot, start, end, ret, x, envelope.event_ns)  # type: ignore[arg-type]
            )

    def _drain_from_file(
        self,
        rows: dict[int, tuple[list[float], float]],
        symbol: str,
        state: SymbolState,
        envelope: Envelope,
    ) -> None:
        """``_drain`` with the factors' row of each return's date read from the file: queued
        now (as an excess return), or skipped when the file has no complete row that day."""
        while state.pending:
            start, end, ret = state.pending.popleft()
            row = rows.get(day_of_ns(start))
            if row is None:
                self.skipped_total.labels("unmatched").inc()
                continue
            x, risk_free = row
            self._outbox.append(
                _Regress(symbol, state.slot, start, end, ret - risk_free, x, envelope.event_ns)
            )

    async def flush(self) -> None:
        """Regress the queued bars (every symbol's next bar in one ``RollingOls.update``: a
        symbol with several queued bars takes them in as many calls) and publish everything
        queued in the order it was queued — the order a bar-at-a-time engine publishes in,
        whatever the batches were."""
        async with self._flushing:
            while self._outbox:
                queued, self._outbox = self._outbox, []
                fits = self._regress([q for q in queued if isinstance(q, _Regress)])
                stored: list[Payload] = []
                seqs: list[int] = []
                try:
                    for q in queued:
                        if isinstance(q, _Publish):
                            try:
                                published = await self.publish(
                                    channel("factor", "ic", self.signal),
                                    q.payload,
                                    event_ns=q.event_ns,
                                )
                            except Exception:  # one item's failure loses no other item
                                self.record_error("publishing an IC")
                                continue
                            self.ics.append([q.payload], seqs=[published.seq])
                            self.ic_total.inc()
                            continue
                        payload: Payload = {
                            "symbol": q.symbol,
                            "model": self.config.model,
                            "factors": list(self.factors),
                            "spec": self.config.bar_spec,
                            "start_ns": q.start,
                            "end_ns": q.end,
                            "event_ns": q.end,
                            "window": self.config.window,
                            "decay": self.config.decay,
                            **self._risk_free,
                            **fits[id(q)],
                        }
                        try:
                            published = await self.publish(
                                self._channels[q.symbol], payload, event_ns=q.event_ns
                            )
                        except Exception:  # one item's failure loses no other item
                            self.record_error(f"publishing {q.symbol}'s exposures")
                            continue
                        stored.append(payload)
                        seqs.append(published.seq)
                finally:  # what was published is stored, even if a publish failed
                    if stored:
                        self.exposures.append(stored, seqs=seqs)
                        self.published_total.inc(len(stored))

    def _regress(self, queued: list[_Regress]) -> dict[int, dict[str, Any]]:
        """Each queued bar's estimates (``Fit.row``): round r updates every slot's r-th queued
        bar, all in one call."""
        rounds: list[list[_Regress]] = []
        seen: dict[int, int] = {}
        for q in queued:
            r = seen[q.slot] = seen.get(q.slot, -1) + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(q)
        out: dict[int, dict[str, Any]] = {}
        for batch in rounds:
            fit = self.regression.update(
                np.fromiter((q.slot for q in batch), np.int64, len(batch)),
                np.fromiter((q.ret for q in batch), np.float64, len(batch)),
                np.array([q.x for q in batch], dtype=np.float64),
            )
            for q, row in zip(batch, fit.rows(self.factors), strict=True):
                out[id(q)] = row
        return out

    # ── signal → IC ────────────────────────────────────────────────────────────────────────

    async def on_signal(self, payload: dict[str, Any], envelope: Envelope) -> None:
        symbol = payload.get("symbol") if isinstance(payload, dict) else None
        if not isinstance(symbol, str) or not symbol:
            symbol = envelope.channel.rsplit(".", 1)[-1]
        path = self.config.ic_signal.partition(":")[2]
        value = field_value(payload, path)
        if value is None:
            return  # the signal is warming up
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInput("invalid_signal", f"{self.config.ic_signal} is {value!r}", f"$.{path}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond float
            number = math.inf
        if not math.isfinite(number):
            raise BadInput(
                "invalid_signal", f"{self.config.ic_signal} is {value!r}, not finite", f"$.{path}"
            )
        event_ns = payload.get("event_ns", envelope.event_ns)
        if not isinstance(event_ns, int):
            raise BadInput("invalid_signal", f"event_ns is {event_ns!r}", "$.event_ns")
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolState(
                self.regression.add_series(), self.config.max_pending, max(self.horizons)
            )
        state.signals.append((event_ns, number))

    def _record_panel(self, bar: Bar, state: SymbolState) -> None:
        """The bar's close into the panel; the symbol's previous bar gets its signal now (its
        1-bar forward return resolves with this bar, as the IC reads it)."""
        row = self.panel.get(bar.start_ns)
        if row is None:
            row = self.panel[bar.start_ns] = {}
            while len(self.panel) > self.config.tables_dates:
                self.panel.popitem(last=False)
        row[bar.symbol] = [bar.close, math.nan]
        if len(state.closes) >= 2:
            start, end, _ = state.closes[-2]
            previous = self.panel.get(start, {}).get(bar.symbol)
            if previous is not None:
                previous[1] = state.signal_at(end)

    def tables_panel(self, from_ns: int, to_ns: int) -> tuple[np.ndarray, list[str], Any, Any]:
        """The panel's dates in ``[from_ns, to_ns)`` (sorted), its symbols, and the signal and
        close matrices (dates × symbols, NaN where a symbol has no bar or no signal)."""
        dates = sorted(d for d in self.panel if from_ns <= d < to_ns)
        symbols = sorted({s for d in dates for s in self.panel[d]})
        column = {s: j for j, s in enumerate(symbols)}
        close = np.full((len(dates), len(symbols)), np.nan)
        signal = np.full_like(close, np.nan)
        for i, d in enumerate(dates):
            for s, (c, v) in self.panel[d].items():
                close[i, column[s]], signal[i, column[s]] = c, v
        return np.array(dates, dtype=np.int64), symbols, signal, close

    def _resolve_ic(self, symbol: str, state: SymbolState) -> None:
        closes = state.closes
        _, end_now, close_now = closes[-1]
        for h in self.horizons:
            if len(closes) <= h:
                continue
            start, end, close_then = closes[-1 - h]
            if start <= self._closed_through[h]:
                self.ic_skipped_total.labels("late").inc()
                continue
            pair = (state.signal_at(end), close_now / close_then - 1.0, end_now)
            dates = self._open_dates[h]
            dates.setdefault(start, {})[symbol] = pair
            for date in sorted(d for d in dates if d < start):
                self._close_date(h, date, dates.pop(date))

    def _close_date(self, h: int, date: int, pairs: dict[str, tuple[float, float, int]]) -> None:
        self._closed_through[h] = max(self._closed_through[h], date)
        usable = [(s, r) for s, r, _ in pairs.values() if math.isfinite(s) and math.isfinite(r)]
        resolved_ns = max(end for _, _, end in pairs.values())
        if len(usable) < self.config.ic_min_symbols:
            self.ic_skipped_total.labels("too_few_symbols").inc()
            return
        signal, fwd = np.array(usable).T
        ic = core.spearman(signal, fwd)
        if not math.isfinite(ic):
            self.ic_skipped_total.labels("constant").inc()
            return
        running = self.running_ic[h]
        running.add(ic)
        payload: Payload = {
            "signal": self.signal,
            "source": self.config.ic_signal,
            "horizon": h,
            "start_ns": date,
            "event_ns": resolved_ns,
            "ic": ic,
            "symbols": len(usable),
            **running.summary().to_payload(),
        }
        self._outbox.append(_Publish(payload, date))

    # ── batch (REST, compute threads) ──────────────────────────────────────────────────────

    def batch_exposures(
        self,
        returns: dict[str, np.ndarray],
        factors: dict[str, np.ndarray],
        *,
        window: int,
        decay: float,
        min_obs: int,
        hac_lags: int | None,
    ) -> dict[str, Any]:
        """Rolling estimates of every posted symbol (one vmapped call) and a full-sample OLS
        with Newey–West standard errors per symbol."""
        names = tuple(factors)
        x = np.column_stack([factors[f] for f in names])
        y = np.vstack([returns[s] for s in returns])
        series = core.rolling_ols_many(y, x, window=window, decay=decay, min_obs=min_obs)
        t = series.tvalues
        out: dict[str, Any] = {}
        for i, symbol in enumerate(returns):
            full = core.full_sample_ols(y[i], x, hac_lags=hac_lags)
            out[symbol] = {
                "alpha": _json(series.params[i, :, 0]),
                "betas": {f: _json(series.params[i, :, j + 1]) for j, f in enumerate(names)},
                "t_alpha": _json(t[i, :, 0]),
                "t_betas": {f: _json(t[i, :, j + 1]) for j, f in enumerate(names)},
                "r2": _json(series.r2[i]),
                "resid_vol": _json(series.resid_vol[i]),
                "full_sample": full.row(0, names),
            }
        return {
            "factors": list(names),
            "window": window,
            "decay": decay,
            "min_obs": core.check_params(len(names), window, decay, min_obs),
            "nobs": series.nobs.tolist(),
            "symbols": out,
        }


def _json(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]

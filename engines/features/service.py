"""Features engine (port 8500): ``bars.<spec>.*`` in, one ``features.SYM`` message per bar out.

Per symbol one ``core.FeatureStream`` (every configured indicator, O(1) amortised per bar) is
stepped with each ``protocol.records.Bar`` of the configured spec; the values after that bar are
published on ``features.SYM`` (latest-value: a slow client may see only the newest) and appended
to the engine's record store, which ``GET /features/{symbol}/latest|history`` read. A value is
``null`` until its indicator has seen its lookback of bars (and for a non-finite result).

The payload (``FeatureValues``) carries ``source``, ``symbol``, ``event_ns`` and ``values``, so it
decodes as ``protocol.records.Signal`` for a strategy, plus the bar's ``spec``, ``start_ns`` and
``end_ns``. ``event_ns`` is the bar's end (the newest market time behind the values); the store
keys records by the bar's start, as MarketData stores the bars.

Warm-up: before a symbol's first bar, the last ``warm_up_bars`` stored bars of that symbol and spec
*strictly before it* are read from the platform's storage (``Store.fetch_bars``) and stepped
through the stream unpublished, so a restart does not leave an hour of nulls. It is done per
symbol at its first bar rather than for a symbol list at start: the stored bars that precede the
first live bar are the right history whatever the clock says (a replay of 2013 under a 2025 wall
clock), and the engine needs no symbol list. An empty store, or one that is unreachable
(counted; ``/health`` says so), means no warm-up, never a failure.

VWAP is session-anchored: a bar starts a session when its UTC day, shifted by
``session_offset_ns``, differs from the previous bar's (``session_starts`` for the batch path).

Bad input is counted by the shell per reason and skipped, never fatal: a payload that is not a
bar, a bar of another spec (``wrong_spec``), a bar older than the symbol's last
(``out_of_order``) or at the same start (``duplicate_bar``), a non-finite or negative field the
configured features read (``invalid_value``). The stream's state is untouched by a refused bar.

Limits: bars carry no quotes, so quote features (OFI) cannot be configured here; one bar spec per
engine (run a second engine for another spec); the streaming update runs on the event loop (one
symbol-bar of the default set is ~0.1–0.3 ms of Python), the batch compute on the compute threads.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from engines.features import core
from engines.marketdata.core import BarSpec
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass, channel
from protocol.records import BadInput, Bar
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import MAX_PAGE_ROWS, RecordStore, Storage, StoreUnavailable

DAY_NS = 86_400_000_000_000
#: Bar inputs a bar stream cannot give (bars carry no quotes).
QUOTE_INPUTS = frozenset({"bid", "ask", "bid_size", "ask_size"})


def parse_feature(entry: str) -> core.FeatureRequest:
    """One ``features`` setting entry: ``[key=]FUNC[:param=value]...``, e.g. ``RSI``,
    ``sma50=SMA:timeperiod=50``, ``BBANDS:timeperiod=20:nbdevup=2.5``. ``ValueError`` names the
    entry; the parameters themselves are checked against the catalog by ``FeatureStream``."""
    head, *assignments = entry.strip().split(":")
    key, _, function = head.rpartition("=")
    if not function:
        raise ValueError(f"features: {entry!r} names no function")
    params: dict[str, float | int] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"features: {entry!r}: {assignment!r} is not param=value")
        try:
            params[name] = int(raw)
        except ValueError:
            try:
                params[name] = float(raw)
            except ValueError:
                raise ValueError(f"features: {entry!r}: {name}={raw!r} is not a number") from None
    return core.FeatureRequest(function.upper(), params, key or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeaturesConfig(EngineConfig):
    """Which bars, which features, how much stored history to replay, how big a POST may be."""

    name: str = field(default="features", metadata={"help": "engine name", "env": False})
    bar_spec: str = field(
        default="1m", metadata=described("bar spec consumed: bars.<spec>.* (1m, 5m, volume50000…)")
    )
    features: tuple[str, ...] = field(
        default=(),
        metadata=described(
            "streamed features, [key=]FUNC[:param=value]... ('' = the core's default set: every "
            "TA-Lib function at its defaults and the bar estimators)"
        ),
    )
    session_offset_ns: int = field(
        default=0, metadata=described("VWAP session cut after UTC midnight, ns")
    )
    warm_up_bars: int = field(
        default=500,
        metadata=described("stored bars of a symbol replayed before its first bar (0 = none)"),
    )
    max_compute_bars: int = field(
        default=250_000, metadata=described("most bars one POST /features/compute may carry")
    )
    max_compute_functions: int = field(
        default=64, metadata=described("most functions one POST /features/compute may name")
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        BarSpec.parse(self.bar_spec)
        if not 0 <= self.session_offset_ns < DAY_NS:
            raise ValueError(
                f"session_offset_ns must be in [0, {DAY_NS}), got {self.session_offset_ns}"
            )
        if self.warm_up_bars < 0:
            raise ValueError(f"warm_up_bars must be >= 0, got {self.warm_up_bars}")
        if self.max_compute_bars < 1 or self.max_compute_functions < 1:
            raise ValueError("max_compute_bars and max_compute_functions must be >= 1")
        requests = self.requests()
        for request in requests:
            spec = core.CATALOG.get(request.function)
            if spec is None:
                raise ValueError(f"features: unknown function {request.function!r}")
            quoted = QUOTE_INPUTS.intersection(spec.inputs)
            if quoted:
                raise ValueError(
                    f"features: {request.function} needs quotes ({', '.join(sorted(quoted))}), "
                    "which bars do not carry"
                )
        try:
            core.FeatureStream(requests)
        except core.FeatureInputError as exc:
            raise ValueError(f"features: {exc}") from None

    def requests(self) -> tuple[core.FeatureRequest, ...]:
        """The streamed set: the configured entries, or the core's default set."""
        if not self.features:
            return core.DEFAULT_FEATURES
        return tuple(parse_feature(entry) for entry in self.features)


class FeatureValues(msgspec.Struct, frozen=True, kw_only=True):
    """One published message (``features.SYM``), as stored and served; decodes as ``Signal``."""

    source: str = "features"
    symbol: str
    spec: str
    start_ns: int
    end_ns: int
    event_ns: int
    values: dict[str, float | None]


def session_day(start_ns: int, offset_ns: int) -> int:
    """The session (day number) a bar starting at ``start_ns`` belongs to."""
    return (start_ns - offset_ns) // DAY_NS


def session_starts(start_ns: npt.NDArray[np.int64], offset_ns: int) -> npt.NDArray[np.float64]:
    """VWAP's ``session_start`` input for bars starting at ``start_ns`` (ascending): 1 where the
    session differs from the previous bar's (and at the first bar), else 0 — the streaming rule."""
    days = (np.asarray(start_ns, dtype=np.int64) - offset_ns) // DAY_NS
    flags = np.ones(days.shape[0], dtype=np.float64)
    flags[1:] = days[1:] != days[:-1]
    return flags


def finite(values: dict[str, float | None]) -> dict[str, float | None]:
    """``values`` with any infinite value as ``None`` (the stream already gives NaN as ``None``);
    the common all-finite case costs one sum."""
    if math.isfinite(sum(v for v in values.values() if v is not None)):
        return values
    return {k: v if v is None or math.isfinite(v) else None for k, v in values.items()}


class SymbolStream:
    """One symbol's stream and where it stands: the last bar's start and session."""

    __slots__ = ("day", "last_start_ns", "stream", "warmed")

    def __init__(self, stream: core.FeatureStream) -> None:
        self.stream = stream
        self.last_start_ns: int | None = None
        self.day: int | None = None
        self.warmed = 0

    def step(self, row: Bar, offset_ns: int) -> dict[str, float | None]:
        """Step one bar (``FeatureInputError`` before any state changes for a bad one)."""
        day = session_day(row.start_ns, offset_ns)
        values = self.stream.update(
            row.open, row.high, row.low, row.close, row.volume, session_start=day != self.day
        )
        self.day = day
        self.last_start_ns = row.start_ns
        return values


class FeaturesEngine(Engine[FeaturesConfig]):
    """One ``FeatureStream`` per symbol; values on ``features.SYM`` and in the store."""

    config_type = FeaturesConfig

    def __init__(
        self, config: FeaturesConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.requests = config.requests()
        #: the published value keys, in order (``FeatureStream.keys``)
        self.keys: tuple[str, ...] = core.FeatureStream(self.requests).keys
        self.symbols: dict[str, SymbolStream] = {}
        self.values: RecordStore[FeatureValues] = self.storage.records(
            self.name, "features", FeatureValues, key=lambda v: v.symbol, time=lambda v: v.start_ns
        )
        spec = BarSpec.parse(config.bar_spec)
        #: first warm-up window: twice the span of the bars wanted (time bars), else a day
        self._warm_up_span_ns = (
            max(2 * config.warm_up_bars * spec.interval_ns, DAY_NS)
            if spec.kind == "time"
            else DAY_NS
        )
        self._warm_up_failures = 0
        self.bars_total = Counter(
            "nautilus_features_bars", "bars stepped and published", registry=self.metrics.registry
        )
        self.warm_up_bars_total = Counter(
            "nautilus_features_warm_up_bars",
            "stored bars replayed before a symbol's first bar",
            registry=self.metrics.registry,
        )
        self.warm_up_failures_total = Counter(
            "nautilus_features_warm_up_failures",
            "symbols started without warm-up: the store was unavailable",
            registry=self.metrics.registry,
        )
        self.warm_up_skipped_total = Counter(
            "nautilus_features_warm_up_skipped_bars",
            "stored bars refused during warm-up (a non-finite or negative field)",
            registry=self.metrics.registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {f"bars.{self.config.bar_spec}.*": on(Bar, self.on_bar)}

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo(
                "features.*",
                DeliveryClass.LATEST_VALUE,
                f"every feature of a symbol after each {self.config.bar_spec} bar "
                "(null during warm-up)",
            ),
        )

    def health_extra(self) -> Mapping[str, object]:
        return {
            "spec": self.config.bar_spec,
            "features": len(self.keys),
            "symbols": len(self.symbols),
            "warm_up": {
                "bars": {s: state.warmed for s, state in self.symbols.items()},
                "failures": self._warm_up_failures,
            },
        }

    def health_issues(self) -> list[str]:
        if self._warm_up_failures:
            return [f"{self._warm_up_failures} symbol(s) started without warm-up (store down)"]
        return []

    # ── per message ────────────────────────────────────────────────────────────────────────

    async def on_bar(self, bar: Bar, envelope: Envelope) -> None:
        if bar.spec != self.config.bar_spec:
            raise BadInput("wrong_spec", f"bar spec {bar.spec!r} is not {self.config.bar_spec!r}")
        state = self.symbols.get(bar.symbol)
        if state is None:
            state = await self._start_symbol(bar.symbol, bar.start_ns)
        elif state.last_start_ns is not None and bar.start_ns <= state.last_start_ns:
            reason = "duplicate_bar" if bar.start_ns == state.last_start_ns else "out_of_order"
            raise BadInput(
                reason, f"{bar.symbol} bar at {bar.start_ns} after {state.last_start_ns}", "$.t"
            )
        try:
            values = state.step(bar, self.config.session_offset_ns)
        except core.FeatureInputError as exc:
            raise BadInput("invalid_value", str(exc), exc.parameter) from None
        record = FeatureValues(
            symbol=bar.symbol,
            spec=bar.spec,
            start_ns=bar.start_ns,
            end_ns=bar.end_ns,
            event_ns=bar.end_ns,
            values=finite(values),
        )
        published = await self.publish(
            channel("features", bar.symbol), msgspec.to_builtins(record), event_ns=envelope.event_ns
        )
        self.values.append([record], seqs=[published.seq])
        self.bars_total.inc()

    async def _start_symbol(self, symbol: str, before_ns: int) -> SymbolStream:
        """A new symbol's stream, warmed with its stored bars before ``before_ns``."""
        state = SymbolStream(core.FeatureStream(self.requests))
        try:
            history = await self.warm_up_history(symbol, before_ns)
        except StoreUnavailable as exc:
            self._warm_up_failures += 1
            self.warm_up_failures_total.inc()
            self.log.warning("features: no warm-up for %s, store unavailable: %s", symbol, exc)
            history = []
        for row in history:
            try:
                state.step(row, self.config.session_offset_ns)
            except core.FeatureInputError:
                self.warm_up_skipped_total.inc()
                continue
            state.warmed += 1
        self.warm_up_bars_total.inc(state.warmed)
        self.symbols[symbol] = state
        return state

    async def warm_up_history(self, symbol: str, before_ns: int) -> list[Bar]:
        """The last ``warm_up_bars`` stored bars of ``symbol`` starting before ``before_ns``,
        oldest first. The store pages forwards only, so windows walk backwards from
        ``before_ns``, each twice as long as the last, until enough bars or time 0."""
        wanted = self.config.warm_up_bars
        chunks: list[list[Bar]] = []
        found, hi, span = 0, before_ns, self._warm_up_span_ns
        while found < wanted and hi > 0:
            lo = max(0, hi - span)
            chunk = await self.stored_bars(
                symbol, self.config.bar_spec, lo, hi, keep=wanted - found
            )
            chunks.append(chunk)
            found += len(chunk)
            hi, span = lo, 2 * span
        return [row for chunk in reversed(chunks) for row in chunk][-wanted:] if wanted else []

    async def stored_bars(
        self,
        symbol: str,
        spec: str,
        from_ns: int,
        to_ns: int,
        *,
        keep: int | None = None,
        most: int | None = None,
    ) -> list[Bar]:
        """Stored bars with ``from_ns <= start_ns < to_ns``, oldest first. With ``keep``, only
        the newest ``keep`` of them (bounded memory however many the range holds); with
        ``most``, reading stops once more than ``most`` are found (the caller refuses those)."""
        rows: deque[Bar] | list[Bar] = deque(maxlen=keep) if keep is not None else []
        cursor: str | None = None
        while True:
            page = await self.storage.store.fetch_bars(
                symbol, spec, from_ns, to_ns, MAX_PAGE_ROWS, cursor
            )
            rows.extend(page.items)
            cursor = page.next_cursor
            if cursor is None or (most is not None and len(rows) > most):
                return list(rows)

    def bar_columns(
        self, rows: Sequence[Bar]
    ) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]]]:
        """Stored bars as the batch path's inputs: bar starts, OHLCV and ``session_start`` by the
        stream's session rule, so batch over them equals what the stream published."""
        n = len(rows)
        start_ns = np.fromiter((r.start_ns for r in rows), dtype=np.int64, count=n)
        columns = {
            f: np.fromiter((getattr(r, f) for r in rows), dtype=np.float64, count=n)
            for f in ("open", "high", "low", "close", "volume")
        }
        columns["session_start"] = session_starts(start_ns, self.config.session_offset_ns)
        return start_ns, columns

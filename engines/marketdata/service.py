"""The MarketData engine (port 8800): replays a feed onto the bus and into storage.

One producer task paces the configured feed (``realtime.replay.Pacer``: recorded time → wall
time at ``speed``; 0 = as fast as the loop can go) and, for each wake-up's slice of due events:

* publishes ``trades.SYM`` (ordered-lossless), ``quotes.SYM`` (latest-value), ``book.SYM``
  (latest-value: the top ``book_depth`` levels of the rebuilt L2 book, once per slice in which it
  changed) and ``bars.<spec>.SYM`` for every bar the slice completes (``chunk_bars``);
* writes trades, quotes and bars to the ``Store`` (non-blocking ``write_*``: PostgreSQL queues to
  a bound and counts what it cannot keep; without a DSN a bounded memory store).

Published envelopes carry the replay (due) time as ``event_ns``, as ``realtime.replay`` does, so
stage latencies stay meaningful; the recorded exchange time is the payload's ``t``. Trades are
published from columns (one payload dict per trade, built directly) through the bus's
synchronous ``publish_nowait`` when it has one, and stored as the ``Trade`` records the store
keeps (``TradeColumns.trades()``; quotes and bars are stored as the records published).

Live (``feed=live``): a ``live.LiveAdapter`` (Binance combined streams + REST snapshots) feeds the
same Binance path as the replay, each record as it arrives (no pacing; the envelope's
``event_ns`` is the arrival time); when a book finds a gap the engine asks the adapter to resync.

Looping (``loop``): each lap starts its pacing afresh and rebuilds bars; only the first lap is
stored, so a looping demo does not write the same day again and again. Lap ``k`` of the SPY
replay is shifted ``k`` whole weeks later (7–11 Oct 2013, then 14–18 Oct, …): consumers see time
move forward, never back (a bar of lap 2 is not "out of order" after lap 1), and weekday and time
of day stay those of the recording. The Binance file and the simulator are not shifted.

Daily history (``daily``, on by default): a second producer task reads the bundled Lean daily
files (``daily.read_daily_bars``, raw prices, one executor call per symbol, so the replay's first
trade does not wait) into ``daily_store`` as ``1d`` bars over ``[session date 00:00 UTC, +1 day)``
keyed by ``(symbol, "1d", start_ns)``: written again on a restart or reload, a bar replaces
itself. ``GET /bars?spec=1d`` serves them; ``bars_page`` adjusts any page at read time
(``adjustment=raw|split|total``, the factor files' ``Scaling``). A daily bar has no trade count
(0) and no dollar volume (NaN, ``null`` in JSON): the Lean daily files carry neither.

Why ``daily_store`` is the engine's own bounded memory store and not the platform's ``bars``
table: that table is range-partitioned per UTC day, so 23 years of history is ~5,850 partitions;
creating them outlasts the writer's 30 s batch timeout and a read over them takes a lock per
partition and index, more than PostgreSQL's default lock table holds ("out of shared memory",
measured). The rows and keys are the ``bars`` table's, so moving them there is one line once
that table can hold decades (coarser partitions for old data).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.marketdata.chunk_bars import ChunkBarBuilder, chunk_bar_builder
from engines.marketdata.core import BarSpec, BookState, OrderBook, SaleConditionFilter
from engines.marketdata.daily import (
    DAY_NS,
    Adjustment,
    daily_tickers,
    new_york_dates,
    read_daily_bars,
    scaling,
    session_start_ns,
)
from engines.marketdata.feeds import (
    BinanceEvent,
    FeedErrors,
    SimulatedEvents,
    SimulatorConfig,
    SyntheticMarket,
    lean_days,
    lean_tick_path,
    local_ms_to_utc_ns,
    read_binance_feed,
    read_lean_trade_ticks,
)
from engines.marketdata.live import (
    BINANCE_DEPTH_URL,
    BINANCE_STREAM_URL,
    BinanceAdapter,
    BinanceAdapterConfig,
    LiveAdapter,
)
from engines.marketdata.normalize import (
    BINANCE_INSTRUMENT,
    SPY_INSTRUMENT,
    sim_instrument,
    trade_payloads,
)
from engines.marketdata.records import Bar, BookDelta, BookSnapshot, Quote, Trade, TradeColumns
from engines.shell.config import EngineConfig
from engines.shell.lifecycle import Engine, StreamInfo
from protocol.channels import DeliveryClass, bars, book, quotes, trades
from realtime.bus import Bus
from realtime.clock import Clock
from realtime.config import described
from realtime.replay import MAX_EVENTS_PER_WAKE, Pacer
from realtime.storage import (
    InstrumentRow,
    MemoryStore,
    Page,
    Storage,
    Store,
    StoreUnavailable,
)

__all__ = ["FeedSource", "MarketDataConfig", "MarketDataEngine"]

#: Trades per chunk read from a day's columns (the pacer then slices chunks per wake-up).
CHUNK_ROWS = 16_384
#: The spec daily history is stored and served under.
DAILY_SPEC = "1d"
#: How long a ``1d`` read of a daily symbol waits for the history still loading (then 503).
DAILY_WAIT_S = 30.0
#: The daily load starts once the replay has its first chunk, or after this long at most.
DAILY_AFTER_FEED_S = 10.0
#: Book states as /health names them.
_BOOK_STATE = {
    BookState.AWAITING_SNAPSHOT: "awaiting-snapshot",
    BookState.SYNCING: "syncing",
    BookState.LIVE: "synced",
    BookState.NEEDS_RESYNC: "resyncing",
}


class FeedSource(StrEnum):
    SPY = "spy"  # bundled Lean SPY trade ticks, 7-11 Oct 2013
    BINANCE = "binance"  # bundled Binance BTCUSDT raw feed: trades, bookTicker, depth diffs
    SIM = "sim"  # seeded synthetic multi-symbol market (endless)
    LIVE = "live"  # a Binance-compatible exchange: combined WebSocket streams + REST snapshots
    NONE = "none"  # no feed: REST over what is stored


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketDataConfig(EngineConfig):
    """MarketData settings (``NAUTILUS_MARKETDATA_<FIELD>``)."""

    name: str = field(default="marketdata", metadata={"help": "engine name", "env": False})
    feed: FeedSource = field(
        default=FeedSource.SPY, metadata=described("feed: spy, binance, sim, live or none")
    )
    speed: float = field(
        default=1.0, metadata=described("replay speed: 1 = as recorded, 10 = ten times, 0 = max")
    )
    days: tuple[str, ...] = field(
        default=(), metadata=described("SPY: trading days YYYY-MM-DD, comma-separated ('' = all 5)")
    )
    start: str = field(
        default="09:30", metadata=described("SPY: New York time of day to start from ('' = 04:00)")
    )
    end: str = field(
        default="", metadata=described("SPY: New York time of day to stop before ('' = day end)")
    )
    loop: bool = field(
        default=True, metadata=described("start again after the last event (only lap 1 is stored)")
    )
    bar_specs: tuple[str, ...] = field(
        default=("1m", "5m", "volume50000"),
        metadata=described("bars to build: 1s 1m 5m 1h 1d, tickN, volumeN, dollarN"),
    )
    book_depth: int = field(default=10, metadata=described("levels per side on book.SYM"))
    condition_filter: bool = field(
        default=True,
        metadata=described("SPY: Lean sale-condition filter for bars (auction prints out)"),
    )
    persist: bool = field(
        default=True, metadata=described("store trades, quotes and bars (false: stream only)")
    )
    sim_symbols: int = field(default=20, metadata=described("sim: number of symbols"))
    sim_rate: float = field(default=2_000.0, metadata=described("sim: events per second"))
    seed: int = field(default=7, metadata=described("sim: random seed"))
    live_url: str = field(
        default=BINANCE_STREAM_URL, metadata=described("live: combined-stream WebSocket URL")
    )
    live_rest_url: str = field(
        default=BINANCE_DEPTH_URL, metadata=described("live: REST depth-snapshot URL")
    )
    live_symbols: tuple[str, ...] = field(
        default=("BTCUSDT",), metadata=described("live: symbols, comma-separated (BTCUSDT,ETHUSDT)")
    )
    daily: bool = field(
        default=True,
        metadata=described("load the bundled Lean daily history at start (GET /bars?spec=1d)"),
    )
    daily_symbols: tuple[str, ...] = field(
        default=(),
        metadata=described("daily: tickers, comma-separated ('' = all 13 bundled: AAPL,...,WM)"),
    )
    daily_from: str = field(
        default="",
        metadata=described("daily: first session date YYYY-MM-DD ('' = each symbol's first)"),
    )
    daily_to: str = field(
        default="",
        metadata=described("daily: last session date YYYY-MM-DD ('' = the last, 2021-03-31)"),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = max), got {self.speed}")
        for day in self.days:
            date.fromisoformat(day)
        for moment in (self.start, self.end):
            if moment:
                time.fromisoformat(moment)
        for spec in self.bar_specs:
            BarSpec.parse(spec)
        if self.book_depth < 1:
            raise ValueError(f"book_depth must be >= 1, got {self.book_depth}")
        if self.sim_symbols < 1 or self.sim_rate <= 0:
            raise ValueError("sim_symbols must be >= 1 and sim_rate > 0")
        if not self.live_symbols:
            raise ValueError("live_symbols must name at least one symbol")
        unknown = sorted(set(self.daily_universe()) - set(daily_tickers()))
        if unknown:
            raise ValueError(
                f"daily_symbols: no bundled daily data for {', '.join(unknown)};"
                f" known: {', '.join(daily_tickers())}"
            )
        first, last = self.daily_dates()
        if first is not None and last is not None and first > last:
            raise ValueError(f"daily_from {first} is after daily_to {last}")

    def daily_universe(self) -> tuple[str, ...]:
        """The daily symbols, upper case, in the order given (all bundled when none given)."""
        if not self.daily_symbols:
            return tuple(daily_tickers())
        return tuple(dict.fromkeys(s.strip().upper() for s in self.daily_symbols))

    def daily_dates(self) -> tuple[date | None, date | None]:
        """``daily_from`` and ``daily_to`` (inclusive), ``None`` where open."""
        return _iso_date("daily_from", self.daily_from), _iso_date("daily_to", self.daily_to)

    def spy_days(self) -> list[date]:
        return [date.fromisoformat(d) for d in self.days] if self.days else lean_days("spy")

    def simulator(self) -> SimulatorConfig:
        return SimulatorConfig(
            n_symbols=self.sim_symbols, events_per_second=self.sim_rate, seed=self.seed
        )

    def live_adapter(self) -> BinanceAdapterConfig:
        return BinanceAdapterConfig(
            url=self.live_url,
            rest_url=self.live_rest_url,
            symbols=tuple(s.upper() for s in self.live_symbols),
        )


@dataclass(frozen=True, slots=True, eq=False)
class BinanceChunk:
    """Consecutive Binance records, paced by their receive time (the file's order)."""

    events: list[BinanceEvent]
    receive_ns: npt.NDArray[np.int64]


FeedChunk = TradeColumns | SimulatedEvents | BinanceChunk


@dataclass(slots=True)
class DailyProgress:
    """Where the daily-history load is, for ``/health``."""

    state: str = "off"  # off, loading, loaded
    symbols: int = 0
    bars: int = 0
    load_s: float | None = None


@dataclass(slots=True)
class ReplayProgress:
    """Where the replay is, for ``/health``."""

    laps: int = 0
    done: bool = False
    position_ns: int | None = None  # recorded time of the last event published
    behind_ns: int = 0  # how late the last slice was against its due time
    published: dict[str, int] = field(
        default_factory=lambda: {"trades": 0, "quotes": 0, "book": 0, "bars": 0}
    )


class MarketDataEngine(Engine[MarketDataConfig]):
    config_type = MarketDataConfig

    def __init__(
        self,
        config: MarketDataConfig,
        *,
        bus: Bus,
        clock: Clock,
        storage: Storage | None = None,
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.store: Store = self.storage.store
        self.sale_filter = (
            SaleConditionFilter.lean_default()
            if config.condition_filter
            else SaleConditionFilter.none()
        )
        self.books: dict[str, OrderBook] = {}
        self.crossed: dict[str, int] = {}
        self.latest_quotes: dict[str, Quote] = {}
        self.feed_errors = FeedErrors()
        self.progress = ReplayProgress()
        self._builders: dict[str, list[ChunkBarBuilder]] = {}
        self._persist = config.persist
        self.daily_symbols = frozenset(config.daily_universe()) if config.daily else frozenset()
        self.daily_store = MemoryStore()
        self.daily_progress = DailyProgress()
        self._daily_loaded = asyncio.Event()
        self._feed_read = asyncio.Event()  # the replay's first chunk is in: the daily load may go
        self.live_adapter: LiveAdapter | None = (
            BinanceAdapter(config.live_adapter(), clock=clock, errors=self.feed_errors)
            if config.feed is FeedSource.LIVE
            else None
        )

    # ── shell hooks ─────────────────────────────────────────────────────────────────────────

    def streams(self) -> Sequence[StreamInfo]:
        lossless, latest = DeliveryClass.ORDERED_LOSSLESS, DeliveryClass.LATEST_VALUE
        found = [
            StreamInfo("trades.*", lossless, "every trade print (records.Trade payload)"),
            StreamInfo("quotes.*", latest, "best bid/offer (records.Quote payload)"),
            StreamInfo(
                "book.*", latest, f"top {self.config.book_depth} levels of the rebuilt L2 book"
            ),
        ]
        found += [
            StreamInfo(f"bars.{spec}.*", lossless, f"completed {spec} bars (records.Bar)")
            for spec in self.config.bar_specs
        ]
        return found

    def declared_channels(self) -> tuple[str, ...]:
        """The concrete channels the configured feed publishes (for ``Hub.declare``)."""
        feed = self.config.feed
        if feed is FeedSource.SPY:
            symbols, kinds = ["SPY"], [trades]
        elif feed is FeedSource.BINANCE:
            symbols, kinds = ["BTCUSDT"], [trades, quotes, book]
        elif feed is FeedSource.SIM:
            symbols, kinds = self.config.simulator().symbols(), [trades, quotes]
        elif feed is FeedSource.LIVE:
            symbols, kinds = list(self.config.live_adapter().symbols), [trades, quotes, book]
        else:
            return ()
        names = [kind(s) for s in symbols for kind in kinds]
        names += [bars(spec, s) for s in symbols for spec in self.config.bar_specs]
        return tuple(names)

    def health_extra(self) -> Mapping[str, object]:
        progress, position = self.progress, self.progress.position_ns
        live = self.live_adapter
        return {
            "feed": {
                **({"live": dataclasses.asdict(live.stats)} if live is not None else {}),
                "source": self.config.feed.value,
                "speed": self.config.speed,
                "loop": self.config.loop,
                "laps": progress.laps,
                "done": progress.done,
                "position_ns": position,
                "position": None if position is None else _iso(position),
                "behind_s": progress.behind_ns / 1e9,
                "malformed_lines": self.feed_errors.count,
                "malformed_examples": [
                    f"{e.source}:{e.line}: {e.reason}" for e in self.feed_errors.errors[:5]
                ],
            },
            "published": dict(progress.published),
            "daily": dataclasses.asdict(self.daily_progress),
            "books": {
                symbol: {
                    "state": _BOOK_STATE[b.state],
                    "last_update_id": b.last_update_id,
                    "gaps": b.gaps,
                    "resyncs": b.resyncs,
                    "stale_diffs": b.stale,
                    "crossed": self.crossed.get(symbol, 0),
                }
                for symbol, b in self.books.items()
            },
        }

    def health_issues(self) -> list[str]:
        issues: list[str] = []
        for symbol, b in self.books.items():
            if b.state is BookState.NEEDS_RESYNC:
                issues.append(f"book {symbol} resyncing after {b.gaps} gap(s)")
        live = self.live_adapter
        if live is not None and not live.stats.connected:
            issues.append(f"live feed disconnected ({live.stats.last_error or 'connecting'})")
        return issues

    async def on_start(self) -> None:
        self.spawn(self._store_instruments, name="instruments")
        if self.config.daily:
            self.daily_progress.state = "loading"
            self.spawn(self._load_daily, name="daily history")
        if self.config.feed in (FeedSource.NONE, FeedSource.LIVE):
            self._feed_read.set()  # no file to read first
        if self.config.feed is FeedSource.NONE:
            self.progress.done = True
        else:
            self.spawn(self._run_feed, name=f"feed {self.config.feed.value}")

    async def on_stop(self) -> None:
        if self.live_adapter is not None:
            await self.live_adapter.close()

    # ── storage ─────────────────────────────────────────────────────────────────────────────

    async def _store_instruments(self) -> None:
        """Once the platform's storage accepts writes (at once, or when PostgreSQL is back)."""
        await self.storage.ready.wait()
        try:
            await self.store.upsert_instruments(self._instruments())
        except StoreUnavailable as exc:
            self.log.warning("instruments not stored (%s)", exc)

    def _instruments(self) -> list[InstrumentRow]:
        feed = self.config.feed
        if feed is FeedSource.SPY:
            return [SPY_INSTRUMENT]
        if feed is FeedSource.BINANCE:
            return [BINANCE_INSTRUMENT]
        if feed is FeedSource.SIM:
            sim = self.config.simulator()
            return [sim_instrument(s, sim.price_precision) for s in sim.symbols()]
        if feed is FeedSource.LIVE:  # every live symbol on BTCUSDT's grids (as _on_binance)
            symbols = self.config.live_adapter().symbols
            return [dataclasses.replace(BINANCE_INSTRUMENT, symbol=s) for s in symbols]
        return []

    # ── daily history ───────────────────────────────────────────────────────────────────────

    async def _load_daily(self) -> None:
        """Each daily symbol's raw bars, read off the loop, into ``daily_store`` (upserted).

        Starts once the replay holds its first chunk: both reads are Python-heavy and share the
        GIL, and the first trade should not wait for 23 years of history (measured: +0.3 s)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._feed_read.wait(), DAILY_AFTER_FEED_S)
        started = self.clock.now_ns()
        progress = self.daily_progress = DailyProgress(state="loading")
        for symbol in self.config.daily_universe():
            rows = await self.run_in_executor(self._daily_rows, symbol)
            progress.bars += self.daily_store.write_bars(rows)
            progress.symbols += 1
        progress.load_s = (self.clock.now_ns() - started) / 1e9
        progress.state = "loaded"
        self._daily_loaded.set()
        self.log.info(
            "marketdata: daily history: %d bars of %d symbols loaded in %.2fs",
            progress.bars,
            progress.symbols,
            progress.load_s,
        )

    def _daily_rows(self, symbol: str) -> list[Bar]:
        bars = read_daily_bars(symbol, Adjustment.RAW)
        keep = np.ones(len(bars), dtype=bool)
        first, last = self.config.daily_dates()
        if first is not None:
            keep &= bars.date >= np.datetime64(first, "D")
        if last is not None:
            keep &= bars.date <= np.datetime64(last, "D")
        nan = float("nan")
        return [
            Bar(symbol, DAILY_SPEC, start, start + DAY_NS, o, h, lo, c, v, nan, 0)
            for start, o, h, lo, c, v in zip(
                session_start_ns(bars.date[keep]).tolist(),
                bars.open[keep].tolist(),
                bars.high[keep].tolist(),
                bars.low[keep].tolist(),
                bars.close[keep].tolist(),
                bars.volume[keep].tolist(),
                strict=True,
            )
        ]

    async def bars_page(
        self,
        symbol: str,
        spec: str,
        adjustment: Adjustment,
        from_ns: int,
        to_ns: int,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Bar]:
        """A page of ``symbol``'s ``spec`` bars, adjusted. ``1d`` bars of a daily symbol come from
        the daily history (waiting for its load, ``StoreUnavailable`` after ``DAILY_WAIT_S``),
        every other page from the platform's store."""
        if spec == DAILY_SPEC and symbol in self.daily_symbols:
            try:
                await asyncio.wait_for(self._daily_loaded.wait(), DAILY_WAIT_S)
            except TimeoutError:
                raise StoreUnavailable("daily history still loading") from None
            store: Store = self.daily_store
        else:
            store = self.store
        page = await store.fetch_bars(symbol, spec, from_ns, to_ns, limit, cursor)
        if adjustment is Adjustment.RAW or not page.items:
            return page
        return Page(_adjusted(page.items, adjustment), page.next_cursor)

    # ── replay ──────────────────────────────────────────────────────────────────────────────

    async def _run_feed(self) -> None:
        if self.live_adapter is not None:
            await self._run_live(self.live_adapter)
            return
        while True:
            self._builders.clear()
            await self._replay_lap()
            self.progress.laps += 1
            if not self.config.loop:
                break
            self._persist = False
        self.progress.done = True
        self.log.info("marketdata: replay finished after %d lap(s)", self.progress.laps)

    async def _run_live(self, adapter: LiveAdapter) -> None:
        """Each record through the replay's Binance path as it arrives; a book left waiting for a
        snapshot (a gap) asks the adapter for one (repeat asks are ignored while it comes)."""
        async for event in adapter.events():
            now = self.clock.now_ns()
            await self._on_binance([event], [now])
            if self.progress.position_ns is not None:
                await self._close_time_bars(self.progress.position_ns, now)
            resync = isinstance(event, BookDelta) and (
                self.books[event.symbol].state is BookState.NEEDS_RESYNC
            )
            if resync:
                await adapter.resync(event.symbol)
        self.progress.done = True

    async def _replay_lap(self) -> None:
        pacer: Pacer | None = None
        async for chunk, new_session in self._chunks():
            self._feed_read.set()
            pace_ns = chunk.receive_ns if isinstance(chunk, BinanceChunk) else chunk.event_ns
            if len(pace_ns) == 0:
                continue
            if pacer is None or new_session:
                pacer = Pacer(self.config.speed, int(pace_ns[0]), self.clock.now_ns())
            due = pacer.due_ns(pace_ns)
            i, n = 0, len(pace_ns)
            while i < n:
                now = self.clock.now_ns()
                if due[i] > now:
                    await asyncio.sleep((int(due[i]) - now) / 1e9)
                    continue
                end = min(n, i + MAX_EVENTS_PER_WAKE, int(np.searchsorted(due, now, "right")))
                end = max(end, i + 1)
                await self._process(chunk, i, end, due[i:end].tolist())
                self.progress.behind_ns = max(0, now - int(due[end - 1]))
                i = end
                await asyncio.sleep(0)  # let the hub fan out what was just published

    async def _chunks(self) -> AsyncIterator[tuple[FeedChunk, bool]]:
        """The lap's chunks, and whether each starts a new session (a new SPY day: pacing
        restarts there, so a 1x replay does not wait out the night)."""
        feed = self.config.feed
        if feed is FeedSource.SPY:
            shift_ns = self.progress.laps * lap_shift_ns(self.config.spy_days())
            for day in self.config.spy_days():
                columns = await self.run_in_executor(self._read_spy_day, day)
                if shift_ns:
                    columns = dataclasses.replace(
                        columns,
                        event_ns=columns.event_ns + shift_ns,
                        receive_ns=columns.receive_ns + shift_ns,
                    )
                for start in range(0, len(columns), CHUNK_ROWS):
                    yield columns.select(slice(start, start + CHUNK_ROWS)), start == 0
                await self._complete_bars()  # the day is over: its last time bars are complete
        elif feed is FeedSource.BINANCE:
            events = await self.run_in_executor(
                lambda: list(read_binance_feed(errors=self.feed_errors))
            )
            receive = np.array([e.receive_ns for e in events], dtype=np.int64)
            for start in range(0, len(events), CHUNK_ROWS):
                stop = start + CHUNK_ROWS
                yield BinanceChunk(events[start:stop], receive[start:stop]), False
            await self._complete_bars()
        elif feed is FeedSource.SIM:
            market = SyntheticMarket(self.config.simulator())
            while True:
                yield market.next_chunk(4096), False

    def _read_spy_day(self, day: date) -> TradeColumns:
        columns = read_lean_trade_ticks(lean_tick_path(day), symbol="SPY", errors=self.feed_errors)
        keep = np.ones(len(columns), dtype=bool)
        if self.config.start:
            keep &= columns.event_ns >= _new_york_ns(day, time.fromisoformat(self.config.start))
        if self.config.end:
            keep &= columns.event_ns < _new_york_ns(day, time.fromisoformat(self.config.end))
        return columns if keep.all() else columns.select(keep)

    async def _process(self, chunk: FeedChunk, i: int, end: int, due: list[int]) -> None:
        if isinstance(chunk, TradeColumns):
            part = chunk.select(slice(i, end))
            await self._on_trades(part, due)
            self.progress.position_ns = int(part.event_ns[-1])
        elif isinstance(chunk, SimulatedEvents):
            await self._on_simulated(chunk, i, end, due)
        else:
            await self._on_binance(chunk.events[i:end], due)
        if self.progress.position_ns is not None:
            await self._close_time_bars(self.progress.position_ns, due[-1])

    async def _on_trades(self, part: TradeColumns, due: list[int]) -> None:
        """One symbol's trades: publish, store, feed the bar builders."""
        await self._publish_each(trades(part.symbol), trade_payloads(part), due, "trades")
        if self._persist:
            self.store.write_trades(part.trades())
        builders = self._builders.get(part.symbol)
        if builders is None:
            builders = self._builders[part.symbol] = [
                chunk_bar_builder(part.symbol, spec, self.sale_filter)
                for spec in self.config.bar_specs
            ]
        for builder in builders:
            if completed := builder.add(part):
                await self._publish_bars(completed, due[-1])

    async def _on_simulated(
        self, events: SimulatedEvents, i: int, end: int, due: list[int]
    ) -> None:
        part = slice(i, end)
        symbol_index = events.symbol_index[part]
        is_trade = events.is_trade[part]
        due_array = np.asarray(due, dtype=np.int64)
        precision = self.config.simulator().price_precision
        for k in np.unique(symbol_index[is_trade]).tolist():
            rows = is_trade & (symbol_index == k)
            event_ns = events.event_ns[part][rows]
            n = len(event_ns)
            columns = TradeColumns(
                events.symbols[k],
                precision,
                event_ns,
                event_ns,
                events.price[part][rows],
                events.size[part][rows],
                events.aggressor[part][rows],
                np.full(n, -1, dtype=np.int64),
                np.full(n, b"", dtype="S1"),
                np.zeros(n, dtype=np.uint32),
            )
            await self._on_trades(columns, due_array[rows].tolist())
        quote_rows = np.flatnonzero(~is_trade)
        if len(quote_rows):
            taken = [events.symbols[s] for s in symbol_index[quote_rows].tolist()]
            offset = i + quote_rows
            records = [
                Quote(s, t, t, b, bq, k, kq)
                for s, t, b, bq, k, kq in zip(
                    taken,
                    events.event_ns[offset].tolist(),
                    events.bid[offset].tolist(),
                    events.bid_size[offset].tolist(),
                    events.ask[offset].tolist(),
                    events.ask_size[offset].tolist(),
                    strict=True,
                )
            ]
            await self._on_quotes(records, due_array[quote_rows].tolist())
        self.progress.position_ns = int(events.event_ns[end - 1])

    async def _on_binance(self, events: list[BinanceEvent], due: list[int]) -> None:
        trades_of: dict[str, list[Trade]] = {}
        trade_due: dict[str, list[int]] = {}
        quote_records: list[Quote] = []
        quote_due: list[int] = []
        changed: dict[str, int] = {}
        for event, when in zip(events, due, strict=True):
            if isinstance(event, Trade):
                trades_of.setdefault(event.symbol, []).append(event)
                trade_due.setdefault(event.symbol, []).append(when)
            elif isinstance(event, Quote):
                quote_records.append(event)
                quote_due.append(when)
            elif isinstance(event, BookDelta):
                self._book(event.symbol).apply_delta(event)
                changed[event.symbol] = when
            elif isinstance(event, BookSnapshot):
                self._book(event.symbol).apply_snapshot(event)
                changed[event.symbol] = when
        for symbol, records in trades_of.items():
            columns = TradeColumns.from_trades(symbol, BINANCE_INSTRUMENT.price_precision, records)
            await self._on_trades(columns, trade_due[symbol])
        if quote_records:
            await self._on_quotes(quote_records, quote_due)
        for symbol, when in changed.items():
            order_book = self.books[symbol]
            if order_book.is_crossed():
                self.crossed[symbol] = self.crossed.get(symbol, 0) + 1
            if order_book.state is BookState.LIVE:
                payload = order_book.top(self.config.book_depth).to_payload()
                await self._publish_each(book(symbol), [payload], [when], "book")
        last = events[-1]
        self.progress.position_ns = (
            last.receive_ns if isinstance(last, BookSnapshot) else last.event_ns
        )

    async def _on_quotes(self, records: list[Quote], due: list[int]) -> None:
        channels = [quotes(q.symbol) for q in records]
        await self._publish_each(channels, [q.to_payload() for q in records], due, "quotes")
        for quote in records:
            self.latest_quotes[quote.symbol] = quote
        if self._persist:
            self.store.write_quotes(records)

    def _book(self, symbol: str) -> OrderBook:
        found = self.books.get(symbol)
        if found is None:
            found = self.books[symbol] = OrderBook(symbol)
        return found

    # ── bars ────────────────────────────────────────────────────────────────────────────────

    async def _close_time_bars(self, position_ns: int, due_ns: int) -> None:
        """Complete time bars the stream's time has passed (a quiet symbol's last bar)."""
        for builders in self._builders.values():
            for builder in builders:
                if completed := builder.close_until(position_ns):
                    await self._publish_bars(completed, due_ns)

    async def _complete_bars(self) -> None:
        """End of the data: every open time bar is complete (threshold bars stay open)."""
        due = self.clock.now_ns()
        for builders in self._builders.values():
            for builder in builders:
                if completed := builder.flush():
                    await self._publish_bars(completed, due)

    async def _publish_bars(self, completed: list[Bar], due_ns: int) -> None:
        first = completed[0]
        channel = bars(first.spec, first.symbol)
        payloads = [bar.to_payload() for bar in completed]
        await self._publish_each(channel, payloads, [due_ns] * len(payloads), "bars")
        if self._persist:
            self.store.write_bars(completed)

    # ── bus ─────────────────────────────────────────────────────────────────────────────────

    async def _publish_each(
        self, channel: str | list[str], payloads: list[Any], event_ns: list[int], kind: str
    ) -> None:
        """Publish ``payloads`` on one channel (or one channel each), counted once per batch."""
        if isinstance(channel, str):
            self.bus.publish_many(channel, payloads, event_ns)
        else:
            nowait = self.bus.publish_nowait
            for name, payload, when in zip(channel, payloads, event_ns, strict=True):
                nowait(name, payload, event_ns=when)
        self.progress.published[kind] += len(payloads)
        self.metrics.published.inc(len(payloads))


def _iso_date(name: str, text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a date YYYY-MM-DD, got {text!r}") from None


def _adjusted(rows: list[Bar], adjustment: Adjustment) -> list[Bar]:
    """One symbol's bars with ``adjustment``'s ``Scaling`` on each bar's New York date."""
    symbol = rows[0].symbol
    end_ns = np.array([row.end_ns for row in rows], dtype=np.int64)
    scale = scaling(symbol, new_york_dates(end_ns - 1), adjustment)
    ohlc = scale.prices(np.array([(r.open, r.high, r.low, r.close) for r in rows]))
    volume = scale.volume(np.array([row.volume for row in rows]))
    dollars = scale.dollar_volume(np.array([row.dollar_volume for row in rows]))
    return [
        Bar(symbol, row.spec, row.start_ns, row.end_ns, o, h, lo, c, v, dv, row.trades)
        for row, (o, h, lo, c), v, dv in zip(
            rows, ohlc.tolist(), volume.tolist(), dollars.tolist(), strict=True
        )
    ]


def _new_york_ns(day: date, moment: time) -> int:
    ms = (moment.hour * 3600 + moment.minute * 60 + moment.second) * 1000
    return int(local_ms_to_utc_ns(day, np.array([ms], dtype=np.int64))[0])


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


WEEK_NS = 7 * 86_400_000_000_000


def lap_shift_ns(days: Sequence[date]) -> int:
    """How far one lap of a looping replay moves time: the whole weeks that cover ``days``
    (at least one), so every lap starts on the weekday and at the time of day of the first."""
    if not days:
        return WEEK_NS
    span_days = (max(days) - min(days)).days + 1
    return -(-span_days // 7) * WEEK_NS

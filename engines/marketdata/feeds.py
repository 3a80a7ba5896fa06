"""Feed readers: bundled files in, normalized records and columns out. No asyncio here.

* Lean (QuantConnect) SPY files, 7–11 Oct 2013 (``data/``, see ``data/NOTICE.md``): tick trades,
  minute trade bars, minute quote bars. Format: QuantConnect Lean ``Data/equity/usa`` CSV in a zip,
  times in ms since midnight America/New_York, prices × 10000 (Lean ``LeanData`` /
  ``Tick.ParseEquity``; sale conditions are hex ``TradeConditionFlags``).
* Binance spot raw feed captured by hftbacktest (``<local_receive_ns> <json>`` per gzip line):
  ``@trade``, ``@bookTicker``, ``@depth@100ms`` and one REST depth snapshot.
* A seeded synthetic multi-symbol market for load.

Malformed input never stops a read: each bad line is counted in a ``FeedErrors`` with its file and
line number, logged once, and skipped.
"""

from __future__ import annotations

import gzip
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson

from engines.marketdata.records import (
    BookDelta,
    BookSnapshot,
    Quote,
    Side,
    Trade,
    TradeColumns,
)

__all__ = [
    "BINANCE_PRICE_PRECISION",
    "DATA_DIR",
    "LEAN_PRICE_PRECISION",
    "NEW_YORK",
    "BinanceEvent",
    "FeedError",
    "FeedErrors",
    "LeanMinuteBars",
    "LeanMinuteQuotes",
    "SimulatedEvents",
    "SimulatorConfig",
    "SyntheticMarket",
    "binance_event",
    "binance_feed_paths",
    "binance_trade_columns",
    "lean_days",
    "lean_minute_quote_path",
    "lean_minute_trade_path",
    "lean_tick_path",
    "local_ms_to_utc_ns",
    "read_binance_feed",
    "read_lean_minute_quotes",
    "read_lean_minute_trades",
    "read_lean_trade_ticks",
]

log = logging.getLogger(__name__)

#: The bundled data, resolved relative to this package (nothing outside the repository).
DATA_DIR = Path(__file__).resolve().parent / "data"
NEW_YORK = ZoneInfo("America/New_York")
#: Lean equity prices are integers × 10000.
LEAN_PRICE_PRECISION = 4
LEAN_PRICE_SCALE = 10_000
#: BTCUSDT tick size 0.01 (Binance exchangeInfo PRICE_FILTER).
BINANCE_PRICE_PRECISION = 2
_NS_PER_MS = 1_000_000
_MS_PER_DAY = 86_400_000


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class FeedError:
    source: str
    line: int  # 1-based
    reason: str


@dataclass(slots=True)
class FeedErrors:
    """Counts malformed lines and keeps the first ``keep`` of them (file, line, reason)."""

    keep: int = 100
    count: int = 0
    errors: list[FeedError] = field(default_factory=list)

    def add(self, source: str, line: int, reason: str) -> None:
        self.count += 1
        if len(self.errors) < self.keep:
            self.errors.append(FeedError(source, line, reason))
            log.warning("malformed feed line %s:%d: %s", source, line, reason)


# --------------------------------------------------------------------------- bundled data

_LEAN_NAME = re.compile(r"(tick|minute)_([a-z]+)_(\d{8})_(trade|quote)\.zip")


def lean_days(symbol: str = "spy") -> list[date]:
    """Trading days for which a Lean tick-trade file of ``symbol`` is bundled, ascending."""
    days = []
    for path in DATA_DIR.glob(f"tick_{symbol.lower()}_*_trade.zip"):
        match = _LEAN_NAME.fullmatch(path.name)
        if match:
            days.append(datetime.strptime(match.group(3), "%Y%m%d").date())
    return sorted(days)


def lean_tick_path(day: date, symbol: str = "spy") -> Path:
    return DATA_DIR / f"tick_{symbol.lower()}_{day:%Y%m%d}_trade.zip"


def lean_minute_trade_path(day: date, symbol: str = "spy") -> Path:
    return DATA_DIR / f"minute_{symbol.lower()}_{day:%Y%m%d}_trade.zip"


def lean_minute_quote_path(day: date, symbol: str = "spy") -> Path:
    return DATA_DIR / f"minute_{symbol.lower()}_{day:%Y%m%d}_quote.zip"


def binance_feed_paths() -> list[Path]:
    """The bundled BTCUSDT raw-feed files, in time order (they are one continuous capture)."""
    return sorted(DATA_DIR.glob("btcusdt_*.gz"))


# --------------------------------------------------------------------------- time


def local_ms_to_utc_ns(
    day: date, ms_since_midnight: npt.NDArray[np.int64], tz: ZoneInfo = NEW_YORK
) -> npt.NDArray[np.int64]:
    """UTC epoch ns of local wall-clock times ``day 00:00 + ms`` in ``tz`` (DST aware).

    The UTC offset is looked up with zoneinfo per local hour of the day, so a day on which DST
    starts or ends gets the right offset on each side of the switch (fold=0 in the repeated hour).
    On other days it is one offset (Oct 2013 in New York: EDT, UTC−4).
    """
    ms = np.asarray(ms_since_midnight, dtype=np.int64)
    midnight_naive_ns = (
        int((datetime(day.year, day.month, day.day) - datetime(1970, 1, 1)).total_seconds())
        * 1_000_000_000
    )
    hours = range(49)  # up to 48 h covers Lean's late sessions past midnight
    offsets_ns = np.array(
        [
            _utc_offset_ns(datetime(day.year, day.month, day.day) + timedelta(hours=h), tz)
            for h in hours
        ],
        dtype=np.int64,
    )
    if np.all(offsets_ns == offsets_ns[0]):
        offset: int | npt.NDArray[np.int64] = int(offsets_ns[0])
    else:
        offset = offsets_ns[np.clip(ms // 3_600_000, 0, len(offsets_ns) - 1)]
    utc_ns: npt.NDArray[np.int64] = midnight_naive_ns + ms * _NS_PER_MS - offset
    return utc_ns


def _utc_offset_ns(wall: datetime, tz: ZoneInfo) -> int:
    offset = wall.replace(tzinfo=tz).utcoffset()
    assert offset is not None
    return int(offset.total_seconds()) * 1_000_000_000


# --------------------------------------------------------------------------- CSV


def _read_zip_member(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(names) != 1:
            raise ValueError(f"{path}: expected one CSV in the zip, found {names}")
        return archive.read(names[0])


def _csv_table(
    data: bytes, ncols: int, integer_cols: tuple[int, ...], source: str, errors: FeedErrors
) -> tuple[npt.NDArray[np.bytes_], npt.NDArray[np.int64]]:
    """Split CSV bytes into a 2-D bytes array and the 1-based line number of each kept row.

    Fast path: one ``split`` over the whole file and numpy conversions (≈0.4 s for 450k rows).
    When the file has a line with the wrong number of fields or a non-integer where an integer
    belongs, fall back to a line-by-line pass that records each bad line and keeps the rest.
    """
    data = data.replace(b"\r\n", b"\n").rstrip(b"\n")
    if not data:
        return np.empty((0, ncols), dtype="S1"), np.empty(0, dtype=np.int64)
    n_lines = data.count(b"\n") + 1
    fields = data.replace(b"\n", b",").split(b",")
    if len(fields) == n_lines * ncols:
        table = np.array(fields).reshape(n_lines, ncols)
        try:
            for col in integer_cols:
                table[:, col].astype(np.int64)
        except ValueError:
            pass
        else:
            return table, np.arange(1, n_lines + 1, dtype=np.int64)
    rows: list[list[bytes]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        parts = line.split(b",")
        if len(parts) != ncols:
            errors.add(source, number, f"expected {ncols} fields, got {len(parts)}")
            continue
        try:
            for col in integer_cols:
                int(parts[col])
        except ValueError:
            errors.add(source, number, f"non-integer field in {line[:80]!r}")
            continue
        rows.append(parts)
        line_numbers.append(number)
    if not rows:
        return np.empty((0, ncols), dtype="S1"), np.empty(0, dtype=np.int64)
    return np.array(rows), np.array(line_numbers, dtype=np.int64)


def _day_from_name(path: Path) -> date:
    match = re.search(r"(\d{8})", path.name)
    if match is None:
        raise ValueError(f"{path}: no yyyymmdd trading date in the file name")
    return datetime.strptime(match.group(1), "%Y%m%d").date()


def _drop_rows(
    keep: npt.NDArray[np.bool_],
    reason: str,
    line_numbers: npt.NDArray[np.int64],
    source: str,
    errors: FeedErrors,
) -> None:
    for number in line_numbers[~keep].tolist():
        errors.add(source, number, reason)


def read_lean_trade_ticks(
    path: Path, *, symbol: str = "SPY", errors: FeedErrors | None = None
) -> TradeColumns:
    """A Lean equity tick-trade zip as columns.

    Rows: ``ms_since_midnight, price*10000, size, exchange, sale_condition(hex), suspicious``
    (Lean ``Tick.ParseEquity``). ``event_ns = receive_ns`` = the local time converted to UTC;
    ``condition`` is the hex sale condition as an int (Lean ``TradeConditionFlags``);
    ``sequence`` is the 1-based line number; ``aggressor`` is 0 (the tape does not say).
    Rows with the suspicious flag set are kept (none in the bundled files): filter in ``core``.
    """
    errors = errors if errors is not None else FeedErrors()
    source = path.name
    table, line_numbers = _csv_table(_read_zip_member(path), 6, (0, 1, 2, 5), source, errors)
    ms = table[:, 0].astype(np.int64)
    price_e4 = table[:, 1].astype(np.int64)
    size = table[:, 2].astype(np.int64)
    exchange = table[:, 3]
    condition_text = table[:, 4]
    suspicious = table[:, 5].astype(np.int64)

    condition = hex_conditions(condition_text)

    keep = (
        (ms >= 0)
        & (ms < 2 * _MS_PER_DAY)
        & (price_e4 > 0)
        & (size > 0)
        & (condition >= 0)
        & (condition < 2**32)
        & (np.char.str_len(exchange) == 1)
        & (suspicious >= 0)
    )
    if not keep.all():
        _drop_rows(keep, "field out of range", line_numbers, source, errors)
        ms, price_e4, size, exchange, condition, suspicious, line_numbers = (
            a[keep] for a in (ms, price_e4, size, exchange, condition, suspicious, line_numbers)
        )
    event_ns = local_ms_to_utc_ns(_day_from_name(path), ms)
    n = len(ms)
    return TradeColumns(
        symbol=symbol,
        price_precision=LEAN_PRICE_PRECISION,
        event_ns=event_ns,
        receive_ns=event_ns.copy(),
        price=price_e4 / LEAN_PRICE_SCALE,
        size=size.astype(np.float64),
        aggressor=np.zeros(n, dtype=np.int8),
        sequence=line_numbers,
        exchange=exchange.astype("S1"),
        condition=condition.astype(np.uint32),
    )


@dataclass(frozen=True, slots=True, eq=False)
class LeanMinuteBars:
    """Lean minute trade bars: bar open time (UTC ns) and OHLCV. Minutes with no trade absent."""

    start_ns: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class LeanMinuteQuotes:
    """Lean minute quote bars: OHLC of bid and ask and the last sizes, per minute."""

    start_ns: npt.NDArray[np.int64]
    bid: npt.NDArray[np.float64]  # shape (n, 4): open, high, low, close
    bid_size: npt.NDArray[np.float64]
    ask: npt.NDArray[np.float64]  # shape (n, 4)
    ask_size: npt.NDArray[np.float64]


def _lean_int_table(path: Path, ncols: int, errors: FeedErrors) -> npt.NDArray[np.int64]:
    cols = tuple(range(ncols))
    table, _ = _csv_table(_read_zip_member(path), ncols, cols, path.name, errors)
    return table.astype(np.int64).reshape(-1, ncols)


def read_lean_minute_trades(path: Path, *, errors: FeedErrors | None = None) -> LeanMinuteBars:
    """Lean minute trade bars: ``ms_of_bar_open, o, h, l, c (×10000), volume``."""
    rows = _lean_int_table(path, 6, errors if errors is not None else FeedErrors())
    return LeanMinuteBars(
        start_ns=local_ms_to_utc_ns(_day_from_name(path), rows[:, 0]),
        open=rows[:, 1] / LEAN_PRICE_SCALE,
        high=rows[:, 2] / LEAN_PRICE_SCALE,
        low=rows[:, 3] / LEAN_PRICE_SCALE,
        close=rows[:, 4] / LEAN_PRICE_SCALE,
        volume=rows[:, 5].astype(np.float64),
    )


def read_lean_minute_quotes(path: Path, *, errors: FeedErrors | None = None) -> LeanMinuteQuotes:
    """Lean minute quote bars: ``ms, bid o h l c, last bid size, ask o h l c, last ask size``."""
    rows = _lean_int_table(path, 11, errors if errors is not None else FeedErrors())
    return LeanMinuteQuotes(
        start_ns=local_ms_to_utc_ns(_day_from_name(path), rows[:, 0]),
        bid=rows[:, 1:5] / LEAN_PRICE_SCALE,
        bid_size=rows[:, 5].astype(np.float64),
        ask=rows[:, 6:10] / LEAN_PRICE_SCALE,
        ask_size=rows[:, 10].astype(np.float64),
    )


# --------------------------------------------------------------------------- Binance

BinanceEvent = Trade | Quote | BookDelta | BookSnapshot


def _levels(raw: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(price), float(size)) for price, size in raw)


def binance_event(receive_ns: int, message: dict[str, Any], symbol: str) -> BinanceEvent:
    """One decoded message as a record; raises KeyError/ValueError/TypeError when malformed.

    Trade: ``T`` trade time (ms) → event_ns; ``m`` buyer is maker ⇒ the seller was the taker ⇒
    aggressor SELL (Binance spot API docs, "Trade Streams"). bookTicker carries no event time:
    event_ns = receive_ns, ``u`` its order-book update id as sequence. depthUpdate: ``E``.
    """
    if "lastUpdateId" in message:
        return BookSnapshot(
            symbol,
            receive_ns,
            int(message["lastUpdateId"]),
            _levels(message["bids"]),
            _levels(message["asks"]),
        )
    stream = message["stream"]
    data = message["data"]
    if stream.endswith("@trade"):
        return Trade(
            data["s"],
            int(data["T"]) * _NS_PER_MS,
            receive_ns,
            float(data["p"]),
            float(data["q"]),
            Side.SELL if data["m"] else Side.BUY,
            int(data["t"]),
        )
    if stream.endswith("@bookTicker"):
        return Quote(
            data["s"],
            receive_ns,
            receive_ns,
            float(data["b"]),
            float(data["B"]),
            float(data["a"]),
            float(data["A"]),
            int(data["u"]),
        )
    if "@depth" in stream:
        return BookDelta(
            data["s"],
            int(data["E"]) * _NS_PER_MS,
            receive_ns,
            int(data["U"]),
            int(data["u"]),
            _levels(data["b"]),
            _levels(data["a"]),
        )
    raise ValueError(f"unknown stream {stream!r}")


def read_binance_feed(
    paths: Iterable[Path] | None = None,
    *,
    symbol: str = "BTCUSDT",
    errors: FeedErrors | None = None,
) -> Iterator[BinanceEvent]:
    """Records of hftbacktest-captured Binance lines ``<local_receive_ns> <json>``, file order.

    ``symbol`` names the REST snapshot, which does not carry it. Defaults to the bundled files.
    """
    errors = errors if errors is not None else FeedErrors()
    for path in binance_feed_paths() if paths is None else paths:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                stamp, _, text = line.partition(b" ")
                try:
                    yield binance_event(int(stamp), orjson.loads(text), symbol)
                except (
                    KeyError,
                    ValueError,
                    TypeError,
                    AttributeError,
                    orjson.JSONDecodeError,
                ) as exc:
                    errors.add(path.name, number, f"{type(exc).__name__}: {exc}"[:200])


def binance_trade_columns(
    events: Iterable[BinanceEvent], *, symbol: str = "BTCUSDT"
) -> TradeColumns:
    """The trades of ``symbol`` among ``events`` as columns (aggressor from ``m``)."""
    trades = [e for e in events if isinstance(e, Trade) and e.symbol == symbol]
    return TradeColumns.from_trades(symbol, BINANCE_PRICE_PRECISION, trades)


# --------------------------------------------------------------------------- simulator


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """A synthetic market: ``n_symbols`` random-walk mid prices with trades and quotes.

    Events arrive as a Poisson process at ``events_per_second`` across all symbols (exponential
    gaps), each a trade with probability ``trade_share`` else a quote update; each symbol's bid
    moves by −1/0/+1 ticks per event of that symbol, spreads are 1–3 ticks, trades lift the ask
    (buy aggressor) or hit the bid (sell) with equal probability, sizes are 1–10 lots.
    """

    n_symbols: int = 100
    events_per_second: float = 100_000.0
    trade_share: float = 0.3
    start_ns: int = 1_700_000_000_000_000_000
    price_precision: int = 2
    start_price: float = 100.0
    lot_size: float = 100.0
    symbol_prefix: str = "SIM"
    seed: int = 7

    def symbols(self) -> list[str]:
        width = len(str(max(self.n_symbols - 1, 0)))
        return [f"{self.symbol_prefix}{i:0{width}d}" for i in range(self.n_symbols)]


@dataclass(frozen=True, slots=True, eq=False)
class SimulatedEvents:
    """One chunk of simulated events as parallel arrays in time order.

    ``is_trade`` picks the rows that are trades (price, size, aggressor ±1); the others are quotes
    (bid, bid_size, ask, ask_size). ``symbol_index`` indexes ``symbols``.
    """

    symbols: tuple[str, ...]
    event_ns: npt.NDArray[np.int64]
    symbol_index: npt.NDArray[np.int32]
    is_trade: npt.NDArray[np.bool_]
    price: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    aggressor: npt.NDArray[np.int8]
    bid: npt.NDArray[np.float64]
    bid_size: npt.NDArray[np.float64]
    ask: npt.NDArray[np.float64]
    ask_size: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.event_ns)

    def records(self) -> list[Trade | Quote]:
        """The chunk as records (receive_ns = event_ns)."""
        out: list[Trade | Quote] = []
        rows = zip(
            self.event_ns.tolist(),
            self.symbol_index.tolist(),
            self.is_trade.tolist(),
            self.price.tolist(),
            self.size.tolist(),
            self.aggressor.tolist(),
            self.bid.tolist(),
            self.bid_size.tolist(),
            self.ask.tolist(),
            self.ask_size.tolist(),
            strict=True,
        )
        for t, s, is_trade, p, q, a, b, bq, k, kq in rows:
            sym = self.symbols[s]
            if is_trade:
                out.append(Trade(sym, t, t, p, q, Side.BUY if a > 0 else Side.SELL))
            else:
                out.append(Quote(sym, t, t, b, bq, k, kq))
        return out


class SyntheticMarket:
    """Deterministic synthetic feed: the same config and generator state give the same events.

    ``rng`` is injected (default ``numpy.random.default_rng(config.seed)``); events are drawn in
    vectorized chunks, so generation runs at millions of events per second.
    """

    def __init__(self, config: SimulatorConfig, rng: np.random.Generator | None = None) -> None:
        self.config = config
        self._rng = rng if rng is not None else np.random.default_rng(config.seed)
        self._symbols = tuple(config.symbols())
        self._tick = 10.0**-config.price_precision
        start_ticks = round(config.start_price / self._tick)
        self._bid_ticks = np.full(config.n_symbols, start_ticks, dtype=np.int64)
        self._now_ns = config.start_ns

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def next_chunk(self, n_events: int) -> SimulatedEvents:
        cfg, rng = self.config, self._rng
        gaps = rng.exponential(1e9 / cfg.events_per_second, n_events)
        event_ns = self._now_ns + np.cumsum(np.maximum(gaps, 1.0)).astype(np.int64)
        if n_events:
            self._now_ns = int(event_ns[-1])
        sym = rng.integers(0, cfg.n_symbols, n_events, dtype=np.int32)
        steps = rng.integers(-1, 2, n_events, dtype=np.int64)
        # Per-symbol cumulative sum of the steps: sort by symbol (stable keeps time order),
        # cumsum, subtract each group's running total before its first row, scatter back.
        order = np.argsort(sym, kind="stable")
        sorted_steps = np.cumsum(steps[order])
        counts = np.bincount(sym, minlength=cfg.n_symbols)
        group_end = np.cumsum(counts)
        group_start = np.concatenate(([0], group_end[:-1]))
        before_group = np.concatenate(([0], sorted_steps))[group_start]
        group_of_sorted = sym[order]
        walk = np.empty(n_events, dtype=np.int64)
        walk[order] = sorted_steps - np.repeat(before_group, counts)[: len(order)]
        bid_ticks = np.maximum(self._bid_ticks[sym] + walk, 1)
        if n_events:
            last_rows = order[group_end[counts > 0] - 1]
            self._bid_ticks[group_of_sorted[group_end[counts > 0] - 1]] = bid_ticks[last_rows]
        spread_ticks = rng.integers(1, 4, n_events, dtype=np.int64)
        is_trade = rng.random(n_events) < cfg.trade_share
        aggressor = np.where(rng.random(n_events) < 0.5, 1, -1).astype(np.int8)
        bid = bid_ticks * self._tick
        ask = (bid_ticks + spread_ticks) * self._tick
        lots = rng.integers(1, 11, (3, n_events)).astype(np.float64) * cfg.lot_size
        trade_price = np.where(aggressor > 0, ask, bid)
        return SimulatedEvents(
            symbols=self._symbols,
            event_ns=event_ns,
            symbol_index=sym,
            is_trade=is_trade,
            price=np.round(trade_price, cfg.price_precision),
            size=lots[0],
            aggressor=np.where(is_trade, aggressor, 0).astype(np.int8),
            bid=np.round(bid, cfg.price_precision),
            bid_size=lots[1],
            ask=np.round(ask, cfg.price_precision),
            ask_size=lots[2],
        )


# --------------------------------------------------------------------------- Lean quote ticks

__all__ += ["QuoteTickColumns", "lean_tick_quote_path", "read_lean_quote_ticks"]


def lean_tick_quote_path(day: date, symbol: str = "spy") -> Path:
    """The bundled Lean tick-quote zip of ``symbol`` on ``day`` (AIG and BAC, 7–11 Oct 2013)."""
    return DATA_DIR / f"tick_{symbol.lower()}_{day:%Y%m%d}_quote.zip"


@dataclass(frozen=True, slots=True, eq=False)
class QuoteTickColumns:
    """Lean equity quote ticks as columns, one entry per file row, in file (time) order.

    A Lean quote row carries one side: ``bid``/``bid_size`` are NaN on a row that quotes only the
    ask and vice versa (in the file that side is written as ``0,0``). ``filled()`` gives the
    quote in force after each row, the way Lean's tick consolidators build quote bars.
    """

    symbol: str
    price_precision: int
    event_ns: npt.NDArray[np.int64]
    bid: npt.NDArray[np.float64]
    bid_size: npt.NDArray[np.float64]
    ask: npt.NDArray[np.float64]
    ask_size: npt.NDArray[np.float64]
    exchange: npt.NDArray[np.bytes_]  # one-letter exchange code
    condition: npt.NDArray[np.uint32]  # hex quote condition flags (Lean QuoteConditionFlags)
    suspicious: npt.NDArray[np.bool_]
    sequence: npt.NDArray[np.int64]  # 1-based line number in the file

    def __len__(self) -> int:
        return len(self.event_ns)

    def filled(self) -> QuoteTickColumns:
        """Each side carried forward from the last row that quoted it (NaN before the first).

        Lean ``TickQuoteBarConsolidator`` updates the bid from a tick whose ``BidPrice`` is not 0
        and the ask from one whose ``AskPrice`` is not 0, keeping the other side, across
        exchanges; this is the same state after every row.
        """
        rows = np.arange(len(self))

        def carried(
            price: npt.NDArray[np.float64], size: npt.NDArray[np.float64]
        ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            last = np.maximum.accumulate(np.where(np.isnan(price), -1, rows))
            known = last >= 0
            source = np.maximum(last, 0)
            return (
                np.where(known, price[source], np.nan),
                np.where(known, size[source], np.nan),
            )

        bid, bid_size = carried(self.bid, self.bid_size)
        ask, ask_size = carried(self.ask, self.ask_size)
        return QuoteTickColumns(
            symbol=self.symbol,
            price_precision=self.price_precision,
            event_ns=self.event_ns,
            bid=bid,
            bid_size=bid_size,
            ask=ask,
            ask_size=ask_size,
            exchange=self.exchange,
            condition=self.condition,
            suspicious=self.suspicious,
            sequence=self.sequence,
        )


def read_lean_quote_ticks(
    path: Path, *, symbol: str | None = None, errors: FeedErrors | None = None
) -> QuoteTickColumns:
    """A Lean equity tick-quote zip as columns.

    Rows: ``ms_since_midnight, bid*10000, bid_size, ask*10000, ask_size, exchange,
    condition(hex), suspicious`` — Lean ``Tick(config, line, date)`` for ``TickType.Quote``
    reads bid price, bid size, ask price, ask size in that order, and ``Extensions.Scale`` treats
    a 0 price as "side absent" (QuantConnect/Lean @ 24863901, ``Common/Data/Market/Tick.cs``).
    The bundled files agree: every row has exactly one side non-zero. ``symbol`` defaults to
    the ticker in the file name. A row is dropped (and counted in ``errors``) when its time is
    outside [0, 48 h), a size or price is negative, both or neither side is quoted, a quoted
    side has a zero size, or its condition is not hex.
    """
    errors = errors if errors is not None else FeedErrors()
    source = path.name
    if symbol is None:
        match = _LEAN_NAME.fullmatch(path.name)
        symbol = match.group(2).upper() if match else path.stem.upper()
    table, line_numbers = _csv_table(_read_zip_member(path), 8, (0, 1, 2, 3, 4, 7), source, errors)
    ms = table[:, 0].astype(np.int64)
    bid_e4 = table[:, 1].astype(np.int64)
    bid_size = table[:, 2].astype(np.int64)
    ask_e4 = table[:, 3].astype(np.int64)
    ask_size = table[:, 4].astype(np.int64)
    exchange = table[:, 5]
    suspicious = table[:, 7].astype(np.int64)

    condition = hex_conditions(table[:, 6])

    has_bid = bid_e4 > 0
    has_ask = ask_e4 > 0
    keep = (
        (ms >= 0)
        & (ms < 2 * _MS_PER_DAY)
        & (bid_e4 >= 0)
        & (ask_e4 >= 0)
        & (has_bid != has_ask)
        & np.where(has_bid, bid_size > 0, bid_size == 0)
        & np.where(has_ask, ask_size > 0, ask_size == 0)
        & (condition >= 0)
        & (condition < 2**32)
        & (np.char.str_len(exchange) == 1)
        & (suspicious >= 0)
    )
    if not keep.all():
        _drop_rows(keep, "field out of range", line_numbers, source, errors)
        ms, bid_e4, bid_size, ask_e4, ask_size = (
            a[keep] for a in (ms, bid_e4, bid_size, ask_e4, ask_size)
        )
        exchange, condition, suspicious, line_numbers = (
            a[keep] for a in (exchange, condition, suspicious, line_numbers)
        )
        has_bid, has_ask = has_bid[keep], has_ask[keep]
    event_ns = local_ms_to_utc_ns(_day_from_name(path), ms)
    return QuoteTickColumns(
        symbol=symbol,
        price_precision=LEAN_PRICE_PRECISION,
        event_ns=event_ns,
        bid=np.where(has_bid, bid_e4 / LEAN_PRICE_SCALE, np.nan),
        bid_size=np.where(has_bid, bid_size.astype(np.float64), np.nan),
        ask=np.where(has_ask, ask_e4 / LEAN_PRICE_SCALE, np.nan),
        ask_size=np.where(has_ask, ask_size.astype(np.float64), np.nan),
        exchange=exchange.astype("S1"),
        condition=condition.astype(np.uint32),
        suspicious=suspicious > 0,
        sequence=line_numbers,
    )


def hex_conditions(texts: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Lean's hex sale-condition column as integers (empty = 0, unparsable = −1), parsed once
    per distinct value (a day holds a handful of them across hundreds of thousands of rows)."""
    unique_conditions, condition_index = np.unique(texts, return_inverse=True)
    values = np.zeros(len(unique_conditions), dtype=np.int64)
    for k, text in enumerate(unique_conditions.tolist()):
        try:
            values[k] = int(text, 16) if text else 0
        except ValueError:
            values[k] = -1
    result: npt.NDArray[np.int64] = values[condition_index]
    return result

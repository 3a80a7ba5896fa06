"""Daily history: Lean daily bars with split and dividend adjustment. Pure reader, no asyncio.

Bundled files (``data/lean_daily/``, QuantConnect Lean ``Data/equity/usa`` at
24863901deffa9ec7985e21ef8fbdb0258efb9e4, Apache-2.0; see ``data/NOTICE.md``):

* ``daily/<ticker>.zip`` — one CSV, no header: ``yyyymmdd 00:00, open, high, low, close (×10000),
  volume``. **Raw** prices, as traded that day.
* ``factor_files/<ticker>.csv`` — ``yyyymmdd, price_factor, split_factor, reference_price``.
* ``map_files/<ticker>.csv`` — ``yyyymmdd, ticker_in_force_through_that_date, exchange``.

Which rows belong to a security (map files)
-------------------------------------------
A Lean daily file holds whatever traded under that ticker on each date, not one company's
history: ``wm.zip`` is Washington Mutual until its collapse (close $0.16 on 2008-09-26) and
Waste Management from 2009-08-05; ``goog.zip`` is the old Google (today's GOOGL) until
2014-04-02 and class C afterwards; ``bac.zip`` before 1998-10-01 is not the NationsBank history
that BAC's factor file describes (its reference prices disagree). Lean resolves this with the map
file: the data of date *d* is read from the file of the ticker the map file puts in force on *d*
(``MapFile.GetMappedSymbol``: the first row dated on or after *d*; ``SubscriptionDataReader``
changes source when ``config.MappedSymbol`` changes), and nothing is read before the map file's
first date or after its last (``MapFile.HasData``, ``SubscriptionDataReader`` clamps the start to
``mapFile.FirstDate``). ``read_daily_bars`` does the same, so:

* rows before the security's own first date are dropped (BNO, EEM, FB, USO files start years
  before those listings);
* rows on dates when another ticker was in force are taken from that ticker's file when it is
  bundled (GOOGL 2004-08-19 → 2014-04-02 comes from ``goog.zip``) and are absent otherwise
  (BAC before 1998-10-01 needs ``nb.zip``, WM before 2009-08-05 ``wmi.zip``, QQQ 2004-12-01 →
  2011-03-22 ``qqqq.zip``, GOOG 2014-03-27 → 2014-04-02 ``goocv.zip``: none is bundled).

The check that this is right: on every factor row with a reference price, that price is the raw
close of the row's date (Lean ``Dividend.Create``: "the previous day's closing price"), and it
agrees with the bars this module returns on every such date it returns.

Adjustment (Lean ``CorporateFactorProvider.GetScalingFactors`` / ``GetPriceFactor``)
------------------------------------------------------------------------------------
The factors of a bar dated *d* are those of the first factor row dated on or after *d* (1 and 1
after the last row). Row dates are the last session *before* an ex-date, so a bar on the row date
still carries the old factors. Prices:

* ``raw``: as traded;
* ``split``: ``raw × split_factor`` (Lean ``SplitAdjusted``);
* ``total``: ``raw × price_factor × split_factor`` (Lean ``Adjusted``: ``PriceScaleFactor``),
  i.e. backward ratio adjustment for dividends, so total-adjusted close-to-close returns are total
  returns with the dividend reinvested at the ex-date close.

Volume: ``raw / split_factor`` rounded to whole shares in both ``split`` and ``total`` — the share
count in today's shares. Lean itself (``Extensions.Normalize`` → ``Scale(TimesFactor,
1 / factor, …)``, ``Math.Round(volume * volumeFactor)``) divides by the same factor as the
prices: the split factor in ``SplitAdjusted`` but ``price_factor × split_factor`` in
``Adjusted``, which keeps dollar volume ``price × volume`` unchanged but inflates share counts by
the dividends (up to 1/0.86 on AAPL's 1998 bars). Dividends create no shares, so we divide by the
split factor only; ``total`` dollar volume is therefore ``raw dollar volume × price_factor``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

__all__ = [
    "DAILY_DIR",
    "DAY_NS",
    "Adjustment",
    "DailyBars",
    "FactorFile",
    "MapFile",
    "Scaling",
    "UnknownTickerError",
    "daily_tickers",
    "new_york_dates",
    "read_daily_bars",
    "read_factor_file",
    "read_map_file",
    "scaling",
    "session_start_ns",
]

#: The bundled Lean daily data, resolved relative to this package.
DAILY_DIR = Path(__file__).resolve().parent / "data" / "lean_daily"
#: Nanoseconds in a day: a served daily bar spans ``[session date 00:00 UTC, + DAY_NS)``.
DAY_NS = 86_400_000_000_000
_PRICE_SCALE = 10_000.0
_HOUR_NS = 3_600_000_000_000
_NEW_YORK = ZoneInfo("America/New_York")
_Array = TypeVar("_Array", bound=np.ndarray[Any, Any])


class Adjustment(StrEnum):
    """Price adjustment of daily bars (see the module docstring for the Lean mode of each)."""

    RAW = "raw"
    SPLIT = "split"
    TOTAL = "total"


class UnknownTickerError(KeyError):
    """No bundled daily data for this ticker (a ``KeyError``, so REST maps it to 404)."""

    def __init__(self, ticker: str) -> None:
        super().__init__(ticker)
        self.ticker = ticker

    def __str__(self) -> str:
        return (
            f"no bundled daily data for ticker {self.ticker!r}; known: {', '.join(daily_tickers())}"
        )


@dataclass(frozen=True, slots=True, eq=False)
class DailyBars:
    """One security's daily bars, ascending by date; prices in dollars, volume in shares."""

    symbol: str
    date: npt.NDArray[np.datetime64]  # datetime64[D], the session date (America/New_York)
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.date)


@dataclass(frozen=True, slots=True, eq=False)
class FactorFile:
    """Lean factor rows, ascending by date (rows whose factors are not positive are dropped)."""

    symbol: str
    date: npt.NDArray[np.datetime64]  # datetime64[D]
    price_factor: npt.NDArray[np.float64]
    split_factor: npt.NDArray[np.float64]
    reference_price: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.date)

    def factors_on(
        self, dates: npt.NDArray[np.datetime64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(price_factor, split_factor)`` for each date: the first row dated on or after it.

        Lean ``CorporateFactorProvider.GetScalingFactors``; dates after the last row get 1, 1.
        """
        index = np.searchsorted(self.date, dates.astype("datetime64[D]"), side="left")
        ones = np.ones(1)
        price = np.concatenate((self.price_factor, ones))[index]
        split = np.concatenate((self.split_factor, ones))[index]
        return price, split


@dataclass(frozen=True, slots=True, eq=False)
class MapFile:
    """Lean map rows, ascending: ``ticker[i]`` is in force through ``date[i]`` (lower case)."""

    symbol: str
    date: npt.NDArray[np.datetime64]  # datetime64[D]
    ticker: tuple[str, ...]
    exchange: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.date)

    @property
    def first_date(self) -> np.datetime64:
        """Lean ``MapFile.FirstDate``: no data of this security before it."""
        return np.datetime64(self.date[0], "D")

    @property
    def last_date(self) -> np.datetime64:
        """Lean ``MapFile.DelistingDate``: no data after it (2050-12-31 while listed)."""
        return np.datetime64(self.date[-1], "D")

    def ticker_on(self, dates: npt.NDArray[np.datetime64]) -> npt.NDArray[np.str_]:
        """The ticker in force on each date (Lean ``MapFile.GetMappedSymbol``); ``""`` outside
        ``[first_date, last_date]``, where Lean has no data (``MapFile.HasData``)."""
        days = dates.astype("datetime64[D]")
        index = np.searchsorted(self.date, days, side="left")
        tickers = np.array((*self.ticker, ""))[index]
        tickers[days < self.first_date] = ""
        return tickers


def daily_tickers() -> list[str]:
    """The bundled securities (upper case, sorted): those with a daily file and a map file."""
    return sorted(_bundled())


@lru_cache(maxsize=1)
def _bundled() -> frozenset[str]:
    daily = {p.stem.upper() for p in (DAILY_DIR / "daily").glob("*.zip")}
    mapped = {p.stem.upper() for p in (DAILY_DIR / "map_files").glob("*.csv")}
    return frozenset(daily & mapped)


def _known(ticker: str) -> str:
    """Upper-case ``ticker`` or raise ``UnknownTickerError`` naming it."""
    name = ticker.strip().upper() if isinstance(ticker, str) else ""
    if not name or name not in _bundled():
        raise UnknownTickerError(ticker)
    return name


@dataclass(frozen=True, slots=True, eq=False)
class Scaling:
    """What an adjustment does to raw bars on given dates (module docstring, "Adjustment"):
    prices × ``price``, volume ÷ ``split`` rounded to whole shares, dollar volume ×
    ``price / split`` (the adjusted prices times the unrounded adjusted share count)."""

    price: npt.NDArray[np.float64]
    split: npt.NDArray[np.float64]

    def prices(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``raw`` prices, one row per date (1-D) or one row of columns per date (2-D)."""
        return raw * (self.price if raw.ndim == 1 else self.price[:, None])

    def volume(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.rint(raw / self.split)

    def dollar_volume(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return raw * (self.price / self.split)


def scaling(
    symbol: str, dates: npt.NDArray[np.datetime64], adjustment: Adjustment | str
) -> Scaling:
    """The ``Scaling`` of ``adjustment`` for ``symbol``'s bars on ``dates`` (factors of the first
    factor row dated on or after each date). ``raw``, or a symbol without bundled factors: ones.
    Raises ``ValueError`` for an unknown adjustment."""
    mode = Adjustment(adjustment.lower() if isinstance(adjustment, str) else adjustment)
    name = symbol.strip().upper()
    if mode is Adjustment.RAW or name not in _bundled():
        ones = np.ones(len(dates))
        return Scaling(ones, ones)
    price_factor, split_factor = read_factor_file(name).factors_on(dates)
    price = split_factor if mode is Adjustment.SPLIT else price_factor * split_factor
    return Scaling(price, split_factor)


def session_start_ns(dates: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """00:00 UTC of each session date, ns since the epoch: where a served daily bar starts."""
    return dates.astype("datetime64[D]").astype("datetime64[ns]").astype(np.int64)


def new_york_dates(time_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.datetime64]:
    """The America/New_York calendar date of each instant (ns since the epoch, UTC).

    New York is UTC−5 (EST) or UTC−4 (EDT): both offsets give the same date except in the UTC
    hour 04:00–05:00, where the zone database decides, once per distinct hour.
    """
    times = np.asarray(time_ns, dtype=np.int64)
    days = (times - 5 * _HOUR_NS) // DAY_NS
    unsure = np.flatnonzero(days != (times - 4 * _HOUR_NS) // DAY_NS)
    if len(unsure):
        hours, where = np.unique(times[unsure] // _HOUR_NS, return_inverse=True)
        offsets = np.array(
            [
                _utc_offset_ns(datetime.fromtimestamp(int(hour) * 3600, tz=UTC))
                for hour in hours.tolist()
            ],
            dtype=np.int64,
        )
        days[unsure] = (times[unsure] + offsets[where.reshape(-1)]) // DAY_NS
    return days.astype("datetime64[D]")


def _utc_offset_ns(moment: datetime) -> int:
    offset = moment.astimezone(_NEW_YORK).utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return (offset.days * 86_400 + offset.seconds) * 1_000_000_000


def _csv_rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split(",") for line in lines if line.strip()]


def _dates(texts: list[str]) -> npt.NDArray[np.datetime64]:
    """``yyyymmdd`` (optionally followed by `` hh:mm``) → datetime64[D]."""
    iso = [f"{t[:4]}-{t[4:6]}-{t[6:8]}" for t in texts]
    return np.array(iso, dtype="datetime64[D]")


@lru_cache(maxsize=64)
def read_factor_file(ticker: str) -> FactorFile:
    """The factor file of a bundled security.

    Rows with a non-positive ``price_factor × split_factor`` are dropped, as Lean's
    ``CorporateFactorRow.Parse`` does ("ignore zero factor rows"); none in the bundled files.
    """
    symbol = _known(ticker)
    rows = _csv_rows(DAILY_DIR / "factor_files" / f"{symbol.lower()}.csv")
    rows = [r for r in rows if float(r[1]) * float(r[2]) > 0]
    date = _dates([r[0] for r in rows])
    order = np.argsort(date, kind="stable")
    return FactorFile(
        symbol=symbol,
        date=_frozen(date[order]),
        price_factor=_frozen(np.array([float(r[1]) for r in rows])[order]),
        split_factor=_frozen(np.array([float(r[2]) for r in rows])[order]),
        reference_price=_frozen(np.array([float(r[3]) for r in rows])[order]),
    )


@lru_cache(maxsize=64)
def read_map_file(ticker: str) -> MapFile:
    """The map file of a bundled security (ticker history and primary exchange)."""
    symbol = _known(ticker)
    rows = sorted(_csv_rows(DAILY_DIR / "map_files" / f"{symbol.lower()}.csv"))
    return MapFile(
        symbol=symbol,
        date=_frozen(_dates([r[0] for r in rows])),
        ticker=tuple(r[1].strip().lower() for r in rows),
        exchange=tuple(r[2].strip() if len(r) > 2 else "" for r in rows),
    )


@dataclass(frozen=True, slots=True, eq=False)
class _RawFile:
    date: npt.NDArray[np.datetime64]
    ohlc_e4: npt.NDArray[np.int64]  # shape (n, 4)
    volume: npt.NDArray[np.int64]


@lru_cache(maxsize=64)
def _read_daily_file(file_ticker: str) -> _RawFile | None:
    """One ``daily/<ticker>.zip`` as integer columns, or None when it is not bundled."""
    path = DAILY_DIR / "daily" / f"{file_ticker}.zip"
    if not path.is_file():
        return None
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        text = archive.read(name).decode("ascii")
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return _RawFile(np.empty(0, dtype="datetime64[D]"), empty.reshape(0, 4), empty)
    date = _dates([r[0] for r in rows])
    numbers = np.array([r[1:6] for r in rows], dtype=np.int64)
    order = np.argsort(date, kind="stable")
    return _RawFile(
        date=_frozen(date[order]),
        ohlc_e4=_frozen(numbers[order, :4]),
        volume=_frozen(numbers[order, 4]),
    )


def read_daily_bars(ticker: str, adjustment: Adjustment | str = Adjustment.TOTAL) -> DailyBars:
    """Daily bars of a bundled security, stitched through its map file and adjusted.

    ``ticker`` is case-insensitive; ``DailyBars.symbol`` is upper case. Raises
    ``UnknownTickerError`` (a ``KeyError``) for a ticker that is not bundled and ``ValueError``
    for an unknown ``adjustment``. See the module docstring for which rows are kept and how they
    are adjusted.
    """
    mode = Adjustment(adjustment.lower() if isinstance(adjustment, str) else adjustment)
    symbol = _known(ticker)
    map_file = read_map_file(symbol)
    parts: list[tuple[npt.NDArray[np.datetime64], npt.NDArray[np.int64], npt.NDArray[np.int64]]]
    parts = []
    for file_ticker in dict.fromkeys(map_file.ticker):
        raw = _read_daily_file(file_ticker)
        if raw is None:
            continue
        keep = map_file.ticker_on(raw.date) == file_ticker
        parts.append((raw.date[keep], raw.ohlc_e4[keep], raw.volume[keep]))
    if parts:
        date = np.concatenate([p[0] for p in parts])
        ohlc_e4 = np.concatenate([p[1] for p in parts])
        volume_raw = np.concatenate([p[2] for p in parts])
    else:
        date = np.empty(0, dtype="datetime64[D]")
        ohlc_e4 = np.empty((0, 4), dtype=np.int64)
        volume_raw = np.empty(0, dtype=np.int64)
    order = np.argsort(date, kind="stable")
    date, ohlc_e4, volume_raw = date[order], ohlc_e4[order], volume_raw[order]
    if len(date) > 1 and not np.all(date[1:] > date[:-1]):
        raise ValueError(f"{symbol}: duplicate dates in the daily files of its map file")

    prices = ohlc_e4 / _PRICE_SCALE
    volume = volume_raw.astype(np.float64)
    if mode is not Adjustment.RAW:
        scale = scaling(symbol, date, mode)
        prices, volume = scale.prices(prices), scale.volume(volume)
    return DailyBars(
        symbol=symbol,
        date=date,
        open=np.ascontiguousarray(prices[:, 0]),
        high=np.ascontiguousarray(prices[:, 1]),
        low=np.ascontiguousarray(prices[:, 2]),
        close=np.ascontiguousarray(prices[:, 3]),
        volume=volume,
    )


def _frozen(array: _Array) -> _Array:
    """Mark a cached array read-only, so one caller cannot change another's data."""
    array.flags.writeable = False
    return array

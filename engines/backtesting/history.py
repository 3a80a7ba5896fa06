"""The history a backtest replays: bundled bars as ``BarArrays``, prices on the data's grid.

* ``1d``: ``engines.marketdata.daily.read_daily_bars`` (Lean daily files, total-return adjusted by
  default), a bar spanning ``[session date 00:00 UTC, + 1 day)``;
* ``1m``: Lean's own SPY minute trade bars (``minute_spy_*_trade.zip``), or, for a symbol with
  tick files only (AIG, BAC), minute bars built from its ticks by
  ``engines.marketdata.core.time_bars`` (every print counts; pre- and post-market included);
  with ``from_ticks``, SPY's minute bars built from its ticks exactly as the MarketData engine
  builds them live (``time_bars`` with the Lean sale-condition filter): the bars the live
  strategies see, which are not Lean's minute files (112 of 2013-10-07's 828 bars differ in a
  price or the volume: the files were built with other print rules).

Prices are rounded to the instrument's ``price_precision`` (4 decimals: the Lean grid), the grid
the venue and the ledger price on, so every mode and the reference library see the same numbers.
Limits: only the bundled files (not MarketData's store); five 2013-10 days of minute data.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from engines.backtesting.core import BarArrays, quantize
from engines.marketdata import core as marketdata
from engines.marketdata import feeds
from engines.marketdata.daily import DAY_NS, Adjustment, daily_tickers, read_daily_bars

__all__ = ["SPECS", "UnknownHistory", "available_symbols", "load_bars"]

MINUTE_NS = 60_000_000_000
_NEW_YORK = ZoneInfo("America/New_York")
SPECS = ("1d", "1m")


class UnknownHistory(LookupError):
    """No bundled bars of that spec for that symbol; ``parameter`` names the field at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def available_symbols(spec: str) -> list[str]:
    if spec == "1d":
        return daily_tickers()
    if spec == "1m":
        return sorted({"SPY", *(s.upper() for s in ("aig", "bac") if feeds.lean_days(s))})
    raise UnknownHistory("bars", f"bars must be one of {', '.join(SPECS)}, got {spec!r}")


def load_bars(
    symbol: str,
    spec: str,
    from_ns: int,
    to_ns: int,
    *,
    places: int = 4,
    adjustment: Adjustment = Adjustment.TOTAL,
    regular_hours: bool = True,
    from_ticks: bool = False,
) -> BarArrays:
    """``symbol``'s bars of ``spec`` with ``from_ns <= start_ns < to_ns`` (minute bars of the
    regular session, 09:30–16:00 New York, unless ``regular_hours`` is false)."""
    if symbol not in available_symbols(spec):
        raise UnknownHistory(
            "symbols", f"no bundled {spec} bars of {symbol!r}; known: {available_symbols(spec)}"
        )
    bars = (
        _daily(symbol, adjustment)
        if spec == "1d"
        else _minute(symbol, from_ns, to_ns, from_ticks=from_ticks)
    )
    keep = (bars.start_ns >= from_ns) & (bars.start_ns < to_ns)
    if spec == "1m" and regular_hours:
        keep &= _regular_session(bars.start_ns)
    chosen = bars.select(keep)
    return BarArrays(
        chosen.symbol, spec, chosen.start_ns, chosen.end_ns, quantize(chosen.open, places),
        quantize(chosen.high, places), quantize(chosen.low, places),
        quantize(chosen.close, places), chosen.volume,
    )  # fmt: skip


def _daily(symbol: str, adjustment: Adjustment) -> BarArrays:
    daily = read_daily_bars(symbol, adjustment)
    start = daily.date.astype("datetime64[ns]").astype(np.int64)
    return BarArrays(symbol, "1d", start, start + DAY_NS, daily.open, daily.high, daily.low,
                     daily.close, daily.volume)  # fmt: skip


def _minute(symbol: str, from_ns: int, to_ns: int, *, from_ticks: bool) -> BarArrays:
    parts: list[BarArrays] = []
    for day in feeds.lean_days(symbol.lower()):
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9
        if midnight + DAY_NS <= from_ns - DAY_NS or midnight >= to_ns + DAY_NS:
            continue  # the local session lies well outside the period
        parts.append(_minute_day(symbol, day, from_ticks=from_ticks))
    if not parts:
        empty_i = np.empty(0, dtype=np.int64)
        empty_f = np.empty(0)
        return BarArrays(symbol, "1m", empty_i, empty_i, empty_f, empty_f, empty_f, empty_f,
                         empty_f)  # fmt: skip
    return BarArrays(
        symbol, "1m", *(np.concatenate([getattr(p, f) for p in parts]) for f in
                        ("start_ns", "end_ns", "open", "high", "low", "close", "volume")),
    )  # fmt: skip


def _regular_session(start_ns: np.ndarray[Any, np.dtype[np.int64]]) -> np.ndarray[Any, Any]:
    keep = np.zeros(len(start_ns), dtype=bool)
    for i, t in enumerate(start_ns.tolist()):
        local = datetime.fromtimestamp(t / 1e9, _NEW_YORK)
        minute = local.hour * 60 + local.minute
        keep[i] = 9 * 60 + 30 <= minute < 16 * 60
    return keep


def _minute_day(symbol: str, day: date, *, from_ticks: bool) -> BarArrays:
    if symbol == "SPY" and not from_ticks:
        lean = feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(day))
        start = lean.start_ns.astype(np.int64)
        return BarArrays(symbol, "1m", start, start + MINUTE_NS, lean.open, lean.high, lean.low,
                         lean.close, lean.volume)  # fmt: skip
    ticks = feeds.read_lean_trade_ticks(feeds.lean_tick_path(day, symbol.lower()), symbol=symbol)
    live_rules = marketdata.SaleConditionFilter.lean_default() if symbol == "SPY" else None
    bars = marketdata.time_bars(ticks, "1m", live_rules)
    column = {f: np.array([getattr(b, f) for b in bars]) for f in
              ("start_ns", "end_ns", "open", "high", "low", "close", "volume")}  # fmt: skip
    return BarArrays(symbol, "1m", column["start_ns"].astype(np.int64),
                     column["end_ns"].astype(np.int64), column["open"], column["high"],
                     column["low"], column["close"], column["volume"])  # fmt: skip

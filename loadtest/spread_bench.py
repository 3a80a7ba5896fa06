"""Spread estimators against the quoted spread: Corwin–Schultz and Roll on AIG and BAC minute bars.

    .venv/bin/python -m loadtest.spread_bench

Issue 9 (Features) asks how the high–low (Corwin & Schultz 2012) and serial-covariance (Roll
1984) spread estimators of ``engines.features.core`` track the spread actually quoted, on the
bundled Lean tick files of AIG and BAC, 7–11 Oct 2013 (``engines/marketdata/data``). This is a
measurement, not a claim: the figures are whatever the data give.

Method, per symbol and trading day, regular session 09:30–16:00 New York only:

* minute trade bars from the tick trades (``engines.marketdata.core.time_bars`` with
  ``SaleConditionFilter.lean_default()``, the filter that reproduces Lean's own minute bars); a
  minute with no trade has no bar, so an estimator's "two-bar" pair then spans the gap;
* the quote in force after each quote row (``QuoteTickColumns.filled``: each side carried from the
  last row that quoted it, Lean's ``TickQuoteBarConsolidator`` state). The files are a
  consolidated stream: rebuilding a per-exchange NBBO from them crosses on > 99 % of rows, so the
  carried quote is the market's quote. Quoted spread ``ask − bid`` (dollars) and relative spread
  ``(ask − bid)/mid``, each time-weighted over a window (a quote holds from its row until the next
  row; a crossed quote, bid > ask, is left out of the numerator and the weight; a locked one,
  spread 0, counts);
* per window (the whole session, and each 30-minute block, 13 a day): ``CORWIN_SCHULTZ`` with
  ``timeperiod`` = bars − 1 (the mean of every adjacent two-bar estimate in the window, negative
  two-bar estimates set to 0 as the kernel does) against the relative quoted spread, and
  ``ROLL_SPREAD`` with ``timeperiod`` = bars − 2 (all serial pairs of close-to-close changes; 0 when
  their covariance is not negative) against the dollar quoted spread — each estimator in the units
  it estimates;
* Pearson and Spearman correlations across windows: per symbol and pooled (pooling mixes the two
  price levels, BAC ≈ $14 and AIG ≈ $49, which the relative spread carries; the per-symbol figures
  are the within-name tracking). Per day there are only 5 windows per symbol, so those per-symbol
  figures are indicative at best.

Limits: five days of two large caps whose spread is one cent most of the time, so the quoted
spread barely moves within a symbol and the within-symbol correlations are weak by construction;
no overnight adjustment in Corwin–Schultz (windows never cross a night). Prints a table and writes
``loadtest/results/spread_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from engines.features import core as features
from engines.marketdata import feeds
from engines.marketdata.core import SaleConditionFilter, time_bars

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

RESULTS = Path(__file__).parent / "results"
SYMBOLS = ("AIG", "BAC")
#: Regular session, ms after local midnight (09:30 and 16:00 New York).
SESSION_MS = (34_200_000, 57_600_000)
WINDOW_MINUTES = 30
_NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True, slots=True, eq=False)
class SessionData:
    """One symbol's regular session: minute trade bars and the carried quote after each row."""

    symbol: str
    day: date
    open_ns: int
    close_ns: int
    bar_start_ns: I64
    high: F64
    low: F64
    close: F64
    quote_ns: I64
    bid: F64
    ask: F64


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Estimates and the time-weighted quoted spread of one window."""

    symbol: str
    day: date
    start_ns: int
    bars: int
    corwin_schultz: float  # relative
    roll: float  # dollars
    quoted: float  # dollars, time-weighted
    quoted_relative: float  # (ask − bid)/mid, time-weighted


def load_session(symbol: str, day: date) -> SessionData:
    """Minute bars and quotes of ``symbol`` on ``day`` within 09:30–16:00 New York."""
    open_ns, close_ns = (int(t) for t in feeds.local_ms_to_utc_ns(day, np.array(SESSION_MS)))
    trades = feeds.read_lean_trade_ticks(feeds.lean_tick_path(day, symbol), symbol=symbol)
    bars = [
        b
        for b in time_bars(trades, "1m", SaleConditionFilter.lean_default())
        if open_ns <= b.start_ns < close_ns
    ]
    quotes = feeds.read_lean_quote_ticks(feeds.lean_tick_quote_path(day, symbol)).filled()
    return SessionData(
        symbol=symbol,
        day=day,
        open_ns=open_ns,
        close_ns=close_ns,
        bar_start_ns=np.array([b.start_ns for b in bars], dtype=np.int64),
        high=np.array([b.high for b in bars]),
        low=np.array([b.low for b in bars]),
        close=np.array([b.close for b in bars]),
        quote_ns=quotes.event_ns,
        bid=quotes.bid,
        ask=quotes.ask,
    )


def time_weighted_mean(event_ns: I64, value: F64, edges: I64) -> F64:
    """Time-weighted mean of a step function over each interval ``[edges[k], edges[k+1])``.

    ``value[i]`` holds from ``event_ns[i]`` (ascending) until the next event; rows at the same
    instant leave the last one in force. NaN values (no quote yet, crossed) carry no weight; an
    interval with no weighted time is NaN.
    """
    if len(edges) < 2:
        return np.empty(0)
    start, end = int(edges[0]), int(edges[-1])
    inside = (event_ns > start) & (event_ns < end)
    points = np.union1d(edges, event_ns[inside])
    state = np.searchsorted(event_ns, points[:-1], side="right") - 1
    level = np.where(state >= 0, value[np.maximum(state, 0)], np.nan)
    duration = np.diff(points).astype(np.float64)
    interval = np.searchsorted(edges, points[:-1], side="right") - 1
    weight = np.where(np.isnan(level), 0.0, duration)
    total = np.bincount(interval, weight, minlength=len(edges) - 1)
    weighted = np.bincount(interval, np.where(weight > 0, level, 0.0) * weight, len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean: F64 = np.where(total > 0, weighted / np.where(total > 0, total, 1.0), np.nan)
    return mean


def quoted_spreads(session: SessionData, edges: I64) -> tuple[F64, F64]:
    """(dollar, relative) time-weighted quoted spread per window; crossed quotes left out."""
    spread = session.ask - session.bid
    crossed = spread < 0
    dollars = np.where(crossed, np.nan, spread)
    relative = np.where(crossed, np.nan, spread / ((session.ask + session.bid) / 2.0))
    return (
        time_weighted_mean(session.quote_ns, dollars, edges),
        time_weighted_mean(session.quote_ns, relative, edges),
    )


def window_estimates(high: F64, low: F64, close: F64) -> tuple[float, float]:
    """(Corwin–Schultz, Roll) over every bar of one window, by the catalog functions."""
    m = len(close)
    cs = roll = math.nan
    if m >= 2:
        (values,) = features.compute(
            "CORWIN_SCHULTZ", {"high": high, "low": low}, timeperiod=max(m - 1, 1)
        )
        cs = float(values[-1])
    if m >= 4:  # ROLL_SPREAD's timeperiod is at least 2 serial pairs
        (values,) = features.compute("ROLL_SPREAD", {"close": close}, timeperiod=m - 2)
        roll = float(values[-1])
    return cs, roll


def session_windows(session: SessionData, minutes: int) -> list[WindowFigures]:
    """The session cut into ``minutes``-long windows (the last one shorter if it must be)."""
    step = minutes * _NS_PER_MINUTE
    edges = np.append(np.arange(session.open_ns, session.close_ns, step), session.close_ns)
    quoted, relative = quoted_spreads(session, edges)
    which = np.searchsorted(edges, session.bar_start_ns, side="right") - 1
    out = []
    for k in range(len(edges) - 1):
        rows = which == k
        cs, roll = window_estimates(session.high[rows], session.low[rows], session.close[rows])
        out.append(
            WindowFigures(
                symbol=session.symbol,
                day=session.day,
                start_ns=int(edges[k]),
                bars=int(rows.sum()),
                corwin_schultz=cs,
                roll=roll,
                quoted=float(quoted[k]),
                quoted_relative=float(relative[k]),
            )
        )
    return out


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman over the pairs where both are finite (NaN below 3 pairs)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"n": int(a.size), "pearson": math.nan, "spearman": math.nan}
    return {
        "n": int(a.size),
        "pearson": float(stats.pearsonr(a, b).statistic),
        "spearman": float(stats.spearmanr(a, b).statistic),
    }


def study(sessions: Sequence[SessionData]) -> dict[str, Any]:
    """Every figure of the study: per grouping (day / 30-minute) and sample (symbol / pooled)."""
    result: dict[str, Any] = {}
    for grouping, minutes in (("day", 390), ("30min", WINDOW_MINUTES)):
        windows = [w for s in sessions for w in session_windows(s, minutes)]
        samples: dict[str, list[WindowFigures]] = {
            sym: [w for w in windows if w.symbol == sym]
            for sym in sorted({w.symbol for w in windows})
        }
        samples["pooled"] = windows
        block: dict[str, Any] = {}
        for name, ws in samples.items():
            cs = [w.corwin_schultz for w in ws]
            roll = [w.roll for w in ws]
            block[name] = {
                "windows": len(ws),
                "corwin_schultz_vs_relative": correlations(cs, [w.quoted_relative for w in ws]),
                "roll_vs_dollar": correlations(roll, [w.quoted for w in ws]),
                "mean_corwin_schultz": float(np.nanmean(cs)),
                "mean_quoted_relative": float(np.nanmean([w.quoted_relative for w in ws])),
                "mean_roll": float(np.nanmean(roll)),
                "mean_quoted": float(np.nanmean([w.quoted for w in ws])),
                "sd_quoted_relative": float(np.nanstd([w.quoted_relative for w in ws], ddof=1)),
                "sd_quoted": float(np.nanstd([w.quoted for w in ws], ddof=1)),
                "roll_zero_share": float(np.mean([r == 0.0 for r in roll])),
            }
        result[grouping] = block
    return result


def load_all(symbols: Sequence[str] = SYMBOLS) -> list[SessionData]:
    return [load_session(sym, day) for sym in symbols for day in feeds.lean_days(sym.lower())]


def format_table(result: dict[str, Any]) -> str:
    """The study as a fixed-width table: correlations (Pearson, Spearman) and the levels."""
    head = (
        f"{'window':<7}{'sample':<7}{'n':>4}{'CS~rel r':>9}{'rank':>7}{'Roll~$ r':>9}{'rank':>7}"
        f"{'CS bp':>7}{'rel bp':>7}{'rel sd':>7}{'Roll $':>8}{'quote $':>8}{'q$ sd':>8}"
        f"{'Roll=0':>7}"
    )
    lines = [head]
    for grouping, block in result.items():
        for name, f in block.items():
            cs, roll = f["corwin_schultz_vs_relative"], f["roll_vs_dollar"]
            lines.append(
                f"{grouping:<7}{name:<7}{cs['n']:>4}{cs['pearson']:>9.3f}{cs['spearman']:>7.3f}"
                f"{roll['pearson']:>9.3f}{roll['spearman']:>7.3f}"
                f"{f['mean_corwin_schultz'] * 1e4:>7.2f}{f['mean_quoted_relative'] * 1e4:>7.2f}"
                f"{f['sd_quoted_relative'] * 1e4:>7.2f}{f['mean_roll']:>8.4f}"
                f"{f['mean_quoted']:>8.4f}{f['sd_quoted']:>8.4f}{f['roll_zero_share']:>7.0%}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args()
    result = study(load_all())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spread_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))


if __name__ == "__main__":
    main()

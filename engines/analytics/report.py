"""Tear sheet: one self-contained HTML page with inline SVG charts (no JS, no build step).

Charts follow pyfolio's/quantstats' tear sheet: the equity curve (cumulative return), the
underwater plot (drawdown from the running peak), a heatmap of monthly returns (year × month),
and the rolling Sharpe ratio; a table of the full statistic set and the five worst drawdowns.
Pure string building over ``core``'s numbers: the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import math

import numpy as np
import numpy.typing as npt

from engines.analytics import core

_W, _H, _PAD = 720, 200, 36
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _fmt(value: float, pct: bool = False) -> str:
    if not math.isfinite(value):
        return "—" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    return f"{value * 100:.2f}%" if pct else f"{value:.3f}"


def _line_chart(values: core.F64, title: str, cls: str, fill: bool = False) -> str:
    """A polyline (or area down to zero) of ``values`` scaled into the plot box, NaNs skipped."""
    finite = np.isfinite(values)
    if values.size < 2 or not finite.any():
        return f'<svg class="chart {cls}" width="{_W}" height="{_H}"></svg>'
    lo, hi = float(values[finite].min()), float(values[finite].max())
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo or 1.0
    xs = _PAD + np.arange(values.size) * (_W - 2 * _PAD) / (values.size - 1)
    ys = _H - _PAD - (values - lo) / span * (_H - 2 * _PAD)
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y, ok in zip(xs, ys, finite, strict=True) if ok)
    zero_y = _H - _PAD - (0.0 - lo) / span * (_H - 2 * _PAD)
    shape = (
        f'<polygon points="{xs[finite][0]:.1f},{zero_y:.1f} {pts} '
        f'{xs[finite][-1]:.1f},{zero_y:.1f}" fill="#d9534f" fill-opacity="0.5" stroke="#d9534f"/>'
        if fill
        else f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.2"/>'
    )
    return (
        f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{_W}" '
        f'height="{_H}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="{_PAD}" y="16" font-size="13">{html.escape(title)}</text>'
        f'<line x1="{_PAD}" y1="{zero_y:.1f}" x2="{_W - _PAD}" y2="{zero_y:.1f}" stroke="#999"/>'
        f'<text x="2" y="{_PAD}" font-size="10">{_fmt(hi)}</text>'
        f'<text x="2" y="{_H - _PAD}" font-size="10">{_fmt(lo)}</text>'
        f"{shape}</svg>"
    )


def _heat_colour(value: float, scale: float) -> str:
    if not math.isfinite(value):
        return "#eeeeee"
    t = max(-1.0, min(1.0, value / scale))
    level = int(255 - abs(t) * 170)
    return f"rgb({level},255,{level})" if t >= 0 else f"rgb(255,{level},{level})"


def _heatmap(monthly: core.MonthlyReturns) -> str:
    cell_w, cell_h, left, top = 52, 20, 48, 24
    vals = monthly.values
    finite = vals[np.isfinite(vals)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    scale = scale or 1.0
    height = top + cell_h * max(1, monthly.years.size) + 4
    width = left + cell_w * 12 + 4
    parts = [
        f'<svg class="chart heatmap" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="Monthly returns">'
    ]
    for m, name in enumerate(_MONTHS):
        parts.append(f'<text x="{left + m * cell_w + 14}" y="16" font-size="11">{name}</text>')
    for i, year in enumerate(monthly.years.tolist()):
        y = top + i * cell_h
        parts.append(f'<text x="4" y="{y + 14}" font-size="11">{year}</text>')
        for m in range(12):
            v = float(vals[i, m])
            x = left + m * cell_w
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="{_heat_colour(v, scale)}"><title>{year}-{m + 1:02d}: {_fmt(v, True)}'
                f"</title></rect>"
            )
            if math.isfinite(v):
                parts.append(f'<text x="{x + 4}" y="{y + 13}" font-size="10">{v * 100:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(
    returns: npt.ArrayLike,
    dates: npt.ArrayLike,
    *,
    title: str = "Performance",
    benchmark: npt.ArrayLike | None = None,
    params: core.AnalyticsParams | None = None,
    rolling_window: int = 126,
) -> str:
    """The tear sheet of a finite return series with its dates, as an HTML string."""
    p = params or core.AnalyticsParams()
    r = core.as_returns(returns, allow_nan=False)
    d = np.asarray(dates).astype("datetime64[D]")
    if d.shape != r.shape:
        raise core.AnalyticsInputError("dates", f"length {d.size} does not match returns {r.size}")
    if r.size < 2:
        raise core.AnalyticsInputError("returns", "a report needs at least 2 returns")
    stats = core.compute_stats(r, benchmark, p)
    equity = core.cum_returns(r)
    underwater = core.drawdown_series(r)
    rolling = np.full(r.size, np.nan)
    window = min(rolling_window, r.size)
    rolling[window - 1 :] = core.roll_sharpe_ratio(
        r, window, p.risk_free, p.period, p.annualization
    )
    pct = {"cum_return", "annual_return", "annual_volatility", "max_drawdown", "drawdown",
           "value_at_risk", "conditional_value_at_risk", "downside_risk", "alpha"}  # fmt: skip
    rows = "".join(
        f"<tr><th>{name.replace('_', ' ')}</th><td>{_fmt(float(v), name in pct)}</td></tr>"
        for name, v in zip(core.Stats._fields[1:], stats[1:], strict=True)
    )
    dd_rows = "".join(
        f"<tr><td>{e.peak_date or d[0]}</td><td>{e.trough_date}</td>"
        f"<td>{e.recovery_date or 'not recovered'}</td><td>{_fmt(e.depth, True)}</td>"
        f"<td>{e.periods}</td></tr>"
        for e in core.drawdown_table(r, d, top=5)
    )
    esc = html.escape(title)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc}</title><style>body{{font-family:sans-serif;margin:24px}}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;"
        "border-bottom:1px solid #ddd}svg{display:block;margin:12px 0}</style></head><body>"
        f"<h1>{esc}</h1><p>{r.size} {html.escape(p.period)} returns, {d[0]} to {d[-1]}; "
        f"annualised with {p.periods_per_year:g} periods per year; {html.escape(p.convention)} "
        "conventions.</p>"
        + _line_chart(equity, "Cumulative return", "equity")
        + _line_chart(underwater, "Drawdown (underwater)", "underwater", fill=True)
        + "<h2>Monthly returns (%)</h2>"
        + _heatmap(core.monthly_returns(r, d))
        + _line_chart(rolling, f"Rolling Sharpe ({window} periods)", "rolling-sharpe")
        + f"<h2>Statistics</h2><table>{rows}</table>"
        + "<h2>Worst drawdowns</h2><table><tr><th>peak</th><th>trough</th><th>recovery</th>"
        + f"<th>depth</th><th>periods</th></tr>{dd_rows}</table></body></html>"
    )

"""A backtest's HTML report: one self-contained page, inline SVG, no script, no build step.

On top of the Analytics tear sheet of the result's equity (``engines.analytics.report``: equity,
underwater drawdown, monthly returns, rolling Sharpe, statistics) it draws:

* **trades on the price chart** (``svg.chart.price``): the closes of the run's first symbol, one
  polyline point per bar, and one marker per fill of that symbol: a green triangle up for a buy,
  a red one down for a sell, at the fill's price, placed along the bar axis by its time (a
  next-open fill sits at the previous bar's end, where its price meets the line); each marker's
  ``<title>`` says side, quantity, price and time;
* **the parameter heat map of a grid** (``svg.chart.grid``): the two grid axes with the most
  values (rows the first, columns the second); a cell's colour is the best per-period Sharpe over
  the other axes at that pair (green positive, red negative, grey: no valid point), the
  in-sample best point outlined in black; each cell's ``<title>`` gives its pair and Sharpe;
* the grid's overfitting line (Deflated Sharpe, PBO) and, for a walk-forward job, its windows.

Pure string building over the result document: the same result gives the same bytes. Limits:
one symbol's prices; a grid with one varying axis is one row.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engines.analytics.report import render_report

__all__ = ["BUY", "SELL", "report_html"]

_W, _H, _PAD = 720, 240, 36
LINE = "#1f77b4"  # the analytics report's line colour
BUY = "#2ca02c"
SELL = "#d62728"


def report_html(job_id: str, result: dict[str, Any]) -> str:
    """The page of a finished job's ``result`` document (``jobs.run_job``)."""
    values = np.asarray(result["equity"]["v"], dtype=np.float64)
    times = np.asarray(result["equity"]["t"], dtype=np.int64)
    returns = values / np.concatenate(([values[0]], values[:-1])) - 1.0
    page = render_report(returns[1:], times[1:].astype("datetime64[ns]"),
                         title=f"Backtest {job_id}")  # fmt: skip
    fills = result["fills"]
    parts = [
        f"<h2>Trades</h2><p>{len(fills)} fills; hash {html.escape(result['hash'])}</p>",
        price_chart(result["prices"], fills),
    ]
    overfit = result.get("overfitting")
    if overfit:
        parts.append(
            f"<h2>Overfitting</h2><p>{overfit['trials']} trials; best point "
            f"{html.escape(str(result['best_params']))}; Deflated Sharpe "
            f"{overfit['deflated_sharpe']}; PBO {overfit['pbo']} over {overfit['splits']} "
            "CSCV splits</p>"
        )
    if result.get("grid"):
        parts.append(grid_heatmap(result["grid"], result["best_params"]))
    if result.get("walk_forward"):
        parts.append(_walk_forward_table(result["walk_forward"]))
    return page.replace("</body>", "".join(parts) + "</body>")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def price_chart(prices: dict[str, Any], fills: list[dict[str, Any]]) -> str:
    """Closes as a polyline, the symbol's fills as triangles (see the module doc)."""
    t = np.asarray(prices["t"], dtype=np.int64)
    close = np.asarray(prices["close"], dtype=np.float64)
    symbol = str(prices["symbol"])
    mine = [f for f in fills if f.get("symbol", symbol) == symbol]
    fill_price = np.array([float(f["price"]) for f in mine])
    lo = float(min(close.min(), fill_price.min() if mine else np.inf))
    hi = float(max(close.max(), fill_price.max() if mine else -np.inf))
    span = hi - lo or 1.0

    def x(position: float) -> float:
        return _PAD + position * (_W - 2 * _PAD) / max(1, t.size - 1)

    def y(price: float) -> float:
        return _H - _PAD - (price - lo) / span * (_H - 2 * _PAD)

    pts = " ".join(f"{x(i):.1f},{y(c):.1f}" for i, c in enumerate(close.tolist()))
    markers = []
    stamps = np.array([int(f["event_ns"]) for f in mine], dtype=np.int64)
    where = np.interp(stamps, t, np.arange(t.size)).tolist()
    for f, position, price in zip(mine, where, fill_price.tolist(), strict=True):
        cx, cy = x(float(position)), y(price)
        buy = f["side"] == "buy"
        tip = cy - 7 if buy else cy + 7
        base = cy + 5 if buy else cy - 5
        label = f"{f['side']} {f['quantity']} @ {f['price']} {_iso(int(f['event_ns']))}"
        markers.append(
            f'<polygon class="fill {f["side"]}" points="{cx - 6:.1f},{base:.1f} {cx:.1f},'
            f'{tip:.1f} {cx + 6:.1f},{base:.1f}" fill="{BUY if buy else SELL}">'
            f"<title>{html.escape(label)}</title></polygon>"
        )
    title = f"{symbol}: close and fills ({len(mine)})"
    return (
        f'<svg class="chart price" xmlns="http://www.w3.org/2000/svg" width="{_W}" '
        f'height="{_H}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="{_PAD}" y="16" font-size="13">{html.escape(title)}</text>'
        f'<text x="2" y="{_PAD}" font-size="10">{hi:.2f}</text>'
        f'<text x="2" y="{_H - _PAD}" font-size="10">{lo:.2f}</text>'
        f'<polyline points="{pts}" fill="none" stroke="{LINE}" stroke-width="1.2"/>'
        + "".join(markers)
        + "</svg>"
    )


def _axes(grid: list[dict[str, Any]]) -> tuple[str, list[Any], str | None, list[Any]]:
    """The two parameters with the most distinct values (first seen first on a tie)."""
    values: dict[str, list[Any]] = {}
    for point in grid:
        for name, v in point["params"].items():
            seen = values.setdefault(name, [])
            if v not in seen:
                seen.append(v)
    ranked = sorted(values, key=lambda n: -len(values[n]))
    rows = ranked[0]
    cols = ranked[1] if len(ranked) > 1 and len(values[ranked[1]]) > 1 else None
    return rows, sorted(values[rows]), cols, sorted(values[cols]) if cols else [None]


def _colour(value: float | None, scale: float) -> str:
    if value is None or not math.isfinite(value):
        return "#eeeeee"
    t = max(-1.0, min(1.0, value / scale))
    level = int(255 - abs(t) * 170)
    return f"rgb({level},255,{level})" if t >= 0 else f"rgb(255,{level},{level})"


def grid_heatmap(grid: list[dict[str, Any]], best_params: dict[str, Any]) -> str:
    """Sharpe over the grid's two main axes (see the module doc)."""
    rows, row_values, cols, col_values = _axes(grid)
    cell: dict[tuple[Any, Any], float] = {}
    for point in grid:
        key = (point["params"][rows], point["params"][cols] if cols else None)
        sharpe = point["sharpe"]
        if sharpe is not None and (key not in cell or sharpe > cell[key]):
            cell[key] = float(sharpe)
    scale = max((abs(v) for v in cell.values()), default=1.0) or 1.0
    best = (best_params.get(rows), best_params.get(cols) if cols else None)
    size = max(8, min(40, 640 // max(len(col_values), 1)))
    left, top = 56, 40
    width = left + size * len(col_values) + 8
    height = top + size * len(row_values) + 8
    title = f"Sharpe per {rows}" + (f" × {cols}" if cols else "") + " (per period)"
    parts = [
        f'<svg class="chart grid" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="4" y="14" font-size="13">{html.escape(title)}</text>'
    ]
    if cols:
        for j, c in enumerate(col_values):
            parts.append(f'<text x="{left + j * size + 2}" y="{top - 4}" font-size="9">'
                         f"{html.escape(str(c))}</text>")  # fmt: skip
    for i, r in enumerate(row_values):
        ry = top + i * size
        parts.append(f'<text x="4" y="{ry + size / 2 + 4:.0f}" font-size="10">'
                     f"{html.escape(f'{rows}={r}')}</text>")  # fmt: skip
        for j, c in enumerate(col_values):
            v = cell.get((r, c))
            outline = ' stroke="#000" stroke-width="2"' if (r, c) == best else ""
            label = f"{rows}={r}" + (f", {cols}={c}" if cols else "")
            label += f": Sharpe {v:.5f}" if v is not None else ": no valid point"
            parts.append(
                f'<rect x="{left + j * size}" y="{ry}" width="{size - 1}" height="{size - 1}" '
                f'fill="{_colour(v, scale)}"{outline}><title>{html.escape(label)}</title></rect>'
            )
    parts.append("</svg>")
    return "<h2>Parameter grid</h2>" + "".join(parts)


def _walk_forward_table(wf: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_iso(w['test_from_ns'])[:10]}</td><td>{_iso(w['test_to_ns'])[:10]}</td>"
        f"<td>{html.escape(str(w['best_params']))}</td><td>{_num(w['in_sample_sharpe'])}</td>"
        f"<td>{_num(w['out_of_sample_sharpe'])}</td><td>{_num(w['deflated_sharpe'])}</td>"
        f"<td>{_num(w['pbo'])}</td></tr>"
        for w in wf["windows"]
    )
    return (
        f"<h2>Walk-forward</h2><p>{len(wf['windows'])} rolling windows: {wf['train']} bars in "
        f"sample, {wf['test']} out, step {wf['step']}; efficiency (mean out-of-sample / mean "
        f"in-sample Sharpe) {_num(wf['efficiency'])}</p>"
        '<table class="walk-forward"><tr><th>test from</th><th>test to</th><th>chosen</th>'
        "<th>in-sample Sharpe</th><th>out-of-sample Sharpe</th><th>Deflated Sharpe</th>"
        f"<th>PBO</th></tr>{rows}</table>"
    )


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"

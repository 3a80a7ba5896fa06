"""Backtesting REST.

* ``POST /backtests`` — a ``jobs.BacktestBody``: ``{"strategy": "ma_cross", "mode":
  "event"|"vectorized", "params": {...}, "grid": {"fast": [...], "slow": [...]}, "symbols":
  ["SPY"], "bars": "1d"|"1m", "from": "1998-01-01", "to": "2021-12-31", "costs": {"fee_bps",
  "slippage_bps", "latency_ms"}, "fill": "next_open"|"close", "cash", "seed"}`` → 202
  ``{"job": id, "channel": "backtest.<id>"}``; a 400 names the field at fault;
* ``GET /backtests/{id}`` — status, percent, simulated time, trades, ETA, log; the result once
  done (fills, equity, statistics, grid, overfitting, hash);
* ``DELETE /backtests/{id}`` — cancel a running job (409 once it has ended);
* ``GET /backtests/{id}/report`` — the HTML tear sheet of the result's equity (equity,
  drawdown, monthly returns, rolling Sharpe: ``engines.analytics.report``), with the grid's
  Deflated Sharpe and PBO.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi
import numpy as np

from engines.analytics.report import render_report
from engines.backtesting.jobs import BacktestBody, JobInputError
from engines.shell import Route
from engines.shell.errors import ConflictError, ValidationError
from engines.shell.rest import read_body

if TYPE_CHECKING:
    from engines.backtesting.service import BacktestingEngine


class BacktestsResource:
    def __init__(self, engine: BacktestingEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, BacktestBody)
        try:
            job = await self._engine.submit(body)
        except JobInputError as exc:
            raise ValidationError(str(exc), parameter=exc.parameter) from None
        resp.status = falcon.HTTP_202
        resp.media = {"job": job.id, "channel": f"backtest.{job.id}", "status": job.status}


class BacktestResource:
    def __init__(self, engine: BacktestingEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        resp.media = await self._engine.document(id)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str
    ) -> None:
        job = self._engine.cancel(id)
        resp.status = falcon.HTTP_202
        resp.media = {"job": job.id, "status": "cancelling"}


class ReportResource:
    def __init__(self, engine: BacktestingEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        document = await self._engine.document(id)
        result = document.get("result")
        if document.get("status") != "done" or result is None:
            raise ConflictError(f"backtest {id} is {document.get('status')}", parameter="id")
        resp.content_type = falcon.MEDIA_HTML
        resp.text = report_html(id, result)


def report_html(job_id: str, result: dict[str, Any]) -> str:
    """The tear sheet of a result (its equity's returns), plus the grid's overfitting line."""
    values = np.asarray(result["equity"]["v"], dtype=np.float64)
    times = np.asarray(result["equity"]["t"], dtype=np.int64)
    returns = values[1:] / values[:-1] - 1.0
    dates = times[1:].astype("datetime64[ns]")
    page = render_report(returns, dates, title=f"Backtest {job_id}")
    overfit = result.get("overfitting")
    extra = f"<h2>Fills</h2><p>{len(result['fills'])} fills; hash {html.escape(result['hash'])}</p>"
    if overfit:
        extra += (
            f"<h2>Overfitting</h2><p>{overfit['trials']} trials; best point "
            f"{html.escape(str(result['best_params']))}; Deflated Sharpe "
            f"{overfit['deflated_sharpe']}; PBO {overfit['pbo']} over {overfit['splits']} "
            "CSCV splits</p>"
        )
    return page.replace("</body>", extra + "</body>")


def routes(engine: BacktestingEngine) -> Sequence[Route]:
    return (
        ("/backtests", BacktestsResource(engine)),
        ("/backtests/{id}", BacktestResource(engine)),
        ("/backtests/{id}/report", ReportResource(engine)),
    )

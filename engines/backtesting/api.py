"""Backtesting REST.

* ``POST /backtests`` — a ``jobs.BacktestBody``: ``{"strategy": "ma_cross", "mode":
  "event"|"vectorized", "params": {...}, "grid": {"fast": [...], "slow": [...]}, "symbols":
  ["SPY"], "bars": "1d"|"1m", "from": "1998-01-01", "to": "2021-12-31", "costs": {"fee_bps",
  "slippage_bps", "latency_ms"}, "fill": "next_open"|"close", "cash", "seed", "walk_forward":
  {"train", "test", "step"}}`` → 202
  ``{"job": id, "channel": "backtest.<id>"}``; a 400 names the field at fault;
* ``GET /backtests/{id}`` — status, percent, simulated time, trades, ETA, log; the result once
  done (fills, equity, statistics, grid, overfitting, hash);
* ``DELETE /backtests/{id}`` — cancel a running job (409 once it has ended);
* ``GET /backtests/{id}/report`` — the HTML report (``report``): the tear sheet of the
  result's equity (equity, drawdown, monthly returns, rolling Sharpe), trades on the price
  chart, the grid's parameter heat map, Deflated Sharpe and PBO, walk-forward windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from engines.backtesting.jobs import BacktestBody, JobInputError
from engines.backtesting.report import report_html
from engines.shell import Route
from engines.shell.errors import ConflictError, ValidationError
from engines.shell.openapi import ByMethod, Payload, Text
from engines.shell.rest import read_body

if TYPE_CHECKING:
    from engines.backtesting.service import BacktestingEngine


class BacktestsResource:
    body_type = BacktestBody

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
    response_type = ByMethod(get=Payload("backtest"))  # DELETE: {"job", "status"}

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
    response_type = Text("text/html")

    def __init__(self, engine: BacktestingEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        document = await self._engine.document(id)
        result = document.get("result")
        if document.get("status") != "done" or result is None:
            raise ConflictError(f"backtest {id} is {document.get('status')}", parameter="id")
        resp.content_type = falcon.MEDIA_HTML
        resp.text = report_html(id, result)


def routes(engine: BacktestingEngine) -> Sequence[Route]:
    return (
        ("/backtests", BacktestsResource(engine)),
        ("/backtests/{id}", BacktestResource(engine)),
        ("/backtests/{id}/report", ReportResource(engine)),
    )

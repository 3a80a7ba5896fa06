"""Risk REST: account limits and state, denials, latest VaR, VaR backtests.

* ``GET /risk/{account}`` — limits in force, trading state, pending orders, approval and denial
  counts, the latest VaR (``null`` before the first); 404 for an account not configured;
* ``PUT /risk/{account}/state`` — ``{"state": "active" | "reducing_only" | "halted"}``; the next
  order is checked under it; answers ``{"account", "state", "previous"}``;
* ``GET /risk/{account}/denials?from=&to=&limit=&cursor=`` — denied orders by event time;
* ``GET /risk/var/{account}`` — the latest ``risk.var.<account>`` payload (404 before the first);
* ``GET /risk/backtest?symbol=&method=&level=&window=`` — rolling one-day VaR over a bundled
  ticker's daily history (method one of ``core.ROLLING_METHODS``, default historical; level in
  [0.5, 1), default 0.99; window ≥ 75 days, default 250) backtested: Kupiec POF and TUFF,
  Christoffersen independence and conditional coverage, Basel traffic light. A bad parameter
  answers 400 naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import falcon.asgi
import msgspec

from engines.marketdata.daily import daily_tickers
from engines.risk import core
from engines.risk.pretrade import TradingState
from engines.shell import Route
from engines.shell.errors import NotFoundError, ValidationError
from engines.shell.params import query_float, query_int, query_symbol
from engines.shell.rest import HistoryResource, LatestResource, read_body

if TYPE_CHECKING:
    from engines.risk.service import RiskEngine


class StateBody(msgspec.Struct, forbid_unknown_fields=True):
    state: TradingState


def _known(engine: RiskEngine, account: str) -> None:
    if account not in engine.books:
        known = ", ".join(engine.books)
        raise NotFoundError(f"no account {account!r} (known: {known})", parameter="account")


class AccountResource:
    def __init__(self, engine: RiskEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        _known(self._engine, account)
        engine = self._engine
        book = engine.books[account]
        resp.media = {
            "account": account,
            "state": book.state.value,
            "limits": book.limits.to_payload(),
            "pending": len(book.pending),
            "approved": engine.approved_counts[account],
            "denied": dict(engine.denial_counts[account]),
            "var": await engine.var_results.latest(account),
        }


class StateResource:
    body_type = StateBody

    def __init__(self, engine: RiskEngine) -> None:
        self._engine = engine

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        _known(self._engine, account)
        body = await read_body(req, StateBody)
        previous = self._engine.set_state(account, body.state)
        resp.media = {"account": account, "state": body.state.value, "previous": previous.value}


class BacktestResource:
    def __init__(self, engine: RiskEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        symbol = query_symbol(req, "symbol", required=True)
        assert symbol is not None
        known = daily_tickers()
        if symbol.upper() not in known:
            raise ValidationError(
                f"no daily history for {symbol!r} (one of {', '.join(known)})", parameter="symbol"
            )
        raw_method = req.get_param("method") or core.VarMethod.HISTORICAL.value
        rolling = {m.value: m for m in core.ROLLING_METHODS}
        if raw_method not in rolling:
            raise ValidationError(
                f"method must be one of {', '.join(rolling)}, got {raw_method!r}",
                parameter="method",
            )
        level = query_float(req, "level", default=0.99, minimum=0.5, maximum=0.9999)
        window = query_int(req, "window", default=250, minimum=core.BACKCAST_DAYS)
        try:
            resp.media = await self._engine.run_in_executor(
                self._engine.backtest, symbol.upper(), rolling[raw_method], level, window
            )
        except core.RiskInputError as exc:
            raise ValidationError(str(exc), parameter=exc.parameter) from None


def routes(engine: RiskEngine) -> Sequence[Route]:
    return (
        ("/risk/backtest", BacktestResource(engine)),
        ("/risk/var/{account}", LatestResource(engine.var_results, key="account")),
        ("/risk/{account}", AccountResource(engine)),
        ("/risk/{account}/state", StateResource(engine)),
        ("/risk/{account}/denials", HistoryResource(engine.denials, key="account")),
    )

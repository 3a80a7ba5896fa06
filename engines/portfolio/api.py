"""Portfolio REST: an account's book, money and fills; 404 for an account not configured.

* ``GET /portfolio/{account}/positions`` — the ``AccountPositions`` now (marked at the newest
  prices the engine holds);
* ``GET /portfolio/{account}/pnl`` — the ``AccountState`` now, plus ``leverage`` (gross exposure
  / equity, ``null`` when equity ≤ 0), ``currencies`` (the same numbers per currency held, with
  ``total_pnl``) and ``strategies`` (per-strategy attribution per currency; their ``total_pnl``
  sum to the account's);
* ``GET /portfolio/{account}/fills?from=&to=&limit=&cursor=`` — stored fills by event time
  (the shell's ``HistoryResource``).

Amounts are ``Decimal`` sent as strings, exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import falcon.asgi

from engines.portfolio.core import CurrencyTotals
from engines.shell import NotFoundError, Route
from engines.shell.rest import HistoryResource, media
from protocol.records import Fill

if TYPE_CHECKING:
    from engines.portfolio.service import PortfolioEngine


def routes(engine: PortfolioEngine) -> Sequence[Route]:
    """The portfolio's routes. (The optimiser's ``POST /portfolio/optimize`` is added here.)"""
    return (
        ("/portfolio/{account}/positions", PositionsResource(engine)),
        ("/portfolio/{account}/pnl", PnlResource(engine)),
        ("/portfolio/{account}/fills", FillsResource(engine)),
    )


def known_account(engine: PortfolioEngine, account: str) -> str:
    if account not in engine.ledgers:
        raise NotFoundError(
            f"no account {account!r} (configured: {', '.join(engine.ledgers)})",
            parameter="account",
        )
    return account


def totals_payload(totals: CurrencyTotals) -> dict[str, Any]:
    leverage = totals.leverage()
    return {
        **media(totals),
        "total_pnl": str(totals.total_pnl),
        "leverage": None if leverage is None else str(leverage),
    }


class PositionsResource:
    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        positions, _, _ = self._engine.snapshot(known_account(self._engine, account))
        resp.media = media(positions)


class PnlResource:
    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        _, state, valuation = self._engine.snapshot(known_account(self._engine, account))
        leverage = valuation.currencies[state.currency].leverage()
        resp.media = {
            **media(state),
            "leverage": None if leverage is None else str(leverage),
            "currencies": {c: totals_payload(t) for c, t in valuation.currencies.items()},
            "strategies": {
                name: {c: totals_payload(t) for c, t in per_currency.items()}
                for name, per_currency in valuation.strategies.items()
            },
        }


class FillsResource:
    """The shell's history of stored fills, after the account check."""

    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine
        self._history: HistoryResource[Fill] = HistoryResource(engine.fills, key="account")

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        await self._history.on_get(req, resp, account=known_account(self._engine, account))

"""Portfolio REST: an account's book, money and fills; 404 for an account not configured.

* ``GET /portfolio/{account}/positions`` — the ``AccountPositions`` now (marked at the newest
  prices the engine holds);
* ``GET /portfolio/{account}/pnl`` — the ``AccountState`` now (what ``pnl.<account>`` carries:
  ``leverage``, gross exposure / equity, ``null`` when equity ≤ 0, and ``strategies``, the
  per-strategy attribution in the account currency), plus ``currencies`` (the same numbers per
  currency held, with ``total_pnl``, ``leverage`` and that currency's ``strategies``; their
  ``total_pnl`` sum to the currency's);
* ``GET /portfolio/{account}/fills?from=&to=&limit=&cursor=`` — stored fills by event time
  (the shell's ``HistoryResource``);
* ``POST /portfolio/optimize`` — weights for ``symbols`` (the bundled daily history, split- and
  dividend-adjusted, simple returns on the dates every symbol traded within ``start``..``end``)
  by ``method`` (min_variance, max_sharpe, efficient_return, efficient_risk, risk_parity, hrp)
  under ``lower``/``upper``/``budget``; the answer carries the KKT residuals. A bad field → 400
  naming it (``symbols[2]``, ``target_return``, ``upper``).

Amounts are ``Decimal`` sent as strings, exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import falcon.asgi
import msgspec
import numpy as np
import numpy.typing as npt

from engines.marketdata.daily import UnknownTickerError, read_daily_bars
from engines.portfolio.core import CurrencyTotals
from engines.portfolio.optimize import OptimizeError, OptimizeRequest, optimize
from engines.shell import NotFoundError, Route, ValidationError
from engines.shell.openapi import Extended, Page
from engines.shell.rest import HistoryResource, media, read_body
from protocol.records import AccountPositions, AccountState, Fill

if TYPE_CHECKING:
    from engines.portfolio.service import PortfolioEngine


def routes(engine: PortfolioEngine) -> Sequence[Route]:
    """The portfolio's routes. (The optimiser's ``POST /portfolio/optimize`` is added here.)"""
    return (
        ("/portfolio/{account}/positions", PositionsResource(engine)),
        ("/portfolio/{account}/pnl", PnlResource(engine)),
        ("/portfolio/{account}/fills", FillsResource(engine)),
        ("/portfolio/optimize", OptimizeResource(engine)),
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
    response_type = AccountPositions

    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        positions, _, _ = self._engine.snapshot(known_account(self._engine, account))
        resp.media = media(positions)


class PnlResource:
    response_type = Extended(AccountState, {"currencies": dict[str, dict[str, Any]]})

    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        _, state, valuation = self._engine.snapshot(known_account(self._engine, account))
        resp.media = {
            **media(state),
            "currencies": {
                currency: {
                    **totals_payload(totals),
                    "strategies": {
                        name: totals_payload(per_currency[currency])
                        for name, per_currency in valuation.strategies.items()
                        if currency in per_currency
                    },
                }
                for currency, totals in valuation.currencies.items()
            },
        }


class FillsResource:
    """The shell's history of stored fills, after the account check."""

    response_type = Page(Fill, key="account")

    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine
        self._history: HistoryResource[Fill] = HistoryResource(engine.fills, key="account")

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, account: str
    ) -> None:
        await self._history.on_get(req, resp, account=known_account(self._engine, account))


#: The most symbols one optimisation may take (the solver is O(n³) per step).
MAX_OPTIMIZE_SYMBOLS = 200


class OptimizeBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    method: str
    symbols: list[str]
    start: str | None = None  # YYYY-MM-DD, inclusive
    end: str | None = None
    covariance_estimator: str = "sample"
    return_estimator: str = "geometric"
    risk_free_rate: float = 0.0
    target_return: float | None = None
    target_volatility: float | None = None
    lower: float | list[float] = 0.0
    upper: float | list[float] = 1.0
    budget: float = 1.0


class OptimizeResource:
    body_type = OptimizeBody

    def __init__(self, engine: PortfolioEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, OptimizeBody)
        if not 2 <= len(body.symbols) <= MAX_OPTIMIZE_SYMBOLS:
            raise ValidationError(
                f"2..{MAX_OPTIMIZE_SYMBOLS} symbols, got {len(body.symbols)}", parameter="symbols"
            )
        returns = _daily_returns(body)
        request = OptimizeRequest(
            method=body.method,
            assets=tuple(s.upper() for s in body.symbols),
            returns=returns,
            covariance_estimator=body.covariance_estimator,
            return_estimator=body.return_estimator,
            risk_free_rate=body.risk_free_rate,
            target_return=body.target_return,
            target_volatility=body.target_volatility,
            lower=body.lower if isinstance(body.lower, float) else tuple(body.lower),
            upper=body.upper if isinstance(body.upper, float) else tuple(body.upper),
            budget=body.budget,
        )
        try:
            result = await self._engine.run_in_executor(optimize, request)
        except OptimizeError as exc:
            raise ValidationError(str(exc), parameter=exc.parameter) from None
        resp.media = {
            "method": result.method.value,
            "weights": result.weights_by_asset(),
            "expected_return": result.expected_return,
            "volatility": result.volatility,
            "sharpe_ratio": result.sharpe_ratio,
            "risk_contributions": dict(
                zip(result.assets, result.risk_contributions.tolist(), strict=True)
            ),
            "shrinkage": result.shrinkage,
            "kkt": None if result.kkt is None else {**media(result.kkt), "worst": result.kkt.worst},
            "iterations": result.iterations,
            "converged": result.converged,
            "observations": int(returns.shape[0]),
        }


def _daily_returns(body: OptimizeBody) -> npt.NDArray[np.float64]:
    """Simple daily returns of the symbols on the dates all of them traded in the range."""
    closes = []
    for i, symbol in enumerate(body.symbols):
        try:
            bars = read_daily_bars(symbol)
        except UnknownTickerError:
            raise ValidationError(
                f"no daily history for {symbol!r}", parameter=f"symbols[{i}]"
            ) from None
        keep = np.ones(len(bars), dtype=bool)
        for name, bound, op in (
            ("start", body.start, np.greater_equal),
            ("end", body.end, np.less_equal),
        ):
            if bound is not None:
                try:
                    keep &= op(bars.date, np.datetime64(bound, "D"))
                except ValueError:
                    raise ValidationError(
                        f"expected YYYY-MM-DD, got {bound!r}", parameter=name
                    ) from None
        closes.append(dict(zip(bars.date[keep].tolist(), bars.close[keep].tolist(), strict=True)))
    common = sorted(set.intersection(*(set(c) for c in closes)))
    if len(common) < 3:
        raise ValidationError(
            f"the symbols share {len(common)} trading days in the range; need at least 3",
            parameter="symbols",
        )
    prices = np.array([[c[d] for c in closes] for d in common], dtype=np.float64)
    returns: npt.NDArray[np.float64] = prices[1:] / prices[:-1] - 1.0
    return returns

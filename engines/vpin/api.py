"""VPIN REST: latest bucket, stored history (range + cursor), batch compute.

Routes (``{kind}`` is ``vpin``, or ``evpin`` for the enhanced engine, which reuses these):

* ``GET /{kind}/{symbol}/latest`` — the last published bucket (404 before the first);
* ``GET /{kind}/{symbol}/history?from=&to=&limit=&cursor=`` — stored buckets by end time,
  ``from <= end_ns < to``, a page of ``limit`` (≤ 10 000) and ``next_cursor``;
* ``POST /{kind}/batch`` — JSON ``{"trades": [{"t": ns, "p": price, "q": size}, ...],
  "params": {...}}`` or ``{"symbol", "from", "to", "params"}`` over trades in the store; answers
  ``{"buckets": [...], "inputs": {...}, "params": {...}}`` computed in batch mode (the numbers
  the realtime stream gives for the same trades). A malformed body, a non-positive or missing
  price or size, or an unknown parameter is a 400 naming it; out-of-order trades are handled
  by the documented rule and counted in ``inputs.late``.
  Many symbols at once: ``{"symbols": {"SPY": [{"t", "p", "q"}, ...], "QQQ": [...]},
  "params": {...}}`` (same parameters for all; a symbol's list may be empty) answers
  ``{"params": {...}, "symbols": {"SPY": {"buckets": [...], "inputs": {...}}, ...}}``, the numbers
  a single-symbol batch gives for each, computed in one vectorized call. Limits (config):
  ``max_batch_symbols`` symbols (default 64) and ``max_batch_trades`` trades over all symbols
  (default 2 000 000); a 400 names the field at fault (``symbols``, ``symbols.SPY[3].q``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import falcon.asgi
import numpy as np

from engines.shell import NotFoundError, Route, ValidationError
from engines.shell.params import query_int, query_time_ns
from realtime.storage import InvalidQuery
from realtime.storage.base import MAX_PAGE_ROWS

if TYPE_CHECKING:
    from engines.vpin.service import VpinEngine

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def routes(engine: VpinEngine) -> Sequence[Route]:
    kind = engine.channel_kind
    return (
        (f"/{kind}/{{symbol}}/latest", LatestResource(engine)),
        (f"/{kind}/{{symbol}}/history", HistoryResource(engine)),
        (f"/{kind}/batch", BatchResource(engine)),
    )


class LatestResource:
    def __init__(self, engine: VpinEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        latest = self._engine.latest.get(symbol)
        if latest is None:
            raise NotFoundError(f"no bucket completed yet for {symbol}", parameter="symbol")
        resp.media = latest


class HistoryResource:
    def __init__(self, engine: VpinEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        from_ns = query_time_ns(req, "from") or 0
        to_ns = query_time_ns(req, "to") or 2**63 - 1
        limit = query_int(req, "limit", default=1_000, minimum=1, maximum=MAX_PAGE_ROWS)
        cursor = req.get_param("cursor") or None
        channel = f"{self._engine.channel_kind}.{symbol}"
        try:
            page = await self._engine.store.fetch_signals(channel, from_ns, to_ns, limit, cursor)
        except InvalidQuery as exc:
            raise ValidationError(str(exc), parameter=exc.parameter) from None
        resp.media = {
            "symbol": symbol,
            "items": [row.payload for row in page.items],
            "next_cursor": page.next_cursor,
        }


class BatchResource:
    def __init__(self, engine: VpinEngine) -> None:
        self._engine = engine

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        try:
            body = await req.get_media()
        except falcon.MediaMalformedError:
            raise ValidationError("body is not valid JSON", parameter="body") from None
        if not isinstance(body, dict):
            raise ValidationError("body must be a JSON object", parameter="body")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise ValidationError("params must be an object", parameter="params")
        if "symbols" in body:
            if "trades" in body or "symbol" in body:
                raise ValidationError("give symbols, or trades, not both", parameter="body")
            await self._many(body["symbols"], params, resp)
            return
        if "trades" in body:
            columns = trade_columns(body["trades"], self._engine.config.max_batch_trades)
        elif "symbol" in body:
            columns = await self._stored(body)
        else:
            raise ValidationError("give trades, or symbol with from and to", parameter="body")
        try:
            resp.media = await self._engine.run_in_executor(
                self._engine.batch_compute, columns, params
            )
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="params") from None

    async def _many(self, symbols: Any, params: dict[str, Any], resp: falcon.asgi.Response) -> None:
        config = self._engine.config
        if not isinstance(symbols, dict) or not symbols:
            raise ValidationError(
                "symbols must be a non-empty object of symbol → trades", parameter="symbols"
            )
        if len(symbols) > config.max_batch_symbols:
            raise ValidationError(
                f"at most {config.max_batch_symbols} symbols per request", parameter="symbols"
            )
        total = sum(len(trades) for trades in symbols.values() if isinstance(trades, list))
        if total > config.max_batch_trades:
            raise ValidationError(
                f"at most {config.max_batch_trades} trades per request (all symbols)",
                parameter="symbols",
            )
        columns: dict[str, Columns] = {}
        for symbol, trades in symbols.items():
            if not symbol:
                raise ValidationError("a symbol must be a non-empty string", parameter="symbols")
            columns[symbol] = trade_columns(
                trades, config.max_batch_trades, name=f"symbols.{symbol}", allow_empty=True
            )
        try:
            resp.media = await self._engine.run_in_executor(
                self._engine.batch_compute_many, columns, params
            )
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="params") from None

    async def _stored(self, body: dict[str, Any]) -> Columns:
        symbol, from_ns, to_ns = body.get("symbol"), body.get("from"), body.get("to")
        if not isinstance(symbol, str) or not symbol:
            raise ValidationError("symbol must be a non-empty string", parameter="symbol")
        for name, value in (("from", from_ns), ("to", to_ns)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name} must be ns since the epoch", parameter=name)
        assert isinstance(from_ns, int) and isinstance(to_ns, int)
        rows: list[Any] = []
        cursor: str | None = None
        while True:
            try:
                page = await self._engine.store.fetch_trades(
                    symbol, from_ns, to_ns, MAX_PAGE_ROWS, cursor
                )
            except InvalidQuery as exc:
                raise ValidationError(str(exc), parameter=exc.parameter) from None
            rows += page.items
            if len(rows) > self._engine.config.max_batch_trades:
                raise ValidationError("range holds too many trades", parameter="to")
            cursor = page.next_cursor
            if cursor is None:
                break
        return (
            np.array([r.event_ns for r in rows], dtype=np.int64),
            np.array([r.price for r in rows], dtype=np.float64),
            np.array([r.size for r in rows], dtype=np.float64),
            np.array([r.aggressor or 0 for r in rows], dtype=np.int8),
        )


def trade_columns(
    trades: Any, max_trades: int, *, name: str = "trades", allow_empty: bool = False
) -> Columns:
    """Validated columns of posted trades ``[{"t", "p", "q", "a"?}]`` (``a``: buy/sell);
    ``name`` is the field the list sits in, named by a 400 (``trades[3].q``)."""
    if not isinstance(trades, list) or not (trades or allow_empty):
        kind = "a list" if allow_empty else "a non-empty list"
        raise ValidationError(f"{name} must be {kind}", parameter=name)
    if len(trades) > max_trades:
        raise ValidationError(f"at most {max_trades} trades per request", parameter=name)
    n = len(trades)
    t = np.empty(n, dtype=np.int64)
    p = np.empty(n)
    q = np.empty(n)
    a = np.zeros(n, dtype=np.int8)
    for i, trade in enumerate(trades):
        at = f"{name}[{i}]"
        if not isinstance(trade, dict):
            raise ValidationError(f"{at} must be an object", parameter=at)
        time, price, size = trade.get("t"), trade.get("p"), trade.get("q")
        if isinstance(time, bool) or not isinstance(time, int) or time < 0:
            raise ValidationError(f"{at}.t must be ns >= 0", parameter=f"{at}.t")
        for field, value in (("p", price), ("q", size)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValidationError(
                    f"{at}.{field} must be a number > 0, got {value!r}",
                    parameter=f"{at}.{field}",
                )
        side = trade.get("a")
        if side not in (None, "buy", "sell"):
            raise ValidationError(f"{at}.a must be buy, sell or null", parameter=f"{at}.a")
        t[i], p[i], q[i] = time, price, size
        a[i] = 1 if side == "buy" else -1 if side == "sell" else 0
    return t, p, q, a

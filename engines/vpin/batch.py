"""Batch VPIN over posted or stored trades, declared once for VPIN and Enhanced VPIN.

Both engines answer ``POST …/batch`` with this resource, each passing its own compute; Enhanced
VPIN imports this module (never VPIN's ``service`` or ``api``). The body declaration is the
validation (``engines.shell.rest.read_body``): ``t`` ns ≥ 0, ``p`` and ``q`` > 0, ``a``
buy/sell/null; a 400 names the field at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import falcon.asgi
import msgspec
import numpy as np
import numpy.typing as npt

from engines.shell import ValidationError
from engines.shell.rest import read_body
from protocol.records import Side, Trade, error_path
from realtime.storage import MAX_PAGE_ROWS, Store

Columns = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int8]
]


class PostedTrade(msgspec.Struct, frozen=True):
    t: Annotated[int, msgspec.Meta(ge=0)]
    p: Annotated[float, msgspec.Meta(gt=0)]
    q: Annotated[float, msgspec.Meta(gt=0)]
    a: Side | None = None


class BatchBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{"trades": [...]}``, ``{"symbol", "from", "to"}`` (stored trades) or ``{"symbols":
    {SYM: [...]}}``, each with optional ``params`` overrides. ``symbols`` stays raw here so a
    400 can name the symbol (``symbols.QQQ[0].p``): each list is validated on its own."""

    trades: list[PostedTrade] | None = None
    symbol: str | None = None
    from_ns: int | None = msgspec.field(name="from", default=None)
    to_ns: int | None = msgspec.field(name="to", default=None)
    symbols: Any = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


def trade_columns(trades: list[PostedTrade]) -> Columns:
    n = len(trades)
    return (
        np.fromiter((x.t for x in trades), dtype=np.int64, count=n),
        np.fromiter((x.p for x in trades), dtype=np.float64, count=n),
        np.fromiter((x.q for x in trades), dtype=np.float64, count=n),
        np.fromiter(
            (1 if x.a is Side.BUY else -1 if x.a is Side.SELL else 0 for x in trades),
            dtype=np.int8,
            count=n,
        ),
    )


def symbol_trades(symbol: str, trades: Any) -> list[PostedTrade]:
    """One symbol's posted list; ``ValueError`` names the path (``symbols.SPY[1].q``)."""
    try:
        return msgspec.convert(trades, list[PostedTrade])
    except msgspec.ValidationError as exc:
        path = error_path(exc) or "$"
        raise BadBody(f"symbols.{symbol}{path.removeprefix('$')}", str(exc)) from None


class BadBody(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


#: ``(columns, params overrides, symbol or None)``: the symbol picks its bucket volume.
Compute = Callable[[Columns, dict[str, Any], str | None], dict[str, Any]]
ComputeMany = Callable[[dict[str, Columns], dict[str, Any]], dict[str, Any]]


class BatchResource:
    """``POST …/batch`` for VPIN and Enhanced VPIN alike (each passes its own compute)."""

    body_type = BatchBody

    def __init__(
        self,
        store: Store,
        compute: Compute,
        compute_many: ComputeMany,
        run: Callable[..., Any],
        *,
        max_trades: int,
        max_symbols: int,
    ) -> None:
        self._store = store
        self._compute = compute
        self._compute_many = compute_many
        self._run = run
        self._max_trades = max_trades
        self._max_symbols = max_symbols

    @classmethod
    def of(cls, engine: Any) -> BatchResource:
        """For an engine with ``batch_compute``/``batch_compute_many`` and VPIN's limits."""
        return cls(
            engine.storage.store,
            engine.batch_compute,
            engine.batch_compute_many,
            engine.run_in_executor,
            max_trades=engine.config.max_batch_trades,
            max_symbols=engine.config.max_batch_symbols,
        )

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, BatchBody)
        forms = [f for f in ("trades", "symbol", "symbols") if getattr(body, f) is not None]
        if len(forms) != 1:
            raise ValidationError(
                "give exactly one of trades, symbol (with from and to), or symbols",
                parameter="body",
            )
        try:
            if body.symbols is not None:
                many = self._symbols(body.symbols)
                resp.media = await self._run(self._compute_many, many, dict(body.params))
                return
            if body.trades is not None:
                if not body.trades:
                    raise ValidationError("trades must be a non-empty list", parameter="trades")
                if len(body.trades) > self._max_trades:
                    raise ValidationError(
                        f"at most {self._max_trades} trades per request", parameter="trades"
                    )
                columns = trade_columns(body.trades)
            else:
                columns = await self._stored(body)
            resp.media = await self._run(self._compute, columns, dict(body.params), body.symbol)
        except BadBody as exc:
            raise ValidationError(str(exc), parameter=exc.parameter) from None
        except ValueError as exc:  # the parameters did not validate
            raise ValidationError(str(exc), parameter="params") from None

    def _symbols(self, symbols: Any) -> dict[str, Columns]:
        if not isinstance(symbols, dict) or not symbols:
            raise ValidationError(
                "symbols must be a non-empty object of symbol → trades", parameter="symbols"
            )
        if len(symbols) > self._max_symbols:
            raise ValidationError(
                f"at most {self._max_symbols} symbols per request", parameter="symbols"
            )
        total = sum(len(trades) for trades in symbols.values() if isinstance(trades, list))
        if total > self._max_trades:
            raise ValidationError(
                f"at most {self._max_trades} trades per request (all symbols)", parameter="symbols"
            )
        if not all(symbols):
            raise ValidationError("a symbol must be a non-empty string", parameter="symbols")
        return {symbol: trade_columns(symbol_trades(symbol, t)) for symbol, t in symbols.items()}

    async def _stored(self, body: BatchBody) -> Columns:
        if not body.symbol:
            raise ValidationError("symbol must be a non-empty string", parameter="symbol")
        for name, value in (("from", body.from_ns), ("to", body.to_ns)):
            if value is None:
                raise ValidationError(f"{name} must be ns since the epoch", parameter=name)
        assert body.from_ns is not None and body.to_ns is not None
        rows: list[Trade] = []
        cursor: str | None = None
        while True:
            page = await self._store.fetch_trades(
                body.symbol, body.from_ns, body.to_ns, MAX_PAGE_ROWS, cursor
            )
            rows += page.items
            if len(rows) > self._max_trades:
                raise ValidationError("range holds too many trades", parameter="to")
            cursor = page.next_cursor
            if cursor is None:
                break
        return (
            np.array([r.event_ns for r in rows], dtype=np.int64),
            np.array([r.price for r in rows], dtype=np.float64),
            np.array([r.size for r in rows], dtype=np.float64),
            np.array([r.aggressor_sign for r in rows], dtype=np.int8),
        )

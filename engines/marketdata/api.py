"""MarketData REST on port 8800: instruments, history pages, the live book, the latest quote.

Items are the bus records' own wire form (``protocol.records.encode``): a ``/trades`` item is
exactly a ``trades.SYM`` payload, a ``/quotes`` item a ``quotes.SYM`` payload (``i`` ``null`` when
read back from PostgreSQL, which does not keep a quote's sequence), a ``/bars`` item a
``bars.<spec>.SYM`` payload; ``/quotes/latest`` answers one ``quotes.SYM`` payload and
``/book/{symbol}`` a ``book.SYM`` payload with the book's state. Field names are
``protocol/README.md``'s record table.

History (``/trades``, ``/quotes``, ``/bars``) is read from the engine's ``Store``: stable order
``(event_ns, id)`` (bars: ``start_ns``), half-open ``from <= t < to``, keyset pagination with the
store's opaque cursor returned as ``next_cursor`` (``null`` on the last page). Times are ns since
the epoch or ISO-8601 with an offset. A symbol with no stored rows answers an empty page, not 404
(history of a symbol that has not traded yet is empty, not missing); ``/book/{symbol}`` and
``/quotes/latest`` answer 404 for a symbol the engine holds no book / quote for.

``/bars?adjustment=raw|split|total`` (default ``raw``): Lean's split-adjusted and split-and-
dividend-adjusted prices (``daily`` module), applied at read time to any spec from the factor
files (factors 1 for a symbol without one), so stored bars stay as traded and a new corporate
action never rewrites history. ``raw`` is the default because ``/bars`` serves what traded, as
``/trades`` does, and the minute bars' answers stay what they were; ask ``total`` for total-return
series (Lean's own default), ``split`` for prices comparable across splits. ``spec=1d`` of a
daily-history symbol is served from the daily history (``service``), other pages from the store.

Errors use the shell's types: a bad parameter is a 400 naming it; PostgreSQL unreachable is a 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

import falcon.asgi

from engines.marketdata.core import BarSpec, BookState
from engines.marketdata.daily import Adjustment
from engines.shell.errors import NotFoundError, ValidationError
from engines.shell.lifecycle import Route
from engines.shell.openapi import Extended, Items, Page, Payload
from engines.shell.params import query_enum, query_int, query_symbol
from engines.shell.rest import TimeRange
from protocol.channels import book
from protocol.errors import ProtocolError
from protocol.records import encode, encode_many
from realtime.storage import InstrumentRow

if TYPE_CHECKING:
    from engines.marketdata.service import MarketDataEngine

__all__ = ["DEFAULT_LIMIT", "routes"]

DEFAULT_LIMIT = 1_000
MAX_BOOK_DEPTH = 1_000
_END_OF_TIME = 2**63 - 1
T = TypeVar("T")


def routes(engine: MarketDataEngine) -> Sequence[Route]:
    return (
        ("/instruments", InstrumentsResource(engine)),
        ("/trades", TicksResource(engine, "trades")),
        ("/quotes", TicksResource(engine, "quotes")),
        ("/quotes/latest", LatestQuoteResource(engine)),
        ("/bars", BarsResource(engine)),
        ("/book/{symbol}", BookResource(engine)),
    )


class InstrumentsResource:
    response_type = Items(InstrumentRow)

    def __init__(self, engine: MarketDataEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"items": await self._engine.store.fetch_instruments()}


class TicksResource:
    """``GET /trades`` and ``GET /quotes``: one symbol's rows in ``[from, to)``, paged."""

    def __init__(self, engine: MarketDataEngine, table: Literal["trades", "quotes"]) -> None:
        self._engine = engine
        self._table = table

    @property
    def response_type(self) -> Page:
        """A page of ``trades.SYM`` or ``quotes.SYM`` payloads, as ``table`` says."""
        return Page(Payload(self._table))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        symbol, q = query_symbol(req, required=True), TimeRange.from_request(req)
        fetch = getattr(self._engine.store, f"fetch_{self._table}")
        page = await fetch(symbol, q.from_ns, q.to_ns, q.limit, q.cursor)
        resp.media = {
            "symbol": symbol,
            "items": encode_many(page.items),
            "next_cursor": page.next_cursor,
        }


class BarsResource:
    response_type = Page(Payload("bars"), fields={"spec": str, "adjustment": Adjustment})

    def __init__(self, engine: MarketDataEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        symbol, q = query_symbol(req, required=True), TimeRange.from_request(req)
        assert symbol is not None
        spec = req.get_param("spec")
        if not spec:
            raise ValidationError("spec is required", parameter="spec", code="missing_parameter")
        try:
            BarSpec.parse(spec)
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="spec") from None
        adjustment = query_enum(req, "adjustment", Adjustment, default=Adjustment.RAW)
        assert adjustment is not None
        page = await self._engine.bars_page(
            symbol, spec, adjustment, q.from_ns, q.to_ns, q.limit, q.cursor
        )
        resp.media = {
            "symbol": symbol,
            "spec": spec,
            "adjustment": adjustment.value,
            "items": encode_many(page.items),
            "next_cursor": page.next_cursor,
        }


class BookResource:
    """The live rebuilt book (not stored): top ``depth`` levels, bids best first, as the
    ``book.SYM`` payload (``BookTop``) plus the book's ``state`` and whether it is ``crossed``."""

    response_type = Extended(Payload("book"), {"state": BookState, "crossed": bool})

    def __init__(self, engine: MarketDataEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        try:
            book(symbol)
        except ProtocolError:
            raise ValidationError(
                f"symbol must be 1-40 of A-Z a-z 0-9 _ -, got {symbol!r}", parameter="symbol"
            ) from None
        depth = query_int(
            req, "depth", default=self._engine.config.book_depth, minimum=1, maximum=MAX_BOOK_DEPTH
        )
        order_book = self._engine.books.get(symbol)
        if order_book is None:
            raise NotFoundError(f"no order book for {symbol}", parameter="symbol")
        resp.media = {
            **encode(order_book.top(depth)),
            "state": order_book.state.value,
            "crossed": order_book.is_crossed(),
        }


class LatestQuoteResource:
    """The newest quote: the engine's own (includes rows not yet written), else the store's."""

    response_type = Payload("quotes")

    def __init__(self, engine: MarketDataEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        symbol: str = query_symbol(req, required=True)  # type: ignore[assignment]
        quote = self._engine.latest_quotes.get(symbol)
        if quote is None:
            quote = await self._engine.store.fetch_latest_quote(symbol)
        if quote is None:
            raise NotFoundError(f"no quote for {symbol}", parameter="symbol")
        resp.media = encode(quote)

"""The storage interface shared by the PostgreSQL store and the bounded in-memory store.

Market data is stored and read back as the bus's own records (``protocol.records`` ``Trade``,
``Quote``, ``Bar``): one type per market event from feed through bus and store to REST, so every
reader sees the wire's field names. PostgreSQL keeps them in the ``storage/sql`` columns (the
conversion is ``postgres``'s); a quote's ``sequence`` has no column there, so a quote read back
from PostgreSQL has none. Reads come back in a stable order, ``(event_ns, id)`` where ``id`` is
the row's insertion number (``start_ns`` for bars, unique per symbol and spec), and page with an
opaque keyset cursor: the position of the last row served, so a page never skips or repeats a
row however many rows arrive meanwhile after it (keyset pagination, not OFFSET). Time ranges are
half-open: ``from_ns <= t < to_ns``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from protocol.records import Bar, Quote, Trade

MAX_PAGE_ROWS = 10_000
#: The largest int64 nanosecond time: a time range with no upper end.
END_OF_TIME_NS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class InstrumentRow:
    symbol: str
    venue: str
    asset_class: str
    price_precision: int
    size_precision: int
    currency: str


@dataclass(slots=True)
class SignalRow:
    """One value a compute engine published on ``channel`` (bus ``seq``), about ``key``."""

    engine: str
    channel: str
    key: str
    event_ns: int
    seq: int
    payload: Any


# Column order of each table as the writer COPYs it (every column but ``id``). ``Quote`` and
# ``Bar`` list their fields in this order (``bars.trade_count`` is ``Bar.trades``).
TRADE_COLUMNS = (
    "symbol",
    "event_ns",
    "receive_ns",
    "price",
    "size",
    "aggressor",
    "trade_id",
    "exchange",
    "condition",
)
QUOTE_COLUMNS = ("symbol", "event_ns", "receive_ns", "bid", "bid_size", "ask", "ask_size")
BAR_COLUMNS = (
    "symbol",
    "spec",
    "start_ns",
    "end_ns",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "dollar_volume",
    "trade_count",
)
SIGNAL_COLUMNS = ("engine", "channel", "key", "event_ns", "seq", "payload")
INSTRUMENT_COLUMNS = (
    "symbol",
    "venue",
    "asset_class",
    "price_precision",
    "size_precision",
    "currency",
)

RowT = TypeVar("RowT")


@dataclass(frozen=True, slots=True)
class Page(Generic[RowT]):
    """Rows in stable order; ``next_cursor`` is ``None`` when nothing follows in the range."""

    items: list[RowT]
    next_cursor: str | None


class InvalidQuery(ValueError):
    """A read parameter is out of its domain; ``parameter`` names it (REST maps this to 400)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class StoreUnavailable(Exception):
    """The store cannot answer now (PostgreSQL unreachable); REST maps this to 503. Raised by
    reads only: writes never block and queue to a bound instead."""


_CURSOR = struct.Struct(">qq")


def encode_cursor(time_ns: int, tie: int) -> str:
    """The position after the row ``(time_ns, tie)``: URL-safe base64 of two big-endian int64."""
    return base64.urlsafe_b64encode(_CURSOR.pack(time_ns, tie)).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        time_ns, tie = _CURSOR.unpack(raw)
    except (binascii.Error, struct.error, ValueError) as error:
        raise InvalidQuery("cursor", "not a cursor this service issued") from error
    return int(time_ns), int(tie)


def check_range(from_ns: int, to_ns: int, limit: int) -> None:
    if from_ns > to_ns:
        raise InvalidQuery("from", "must not be after 'to'")
    if not 1 <= limit <= MAX_PAGE_ROWS:
        raise InvalidQuery("limit", f"must be between 1 and {MAX_PAGE_ROWS}")


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters for ``/health`` and ``/metrics``. Every row a store does not keep is counted.

    ``bound`` is the write queue's row bound (postgres) or the per-key ring size (memory).
    ``rows_dropped_overflow``: refused because the queue was full. ``rows_rejected``: in batches
    PostgreSQL refused for their content (retrying cannot help). ``rows_dropped_shutdown``: still
    queued when ``close`` ran out of time. ``rows_evicted``: pushed out of a memory ring by newer
    rows. ``batches_failed``: failed write attempts; ``retries``: attempts made after a failure.
    """

    kind: str
    bound: int
    connected: bool
    rows_written: int = 0
    rows_queued: int = 0
    batches_written: int = 0
    batches_failed: int = 0
    retries: int = 0
    rows_dropped_overflow: int = 0
    rows_rejected: int = 0
    rows_dropped_shutdown: int = 0
    rows_evicted: int = 0
    last_error: str | None = None


class Store(Protocol):
    """Where market data and signals are kept: PostgreSQL, or bounded memory without a DSN.

    ``write_*`` never block: they accept what fits (returning how many rows) and count the rest.
    """

    kind: str

    async def start(self) -> None: ...

    async def close(self, timeout_s: float | None = None) -> None:
        """Write what is still queued (bounded by ``timeout_s``), then release connections."""
        ...

    def stats(self) -> StoreStats: ...

    def write_trades(self, rows: Iterable[Trade]) -> int: ...

    def write_quotes(self, rows: Iterable[Quote]) -> int: ...

    def write_bars(self, rows: Iterable[Bar]) -> int: ...

    def write_signals(self, rows: Iterable[SignalRow]) -> int: ...

    async def upsert_instruments(self, rows: Iterable[InstrumentRow]) -> None: ...

    async def fetch_instruments(self) -> list[InstrumentRow]: ...

    async def fetch_trades(
        self, symbol: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[Trade]: ...

    async def fetch_quotes(
        self, symbol: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[Quote]: ...

    async def fetch_bars(
        self,
        symbol: str,
        spec: str,
        from_ns: int,
        to_ns: int,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Bar]:
        """Bars with ``from_ns <= start_ns < to_ns``, by ``start_ns``."""
        ...

    async def fetch_signals(
        self, channel: str, from_ns: int, to_ns: int, limit: int, cursor: str | None = None
    ) -> Page[SignalRow]: ...

    async def fetch_latest_quote(self, symbol: str) -> Quote | None: ...

    async def fetch_latest_signal(self, channel: str) -> SignalRow | None:
        """The newest stored value of ``channel`` by ``(event_ns, id)``."""
        ...

"""Live feeds: an exchange's WebSocket streams in, the same normalized records as replay out.

``LiveAdapter`` is what the engine consumes (``service.MarketDataEngine`` with ``feed=live``):
an async stream of ``Trade``, ``Quote``, ``BookDelta`` and ``BookSnapshot`` records that runs
until ``close()``, a ``resync(symbol)`` the engine calls when its ``core.OrderBook`` finds a gap,
and counters for ``/health``. The engine's book does the sequencing (stale diffs, the first diff
straddling the snapshot, gaps); the adapter only delivers a snapshot before the diffs that follow
it.

``BinanceAdapter`` follows Binance spot's "How to manage a local order book correctly" (WebSocket
Streams docs): open the combined stream ``<url>?streams=<sym>@trade/<sym>@bookTicker/
<sym>@depth@100ms``, buffer the depth diffs, fetch ``GET <rest_url>?symbol=SYM&limit=1000``, then
hand over the snapshot followed by the buffered diffs (the book drops those with
``u <= lastUpdateId``). Every frame goes through ``feeds.binance_event``, the parser of the
recorded feed, so live and replay produce equal records. A lost connection reconnects with
capped exponential backoff and full jitter (``realtime.backoff``) and takes a new snapshot;
malformed frames are counted and skipped.
Pings are answered by ``websockets`` (client keepalive left at its default).
"""

from __future__ import annotations

import asyncio
import logging
import random
import urllib.request
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson
import websockets.asyncio.client
from websockets.exceptions import WebSocketException

from engines.marketdata.feeds import BinanceEvent, FeedErrors, binance_event
from engines.marketdata.records import BookDelta, BookSnapshot
from realtime.backoff import Backoff, BackoffPolicy, Rng
from realtime.clock import Clock

__all__ = [
    "BINANCE_DEPTH_URL",
    "BINANCE_STREAM_URL",
    "AdapterStats",
    "BinanceAdapter",
    "BinanceAdapterConfig",
    "LiveAdapter",
    "http_get",
]

log = logging.getLogger(__name__)

#: Binance spot combined-stream endpoint (WebSocket Streams docs, "General WSS information").
BINANCE_STREAM_URL = "wss://stream.binance.com:9443/stream"
#: Binance spot REST order-book snapshot (``GET /api/v3/depth``).
BINANCE_DEPTH_URL = "https://api.binance.com/api/v3/depth"
#: The streams subscribed per symbol, in the bundled capture's names.
STREAM_KINDS = ("trade", "bookTicker", "depth@100ms")

#: What a malformed frame raises in ``binance_event`` (orjson.JSONDecodeError is a ValueError).
_MALFORMED = (KeyError, ValueError, TypeError, AttributeError)
#: A connection or snapshot attempt that failed and is worth retrying.
_RETRYABLE = (OSError, TimeoutError, WebSocketException)

FetchSnapshot = Callable[[str], Awaitable[bytes]]
Connect = Callable[..., Any]  # websockets.asyncio.client.connect or a stand-in


async def http_get(url: str, timeout_s: float = 10.0) -> bytes:
    """GET ``url`` and return the body: urllib in a worker thread (no HTTP client dependency;
    one snapshot per (re)connection or gap is far too rare to need a pool)."""

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()
            return body

    return await asyncio.to_thread(get)


@dataclass(frozen=True, slots=True)
class BinanceAdapterConfig:
    """Where and how to connect. ``symbols`` upper-case as Binance names them (``BTCUSDT``)."""

    url: str = BINANCE_STREAM_URL
    rest_url: str = BINANCE_DEPTH_URL
    symbols: tuple[str, ...] = ("BTCUSDT",)
    depth_limit: int = 1000  # snapshot levels per side (Binance: 5 … 5000)
    backoff_initial_s: float = 0.1  # the first reconnect/snapshot wait is drawn from [0, this]
    backoff_max_s: float = 10.0  # no wait is longer
    open_timeout_s: float = 10.0
    snapshot_timeout_s: float = 10.0
    queue_events: int = 10_000  # records waiting for the consumer (the reader waits beyond)
    held_diffs: int = 10_000  # diffs held per symbol while its snapshot is fetched

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if self.queue_events < 1 or self.held_diffs < 1:
            raise ValueError("queue_events and held_diffs must be >= 1")

    def stream_url(self) -> str:
        """The combined-stream URL: ``<url>?streams=btcusdt@trade/btcusdt@bookTicker/…``."""
        names = [f"{s.lower()}@{kind}" for s in self.symbols for kind in STREAM_KINDS]
        return f"{self.url}?streams={'/'.join(names)}"

    def snapshot_url(self, symbol: str) -> str:
        query = urlencode({"symbol": symbol.upper(), "limit": self.depth_limit})
        return f"{self.rest_url}?{query}"

    @property
    def backoff(self) -> BackoffPolicy:
        """Waits before reconnects and snapshot retries: the shared full-jitter policy."""
        return BackoffPolicy(self.backoff_initial_s, self.backoff_max_s)


@dataclass(slots=True)
class AdapterStats:
    """Counters for ``/health``: frames read, frames skipped as malformed, connections."""

    messages: int = 0
    malformed: int = 0
    connects: int = 0
    reconnects: int = 0  # connection attempts after a lost or failed one
    snapshots: int = 0  # snapshots delivered (one per connection and symbol, plus resyncs)
    resyncs: int = 0  # snapshots asked for by the engine after a gap
    snapshot_failures: int = 0
    held_overflow: int = 0  # diffs dropped while a snapshot was awaited (the book resyncs)
    connected: bool = False
    last_error: str = ""


class LiveAdapter(Protocol):
    """A live feed as the engine consumes it."""

    stats: AdapterStats

    def events(self) -> AsyncIterator[BinanceEvent]:
        """Records in arrival order, a snapshot before the diffs it precedes; until closed."""
        ...

    async def resync(self, symbol: str) -> None:
        """Fetch a new snapshot of ``symbol`` and deliver it through ``events()``."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Closed:
    """Queue sentinel: the adapter was closed, or its connection loop broke with ``error``."""

    error: BaseException | None = None


class BinanceAdapter:
    """Binance spot combined streams (trades, bookTicker, depth@100ms) plus REST snapshots.

    ``connect`` is ``websockets.asyncio.client.connect`` (an async context manager yielding a
    connection that iterates frames); ``fetch_snapshot`` GETs a URL and returns the body.
    ``errors`` receives malformed frames (source ``live:<url>``, line = frame number).
    """

    def __init__(
        self,
        config: BinanceAdapterConfig,
        *,
        clock: Clock,
        connect: Connect = websockets.asyncio.client.connect,
        fetch_snapshot: FetchSnapshot | None = None,
        errors: FeedErrors | None = None,
        rng: Rng | None = None,
    ) -> None:
        self.config = config
        self._rng: Rng = rng if rng is not None else random.Random()
        self.stats = AdapterStats()
        self.errors = errors if errors is not None else FeedErrors()
        self._clock = clock
        self._connect = connect
        self._fetch: FetchSnapshot = fetch_snapshot or (
            lambda url: http_get(url, config.snapshot_timeout_s)
        )
        self._queue: asyncio.Queue[BinanceEvent | _Closed] = asyncio.Queue(config.queue_events)
        self._symbols = tuple(s.upper() for s in config.symbols)
        self._source = f"live:{config.url}"
        # Per connection: diffs held per symbol until its snapshot is delivered (None: none
        # awaited), and the snapshot fetches in flight.
        self._held: dict[str, deque[BookDelta] | None] = {}
        self._fetches: set[asyncio.Task[None]] = set()
        self._connected = False
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    # ── LiveAdapter ─────────────────────────────────────────────────────────────────────────

    async def events(self) -> AsyncGenerator[BinanceEvent, None]:
        if self._runner is None and not self._closed:
            self._runner = asyncio.create_task(self._run(), name="binance adapter")
        try:
            while not self._closed:
                item = await self._queue.get()
                if isinstance(item, _Closed):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if self._runner is not None:
                self._runner.cancel()

    async def resync(self, symbol: str) -> None:
        """Ask for a new snapshot; ignored while one is awaited or while disconnected (the
        reconnection takes its own). Diffs are held meanwhile, as on connecting."""
        symbol = symbol.upper()
        if not self._connected or self._held.get(symbol) is not None:
            return
        self.stats.resyncs += 1
        self._hold_and_fetch(symbol)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await self._cancel_fetches()
        self._end(_Closed())

    def _end(self, item: _Closed) -> None:
        while self._queue.full():  # nobody will read what is left: make room for the end
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    # ── connection loop ─────────────────────────────────────────────────────────────────────

    async def _run(self) -> None:
        """Connect forever; an unexpected error ends ``events()`` with that error."""
        try:
            await self._connect_forever()
        except Exception as exc:
            log.exception("binance adapter stopped")
            self._end(_Closed(exc))

    async def _connect_forever(self) -> None:
        backoff = Backoff(self.config.backoff, self._rng)
        while not self._closed:
            read_before = self.stats.messages
            try:
                async with self._connect(
                    self.config.stream_url(), open_timeout=self.config.open_timeout_s
                ) as connection:
                    await self._read(connection)
                reason = "closed by the server"
            except _RETRYABLE as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._connected = False
                self.stats.connected = False
                await self._cancel_fetches()
            self.stats.last_error = reason
            if self._closed:
                return
            if self.stats.messages > read_before:
                backoff.reset()  # the connection worked: start the backoff afresh
            delay = backoff.next_s()
            self.stats.reconnects += 1
            log.warning("binance stream lost (%s): reconnecting in %.2g s", reason, delay)
            await asyncio.sleep(delay)

    async def _read(self, connection: Any) -> None:
        self._connected = True
        self.stats.connected = True
        self.stats.connects += 1
        self._held = {}
        for symbol in self._symbols:
            self._hold_and_fetch(symbol)
        async for frame in connection:
            self.stats.messages += 1
            try:
                event = binance_event(self._clock.now_ns(), orjson.loads(frame), "")
                if isinstance(event, BookSnapshot):
                    raise ValueError("a REST snapshot on the stream")
            except _MALFORMED as exc:
                self.stats.malformed += 1
                reason = f"{type(exc).__name__}: {exc}"[:200]
                self.errors.add(self._source, self.stats.messages, reason)
                continue
            if isinstance(event, BookDelta) and (held := self._held.get(event.symbol)) is not None:
                if len(held) < self.config.held_diffs:
                    held.append(event)
                else:
                    self.stats.held_overflow += 1
            else:
                await self._queue.put(event)

    # ── snapshots ───────────────────────────────────────────────────────────────────────────

    def _hold_and_fetch(self, symbol: str) -> None:
        self._held[symbol] = deque()
        task = asyncio.create_task(self._deliver_snapshot(symbol), name=f"snapshot {symbol}")
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)

    async def _deliver_snapshot(self, symbol: str) -> None:
        """Fetch (retrying with backoff), then queue the snapshot and the diffs held since."""
        url = self.config.snapshot_url(symbol)
        backoff = Backoff(self.config.backoff, self._rng)
        while True:
            try:
                body = await asyncio.wait_for(self._fetch(url), self.config.snapshot_timeout_s)
                snapshot = binance_event(self._clock.now_ns(), orjson.loads(body), symbol)
                if not isinstance(snapshot, BookSnapshot):
                    raise ValueError("the depth endpoint answered something else")
                break
            except (*_RETRYABLE, *_MALFORMED) as exc:
                self.stats.snapshot_failures += 1
                self.stats.last_error = f"snapshot {symbol}: {type(exc).__name__}: {exc}"[:200]
                delay = backoff.next_s()
                log.warning("%s; retrying in %.2g s", self.stats.last_error, delay)
                await asyncio.sleep(delay)
        self.stats.snapshots += 1
        await self._queue.put(snapshot)
        held = self._held.get(symbol)
        while held:  # the reader may append while a put waits: drain until empty …
            await self._queue.put(held.popleft())
        self._held[symbol] = None  # … then pass diffs through (no await since the last check)

    async def _cancel_fetches(self) -> None:
        fetches = list(self._fetches)
        for task in fetches:
            task.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)

"""The live Binance adapter and ``feed=live``, against a local fake Binance only (no internet).

``FakeBinance`` serves the bundled capture (``data/btcusdt_20240808.gz``) as Binance does: the
combined stream over ``websockets`` on 127.0.0.1 (the capture's ``{"stream", "data"}`` frames) and
``GET /api/v3/depth`` over a bare asyncio HTTP server. It keeps its own exchange-side book (a dict
per side: the recorded snapshot plus every diff it streams) and answers snapshots from it, so the
references are the recorded file and that independent book, never the engine's ``OrderBook``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from engines.marketdata import feeds
from engines.marketdata.core import BookState
from engines.marketdata.live import AdapterStats, BinanceAdapter, BinanceAdapterConfig
from engines.marketdata.records import BookDelta, BookSnapshot, Quote, Trade
from engines.marketdata.service import FeedSource, MarketDataConfig, MarketDataEngine
from engines.shell import load_config
from realtime.backoff import BackoffPolicy
from realtime.bus import MemoryBus
from realtime.clock import ManualClock, SystemClock
from tests.support import until

CAPTURE = feeds.DATA_DIR / "btcusdt_20240808.gz"
#: Lines of the capture the engine tests stream (≈ 1 minute of BTCUSDT: ~1,000 trades, ~330 diffs).
ENGINE_LINES = 4_000


@dataclass(frozen=True)
class Capture:
    """The first lines of the capture: stream frames in file order and the REST snapshot."""

    lines: list[bytes]  # raw ``<local_ns> <json>`` lines, as read_binance_feed reads them
    frames: list[bytes]  # the JSON of every stream line
    snapshot: bytes  # the JSON of the REST snapshot line
    snapshot_at: int  # stream frames recorded before the snapshot

    def depth_ids(self) -> list[int]:
        """``u`` of every depth diff, in order."""
        return [orjson.loads(f)["data"]["u"] for f in self.frames if b"@depth" in f[:40]]

    def trade_rows(self) -> list[dict[str, Any]]:
        return [orjson.loads(f)["data"] for f in self.frames if b"@trade" in f[:40]]


def read_capture(n_lines: int | None) -> Capture:
    with gzip.open(CAPTURE, "rb") as file:
        lines = [line.rstrip(b"\n") for line in file]
    lines = lines[:n_lines] if n_lines else lines
    frames: list[bytes] = []
    snapshot, snapshot_at = b"", -1
    for line in lines:
        text = line.partition(b" ")[2]
        if text.startswith(b'{"lastUpdateId"'):
            snapshot, snapshot_at = text, len(frames)
        else:
            frames.append(text)
    assert snapshot, "the capture's REST snapshot is among the lines"
    return Capture(lines, frames, snapshot, snapshot_at)


@pytest.fixture(scope="module")
def capture() -> Capture:
    return read_capture(ENGINE_LINES)


class FakeBinance:
    """Binance's combined stream and depth endpoint on 127.0.0.1, port 0.

    Connection 1 streams the frames recorded before the snapshot, waits for the snapshot request
    (answered with the recorded snapshot) and streams on; a later connection resumes where the
    last one stopped, streaming ``lead`` frames before waiting for its snapshot (answered from
    the fake's own book). ``drop_after``: abort connection 1's socket after that many frames.
    ``skip_ids``: depth diffs (by ``u``) applied to the fake's book but never sent; ``lead``
    frames later the stream waits for a snapshot request (the client's resync). ``inject``:
    extra frames sent after that many frames (``str`` as text, ``bytes`` as binary).
    """

    def __init__(
        self,
        capture: Capture,
        *,
        lead: int = 20,
        drop_after: int | None = None,
        skip_ids: frozenset[int] = frozenset(),
        inject: dict[int, list[str | bytes]] | None = None,
    ) -> None:
        self.capture = capture
        self.lead = lead
        self.drop_after = drop_after
        self.skip_ids = skip_ids
        self.inject = inject or {}
        self.cursor = 0
        self.stream_paths: list[str] = []
        self.snapshot_paths: list[str] = []
        recorded = orjson.loads(capture.snapshot)
        self.last_id: int = recorded["lastUpdateId"]
        self.bids = {float(p): float(q) for p, q in recorded["bids"]}
        self.asks = {float(p): float(q) for p, q in recorded["asks"]}
        self._ws: Server | None = None
        self._http: asyncio.Server | None = None

    async def __aenter__(self) -> FakeBinance:
        self._ws = await serve(self._stream, "127.0.0.1", 0)
        self._http = await asyncio.start_server(self._depth, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._ws is not None and self._http is not None
        self._ws.close()
        self._http.close()
        await self._ws.wait_closed()
        await self._http.wait_closed()

    @property
    def ws_url(self) -> str:
        assert self._ws is not None
        return f"ws://127.0.0.1:{self._ws.sockets[0].getsockname()[1]}/stream"

    @property
    def rest_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.sockets[0].getsockname()[1]}/api/v3/depth"

    def levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The fake exchange's whole book: bids best first, asks best first."""
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())

    def _apply(self, frame: bytes) -> bool:
        """Advance the exchange's book by a depth frame; True if the frame must be withheld."""
        message = orjson.loads(frame)
        if "@depth" not in message["stream"]:
            return False
        data = message["data"]
        if data["u"] > self.last_id:
            for side, key in ((self.bids, "b"), (self.asks, "a")):
                for price, size in data[key]:
                    if float(size) == 0.0:
                        side.pop(float(price), None)
                    else:
                        side[float(price)] = float(size)
            self.last_id = data["u"]
        return bool(data["u"] in self.skip_ids)

    async def _stream(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.stream_paths.append(ws.request.path)
        first = len(self.stream_paths) == 1
        lead = self.capture.snapshot_at if first else self.lead
        asked_before = len(self.snapshot_paths)
        frames = self.capture.frames
        sent, wait_at = 0, lead
        while self.cursor < len(frames):
            if sent == wait_at:
                await self._snapshot_asked(after=asked_before)
            for extra in self.inject.get(self.cursor, []):
                await ws.send(extra)
            frame = frames[self.cursor]
            self.cursor += 1
            sent += 1
            if self._apply(frame):  # withheld: the client's book must ask for a snapshot
                asked_before, wait_at = len(self.snapshot_paths), sent + self.lead
            else:
                await ws.send(frame.decode())
            if first and self.cursor == self.drop_after:
                await until(lambda: ws.transport.get_write_buffer_size() == 0, 5.0)
                ws.transport.abort()  # a dropped TCP connection: no close frame
                return
        await ws.wait_closed()

    async def _snapshot_asked(self, *, after: int) -> None:
        await until(lambda: len(self.snapshot_paths) > after, 5.0)

    async def _depth(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if self.snapshot_paths:
            bids, asks = self.levels()
            body = orjson.dumps(
                {
                    "lastUpdateId": self.last_id,
                    "bids": [[f"{p:.8f}", f"{q:.8f}"] for p, q in bids],
                    "asks": [[f"{p:.8f}", f"{q:.8f}"] for p, q in asks],
                }
            )
        else:
            body = self.capture.snapshot
        self.snapshot_paths.append(request.split(b" ")[1].decode())
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()


class DrawCounter(random.Random):
    """A seeded ``random.Random`` that counts the backoff draws made from it."""

    count = 0

    def random(self) -> float:
        self.count += 1
        return super().random()


def adapter_config(fake: FakeBinance) -> BinanceAdapterConfig:
    return BinanceAdapterConfig(url=fake.ws_url, rest_url=fake.rest_url, backoff_initial_s=0.05)


async def collect(adapter: BinanceAdapter, n_events: int) -> list[feeds.BinanceEvent]:
    out: list[feeds.BinanceEvent] = []
    async with asyncio.timeout(8.0), contextlib.aclosing(adapter.events()) as events:
        async for event in events:
            out.append(event)
            if len(out) == n_events:
                break
    await adapter.close()
    return out


def untimed(event: feeds.BinanceEvent) -> feeds.BinanceEvent:
    """The record without our-side times (and a quote's event time, which is its receive)."""
    if isinstance(event, Quote):
        return msgspec.structs.replace(event, event_ns=0, receive_ns=0)
    if isinstance(event, BookSnapshot):
        return dataclasses.replace(event, receive_ns=0)
    return msgspec.structs.replace(event, receive_ns=0)


def is_book(event: feeds.BinanceEvent) -> bool:
    return isinstance(event, BookDelta | BookSnapshot)


# ── the adapter ────────────────────────────────────────────────────────────────────────────


async def test_adapter_yields_the_records_of_the_recorded_feed(tmp_path: Path) -> None:
    """Whole first capture file: same records as ``read_binance_feed`` (receive times from the
    injected clock), the snapshot before every diff, Binance's URLs and query."""
    whole = read_capture(None)
    recorded = tmp_path / "capture.gz"
    recorded.write_bytes(gzip.compress(b"\n".join(whole.lines) + b"\n"))
    expected = list(feeds.read_binance_feed([recorded]))
    assert len(expected) == len(whole.lines) > 40_000

    async with FakeBinance(whole) as fake:
        adapter = BinanceAdapter(adapter_config(fake), clock=ManualClock(42))
        got = await collect(adapter, len(expected))

    assert fake.stream_paths == [
        "/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms"
    ]
    assert fake.snapshot_paths == ["/api/v3/depth?symbol=BTCUSDT&limit=1000"]
    assert {e.receive_ns for e in got} == {42}
    assert [untimed(e) for e in got if not is_book(e)] == [
        untimed(e) for e in expected if not is_book(e)
    ]
    assert [untimed(e) for e in got if is_book(e)] == [
        untimed(e) for e in expected if isinstance(e, BookSnapshot)
    ] + [untimed(e) for e in expected if isinstance(e, BookDelta)]
    assert adapter.stats.messages == len(whole.frames)
    assert (adapter.stats.malformed, adapter.stats.reconnects, adapter.stats.snapshots) == (0, 0, 1)


async def test_malformed_frames_are_counted_and_skipped(capture: Capture) -> None:
    bad: list[str | bytes] = [
        "not json",
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}',  # fields missing
        '{"result":null,"id":1}',  # a subscription reply: no stream
        '{"stream":"btcusdt@kline_1m","data":{"s":"BTCUSDT"}}',  # not subscribed
        b"\x00\xff binary",
    ]
    at = capture.snapshot_at + 100
    async with FakeBinance(capture, inject={at: bad[:3], at + 50: bad[3:]}) as fake:
        adapter = BinanceAdapter(adapter_config(fake), clock=ManualClock(1))
        got = await collect(adapter, len(capture.frames) + 1)  # + the snapshot
        url = fake.ws_url

    assert adapter.stats.malformed == adapter.errors.count == len(bad)
    assert adapter.stats.messages == len(capture.frames) + len(bad)
    sources = {error.source for error in adapter.errors.errors}
    assert sources == {f"live:{url}"}
    trade_ids = [e.sequence for e in got if isinstance(e, Trade)]
    assert trade_ids == [row["t"] for row in capture.trade_rows()]


def test_backoff_is_the_shared_policy_with_the_configured_bounds() -> None:
    config = BinanceAdapterConfig(backoff_initial_s=0.1, backoff_max_s=1.0)
    assert config.backoff == BackoffPolicy(initial_s=0.1, max_s=1.0, multiplier=2.0)
    assert [config.backoff.ceiling_s(k) for k in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert config.backoff.ceiling_s(10_000) == 1.0
    two = BinanceAdapterConfig(url="wss://x/stream", symbols=("BTCUSDT", "ethusdt"))
    assert two.stream_url() == (
        "wss://x/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms"
        "/ethusdt@trade/ethusdt@bookTicker/ethusdt@depth@100ms"
    )
    with pytest.raises(ValueError):
        BinanceAdapterConfig(symbols=())


async def test_unreachable_server_is_retried_with_backoff() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = BinanceAdapterConfig(
        url=f"ws://127.0.0.1:{port}/stream",
        rest_url=f"http://127.0.0.1:{port}/api/v3/depth",
        backoff_initial_s=0.01,
        backoff_max_s=0.04,
    )
    draws = DrawCounter(5)
    adapter = BinanceAdapter(config, clock=SystemClock(), rng=draws)

    async def first() -> feeds.BinanceEvent:
        return await anext(adapter.events())

    consumer = asyncio.create_task(first())
    await until(lambda: adapter.stats.reconnects >= 4, 5.0)
    assert not adapter.stats.connected and adapter.stats.connects == 0
    # every reconnect waited a delay drawn from the shared policy (one draw per wait)
    assert draws.count == adapter.stats.reconnects
    assert "ConnectionRefused" in adapter.stats.last_error or "OSError" in adapter.stats.last_error
    await adapter.close()
    with pytest.raises(StopAsyncIteration):
        await consumer


# ── the engine on feed=live ────────────────────────────────────────────────────────────────


@pytest.fixture
async def live_engine() -> AsyncIterator[Callable[[FakeBinance], MarketDataEngine]]:
    """Engines on ``feed=live`` pointed at a fake, each on its own ``MemoryBus``."""
    made: list[MarketDataEngine] = []

    def make(fake: FakeBinance) -> MarketDataEngine:
        clock = SystemClock()
        config = MarketDataConfig(
            feed=FeedSource.LIVE, live_url=fake.ws_url, live_rest_url=fake.rest_url
        )
        engine = MarketDataEngine(config, bus=MemoryBus(clock=clock), clock=clock)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.stop(drain_timeout_s=1.0)


def memory_bus(engine: MarketDataEngine) -> MemoryBus:
    assert isinstance(engine.bus, MemoryBus)
    return engine.bus


async def streamed(engine: MarketDataEngine, capture: Capture) -> None:
    """Start the engine and wait until its book holds the last streamed diff."""
    last_id = capture.depth_ids()[-1]
    await engine.start()
    await until(
        lambda: (
            "BTCUSDT" in engine.books
            and engine.books["BTCUSDT"].last_update_id == last_id
            and engine.books["BTCUSDT"].state is BookState.LIVE
            and engine.progress.published["trades"] == len(capture.trade_rows())
        )
    )


def assert_book_is_the_exchange_book(engine: MarketDataEngine, fake: FakeBinance) -> None:
    order_book = engine.books["BTCUSDT"]
    whole = order_book.snapshot(receive_ns=0)
    bids, asks = fake.levels()
    assert (list(whole.bids), list(whole.asks)) == (bids, asks)
    assert not order_book.is_crossed() and engine.crossed.get("BTCUSDT", 0) == 0


async def test_engine_live_publishes_trades_quotes_and_book(
    capture: Capture, live_engine: Callable[[FakeBinance], MarketDataEngine]
) -> None:
    async with FakeBinance(capture) as fake:
        engine = live_engine(fake)
        assert set(engine.declared_channels()) >= {
            "trades.BTCUSDT",
            "quotes.BTCUSDT",
            "book.BTCUSDT",
        }
        subs = {
            kind: memory_bus(engine).subscribe(f"{kind}.BTCUSDT", max_pending=100_000)
            for kind in ("trades", "quotes", "book")
        }
        await streamed(engine, capture)
        got = {
            kind: [e.payload for e in await sub.next_batch(100_000)] for kind, sub in subs.items()
        }

        rows = capture.trade_rows()
        assert [(t["i"], t["p"], t["q"]) for t in got["trades"]] == [
            (r["t"], float(r["p"]), float(r["q"])) for r in rows
        ]
        assert [t["a"] for t in got["trades"]] == ["sell" if r["m"] else "buy" for r in rows]
        tickers = [orjson.loads(f)["data"] for f in capture.frames if b"@bookTicker" in f[:40]]
        assert [(q["i"], q["b"], q["k"]) for q in got["quotes"]] == [
            (t["u"], float(t["b"]), float(t["a"])) for t in tickers
        ]
        order_book = engine.books["BTCUSDT"]
        assert (order_book.gaps, order_book.resyncs) == (0, 0)
        assert_book_is_the_exchange_book(engine, fake)
        last_book = got["book"][-1]
        bids, asks = fake.levels()
        assert last_book["bids"] == [list(level) for level in bids[:10]]
        assert last_book["asks"] == [list(level) for level in asks[:10]]
        assert last_book["u"] == capture.depth_ids()[-1]

        feed = engine.health_extra()["feed"]
        assert isinstance(feed, dict)
        live = feed["live"]
        assert live["connected"] and live["messages"] == len(capture.frames)
        assert engine.health_issues() == []
    assert isinstance(live, dict) and set(live) == {
        f.name for f in dataclasses.fields(AdapterStats)
    }


async def test_dropped_connection_reconnects_and_resnapshots(
    capture: Capture, live_engine: Callable[[FakeBinance], MarketDataEngine]
) -> None:
    async with FakeBinance(capture, drop_after=capture.snapshot_at + 1500) as fake:
        engine = live_engine(fake)
        trades = memory_bus(engine).subscribe("trades.BTCUSDT", max_pending=100_000)
        await streamed(engine, capture)

        adapter = engine.live_adapter
        assert adapter is not None
        assert len(fake.stream_paths) == 2 and len(fake.snapshot_paths) == 2
        stats = adapter.stats
        assert (stats.connects, stats.reconnects, stats.snapshots) == (2, 1, 2)
        assert "ConnectionClosed" in stats.last_error
        order_book = engine.books["BTCUSDT"]
        assert (order_book.gaps, order_book.resyncs) == (0, 1)
        assert_book_is_the_exchange_book(engine, fake)
        ids = [e.payload["i"] for e in await trades.next_batch(100_000)]
        assert ids == [row["t"] for row in capture.trade_rows()]  # each once, in order


async def test_deleted_diff_is_a_gap_and_the_adapter_resyncs(
    capture: Capture, live_engine: Callable[[FakeBinance], MarketDataEngine]
) -> None:
    ids = capture.depth_ids()
    deleted = ids[len(ids) // 2]
    async with FakeBinance(capture, skip_ids=frozenset({deleted})) as fake:
        engine = live_engine(fake)
        await streamed(engine, capture)

        order_book = engine.books["BTCUSDT"]
        adapter = engine.live_adapter
        assert adapter is not None
        assert (order_book.gaps, order_book.resyncs) == (1, 1)
        assert (adapter.stats.resyncs, adapter.stats.snapshots) == (1, 2)
        assert adapter.stats.reconnects == 0 and len(fake.snapshot_paths) == 2
        assert_book_is_the_exchange_book(engine, fake)
        assert engine.health_issues() == []


def test_live_settings_from_the_environment() -> None:
    config = load_config(
        MarketDataConfig,
        {
            "NAUTILUS_MARKETDATA_FEED": "live",
            "NAUTILUS_MARKETDATA_LIVE_URL": "ws://127.0.0.1:1/stream",
            "NAUTILUS_MARKETDATA_LIVE_SYMBOLS": "btcusdt,ETHUSDT",
        },
    )
    assert config.feed is FeedSource.LIVE
    adapter = config.live_adapter()
    assert adapter.symbols == ("BTCUSDT", "ETHUSDT")
    assert adapter.url == "ws://127.0.0.1:1/stream"
    assert adapter.rest_url == "https://api.binance.com/api/v3/depth"
    assert MarketDataConfig().live_url == "wss://stream.binance.com:9443/stream"

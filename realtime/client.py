"""Python asyncio client for the hub's WebSocket API (protocol v1, protocol/README.md).

What it owns so that an application does not have to:

* **requests with ids** — ``subscribe``/``unsubscribe``/``list_channels``/``ping`` send a request
  and await the reply with its ``id``; an ``error`` reply raises ``RequestFailed``. Requests are
  idempotent on the hub, so one cut off by a dropped connection is sent again after reconnecting.
* **batch unpacking and decoding** with ``protocol.codec``; every message is checked, and a frame
  or message that breaks the protocol becomes a ``ClientError`` event: the connection stays.
* **per-channel seq tracking** (``protocol.sequence.SeqTracker``): a message at or below the
  position already held is a duplicate and is dropped; a jump in ``seq`` on an ordered-lossless
  channel that the hub did not announce with a ``gap`` status becomes a ``Gap`` event.
* **reconnect and resume** — on any loss (close 1001 going-away, 4008 slow consumer, a network
  fault, the heartbeat watchdog) it reconnects with full-jitter exponential backoff
  (``realtime.backoff``) and subscribes again to every channel with ``resume`` from the last
  ``(epoch, seq)`` it holds; the hub answers each with a ``status`` ``recovered`` (the missed
  messages came first) or ``not_recovered`` (nothing replayed; the jump that follows is reported
  as a ``Gap``). Both are events.
* **heartbeat watchdog** — silence (no frame at all) for ``missed_heartbeats`` heartbeat periods
  drops the connection and reconnects. Time spent waiting for the application to take events
  does not count as silence.
* **backpressure** — events wait in one bounded queue read by ``async for event in client``.
  When it is full the client stops reading the socket, so a slow application slows its own TCP
  connection and the hub applies its slow-consumer policy (conflation, gap or 4008, which the
  client resumes from) instead of this process growing without bound. The bound is checked per
  frame (a batch frame is queued whole), and while a request of this client waits for its reply
  the reader keeps reading (the queue grows by what arrives in that round trip), so that
  awaiting ``subscribe`` inside the ``async for`` loop cannot deadlock.

Limits: a channel subscribed to but never heard from has no position, so messages published
while the connection was down are not recovered for it (its first message after reconnecting
starts its numbering). Payload schemas are checked only when a ``validate`` callable is given
(``ClientError`` kind ``schema``; the message is dropped, its position still advances): pass
``protocol.schemas.check_payload`` to check every payload against the platform's own schemas
(``HubClient(config, validate=check_payload)``; it costs CPU per message, hence opt-in).
Integers in payloads are exact (orjson), unlike the JavaScript client's doubles.

``python -m realtime.client ws://127.0.0.1:8600/ws trades.SPY`` prints what arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import random
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias, cast

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from protocol.channels import DeliveryClass, delivery_of
from protocol.codec import decode_server_obj, encode_client
from protocol.messages import (
    Ack,
    Batch,
    ChannelInfo,
    ClientMessage,
    Error,
    Heartbeat,
    ListChannels,
    Ping,
    Pong,
    ResumePosition,
    ServerMessage,
    Snapshot,
    Status,
    StatusState,
    Subscribe,
    Unsubscribe,
    Update,
)
from protocol.sequence import SeqTracker
from realtime.backoff import Backoff, BackoffPolicy, Rng
from realtime.config import described

#: Characters of an offending frame kept in a ``ClientError``.
FRAME_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How the client connects, watches and retries. Defaults match the hub's defaults."""

    url: str = field(
        default="ws://127.0.0.1:8600/ws", metadata=described("the hub's WebSocket URL")
    )
    heartbeat_interval_s: float = field(
        default=5.0, metadata=described("the hub's heartbeat period (its heartbeat_interval_s)")
    )
    missed_heartbeats: int = field(
        default=3, metadata=described("heartbeat periods of silence before reconnecting")
    )
    reconnect_min_s: float = field(
        default=0.25, metadata=described("the first reconnect delay is drawn from [0, this]")
    )
    reconnect_max_s: float = field(
        default=10.0, metadata=described("longest reconnect delay (full jitter)")
    )
    open_timeout_s: float = field(default=5.0, metadata=described("bound on one handshake"))
    request_timeout_s: float = field(
        default=10.0, metadata=described("bound on a request and its reply, reconnects included")
    )
    max_queue: int = field(
        default=10_000, metadata=described("events held for the application before pushing back")
    )
    max_frame_bytes: int | None = field(
        default=16 * 1024 * 1024,
        metadata=described("largest inbound frame (the hub's batches are at most 1 MiB)"),
    )
    snapshot: bool = field(
        default=True, metadata=described("ask for the current value of latest-value channels")
    )
    compression: bool = field(default=False, metadata=described("permessage-deflate"))

    def __post_init__(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, not {self.url!r}")
        if self.heartbeat_interval_s <= 0 or self.missed_heartbeats < 1:
            raise ValueError("heartbeat_interval_s must be > 0 and missed_heartbeats >= 1")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if self.max_queue < 1:
            raise ValueError("max_queue must be >= 1")

    @property
    def reconnect_backoff(self) -> BackoffPolicy:
        """Waits between reconnects: the platform's shared full-jitter policy."""
        return BackoffPolicy(self.reconnect_min_s, self.reconnect_max_s)


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open; ``reconnects`` counts the connections before it."""

    url: str
    reconnects: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection ended or could not be opened. ``code`` is the close code received (None when
    the socket was lost without one); ``retry_in_s`` is None once the client is closed."""

    code: int | None
    reason: str
    retry_in_s: float | None


@dataclass(frozen=True, slots=True)
class Gap:
    """Ordered-lossless messages ``from_seq..to_seq`` of ``epoch`` never arrived and the hub did
    not announce them with a ``gap`` status (typically after ``not_recovered``)."""

    channel: str
    epoch: str
    from_seq: int
    to_seq: int

    @property
    def count(self) -> int:
        return self.to_seq - self.from_seq + 1


class ErrorKind(StrEnum):
    #: a frame or message that is not protocol v1 (bad JSON, unknown type, wrong field types)
    MALFORMED = "malformed"
    #: an ``error`` message from the hub (unknown channel, bad request, rate limited, ...)
    SERVER = "server"
    #: a payload the application's ``validate`` callable rejected
    SCHEMA = "schema"


@dataclass(frozen=True, slots=True)
class ClientError:
    """Something went wrong without ending the connection."""

    kind: ErrorKind
    message: str
    channel: str | None = None
    #: the hub's ``error`` message (kind ``server``)
    error: Error | None = None
    #: the start of the offending frame (kind ``malformed``)
    frame: str | None = None


Event: TypeAlias = Update | Snapshot | Status | Gap | ClientError | Connected | Disconnected
#: Checks one payload: ``validate(channel, data)`` raises ``ValueError`` when it is invalid.
Validator: TypeAlias = Callable[[str, Any], None]


class RequestFailed(Exception):
    """The hub answered a request with an ``error`` message."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class ConnectionLost(Exception):
    """The connection ended before a request's reply arrived."""


class ClientClosed(Exception):
    """The client was closed."""


@dataclass(slots=True)
class ClientStats:
    frames: int = 0
    messages: int = 0
    heartbeats: int = 0
    duplicates: int = 0
    gaps: int = 0
    errors: int = 0
    connects: int = 0
    #: data for channels this client is not subscribed to (in flight across an unsubscribe)
    ignored: int = 0


@dataclass(slots=True)
class _Channel:
    """What the client holds of one subscribed channel."""

    lossless: bool
    tracker: SeqTracker = field(default_factory=SeqTracker)
    #: end of the range the hub last announced with a ``gap`` status, in ``announced_epoch``
    announced_to: int = 0
    announced_epoch: str | None = None

    def position(self) -> ResumePosition | None:
        t = self.tracker
        return ResumePosition(t.epoch, t.last_seq) if t.epoch is not None and t.last_seq else None


@dataclass(slots=True)
class _Pending:
    op: str
    future: asyncio.Future[ServerMessage]
    #: the automatic subscribe after a reconnect (its errors drop the offending channel)
    resubscribe: bool = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(msg: ServerMessage) -> ServerMessage:
    """Field types the codec's typed view does not check; raises ``ValueError``."""
    if isinstance(msg, Update | Snapshot):
        ts = msg.ts
        if not (isinstance(msg.channel, str) and isinstance(msg.epoch, str) and msg.epoch):
            raise ValueError("channel and epoch must be strings")
        if not (_is_int(msg.seq) and msg.seq > 0):
            raise ValueError(f"seq must be a positive integer, not {msg.seq!r}")
        if not all(_is_int(t) for t in (ts.event, ts.publish, ts.hub)):
            raise ValueError("ts stamps must be integers")
    elif isinstance(msg, Status):
        if not isinstance(msg.channel, str):
            raise ValueError("channel must be a string")
        numbers = (msg.count, msg.from_seq, msg.to_seq)
        if not all(n is None or _is_int(n) for n in numbers):
            raise ValueError("status count/from_seq/to_seq must be integers")
    return msg


def _excerpt(frame: str | bytes) -> str:
    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    return text[:FRAME_EXCERPT]


class HubClient:
    """One logical connection to a hub that survives reconnects. Use as an async context manager
    and iterate it::

        async with HubClient("ws://127.0.0.1:8600/ws") as client:
            await client.subscribe(["trades.SPY"])
            async for event in client:
                ...

    ``rng`` (the backoff jitter) is injectable so tests replay exactly.
    """

    def __init__(
        self,
        config: ClientConfig | str,
        *,
        validate: Validator | None = None,
        rng: Rng | None = None,
    ) -> None:
        self.config = ClientConfig(url=config) if isinstance(config, str) else config
        self.stats = ClientStats()
        self._validate = validate
        self._rng: Rng = rng if rng is not None else random.Random()
        self._ids = itertools.count(1)
        self._channels: dict[str, _Channel] = {}
        self._pending: dict[int | str, _Pending] = {}
        self._events: deque[Event] = deque()
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._blocked = False
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._drop_reason: str | None = None
        self._last_frame = 0.0
        self._task: asyncio.Task[None] | None = None
        self._resubscribes: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> HubClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting (in the background; ``wait_connected`` waits for it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"hub-client {self.config.url}")

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def close(self) -> None:
        """Close the connection (1000) and stop reconnecting; the iterator ends after the events
        already queued and a final ``Disconnected``."""
        if self._closed:
            return
        self._closed = True
        ws, task = self._ws, self._task
        if ws is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.close(1000, "client closed")
        for t in (task, *self._resubscribes):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._fail_pending(ClientClosed("client closed"))
        self._connected.set()  # wakes requests waiting for a connection: they raise ClientClosed
        self._events.append(Disconnected(1000, "closed by the client", None))
        self._readable.set()

    def drop_connection(self) -> None:
        """Abort the socket as a network fault would (tests, or an application that knows the
        network changed); the client reconnects and resumes."""
        if self._ws is not None:
            self._drop_reason = "dropped by the application"
            self._ws.transport.abort()

    # --- what the application reads ------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        event = self._events.popleft()
        self._space.set()
        return event

    def positions(self) -> dict[str, ResumePosition]:
        """The last ``(epoch, seq)`` held per subscribed channel: what a reconnect resumes from
        (and what an application may persist to pass as ``resume`` after a restart)."""
        return {name: p for name, ch in self._channels.items() if (p := ch.position())}

    def tracker(self, channel: str) -> SeqTracker | None:
        """The seq bookkeeping of a subscribed channel (received, missing, duplicates)."""
        ch = self._channels.get(channel)
        return ch.tracker if ch is not None else None

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return tuple(self._channels)

    @property
    def queued(self) -> int:
        """Events waiting for the application."""
        return len(self._events)

    @property
    def blocked(self) -> bool:
        """Whether the reader waits for the application (the queue is full: backpressure)."""
        return self._blocked

    # --- requests -------------------------------------------------------------------------------

    async def subscribe(
        self, channels: Iterable[str], *, resume: Mapping[str, ResumePosition] | None = None
    ) -> Ack:
        """Subscribe and await the ack (``Ack.channels`` is the whole subscription set).

        ``resume`` gives positions to resume from (e.g. persisted ``positions()``). On an error
        reply nothing changes and ``RequestFailed`` is raised.
        """
        names = tuple(dict.fromkeys(channels))
        added = [n for n in names if n not in self._channels]
        for name in added:
            self._channels[name] = _Channel(lossless=_lossless(name))
        for name, pos in (resume or {}).items():
            if name in added:
                tracker = self._channels[name].tracker
                tracker.epoch, tracker.last_seq = pos.epoch, pos.seq
        try:
            return cast(Ack, await self._request(lambda rid: self._subscribe_message(rid, names)))
        except BaseException:
            for name in added:
                self._channels.pop(name, None)
            raise

    async def unsubscribe(self, channels: Iterable[str]) -> Ack | None:
        """Unsubscribe and forget the channels' positions; ``None`` when not connected (nothing
        is subscribed on the hub then, and reconnecting will not subscribe them again)."""
        names = tuple(dict.fromkeys(channels))
        for name in names:
            self._channels.pop(name, None)
        if not self.connected:
            return None
        try:
            reply = await self._send_and_wait(Unsubscribe(self._next_id(), names))
        except ConnectionLost:
            return None
        return cast(Ack, reply)

    async def list_channels(self) -> tuple[ChannelInfo, ...]:
        """Every channel the hub carries (that the token grants), with delivery class, position
        and subscribers: every page of ``list``, following the ack's ``next`` cursor."""
        channels: list[ChannelInfo] = []
        after: str | None = None
        while True:
            request = functools.partial(ListChannels, after=after)
            ack = cast(Ack, await self._request(request))
            channels.extend(ack.available or ())
            if not ack.next:
                return tuple(channels)
            after = ack.next

    async def ping(self) -> float:
        """Round trip of one ``ping``, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._request(Ping)
        return loop.time() - started

    def _next_id(self) -> int:
        return next(self._ids)

    def _subscribe_message(self, rid: int, names: tuple[str, ...]) -> Subscribe:
        resume = {n: p for n in names if (ch := self._channels.get(n)) and (p := ch.position())}
        return Subscribe(rid, names, resume, self.config.snapshot)

    async def _request(self, build: Callable[[int], ClientMessage]) -> ServerMessage:
        """Send a request once connected (starting the client if needed) and await its reply; a
        connection lost on the way sends it again on the next one (every request is idempotent
        on the hub)."""
        self.start()
        async with asyncio.timeout(self.config.request_timeout_s):
            while True:
                await self._connected.wait()
                try:
                    return await self._send_and_wait(build(self._next_id()))
                except ConnectionLost:
                    continue

    async def _send_and_wait(
        self, msg: ClientMessage, *, resubscribe: bool = False
    ) -> ServerMessage:
        if self._closed:
            raise ClientClosed("client closed")
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        op = type(msg).__name__.lower()
        self._pending[msg.id] = _Pending(op, future, resubscribe)
        self._space.set()  # a reader held back by a full queue may read the reply now
        try:
            await ws.send(encode_client(msg).decode())
        except ConnectionClosed:
            self._pending.pop(msg.id, None)
            raise ConnectionLost("connection closed while sending") from None
        try:
            return await future
        finally:
            self._pending.pop(msg.id, None)

    def _fail_pending(self, exc: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
                pending.future.exception()  # retrieved: a resubscribe nobody awaits must not warn
        self._pending.clear()

    # --- connection loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_backoff, self._rng)
        while not self._closed:
            try:
                ws = await connect(
                    cfg.url,
                    open_timeout=cfg.open_timeout_s,
                    ping_interval=None,  # the hub's heartbeats are the liveness signal
                    close_timeout=1.0,
                    max_size=cfg.max_frame_bytes,
                    compression="deflate" if cfg.compression else None,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                delay = backoff.next_s()
                await self._emit([Disconnected(None, f"connect failed: {exc}", delay)])
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            code, reason = await self._serve(ws)
            if self._closed:
                return
            delay = backoff.next_s()  # the first wait after a lost connection: [0, min_s]
            await self._emit([Disconnected(code, reason, delay)])
            await asyncio.sleep(delay)

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str]:
        """One connection: resubscribe with resume, read until it ends; its close code/reason."""
        self._ws, self._drop_reason = ws, None
        self.stats.connects += 1
        self._connected.set()
        watchdog = asyncio.create_task(self._watch(ws), name="hub-client-watchdog")
        try:
            await self._emit([Connected(self.config.url, self.stats.connects - 1)])
            self._resubscribe()
            async for frame in ws:
                self._last_frame = asyncio.get_running_loop().time()
                events = self._on_frame(frame)
                if events:
                    await self._emit(events)
            if self._drop_reason:
                return None, self._drop_reason
            return ws.close_code, ws.close_reason or "closed"
        except ConnectionClosed as exc:
            if self._drop_reason:
                return None, self._drop_reason
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "connection lost")
        finally:
            watchdog.cancel()
            self._ws = None
            self._connected.clear()
            self._fail_pending(ConnectionLost("connection lost"))

    async def _watch(self, ws: ClientConnection) -> None:
        """Drop a connection silent for ``missed_heartbeats`` heartbeat periods (not counting
        time the reader waits for the application)."""
        loop = asyncio.get_running_loop()
        limit = self.config.heartbeat_interval_s * self.config.missed_heartbeats
        self._last_frame = loop.time()
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s / 2)
            now = loop.time()
            if self._blocked:
                self._last_frame = now
            elif now - self._last_frame > limit:
                self._drop_reason = f"heartbeat timeout: no frame for {limit:g} s"
                ws.transport.abort()
                return

    def _resubscribe(self) -> None:
        """After (re)connecting: every channel again, with resume from its last position."""
        if not self._channels:
            return
        msg = self._subscribe_message(self._next_id(), tuple(self._channels))
        task = asyncio.create_task(self._send_resubscribe(msg), name="hub-client-resubscribe")
        self._resubscribes.add(task)
        task.add_done_callback(self._resubscribes.discard)

    async def _send_resubscribe(self, msg: Subscribe) -> None:
        try:
            await self._send_and_wait(msg, resubscribe=True)
        except (ConnectionLost, ClientClosed):
            return  # the next connection subscribes again
        except RequestFailed as exc:
            # all or nothing: drop the channel the hub refused (reported as a ClientError
            # already), subscribe to the rest; without a named channel, give up on resubscribe
            if exc.error.channel in self._channels:
                del self._channels[exc.error.channel]
                self._resubscribe()

    async def _emit(self, events: list[Event]) -> None:
        """Queue events for the application; wait while the queue is full (backpressure)."""
        limit = self.config.max_queue
        while len(self._events) >= limit and not self._pending:
            self._blocked = True
            self._space.clear()
            try:
                await self._space.wait()
            finally:
                self._blocked = False
        self._events.extend(events)
        self._readable.set()

    # --- inbound frames (no I/O) ---------------------------------------------------------------

    def _on_frame(self, frame: str | bytes) -> list[Event]:
        self.stats.frames += 1
        try:
            obj = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return [self._malformed(f"not valid JSON: {exc}", frame)]
        if isinstance(obj, dict) and obj.get("type") == "batch":
            items = obj.get("messages")
            if not isinstance(items, list):
                return [self._malformed("batch without a 'messages' list", frame)]
        else:
            items = [obj]
        events: list[Event] = []
        for item in items:
            if not isinstance(item, dict):
                events.append(self._malformed("a message must be a JSON object", frame))
                continue
            try:
                msg = _check(decode_server_obj(item))
            except ValueError as exc:
                events.append(self._malformed(str(exc), orjson.dumps(item)))
                continue
            self._on_message(msg, events)
        return events

    def _malformed(self, message: str, frame: str | bytes) -> ClientError:
        self.stats.errors += 1
        return ClientError(ErrorKind.MALFORMED, message, frame=_excerpt(frame))

    def _on_message(self, msg: ServerMessage, events: list[Event]) -> None:
        if isinstance(msg, Update | Snapshot):
            self._on_data(msg, events)
        elif isinstance(msg, Status):
            ch = self._channels.get(msg.channel)
            if ch is None:
                self.stats.ignored += 1
                return
            if msg.state is StatusState.GAP and msg.to_seq is not None:
                ch.announced_to, ch.announced_epoch = msg.to_seq, msg.epoch
            events.append(msg)
        elif isinstance(msg, Heartbeat):
            self.stats.heartbeats += 1
        elif isinstance(msg, Error):
            self.stats.errors += 1
            events.append(ClientError(ErrorKind.SERVER, msg.message, msg.channel, error=msg))
            self._reply(msg.id, msg)
        elif isinstance(msg, Ack | Pong):
            self._reply(msg.id, msg)
        elif isinstance(msg, Batch):  # a batch inside a batch
            events.append(self._malformed("nested batch", orjson.dumps({"type": "batch"})))

    def _reply(self, rid: int | str | None, msg: Ack | Pong | Error) -> None:
        pending = self._pending.get(rid) if rid is not None else None
        if pending is None or pending.future.done():
            return
        if isinstance(msg, Error):
            pending.future.set_exception(RequestFailed(msg))
            if pending.resubscribe:
                pending.future.exception()  # handled by _send_resubscribe
        else:
            pending.future.set_result(msg)

    def _on_data(self, msg: Update | Snapshot, events: list[Event]) -> None:
        ch = self._channels.get(msg.channel)
        if ch is None:
            self.stats.ignored += 1
            return
        tracker = ch.tracker
        if msg.epoch == tracker.epoch and msg.seq <= tracker.last_seq:
            tracker.duplicates += 1
            self.stats.duplicates += 1
            return
        previous = tracker.last_seq
        skipped = tracker.observe(msg.epoch, msg.seq)
        self.stats.messages += 1
        if skipped and ch.lossless:
            first = previous + 1
            if ch.announced_epoch == msg.epoch:
                first = max(first, ch.announced_to + 1)
            if first < msg.seq:
                self.stats.gaps += 1
                events.append(Gap(msg.channel, msg.epoch, first, msg.seq - 1))
        ch.announced_to, ch.announced_epoch = 0, None
        if self._validate is not None:
            try:
                self._validate(msg.channel, msg.data)
            except ValueError as exc:
                self.stats.errors += 1
                events.append(ClientError(ErrorKind.SCHEMA, str(exc), msg.channel))
                return
        events.append(msg)


def _lossless(name: str) -> bool:
    try:
        return delivery_of(name) is DeliveryClass.ORDERED_LOSSLESS
    except KeyError:  # not a known kind: the hub will refuse it with bad_channel
        return False


# --- command line ------------------------------------------------------------------------------


def format_event(event: Event) -> str:
    """One line per event, as the CLI prints it."""
    if isinstance(event, Update | Snapshot):
        kind = "update" if isinstance(event, Update) else "snapshot"
        data = orjson.dumps(event.data).decode()
        return f"{event.channel} {kind} {event.epoch}:{event.seq} {data}"
    if isinstance(event, Status):
        extra = {
            k: v
            for k, v in (
                ("count", event.count),
                ("from_seq", event.from_seq),
                ("to_seq", event.to_seq),
                ("epoch", event.epoch),
                ("reason", event.reason),
            )
            if v is not None
        }
        return f"{event.channel} status {event.state.value} {orjson.dumps(extra).decode()}"
    if isinstance(event, Gap):
        return f"{event.channel} gap {event.epoch}:{event.from_seq}..{event.to_seq}"
    if isinstance(event, ClientError):
        where = f" {event.channel}" if event.channel else ""
        code = f" {event.error.code}" if event.error else ""
        return f"error {event.kind.value}{code}{where}: {event.message}"
    if isinstance(event, Connected):
        return f"connected {event.url} (reconnects {event.reconnects})"
    retry = f", retry in {event.retry_in_s:.2f} s" if event.retry_in_s is not None else ""
    return f"disconnected {event.code} {event.reason}{retry}"


async def _print_stream(args: argparse.Namespace) -> int:
    """Data, statuses and gaps on stdout; connection events, acks and errors on stderr."""
    config = ClientConfig(url=args.url, snapshot=not args.no_snapshot)
    data = 0
    async with HubClient(config) as client:
        try:
            ack = await client.subscribe(args.channels)
        except RequestFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"subscribed {' '.join(ack.channels)}", file=sys.stderr, flush=True)
        async for event in client:
            line = format_event(event)
            if isinstance(event, ClientError | Connected | Disconnected):
                print(line, file=sys.stderr, flush=True)
                continue
            print(line, flush=True)
            if isinstance(event, Update | Snapshot):
                data += 1
                if args.count and data >= args.count:
                    return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m realtime.client",
        description="Subscribe to hub channels and print every message, one per line.",
    )
    parser.add_argument("url", help="the hub's WebSocket URL, e.g. ws://127.0.0.1:8600/ws")
    parser.add_argument("channels", nargs="+", help="channel names, e.g. trades.SPY")
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages")
    parser.add_argument("--no-snapshot", action="store_true", help="no snapshot on subscribe")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_print_stream(args))
    except KeyboardInterrupt:
        return 130
    except TimeoutError:
        print(f"error: no connection to {args.url}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ClientClosed",
    "ClientConfig",
    "ClientError",
    "ClientStats",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "ErrorKind",
    "Event",
    "Gap",
    "HubClient",
    "RequestFailed",
    "Validator",
    "format_event",
    "main",
]

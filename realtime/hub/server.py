"""The hub: bus → channels → WebSocket clients; ``/health``, ``/metrics`` and ``/`` on one port.

Hot path (``_on_batch`` → ``_fan_out``): each bus message is encoded once; everything the bus hands
over in one wake-up is one *tick*; per tick every connection gets one write: the channel's shared
prebuilt frame when it has data on one channel (the same bytes for every subscriber), or one batch
frame joined from already-encoded parts. No task per client per message, no awaits per client.
Replies to requests (acks, errors, pongs) are written immediately, never behind queued data.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from protocol.channels import parse_channel
from protocol.codec import decode_client, encode, encode_data, error_from, join_batch
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.messages import (
    Ack,
    Error,
    Heartbeat,
    ListChannels,
    Ping,
    Pong,
    Recovery,
    Status,
    StatusState,
    Subscribe,
    Unsubscribe,
)
from protocol.sequence import ResumePlan
from realtime import __version__
from realtime.bus.base import Bus, BusUnavailable, Envelope, Subscription
from realtime.clock import Clock, SystemClock
from realtime.hub.auth import ALLOW_ALL, AuthError, Grant, token_from_request, verify_token
from realtime.hub.channels import BusRead, ChannelState
from realtime.hub.config import HubConfig, LosslessOverflow
from realtime.hub.connection import ClientConnection, TokenBucket, text_frame
from realtime.hub.metrics import HubCollector, HubStats, metrics_text

log = logging.getLogger("nautilus.hub")

#: How often congested connections are re-checked for draining (seconds).
SLOW_POLL_S = 0.005
#: Bus messages taken per wake-up (one fan-out tick at most).
TICK_MAX_MESSAGES = 4096

Parts = list[tuple[int, bytes]]  # (seq or 0 for status, encoded message)


def _status(channel: str, state: StatusState, **fields: Any) -> bytes:
    return encode(Status(channel, state, **fields))


class Hub:
    def __init__(self, config: HubConfig, bus: Bus, *, clock: Clock | None = None) -> None:
        if config.auth_secret is not None and len(config.auth_secret.encode()) < 32:
            raise ValueError("auth_secret must be at least 32 bytes (RFC 7518 §3.2 for HS256)")
        self.config = config
        self._bus = bus
        self._clock = clock or SystemClock()
        self._channels: dict[str, ChannelState] = {}
        self._connections: set[ClientConnection] = set()
        self._slow: set[ClientConnection] = set()
        self._grants: dict[ServerConnection, Grant] = {}
        self._ids = itertools.count(1)
        self._closing: set[asyncio.Task[None]] = set()
        self.stats = HubStats()
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(self.stats, self._gauges, self._bus_counters))
        self._server: Server | None = None
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: subscribe requests waiting for the bus's history (one task per request)
        self._history_reads: set[asyncio.Task[None]] = set()
        #: resumes answered from the bus's history, by outcome (``recovered`` or the reason)
        self._slow_timer: asyncio.TimerHandle | None = None
        self._started_ns = 0
        self._last_input_ns = 0
        self._page = (resources.files("realtime.hub") / "static" / "index.html").read_bytes()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._started_ns = self._clock.now_ns()
        self._subscription = self._bus.subscribe(">", payload_fragments=True)
        await self._subscription.wait_ready()
        self._server = await serve(
            self._serve_client,
            cfg.host,
            cfg.port,
            process_request=self._http,
            compression="deflate" if cfg.compression else None,
            ping_interval=None,  # one heartbeat timer for all, not a task per connection
            max_size=cfg.max_frame_bytes,
            max_queue=4,
            write_limit=cfg.slow_write_buffer_bytes,
            close_timeout=cfg.drain_timeout_s,
            server_header=f"nautilus-hub/{__version__}",
        )
        self._tasks = [
            asyncio.create_task(self._consume(self._subscription), name="hub-consume"),
            asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
        ]

    @property
    def port(self) -> int:
        assert self._server is not None, "hub not started"
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, close every client with 1001 going-away, drain within the bound."""
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.config.drain_timeout_s * 2)
            except TimeoutError:
                log.warning("hub: drain timed out; aborting remaining connections")
                for conn in list(self._connections):
                    if conn.ws.transport is not None:
                        conn.ws.transport.abort()
        if self._subscription is not None:
            self._subscription.close()
        tasks = [*self._tasks, *self._history_reads]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._slow_timer is not None:
            self._slow_timer.cancel()

    def declare(self, names: Iterable[str]) -> None:
        """Make channels known before their first message (so clients may subscribe early)."""
        for name in names:
            self._channel(parse_channel(name).name)

    def _channel(self, name: str) -> ChannelState:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = ChannelState(name, self.config.history_size)
        return ch

    # --- bus → clients -------------------------------------------------------------------------

    async def _consume(self, subscription: Subscription) -> None:
        """One fan-out tick per bus wake-up, adaptively spaced under load.

        A tick costs about one socket write per subscriber whatever it carries, so when a tick
        took longer than ``coalesce_after_s`` the next waits as long again (at most
        ``coalesce_max_s``) and gathers more messages per write. Light load never waits;
        heavy load trades a little latency for far fewer system calls (Nagle's idea, bounded).
        """
        after_s, max_s = self.config.coalesce_after_s, self.config.coalesce_max_s
        perf = time.perf_counter
        while batch := await subscription.next_batch(TICK_MAX_MESSAGES):
            started = perf()
            try:
                self._on_batch(batch)
            except Exception:  # a bug here must not silence every stream
                log.exception("hub: fan-out failed for a batch of %d messages", len(batch))
            took = perf() - started
            if max_s and took > after_s:
                await asyncio.sleep(min(took, max_s))

    def _on_batch(self, batch: list[Envelope]) -> None:
        now = self._clock.now_ns()
        stats = self.stats
        self._last_input_ns = now
        tick: dict[ChannelState, Parts] = {}
        for env in batch:
            ch = self._channels.get(env.channel)
            if ch is None:
                try:
                    ch = self._channel(parse_channel(env.channel).name)
                except ProtocolError:
                    stats.foreign_messages += 1
                    continue
            stats.messages_in += 1
            stats.publish_to_hub.observe_ns(max(0, now - env.publish_ns))
            stats.event_to_publish.observe_ns(max(0, env.publish_ns - env.event_ns))
            if ch.stale:
                ch.stale = False
                tick.setdefault(ch, []).append((0, _status(ch.name, StatusState.LIVE)))
            previous = ch.last_seq
            encoded, skipped = ch.accept(env, now)
            if skipped:
                if skipped < 0:  # already replayed from the bus's history (a seeded channel)
                    continue
                stats.bus_gaps += skipped
                gap = _status(
                    ch.name,
                    StatusState.GAP,
                    from_seq=previous + 1,
                    to_seq=env.seq - 1,
                    epoch=env.epoch,
                    reason="bus_overflow",
                    count=skipped,
                )
                tick.setdefault(ch, []).append((0, gap))
            if ch.subscribers:
                parts = tick.get(ch)
                if parts is None:
                    tick[ch] = [(env.seq, encoded)]
                else:
                    parts.append((env.seq, encoded))
        if tick:
            self._fan_out(tick)
            elapsed = self._clock.now_ns() - now
            stats.broadcast.observe_ns(elapsed)
            stats.receive_to_send.observe_many_ns(elapsed, sum(map(len, tick.values())))

    def _fan_out(self, tick: dict[ChannelState, Parts]) -> None:
        stats = self.stats
        dirty: list[ClientConnection] = []
        for ch in tick:
            for conn in ch.subscribers:
                if not conn.tick:
                    dirty.append(conn)
                conn.tick.append(ch)
        shared: dict[ChannelState, list[tuple[bytes, bytes | None]]] = {}
        slow_limit = self.config.slow_write_buffer_bytes
        for conn in dirty:
            channels, conn.tick = conn.tick, []
            if conn.slow or conn.transport.get_write_buffer_size() > slow_limit:
                self._enqueue(conn, channels, tick)
                continue
            sent = 0
            if len(channels) == 1:
                ch = channels[0]
                frames = shared.get(ch)
                if frames is None:  # built once per channel per tick, written to every subscriber
                    payloads = self._frames([p for _, p in tick[ch]])
                    raw = conn.raw_frames
                    frames = shared[ch] = [(p, text_frame(p) if raw else None) for p in payloads]
                for payload, frame in frames:
                    sent += conn.write(payload, frame)
                count, written = len(tick[ch]), len(frames)
            else:
                joined = [p for ch in channels for _, p in tick[ch]]
                payloads = self._frames(joined)
                for payload in payloads:
                    sent += conn.write(payload)
                count, written = len(joined), len(payloads)
            stats.deliveries += count
            stats.frames_sent += written
            stats.bytes_sent += sent

    def _frames(self, parts: list[bytes]) -> list[bytes]:
        """Frame payloads for encoded messages: a lone message as itself, several as batch
        frames of at most ``max_batch_bytes`` (clients' frame limits default to 1 MiB)."""
        if len(parts) == 1:
            return parts
        limit = self.config.max_batch_bytes
        out: list[bytes] = []
        run: list[bytes] = []
        size = 0
        for part in parts:
            if run and size + len(part) > limit:
                out.append(run[0] if len(run) == 1 else join_batch(run))
                run, size = [], 0
            run.append(part)
            size += len(part) + 1
        out.append(run[0] if len(run) == 1 else join_batch(run))
        return out

    # --- slow consumers ------------------------------------------------------------------------

    def _enqueue(
        self, conn: ClientConnection, channels: list[ChannelState], tick: dict[ChannelState, Parts]
    ) -> None:
        if not conn.slow:
            conn.slow = True
            self._slow.add(conn)
            for ch in channels:  # told once, behind what the socket already holds
                conn.write(_status(ch.name, StatusState.LAGGING))
        for ch in channels:
            parts = tick[ch]
            if ch.lossless:
                conn.backlog.extend((ch, seq, p) for seq, p in parts)
            else:
                replaced = len(parts) - 1 + (1 if ch in conn.latest else 0)
                conn.latest[ch] = parts[-1][1]
                if replaced:
                    conn.conflated[ch] = conn.conflated.get(ch, 0) + replaced
                    self.stats.conflated += replaced
        if len(conn.backlog) > self.config.max_pending_messages:
            self._overflow(conn)
        self._schedule_slow_poll()

    def _overflow(self, conn: ClientConnection) -> None:
        if self.config.lossless_overflow is LosslessOverflow.DISCONNECT:
            self.stats.slow_disconnects += 1
            self._close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")
            return
        for ch, seq, _ in conn.backlog:
            if seq == 0:
                continue
            first, _last = conn.gaps.get(ch, (seq, seq))
            conn.gaps[ch] = (first, seq)
            self.stats.gap_dropped += 1
        conn.backlog.clear()

    def _schedule_slow_poll(self) -> None:
        if self._slow and self._slow_timer is None:
            loop = asyncio.get_running_loop()
            self._slow_timer = loop.call_later(SLOW_POLL_S, self._service_slow)

    def _service_slow(self) -> None:
        self._slow_timer = None
        low_water = self.config.slow_write_buffer_bytes // 4
        for conn in list(self._slow):
            if not conn.open:
                self._slow.discard(conn)
            elif conn.write_buffer_size <= low_water:
                self._drain(conn)
        self._schedule_slow_poll()

    def _drain(self, conn: ClientConnection) -> None:
        """Write a congested connection's backlog, one bounded frame per poll."""
        parts: list[bytes] = []
        for ch, (first, last) in conn.gaps.items():
            parts.append(
                _status(
                    ch.name,
                    StatusState.GAP,
                    from_seq=first,
                    to_seq=last,
                    epoch=ch.epoch,
                    count=last - first + 1,
                    reason="slow_consumer",
                )
            )
        conn.gaps.clear()
        for ch, count in conn.conflated.items():
            parts.append(_status(ch.name, StatusState.CONFLATED, count=count))
        conn.conflated.clear()
        parts.extend(conn.latest.values())
        conn.latest.clear()
        budget = self.config.max_batch_bytes
        size = sum(map(len, parts))
        backlog = conn.backlog
        while backlog and (not parts or size + len(backlog[0][2]) <= budget):
            part = backlog.popleft()[2]
            parts.append(part)
            size += len(part)
        frames = self._frames(parts) if parts else []
        for payload in frames:
            self.stats.bytes_sent += conn.write(payload)
        self.stats.deliveries += len(parts)
        self.stats.frames_sent += len(frames)
        if not backlog:
            conn.slow = False
            self._slow.discard(conn)

    def _close(self, conn: ClientConnection, code: CloseCode, reason: str) -> None:
        task = asyncio.create_task(conn.ws.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._forget(conn)

    def _forget(self, conn: ClientConnection) -> None:
        self._connections.discard(conn)
        self._slow.discard(conn)
        for ch in conn.subscriptions:
            ch.subscribers.discard(conn)
        conn.subscriptions.clear()
        conn.backlog.clear()
        conn.latest.clear()

    # --- heartbeat and staleness (one timer for every connection) -------------------------------

    async def _heartbeat(self) -> None:
        interval = self.config.heartbeat_interval_s
        stale_ns = int(self.config.stale_after_s * 1e9)
        while True:
            await asyncio.sleep(interval)
            now = self._clock.now_ns()
            payload = encode(Heartbeat(now))
            frame = text_frame(payload)
            for conn in list(self._connections):
                if not conn.slow:
                    conn.write(payload, frame)
            if stale_ns:
                self._mark_stale(now, stale_ns)

    def _mark_stale(self, now: int, stale_ns: int) -> None:
        tick: dict[ChannelState, Parts] = {}
        for ch in self._channels.values():
            if not ch.stale and ch.last_publish_ns and now - ch.last_publish_ns > stale_ns:
                ch.stale = True
                if ch.subscribers:
                    tick[ch] = [(0, _status(ch.name, StatusState.STALE))]
        if tick:
            self._fan_out(tick)

    # --- client requests -----------------------------------------------------------------------

    async def _serve_client(self, ws: ServerConnection) -> None:
        now = self._clock.now_ns()
        grant = self._grants.pop(ws, ALLOW_ALL)
        rate = TokenBucket(self.config.max_messages_per_second, now)
        conn = ClientConnection(next(self._ids), ws, grant, rate, raw=not ws.protocol.extensions)
        self._connections.add(conn)
        self.stats.connections_opened += 1
        try:
            async for frame in ws:
                self._on_request(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            self._forget(conn)

    def _reply(self, conn: ClientConnection, payload: bytes) -> None:
        conn.write(payload)

    def _error(self, conn: ClientConnection, exc: ProtocolError) -> None:
        self.stats.errors[exc.code.value] += 1
        self._reply(conn, encode(error_from(exc)))

    def _on_request(self, conn: ClientConnection, frame: str | bytes) -> None:
        if not conn.rate.take(self._clock.now_ns()):
            conn.strikes += 1
            if conn.strikes > self.config.rate_limit_strikes:
                self.stats.rate_limit_disconnects += 1
                self._close(conn, CloseCode.RATE_LIMIT, "message rate limit exceeded")
                return
            limit = self.config.max_messages_per_second
            self._error(conn, ProtocolError(ErrorCode.RATE_LIMITED, f"over {limit} requests/s"))
            return
        conn.strikes = 0
        try:
            if isinstance(frame, bytes):
                raise ProtocolError(ErrorCode.BINARY_NOT_SUPPORTED, "send JSON text frames")
            msg = decode_client(frame)
            if isinstance(msg, Subscribe):
                self._subscribe(conn, msg)
            elif isinstance(msg, Unsubscribe):
                self._unsubscribe(conn, msg)
            elif isinstance(msg, ListChannels):
                available = tuple(ch.info() for _, ch in sorted(self._channels.items()))
                self._reply(
                    conn, encode(Ack(msg.id, "list", self._names(conn), None, None, available))
                )
            elif isinstance(msg, Ping):
                self._reply(conn, encode(Pong(msg.id, self._clock.now_ns())))
        except ProtocolError as exc:
            self._error(conn, exc)
        except Exception:  # never a traceback to the client, never a dead connection
            log.exception("hub: request failed")
            self.stats.errors[ErrorCode.INTERNAL.value] += 1
            self._reply(conn, encode(Error(None, ErrorCode.INTERNAL.value, "internal error")))

    @staticmethod
    def _names(conn: ClientConnection) -> tuple[str, ...]:
        return tuple(sorted(ch.name for ch in conn.subscriptions))

    def _subscribe(self, conn: ClientConnection, msg: Subscribe) -> None:
        cfg = self.config
        if len(msg.channels) > cfg.max_channels_per_request:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {cfg.max_channels_per_request} channels per request",
                field="channels",
                request_id=msg.id,
            )
        wanted: list[ChannelState] = []
        for i, name in enumerate(msg.channels):
            ch = self._channels.get(name)
            if ch is None and cfg.implicit_channels and conn.grant.allows(name):
                ch = self._channel(name)
            if ch is None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_CHANNEL,
                    f"no channel {name!r}",
                    field=f"channels[{i}]",
                    request_id=msg.id,
                    channel=name,
                )
            if not conn.grant.allows(name):
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    f"token does not grant {name!r}",
                    field=f"channels[{i}]",
                    request_id=msg.id,
                    channel=name,
                )
            wanted.append(ch)
        new = [ch for ch in wanted if ch not in conn.subscriptions]
        if len(conn.subscriptions) + len(new) > cfg.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {cfg.max_subscriptions} subscriptions per connection",
                field="channels",
                request_id=msg.id,
            )
        reads: dict[ChannelState, BusRead] = {}
        for ch in new:
            position = msg.resume.get(ch.name)
            if position is not None and ch.needs_bus(ch.plan_resume(position)):
                reads[ch] = BusRead(position, cfg.max_pending_messages)
        conn.subscriptions.update(new)
        if not reads:
            self._attach(conn, msg, new, reads)
            return
        # The channels count as subscribed (limits, the ack's list, unsubscribe) but receive
        # nothing until ``_attach``: the replay and the live stream join in one loop turn.
        task = asyncio.create_task(
            self._subscribe_from_bus(conn, msg, new, reads), name=f"hub-history {conn.id}"
        )
        self._history_reads.add(task)
        task.add_done_callback(self._history_reads.discard)

    async def _subscribe_from_bus(
        self,
        conn: ClientConnection,
        msg: Subscribe,
        channels: list[ChannelState],
        reads: dict[ChannelState, BusRead],
    ) -> None:
        """Read the bus's history for the channels the ring cannot resume, then attach the
        whole request. A read is repeated only while the hub received more than its ring keeps
        during the previous one; errors and ``history_read_timeout_s`` answer ``bus_unavailable``.
        """
        pending = dict(reads)
        try:
            async with asyncio.timeout(self.config.history_read_timeout_s):
                while pending:
                    await asyncio.gather(*(self._read_history(ch, r) for ch, r in pending.items()))
                    pending = {
                        ch: r
                        for ch, r in pending.items()
                        if ch.plan_bus_resume(r, final=False) is None
                    }
        except TimeoutError:
            log.warning(
                "hub: bus history not read within %.1f s", self.config.history_read_timeout_s
            )
            for read in pending.values():
                read.failed = True
        if conn not in self._connections:
            return
        try:
            self._attach(conn, msg, channels, reads)
        except Exception:  # as in ``_on_request``: no traceback to the client, no dead connection
            log.exception("hub: subscribe from the bus's history failed")
            self.stats.errors[ErrorCode.INTERNAL.value] += 1
            self._reply(conn, encode(Error(msg.id, ErrorCode.INTERNAL.value, "internal error")))

    async def _read_history(self, ch: ChannelState, read: BusRead) -> None:
        after_seq, limit = read.next_read()
        try:
            epoch, envelopes = await self._bus.history(
                ch.name, after_seq, limit, payload_fragments=True
            )
        except BusUnavailable as exc:
            log.warning("hub: history of %s unavailable: %s", ch.name, exc)
            read.failed = True
        except Exception:  # a bus bug fails this resume, not the connection
            log.exception("hub: history of %s failed", ch.name)
            read.failed = True
        else:
            read.take(epoch, envelopes)

    def _attach(
        self,
        conn: ClientConnection,
        msg: Subscribe,
        channels: list[ChannelState],
        reads: dict[ChannelState, BusRead],
    ) -> None:
        """Start delivering ``channels`` to ``conn``: ack, then per channel the replay and its
        status (or a snapshot), all written before any later live message (no await here)."""
        now = self._clock.now_ns()
        recovery: dict[str, Recovery] = {}
        data: list[bytes] = []
        for ch in channels:
            if ch not in conn.subscriptions or conn in ch.subscribers:
                continue  # unsubscribed, or subscribed again, while the bus was read
            ch.subscribers.add(conn)
            position = msg.resume.get(ch.name)
            if position is not None:
                read = reads.get(ch)
                plan: ResumePlan | None
                if read is None:
                    plan = ch.plan_resume(position)
                    replayed = ch.replay(plan)
                else:
                    plan = ch.plan_bus_resume(read, final=True)
                    assert plan is not None, "a final plan is always decided"
                    replayed = ch.replay_from_bus(read, plan, now)
                    self.stats.bus_resumes["recovered" if plan.recovered else str(plan.reason)] += 1
                reason = plan.reason.value if plan.reason else None
                epoch = ch.epoch or (read.epoch if read is not None else "")
                recovery[ch.name] = Recovery(
                    plan.recovered, len(replayed), epoch, ch.last_seq, reason
                )
                data.extend(replayed)
                state = StatusState.RECOVERED if plan.recovered else StatusState.NOT_RECOVERED
                data.append(
                    _status(
                        ch.name,
                        state,
                        epoch=epoch,
                        to_seq=ch.last_seq,
                        count=len(replayed),
                        reason=reason,
                    )
                )
                if plan.recovered or not msg.snapshot:
                    continue
            if msg.snapshot and not ch.lossless and (snap := ch.snapshot(now)) is not None:
                data.append(snap)
        ack = Ack(msg.id, "subscribe", self._names(conn), self.config.limits(), recovery or None)
        self._reply(conn, encode(ack))
        for payload in self._frames(data) if data else ():
            self._reply(conn, payload)
        self.stats.deliveries += len(data)

    def _unsubscribe(self, conn: ClientConnection, msg: Unsubscribe) -> None:
        dropped = {self._channels[n] for n in msg.channels if n in self._channels}
        dropped &= conn.subscriptions
        for ch in dropped:
            ch.subscribers.discard(conn)
            conn.latest.pop(ch, None)
            conn.conflated.pop(ch, None)
            conn.gaps.pop(ch, None)
        conn.subscriptions -= dropped
        if dropped and conn.backlog:
            kept = [item for item in conn.backlog if item[0] not in dropped]
            conn.backlog.clear()
            conn.backlog.extend(kept)
        self._reply(conn, encode(Ack(msg.id, "unsubscribe", self._names(conn))))

    # --- HTTP on the same port -----------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self.config.auth_secret is None:
                return None
            token = token_from_request(request.path, request.headers.get("Authorization"))
            try:
                self._grants[connection] = verify_token(self.config.auth_secret, token)
            except AuthError as exc:
                self.stats.auth_denied += 1
                return _json(
                    connection,
                    HTTPStatus.UNAUTHORIZED,
                    {"error": {"code": "unauthorized", "message": str(exc)}},
                )
            return None
        path = urlsplit(request.path).path
        if path == "/health":
            return _json(connection, HTTPStatus.OK, self.health())
        if path == "/metrics":
            body = metrics_text(self.registry)
            return _respond(connection, HTTPStatus.OK, body, "text/plain; version=0.0.4")
        if path in ("/", "/index.html"):
            return _respond(connection, HTTPStatus.OK, self._page, "text/html; charset=utf-8")
        return _json(
            connection,
            HTTPStatus.NOT_FOUND,
            {"error": {"code": "not_found", "message": f"no route {path}"}},
        )

    def health(self) -> dict[str, Any]:
        now = self._clock.now_ns()
        pending = getattr(self._subscription, "pending", 0)
        return {
            "status": "ok",
            "service": "hub",
            "version": __version__,
            "uptime_s": round((now - self._started_ns) / 1e9, 3),
            "last_input_age_s": round((now - self._last_input_ns) / 1e9, 3)
            if self._last_input_ns
            else None,
            "lag": {"bus_pending": pending, "slow_connections": len(self._slow)},
            "connections": len(self._connections),
            "channels": len(self._channels),
            "bus": self._bus_counters(),
            "bus_resumes": dict(self.stats.bus_resumes),
        }

    def _bus_counters(self) -> dict[str, int]:
        """What the bus subscription lost, skipped or recovered (Redis: ``invalid`` counts
        corrupt or foreign messages, ``recovered`` those read back from streams)."""
        sub = self._subscription
        names = ("dropped", "invalid", "recovered", "duplicates", "reconnects")
        return {name: int(getattr(sub, name, 0)) for name in names}

    def _gauges(self) -> dict[str, float]:
        return {
            "connections": len(self._connections),
            "slow_connections": len(self._slow),
            "channels": len(self._channels),
            "subscriptions": sum(len(c.subscriptions) for c in self._connections),
            "bus_pending_messages": getattr(self._subscription, "pending", 0),
        }


def _respond(connection: ServerConnection, status: HTTPStatus, body: bytes, ctype: str) -> Response:
    response = connection.respond(status, "")
    for name, value in (("Content-Type", ctype), ("Content-Length", str(len(body)))):
        del response.headers[name]  # Headers is a multidict: replace, don't append
        response.headers[name] = value
    response.body = body
    return response


def _json(connection: ServerConnection, status: HTTPStatus, obj: Any) -> Response:
    return _respond(connection, status, orjson.dumps(obj), "application/json")


__all__ = ["Hub", "encode_data"]

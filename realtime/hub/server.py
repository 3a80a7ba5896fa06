"""The hub: bus → channels → WebSocket clients; ``/health``, ``/metrics`` and ``/`` on one port.

Hot path (``_on_batch`` → ``_fan_out``): each bus message is encoded once; everything the bus hands
over in one wake-up is one *tick*; per tick every connection gets one write: the channel's shared
prebuilt frame when it has data on one channel (the same bytes for every subscriber), or one batch
frame joined from already-encoded parts, built once per set of channels. No task per client per
message, no awaits per client; stage latencies are observed once per tick, not per message.
Replies to requests (acks, errors, pongs) are written immediately, never behind queued data.

What to answer to a request is decided by the sans-I/O ``Session`` (``session.py``); what a
congested connection keeps and when it drains, by ``SlowConsumers`` (``connection.py``). The hub
is the glue: sockets, timers, bus reads and the fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from protocol.channels import parse_channel
from protocol.codec import encode, encode_data
from protocol.errors import CloseCode, ProtocolError
from protocol.messages import Heartbeat, StatusState
from protocol.schemas import asyncapi_document
from realtime import __version__
from realtime.bus.base import Bus, BusUnavailable, Envelope, Subscription
from realtime.clock import Clock, SystemClock
from realtime.hub.auth import ALLOW_ALL
from realtime.hub.channels import BusRead, ChannelRegistry, ChannelState, undecided
from realtime.hub.config import HubConfig
from realtime.hub.connection import ClientConnection, Frames, Parts, SlowConsumers, text_frame
from realtime.hub.framing import epoch_changed, status
from realtime.hub.metrics import (
    LATENCY_BUCKETS,
    HubCollector,
    HubStats,
    metrics_text,
)
from realtime.hub.session import (
    Action,
    Attach,
    Close,
    Detach,
    ReadHistory,
    Refusal,
    Reply,
    Session,
    admit,
)
from realtime.hub.spacing import TickSpacing
from realtime.latency import HistogramWindow, LatencySummary
from realtime.metrics import port_registry
from realtime.ports import PortInUse, is_port_in_use

log = logging.getLogger("nautilus.hub")

#: How often congested connections are re-checked for draining (seconds).
SLOW_POLL_S = 0.005
#: Bus messages taken per wake-up (one fan-out tick at most).
TICK_MAX_MESSAGES = 4096


_HTML = "text/html; charset=utf-8"
#: Static files on the hub's port: URL path → (file in ``realtime/hub/static``, content type).
#: A file that is not there (a client library not built yet) is simply not served.
STATIC_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", _HTML),
    "/index.html": ("index.html", _HTML),
    "/explorer": ("explorer.html", _HTML),
    "/status.html": ("status.html", _HTML),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),
}
#: Third-party files: every file directly in ``static/vendor/`` (its NOTICE names each one's
#: version and source) at ``/vendor/<name>``. Names carry the version, so they are cached long.
VENDOR_PREFIX = "/vendor/"
VENDOR_CACHE_CONTROL = "public, max-age=31536000, immutable"
_VENDOR_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

#: ``GET /status``: the platform's status, built above this layer (engines/shell/status.py)
#: and handed to the hub; without one the hub answers its own part only.
StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
#: Bus messages waiting for the hub beyond which its health is ``degraded`` (lagging).
LAGGING_PENDING = 10_000
#: The hub's latency stages, as /metrics names them (``nautilus_hub_<stage>_seconds``).
STAGES = ("event_to_publish", "publish_to_hub", "broadcast", "receive_to_send")


class Hub:
    def __init__(
        self,
        config: HubConfig,
        bus: Bus,
        *,
        clock: Clock | None = None,
        status: StatusProvider | None = None,
    ) -> None:
        if config.auth_secret is not None and len(config.auth_secret.encode()) < 32:
            raise ValueError("auth_secret must be at least 32 bytes (RFC 7518 §3.2 for HS256)")
        self.config = config
        self._bus = bus
        self._clock = clock or SystemClock()
        self._channels = ChannelRegistry(
            config.history_size, config.history_bytes, config.history_total_bytes
        )
        self._connections: set[ClientConnection] = set()
        self.stats = HubStats()
        self._slow = SlowConsumers(config, self.stats)
        self._ids = itertools.count(1)
        self._closing: set[asyncio.Task[None]] = set()
        self.registry: CollectorRegistry = port_registry()
        self.registry.register(HubCollector(self.stats, self._gauges, self._bus_counters))
        self._server: Server | None = None
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: subscribe requests waiting for the bus's history (one task per request)
        self._history_reads: set[asyncio.Task[None]] = set()
        self._slow_timer: asyncio.TimerHandle | None = None
        self._started_ns = 0
        self._last_input_ns = 0
        static = resources.files("realtime.hub") / "static"
        #: files the hub serves as they are: path → (file in static/, content type)
        self._static = {
            path: ((static / name).read_bytes(), ctype)
            for path, (name, ctype) in STATIC_FILES.items()
            if (static / name).is_file()
        }
        vendor = static / "vendor"
        for item in vendor.iterdir() if vendor.is_dir() else ():
            if item.is_file():
                suffix = item.name[item.name.rfind(".") :] if "." in item.name else ""
                ctype = _VENDOR_TYPES.get(suffix, "text/plain; charset=utf-8")
                self._static[VENDOR_PREFIX + item.name] = (item.read_bytes(), ctype)
        self._status_provider = status
        self._stage_windows = {name: HistogramWindow(LATENCY_BUCKETS) for name in STAGES}
        self._delivery_samples: list[tuple[int, int]] = []

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._started_ns = self._clock.now_ns()
        self._sample_windows(self._started_ns)  # the status view's first baseline
        self._subscription = self._bus.subscribe(">", payload_fragments=True)
        await self._subscription.wait_ready()
        try:
            self._server = await self._bind()
        except OSError as exc:
            if not is_port_in_use(exc):
                raise
            self._subscription.close()
            raise PortInUse("hub", cfg.host, cfg.port, "NAUTILUS_HUB_PORT") from None
        self._tasks = [
            asyncio.create_task(self._consume(self._subscription), name="hub-consume"),
            asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
        ]

    async def _bind(self) -> Server:
        cfg = self.config
        return await serve(
            self._serve_client,
            cfg.host,
            cfg.port,
            process_request=self._http,
            create_connection=HubServerConnection,
            compression="deflate" if cfg.compression else None,
            ping_interval=None,  # one heartbeat timer for all, not a task per connection
            max_size=cfg.max_frame_bytes,
            max_queue=4,
            write_limit=cfg.slow_write_buffer_bytes,
            close_timeout=cfg.drain_timeout_s,
            server_header=f"nautilus-hub/{__version__}",
        )

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
            self._channels.open(parse_channel(name).name).declared = True

    # --- bus → clients -------------------------------------------------------------------------

    async def _consume(self, subscription: Subscription) -> None:
        """One fan-out tick per bus wake-up, spaced only while the event loop is saturated.

        A tick costs about one socket write per subscriber whatever it carries, so while the
        process's CPU share is at or above ``coalesce_busy_share``, a tick longer than
        ``coalesce_after_s`` makes the next wait as long again (at most ``coalesce_max_s``) and
        gather more messages per write (``realtime.hub.spacing``: why, and the measurements).
        A loop with headroom never waits (Nagle's idea, bounded and only under load).
        """
        config = self.config
        spacing = TickSpacing(
            config.coalesce_after_s, config.coalesce_max_s, config.coalesce_busy_share
        )
        perf = time.perf_counter
        while batch := await subscription.next_batch(TICK_MAX_MESSAGES):
            started = perf()
            try:
                self._on_batch(batch)
            except Exception:  # a bug here must not silence every stream
                log.exception("hub: fan-out failed for a batch of %d messages", len(batch))
            if wait := spacing.after_tick(started, perf(), time.process_time()):
                await asyncio.sleep(wait)

    def _on_batch(self, batch: list[Envelope]) -> None:
        now = self._clock.now_ns()
        stats = self.stats
        self._last_input_ns = now
        channels = self._channels.by_name
        tick: dict[ChannelState, Parts] = {}
        received = 0
        for env in batch:
            ch = channels.get(env.channel)
            if ch is None:
                try:
                    ch = self._channels.open(parse_channel(env.channel).name)
                except ProtocolError:
                    stats.foreign_messages += 1
                    continue
            received += 1
            latency = ch.latency  # the stage times are observed after the tick (``observe_tick``)
            if latency is None:
                latency = ch.latency = stats.latency.of(ch.name)
            publish_ns = env.publish_ns
            latency.to_hub.append(now - publish_ns)
            latency.to_publish.append(publish_ns - env.event_ns)
            if ch.stale:
                ch.stale = False
                tick.setdefault(ch, []).append((0, status(ch.name, StatusState.LIVE)))
            previous, previous_epoch = ch.last_seq, ch.epoch
            encoded, skipped = ch.accept(env, now)
            if previous_epoch != env.epoch and previous_epoch:  # numbering restarted mid-stream
                stats.epoch_changes += 1
                if ch.subscribers:
                    told = epoch_changed(ch.name, previous_epoch, previous, env.epoch, env.seq)
                    tick.setdefault(ch, []).append((0, told))
            if skipped:
                if skipped < 0:  # already replayed from the bus's history (a seeded channel)
                    continue
                stats.bus_gaps += skipped
                gap = status(
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
                latency.delivered.append(env.event_ns)
        stats.messages_in += received
        sent = now
        if tick:
            self._fan_out(tick)
            sent = self._clock.now_ns()
            stats.broadcast.observe_ns(sent - now)
        for kind in stats.latency.by_kind.values():  # a few: the protocol's stream kinds
            kind.observe_tick(now, sent)

    def _fan_out(self, tick: dict[ChannelState, Parts]) -> None:
        """Write one tick: every subscriber of a channel in it gets that channel's frames, a
        connection with data on several channels one batch of all of them."""
        if len(tick) == 1:  # the common case: no grouping per connection needed
            for ch, parts in tick.items():
                self._fan_out_channel(ch, parts, tick)
            return
        dirty: list[ClientConnection] = []
        for ch in tick:
            for conn in ch.subscribers:
                if not conn.tick:
                    dirty.append(conn)
                conn.tick.append(ch)
        #: frames by the channels a connection has data on: built once per set, written to all
        shared: dict[tuple[ChannelState, ...], tuple[Frames, int]] = {}
        slow_limit = self.config.slow_write_buffer_bytes
        batch_bytes = self.config.max_batch_bytes
        deliveries = frames_sent = bytes_sent = 0
        for conn in dirty:
            channels, conn.tick = conn.tick, []
            if conn.slow or conn.transport.get_write_buffer_size() > slow_limit:
                self._congested(conn, channels, tick)
                continue
            key = tuple(channels)  # in ``tick``'s order for every connection
            found = shared.get(key)
            if found is None:
                joined = [p for ch in channels for _, p in tick[ch]]
                found = shared[key] = (Frames(joined, batch_bytes), len(joined))
            frames, count = found
            written = frames.write_to(conn)
            if written:
                deliveries += count
                frames_sent += len(frames.payloads)
                bytes_sent += written
        stats = self.stats
        stats.deliveries += deliveries
        stats.frames_sent += frames_sent
        stats.bytes_sent += bytes_sent

    def _fan_out_channel(
        self, ch: ChannelState, parts: Parts, tick: dict[ChannelState, Parts]
    ) -> None:
        """A tick of one channel: the same frames to every subscriber, written inline (no call
        per connection while its socket keeps up); congested ones queued after the loop, as
        closing one changes ``ch.subscribers``."""
        frames = Frames([p for _, p in parts], self.config.max_batch_bytes)
        slow_limit = self.config.slow_write_buffer_bytes
        congested: list[ClientConnection] = []
        reached = bytes_sent = 0
        if len(frames.payloads) == 1:
            frame = frames.raw[0]
            raw_reached = 0
            for conn in ch.subscribers:
                transport = conn.transport
                if conn.slow or transport.get_write_buffer_size() > slow_limit:
                    congested.append(conn)
                elif conn.raw_frames and conn.protocol.state is State.OPEN:
                    transport.write(frame)
                    raw_reached += 1
                elif written := frames.write_to(conn):
                    reached += 1
                    bytes_sent += written
            reached += raw_reached
            bytes_sent += raw_reached * len(frame)
        else:
            for conn in ch.subscribers:
                if conn.slow or conn.transport.get_write_buffer_size() > slow_limit:
                    congested.append(conn)
                elif written := frames.write_to(conn):
                    reached += 1
                    bytes_sent += written
        stats = self.stats
        stats.deliveries += reached * len(parts)
        stats.frames_sent += reached * len(frames.payloads)
        stats.bytes_sent += bytes_sent
        for conn in congested:
            self._congested(conn, [ch], tick)

    def _congested(
        self, conn: ClientConnection, channels: list[ChannelState], tick: dict[ChannelState, Parts]
    ) -> None:
        """Queue ``conn``'s share of a tick instead of writing it (``SlowConsumers``)."""
        if not self._slow.enqueue(conn, channels, tick):
            self._close(conn, CloseCode.SLOW_CONSUMER, "slow consumer")
        self._schedule_slow_poll()

    # --- slow consumers (the policy: ``connection.SlowConsumers``) ------------------------------

    def _schedule_slow_poll(self) -> None:
        if self._slow and self._slow_timer is None:
            loop = asyncio.get_running_loop()
            self._slow_timer = loop.call_later(SLOW_POLL_S, self._service_slow)

    def _service_slow(self) -> None:
        self._slow_timer = None
        for conn in self._slow.service():  # over the hub-wide outbound budget, largest first
            self._drop(conn, CloseCode.SLOW_CONSUMER, "outbound budget exceeded")
        self._schedule_slow_poll()

    def _close(self, conn: ClientConnection, code: CloseCode, reason: str) -> None:
        task = asyncio.create_task(conn.ws.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._forget(conn)

    def _drop(self, conn: ClientConnection, code: CloseCode, reason: str) -> None:
        """Close ``conn`` and free what it queues now: its close frame is written, then the TCP
        connection aborted (the frame cannot overtake what the socket still holds, so a client
        that is behind sees an abnormal close)."""
        if conn.open:
            conn.ws.protocol.send_close(code, reason)
            conn.ws.send_data()
        conn.transport.abort()
        self._forget(conn)

    def _forget(self, conn: ClientConnection) -> None:
        self._connections.discard(conn)
        self._slow.discard(conn)
        self._perform(conn, conn.session.close())
        conn.forget_queued()

    # --- heartbeat and staleness (one timer for every connection) -------------------------------

    async def _heartbeat(self) -> None:
        interval = self.config.heartbeat_interval_s
        stale_ns = int(self.config.stale_after_s * 1e9)
        idle_ns = int(self.config.channel_idle_s * 1e9)
        while True:
            await asyncio.sleep(interval)
            now = self._clock.now_ns()
            self._sample_windows(now)
            payload = encode(Heartbeat(now))
            frame = text_frame(payload)
            for conn in list(self._connections):
                if not conn.slow:
                    conn.write(payload, frame)
            if stale_ns:
                self._mark_stale(now, stale_ns)
            if idle_ns:
                self.stats.channels_expired += self._channels.expire_idle(now, idle_ns)

    def _mark_stale(self, now: int, stale_ns: int) -> None:
        tick: dict[ChannelState, Parts] = {}
        for ch in self._channels:
            if not ch.stale and ch.last_publish_ns and now - ch.last_publish_ns > stale_ns:
                ch.stale = True
                if ch.subscribers:
                    tick[ch] = [(0, status(ch.name, StatusState.STALE))]
        if tick:
            self._fan_out(tick)

    # --- client requests (decided by ``session.Session``) ------------------------------------

    async def _serve_client(self, ws: ServerConnection) -> None:
        now = self._clock.now_ns()
        if len(self._connections) >= self.config.max_connections:  # upgrades that raced past
            self.stats.connections_refused += 1  # the check in ``_http``
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
            return
        grant = ALLOW_ALL
        if self.config.auth_secret is not None and ws.request is not None:
            # verified again rather than handed over from ``_http``: a handshake that fails
            # after that hook never reaches here, and must leave nothing behind
            headers = ws.request.headers
            verdict = admit(self.config.auth_secret, ws.request.path, _header(headers), now)
            if isinstance(verdict, Refusal):  # expired between the hook and now
                self.stats.tokens_expired += 1
                await ws.close(CloseCode.TOKEN_EXPIRED, "token expired")
                return
            grant = verdict
        session = Session(self.config, self._channels, grant, self.stats, now)
        conn = ClientConnection(next(self._ids), ws, session, raw=not ws.protocol.extensions)
        self._connections.add(conn)
        self.stats.connections_opened += 1
        expiry: asyncio.TimerHandle | None = None
        if grant.expires_ns is not None:
            delay_s = max(0.0, (grant.expires_ns - now) / 1e9)
            expiry = asyncio.get_running_loop().call_later(delay_s, self._expire, conn)
        try:
            async for frame in ws:
                self._perform(conn, session.receive(frame, self._clock.now_ns()))
                if ws.paused:  # replies past the socket's bound: read no more requests until
                    await ws.drain()  # it is down to a quarter (its low-water mark)
        except (ConnectionClosed, ConnectionError):
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            self._forget(conn)

    def _expire(self, conn: ClientConnection) -> None:
        """The connection's token reached ``exp``: close it with 4001 (``Session.expire``)."""
        if conn in self._connections and not conn.session.closed:
            self._perform(conn, conn.session.expire())

    def _perform(self, conn: ClientConnection, actions: list[Action]) -> None:
        """Carry out a session's actions in order, in this loop turn (no await)."""
        for action in actions:
            match action:
                case Reply(payload):
                    conn.write(payload)
                case Attach(channels):
                    conn.attach(channels)
                case Detach(channels):
                    conn.detach(channels)
                case ReadHistory():
                    task = asyncio.create_task(
                        self._subscribe_from_bus(conn, action), name=f"hub-history {conn.id}"
                    )
                    self._history_reads.add(task)
                    task.add_done_callback(self._history_reads.discard)
                case Close(code, reason):
                    self._close(conn, code, reason)

    async def _subscribe_from_bus(self, conn: ClientConnection, action: ReadHistory) -> None:
        """Read the bus's history for the channels the ring cannot resume, then attach the
        whole request: the replay and the live stream join in one loop turn."""
        await read_history(self._bus, action.reads, self.config.history_read_timeout_s)
        if conn not in self._connections:
            return
        now = self._clock.now_ns()
        attached = conn.session.attach(
            action.request, action.channels, action.reads, now, action.refused
        )
        self._perform(conn, attached)

    # --- HTTP on the same port -----------------------------------------------------------------

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP on the hub's port, and the checks before an upgrade: one ``Upgrade`` and
        one ``Authorization`` header (else 400), room for one more connection (else 503), a
        valid token when auth is on (else 401). Methods other than GET never get here
        (``HubServerConnection``)."""
        try:
            upgrade = request.headers.get("Upgrade", "")
            authorization = _header(request.headers)
        except MultipleValuesError as exc:
            error = {"code": "bad_request", "message": f"more than one {exc} header"}
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": error})
        if upgrade.lower() == "websocket":
            if len(self._connections) >= self.config.max_connections:
                self.stats.connections_refused += 1
                limit = self.config.max_connections
                error = {"code": "too_many_connections", "message": f"{limit} open"}
                response = _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": error})
                response.headers["Retry-After"] = "1"
                return response
            if self.config.auth_secret is None:
                return None
            now = self._clock.now_ns()
            verdict = admit(self.config.auth_secret, request.path, authorization, now)
            if isinstance(verdict, Refusal):
                self.stats.auth_denied += 1
                return _json(connection, HTTPStatus.UNAUTHORIZED, verdict.body)
            return None
        path = urlsplit(request.path).path
        if path == "/health":
            return _json(connection, HTTPStatus.OK, self.health())
        if path == "/metrics":
            body = metrics_text(self.registry)
            return _respond(connection, HTTPStatus.OK, body, "text/plain; version=0.0.4")
        if path == "/status":
            return _json(connection, HTTPStatus.OK, await self.status())
        if path == "/asyncapi.json":  # the WebSocket API as data (protocol/schemas.py)
            hosts = request.headers.get_all("Host")
            host = hosts[0] if len(hosts) == 1 and hosts[0] else f"localhost:{self.port}"
            document = asyncapi_document(version=__version__, host=host)
            return _json(connection, HTTPStatus.OK, document)
        if path in self._static:
            body, ctype = self._static[path]
            response = _respond(connection, HTTPStatus.OK, body, ctype)
            if path.startswith(VENDOR_PREFIX):
                response.headers["Cache-Control"] = VENDOR_CACHE_CONTROL
            return response
        return _json(
            connection,
            HTTPStatus.NOT_FOUND,
            {"error": {"code": "not_found", "message": f"no route {path}"}},
        )

    def health(self) -> dict[str, Any]:
        now = self._clock.now_ns()
        pending = getattr(self._subscription, "pending", 0)
        issues = self.issues()
        return {
            "status": "degraded" if issues else "ok",
            "service": "hub",
            "version": __version__,
            "uptime_s": round((now - self._started_ns) / 1e9, 3),
            "last_input_age_s": round((now - self._last_input_ns) / 1e9, 3)
            if self._last_input_ns
            else None,
            "lag": {
                "bus_pending": pending,
                "slow_connections": len(self._slow),
                "outbound_bytes": self._outbound_bytes(),
                "slow_queued_bytes": self._slow.queued_bytes,
            },
            "connections": len(self._connections),
            "channels": len(self._channels),
            "bus": self._bus_counters(),
            "bus_resumes": dict(self.stats.bus_resumes),
            "issues": issues,
        }

    def issues(self) -> list[str]:
        """Why the hub is degraded now: its bus subscription down, or lagging."""
        found = []
        sub = self._subscription
        if sub is not None and not getattr(sub, "connected", True):
            why = getattr(sub, "last_error", "") or "reconnecting"
            found.append(f"bus unreachable ({why})")
        pending = int(getattr(sub, "pending", 0))
        if pending > LAGGING_PENDING:
            found.append(f"bus lagging: {pending} messages waiting for the hub")
        return found

    async def status(self) -> dict[str, Any]:
        """``GET /status``: the platform's status when a provider was given, else the hub's."""
        if self._status_provider is not None:
            return await self._status_provider()
        return {"hub": self.status_section()}

    def status_section(self) -> dict[str, Any]:
        """The hub's row of the status view: health, deliveries per second and per-stage
        p50/p99 over the last minute, slow and disconnected clients, the bus."""
        now = self._clock.now_ns()
        self._sample_windows(now)
        (then, before), (_, after) = self._delivery_samples[0], self._delivery_samples[-1]
        seconds = (now - then) / 1e9
        s = self.stats
        return {
            **self.health(),
            "deliveries_per_s": round((after - before) / seconds, 1) if seconds > 0 else None,
            "stages": {name: self._stage_summary(name, now) for name in STAGES},
            "slow_disconnects": s.slow_disconnects,
            "rate_limit_disconnects": s.rate_limit_disconnects,
            "bus_kind": type(self._bus).__name__,
        }

    def _stage_summary(self, name: str, now: int) -> LatencySummary:
        return self._stage_windows[name].summary(now, self.stats.stage_counts(name))

    def _sample_windows(self, now: int) -> None:
        """Sample the counters the status view reports per minute (every heartbeat)."""
        for name, window in self._stage_windows.items():
            window.sample(now, self.stats.stage_counts(name))
        samples = self._delivery_samples
        samples.append((now, self.stats.deliveries))
        cutoff = now - 60_000_000_000
        while len(samples) > 2 and samples[1][0] <= cutoff:
            samples.pop(0)

    def _bus_counters(self) -> dict[str, int]:
        """What the bus subscription lost, skipped or recovered (Redis: ``invalid`` counts
        corrupt or foreign messages, ``recovered`` those read back from streams)."""
        sub = self._subscription
        names = ("dropped", "invalid", "recovered", "duplicates", "reconnects")
        return {name: int(getattr(sub, name, 0)) for name in names}

    def _outbound_bytes(self) -> int:
        return sum(conn.write_buffer_size for conn in self._connections)

    def _gauges(self) -> dict[str, float]:
        return {
            "connections": len(self._connections),
            "slow_connections": len(self._slow),
            "channels": len(self._channels),
            "subscriptions": sum(len(c.session.subscriptions) for c in self._connections),
            "bus_pending_messages": getattr(self._subscription, "pending", 0),
            "outbound_bytes": self._outbound_bytes(),
            "degraded": 1.0 if self.issues() else 0.0,
        }


async def read_history(bus: Bus, reads: Mapping[ChannelState, BusRead], timeout_s: float) -> None:
    """Fill ``reads`` from ``bus.history`` for a resume the rings cannot answer (protocol/README.md,
    "Resume rules"). A read is repeated only while the hub received more than its ring keeps
    during the previous one (``channels.undecided``); an error, or no answer within
    ``timeout_s``, marks the read failed (``bus_unavailable``)."""
    pending = dict(reads)
    try:
        async with asyncio.timeout(timeout_s):
            while pending:
                await asyncio.gather(*(_read_once(bus, ch, r) for ch, r in pending.items()))
                pending = undecided(pending)
    except TimeoutError:
        log.warning("hub: bus history not read within %.1f s", timeout_s)
        for read in pending.values():
            read.failed = True


async def _read_once(bus: Bus, ch: ChannelState, read: BusRead) -> None:
    after_seq, limit = read.next_read()
    try:
        epoch, envelopes = await bus.history(ch.name, after_seq, limit, payload_fragments=True)
    except BusUnavailable as exc:
        log.warning("hub: history of %s unavailable: %s", ch.name, exc)
        read.failed = True
    except Exception:  # a bus bug fails this resume, not the connection
        log.exception("hub: history of %s failed", ch.name)
        read.failed = True
    else:
        read.take(epoch, envelopes)


#: A request line's method: the token before its first space (RFC 9112 §3).
_METHOD = re.compile(rb"[A-Z]{1,16}")


class HubServerConnection(ServerConnection):
    """websockets' server connection, answering requests with a method other than GET itself
    with 405 and ``Allow: GET``: its handshake parser closes a request with a body (a POST)
    without a word, and hands a DELETE or TRACE on to ``process_request`` as if it were a GET.
    Looks at the request line's method only; everything else is websockets' own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: bytes | None = b""  # the request's first bytes until the method is known

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            head = self._head + data[:32]
            method, space, _ = head.partition(b" ")
            if not space and len(head) < 17:
                self._head = head
            else:
                self._head = None
                if space and method != b"GET" and _METHOD.fullmatch(method):
                    self._refuse_method(method.decode("ascii"))
                    return
        super().data_received(data)

    def _refuse_method(self, method: str) -> None:
        body = {"error": {"code": "method_not_allowed", "message": f"{method} not allowed"}}
        response = _json(self, HTTPStatus.METHOD_NOT_ALLOWED, body)
        response.headers["Allow"] = "GET"
        response.headers["Server"] = f"nautilus-hub/{__version__}"
        self.protocol.send_response(response)  # closes the stream after it
        self.send_data()


def _header(headers: Any, name: str = "Authorization") -> str | None:
    """One header's value (``MultipleValuesError`` when it is there more than once)."""
    value = headers.get(name)
    return None if value is None else str(value)


def _respond(connection: ServerConnection, status: HTTPStatus, body: bytes, ctype: str) -> Response:
    response = connection.respond(status, "")
    for name, value in (("Content-Type", ctype), ("Content-Length", str(len(body)))):
        del response.headers[name]  # Headers is a multidict: replace, don't append
        response.headers[name] = value
    response.body = body
    return response


def _json(connection: ServerConnection, status: HTTPStatus, obj: Any) -> Response:
    return _respond(connection, status, orjson.dumps(obj), "application/json")


__all__ = ["Hub", "StatusProvider", "encode_data"]

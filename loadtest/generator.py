"""WebSocket load generators: N clients in one process, counting every delivered message.

Two modes, one module:

* **Standalone** (``--duration``): a plain CLI against any running hub::

      python -m loadtest.generator --url ws://HOST:8600/ --channels trades.SPY,bars.1m.SPY \\
          --connections 200 --duration 30 [--out result.json]

  Every frame is parsed (``orjson``) and every message checked per connection and channel by
  ``StreamAccount``: loss counts from the **first** ``seq`` each connection sees on a channel
  (a hub that has been publishing for hours is no loss), and only on ordered-lossless channels
  (a latest-value channel that skips ``seq`` is conflation, counted apart); duplicates, announced
  ``gap`` statuses, epoch changes and protocol errors are counted too. Latency is sampled once per
  frame, from the frame's first live ``update``'s ``ts.publish`` to receipt (a per-frame upper
  bound, as below; both clocks are wall clocks, so across machines it includes their offset).
  Prints a table, writes JSON (``results/generator-*.json`` or ``--out``) and reports the
  generator's own CPU: above ``GENERATOR_BOUND_PCT`` the figures describe the generator, not the
  hub, and are marked ``generator_bound``.

* **Driven** (no ``--duration``): the fan-out benchmark's generator (``loadtest.fanout``), one
  channel, commands on stdin (``mark``, ``end``, ``drain <last_seq>``, ``exit``), JSON lines on
  stdout (``subscribed``, ``marked``, ``ended``, ``report``). Built to stay cheaper than the hub
  it measures (at 1M deliveries/s one core cannot ``json.loads`` each message):

  - a text frame is classified by its 10th byte (orjson layout: ``{"type":"u…``, ``…"b…``,
    ``…"h…``); an ``update`` frame holds one message, a ``batch`` ``bytes.count(b'"seq":')``
    (our payload has no ``seq`` key, a status' ``from_seq`` does not match) — **no parsing**;
  - only a connection's first data frame is parsed (its first ``seq`` and ``epoch``); after the
    drain, loss per connection is ``(last published - first seq + 1) - received``, plus the
    ``first_seq - 1`` messages before it (the publisher starts after every client subscribed).
    Exact while nothing arrives twice (the hub never duplicates without a resume, which the
    benchmark does not do); frames holding a ``status``, an ack or an error (rare) are decoded in
    full (``protocol.codec.decode_server``);
  - latency: one sample per ``--sample-every`` frames (default 1: every frame), from the frame's
    first (oldest) message's ``ts.publish`` and ``ts.event`` to ``time.time_ns()`` at receipt,
    weighted by the messages the sample stands for. Later messages in a frame waited less, so the
    percentiles are upper bounds. Histogram buckets are 1.024 µs; the maximum is exact.

Limits: one process, one core (run several, or Locust's distributed mode, for more); the driven
mode assumes the fan-out's single ordered channel and its 19-digit nanosecond timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

from loadtest.process import emit, install_uvloop, pin_to_core, raise_fd_limit, stdin_lines
from loadtest.report import aligned, machine, write_results
from protocol.channels import DeliveryClass, delivery_of
from protocol.codec import decode_server, encode_client
from protocol.messages import Ack, Batch, Error, ResumePosition, Snapshot, Status, Subscribe, Update
from protocol.sequence import SeqTracker

#: Histogram bucket width: ``latency_ns >> BUCKET_SHIFT`` (1.024 µs).
BUCKET_SHIFT = 10
#: The end-of-run drain gives up once no delivery arrived for this long (seconds).
QUIET_S = 2.0
#: Handshakes in flight at once while connecting.
CONNECT_CONCURRENCY = 100
#: A generator busier than this (% of one core) is the bottleneck: its figures are marked.
GENERATOR_BOUND_PCT = 70.0

_UPDATE = ord("u")
_BATCH = ord("b")
_HEARTBEAT = ord("h")
_STATUS_MARK = b'"type":"status"'
_SEQ = b'"seq":'
_EVENT = b'"event":'
#: ``"event":E,"publish":P``: P starts this many bytes after E (E has 19 digits).
_PUBLISH_AFTER_EVENT = 19 + len(b',"publish":')
_TS_DIGITS = 19
_PUBLISH_END = _PUBLISH_AFTER_EVENT + _TS_DIGITS


def _event_publish(payload: bytes, t: int) -> tuple[int, int]:
    """``ts.event`` and ``ts.publish`` of any width, ``t`` at the first digit of ``event``."""
    comma = payload.find(b",", t)
    p = comma + len(b',"publish":')
    return int(payload[t:comma]), int(payload[p : payload.find(b",", p)])


# --- latency histograms ------------------------------------------------------------------------


class Histogram:
    """Latency histogram with 1.024 µs buckets, weighted samples, exact maximum."""

    __slots__ = ("buckets", "max_ns")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.max_ns = 0

    def add(self, latency_ns: int, weight: int = 1) -> None:
        key = latency_ns >> BUCKET_SHIFT
        self.buckets[key] = self.buckets.get(key, 0) + weight
        if latency_ns > self.max_ns:
            self.max_ns = latency_ns

    def percentiles(self) -> dict[str, float | None]:
        return percentiles(self.buckets, self.max_ns)


def percentiles(hist: dict[int, int], max_ns: int) -> dict[str, float | None]:
    """Weighted percentiles (ms) from the histogram; each value is its bucket's upper edge."""
    total = sum(hist.values())
    if total == 0:
        return {"p50": None, "p99": None, "p999": None, "max": None}
    out: dict[str, float | None] = {}
    keys = sorted(hist)
    for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999)):
        threshold = q * total
        cumulative = 0
        for key in keys:
            cumulative += hist[key]
            if cumulative >= threshold:
                out[name] = round(min((key + 1) << BUCKET_SHIFT, max_ns) / 1e6, 3)
                break
    out["max"] = round(max_ns / 1e6, 3)
    return out


def cpu_seconds_self() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- driven mode: the fan-out benchmark's cheap counter -----------------------------------------


class Recorder:
    """Counters shared by every connection of this process (one event loop, no locks)."""

    def __init__(self, sample_every: int = 1) -> None:
        self.delivered = 0
        self.frames = 0
        self.heartbeats = 0
        self.acked = 0
        self.recording = False
        self.sample_every = max(1, sample_every)
        self.until_sample = 1
        self.publish = Histogram()
        self.event = Histogram()
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.all_acked: asyncio.Future[None] | None = None
        self.target = 0

    @property
    def publish_hist(self) -> dict[int, int]:
        return self.publish.buckets

    def on_ack(self) -> None:
        self.acked += 1
        if self.acked >= self.target and self.all_acked is not None and not self.all_acked.done():
            self.all_acked.set_result(None)


class ConnectionState:
    """One driven client: what it received and the first ``seq``/``epoch`` it saw."""

    __slots__ = ("decoded", "duplicates", "epoch", "first_seq", "open", "received", "recorder")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.received = 0
        self.first_seq = 0
        self.epoch: str | None = None
        self.open = False
        #: a tracker for the (rare) fully decoded frames: duplicates and holes they reveal
        self.decoded = SeqTracker()
        self.duplicates = 0

    def on_payload(self, payload: bytes) -> None:
        """Account one text frame (module docstring: counted per frame, not parsed)."""
        kind = payload[9]
        if kind == _UPDATE:
            count = 1
        elif kind == _BATCH and _STATUS_MARK not in payload:
            count = payload.count(_SEQ)
        elif kind == _HEARTBEAT:
            self.recorder.heartbeats += 1
            return
        else:
            self._decode_fully(payload)
            return
        if self.epoch is None:
            self._first_data(payload)
        self.received += count
        rec = self.recorder
        rec.delivered += count
        rec.frames += 1
        if rec.recording:
            rec.until_sample -= 1
            if rec.until_sample == 0:
                rec.until_sample = rec.sample_every
                now = time.time_ns()
                t = payload.find(_EVENT, 40) + 8
                try:  # 19-digit nanosecond clocks: fixed offsets, no search
                    event_ns = int(payload[t : t + _TS_DIGITS])
                    publish_ns = int(payload[t + _PUBLISH_AFTER_EVENT : t + _PUBLISH_END])
                except ValueError:
                    event_ns, publish_ns = _event_publish(payload, t)
                weight = count * rec.sample_every
                rec.publish.add(now - publish_ns, weight)
                rec.event.add(now - event_ns, weight)

    def _first_data(self, payload: bytes) -> None:
        i = payload.find(_SEQ) + 6
        comma = payload.find(b",", i)
        self.first_seq = int(payload[i:comma])
        e = comma + 10  # ,"epoch":"
        self.epoch = payload[e : payload.find(b'"', e)].decode()

    def _decode_fully(self, payload: bytes) -> None:
        rec = self.recorder
        try:
            msg = decode_server(payload)
        except ValueError:
            rec.errors["bad_frame"] += 1
            return
        messages = msg.messages if isinstance(msg, Batch) else (msg,)
        for m in messages:
            if isinstance(m, Update | Snapshot):
                if self.epoch is None:
                    self.first_seq, self.epoch = m.seq, m.epoch
                self.received += 1
                rec.delivered += 1
            elif isinstance(m, Status):
                rec.statuses[m.state.value] += 1
            elif isinstance(m, Ack):
                rec.on_ack()
            elif isinstance(m, Error):
                rec.errors[f"error:{m.code}"] += 1
        rec.frames += 1

    def holds(self, last_seq: int) -> bool:
        """Whether every message up to ``last_seq`` arrived (counted, not parsed)."""
        return self.epoch is not None and self.first_seq + self.received - 1 >= last_seq

    def on_closed(self) -> None:
        if self.open:
            self.open = False
            self.recorder.errors["disconnected"] += 1


def loss(states: Iterable[ConnectionState], last_seq: int) -> dict[str, int]:
    """Exact loss of the driven clients against the publisher's last ``seq`` (no duplicates)."""
    states = list(states)
    seen = [s for s in states if s.epoch is not None]
    head = sum(max(0, s.first_seq - 1) for s in seen)
    after_first = sum(max(0, last_seq - s.first_seq + 1 - s.received) for s in seen)
    never = last_seq * (len(states) - len(seen))
    return {
        "lost": head + after_first + never,
        "lost_head": head,
        "lost_after_first": after_first,
        "lost_never_received": never,
        "received": sum(s.received for s in states),
        "surplus": sum(max(0, s.received - (last_seq - s.first_seq + 1)) for s in seen),
    }


# --- standalone mode: every message checked ----------------------------------------------------


class DataSeen(NamedTuple):
    """One data message as a client saw it."""

    channel: str
    kind: str  # "update" or "snapshot"
    seq: int
    publish_ns: int
    replay: bool  # part of a resume replay (old ``ts``: not a live latency)
    size: int  # its share of the frame's bytes


class Problem(NamedTuple):
    """Something a client must count as a failure: loss, duplicates, errors."""

    channel: str
    what: str  # gap, gap_announced, duplicate, epoch_change, not_recovered, error, unexpected
    detail: str
    amount: int = 1


@dataclass(slots=True)
class ChannelCount:
    """One connection's view of one channel."""

    lossless: bool
    tracker: SeqTracker = field(default_factory=SeqTracker)
    first_seq: int = 0
    replay_left: int = 0
    conflated: int = 0
    announced_lost: int = 0
    not_recovered: int = 0

    @property
    def lost(self) -> int:
        """Messages this connection missed after its first one (lossless channels only)."""
        return self.tracker.missing + self.announced_lost if self.lossless else 0


class FrameResult(NamedTuple):
    data: list[DataSeen]
    problems: list[Problem]
    replies: list[dict[str, Any]]  # acks, errors and pongs, as decoded JSON


class StreamAccount:
    """One WebSocket client's bookkeeping over its channels, frame by frame (full parse).

    Pure: frames in, results out, no I/O; the standalone generator and the Locust user share it.
    Loss counts from the first ``seq`` seen per channel and only on ordered-lossless channels; a
    lossless channel's position (``resume()``) lets a reconnecting client resume without loss.
    """

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels: dict[str, ChannelCount] = {
            name: ChannelCount(delivery_of(name) is DeliveryClass.ORDERED_LOSSLESS)
            for name in dict.fromkeys(channels)
        }
        self.statuses: Counter[str] = Counter()
        self.heartbeats = 0

    def resume(self) -> dict[str, ResumePosition]:
        """Positions of the lossless channels that have received something."""
        return {
            name: ResumePosition(c.tracker.epoch, c.tracker.last_seq)
            for name, c in self.channels.items()
            if c.lossless and c.tracker.epoch is not None
        }

    def subscribe(self, request_id: int | str, *, resume: bool = True) -> bytes:
        """The subscribe request for every channel (with resume positions when asked)."""
        positions = self.resume() if resume else {}
        return encode_client(Subscribe(request_id, tuple(self.channels), positions))

    def on_frame(self, frame: bytes | str) -> FrameResult:
        result = FrameResult([], [], [])
        try:
            obj = orjson.loads(frame)
            messages = obj["messages"] if obj.get("type") == "batch" else [obj]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            result.problems.append(Problem("", "error", f"bad frame: {exc}"))
            return result
        size = len(frame) // max(1, len(messages))
        for m in messages:
            kind = m.get("type")
            if kind in ("update", "snapshot"):
                self._data(m, kind, size, result)
            elif kind == "status":
                self._status(m, result)
            elif kind == "heartbeat":
                self.heartbeats += 1
            elif kind in ("ack", "error", "pong"):
                result.replies.append(m)
                if kind == "ack":
                    self._ack(m, result)
                elif kind == "error":
                    result.problems.append(
                        Problem(
                            m.get("channel") or "", "error", f"{m.get('code')}: {m.get('message')}"
                        )
                    )
            else:
                result.problems.append(Problem("", "error", f"unknown message type {kind!r}"))
        return result

    def _data(self, m: dict[str, Any], kind: str, size: int, result: FrameResult) -> None:
        name, seq, epoch = m["channel"], m["seq"], m["epoch"]
        count = self.channels.get(name)
        if count is None:
            result.problems.append(Problem(name, "unexpected", "a channel not subscribed"))
            return
        replay = count.replay_left > 0
        if replay:
            count.replay_left -= 1
        tracker = count.tracker
        if tracker.epoch is None:
            count.first_seq = seq
        changes, duplicates = tracker.epoch_changes, tracker.duplicates
        skipped = tracker.observe(epoch, seq)
        if count.lossless:
            if skipped:
                result.problems.append(
                    Problem(name, "gap", f"{skipped} lost before seq {seq}", skipped)
                )
            if tracker.duplicates > duplicates:
                result.problems.append(Problem(name, "duplicate", f"seq {seq} again"))
            if tracker.epoch_changes > changes:
                result.problems.append(Problem(name, "epoch_change", f"now epoch {epoch}"))
        else:
            count.conflated += skipped
        result.data.append(DataSeen(name, kind, seq, m["ts"]["publish"], replay, size))

    def _status(self, m: dict[str, Any], result: FrameResult) -> None:
        state, name = m.get("state", ""), m.get("channel", "")
        self.statuses[state] += 1
        count = self.channels.get(name)
        if count is None:
            return
        if state == "gap":
            lost = int(m.get("count") or 0)
            count.announced_lost += lost
            result.problems.append(Problem(name, "gap_announced", str(m.get("reason")), lost))
            # the announced range is counted here, not again as a jump in seq
            if m.get("epoch") == count.tracker.epoch and m.get("to_seq"):
                count.tracker.last_seq = max(count.tracker.last_seq, int(m["to_seq"]))
        elif state == "not_recovered":
            count.not_recovered += 1
            count.replay_left = 0
            result.problems.append(Problem(name, "not_recovered", str(m.get("reason"))))
        elif state == "conflated":
            count.conflated += int(m.get("count") or 0)

    def _ack(self, m: dict[str, Any], result: FrameResult) -> None:
        for name, recovery in (m.get("recovery") or {}).items():
            count = self.channels.get(name)
            if count is not None and recovery.get("recovered"):
                count.replay_left = int(recovery.get("replayed") or 0)

    def totals(self) -> dict[str, int]:
        counts = self.channels.values()
        return {
            "received": sum(c.tracker.received for c in counts),
            "lost": sum(c.lost for c in counts),
            "duplicates": sum(c.tracker.duplicates for c in counts if c.lossless),
            "epoch_changes": sum(c.tracker.epoch_changes for c in counts),
            "conflated": sum(c.conflated for c in counts),
            "not_recovered": sum(c.not_recovered for c in counts),
        }


class CheckedConnection:
    """A standalone client: a ``StreamAccount`` plus the process-wide counters."""

    __slots__ = ("account", "acked", "open", "run")

    def __init__(self, run: StandaloneRun, channels: Iterable[str]) -> None:
        self.run = run
        self.account = StreamAccount(channels)
        self.open = False
        self.acked = False

    def on_payload(self, payload: bytes) -> None:
        run = self.run
        now = time.time_ns()
        result = self.account.on_frame(payload)
        run.frames += 1
        live = [d for d in result.data if not d.replay and d.kind == "update"]
        run.delivered += len(result.data)
        if live and run.recording:
            run.latency.add(now - live[0].publish_ns, len(live))
        for problem in result.problems:
            run.problems[problem.what] += problem.amount
        for reply in result.replies:
            if reply.get("type") == "ack" and not self.acked:
                self.acked = True
                run.on_ack()

    def on_closed(self) -> None:
        if self.open:
            self.open = False
            self.run.problems["disconnected"] += 1


class StandaloneRun:
    """The counters of a standalone run (one event loop, no locks)."""

    def __init__(self, connections: int) -> None:
        self.delivered = 0
        self.frames = 0
        self.recording = False
        self.latency = Histogram()
        self.problems: Counter[str] = Counter()
        self.acked = 0
        self.target = connections
        self.all_acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ack(self) -> None:
        self.acked += 1
        if self.acked >= self.target and not self.all_acked.done():
            self.all_acked.set_result(None)


# --- client libraries ---------------------------------------------------------------------------


class Sink(Protocol):
    open: bool

    def on_payload(self, payload: bytes) -> None: ...

    def on_closed(self) -> None: ...


Connector = Callable[[str, Sink, bytes], Awaitable[Any]]


async def connect_picows(url: str, state: Sink, subscribe: bytes) -> Any:
    from picows import WSListener, WSMsgType, ws_connect

    text, close = WSMsgType.TEXT, WSMsgType.CLOSE

    class Listener(WSListener):
        def on_ws_connected(self, transport: Any) -> None:
            state.open = True
            transport.send(text, subscribe)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == text:
                state.on_payload(frame.get_payload_as_bytes())
            elif frame.msg_type == close:
                state.on_closed()
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            state.on_closed()

    transport, _ = await ws_connect(Listener, url, max_frame_size=1 << 30)
    return transport


async def connect_websockets(url: str, state: Sink, subscribe: bytes) -> Any:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(url, compression=None, max_size=None, ping_interval=None, max_queue=64)
    state.open = True
    await ws.send(subscribe.decode())

    async def read() -> None:
        try:
            while True:
                state.on_payload(await ws.recv(decode=False))
        except ConnectionClosed:
            state.on_closed()

    return ws, asyncio.create_task(read())


async def connect_aiohttp(url: str, state: Sink, subscribe: bytes) -> Any:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    ws = await session.ws_connect(url, autoping=False, max_msg_size=0, compress=0)
    state.open = True
    await ws.send_str(subscribe.decode())

    async def read() -> None:
        text = aiohttp.WSMsgType.TEXT
        while True:
            msg = await ws.receive()
            if msg.type == text:
                state.on_payload(msg.data.encode())
            else:
                state.on_closed()
                return

    return session, ws, asyncio.create_task(read())


CONNECTORS: dict[str, Connector] = {
    "picows": connect_picows,
    "websockets": connect_websockets,
    "aiohttp": connect_aiohttp,
}


async def open_all(
    url: str,
    sinks: list[Any],
    subscribes: list[bytes],
    connector: Connector,
    errors: Counter[str],
) -> list[Any]:
    """Connect every sink (``CONNECT_CONCURRENCY`` handshakes in flight); failures are counted."""
    handles: list[Any] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(sink: Any, subscribe: bytes) -> None:
        async with gate:
            try:
                handles.append(await connector(url, sink, subscribe))
            except Exception as exc:  # a refused or failed handshake is a result, not a crash
                errors[f"connect:{type(exc).__name__}"] += 1

    await asyncio.gather(*(one(s, sub) for s, sub in zip(sinks, subscribes, strict=True)))
    return handles


# --- driven mode (loadtest.fanout) ----------------------------------------------------------


async def open_connections(
    url: str, count: int, channel: str, connector: Connector, recorder: Recorder
) -> tuple[list[ConnectionState], list[Any]]:
    states = [ConnectionState(recorder) for _ in range(count)]
    subscribes = [encode_client(Subscribe(i, (channel,))) for i in range(count)]
    handles = await open_all(url, states, subscribes, connector, recorder.errors)
    return states, handles


async def drain(
    states: list[ConnectionState], recorder: Recorder, last_seq: int, cap_s: float
) -> None:
    """Wait until every open client holds ``last_seq``, or deliveries stop for ``QUIET_S``.

    At max rate the kernel's socket buffers hold seconds of data; losses are counted only after
    what is in flight has arrived (or has visibly stopped arriving), bounded by ``cap_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap_s
    seen, changed = -1, loop.time()
    while (now := loop.time()) < deadline:
        if all(s.holds(last_seq) for s in states if s.open):
            return
        if recorder.delivered != seen:
            seen, changed = recorder.delivered, now
        elif now - changed > QUIET_S:
            return
        await asyncio.sleep(0.02)


async def run_driven(
    url: str, count: int, library: str, channel: str, drain_s: float, sample_every: int
) -> None:
    recorder = Recorder(sample_every)
    recorder.target = count
    recorder.all_acked = asyncio.get_running_loop().create_future()
    commands = await stdin_lines()
    started = time.monotonic()
    states, _handles = await open_connections(url, count, channel, CONNECTORS[library], recorder)
    try:
        await asyncio.wait_for(asyncio.shield(recorder.all_acked), 60)
    except TimeoutError:
        recorder.errors["subscribe_timeout"] += 1
    emit(
        "subscribed",
        connections=sum(s.open for s in states),
        acked=recorder.acked,
        seconds=round(time.monotonic() - started, 3),
        errors=dict(recorder.errors),
    )
    marks: dict[str, tuple[float, int, int, float]] = {}
    while line := await commands.readline():
        command, *rest = line.decode().split()
        if command in ("mark", "end"):
            recorder.recording = command == "mark"
            marks[command] = (
                time.monotonic(),
                recorder.delivered,
                recorder.frames,
                cpu_seconds_self(),
            )
            emit(command + "ed")
        elif command == "drain":
            last_seq = int(rest[0])
            await drain(states, recorder, last_seq, drain_s)
            (t0, d0, f0, c0), (t1, d1, f1, c1) = marks["mark"], marks["end"]
            window = t1 - t0
            emit(
                "report",
                library=library,
                connections=count,
                open=sum(s.open for s in states),
                window_s=round(window, 3),
                delivered=d1 - d0,
                frames=f1 - f0,
                delivered_per_s=round((d1 - d0) / window, 1),
                messages_per_frame=round((d1 - d0) / max(1, f1 - f0), 2),
                cpu_pct=round(100 * (c1 - c0) / window, 1),
                latency_sample_every=recorder.sample_every,
                last_seq=last_seq,
                **loss(states, last_seq),
                latency_publish_ms=recorder.publish.percentiles(),
                latency_event_ms=recorder.event.percentiles(),
                heartbeats=recorder.heartbeats,
                statuses=dict(recorder.statuses),
                errors=dict(recorder.errors),
            )
        elif command == "exit":
            break
    for state in states:
        state.open = False  # closing now is not an error


# --- standalone mode ------------------------------------------------------------------------


async def run_standalone(
    url: str,
    channels: list[str],
    count: int,
    duration_s: float,
    library: str,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    """Connect ``count`` clients, subscribe each to ``channels``, measure for ``duration_s``."""
    run = StandaloneRun(count)
    connections = [CheckedConnection(run, channels) for _ in range(count)]
    subscribes = [c.account.subscribe(i + 1) for i, c in enumerate(connections)]
    started = time.monotonic()
    handles = await open_all(url, connections, subscribes, CONNECTORS[library], run.problems)
    try:
        await asyncio.wait_for(asyncio.shield(run.all_acked), 60)
    except TimeoutError:
        run.problems["subscribe_timeout"] += 1
    connect_s = time.monotonic() - started
    await asyncio.sleep(warmup_s)
    run.recording = True
    t0, d0, f0, c0 = time.monotonic(), run.delivered, run.frames, cpu_seconds_self()
    await asyncio.sleep(duration_s)
    t1, d1, f1, c1 = time.monotonic(), run.delivered, run.frames, cpu_seconds_self()
    run.recording = False
    for connection in connections:
        connection.open = False  # closing now is not an error
    await close_handles(handles)
    window = t1 - t0
    cpu_pct = round(100 * (c1 - c0) / window, 1)
    totals: Counter[str] = Counter()
    for connection in connections:
        totals.update(connection.account.totals())
    per_channel = {
        name: {
            "received": sum(c.account.channels[name].tracker.received for c in connections),
            "lost": sum(c.account.channels[name].lost for c in connections),
            "conflated": sum(c.account.channels[name].conflated for c in connections),
            "delivery": delivery_of(name).value,
        }
        for name in dict.fromkeys(channels)
    }
    return {
        "url": url,
        "channels": list(dict.fromkeys(channels)),
        "library": library,
        "connections": count,
        "subscribed": run.acked,
        "connect_s": round(connect_s, 3),
        "window_s": round(window, 3),
        "delivered": d1 - d0,
        "delivered_per_s": round((d1 - d0) / window, 1),
        "frames": f1 - f0,
        "messages_per_frame": round((d1 - d0) / max(1, f1 - f0), 2),
        **dict(totals),
        "latency_publish_ms": run.latency.percentiles(),
        "problems": dict(run.problems),
        "generator_cpu_pct": cpu_pct,
        "generator_bound": cpu_pct > GENERATOR_BOUND_PCT,
        "per_channel": per_channel,
    }


async def close_handles(handles: list[Any]) -> None:
    for handle in handles:
        parts = handle if isinstance(handle, tuple) else (handle,)
        for part in parts:
            if isinstance(part, asyncio.Task):
                part.cancel()
            elif hasattr(part, "disconnect"):
                part.disconnect()  # picows
            elif hasattr(part, "close"):
                result = part.close()
                if asyncio.iscoroutine(result):
                    with contextlib.suppress(TimeoutError, OSError):
                        await asyncio.wait_for(result, 1.0)


def standalone_table(result: dict[str, Any]) -> str:
    lat = result["latency_publish_ms"]

    def ms(key: str) -> str:
        return "-" if lat.get(key) is None else f"{lat[key]:.2f}"

    head = ("channel", "delivery", "received", "lost", "conflated")
    rows = [
        (name, c["delivery"], f"{c['received']:,}", str(c["lost"]), str(c["conflated"]))
        for name, c in result["per_channel"].items()
    ]
    bound = " GENERATOR-BOUND: figures describe this process" if result["generator_bound"] else ""
    lines = [
        aligned(head, rows),
        f"connections {result['subscribed']}/{result['connections']} subscribed"
        f" in {result['connect_s']} s; window {result['window_s']} s",
        f"delivered {result['delivered_per_s']:,.0f} msgs/s ({result['messages_per_frame']}"
        f" per frame); lost {result['lost']}, duplicates {result['duplicates']},"
        f" epoch changes {result['epoch_changes']}",
        f"latency publish -> receipt (per frame, upper bound): p50 {ms('p50')} ms,"
        f" p99 {ms('p99')} ms, p99.9 {ms('p999')} ms, max {ms('max')} ms",
        f"problems {result['problems'] or 'none'}",
        f"generator CPU {result['generator_cpu_pct']}% of one core{bound}",
    ]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="WebSocket load generator: standalone with --duration, else driven on stdin"
    )
    parser.add_argument("--url", required=True, help="hub WebSocket URL, ws://HOST:8600/")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--library", choices=sorted(CONNECTORS), default="picows")
    parser.add_argument("--channels", default=None, help="standalone: comma-separated channels")
    parser.add_argument("--channel", default="trades.SIM", help="driven: the one channel")
    parser.add_argument("--duration", type=float, default=None, help="standalone: seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="standalone: seconds before")
    parser.add_argument("--out", type=Path, default=None, help="standalone: JSON file")
    parser.add_argument("--drain-s", type=float, default=30.0, help="longest end-of-run drain")
    parser.add_argument(
        "--sample-every", type=int, default=1, help="driven: one latency sample per N frames"
    )
    parser.add_argument("--core", type=int, default=None)
    args = parser.parse_args(argv)
    pin_to_core(args.core)
    raise_fd_limit()
    install_uvloop()
    if args.duration is None:
        asyncio.run(
            run_driven(
                args.url,
                args.connections,
                args.library,
                args.channel,
                args.drain_s,
                args.sample_every,
            )
        )
        return 0
    channels = [c.strip() for c in (args.channels or args.channel).split(",") if c.strip()]
    started = dt.datetime.now(dt.UTC)
    result = asyncio.run(
        run_standalone(
            args.url, channels, args.connections, args.duration, args.library, args.warmup
        )
    )
    print(standalone_table(result))
    document = {"started": started.isoformat(), "machine": machine(), "pid": os.getpid(), **result}
    path = write_results("generator", document, started, args.out)
    print(f"JSON: {path}", file=sys.stderr)
    return 0 if result["subscribed"] == args.connections and not result["problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The load generator: N WebSocket clients in one process, counting every delivered message.

    python -m loadtest.generator --url ws://127.0.0.1:PORT/ --connections 1000 --core 1

What is parsed (at 2M deliveries/s one core cannot ``json.loads`` every ~200-byte message):

* Every text frame is classified by its ``"type"`` (the 10th byte of the orjson layout).
* An ``update`` frame holds one message; a ``batch`` frame holds ``bytes.count(b'"seq":')``
  messages (our payload has no ``seq`` key; a status' ``from_seq`` does not match ``"seq":``).
  Only the first and last ``seq`` and the first ``epoch`` are parsed: within one ordered-lossless
  channel a batch is in order, so ``SeqTracker.observe_run(epoch, first, last, count)`` counts
  losses exactly (a hole inside a batch shows up as ``last - first + 1 > count``).
* A frame that carries a ``status`` (gap, lagging, ...) or any other control message is decoded in
  full with ``protocol.codec.decode_server`` (rare by construction).
* Latency: one sample per frame, from the frame's *first* (oldest) message's ``ts.publish`` and
  ``ts.event`` to ``time.time_ns()`` on receipt, weighted by the frame's message count. Newer
  messages in the same frame waited less, so the percentiles are upper bounds. Samples go to a
  histogram with 1.024 µs buckets (``ns >> 10``); the maximum is exact.
* Loss is exact: per connection, messages skipped inside the run, plus ``first_seq - 1`` (the
  publisher starts after every client is subscribed, so every client must see seq 1), plus the
  shortfall against the publisher's final ``seq`` after a drain at the end.

Driven by ``loadtest.fanout`` on stdin (``mark``, ``end``, ``drain <last_seq>``, ``exit``);
answers JSON lines on stdout (``subscribed``, ``marked``, ``ended``, ``report``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from loadtest.process import emit, install_uvloop, pin_to_core, raise_fd_limit, stdin_lines
from protocol.codec import decode_server, encode_client
from protocol.messages import Ack, Batch, Error, Snapshot, Status, Subscribe, Update
from protocol.sequence import SeqTracker

#: Histogram bucket width: ``latency_ns >> BUCKET_SHIFT`` (1.024 µs).
BUCKET_SHIFT = 10
#: The end-of-run drain gives up once no delivery arrived for this long (seconds).
QUIET_S = 2.0
#: Handshakes in flight at once while connecting.
CONNECT_CONCURRENCY = 100

_UPDATE = ord("u")
_BATCH = ord("b")
_HEARTBEAT = ord("h")
_STATUS_MARK = b'"type":"status"'


class Recorder:
    """Counters shared by every connection of this process (one event loop, no locks)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.frames = 0
        self.heartbeats = 0
        self.acked = 0
        self.recording = False
        self.publish_hist: dict[int, int] = {}
        self.event_hist: dict[int, int] = {}
        self.max_publish_ns = 0
        self.max_event_ns = 0
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.all_acked: asyncio.Future[None] | None = None
        self.target = 0

    def on_ack(self) -> None:
        self.acked += 1
        if self.acked >= self.target and self.all_acked is not None and not self.all_acked.done():
            self.all_acked.set_result(None)


class ConnectionState:
    """One client's view: its seq tracker and what it saw first."""

    __slots__ = ("first_seq", "open", "recorder", "tracker")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.tracker = SeqTracker()
        self.first_seq = 0
        self.open = False

    def on_payload(self, payload: bytes) -> None:
        """Account one text frame (see the module docstring for what is parsed)."""
        kind = payload[9]
        if kind == _UPDATE:
            count = 1
        elif kind == _BATCH and _STATUS_MARK not in payload:
            count = payload.count(b'"seq":')
        elif kind == _HEARTBEAT:
            self.recorder.heartbeats += 1
            return
        else:
            self._decode_fully(payload)
            return
        i = payload.find(b'"seq":') + 6
        comma = payload.find(b",", i)
        first = int(payload[i:comma])
        e = comma + 10  # ,"epoch":"
        epoch = payload[e : payload.find(b'"', e)].decode()
        if count == 1:
            last = first
        else:
            j = payload.rfind(b'"seq":') + 6
            last = int(payload[j : payload.find(b",", j)])
        tracker = self.tracker
        if tracker.epoch is None:
            self.first_seq = first
        tracker.observe_run(epoch, first, last, count)
        rec = self.recorder
        rec.delivered += count
        rec.frames += 1
        if rec.recording:
            now = time.time_ns()
            t = payload.find(b'"event":', e) + 8
            comma = payload.find(b",", t)
            event_ns = int(payload[t:comma])
            t = comma + 11  # ,"publish":
            publish_ns = int(payload[t : payload.find(b",", t)])
            lat = now - publish_ns
            key = lat >> BUCKET_SHIFT
            rec.publish_hist[key] = rec.publish_hist.get(key, 0) + count
            rec.max_publish_ns = max(rec.max_publish_ns, lat)
            lat = now - event_ns
            key = lat >> BUCKET_SHIFT
            rec.event_hist[key] = rec.event_hist.get(key, 0) + count
            rec.max_event_ns = max(rec.max_event_ns, lat)

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
                if self.tracker.epoch is None:
                    self.first_seq = m.seq
                self.tracker.observe(m.epoch, m.seq)
                rec.delivered += 1
            elif isinstance(m, Status):
                rec.statuses[m.state.value] += 1
            elif isinstance(m, Ack):
                rec.on_ack()
            elif isinstance(m, Error):
                rec.errors[f"error:{m.code}"] += 1
        rec.frames += 1

    def on_closed(self) -> None:
        if self.open:
            self.open = False
            self.recorder.errors["disconnected"] += 1


# --- client libraries ---------------------------------------------------------------------------

Connector = Callable[[str, ConnectionState, bytes], Awaitable[Any]]


async def connect_picows(url: str, state: ConnectionState, subscribe: bytes) -> Any:
    from picows import WSListener, WSMsgType, ws_connect

    text, close = WSMsgType.TEXT, WSMsgType.CLOSE

    class Listener(WSListener):  # type: ignore[misc]
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


async def connect_websockets(url: str, state: ConnectionState, subscribe: bytes) -> Any:
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


async def connect_aiohttp(url: str, state: ConnectionState, subscribe: bytes) -> Any:
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


# --- percentiles --------------------------------------------------------------------------------


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


# --- the process --------------------------------------------------------------------------------


async def open_connections(
    url: str, count: int, channel: str, connector: Connector, recorder: Recorder
) -> tuple[list[ConnectionState], list[Any]]:
    states = [ConnectionState(recorder) for _ in range(count)]
    handles: list[Any] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int, state: ConnectionState) -> None:
        subscribe = encode_client(Subscribe(i, (channel,)))
        async with gate:
            try:
                handles.append(await connector(url, state, subscribe))
            except Exception as exc:  # a refused or failed handshake is a result, not a crash
                recorder.errors[f"connect:{type(exc).__name__}"] += 1

    await asyncio.gather(*(one(i, s) for i, s in enumerate(states)))
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
        if all(s.tracker.last_seq >= last_seq for s in states if s.open):
            return
        if recorder.delivered != seen:
            seen, changed = recorder.delivered, now
        elif now - changed > QUIET_S:
            return
        await asyncio.sleep(0.02)


def loss(states: list[ConnectionState], last_seq: int) -> dict[str, int]:
    inside = sum(s.tracker.missing for s in states)
    head = sum(max(0, s.first_seq - 1) for s in states if s.tracker.epoch is not None)
    tail = sum(max(0, last_seq - s.tracker.last_seq) for s in states)
    return {
        "lost": inside + head + tail,
        "lost_inside": inside,
        "lost_head": head,
        "lost_tail": tail,
        "duplicates": sum(s.tracker.duplicates for s in states),
        "received": sum(s.tracker.received for s in states),
    }


async def run(url: str, count: int, library: str, channel: str, drain_s: float) -> None:
    recorder = Recorder()
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
    marks: dict[str, tuple[float, int, int]] = {}
    while line := await commands.readline():
        command, *rest = line.decode().split()
        if command in ("mark", "end"):
            recorder.recording = command == "mark"
            marks[command] = (time.monotonic(), recorder.delivered, recorder.frames)
            emit(command + "ed")
        elif command == "drain":
            last_seq = int(rest[0])
            await drain(states, recorder, last_seq, drain_s)
            (t0, d0, f0), (t1, d1, f1) = marks["mark"], marks["end"]
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
                last_seq=last_seq,
                **loss(states, last_seq),
                latency_publish_ms=percentiles(recorder.publish_hist, recorder.max_publish_ns),
                latency_event_ms=percentiles(recorder.event_hist, recorder.max_event_ns),
                heartbeats=recorder.heartbeats,
                statuses=dict(recorder.statuses),
                errors=dict(recorder.errors),
            )
        elif command == "exit":
            break
    for state in states:
        state.open = False  # closing now is not an error


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket fan-out load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--library", choices=sorted(CONNECTORS), default="picows")
    parser.add_argument("--channel", default="trades.SIM")
    parser.add_argument("--drain-s", type=float, default=30.0, help="longest end-of-run drain")
    parser.add_argument("--core", type=int, default=None)
    args = parser.parse_args()
    pin_to_core(args.core)
    raise_fd_limit()
    install_uvloop()
    asyncio.run(run(args.url, args.connections, args.library, args.channel, args.drain_s))


if __name__ == "__main__":
    main()

"""One client connection (its session, socket and congested-socket backlog) and the slow-consumer
policy that fills and drains that backlog (protocol/README.md, "Delivery classes")."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from websockets.frames import Opcode
from websockets.protocol import State

from protocol.messages import StatusState
from realtime.hub.config import LosslessOverflow
from realtime.hub.framing import batch_payloads, status

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from realtime.hub.channels import ChannelState
    from realtime.hub.config import HubConfig
    from realtime.hub.metrics import HubStats
    from realtime.hub.session import Session

_FIN_TEXT = 0x80 | Opcode.TEXT.value
_TEXT_HEADS = [bytes((_FIN_TEXT, size)) for size in range(126)]
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")

#: One fan-out tick of a channel: ``(seq or 0 for a status, encoded message)`` in order.
Parts = list[tuple[int, bytes]]


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked server text frame (RFC 6455 §5.2: FIN + opcode 1, then the payload
    length in 7, 7+16 or 7+64 bits): built once, written to many. The header is packed here,
    not by ``websockets.frames.Frame.serialize`` (its general path costs ~20x as much)."""
    size = len(payload)
    if size < 126:
        head = _TEXT_HEADS[size]
    elif size < 1 << 16:
        head = _HEAD_16.pack(_FIN_TEXT, 126, size)
    else:
        head = _HEAD_64.pack(_FIN_TEXT, 127, size)
    return head + payload


class Frames:
    """Encoded messages framed once for many connections: their payloads (``batch_payloads``)
    and, on first use, the complete raw frames for connections without extensions."""

    __slots__ = ("_raw", "payloads")

    def __init__(self, messages: list[bytes], max_batch_bytes: int) -> None:
        self.payloads = batch_payloads(messages, max_batch_bytes)
        self._raw: list[bytes] | None = None

    @property
    def raw(self) -> list[bytes]:
        if self._raw is None:
            self._raw = [text_frame(p) for p in self.payloads]
        return self._raw

    def write_to(self, conn: ClientConnection) -> int:
        """Write every frame to ``conn`` now; the bytes handed to its socket (0: not open)."""
        if conn.protocol.state is not State.OPEN:
            return 0
        if not conn.raw_frames:
            return sum(conn.write(payload) for payload in self.payloads)
        transport, sent = conn.transport, 0
        for frame in self.raw:
            transport.write(frame)
            sent += len(frame)
        return sent


class ClientConnection:
    """Hub-side state of one WebSocket client.

    ``session`` decides what to answer to its requests (``session.py``). While the socket keeps
    up, data goes straight to the transport. Once its write buffer passes the slow threshold the
    connection is *slow* (``SlowConsumers``): ordered-lossless messages queue in ``backlog``
    (bounded), latest-value messages keep only the newest per channel in ``latest`` and count
    what they replaced in ``conflated``. Both drain when the socket does; ``held`` is their size
    in bytes (the hub's share of what the connection queues; the socket holds the rest).
    """

    __slots__ = (
        "backlog",
        "conflated",
        "gaps",
        "held",
        "id",
        "latest",
        "protocol",
        "raw_frames",
        "session",
        "slow",
        "tick",
        "transport",
        "ws",
    )

    def __init__(self, conn_id: int, ws: ServerConnection, session: Session, raw: bool) -> None:
        self.id = conn_id
        self.ws = ws
        self.transport = ws.transport  # cached: read on every write of the hot path
        self.protocol = ws.protocol  # (sans-I/O state: open, closing, closed)
        self.session = session
        #: Whether prebuilt frames may be written to the transport (no extension negotiated).
        self.raw_frames = raw
        self.slow = False
        self.backlog: deque[tuple[ChannelState, int, bytes]] = deque()
        self.latest: dict[ChannelState, bytes] = {}
        self.conflated: dict[ChannelState, int] = {}
        self.gaps: dict[ChannelState, tuple[int, int]] = {}
        #: Bytes of ``backlog`` and ``latest`` together.
        self.held = 0
        #: Channels with data for this connection in the current fan-out tick.
        self.tick: list[ChannelState] = []

    @property
    def open(self) -> bool:
        return self.protocol.state is State.OPEN

    @property
    def write_buffer_size(self) -> int:
        return int(self.transport.get_write_buffer_size())

    @property
    def pending(self) -> int:
        return len(self.backlog) + len(self.latest)

    @property
    def queued_bytes(self) -> int:
        """What this connection holds unsent: its socket's write buffer and the hub's backlog."""
        return self.write_buffer_size + self.held

    def forget_queued(self) -> None:
        """Drop everything the hub holds for this connection (it is closed)."""
        self.backlog.clear()
        self.latest.clear()
        self.held = 0

    def write(self, payload: bytes, frame: bytes | None = None) -> int:
        """Write one text frame now, ahead of any backlog. Returns bytes handed to the socket."""
        if self.protocol.state is not State.OPEN:
            return 0
        if self.raw_frames:
            data = frame if frame is not None else text_frame(payload)
            self.transport.write(data)
            return len(data)
        self.protocol.send_text(payload)
        self.ws.send_data()
        return len(payload)

    def attach(self, channels: Iterable[ChannelState]) -> None:
        """Receive the live messages of ``channels`` from the next fan-out tick on."""
        for ch in channels:
            ch.subscribers.add(self)

    def detach(self, channels: Iterable[ChannelState]) -> None:
        """Receive nothing more of ``channels``, and forget what is still queued of them."""
        dropped = set(channels)
        for ch in dropped:
            ch.subscribers.discard(self)
            self.latest.pop(ch, None)
            self.conflated.pop(ch, None)
            self.gaps.pop(ch, None)
        if dropped and self.backlog:
            kept = [item for item in self.backlog if item[0] not in dropped]
            self.backlog.clear()
            self.backlog.extend(kept)
        if dropped:
            backlog = sum(len(p) for _, _, p in self.backlog)
            self.held = backlog + sum(map(len, self.latest.values()))


class SlowConsumers:
    """The connections whose socket fell behind, and the policy that serves them.

    A connection whose write buffer passes ``slow_write_buffer_bytes`` is told ``lagging`` once
    per channel and then queued for, not written to: latest-value channels are conflated to their
    newest message, ordered-lossless ones kept in order up to ``max_pending_messages``; past that
    the ``lossless_overflow`` policy disconnects it (4008) or drops the backlog and names the hole
    in a ``gap`` status. ``drain`` empties the queue one bounded frame at a time once the buffer
    is down to a quarter of the threshold (hysteresis, so a connection does not flap). The hub
    owns the timer that calls ``service``.

    Across all of them, ``outbound_budget_bytes`` bounds what they hold together (socket buffers
    plus backlogs): each ``service`` poll that finds the sum over the budget returns the largest
    connections, biggest first, until the rest fit; the hub drops them (``over_budget``).
    A client of latest-value channels only holds one message per channel in the hub and is
    rarely among them; an ordered-lossless backlog is what grows.
    """

    __slots__ = ("_config", "_stats", "connections", "queued_bytes")

    def __init__(self, config: HubConfig, stats: HubStats) -> None:
        self._config = config
        self._stats = stats
        self.connections: set[ClientConnection] = set()
        #: bytes the slow connections held at the last ``service`` poll (after any drop)
        self.queued_bytes = 0

    def __len__(self) -> int:
        return len(self.connections)

    def discard(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def enqueue(
        self, conn: ClientConnection, channels: list[ChannelState], tick: dict[ChannelState, Parts]
    ) -> bool:
        """Queue ``conn``'s share of one fan-out tick instead of writing it. ``False``: the
        ordered-lossless backlog overflowed under the disconnect policy; close with 4008."""
        if not conn.slow:
            conn.slow = True
            self.connections.add(conn)
            for ch in channels:  # told once, behind what the socket already holds
                conn.write(status(ch.name, StatusState.LAGGING))
        held = conn.held
        for ch in channels:
            parts = tick[ch]
            if ch.lossless:
                conn.backlog.extend((ch, seq, p) for seq, p in parts)
                held += sum(len(p) for _, p in parts)
            else:
                previous = conn.latest.get(ch)
                replaced = len(parts) - 1 + (previous is not None)
                newest = conn.latest[ch] = parts[-1][1]
                held += len(newest) - (0 if previous is None else len(previous))
                if replaced:
                    conn.conflated[ch] = conn.conflated.get(ch, 0) + replaced
                    self._stats.conflated += replaced
        conn.held = held
        if len(conn.backlog) > self._config.max_pending_messages:
            return self._overflow(conn)
        return True

    def _overflow(self, conn: ClientConnection) -> bool:
        if self._config.lossless_overflow is LosslessOverflow.DISCONNECT:
            self._stats.slow_disconnects += 1
            return False
        for ch, seq, _ in conn.backlog:
            if seq == 0:
                continue
            first, _last = conn.gaps.get(ch, (seq, seq))
            conn.gaps[ch] = (first, seq)
            self._stats.gap_dropped += 1
        conn.backlog.clear()
        conn.held = sum(map(len, conn.latest.values()))
        return True

    def service(self) -> list[ClientConnection]:
        """One poll: forget closed connections, drain those whose socket has room again.
        Returns the connections to drop because together they hold more than
        ``outbound_budget_bytes`` (``over_budget``); they are no longer tracked here."""
        low_water = self._config.slow_write_buffer_bytes // 4
        for conn in list(self.connections):
            if not conn.open:
                self.connections.discard(conn)
            elif conn.write_buffer_size <= low_water:
                self.drain(conn)
        return self.over_budget()

    def over_budget(self) -> list[ClientConnection]:
        """The largest slow connections, biggest first, whose dropping brings what all of them
        queue (``ClientConnection.queued_bytes``) back within ``outbound_budget_bytes``."""
        budget = self._config.outbound_budget_bytes
        sized = [(conn.queued_bytes, conn.id, conn) for conn in self.connections]
        total = sum(size for size, _, _ in sized)
        victims: list[ClientConnection] = []
        if budget and total > budget:
            sized.sort(key=lambda item: (-item[0], item[1]))
            for size, _, conn in sized:
                if total <= budget:
                    break
                victims.append(conn)
                self.connections.discard(conn)
                total -= size
            self._stats.budget_disconnects += len(victims)
        self.queued_bytes = total
        return victims

    def drain(self, conn: ClientConnection) -> None:
        """Write a congested connection's backlog, one bounded frame per poll: first what was
        lost (``gap``) and conflated (``conflated``), then the newest values, then the backlog."""
        stats = self._stats
        parts: list[bytes] = []
        for ch, (first, last) in conn.gaps.items():
            parts.append(
                status(
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
            parts.append(status(ch.name, StatusState.CONFLATED, count=count))
        conn.conflated.clear()
        parts.extend(conn.latest.values())
        conn.held -= sum(map(len, conn.latest.values()))
        conn.latest.clear()
        budget = self._config.max_batch_bytes
        size = sum(map(len, parts))
        backlog = conn.backlog
        while backlog and (not parts or size + len(backlog[0][2]) <= budget):
            part = backlog.popleft()[2]
            parts.append(part)
            size += len(part)
            conn.held -= len(part)
        frames = batch_payloads(parts, budget) if parts else []
        for payload in frames:
            stats.bytes_sent += conn.write(payload)
        stats.deliveries += len(parts)
        stats.frames_sent += len(frames)
        if not backlog:
            conn.slow = False
            self.connections.discard(conn)

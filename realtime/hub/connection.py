"""One client connection: its subscriptions, inbound rate limit and congested-socket backlog."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from realtime.hub.auth import Grant

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from realtime.hub.channels import ChannelState


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked server text frame (RFC 6455 §5.2): built once, written to many."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


class TokenBucket:
    """Inbound request budget: ``rate`` per second, bursts up to ``2 * rate``."""

    __slots__ = ("_capacity", "_last_ns", "_rate", "_tokens")

    def __init__(self, rate: int, now_ns: int) -> None:
        self._rate = float(rate)
        self._capacity = float(2 * rate)
        self._tokens = self._capacity
        self._last_ns = now_ns

    def take(self, now_ns: int) -> bool:
        elapsed = max(0, now_ns - self._last_ns) / 1e9
        self._last_ns = now_ns
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ClientConnection:
    """Hub-side state of one WebSocket client.

    While the socket keeps up, data goes straight to the transport. Once its write buffer passes
    the slow threshold the connection is *slow*: ordered-lossless messages queue in ``backlog``
    (bounded), latest-value messages keep only the newest per channel in ``latest`` and count what
    they replaced in ``conflated``. Both drain when the socket does.
    """

    __slots__ = (
        "backlog",
        "conflated",
        "gaps",
        "grant",
        "id",
        "latest",
        "rate",
        "raw_frames",
        "slow",
        "strikes",
        "subscriptions",
        "tick",
        "transport",
        "ws",
    )

    def __init__(
        self, conn_id: int, ws: ServerConnection, grant: Grant, rate: TokenBucket, raw: bool
    ) -> None:
        self.id = conn_id
        self.ws = ws
        self.transport = ws.transport  # cached: read on every write of the hot path
        self.grant = grant
        self.rate = rate
        #: Whether prebuilt frames may be written to the transport (no extension negotiated).
        self.raw_frames = raw
        self.subscriptions: set[ChannelState] = set()
        self.slow = False
        self.strikes = 0
        self.backlog: deque[tuple[ChannelState, int, bytes]] = deque()
        self.latest: dict[ChannelState, bytes] = {}
        self.conflated: dict[ChannelState, int] = {}
        self.gaps: dict[ChannelState, tuple[int, int]] = {}
        #: Channels with data for this connection in the current fan-out tick.
        self.tick: list[ChannelState] = []

    @property
    def open(self) -> bool:
        return self.ws.protocol.state is State.OPEN

    @property
    def write_buffer_size(self) -> int:
        return int(self.transport.get_write_buffer_size())

    @property
    def pending(self) -> int:
        return len(self.backlog) + len(self.latest)

    def write(self, payload: bytes, frame: bytes | None = None) -> int:
        """Write one text frame now, ahead of any backlog. Returns bytes handed to the socket."""
        if self.ws.protocol.state is not State.OPEN:
            return 0
        if self.raw_frames:
            data = frame if frame is not None else text_frame(payload)
            self.transport.write(data)
            return len(data)
        self.ws.protocol.send_text(payload)
        self.ws.send_data()
        return len(payload)

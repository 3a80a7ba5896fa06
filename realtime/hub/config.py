"""Hub configuration: one frozen object, every limit explicit (README "Configuration")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.messages import Limits


class LosslessOverflow(StrEnum):
    """What happens when a slow client's ordered-lossless backlog exceeds its bound."""

    DISCONNECT = "disconnect"  # close with 4008 slow_consumer; the client resumes on reconnect
    GAP = "gap"  # drop the backlog, send a ``gap`` status naming the seq range; client resumes


@dataclass(frozen=True, slots=True)
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 8600
    #: Largest inbound frame; a larger one closes the connection with 1009.
    max_frame_bytes: int = 64 * 1024
    max_subscriptions: int = 1_000
    max_channels_per_request: int = 200
    #: Inbound requests per second per connection (token bucket, burst = 2x).
    max_messages_per_second: int = 50
    #: Rate-limited requests tolerated in a row before closing with 4029.
    rate_limit_strikes: int = 100
    #: Backlog bound per connection while its socket is congested.
    max_pending_messages: int = 10_000
    #: Socket write buffer above which a connection counts as slow (bytes).
    slow_write_buffer_bytes: int = 4 * 1024 * 1024
    lossless_overflow: LosslessOverflow = LosslessOverflow.DISCONNECT
    #: Messages kept per channel for resume.
    history_size: int = 10_000
    heartbeat_interval_s: float = 5.0
    #: A channel silent this long is announced ``stale`` (0 disables).
    stale_after_s: float = 30.0
    #: Bytes per frame when draining a backlog (keeps one write bounded).
    max_batch_bytes: int = 1024 * 1024
    compression: bool = False
    #: HMAC secret for signed channel tokens; ``None`` disables auth (embedded default).
    auth_secret: str | None = None
    drain_timeout_s: float = 5.0

    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_subscriptions=self.max_subscriptions,
            max_channels_per_request=self.max_channels_per_request,
            max_messages_per_second=self.max_messages_per_second,
            max_pending_messages=self.max_pending_messages,
        )

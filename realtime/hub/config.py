"""Hub configuration: one frozen object, every limit explicit (README "Configuration").

Read from ``NAUTILUS_HUB_<FIELD>`` by ``realtime.config.load_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from protocol.messages import Limits
from realtime.config import described


class LosslessOverflow(StrEnum):
    """What happens when a slow client's ordered-lossless backlog exceeds its bound."""

    DISCONNECT = "disconnect"  # close with 4008 slow_consumer; the client resumes on reconnect
    GAP = "gap"  # drop the backlog, send a ``gap`` status naming the seq range; client resumes


@dataclass(frozen=True, slots=True)
class HubConfig:
    host: str = field(default="127.0.0.1", metadata=described("interface the hub binds"))
    port: int = field(default=8600, metadata=described("WebSocket + HTTP port (0 = any free port)"))
    max_frame_bytes: int = field(
        default=64 * 1024, metadata=described("largest inbound frame; larger closes with 1009")
    )
    max_subscriptions: int = field(default=1_000, metadata=described("channels per connection"))
    max_channels_per_request: int = field(default=200, metadata=described("channels per subscribe"))
    max_messages_per_second: int = field(
        default=50, metadata=described("inbound requests/s per connection (burst 2x)")
    )
    rate_limit_strikes: int = field(
        default=100, metadata=described("rate-limited requests in a row before closing with 4029")
    )
    max_pending_messages: int = field(
        default=10_000, metadata=described("backlog bound per congested connection (messages)")
    )
    slow_write_buffer_bytes: int = field(
        default=4 * 1024 * 1024, metadata=described("socket write buffer that marks a client slow")
    )
    outbound_budget_bytes: int = field(
        default=256 * 1024 * 1024,
        metadata=described(
            "bytes queued for all slow clients together (socket buffers + backlogs); past it "
            "the largest are closed with 4008 (0 = no global budget)"
        ),
    )
    lossless_overflow: LosslessOverflow = field(
        default=LosslessOverflow.DISCONNECT,
        metadata=described(
            "slow ordered-lossless client: disconnect (4008) or gap (status + drop)"
        ),
    )
    implicit_channels: bool = field(
        default=False,
        metadata=described(
            "accept any well-formed channel before its first message (distributed hubs: "
            "channels published by other processes are not declared to this one)"
        ),
    )
    max_channels: int = field(
        default=100_000,
        metadata=described(
            "channels the hub holds at most; past it a client cannot create implicit ones"
        ),
    )
    channel_idle_s: float = field(
        default=300.0,
        metadata=described(
            "an implicit channel never published and without subscribers for this long is "
            "forgotten (0 = never)"
        ),
    )
    max_list_channels: int = field(
        default=1_000, metadata=described("channels one 'list' reply names at most (by name)")
    )
    max_connections: int = field(
        default=10_000,
        metadata=described("open WebSocket connections; past it upgrades get HTTP 503"),
    )
    history_size: int = field(
        default=10_000, metadata=described("messages kept per channel for resume")
    )
    history_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata=described("bytes of encoded messages kept per channel for resume (oldest go)"),
    )
    history_total_bytes: int = field(
        default=128 * 1024 * 1024,
        metadata=described(
            "bytes kept for resume across all channels (the busiest channels give way first)"
        ),
    )
    max_replay_messages: int = field(
        default=10_000,
        metadata=described(
            "messages one subscribe may replay (its resumed channels together); a resume "
            "needing more is not_recovered, reason replay_limit"
        ),
    )
    max_replay_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=described("bytes one subscribe may replay (as max_replay_messages)"),
    )
    replay_messages_per_second: int = field(
        default=10_000,
        metadata=described(
            "replay budget of one connection, messages/s (burst max_replay_messages)"
        ),
    )
    replay_bytes_per_second: int = field(
        default=8 * 1024 * 1024,
        metadata=described("replay budget of one connection, bytes/s (burst max_replay_bytes)"),
    )
    history_read_timeout_s: float = field(
        default=2.0,
        metadata=described(
            "bound on reading the bus's history for a resume the ring cannot answer"
        ),
    )
    heartbeat_interval_s: float = field(
        default=5.0, metadata=described("heartbeat period, seconds")
    )
    stale_after_s: float = field(
        default=30.0, metadata=described("silence before a channel is announced stale (0 = never)")
    )
    coalesce_after_s: float = field(
        default=0.002,
        metadata=described("a fan-out tick longer than this spaces the next one (gathers more)"),
    )
    coalesce_max_s: float = field(
        default=0.005, metadata=described("longest wait between two fan-out ticks (0 = never wait)")
    )
    coalesce_busy_share: float = field(
        default=0.9,
        metadata=described(
            "ticks are spaced only while the process's CPU share (one core = 1) is at or above this"
        ),
    )
    max_batch_bytes: int = field(
        default=1024 * 1024,
        metadata=described("largest batch frame (a single larger message goes alone)"),
    )
    compression: bool = field(default=False, metadata=described("permessage-deflate (off: CPU)"))
    auth_secret: str | None = field(
        default=None,
        metadata=described("HS256 secret (>= 32 bytes) for channel tokens; unset = open"),
    )
    drain_timeout_s: float = field(default=5.0, metadata=described("shutdown drain bound, seconds"))

    def __post_init__(self) -> None:
        if self.coalesce_after_s < 0 or self.coalesce_max_s < 0:
            raise ValueError("coalesce_after_s and coalesce_max_s must be >= 0")
        if not 0 <= self.coalesce_busy_share <= 1:
            raise ValueError(
                f"coalesce_busy_share must be in [0, 1], got {self.coalesce_busy_share}"
            )

    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_subscriptions=self.max_subscriptions,
            max_channels_per_request=self.max_channels_per_request,
            max_messages_per_second=self.max_messages_per_second,
            max_pending_messages=self.max_pending_messages,
        )

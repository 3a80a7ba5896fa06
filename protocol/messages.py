"""Typed messages of protocol v1. Client operations first, then server messages.

All are frozen dataclasses; ``protocol.codec`` turns them into bytes and back. Timestamps are
integer nanoseconds since the Unix epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypeAlias

RequestId: TypeAlias = int | str

# --- client → server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumePosition:
    """The last message a client holds on a channel: resume delivers everything after it."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: RequestId
    channels: tuple[str, ...]
    resume: Mapping[str, ResumePosition] = field(default_factory=dict)
    snapshot: bool = True


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: RequestId
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListChannels:
    """One page of the channels the hub carries: names after ``after`` (a cursor: the previous
    page's ``next``), at most ``limit`` (the hub caps it at its ``max_list_channels``)."""

    id: RequestId
    after: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId


ClientMessage: TypeAlias = Subscribe | Unsubscribe | ListChannels | Ping

# --- server → client --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timestamps:
    """Stage times of one data message, ns: market event, engine publish, hub send."""

    event: int
    publish: int
    hub: int


@dataclass(frozen=True, slots=True)
class Update:
    channel: str
    seq: int
    epoch: str
    ts: Timestamps
    data: Any


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Current state of a latest-value channel, sent first on subscribe."""

    channel: str
    seq: int
    epoch: str
    ts: Timestamps
    data: Any


class StatusState(StrEnum):
    LAGGING = "lagging"
    CONFLATED = "conflated"
    GAP = "gap"
    STALE = "stale"
    LIVE = "live"
    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"


@dataclass(frozen=True, slots=True)
class Status:
    """A per-channel condition the client must know about (protocol/README.md, "Status")."""

    channel: str
    state: StatusState
    count: int | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    epoch: str | None = None
    reason: str | None = None


DataMessage: TypeAlias = Update | Snapshot | Status


@dataclass(frozen=True, slots=True)
class Batch:
    """Several messages in one frame, in order. Clients unpack it exactly like separate frames."""

    messages: tuple[DataMessage, ...]


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits in force for a connection, announced in every subscribe ack."""

    max_frame_bytes: int
    max_subscriptions: int
    max_channels_per_request: int
    max_messages_per_second: int
    max_pending_messages: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """Answer to a resume request for one channel."""

    recovered: bool
    replayed: int
    epoch: str
    seq: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    name: str
    delivery: str
    epoch: str
    seq: int
    subscribers: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Reply to a request: echoes ``id`` and ``op``; ``channels`` is the effective subscription set.

    ``limits`` and ``recovery`` come with subscribe, ``available`` with list, and ``next`` with
    a list page that has more after it (the ``after`` of the next page).
    """

    id: RequestId
    op: Literal["subscribe", "unsubscribe", "list"]
    channels: tuple[str, ...]
    limits: Limits | None = None
    recovery: Mapping[str, Recovery] | None = None
    available: tuple[ChannelInfo, ...] | None = None
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Error:
    id: RequestId | None
    code: str
    message: str
    field: str | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    id: RequestId
    ts: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ts: int


ServerMessage: TypeAlias = Ack | Error | Pong | Heartbeat | Update | Snapshot | Status | Batch

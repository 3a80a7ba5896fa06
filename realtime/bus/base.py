"""The bus interface every implementation satisfies.

The bus, not the hub, numbers messages: ``publish`` assigns the channel's next ``seq`` within the
bus's ``epoch`` atomically with delivery. That keeps numbering consistent for every consumer, and
with a shared bus (Redis) for every hub, so a client can resume on any hub.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


class BusClosed(Exception):
    """Raised by ``publish`` after ``close``; ends every open subscription."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One published message as every consumer sees it.

    ``payload`` is a JSON-serialisable value, or an ``orjson.Fragment`` of encoded JSON.
    ``event_ns`` is the market-event time, ``publish_ns`` when the bus accepted it.
    """

    channel: str
    seq: int
    epoch: str
    event_ns: int
    publish_ns: int
    payload: Any


class Subscription(Protocol):
    """Messages on channels matching one pattern, in publish order per channel."""

    pattern: str

    def __aiter__(self) -> AsyncIterator[Envelope]: ...

    async def next_batch(self, max_items: int = 1024) -> list[Envelope]:
        """Wait for at least one message; return up to ``max_items`` that are ready.

        Returns an empty list once the subscription or the bus is closed.
        """
        ...

    @property
    def pending(self) -> int:
        """Messages delivered to this subscriber and not yet taken (its backlog)."""
        ...

    @property
    def dropped(self) -> int:
        """Messages this subscriber lost to its bounded buffer (a slow consumer)."""
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, channel: str, payload: Any, *, event_ns: int | None = None) -> Envelope:
        """Number and deliver one message; ``event_ns`` defaults to the publish time."""
        ...

    def subscribe(self, pattern: str) -> Subscription:
        """Subscribe to channels matching a NATS-style pattern (``trades.*``, ``bars.>``, ``>``)."""
        ...

    async def close(self) -> None: ...

"""The bus interface every implementation satisfies.

The bus, not the hub, numbers messages: ``publish`` assigns the channel's next ``seq`` within the
bus's ``epoch`` atomically with delivery. That keeps numbering consistent for every consumer, and
with a shared bus (Redis) for every hub, so a client can resume on any hub.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class BusClosed(Exception):
    """Raised by ``publish`` after ``close``; ends every open subscription."""


class BusUnavailable(Exception):
    """The bus's server cannot be reached (at start, or longer than the publish retry bound)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"bus unavailable at {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(slots=True)
class Envelope:
    """One published message as every consumer sees it. Treat it as immutable: it is shared by
    every subscriber. (Not ``frozen``: a frozen dataclass costs ~1.1 µs to build against ~0.2 µs,
    and one is built per published message.)

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

    async def wait_ready(self, limit_s: float = 5.0) -> None:
        """Return once the subscription receives (a Redis subscription needs its confirmation)."""
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, channel: str, payload: Any, *, event_ns: int | None = None) -> Envelope:
        """Number and deliver one message; ``event_ns`` defaults to the publish time."""
        ...

    def publish_nowait(self, channel: str, payload: Any, *, event_ns: int | None = None) -> object:
        """Queue one message without waiting (loop-thread hot paths: replays, simulators).

        In-process it is delivered at once; over Redis it is numbered when the server runs it.
        """
        ...

    def publish_many(self, channel: str, payloads: Sequence[Any], event_ns: Sequence[int]) -> None:
        """``publish_nowait`` of consecutive messages on one channel, in order."""
        ...

    def subscribe(self, pattern: str, *, payload_fragments: bool = False) -> Subscription:
        """Subscribe to channels matching a NATS-style pattern (``trades.*``, ``bars.>``, ``>``).

        ``payload_fragments=True`` asks for payloads as ``orjson.Fragment`` of the encoded JSON
        where the bus carries them encoded (Redis), so a forwarder (the hub) never re-encodes.
        """
        ...

    async def history(
        self, channel: str, after_seq: int, limit: int, *, payload_fragments: bool = False
    ) -> tuple[str, list[Envelope]]:
        """The channel's current epoch and its stored messages with ``seq > after_seq``, in order,
        at most ``limit``; ``""`` for a channel the bus has no record of.

        Fewer than asked, or a hole in ``seq``, where the history was trimmed or an entry was
        unreadable: the caller checks contiguity (a hub resuming a client, issue 5). A bus that
        keeps no history returns its epoch and ``[]``. Raises ``BusUnavailable`` when the bus's
        server cannot answer. ``payload_fragments`` as in ``subscribe``.
        """
        ...

    async def close(self) -> None: ...

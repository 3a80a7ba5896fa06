"""In-process bus for embedded mode: zero-copy delivery into bounded per-subscriber buffers.

Not thread-safe: publish from the event-loop thread (compute done in an executor hands its result
back to the loop before publishing).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from protocol.channels import ChannelPattern
from realtime.bus.base import BusClosed, Envelope
from realtime.bus.inbox import Inbox
from realtime.clock import Clock, SystemClock

DEFAULT_MAX_PENDING = 1_000_000


class MemorySubscription(Inbox):
    def __init__(
        self, pattern: str, max_pending: int, on_close: Callable[[MemorySubscription], None]
    ):
        super().__init__(max_pending)
        self.pattern = pattern
        self.matcher = ChannelPattern.parse(pattern)
        self._on_close = on_close

    async def wait_ready(self, limit_s: float = 5.0) -> None:
        """In-process subscriptions receive from the moment they exist."""

    def close(self) -> None:
        if self._end():
            self._on_close(self)


class MemoryBus:
    """The embedded bus. ``epoch`` is fixed for the life of the instance."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        epoch: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._clock = clock or SystemClock()
        self.epoch = epoch or secrets.token_hex(4)
        self._max_pending = max_pending
        self._seq: dict[str, int] = {}
        self._subs: list[MemorySubscription] = []
        # channel -> subscriptions whose pattern matches it, rebuilt when subscriptions change
        self._routes: dict[str, list[MemorySubscription]] = {}
        self._closed = False

    def last_seq(self, channel: str) -> int:
        return self._seq.get(channel, 0)

    def publish_nowait(
        self, channel: str, payload: Any, *, event_ns: int | None = None
    ) -> Envelope:
        """Synchronous publish for loop-thread producers on the hot path (replays, simulators)."""
        if self._closed:
            raise BusClosed("bus is closed")
        seq = self._seq.get(channel, 0) + 1
        self._seq[channel] = seq
        now = self._clock.now_ns()
        envelope = Envelope(
            channel, seq, self.epoch, now if event_ns is None else event_ns, now, payload
        )
        routes = self._routes.get(channel)
        if routes is None:
            routes = self._routes[channel] = [s for s in self._subs if s.matcher.matches(channel)]
        for sub in routes:
            sub.offer(envelope)
        return envelope

    async def publish(self, channel: str, payload: Any, *, event_ns: int | None = None) -> Envelope:
        return self.publish_nowait(channel, payload, event_ns=event_ns)

    def publish_many(self, channel: str, payloads: Sequence[Any], event_ns: Sequence[int]) -> None:
        """``publish_nowait`` of consecutive messages on one channel, with one route lookup and
        one wake-up per subscriber (replays publish thousands per loop turn)."""
        if self._closed:
            raise BusClosed("bus is closed")
        first = self._seq.get(channel, 0) + 1
        self._seq[channel] = first + len(payloads) - 1
        now, epoch = self._clock.now_ns(), self.epoch
        envelopes = [
            Envelope(channel, seq, epoch, when, now, payload)
            for seq, payload, when in zip(
                range(first, first + len(payloads)), payloads, event_ns, strict=True
            )
        ]
        routes = self._routes.get(channel)
        if routes is None:
            routes = self._routes[channel] = [s for s in self._subs if s.matcher.matches(channel)]
        for sub in routes:
            sub.offer_many(envelopes)

    def subscribe(
        self, pattern: str, *, max_pending: int | None = None, payload_fragments: bool = False
    ) -> MemorySubscription:
        """``payload_fragments`` is accepted for the interface; payloads here are never encoded."""
        if self._closed:
            raise BusClosed("bus is closed")
        sub = MemorySubscription(pattern, max_pending or self._max_pending, self._remove)
        self._subs.append(sub)
        self._routes.clear()
        return sub

    async def history(
        self, channel: str, after_seq: int, limit: int, *, payload_fragments: bool = False
    ) -> tuple[str, list[Envelope]]:
        """The epoch and no messages: this bus keeps no history (in embedded mode the hub's own
        ring, fed from the moment the hub subscribes, is the history)."""
        return self.epoch, []

    def _remove(self, sub: MemorySubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.close()

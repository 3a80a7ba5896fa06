"""In-process bus for embedded mode: zero-copy delivery into bounded per-subscriber buffers.

Not thread-safe: publish from the event-loop thread (compute done in an executor hands its result
back to the loop before publishing).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from protocol.channels import ChannelPattern
from realtime.bus.base import BusClosed, Envelope
from realtime.clock import Clock, SystemClock

DEFAULT_MAX_PENDING = 1_000_000


class MemorySubscription:
    def __init__(
        self, pattern: str, max_pending: int, on_close: Callable[[MemorySubscription], None]
    ):
        self.pattern = pattern
        self.matcher = ChannelPattern.parse(pattern)
        self._items: deque[Envelope] = deque()
        self._max_pending = max_pending
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._dropped = 0
        self._on_close = on_close

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> int:
        return len(self._items)

    def offer(self, envelope: Envelope) -> None:
        if len(self._items) >= self._max_pending:
            # Drop the oldest: consumers see the hole in ``seq`` and report it; never silent.
            self._items.popleft()
            self._dropped += 1
        self._items.append(envelope)
        self._wake()

    def offer_many(self, envelopes: list[Envelope]) -> None:
        items = self._items
        items.extend(envelopes)
        overflow = len(items) - self._max_pending
        if overflow > 0:  # drop the oldest, counted, as ``offer`` does
            for _ in range(overflow):
                items.popleft()
            self._dropped += overflow
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_batch(self, max_items: int = 1024) -> list[Envelope]:
        while not self._items:
            if self._closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        count = min(max_items, len(items))
        return [items.popleft() for _ in range(count)]

    async def _iterate(self) -> AsyncIterator[Envelope]:
        while batch := await self.next_batch():
            for envelope in batch:
                yield envelope

    def __aiter__(self) -> AsyncIterator[Envelope]:
        return self._iterate()

    async def wait_ready(self, limit_s: float = 5.0) -> None:
        """In-process subscriptions receive from the moment they exist."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)
            self._wake()


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

    def _remove(self, sub: MemorySubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.close()

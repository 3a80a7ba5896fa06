"""The consumer side every subscription shares: a bounded buffer with one waiting reader.

When the consumer falls behind by ``max_pending`` messages the oldest are dropped and counted:
consumers see the hole in ``seq`` and report it (the hub sends a ``gap``); never silent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from realtime.bus.base import Envelope


class Inbox:
    def __init__(self, max_pending: int) -> None:
        self._items: deque[Envelope] = deque()
        self._max_pending = max_pending
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> int:
        return len(self._items)

    def offer(self, envelope: Envelope) -> None:
        if len(self._items) >= self._max_pending:
            self._items.popleft()
            self._dropped += 1
        self._items.append(envelope)
        self._wake()

    def offer_many(self, envelopes: list[Envelope]) -> None:
        items = self._items
        items.extend(envelopes)
        overflow = len(items) - self._max_pending
        if overflow > 0:
            for _ in range(overflow):
                items.popleft()
            self._dropped += overflow
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> bool:
        """Mark the inbox closed and wake the reader; False if it already was."""
        if self._closed:
            return False
        self._closed = True
        self._wake()
        return True

    async def next_batch(self, max_items: int = 1024) -> list[Envelope]:
        """Wait for at least one message; return up to ``max_items``; [] once closed."""
        while not self._items:
            if self._closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        return [items.popleft() for _ in range(min(max_items, len(items)))]

    async def _iterate(self) -> AsyncIterator[Envelope]:
        while batch := await self.next_batch():
            for envelope in batch:
                yield envelope

    def __aiter__(self) -> AsyncIterator[Envelope]:
        return self._iterate()

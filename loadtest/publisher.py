"""The rate-controlled publisher both servers under test run: ~200-byte trade-like messages.

A token bucket decides how many messages are due at each loop tick (``rate * elapsed`` minus what
was published); they are published in one burst, then the task sleeps one tick. One task in all,
never one per message. ``event_ns`` of message *i* is its *scheduled* time ``start + i / rate``, so
latency measured from ``ts.event`` includes any delay of the publisher itself (no coordinated
omission); ``ts.publish`` is when the bus accepted it.

At max rate (``rate=None``) each tick tops the server's backlog up to ``max_backlog`` and yields:
the server fans out what is pending before the publisher runs again, so publishing can never
starve the fan-out. ``backlog()`` is the server's own count of accepted-but-not-fanned-out
messages (the bus subscription's pending count for the hub, the queue length for the baseline).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

#: Loop tick of a fixed-rate publisher (seconds); uvloop timers have millisecond resolution.
TICK_S = 0.001
#: Distinct prebuilt payloads cycled through (building a dict per message would load the hub core).
PAYLOAD_POOL = 1024

Publish = Callable[[Any, "int | None"], object]


def trade_payloads(count: int = PAYLOAD_POOL) -> list[dict[str, Any]]:
    """Trade prints (price, size, aggressor side, trade id); in an update envelope ~215 bytes."""
    return [
        {
            "price": round(100.0 + (i % 97) * 0.01, 2),
            "size": 100 + (i % 9) * 100,
            "side": "buy" if i % 2 else "sell",
            "id": 1_000_000 + i,
        }
        for i in range(count)
    ]


class RatePublisher:
    """Publishes ``rate`` messages per second (or as fast as the server drains, ``rate=None``)."""

    def __init__(
        self,
        publish: Publish,
        backlog: Callable[[], int],
        payloads: list[dict[str, Any]],
        *,
        rate: int | None,
        max_backlog: int = 256,
    ) -> None:
        self._publish = publish
        self._backlog = backlog
        self._payloads = itertools.cycle(payloads)
        self.rate = rate
        self.max_backlog = max_backlog
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher")

    async def stop(self) -> int:
        """Stop publishing; return how many messages were published (the last ``seq``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.published

    async def _run(self) -> None:
        if self.rate is None:
            await self._run_max()
        else:
            await self._run_fixed(self.rate)

    async def _run_fixed(self, rate: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        start_wall_ns = time.time_ns()
        period_ns = 1e9 / rate
        publish, payloads = self._publish, self._payloads
        while True:
            due = int((loop.time() - start) * rate) + 1 - self.published  # message i due at i/rate
            for _ in range(due):
                publish(next(payloads), start_wall_ns + int(self.published * period_ns))
                self.published += 1
            await asyncio.sleep(TICK_S)

    async def _run_max(self) -> None:
        publish, payloads, backlog = self._publish, self._payloads, self._backlog
        while True:
            room = self.max_backlog - backlog()
            for _ in range(room):
                publish(next(payloads), None)
            if room > 0:
                self.published += room
                await asyncio.sleep(0)
            else:  # the server holds back (congested clients): wait a tick instead of spinning
                await asyncio.sleep(TICK_S)

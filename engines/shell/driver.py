"""Drive an engine's message handling deterministically: recorded input in, its outputs out.

The live engine consumes the bus on one task per input; here the same ``Engine.dispatch`` — the
same decoding, handlers and bad-input rules — is called for each recorded message in the order
given, in one thread, with the engine's ``ManualClock`` set to each message's publish time. What
the engine publishes is collected in order. Same input ⇒ the same outputs as the live run, byte
for byte (DESIGN.md, "Live and backtest are one code path"; the Backtesting engine drives
Strategy, Risk and Portfolio this way).

The engine is not started (no consumer tasks, no producers): call ``await engine.on_start()``
first when its handlers need state it loads there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engines.shell.lifecycle import Engine
from protocol.channels import ChannelPattern
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock


class DeterministicDriver:
    """Feeds recorded envelopes to ``engine`` (built on a ``MemoryBus`` and a ``ManualClock``)."""

    def __init__(self, engine: Engine[Any]) -> None:
        if not isinstance(engine.clock, ManualClock):
            raise TypeError("the driven engine needs a ManualClock (time is the recording's)")
        if not isinstance(engine.bus, MemoryBus):
            raise TypeError("the driven engine needs a MemoryBus (its outputs are collected)")
        self.engine = engine
        self.clock: ManualClock = engine.clock
        self._routes = [
            (ChannelPattern.parse(pattern), pattern, handling)
            for pattern, handling in engine.inputs().items()
        ]

    async def run(self, envelopes: Iterable[Envelope]) -> list[Envelope]:
        """Handle ``envelopes`` in order; return every envelope the engine published."""
        outputs: list[Envelope] = []
        published = self.engine.bus.subscribe(">")
        try:
            for envelope in envelopes:
                for pattern, stream, handling in self._routes:
                    if pattern.matches(envelope.channel):
                        self.clock.set(max(self.clock.now_ns(), envelope.publish_ns))
                        await self.engine.dispatch(envelope, stream, handling)
                        break
                while published.pending:
                    outputs += await published.next_batch(1 << 16)
        finally:
            published.close()
        return outputs

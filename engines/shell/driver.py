"""Drive an engine's message handling deterministically: recorded input in, its outputs out.

The live engine consumes the bus on one task per input; here the same ``Engine.dispatch`` — the
same decoding, handlers and bad-input rules — is called for each recorded message in the order
given, in one thread, with the engine's ``ManualClock`` set to each message's publish time. What
the engine publishes is collected in order. Same input ⇒ the same outputs as the live run, byte
for byte (docs/architecture.md, "Live and backtest are one code path"; Backtesting drives
Strategy, Risk and Portfolio this way).

The engine is not started (no consumer tasks, no producers): call ``await engine.on_start()``
first when its handlers need state it loads there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engines.shell.lifecycle import Engine, Input
from protocol.channels import ChannelPattern
from realtime.bus import Envelope, MemoryBus, Subscription
from realtime.clock import ManualClock


class DeterministicDriver:
    """Feeds recorded envelopes to ``engine`` (built on a ``MemoryBus`` and a ``ManualClock``)."""

    def __init__(self, engine: Engine[Any], *, hold_writes: bool = True) -> None:
        """``hold_writes``: hold the engine's record writes around each ``run`` (as a live
        consumer holds them around each batch). ``False`` when the caller holds
        ``engine.write_hold`` across many runs itself (Backtesting: one write per stream every
        few thousand messages instead of one per message)."""
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
        #: channel → its route (or ``None``: no input takes it), matched once per channel
        self._route_of: dict[str, tuple[str, Input[Any]] | None] = {}
        #: whether the engine has an ``after_batch`` of its own (the base one does nothing)
        self._after_batch = type(engine).after_batch is not Engine.after_batch
        self._published: Subscription | None = None
        self._hold_writes = hold_writes

    def route(self, channel: str) -> tuple[str, Input[Any]] | None:
        """The input (pattern, handling) that takes ``channel``: the first that matches, as the
        live engine's subscriptions would; remembered per channel."""
        try:
            return self._route_of[channel]
        except KeyError:
            found = next(
                ((stream, handling) for pattern, stream, handling in self._routes
                 if pattern.matches(channel)),
                None,
            )  # fmt: skip
            self._route_of[channel] = found
            return found

    async def run(self, envelopes: Iterable[Envelope]) -> list[Envelope]:
        """Handle ``envelopes`` in order as one batch (then the engine's ``after_batch``, as a
        live consumer calls it after each batch; its records written at the end, as live:
        ``Engine.write_hold``); return every envelope the engine published."""
        published = self._published
        if published is None:  # one subscription for the driver's life, not one a call
            published = self._published = self.engine.bus.subscribe(">")
        engine, clock, routes = self.engine, self.clock, self._route_of
        outputs: list[Envelope] = []
        handled = False
        hold = engine.write_hold if self._hold_writes else None
        if hold is not None:
            hold.hold()
        try:
            for envelope in envelopes:
                channel = envelope.channel
                route = routes[channel] if channel in routes else self.route(channel)
                if route is not None:
                    if envelope.publish_ns > clock.now_ns():
                        clock.set(envelope.publish_ns)
                    await engine.dispatch(envelope, *route)
                    handled = True
                while published.pending:
                    outputs += await published.next_batch(1 << 16)
            if handled and self._after_batch:
                await engine.after_batch()
                while published.pending:
                    outputs += await published.next_batch(1 << 16)
        finally:
            if hold is not None:
                hold.release()
        return outputs

    def close(self) -> None:
        """Stop collecting the engine's outputs (the driver is done)."""
        if self._published is not None:
            self._published.close()
            self._published = None

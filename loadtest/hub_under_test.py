"""The hub under test: uvloop + ``Hub`` + ``MemoryBus`` + a rate-controlled publisher, one process.

    python -m loadtest.hub_under_test --rate 1000|max --channel trades.SIM --core 0

Driven by ``loadtest.fanout`` over stdin/stdout (``loadtest.server_process``). Between ``mark``
and ``stop`` it times the hub's own side of every fan-out tick (``TickRecorder``), reported with
``stopped``: where a client's latency is spent before the kernel takes over.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np

from loadtest.publisher import RatePublisher, trade_payloads
from loadtest.server_process import control_loop, parse_rate, prepare_process, server_arguments
from realtime.bus.memory import MemoryBus
from realtime.config import load_settings
from realtime.hub.config import HubConfig
from realtime.hub.server import Hub

#: Connections whose socket write buffer is sampled each publisher tick at max rate.
SAMPLED_CONNECTIONS = 4
#: A sampled write buffer above this counts as congestion: the publisher waits (bytes).
CONGESTED_BUFFER_BYTES = 64 * 1024


def hub_backlog(hub: Hub, bound: int) -> int:
    """Messages accepted but not yet fanned out; ``bound`` (full) while clients are congested.

    Reads private fields of the hub on purpose: the benchmark needs the hub's own view of its
    backlog (bus messages not yet taken, connections marked slow, a few sockets' write buffers,
    all equal under uniform fan-out) so max rate measures what the hub delivers, not how much
    it can queue: without the buffer check, 1,000 sockets × 4 MB of buffered frames turn into
    seconds of latency and no extra throughput.
    """
    if hub._slow:
        return bound
    for conn in itertools.islice(hub._connections, SAMPLED_CONNECTIONS):
        if conn.write_buffer_size > CONGESTED_BUFFER_BYTES:
            return bound
    subscription: Any = hub._subscription
    return int(subscription.pending) if subscription is not None else 0


def percentiles_ms(samples_ns: list[int]) -> dict[str, float] | None:
    """p50/p99/p99.9/max of nanosecond samples, in milliseconds (None without samples)."""
    if not samples_ns:
        return None
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
    return {
        "p50": round(float(p50), 3),
        "p99": round(float(p99), 3),
        "p999": round(float(p999), 3),
        "max": round(float(values.max()), 3),
    }


class TickRecorder:
    """The hub's side of each fan-out tick while recording (from ``mark`` to ``report``).

    Wraps ``Hub._on_batch`` (private, on purpose, like ``hub_backlog``): per tick its wall time
    (bus messages in, every socket written), and per message ``ts.publish`` → the end of its
    tick, i.e. the hub's last socket write for it — everything the hub adds before the kernel
    delivers and the client reads. Two clock reads per tick and one subtraction per message.
    """

    def __init__(self, hub: Hub) -> None:
        self.recording = False
        self.ticks_ns: list[int] = []
        self.publish_to_write_ns: list[int] = []
        self._started = time.monotonic()
        fan_out = hub._on_batch

        def recorded(batch: list[Any]) -> None:
            if not self.recording:
                fan_out(batch)
                return
            started = time.time_ns()
            fan_out(batch)
            ended = time.time_ns()
            self.ticks_ns.append(ended - started)
            self.publish_to_write_ns.extend([ended - env.publish_ns for env in batch])

        hub._on_batch = recorded  # type: ignore[method-assign]

    def mark(self) -> None:
        self.ticks_ns.clear()
        self.publish_to_write_ns.clear()
        self._started = time.monotonic()
        self.recording = True

    def report(self) -> dict[str, Any]:
        self.recording = False
        elapsed = max(1e-9, time.monotonic() - self._started)
        ticks = len(self.ticks_ns)
        messages = len(self.publish_to_write_ns)
        return {
            "hub_publish_to_write_ms": percentiles_ms(self.publish_to_write_ns),
            "hub_tick_ms": percentiles_ms(self.ticks_ns),
            "hub_ticks_per_s": round(ticks / elapsed, 1),
            "hub_messages_per_tick": round(messages / ticks, 2) if ticks else 0,
        }


async def serve(channel: str, rate: int | None, max_backlog: int) -> None:
    bus = MemoryBus()
    # NAUTILUS_HUB_* settings apply (``fanout --hub-env``: A/B runs of the tick spacing)
    hub = Hub(replace(load_settings(HubConfig, os.environ, "NAUTILUS_HUB_"), port=0), bus)
    await hub.start()
    hub.declare([channel])
    publisher = RatePublisher(
        lambda payload, event_ns: bus.publish_nowait(channel, payload, event_ns=event_ns),
        lambda: hub_backlog(hub, max_backlog),
        trade_payloads(),
        rate=rate,
        max_backlog=max_backlog,
    )
    try:
        await control_loop(hub.port, publisher, TickRecorder(hub))
    finally:
        await hub.stop()
        await bus.close()


def main() -> None:
    args = server_arguments("Nautilus hub under load (benchmark child process)").parse_args()
    prepare_process(args.core)
    asyncio.run(serve(args.channel, parse_rate(args.rate), args.max_backlog))


if __name__ == "__main__":
    main()

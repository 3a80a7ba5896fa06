"""The hub under test: uvloop + ``Hub`` + ``MemoryBus`` + a rate-controlled publisher, one process.

    python -m loadtest.hub_under_test --rate 1000|max --channel trades.SIM --core 0

Driven by ``loadtest.fanout`` over stdin/stdout (``loadtest.server_process``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import replace
from typing import Any

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
        await control_loop(hub.port, publisher)
    finally:
        await hub.stop()
        await bus.close()


def main() -> None:
    args = server_arguments("Nautilus hub under load (benchmark child process)").parse_args()
    prepare_process(args.core)
    asyncio.run(serve(args.channel, parse_rate(args.rate), args.max_backlog))


if __name__ == "__main__":
    main()

"""The hub under test: uvloop + ``Hub`` + ``MemoryBus`` + a rate-controlled publisher, one process.

    python -m loadtest.hub_under_test --rate 1000|max --channel trades.SIM --core 0

Driven by ``loadtest.fanout`` over stdin/stdout (``loadtest.server_process``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from loadtest.publisher import RatePublisher, trade_payloads
from loadtest.server_process import control_loop, parse_rate, prepare_process, server_arguments
from realtime.bus.memory import MemoryBus
from realtime.hub.config import HubConfig
from realtime.hub.server import Hub


def hub_backlog(hub: Hub, bound: int) -> int:
    """Messages accepted but not yet fanned out; full while any client is congested.

    Reads two private fields of the hub on purpose: the benchmark needs the hub's own view of its
    backlog (bus messages not yet taken, connections marked slow) to keep max rate honest.
    """
    subscription: Any = hub._subscription
    pending = int(subscription.pending) if subscription is not None else 0
    return bound if hub._slow else pending


async def serve(channel: str, rate: int | None, max_backlog: int) -> None:
    bus = MemoryBus()
    hub = Hub(HubConfig(port=0), bus)
    await hub.start()
    hub.declare([channel])
    symbol = channel.rsplit(".", 1)[-1]
    publisher = RatePublisher(
        lambda payload, event_ns: bus.publish_nowait(channel, payload, event_ns=event_ns),
        lambda: hub_backlog(hub, max_backlog),
        trade_payloads(symbol),
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

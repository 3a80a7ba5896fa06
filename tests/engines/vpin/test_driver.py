"""Live and deterministic are one code path: the same trades through the live bus and through
the ``DeterministicDriver`` give identical VPIN buckets, in the same order (issue 8, item 6)."""

from __future__ import annotations

import asyncio
from typing import Any

from engines.marketdata.records import TradeColumns
from engines.shell.driver import DeterministicDriver
from engines.vpin.service import VpinConfig, VpinEngine
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock, SystemClock
from tests.support import until

START_NS = 1_381_152_600_000_000_000  # 2013-10-07 09:30 New York
END_NS = START_NS + 40 * 60 * 1_000_000_000
CONFIG: dict[str, Any] = {"bucket_volume": 100_000.0, "window": 10, "sigma_seed": 0.01,
                          "warmup_bars": 1024, "warmup_symbols": 0}  # fmt: skip


def recorded(trades: TradeColumns) -> list[Envelope]:
    """The trades as the bus delivered them (as a recording of ``trades.SPY`` would hold)."""
    return [
        Envelope("trades.SPY", i + 1, "e", int(t), int(t), trades.trade(i).to_payload(4))
        for i, t in enumerate(trades.event_ns.tolist())
    ]


async def test_driver_gives_the_live_buckets(spy_day: TradeColumns) -> None:
    window = spy_day.select((spy_day.event_ns >= START_NS) & (spy_day.event_ns < END_NS))
    messages = recorded(window)
    messages.insert(50, Envelope("trades.SPY", 0, "e", START_NS, START_NS, {"s": "SPY"}))

    clock = SystemClock()
    live = VpinEngine(VpinConfig(**CONFIG), bus=MemoryBus(clock=clock), clock=clock)
    outputs = live.bus.subscribe("vpin.*")
    await live.start()
    try:
        for message in messages:
            await live.bus.publish(message.channel, message.payload, event_ns=message.event_ns)
        await until(lambda: live.backlog() == 0 and outputs.pending > 0)
        await asyncio.sleep(0)
        live_out: list[Envelope] = []
        while outputs.pending:
            live_out += await outputs.next_batch(10_000)
    finally:
        await live.stop()

    manual = ManualClock()
    driven = VpinEngine(VpinConfig(**CONFIG), bus=MemoryBus(clock=manual), clock=manual)
    driven_out = await DeterministicDriver(driven).run(messages)

    assert len(live_out) > 20
    assert [(e.channel, e.seq, e.payload) for e in driven_out] == [
        (e.channel, e.seq, e.payload) for e in live_out
    ]
    assert (
        driven.health()["bad_input"]
        == live.health()["bad_input"]
        == {"trades.*": {"missing_field": 1}}
    )

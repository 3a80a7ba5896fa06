"""The hub's /metrics: per-stage latency labelled by stream kind, the end-to-end histogram, the
degraded gauge, and the process's own metrics without ``*_created``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from protocol.channels import STREAM_KINDS
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from realtime.hub import Hub, HubConfig
from realtime.hub.metrics import (
    LATENCY_BUCKETS,
    LATENCY_KINDS,
    Histogram,
    StageLatency,
    latency_kind,
)
from tests.realtime.hub.conftest import client

MS = 1_000_000
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def test_the_kind_label_is_the_stream_kind_or_other() -> None:
    assert latency_kind("trades.SPY") == "trades"
    assert latency_kind("bars.1m.SPY") == "bars"
    assert latency_kind("risk.denials.paper") == "risk.denials"
    assert latency_kind("risk.var.paper") == "risk"
    assert latency_kind("collateral.calls.isda1") == "collateral.calls"
    assert latency_kind("nonsense.SPY") == "other"
    assert set(LATENCY_KINDS) == {*STREAM_KINDS, "other"}
    assert len(LATENCY_KINDS) <= 32  # one histogram series set per value: bounded by the protocol


def test_channels_share_their_kinds_histograms() -> None:
    latency = StageLatency()
    spy, qqq, quote = latency.of("trades.SPY"), latency.of("trades.QQQ"), latency.of("quotes.SPY")
    assert spy is qqq and spy is not quote
    for i in range(100):
        assert latency.of(f"trades.S{i}") is spy
    assert set(latency.by_kind) == {"trades", "quotes"}
    spy.publish_to_hub.observe_ns(2 * MS)
    quote.publish_to_hub.observe_ns(2 * MS)
    quote.publish_to_hub.observe_ns(200 * MS)
    counts = latency.counts("publish_to_hub")
    assert len(counts) == len(LATENCY_BUCKETS) + 1
    assert counts[LATENCY_BUCKETS.index(2.5e-3)] == 2 and counts[LATENCY_BUCKETS.index(0.25)] == 1


def test_observing_a_ticks_values_at_once_equals_one_by_one() -> None:
    # on the bounds, between them, past the last, and negative (two processes' clocks): 0
    values = [-5, 0, 25_000, 25_001, 1_000_000, 3 * MS, 2_000 * MS, 7]
    one_by_one, at_once = Histogram(), Histogram()
    for value in values:
        one_by_one.observe_ns(max(0, value))
    at_once.observe_all_ns(values)
    assert at_once.counts == one_by_one.counts
    assert (
        (at_once.count, at_once.sum_ns)
        == (one_by_one.count, one_by_one.sum_ns)
        == (8, 2_004_050_008)
    )


def test_a_tick_is_observed_once_and_its_samples_start_over() -> None:
    kind = StageLatency().of("trades.SPY")
    kind.to_hub.extend([1 * MS, 3 * MS])
    kind.to_publish.extend([0, 0])
    kind.delivered.append(10 * MS)
    kind.observe_tick(received_ns=20 * MS, sent_ns=21 * MS)
    assert (kind.publish_to_hub.count, kind.receive_to_send.count, kind.event_to_send.count) == (
        2,
        1,
        1,
    )
    assert kind.receive_to_send.sum_ns == 1 * MS and kind.event_to_send.sum_ns == 11 * MS
    assert kind.to_hub == kind.to_publish == kind.delivered == []
    kind.observe_tick(received_ns=30 * MS, sent_ns=30 * MS)  # nothing new: nothing observed
    assert (kind.publish_to_hub.count, kind.event_to_send.count) == (2, 1)


def _samples(hub: Hub) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(generate_latest(hub.registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@asynccontextmanager
async def manual_hub() -> AsyncIterator[tuple[Hub, MemoryBus, ManualClock]]:
    clock = ManualClock(1_700_000_000 * 1_000_000_000)
    bus = MemoryBus(epoch="ep1", clock=clock)
    hub = Hub(HubConfig(port=0, heartbeat_interval_s=30.0), bus, clock=clock)
    await hub.start()
    hub.declare(["trades.SPY", "trades.QQQ", "quotes.SPY"])
    try:
        yield hub, bus, clock
    finally:
        await hub.stop()


async def test_stage_histograms_by_kind_and_end_to_end_is_the_sum_of_the_stages() -> None:
    async with manual_hub() as (hub, bus, clock), client(hub) as c:
        await c.reply("subscribe", channels=["trades.SPY", "trades.QQQ", "quotes.SPY"])
        # each event happened 3 ms before it was published; each waits 1 ms on the bus
        for channel in ("trades.SPY", "trades.QQQ", "trades.SPY", "quotes.SPY"):
            bus.publish_nowait(channel, {"p": 1}, event_ns=clock.now_ns() - 3 * MS)
        bus.publish_nowait("bars.1m.SPY", {"c": 1}, event_ns=clock.now_ns() - 3 * MS)  # no one
        clock.advance(1 * MS)
        await c.messages(4)
        samples = _samples(hub)

    def bucket(histogram: str, kind: str, le: float) -> float:
        return samples[f"{histogram}_bucket"][(("kind", kind), ("le", repr(le)))]

    def count(histogram: str) -> dict[str, float]:
        return {dict(k)["kind"]: v for k, v in samples[f"{histogram}_count"].items()}

    event_to_publish = "nautilus_stage_event_to_publish_seconds"
    publish_to_hub = "nautilus_stage_publish_to_hub_seconds"
    receive_to_send = "nautilus_stage_hub_receive_to_send_seconds"
    end_to_end = "nautilus_stage_event_to_send_seconds"
    # every message received counts in the receiving stages, by its channel's kind
    assert count(event_to_publish) == count(publish_to_hub) == {"trades": 3, "quotes": 1, "bars": 1}
    # only delivered messages count in the sending stages (bars.1m.SPY had no subscriber)
    assert count(receive_to_send) == count(end_to_end) == {"trades": 3, "quotes": 1, "bars": 0}
    # 3 ms lies in (2.5, 5] ms, 1 ms on the bound of the 1 ms bucket; the manual clock did not
    # move during the fan-out, so hub receive → send took 0 and end to end is 3 + 1 + 0 = 4 ms
    assert bucket(event_to_publish, "trades", 2.5e-3) == 0
    assert bucket(event_to_publish, "trades", 5e-3) == 3
    assert bucket(publish_to_hub, "quotes", 1e-3) == 1
    assert bucket(receive_to_send, "trades", 25e-6) == 3
    assert bucket(end_to_end, "trades", 2.5e-3) == 0 and bucket(end_to_end, "trades", 5e-3) == 3
    sums = {dict(k)["kind"]: v for k, v in samples[f"{end_to_end}_sum"].items()}
    assert sums == {"trades": 3 * 4e-3, "quotes": 4e-3, "bars": 0}
    # the per-tick broadcast histogram has no kind: a tick mixes kinds
    assert set(samples["nautilus_hub_broadcast_seconds_count"]) == {()}
    # the status view still sums the kinds
    stages = hub.status_section()["stages"]
    assert stages["publish_to_hub"]["count"] == 5 and stages["receive_to_send"]["count"] == 4


async def test_process_metrics_and_no_created_samples_and_the_degraded_gauge() -> None:
    async with manual_hub() as (hub, bus, _):
        bus.publish_nowait("trades.SPY", {"p": 1})
        samples = _samples(hub)
        assert samples["nautilus_hub_degraded"] == {(): 0.0}
        assert samples["process_resident_memory_bytes"][()] > 0
        assert samples["process_cpu_seconds_total"][()] > 0
        assert samples["process_open_fds"][()] > 0
        assert "python_info" in samples
        assert not [name for name in samples if name.endswith("_created")]

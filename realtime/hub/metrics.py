"""Hub counters kept as plain integers on the hot path and exposed to Prometheus on scrape.

A prometheus_client ``Counter.inc()`` per delivery would cost more than the delivery; instead the
hub bumps ints and a custom collector reads them when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from protocol.errors import ErrorCode
from protocol.sequence import NotRecoveredReason

#: Sub-millisecond resolution where it matters (seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    25e-6,
    50e-6,
    100e-6,
    250e-6,
    500e-6,
    1e-3,
    2.5e-3,
    5e-3,
    10e-3,
    25e-3,
    50e-3,
    100e-3,
    250e-3,
    1.0,
)

#: Help text of the levels ``Hub._gauges`` reports on scrape (``nautilus_hub_<name>``).
GAUGE_HELP: dict[str, str] = {
    "connections": "WebSocket connections open now",
    "slow_connections": "connections served from their backlog (socket buffer over the bound)",
    "channels": "channels the hub knows, declared or seen on the bus",
    "subscriptions": "channel subscriptions over all connections",
    "bus_pending_messages": "bus messages waiting for the hub",
    "outbound_bytes": "bytes waiting in client sockets' write buffers, over all connections",
}


class Histogram:
    """Fixed-bucket histogram in nanoseconds, reported in seconds."""

    __slots__ = ("_bounds_ns", "buckets", "count", "counts", "sum_ns")

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self._bounds_ns = [int(b * 1e9) for b in self.buckets]
        self.counts = [0] * (len(self.buckets) + 1)
        self.count = 0
        self.sum_ns = 0

    def observe_ns(self, value_ns: int) -> None:
        self.counts[bisect_left(self._bounds_ns, value_ns)] += 1
        self.count += 1
        self.sum_ns += value_ns

    def observe_many_ns(self, value_ns: int, times: int) -> None:
        """``times`` observations of one value: every message of a fan-out tick waited as long."""
        self.counts[bisect_left(self._bounds_ns, value_ns)] += times
        self.count += times
        self.sum_ns += value_ns * times

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            cumulative.append((repr(bound) if bound != float("inf") else "+Inf", running))
        return HistogramMetricFamily(
            name, documentation, buckets=cumulative, sum_value=self.sum_ns / 1e9
        )


@dataclass(slots=True)
class HubStats:
    connections_opened: int = 0
    messages_in: int = 0
    foreign_messages: int = 0
    bus_gaps: int = 0
    deliveries: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    conflated: int = 0
    gap_dropped: int = 0
    slow_disconnects: int = 0
    rate_limit_disconnects: int = 0
    auth_denied: int = 0
    tokens_expired: int = 0
    connections_refused: int = 0
    channels_expired: int = 0
    epoch_changes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: resumes the ring could not answer, by how the bus's history answered them
    bus_resumes: Counter[str] = field(default_factory=Counter)
    publish_to_hub: Histogram = field(default_factory=Histogram)
    event_to_publish: Histogram = field(default_factory=Histogram)
    broadcast: Histogram = field(default_factory=Histogram)
    receive_to_send: Histogram = field(default_factory=Histogram)


class HubCollector(Collector):
    def __init__(
        self,
        stats: HubStats,
        gauges: Callable[[], dict[str, float]],
        bus_counters: Callable[[], dict[str, int]],
    ) -> None:
        self._stats = stats
        self._gauges = gauges
        self._bus_counters = bus_counters

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        counters = (
            ("connections_opened", "WebSocket connections accepted", s.connections_opened),
            ("bus_messages", "messages received from the bus", s.messages_in),
            (
                "foreign_messages",
                "bus messages on invalid channel names, skipped",
                s.foreign_messages,
            ),
            ("bus_gap_messages", "messages the bus lost before the hub (seq holes)", s.bus_gaps),
            (
                "messages_sent",
                "messages delivered to clients (batch contents counted)",
                s.deliveries,
            ),
            ("frames_sent", "WebSocket frames written", s.frames_sent),
            ("bytes_sent", "bytes written to client sockets", s.bytes_sent),
            ("slow_consumer_disconnects", "clients closed with 4008", s.slow_disconnects),
            ("rate_limit_disconnects", "clients closed with 4029", s.rate_limit_disconnects),
            ("auth_denied", "handshakes refused by token auth", s.auth_denied),
            ("tokens_expired", "connections closed with 4001 (token expired)", s.tokens_expired),
            (
                "connections_refused",
                "upgrades refused with HTTP 503 or closed with 1013 (max_connections)",
                s.connections_refused,
            ),
            (
                "channels_expired",
                "implicit channels forgotten (never published, unsubscribed past channel_idle_s)",
                s.channels_expired,
            ),
            (
                "epoch_changes",
                "channels whose numbering restarted mid-stream (bus restarted empty)",
                s.epoch_changes,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(f"nautilus_hub_{name}", doc, value=value)
        drops = CounterMetricFamily(
            "nautilus_hub_dropped_messages",
            "messages not delivered to a slow client, by reason",
            labels=["reason"],
        )
        drops.add_metric(["conflated"], s.conflated)
        drops.add_metric(["gap"], s.gap_dropped)
        yield drops
        errors = CounterMetricFamily(
            "nautilus_hub_request_errors", "error replies sent, by code", labels=["code"]
        )
        for code in ErrorCode:  # every code from zero, so rate() sees the first error
            errors.add_metric([code.value], s.errors[code.value])
        yield errors
        resumes = CounterMetricFamily(
            "nautilus_hub_bus_resumes",
            "resumes answered from the bus's history, by outcome",
            labels=["reason"],
        )
        for outcome in ("recovered", *(r.value for r in NotRecoveredReason)):
            resumes.add_metric([outcome], s.bus_resumes[outcome])
        yield resumes
        bus = self._bus_counters()
        skipped = CounterMetricFamily(
            "nautilus_hub_bus_skipped_messages",
            "bus messages the hub's subscription did not pass on, by reason",
            labels=["reason"],
        )
        for reason, key in (
            ("overflow", "dropped"),
            ("invalid", "invalid"),
            ("duplicate", "duplicates"),
        ):
            skipped.add_metric([reason], bus[key])
        yield skipped
        yield CounterMetricFamily(
            "nautilus_hub_bus_recovered_messages",
            "messages read back from the bus's history after a reconnect or a seq hole",
            value=bus["recovered"],
        )
        yield CounterMetricFamily(
            "nautilus_hub_bus_reconnects",
            "reconnects of the hub's bus subscription",
            value=bus["reconnects"],
        )
        for gauge, level in self._gauges().items():
            doc = GAUGE_HELP.get(gauge, gauge.replace("_", " "))
            yield GaugeMetricFamily(f"nautilus_hub_{gauge}", doc, value=level)
        yield s.event_to_publish.family(
            "nautilus_stage_event_to_publish_seconds", "market event to engine publish"
        )
        yield s.publish_to_hub.family(
            "nautilus_stage_publish_to_hub_seconds", "engine publish to hub receive"
        )
        yield s.receive_to_send.family(
            "nautilus_stage_hub_receive_to_send_seconds",
            "hub receive to the last socket write of its fan-out tick, per message",
        )
        yield s.broadcast.family(
            "nautilus_hub_broadcast_seconds", "hub receive to last socket write of one fan-out"
        )


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

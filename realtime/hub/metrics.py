"""Hub counters kept as plain integers on the hot path and exposed to Prometheus on scrape.

A prometheus_client ``Counter.inc()`` per delivery would cost more than the delivery; instead the
hub bumps ints and a custom collector reads them when ``/metrics`` is scraped.

The per-message stage histograms carry a ``kind`` label: the channel's stream kind
(``trades``, ``quotes``, ``bars``, ``vpin``, ``orders``…, ``protocol.channels.STREAM_KINDS``) or
``other``, so trade latency can be told from quote latency. The set is fixed by the protocol,
never by traffic; a kind is exported once the hub has seen a message of it.
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

from protocol.channels import STREAM_KINDS, kind_of
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
    "degraded": "1 while the hub's /health says degraded (bus unreachable or lagging), else 0",
}

#: Values of the ``kind`` label of the per-message stage histograms.
LATENCY_KINDS: tuple[str, ...] = (*STREAM_KINDS, "other")


def latency_kind(channel: str) -> str:
    """The ``kind`` label of ``channel``: its stream kind, or ``other``."""
    kind = kind_of(channel)
    return kind if kind in STREAM_KINDS else "other"


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

    def observe_all_ns(self, values_ns: list[int]) -> None:
        """One observation per value, negatives counted as 0 (clocks of two processes): a fan-out
        tick's messages in one call, without a method call per message."""
        counts, bounds = self.counts, self._bounds_ns
        total = 0
        for value in values_ns:
            if value < 0:
                value = 0
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.count += len(values_ns)
        self.sum_ns += total

    def observe_many_ns(self, value_ns: int, times: int) -> None:
        """``times`` observations of one value: every message of a fan-out tick waited as long."""
        self.counts[bisect_left(self._bounds_ns, value_ns)] += times
        self.count += times
        self.sum_ns += value_ns * times

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, observations ≤ le)`` per bucket, ``+Inf`` last, as Prometheus exposes them."""
        cumulative, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            cumulative.append((repr(bound) if bound != float("inf") else "+Inf", float(running)))
        return cumulative

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            name, documentation, buckets=self.cumulative(), sum_value=self.sum_ns / 1e9
        )


class KindLatency:
    """The per-message stage histograms of one stream kind.

    The hub gathers a fan-out tick's samples in ``to_hub``, ``to_publish`` and ``delivered``
    (a list append per message) and observes them with ``observe_tick``: one call per stage and
    tick instead of a method call and a bucket search per message and stage.
    """

    __slots__ = (
        "delivered",
        "event_to_publish",
        "event_to_send",
        "publish_to_hub",
        "receive_to_send",
        "to_hub",
        "to_publish",
    )

    def __init__(self) -> None:
        self.event_to_publish = Histogram()
        self.publish_to_hub = Histogram()
        self.receive_to_send = Histogram()
        self.event_to_send = Histogram()
        #: this tick's publish → hub receive times, per message received (ns)
        self.to_hub: list[int] = []
        #: this tick's event → publish times, per message received (ns)
        self.to_publish: list[int] = []
        #: event times of the messages this tick delivers (end to end: send time minus these)
        self.delivered: list[int] = []

    def observe_tick(self, received_ns: int, sent_ns: int) -> None:
        """Observe the samples gathered since the last call: received at ``received_ns``, the
        tick's last socket write at ``sent_ns``."""
        if self.to_hub:
            self.publish_to_hub.observe_all_ns(self.to_hub)
            self.event_to_publish.observe_all_ns(self.to_publish)
            self.to_hub.clear()
            self.to_publish.clear()
        delivered = self.delivered
        if delivered:
            self.receive_to_send.observe_many_ns(sent_ns - received_ns, len(delivered))
            self.event_to_send.observe_all_ns([sent_ns - event for event in delivered])
            delivered.clear()


class StageLatency:
    """Stage histograms by ``kind``. The hub asks ``of(channel)`` once per channel and keeps the
    answer on the channel (``ChannelState.latency``): no kind lookup per message."""

    __slots__ = ("by_kind",)

    def __init__(self) -> None:
        self.by_kind: dict[str, KindLatency] = {}

    def of(self, channel: str) -> KindLatency:
        kind = latency_kind(channel)
        found = self.by_kind.get(kind)
        if found is None:
            found = self.by_kind[kind] = KindLatency()
        return found

    def counts(self, stage: str) -> list[int]:
        """Bucket counts of ``stage`` over every kind (the status view's quantiles)."""
        total = [0] * (len(LATENCY_BUCKETS) + 1)
        for latency in self.by_kind.values():
            for i, n in enumerate(getattr(latency, stage).counts):
                total[i] += n
        return total

    def family(self, stage: str, name: str, documentation: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["kind"])
        for kind in sorted(self.by_kind):
            histogram: Histogram = getattr(self.by_kind[kind], stage)
            family.add_metric([kind], histogram.cumulative(), histogram.sum_ns / 1e9)
        return family


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
    #: slow clients closed with 4008 because all of them together passed outbound_budget_bytes
    budget_disconnects: int = 0
    #: messages and bytes replayed for resumes (the replay work the per-connection budget bounds)
    replayed_messages: int = 0
    replayed_bytes: int = 0
    #: resumed channels answered not_recovered (replay_limit): over the request's or budget's cap
    replays_refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: resumes the ring could not answer, by how the bus's history answered them
    bus_resumes: Counter[str] = field(default_factory=Counter)
    #: per-message stages by kind: event_to_publish, publish_to_hub, receive_to_send,
    #: event_to_send (the three together, per delivered message)
    latency: StageLatency = field(default_factory=StageLatency)
    #: one observation per fan-out tick (a tick mixes kinds)
    broadcast: Histogram = field(default_factory=Histogram)

    def stage_counts(self, stage: str) -> list[int]:
        """Bucket counts of one stage (``STAGES`` of the hub) over every kind."""
        return self.broadcast.counts if stage == "broadcast" else self.latency.counts(stage)


#: The per-message stage histograms: (``KindLatency`` attribute, metric name, help).
STAGE_FAMILIES: tuple[tuple[str, str, str], ...] = (
    (
        "event_to_publish",
        "nautilus_stage_event_to_publish_seconds",
        "market event to engine publish, by stream kind",
    ),
    (
        "publish_to_hub",
        "nautilus_stage_publish_to_hub_seconds",
        "engine publish to hub receive, by stream kind",
    ),
    (
        "receive_to_send",
        "nautilus_stage_hub_receive_to_send_seconds",
        "hub receive to the last socket write of its fan-out tick, per message, by stream kind",
    ),
    (
        "event_to_send",
        "nautilus_stage_event_to_send_seconds",
        "end to end: market event to the hub's last socket write, per delivered message, "
        "by stream kind",
    ),
)


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
            (
                "budget_disconnects",
                "slow clients closed with 4008 over the hub's outbound_budget_bytes",
                s.budget_disconnects,
            ),
            ("replayed_messages", "messages replayed for resumes", s.replayed_messages),
            ("replayed_bytes", "bytes replayed for resumes", s.replayed_bytes),
            (
                "replays_refused",
                "resumed channels answered not_recovered (replay_limit)",
                s.replays_refused,
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
        for stage, name, doc in STAGE_FAMILIES:
            yield s.latency.family(stage, name, doc)
        yield s.broadcast.family(
            "nautilus_hub_broadcast_seconds", "hub receive to last socket write of one fan-out"
        )


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

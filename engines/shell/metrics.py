"""The standard metrics every engine exports on ``GET /metrics``.

Each engine owns its ``CollectorRegistry`` (never the process-global one), so many engines can
live in one process in embedded mode without name collisions; it carries the process's
``process_*`` metrics too (``realtime.metrics.port_registry``). Engines add their own collectors
to ``EngineMetrics.registry``.

Levels that already live elsewhere are read at scrape time, never copied per message: the bus
backlog, whether ``/health`` says ``degraded``, and the storage counters (``StoreStats``: the
PostgreSQL write queue, rows written and dropped). Engines sharing one store (``nautilus up``)
report the same store's figures, each under its own ``engine`` label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.metrics import port_registry
from realtime.storage.base import StoreStats

#: Sub-millisecond resolution: most per-batch compute on the hot path is microseconds.
COMPUTE_BUCKETS_S = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class EngineMetrics:
    """Collectors for one engine, all labelled ``engine=<name>``."""

    def __init__(self, engine: str) -> None:
        self.registry = port_registry(auto_describe=True)
        labels = ("engine",)
        self.inputs = Counter(
            "nautilus_engine_inputs",
            "Bus messages the engine consumed.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)
        self.published = Counter(
            "nautilus_engine_published",
            "Messages the engine published to the bus.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)
        self.compute_seconds = Histogram(
            "nautilus_engine_compute_seconds",
            "Time spent handling one batch of input.",
            labels,
            buckets=COMPUTE_BUCKETS_S,
            registry=self.registry,
        ).labels(engine=engine)
        self.publish_lag_seconds = Gauge(
            "nautilus_engine_publish_lag_seconds",
            "Publish time minus event time of the last message the engine published.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)
        self.input_lag_seconds = Gauge(
            "nautilus_engine_input_lag_seconds",
            "Time the oldest message of the last input batch waited on the bus.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)
        self.errors = Counter(
            "nautilus_engine_errors",
            "Errors the engine caught and logged (bad input, handler failures).",
            labels,
            registry=self.registry,
        ).labels(engine=engine)
        self.bad_input = Counter(
            "nautilus_engine_bad_input",
            "Input messages dropped because they did not decode to the stream's record type.",
            (*labels, "stream", "reason"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "nautilus_engine_request_seconds",
            "REST request latency, by method and route template (unmatched paths: 'other').",
            (*labels, "method", "route"),
            buckets=COMPUTE_BUCKETS_S,
            registry=self.registry,
        )
        self.engine = engine
        self.up = Gauge(
            "nautilus_engine_up",
            "1 while the engine is running, else 0.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)
        self._backlog = Gauge(
            "nautilus_engine_backlog",
            "Bus messages waiting to be consumed.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)

        self._degraded = Gauge(
            "nautilus_engine_degraded",
            "1 while the engine runs with issues (its /health status is 'degraded'), else 0.",
            labels,
            registry=self.registry,
        ).labels(engine=engine)

    def track_backlog(self, read_backlog: Callable[[], float]) -> None:
        """Read the backlog at scrape time rather than updating it per message."""
        self._backlog.set_function(read_backlog)

    def track_health(
        self, read_status: Callable[[], str], read_store: Callable[[], StoreStats]
    ) -> None:
        """Read ``/health``'s status and the store's counters at scrape time."""
        self._degraded.set_function(lambda: 1.0 if read_status() == "degraded" else 0.0)
        self.registry.register(StorageCollector(self.engine, read_store))


#: ``nautilus_storage_dropped_rows_total`` reasons → ``StoreStats`` fields.
DROPPED_ROWS = {
    "overflow": "rows_dropped_overflow",
    "rejected": "rows_rejected",
    "shutdown": "rows_dropped_shutdown",
    "evicted": "rows_evicted",
}


class StorageCollector(Collector):
    """The engine's store (``memory`` or ``postgres``, label ``store``) as metrics: the write
    queue's level and bound (PostgreSQL; what an alert on a filling queue divides), rows
    written, rows not kept by reason, failed batches, retries, and whether it is connected."""

    def __init__(self, engine: str, read_store: Callable[[], StoreStats]) -> None:
        self._engine = engine
        self._read = read_store

    def collect(self) -> Iterator[Metric]:
        stats = self._read()
        labels, values = ["engine", "store"], [self._engine, stats.kind]
        gauges = (
            (
                "queued_rows",
                "rows accepted and not yet written (the PostgreSQL write queue; 0 in memory)",
                stats.rows_queued,
            ),
            (
                "queue_bound_rows",
                "the write queue's row bound (postgres) or the per-key ring size (memory)",
                stats.bound,
            ),
            ("connected", "1 while the store can write (memory: always)", int(stats.connected)),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(f"nautilus_storage_{name}", doc, labels=labels)
            gauge.add_metric(values, value)
            yield gauge
        counters = (
            ("written_rows", "rows written", stats.rows_written),
            ("failed_batches", "failed write attempts", stats.batches_failed),
            ("write_retries", "write attempts made after a failure", stats.retries),
        )
        for name, doc, value in counters:
            counter = CounterMetricFamily(f"nautilus_storage_{name}", doc, labels=labels)
            counter.add_metric(values, value)
            yield counter
        dropped = CounterMetricFamily(
            "nautilus_storage_dropped_rows",
            "rows the store did not keep, by reason (overflow: write queue full; rejected: "
            "refused by PostgreSQL; shutdown: still queued at close; evicted: memory ring)",
            labels=[*labels, "reason"],
        )
        for reason, field_name in DROPPED_ROWS.items():
            dropped.add_metric([*values, reason], getattr(stats, field_name))
        yield dropped

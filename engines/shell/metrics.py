"""The standard metrics every engine exports on ``GET /metrics``.

Each engine owns its ``CollectorRegistry`` (never the process-global one), so many engines can
live in one process in embedded mode without name collisions. Engines add their own collectors
to ``EngineMetrics.registry``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Sub-millisecond resolution: most per-batch compute on the hot path is microseconds.
COMPUTE_BUCKETS_S = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class EngineMetrics:
    """Collectors for one engine, all labelled ``engine=<name>``."""

    def __init__(self, engine: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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

    def track_backlog(self, read_backlog: Callable[[], float]) -> None:
        """Read the backlog at scrape time rather than updating it per message."""
        self._backlog.set_function(read_backlog)

"""An engine's /metrics registry: the process's own metrics, no ``*_created``, the degraded gauge
that follows /health, and the store's figures (a real PostgreSQL store while PostgreSQL is down)."""

from __future__ import annotations

import socket

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engines.shell.metrics import DROPPED_ROWS, EngineMetrics, StorageCollector
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from realtime.storage.base import StoreStats
from tests.engines.shell.vwap_engine import VwapConfig, VwapEngine

SECOND = 1_000_000_000
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _samples(text: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_the_store_collector_reports_every_figure_of_store_stats() -> None:
    stats = StoreStats(
        kind="postgres",
        bound=1000,
        connected=False,
        rows_written=7,
        rows_queued=600,
        batches_failed=3,
        retries=2,
        rows_dropped_overflow=11,
        rows_rejected=5,
        rows_dropped_shutdown=1,
        rows_evicted=0,
    )
    metrics = EngineMetrics("vwap")
    metrics.registry.register(StorageCollector("vwap", lambda: stats))
    samples = _samples(generate_latest(metrics.registry))
    labels = (("engine", "vwap"), ("store", "postgres"))
    assert samples["nautilus_storage_queued_rows"] == {labels: 600}
    assert samples["nautilus_storage_queue_bound_rows"] == {labels: 1000}
    assert samples["nautilus_storage_connected"] == {labels: 0}
    assert samples["nautilus_storage_written_rows_total"] == {labels: 7}
    assert samples["nautilus_storage_failed_batches_total"] == {labels: 3}
    assert samples["nautilus_storage_write_retries_total"] == {labels: 2}
    dropped = {
        dict(k)["reason"]: v for k, v in samples["nautilus_storage_dropped_rows_total"].items()
    }
    assert dropped == {"overflow": 11, "rejected": 5, "shutdown": 1, "evicted": 0}
    assert set(DROPPED_ROWS) == set(dropped)


async def test_an_engine_with_postgres_down_is_degraded_on_metrics_as_on_health() -> None:
    clock = ManualClock(1_700_000_000 * SECOND)
    dsn = f"postgresql://postgres@127.0.0.1:{_closed_port()}/test"
    config = VwapConfig(db_dsn=dsn, db_schema="nautilus_metrics_test")
    engine = VwapEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    before = _samples(generate_latest(engine.metrics.registry))
    assert before["nautilus_engine_degraded"] == {(("engine", "vwap"),): 0}  # starting
    await engine.start()
    try:
        assert engine.status() == "degraded"  # migrations pending: PostgreSQL unreachable
        samples = _samples(generate_latest(engine.metrics.registry))
    finally:
        await engine.stop(drain_timeout_s=0.5)
    assert samples["nautilus_engine_degraded"] == {(("engine", "vwap"),): 1}
    labels = (("engine", "vwap"), ("store", "postgres"))
    assert samples["nautilus_storage_connected"] == {labels: 0}
    assert samples["nautilus_storage_queue_bound_rows"][labels] > 0


async def test_a_running_engine_on_memory_is_not_degraded_and_shows_its_process() -> None:
    clock = ManualClock(1_700_000_000 * SECOND)
    engine = VwapEngine(VwapConfig(), bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    try:
        samples = _samples(generate_latest(engine.metrics.registry))
    finally:
        await engine.stop()
    assert samples["nautilus_engine_degraded"] == {(("engine", "vwap"),): 0}
    labels = (("engine", "vwap"), ("store", "memory"))
    assert samples["nautilus_storage_connected"] == {labels: 1}
    assert samples["nautilus_storage_queued_rows"] == {labels: 0}
    assert samples["process_resident_memory_bytes"][()] > 0
    assert samples["process_max_fds"][()] > 0
    assert not [name for name in samples if name.endswith("_created")]

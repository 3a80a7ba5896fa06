"""The Prometheus registry behind every port's ``/metrics`` (hub, engines, supervisor).

Each component owns a ``CollectorRegistry`` of its own (never prometheus_client's global one), so
many can live in one process (``nautilus up``) without name collisions. A custom registry does
not get prometheus_client's default collectors, so ``port_registry`` adds them: ``process_*``
(CPU seconds, resident and virtual memory, open and maximum file descriptors, start time) and
``python_info``. In one process every port reports the same process; Prometheus tells them apart
by ``instance``.

``*_created`` samples (the creation time of every counter and histogram, one more series each)
are switched off for the whole process: nothing here alerts or graphs on them.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)


def port_registry(*, auto_describe: bool = False) -> CollectorRegistry:
    """A registry for one port's ``/metrics``, with ``process_*`` and ``python_info`` in it."""
    # process-wide and idempotent, read at every scrape (prometheus_client leaves it untyped)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=auto_describe)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry

"""The supervisor's ``/metrics`` with real child processes: restarts, states and the last backoff
per child as Prometheus reads them, beside the supervisor's own ``process_*``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from realtime.supervisor import ChildState, Supervisor
from tests.realtime.test_supervisor import child, config, running
from tests.support import until


class Ceiling:
    """Draws 1.0: every restart waits the backoff's ceiling (0.05 s, then 0.1 s here)."""

    def random(self) -> float:
        return 1.0


async def _get(port: int, path: str) -> tuple[str, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body.decode()


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name → label set → value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


async def test_metrics_count_restarts_and_show_each_childs_state_and_last_backoff(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    specs = [
        child("steady", log),
        child("crashing", log, RUN_S="0", CODE="3"),
        child("misconfigured", log, RUN_S="0", CODE="2"),
    ]
    supervisor = Supervisor(config(restart_min_s=0.05, restart_max_s=0.1), specs, rng=Ceiling())
    steady, crashing, misconfigured = supervisor.children
    async with running(supervisor):
        await until(lambda: crashing.restarts >= 3 and misconfigured.state is ChildState.FAILED)
        await until(lambda: steady.state is ChildState.RUNNING)
        restarts_before = crashing.restarts
        status, headers, text = await _get(supervisor.port, "/metrics")
        restarts_after = crashing.restarts
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain")  # Prometheus text exposition
    samples = _samples(text)

    restarts = samples["nautilus_supervisor_restarts_total"]
    assert restarts[(("child", "steady"),)] == 0  # from zero, so rate() sees the first restart
    assert restarts[(("child", "misconfigured"),)] == 0  # exit 2 is never restarted
    assert restarts_before <= restarts[(("child", "crashing"),)] <= restarts_after

    states = samples["nautilus_supervisor_child_state"]
    for name in ("steady", "crashing", "misconfigured"):
        current = [s for s in ChildState if states[(("child", name), ("state", s.value))] == 1]
        assert len(current) == 1, (name, current)  # one state at a time, every state listed
        assert sum(v for (c, _), v in states.items() if c == ("child", name)) == 1
    assert states[(("child", "steady"), ("state", "running"))] == 1
    assert states[(("child", "misconfigured"), ("state", "failed"))] == 1

    # three crashes in a row or more: the ceiling is restart_max_s; no exit, no backoff sample
    backoff = samples["nautilus_supervisor_last_backoff_seconds"]
    assert backoff == {(("child", "crashing"),): 0.1}
    crashes = samples["nautilus_supervisor_crashes_in_a_row"]
    assert crashes[(("child", "crashing"),)] >= 3 and crashes[(("child", "steady"),)] == 0

    assert samples["process_resident_memory_bytes"][()] > 0
    assert samples["process_open_fds"][()] > 0
    assert not any(name.endswith("_created") for name in samples)


async def test_health_still_answers_json_beside_metrics(tmp_path: Path) -> None:
    supervisor = Supervisor(config(), [child("steady", tmp_path / "log")])
    async with running(supervisor):
        await until(lambda: supervisor.children[0].state is ChildState.RUNNING)
        status, headers, body = await _get(supervisor.port, "/health")
    assert status == "HTTP/1.1 200 OK" and headers["content-type"] == "application/json"
    assert '"service":"supervisor"' in body

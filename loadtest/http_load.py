"""Open-loop HTTP/1.1 load: requests are *scheduled* at a fixed rate and latency is measured from
the scheduled time, so a slow server cannot hide its queueing (no coordinated omission).

Keep-alive connections, one request in flight per connection (no pipelining); when every
connection is busy the scheduled request waits for one and that wait counts as latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class LoadResult:
    """One open-loop run's outcome: latencies (ns, from the due time) of the 2xx answers."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    def record(self, status: int, latency_ns: int) -> None:
        """Count one answer; a 2xx one's latency is kept, any other status is an error."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.ok += 1
            self.latencies_ns.append(latency_ns)
        else:
            self.errors += 1

    def summary(self, percentiles: Sequence[float] = (50, 99, 99.9)) -> dict[str, Any]:
        """Counts, statuses and achieved rate; latency in ms as ``p<q>_ms`` for each of
        ``percentiles``, ``max_ms`` and ``mean_ms`` (absent when nothing succeeded)."""
        lat = np.asarray(self.latencies_ns, dtype=np.float64) / 1e6
        latency_ms = (
            {f"p{q:g}_ms": np.percentile(lat, q) for q in percentiles}
            | {"max_ms": lat.max(), "mean_ms": lat.mean()}
            if len(lat)
            else {}
        )
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "achieved_rps": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            **{k: round(float(v), 3) for k, v in latency_ms.items()},
        }


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body


async def run_load(
    host: str, port: int, path: str, *, rate: float, duration_s: float, connections: int = 16
) -> LoadResult:
    raw = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n\r\n".encode()
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
    result = LoadResult()
    inflight: set[asyncio.Task[None]] = set()

    async def one(due_ns: int) -> None:
        conn = await idle.get()
        try:
            status, _ = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            conn = _Connection(*await asyncio.open_connection(host, port))
        else:
            result.record(status, time.perf_counter_ns() - due_ns)
        idle.put_nowait(conn)

    total = int(rate * duration_s)
    start = time.perf_counter_ns()
    interval_ns = 1e9 / rate
    for i in range(total):
        due = start + int(i * interval_ns)
        delay = (due - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        result.sent += 1
    if inflight:
        await asyncio.wait(inflight, timeout=30)
    result.elapsed_s = (time.perf_counter_ns() - start) / 1e9
    while not idle.empty():
        idle.get_nowait().writer.close()
    return result

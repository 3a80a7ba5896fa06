"""Open-loop HTTP/1.1 load: requests are *scheduled* at a fixed rate and latency is measured from
the scheduled time, so a slow server cannot hide its queueing (no coordinated omission).

Keep-alive connections, one request in flight per connection (no pipelining); when every
connection is busy the scheduled request waits for one and that wait counts as latency.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, float | int | dict[int, int]]:
        lat = np.array(self.latencies_ns, dtype=np.float64) / 1e6
        pct = (
            {"p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99)}
            | {"p99.9": np.percentile(lat, 99.9), "max": lat.max(), "mean": lat.mean()}
            if len(lat)
            else {}
        )
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "achieved_rps": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            **{f"{k}_ms": round(float(v), 3) for k, v in pct.items()},
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
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
                result.latencies_ns.append(time.perf_counter_ns() - due_ns)
            else:
                result.errors += 1
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

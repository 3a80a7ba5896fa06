"""A bounded write queue drained in batches by one background task, with retry and counters.

Rows are queued per table as tuples in column order. A batch is formed once (with its id) and
retried whole until it is written, so the sink's atomic write (COPY in one transaction) plus its
batch-id ledger give exactly-once delivery of every row accepted into the queue. What cannot be
queued or written is counted, never dropped silently: ``rows_dropped_overflow`` (queue full),
``rows_rejected`` (the sink refused the content: retrying cannot help), ``rows_dropped_shutdown``
(still queued when ``close`` ran out of time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from realtime.backoff import Backoff, BackoffPolicy, Rng

log = logging.getLogger(__name__)

Record = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: uuid.UUID
    table: str
    records: list[Record]


class BatchSink(Protocol):
    """Where batches go (PostgreSQL COPY). ``write`` is atomic: all of a batch or nothing."""

    @property
    def connected(self) -> bool: ...

    async def write(self, batch: Batch) -> bool:
        """Write ``batch``; ``False`` when its id shows it was committed by an earlier attempt."""
        ...

    async def disconnect(self) -> None:
        """Drop the connection after a failure; the next ``write`` reconnects."""
        ...

    def is_transient(self, error: Exception) -> bool:
        """Whether a retry can succeed (outage, restart) or the content is refused (bad row)."""
        ...


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """``retry_base_s``/``retry_max_s``: a failed batch waits a full-jitter draw from
    [0, min(retry_max_s, retry_base_s · 2^failures)] before it is written again."""

    batch_rows: int
    flush_interval_s: float
    max_queued_rows: int
    retry_base_s: float
    retry_max_s: float
    write_timeout_s: float

    def __post_init__(self) -> None:
        if not 0 < self.retry_base_s <= self.retry_max_s:
            raise ValueError("need 0 < retry_base_s <= retry_max_s")

    @property
    def retry_backoff(self) -> BackoffPolicy:
        return BackoffPolicy(self.retry_base_s, self.retry_max_s)


class BatchWriter:
    """Queue rows per table; write them in batches every ``batch_rows`` rows or flush interval."""

    def __init__(
        self,
        sink: BatchSink,
        tables: Sequence[str],
        settings: WriterSettings,
        *,
        new_batch_id: Callable[[], uuid.UUID] = uuid.uuid4,
        rng: Rng | None = None,
    ) -> None:
        self._sink = sink
        self._settings = settings
        self._rng: Rng = rng if rng is not None else random.Random()
        self._new_batch_id = new_batch_id
        self._pending: dict[str, deque[Record]] = {table: deque() for table in tables}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.rows_queued = 0  # accepted and not yet written, including the batch in flight
        self.rows_written = 0
        self.batches_written = 0
        self.batches_failed = 0
        self.retries = 0
        self.rows_dropped_overflow = 0
        self.rows_rejected = 0
        self.rows_dropped_shutdown = 0
        self.last_error: str | None = None

    def offer(self, table: str, records: Iterable[Record]) -> int:
        """Queue what fits under the bound; count the rest as overflow. Returns rows accepted."""
        if self._closing:
            raise RuntimeError("writer is closed")
        queue = self._pending[table]
        room = self._settings.max_queued_rows - self.rows_queued
        accepted = 0
        refused = 0
        for record in records:
            if accepted < room:
                queue.append(record)
                accepted += 1
            else:
                refused += 1
        self.rows_queued += accepted
        if refused:
            if self.rows_dropped_overflow == 0:
                log.warning("write queue full at %d rows: counting refused rows", self.rows_queued)
            self.rows_dropped_overflow += refused
        if len(queue) >= self._settings.batch_rows:
            self._wake.set()
        return accepted

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-writer")

    async def close(self, timeout_s: float) -> None:
        """Write everything queued within ``timeout_s``; count what is left as dropped."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None:
            await asyncio.wait({task}, timeout=timeout_s)
            # Python 3.11's wait_for can swallow a cancel that lands as the write it waits on
            # fails (the write's error wins): ask again until the task has really ended.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.cancelled() and task.exception() is not None:
                log.error("writer ended with %r", task.exception())
        if self.rows_queued:
            log.error("close timed out: %d queued rows not written", self.rows_queued)
            self.rows_dropped_shutdown += self.rows_queued
            self.rows_queued = 0
            for queue in self._pending.values():
                queue.clear()
        await self._sink.disconnect()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._settings.flush_interval_s
        last_whole_drain = loop.time()
        while True:
            if not self._closing:
                timeout = max(0.0, last_whole_drain + interval - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
            # Full batches go at once; partial ones every interval, even while a busy table
            # keeps waking the loop (a slow table's rows must not wait for a quiet moment).
            whole_queue = self._closing or loop.time() - last_whole_drain >= interval
            if whole_queue:
                last_whole_drain = loop.time()
            await self._drain(whole_queue=whole_queue)
            if self._closing and self.rows_queued == 0:
                return

    async def _drain(self, *, whole_queue: bool) -> None:
        batch_rows = self._settings.batch_rows
        for table, queue in self._pending.items():
            while len(queue) >= batch_rows or (whole_queue and queue):
                count = min(batch_rows, len(queue))
                records = [queue.popleft() for _ in range(count)]
                await self._write(Batch(self._new_batch_id(), table, records))
                self.rows_queued -= count

    async def _write(self, batch: Batch) -> None:
        settings = self._settings
        backoff = Backoff(settings.retry_backoff, self._rng)
        while True:
            try:
                fresh = await asyncio.wait_for(self._sink.write(batch), settings.write_timeout_s)
            except Exception as error:  # every failure is classified, counted and logged below
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError from error  # a cancel wait_for swallowed
                self.batches_failed += 1
                self.last_error = f"{type(error).__name__}: {error}"
                transient = self._sink.is_transient(error)
                await self._sink.disconnect()
                if not transient:
                    self.rows_rejected += len(batch.records)
                    log.error(
                        "batch %s of %d rows into %s refused: %s",
                        batch.batch_id,
                        len(batch.records),
                        batch.table,
                        self.last_error,
                    )
                    return
                delay = backoff.next_s()
                log.warning("write to %s failed (%s), retry in %.3fs", batch.table, error, delay)
                await asyncio.sleep(delay)
                self.retries += 1
                continue
            if not fresh:
                # Committed by an attempt whose acknowledgement was lost: written, exactly once.
                log.info("batch %s was already committed; not written twice", batch.batch_id)
            self.rows_written += len(batch.records)
            self.batches_written += 1
            return

"""The batch writer's shutdown when a cancel is swallowed: Python 3.11's ``asyncio.wait_for``
returns the awaited write's own outcome when the write finished in the same loop step as the
cancel (the write's error wins, the ``CancelledError`` is lost). CI saw ``close`` hang for 120 s
on a PostgreSQL outage, the writer retrying without end. A sink that cancels the writer and then
fails reproduces that step every time."""

from __future__ import annotations

import asyncio

from realtime.storage.writer import Batch, BatchWriter, WriterSettings

SETTINGS = WriterSettings(
    batch_rows=10,
    flush_interval_s=0.01,
    max_queued_rows=1_000,
    retry_base_s=0.001,
    retry_max_s=0.002,
    write_timeout_s=5.0,
)


class CancelThenRefuse:
    """Each write cancels the writer's task, then fails as a refused connection would."""

    connected = False

    def __init__(self) -> None:
        self.writes = 0
        self.writer_task: asyncio.Task[None] | None = None

    async def write(self, batch: Batch) -> bool:
        self.writes += 1
        assert self.writer_task is not None
        self.writer_task.cancel()
        raise ConnectionRefusedError("refused")

    async def disconnect(self) -> None:
        return None

    def is_transient(self, error: Exception) -> bool:
        return isinstance(error, OSError)


async def test_a_cancel_that_lands_as_a_write_fails_ends_the_writer() -> None:
    sink = CancelThenRefuse()
    writer = BatchWriter(sink, ("trades",), SETTINGS)
    before = asyncio.all_tasks()
    writer.start()
    (sink.writer_task,) = asyncio.all_tasks() - before
    writer.offer("trades", [(i,) for i in range(25)])
    async with asyncio.timeout(10):  # was: forever, one swallowed cancel per retry
        await asyncio.wait({sink.writer_task})
        await writer.close(timeout_s=0.05)
    assert sink.writer_task.cancelled()
    assert sink.writes == 1  # the cancel ended the retry loop: nothing was written again
    assert writer.rows_queued == 0 and writer.rows_dropped_shutdown == 25

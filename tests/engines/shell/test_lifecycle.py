from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

import numpy as np
import pytest

from engines.shell import EngineState
from engines.shell.driver import DeterministicDriver
from engines.shell.lifecycle import CANCEL_GRACE_S
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock
from realtime.storage import RecordStore, SignalRow, Storage, StorageConfig, StoreUnavailable
from tests.engines.shell.vwap_engine import VwapConfig, VwapEngine
from tests.support import closed_port

SECOND = 1_000_000_000


def make_engine(
    clock: ManualClock | None = None, bus: MemoryBus | None = None, **config: object
) -> tuple[VwapEngine, MemoryBus, ManualClock]:
    clock = clock or ManualClock(1_700_000_000 * SECOND)
    bus = bus or MemoryBus(clock=clock)
    return VwapEngine(VwapConfig(**config), bus=bus, clock=clock), bus, clock  # type: ignore[arg-type]


async def settle(engine: VwapEngine, handled: int) -> None:
    async with asyncio.timeout(2):
        while engine.handled < handled:  # noqa: ASYNC110 (polling a test counter)
            await asyncio.sleep(0.001)


async def test_states_from_created_to_stopped() -> None:
    engine, _, _ = make_engine()
    assert engine.status() == "starting"
    assert engine.state.value == "created"
    await engine.start()
    assert engine.state_seen_in_on_start == "starting"
    assert engine.status() == "ok"
    assert engine.state is EngineState.RUNNING
    with pytest.raises(RuntimeError, match="cannot start"):
        await engine.start()
    await engine.stop()
    assert engine.health()["state"] == "stopped"
    assert engine.stopped_cleanly
    await engine.stop()  # idempotent
    assert engine.health()["state"] == "stopped"


async def test_consumes_trades_and_publishes_vwap_equal_to_numpy() -> None:
    engine, bus, _ = make_engine()
    out = bus.subscribe("signals.vwap.*")
    await engine.start()
    prices = [100.0, 101.5, 99.25, 100.75]
    sizes = [10.0, 5.0, 20.0, 1.0]
    for i, (price, size) in enumerate(zip(prices, sizes, strict=True)):
        await bus.publish("trades.SPY", {"price": price, "size": size}, event_ns=i)
    await settle(engine, 4)
    published = await out.next_batch()
    assert [e.channel for e in published] == ["signals.vwap.SPY"] * 4
    assert [e.event_ns for e in published] == [0, 1, 2, 3]  # event time carried through
    for n, envelope in enumerate(published, start=1):
        assert envelope.payload["vwap"] == pytest.approx(
            np.average(prices[:n], weights=sizes[:n]), rel=1e-12
        )
    await engine.stop()


async def test_stop_drains_buffered_input_before_on_stop() -> None:
    engine, bus, _ = make_engine()
    await engine.start()
    for i in range(500):  # all buffered without yielding to the consumer
        bus.publish_nowait("trades.SPY", {"price": 100.0 + i, "size": 1.0})
    await engine.stop(drain_timeout_s=5.0)
    assert engine.handled == 500
    assert engine.stopped_cleanly
    assert engine.state is EngineState.STOPPED


async def test_stop_is_bounded_when_a_handler_hangs(caplog: pytest.LogCaptureFixture) -> None:
    engine, bus, _ = make_engine()
    await engine.start()
    await bus.publish("trades.SPY", {"hang": True})
    await asyncio.sleep(0.01)  # the handler is now stuck
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        await engine.stop(drain_timeout_s=0.2)
    elapsed = time.perf_counter() - started
    assert 0.2 <= elapsed < 0.2 + CANCEL_GRACE_S
    assert engine.state is EngineState.STOPPED
    assert engine.stopped_cleanly  # on_stop still ran after the cancel
    assert "still busy after 0.2 s drain" in caplog.text


async def test_bad_message_is_counted_and_the_engine_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, bus, _ = make_engine()
    await engine.start()
    with caplog.at_level(logging.ERROR):
        await bus.publish("trades.SPY", {"size": 1.0})  # no price: KeyError in handle
        await bus.publish("trades.SPY", {"price": 10.0, "size": 2.0})
        await settle(engine, 1)
    health = engine.health()
    assert health["errors"] == 1
    assert health["status"] == "ok"
    assert engine.volume == {"SPY": 2.0}
    assert "handling trades.SPY seq 1" in caplog.text
    assert "KeyError: 'price'" in caplog.text  # traceback in the log
    await engine.stop()


async def test_failed_on_start_marks_failed_and_releases_subscriptions() -> None:
    engine, bus, _ = make_engine(fail_on_start=True)
    with pytest.raises(RuntimeError, match="pretend"):
        await engine.start()
    assert engine.state is EngineState.FAILED
    assert engine.status() == "failed"
    assert engine.failure is not None and "pretend" in engine.failure
    bus.publish_nowait("trades.SPY", {"price": 1.0, "size": 1.0})
    assert engine.backlog() == 0  # the subscription is gone, nothing buffers
    await asyncio.wait_for(engine.wait_failed(), 1)
    await engine.stop()
    assert engine.state is EngineState.FAILED


class RebuildingVwapEngine(VwapEngine):
    """A VWAP engine whose ``on_start`` would read its state back from the store."""

    rebuilds_from_store = True


async def test_an_engine_that_rebuilds_from_the_store_waits_for_it_before_on_start() -> None:
    clock = ManualClock(1_700_000_000 * SECOND)
    storage = Storage(StorageConfig(start_wait_s=30), clock=clock)  # not opened yet
    engine = RebuildingVwapEngine(
        VwapConfig(), bus=MemoryBus(clock=clock), clock=clock, storage=storage
    )
    starting = asyncio.create_task(engine.start())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not starting.done() and engine.state_seen_in_on_start is None
    assert engine.status() == "starting"
    await storage.open()  # the store comes up: the start goes on
    await asyncio.wait_for(starting, 2)
    assert engine.state_seen_in_on_start == "starting" and engine.status() == "ok"
    await engine.stop()
    await storage.close()


async def test_a_store_that_stays_unreachable_fails_the_start_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(1_700_000_000 * SECOND)
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    storage = Storage(StorageConfig(dsn=dsn, start_wait_s=0.2), clock=clock)
    await storage.open()  # unreachable: returns at once and retries in the background
    engine = RebuildingVwapEngine(
        VwapConfig(), bus=MemoryBus(clock=clock), clock=clock, storage=storage
    )
    try:
        with (
            caplog.at_level(logging.WARNING, logger="engines.vwap"),
            pytest.raises(StoreUnavailable) as failed,
        ):
            await engine.start()
    finally:
        await storage.close()
    assert str(failed.value).startswith(
        "engine vwap: PostgreSQL unreachable for 0.2 s (NAUTILUS_DB_START_WAIT_S): "
    )
    assert "ConnectionRefusedError" in str(failed.value) or "OSError" in str(failed.value)
    assert engine.state is EngineState.FAILED and engine.state_seen_in_on_start is None
    [waiting, cannot] = [r for r in caplog.records if r.name == "engines.vwap"]
    assert "waits for its store (up to 0.2 s)" in waiting.getMessage()
    assert cannot.getMessage().startswith("engine vwap cannot start: PostgreSQL unreachable")
    assert cannot.exc_info is None  # one line, no traceback


async def test_crashing_producer_fails_the_engine() -> None:
    engine, _, _ = make_engine()
    await engine.start()

    async def replay() -> None:
        raise OSError("feed file vanished")

    engine.spawn(replay, name="replay")
    await asyncio.wait_for(engine.wait_failed(), 1)
    assert engine.state is EngineState.FAILED
    assert engine.health()["status"] == "failed"
    assert "feed file vanished" in str(engine.health()["issues"])
    await engine.stop()
    assert engine.state is EngineState.FAILED


async def test_producers_are_cancelled_first_at_stop() -> None:
    engine, bus, _ = make_engine()
    await engine.start()
    cancelled = asyncio.Event()

    async def ticker() -> None:
        try:
            while True:
                await bus.publish("trades.SPY", {"price": 1.0, "size": 1.0})
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = engine.spawn(ticker, name="ticker")
    await settle(engine, 3)
    await engine.stop()
    assert cancelled.is_set() and task.cancelled()
    assert engine.handled == bus.last_seq("trades.SPY")  # everything produced was drained
    assert engine.state is EngineState.STOPPED


async def test_bus_closing_under_a_running_engine_fails_it() -> None:
    engine, bus, _ = make_engine()
    await engine.start()
    await bus.close()
    await asyncio.wait_for(engine.wait_failed(), 1)
    assert "ended while running" in (engine.failure or "")
    await engine.stop()


async def test_health_times_come_from_the_injected_clock() -> None:
    engine, bus, clock = make_engine()
    assert engine.health()["status"] == "starting"
    await engine.start()
    health = engine.health()
    assert health["uptime_s"] == 0.0
    assert health["last_input_age_s"] is None
    clock.advance(3 * SECOND)
    bus.publish_nowait("trades.SPY", {"price": 1.0, "size": 1.0})  # publish_ns = t0 + 3 s
    clock.advance(SECOND // 2)  # waits 0.5 s on the bus before the consumer sees it
    assert engine.backlog() == 1
    await settle(engine, 1)
    clock.advance(2 * SECOND)
    health = engine.health()
    assert health["uptime_s"] == pytest.approx(5.5)
    assert health["last_input_age_s"] == pytest.approx(2.0)
    assert health["lag_s"] == pytest.approx(0.5)
    assert health["backlog"] == 0
    assert health["symbols"] == 1  # the engine's own field
    await engine.stop()
    assert engine.health()["status"] == "stopped"


async def test_bus_drops_make_the_engine_degraded() -> None:
    clock = ManualClock()
    engine, bus, _ = make_engine(clock, MemoryBus(clock=clock, max_pending=2))
    await engine.start()
    for _ in range(5):  # the consumer cannot run in between: 3 are dropped
        bus.publish_nowait("trades.SPY", {"price": 1.0, "size": 1.0})
    health = engine.health()
    assert health["status"] == "degraded"
    assert health["dropped"] == 3
    assert "3 input message(s) dropped" in str(health["issues"])
    await engine.stop()


async def test_run_in_executor_runs_off_the_loop_thread() -> None:
    engine, _, _ = make_engine(compute_threads=1)
    await engine.start()
    worker = await engine.run_in_executor(threading.get_ident)
    assert worker != threading.get_ident()
    total = await engine.run_in_executor(sum, range(1001))
    assert total == 1001 * 1000 // 2
    await engine.stop()


class RecordingVwap(VwapEngine):
    """Stores a row per trade it handles in a record store of its own (``Engine.records``)."""

    def __init__(self, config: VwapConfig, *, bus: MemoryBus, clock: ManualClock) -> None:
        super().__init__(config, bus=bus, clock=clock)
        self.stored: RecordStore[dict[str, Any]] = self.records(
            "vwap.seen", dict, key=itemgetter("symbol"), time=itemgetter("event_ns")
        )
        #: rows per ``write_signals`` call of the engine's store
        self.writes: list[int] = []
        store = self.storage.store
        write = store.write_signals

        def counted(rows: Iterable[SignalRow]) -> int:
            rows = list(rows)
            self.writes.append(len(rows))
            return write(rows)

        store.write_signals = counted  # type: ignore[method-assign]

    async def on_trade(self, payload: dict[str, object], envelope: Envelope) -> None:
        symbol = envelope.channel.split(".", 1)[1]
        self.stored.append([{"symbol": symbol, "event_ns": envelope.event_ns}])
        await super().on_trade(payload, envelope)


def recording_engine() -> tuple[RecordingVwap, MemoryBus]:
    clock = ManualClock(1_700_000_000 * SECOND)
    bus = MemoryBus(clock=clock)
    return RecordingVwap(VwapConfig(), bus=bus, clock=clock), bus


async def stored_times(engine: RecordingVwap) -> list[int]:
    return [r["event_ns"] async for r in engine.stored.scan("SPY")]


async def test_a_batch_of_input_is_stored_in_one_write_at_its_end() -> None:
    engine, bus = recording_engine()
    await engine.start()
    for i in range(5):  # buffered before the consumer wakes: one batch
        bus.publish_nowait("trades.SPY", {"price": 100.0, "size": 1.0}, event_ns=i)
    await settle(engine, 5)
    await engine.stop()
    assert engine.writes == [5]
    assert await stored_times(engine) == [0, 1, 2, 3, 4]
    engine.stored.append([{"symbol": "SPY", "event_ns": 5}])  # outside a batch: written now
    assert engine.writes == [5, 1]


async def test_the_driver_stores_a_run_in_one_write_and_reads_see_held_rows() -> None:
    engine, _ = recording_engine()
    driver = DeterministicDriver(engine)
    envelopes = [
        Envelope("trades.SPY", i + 1, "e", i, i, {"price": 100.0, "size": 1.0}) for i in range(3)
    ]
    await driver.run(envelopes)
    assert engine.writes == [3]
    engine.write_hold.hold()
    engine.write_hold.hold()  # nested, as two consumers' batches
    engine.stored.append([{"symbol": "SPY", "event_ns": 3}])
    assert engine.writes == [3]
    assert await stored_times(engine) == [0, 1, 2, 3]  # a read writes what waits first
    engine.stored.append([{"symbol": "SPY", "event_ns": 4}])
    engine.write_hold.release()  # every release writes what waits
    assert engine.writes == [3, 1, 1]
    engine.stored.append([{"symbol": "SPY", "event_ns": 5}])
    assert engine.writes == [3, 1, 1]  # still held once
    engine.write_hold.release()
    assert engine.writes == [3, 1, 1, 1]
    assert await stored_times(engine) == [0, 1, 2, 3, 4, 5]


async def test_rows_of_a_batch_cut_short_by_stop_are_still_written() -> None:
    engine, bus = recording_engine()
    await engine.start()
    bus.publish_nowait("trades.SPY", {"price": 100.0, "size": 1.0}, event_ns=1)
    bus.publish_nowait("trades.SPY", {"hang": True}, event_ns=2)  # stored, then hangs
    await engine.stop(drain_timeout_s=0.05)
    assert engine.writes == [2]
    assert await stored_times(engine) == [1, 2]


class BatchSummingVwap(VwapEngine):
    """Publishes how many trades each batch had, after the batch (its own ``after_batch``)."""

    def __init__(self, config: VwapConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.in_batch = 0

    async def on_trade(self, payload: dict[str, object], envelope: Envelope) -> None:
        self.in_batch += 1
        await super().on_trade(payload, envelope)

    async def after_batch(self) -> None:
        await self.publish("signals.batch.SPY", {"trades": self.in_batch})
        self.in_batch = 0


async def test_the_driver_calls_an_engines_own_after_batch_once_per_run_that_handled_input() -> (
    None
):
    clock = ManualClock(1_700_000_000 * SECOND)
    engine = BatchSummingVwap(VwapConfig(), bus=MemoryBus(clock=clock), clock=clock)
    driver = DeterministicDriver(engine)
    trades = [
        Envelope("trades.SPY", i + 1, "e", i, i, {"price": 100.0, "size": 1.0}) for i in range(3)
    ]
    out = await driver.run(trades)
    assert [e.channel for e in out] == ["signals.vwap.SPY"] * 3 + ["signals.batch.SPY"]
    assert out[-1].payload == {"trades": 3}
    assert await driver.run([Envelope("quotes.SPY", 9, "e", 9, 9, {})]) == []  # nothing handled
    assert [e.payload for e in await driver.run(trades[:1])][-1] == {"trades": 1}

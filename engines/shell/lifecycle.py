"""The engine lifecycle every engine shares: start, consume the bus, stop with a bounded drain.

An engine is a subclass of ``Engine`` that fills in hooks; the shell owns everything else::

    created ──start()──► starting ──► running ──stop()──► stopping ──► stopped
                           │             │                                ▲
                           └─────────────┴──► failed ─────stop()──────────┘ (stays failed)

``start``: open the engine's storage if it owns it, subscribe to ``inputs()`` (messages buffer
from here on, so none are missed), run ``on_start`` (load state, spawn producers), then one
consumer task per input pattern. Each message is decoded to the input's record type
(``protocol.records.decode``); one that does not decode is counted per stream and reason
(``/health`` ``bad_input``, metric ``nautilus_engine_bad_input_total``) and skipped, never
crashing the engine; the rest reach the input's handler in publish order. The engine's record
stores (``records``) are held while a batch is handled (``write_hold``): the rows it appends go
to the store at the batch's end, one store call per stream, not one per record.

``stop`` is ordered and bounded: cancel producers, close subscriptions
(stop accepting input), let consumers drain what is already buffered for at most
``drain_timeout_s`` then cancel them, run ``on_stop`` (flush storage, close pools) under the same
bound, release the compute threads.

The engine takes its collaborators (config, bus, clock, storage) as arguments, so the same engine
runs in a replay, a test with a ``ManualClock``, embedded, as its own process, or under the
``DeterministicDriver`` (``engines.shell.driver``), which calls ``dispatch`` itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar

from engines.shell.config import ConfigT, EngineConfig
from engines.shell.metrics import EngineMetrics
from protocol.channels import DeliveryClass
from protocol.records import BadInput, decode
from realtime.bus import Bus, Envelope, Subscription
from realtime.clock import Clock
from realtime.latency import RecentDurations
from realtime.storage import Storage, StorageConfig, StoreUnavailable
from realtime.storage.records import RecordStore, WriteHold

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

#: How long cancelled tasks get to unwind before stop() moves on regardless.
CANCEL_GRACE_S = 1.0


class EngineState(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A channel family an engine publishes, as ``GET /streams`` lists it.

    ``channel`` is a name or pattern (``trades.*``, ``bars.>``); ``delivery`` tells clients how
    it reaches them (protocol.channels.DeliveryClass).
    """

    channel: str
    delivery: DeliveryClass
    description: str


#: An extra REST route: (URI template, Falcon ASGI resource), e.g. ("/bars", BarsResource(...)).
Route = tuple[str, object]


@dataclass(frozen=True, slots=True)
class Input(Generic[R]):
    """One consumed stream: payloads decode to ``record_type`` (``dict`` takes them as they
    are), then ``handler(record, envelope)`` runs. Build with ``on(Trade, self.on_trade)``."""

    record_type: type[R]
    handler: Callable[[R, Envelope], Awaitable[None]]


def on(record_type: type[R], handler: Callable[[R, Envelope], Awaitable[None]]) -> Input[R]:
    """``inputs()`` entries read as sentences: ``{"trades.*": on(Trade, self.on_trade)}``."""
    return Input(record_type, handler)


class Engine(Generic[ConfigT]):
    """Base class of every compute engine. Subclasses override the hooks below, nothing else."""

    #: The engine's frozen config class; ``main_engine`` loads it from the environment.
    config_type: ClassVar[type[EngineConfig]] = EngineConfig
    #: ``on_start`` rebuilds the engine's state from the store (Risk, Portfolio): ``start``
    #: waits for the store first (``Storage.wait_ready``: PostgreSQL may still be coming up),
    #: and a store that stays unreachable fails the start with one line, not a traceback.
    rebuilds_from_store: ClassVar[bool] = False

    def __init__(
        self, config: ConfigT, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        self.config = config
        self.bus = bus
        self.clock = clock
        #: The platform's storage (shared; opened and closed by whoever built the engine). The
        #: engine opens and closes its own instead when its config names a DSN of its own
        #: (``db_dsn``), or when it was given none (a bounded memory store).
        self._owns_storage = storage is None or bool(config.db_dsn)
        if config.db_dsn:
            storage = Storage(
                StorageConfig(dsn=config.db_dsn, schema=config.db_schema), clock=clock
            )
        self.storage = storage or Storage(StorageConfig(), clock=clock)
        self.name = config.name
        self.state = EngineState.CREATED
        self.metrics = EngineMetrics(config.name)
        self.metrics.track_backlog(self.backlog)
        self.metrics.track_health(self.status, lambda: self.storage.store.stats())
        #: REST request durations of the last minute (``/health`` ``rest_latency``)
        self.rest_latency = RecentDurations()
        self.log = logging.getLogger(f"engines.{config.name}")
        #: held while a batch of input is handled (the consumers and the deterministic driver
        #: hold it around each batch, ``after_batch`` included): the rows the engine's record
        #: stores take meanwhile are written as it ends, one store call per stream
        self.write_hold = WriteHold()
        self._subscriptions: list[Subscription] = []
        self._consumers: list[asyncio.Task[None]] = []
        self._producers: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._started_ns: int | None = None
        self._last_input_ns: int | None = None
        self._input_lag_ns = 0
        self._errors = 0
        self._bad_input: dict[str, dict[str, int]] = {}
        self._failure: str | None = None
        self._failed = asyncio.Event()

    # ── hooks ────────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        """Bus patterns the engine consumes and what handles each: ``{"trades.*":
        on(Trade, self.on_trade)}``; one consumer task per pattern."""
        return {}

    def streams(self) -> Sequence[StreamInfo]:
        """Channels the engine publishes, for ``GET /streams``."""
        return ()

    def declared_channels(self) -> Sequence[str]:
        """Concrete channels the engine will publish, declared to the hub before the first
        message so clients may subscribe early. Default: the literal names in ``streams()``."""
        return tuple(
            s.channel for s in self.streams() if "*" not in s.channel and ">" not in s.channel
        )

    def health_extra(self) -> Mapping[str, object]:
        """Engine-specific fields added to ``GET /health`` (e.g. ``{"storage": "memory"}``)."""
        return {}

    def health_issues(self) -> list[str]:
        """Reasons the engine is degraded right now (e.g. ``"postgres unreachable"``)."""
        return []

    async def on_start(self) -> None:
        """Load state, open pools, ``spawn`` producers. Input is already being buffered."""

    async def after_batch(self) -> None:
        """Runs after each batch of input is handled (flush what was batched, e.g. rows)."""

    async def on_stop(self) -> None:
        """Flush storage, close pools. Runs after input has drained, bounded by the drain time;
        also after a failed ``on_start``, so it must tolerate a half-started engine."""

    # ── lifecycle ────────────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        if self.state is not EngineState.CREATED:
            raise RuntimeError(f"engine {self.name} cannot start from state {self.state}")
        self.state = EngineState.STARTING
        self._started_ns = self.clock.now_ns()
        try:
            if self._owns_storage:
                await self.storage.open()
            if self.rebuilds_from_store and not self.storage.ready.is_set():
                self.log.warning(
                    "engine %s waits for its store (up to %g s) to rebuild its state",
                    self.name,
                    self.storage.config.start_wait_s,
                )
                await self.storage.wait_ready()
            inputs = self.inputs()
            self._subscriptions = [self.bus.subscribe(pattern) for pattern in inputs]
            await self.on_start()
        except BaseException as exc:
            self._failure = f"start failed: {exc!r}"
            self._failed.set()
            unavailable = isinstance(exc, StoreUnavailable)
            if unavailable:  # the cause is the line; no traceback
                self.log.error("engine %s cannot start: %s", self.name, exc)
            else:
                self.log.exception("engine %s failed to start", self.name)
            await self._shut_down(drain_timeout_s=0.0)
            self.state = EngineState.FAILED
            if unavailable:
                raise StoreUnavailable(f"engine {self.name}: {exc}") from None
            raise
        self._consumers = [
            asyncio.create_task(
                self._consume(sub, inputs[sub.pattern]), name=f"{self.name} consumes {sub.pattern}"
            )
            for sub in self._subscriptions
        ]
        self.state = EngineState.RUNNING
        self.metrics.up.set(1)
        self.log.info("engine %s running, consuming %s", self.name, list(inputs))

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Ordered, bounded shutdown; returns within about ``drain_timeout_s`` (default: the
        config's) plus ``CANCEL_GRACE_S``."""
        if self.state in (EngineState.STOPPING, EngineState.STOPPED):
            return
        if self.state is EngineState.CREATED:
            self.state = EngineState.STOPPED
            return
        failed = self.state is EngineState.FAILED
        self.state = EngineState.STOPPING
        self.metrics.up.set(0)
        configured = self.config.drain_timeout_s
        await self._shut_down(configured if drain_timeout_s is None else drain_timeout_s)
        self.state = EngineState.FAILED if failed or self._failure else EngineState.STOPPED
        self.log.info("engine %s %s", self.name, self.state)

    async def _shut_down(self, drain_timeout_s: float) -> None:
        await _cancel(self._producers)
        for sub in self._subscriptions:
            sub.close()
        if self._consumers:
            _, pending = await asyncio.wait(self._consumers, timeout=drain_timeout_s)
            if pending:
                self.log.warning(
                    "engine %s: %d consumer(s) still busy after %.3g s drain, cancelling",
                    self.name,
                    len(pending),
                    drain_timeout_s,
                )
                await _cancel(pending)
        try:
            await asyncio.wait_for(self.on_stop(), timeout=max(drain_timeout_s, CANCEL_GRACE_S))
        except TimeoutError:
            self.record_error("on_stop did not finish in time", exc_info=False)
        except Exception:
            self.record_error("on_stop failed")
        if self._owns_storage:
            await self.storage.close(max(0.1, 0.8 * drain_timeout_s))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def dispatch(self, envelope: Envelope, stream: str, handling: Input[Any]) -> None:
        """Decode one message of ``stream`` and hand it to its handler. Bad input is counted and
        skipped, a failing handler counted and logged: the next message is handled either way.
        The consumers call this; so does the deterministic driver."""
        payload, record_type = envelope.payload, handling.record_type
        try:
            # a payload already of the record type (in-process: a replay's records) is what
            # decoding would return unchanged
            record = (
                payload
                if record_type is dict or type(payload) is record_type
                else decode(record_type, payload)
            )
        except BadInput as exc:
            self.count_bad_input(stream, exc.reason)
            self.log.debug("skipping %s seq %d: %s", envelope.channel, envelope.seq, exc)
            return
        try:
            await handling.handler(record, envelope)
        except BadInput as exc:  # a handler's own documented rule
            self.count_bad_input(stream, exc.reason)
        except Exception:
            self.record_error(f"handling {envelope.channel} seq {envelope.seq}")

    def count_bad_input(self, stream: str, reason: str) -> None:
        reasons = self._bad_input.setdefault(stream, {})
        reasons[reason] = reasons.get(reason, 0) + 1
        self.metrics.bad_input.labels(self.name, stream, reason).inc()

    async def _consume(self, subscription: Subscription, handling: Input[Any]) -> None:
        stream = subscription.pattern
        try:
            while batch := await subscription.next_batch(self.config.max_batch):
                self._record_input(batch)
                started = time.perf_counter()
                self.write_hold.hold()
                try:
                    for envelope in batch:
                        await self.dispatch(envelope, stream, handling)
                    try:
                        await self.after_batch()
                    except Exception:
                        self.record_error(f"after a batch from {stream}")
                finally:
                    self.write_hold.release()
                self.metrics.compute_seconds.observe(time.perf_counter() - started)
        except Exception as exc:
            self.fail(f"input {subscription.pattern} broke: {exc!r}")
            return
        if self.state is EngineState.RUNNING:
            self.fail(f"input {subscription.pattern} ended while running (bus closed?)")

    # ── helpers for subclasses ───────────────────────────────────────────────────────────────

    def records(
        self,
        stream: str,
        record_type: type[R],
        *,
        key: Callable[[R], str],
        time: Callable[[R], int],
    ) -> RecordStore[R]:
        """A ``RecordStore`` of the engine's own output records of ``stream``, in its storage
        under its name, held while a batch of input is handled (``write_hold``)."""
        return RecordStore(
            self.storage.store, self.name, stream, record_type, key=key, time=time,
            hold=self.write_hold,
        )  # fmt: skip

    async def publish(self, channel: str, payload: Any, *, event_ns: int | None = None) -> Envelope:
        """Publish through the bus and count it (``event_ns`` = market time of the value)."""
        envelope = await self.bus.publish(channel, payload, event_ns=event_ns)
        self.metrics.published.inc()
        self.metrics.publish_lag_seconds.set((envelope.publish_ns - envelope.event_ns) / 1e9)
        return envelope

    async def run_in_executor(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run CPU-heavy ``fn`` on the engine's bounded thread pool, keeping the loop free."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.compute_threads, thread_name_prefix=f"{self.name}-compute"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def spawn(self, work: Callable[[], Awaitable[None]], *, name: str) -> asyncio.Task[None]:
        """Run a producer owned by the engine (a feed replay, a timer). Cancelled first at stop;
        an exception escaping it marks the engine failed."""
        task = asyncio.create_task(self._run_producer(work, name), name=f"{self.name} {name}")
        self._producers.add(task)
        task.add_done_callback(self._producers.discard)
        return task

    async def _run_producer(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await work()
        except Exception as exc:
            self.log.exception("engine %s: producer %s crashed", self.name, name)
            self.fail(f"producer {name} crashed: {exc!r}")

    def record_error(self, message: str, *, exc_info: bool | BaseException = True) -> None:
        """Count and log an error the engine survives; call inside ``except`` (or pass the
        exception) for a traceback in the log."""
        self._errors += 1
        self.metrics.errors.inc()
        self.log.error("engine %s: %s", self.name, message, exc_info=exc_info)

    def fail(self, reason: str) -> None:
        """Mark the engine failed: ``/health`` says so and the process runner exits non-zero."""
        self._failure = reason
        self._failed.set()
        self._errors += 1
        self.metrics.errors.inc()
        self.metrics.up.set(0)
        self.log.error("engine %s failed: %s", self.name, reason)
        if self.state in (EngineState.STARTING, EngineState.RUNNING):
            self.state = EngineState.FAILED

    # ── what /health reads ───────────────────────────────────────────────────────────────────

    @property
    def failure(self) -> str | None:
        return self._failure

    async def wait_failed(self) -> None:
        """Return once the engine has failed (the process runner stops on it)."""
        await self._failed.wait()

    def backlog(self) -> int:
        """Messages buffered on the bus for this engine and not yet handled."""
        return sum(int(getattr(sub, "pending", 0)) for sub in self._subscriptions)

    def dropped(self) -> int:
        """Input messages the bus dropped because this engine fell behind."""
        return sum(sub.dropped for sub in self._subscriptions)

    def status(self) -> str:
        """``ok``, ``degraded`` (running with issues), ``starting``, ``stopping``, ``stopped``,
        or ``failed``."""
        if self.state is EngineState.RUNNING:
            return "degraded" if self.issues() else "ok"
        return _STATUS_OF_STATE[self.state]

    def issues(self) -> list[str]:
        found = [*self.health_issues(), *self.storage.issues()]
        if dropped := self.dropped():
            found.append(f"{dropped} input message(s) dropped by the bus (engine too slow)")
        if self._failure:
            found.append(self._failure)
        return found

    def health(self) -> dict[str, object]:
        now = self.clock.now_ns()
        started, last = self._started_ns, self._last_input_ns
        return {
            "status": self.status(),
            "state": self.state.value,
            "engine": self.name,
            "uptime_s": 0.0 if started is None else (now - started) / 1e9,
            "last_input_age_s": None if last is None else (now - last) / 1e9,
            "backlog": self.backlog(),
            "lag_s": self._input_lag_ns / 1e9,
            "errors": self._errors,
            "dropped": self.dropped(),
            "bad_input": {stream: dict(reasons) for stream, reasons in self._bad_input.items()},
            "storage": self.storage.health(),
            "issues": self.issues(),
            "rest_latency": self.rest_latency.summary(now),
            **self.health_extra(),
        }

    def _record_input(self, batch: Sequence[Envelope]) -> None:
        now = self.clock.now_ns()
        self._last_input_ns = now
        self._input_lag_ns = max(0, now - batch[0].publish_ns)
        self.metrics.inputs.inc(len(batch))
        self.metrics.input_lag_seconds.set(self._input_lag_ns / 1e9)


_STATUS_OF_STATE = {
    EngineState.CREATED: "starting",
    EngineState.STARTING: "starting",
    EngineState.STOPPING: "stopping",
    EngineState.STOPPED: "stopped",
    EngineState.FAILED: "failed",
}


async def _cancel(tasks: Sequence[asyncio.Task[None]] | set[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and give them ``CANCEL_GRACE_S`` to unwind (a task that swallows the
    cancellation is abandoned rather than allowed to hang shutdown)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)

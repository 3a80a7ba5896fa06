"""A small process supervisor: start children in rank order, restart crashes, stop in order.

``nautilus up --distributed`` runs one ``Supervisor`` over the platform's processes (hubs, engines,
the feed-owning engine; the layout is ``realtime.distributed``'s). One asyncio loop, one task per
child, no threads:

* **start**: children in ascending ``rank``; a rank counts as up once every child with a port
  answers ``/health`` with 200 (or ``start_timeout_s`` passed, logged), so consumers are subscribed
  before the producers of the next rank begin.
* **restart**: a child that exits while the supervisor runs is started again after a full-jitter
  draw from [0, min(``restart_max_s``, ``restart_min_s * 2**(n-1)``)] seconds
  (``realtime.backoff``), ``n`` the crashes in a row; a child that stayed up ``healthy_after_s``
  resets ``n``. Exit code 2 (usage or configuration error, see the CLI) is not retried:
  restarting cannot fix it; the child shows ``failed``.
* **stop** (SIGTERM/SIGINT to the supervisor, or ``stop`` set): children in *descending* rank,
  SIGTERM to each child's process group, ``stop_timeout_s`` for the rank to exit, then SIGKILL.
  Each child runs in its own session, so a terminal's Ctrl-C reaches only the supervisor, which
  forwards it in order; on Linux a child also gets SIGKILL if the supervisor itself dies.
* **/health** on ``host:port``: JSON with every child's pid, state, restarts and last exit code;
  **/metrics** there too: restarts per child, each child's state, the last backoff, the crashes in
  a row (``nautilus_supervisor_*``, label ``child``), and the supervisor's ``process_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import sys
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime import __version__
from realtime.backoff import BackoffPolicy, Rng
from realtime.clock import Clock, SystemClock
from realtime.config import described
from realtime.http import get_json
from realtime.metrics import port_registry
from realtime.shutdown import stop_then_force

log = logging.getLogger("nautilus.supervisor")

#: Exit code of a usage or configuration error: a restart cannot fix it.
EXIT_CONFIG_ERROR = 2
#: prctl(2) option: the signal a child gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1
#: Set in each child's environment to the supervisor's pid: the child arms its own death signal
#: (``die_with_supervisor``) instead of the supervisor running Python between fork and exec.
SUPERVISOR_PID_VARIABLE = "NAUTILUS_SUPERVISOR_PID"
#: How often a starting child's port is tried.
_PORT_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    host: str = field(
        default="127.0.0.1", metadata=described("interface of the supervisor's /health")
    )
    port: int = field(
        default=8599, metadata=described("supervisor /health port (0 = any free port)")
    )
    restart_min_s: float = field(
        default=0.5, metadata=described("the first restart delay is drawn from [0, this]")
    )
    restart_max_s: float = field(
        default=30.0, metadata=described("largest restart delay (full jitter)")
    )
    healthy_after_s: float = field(
        default=10.0, metadata=described("uptime after which a child's crash count resets")
    )
    start_timeout_s: float = field(
        default=60.0, metadata=described("wait for a rank's ports before starting the next rank")
    )
    stop_timeout_s: float = field(
        default=10.0, metadata=described("wait for a rank to exit after SIGTERM, then SIGKILL")
    )

    def __post_init__(self) -> None:
        if not 0 < self.restart_min_s <= self.restart_max_s:
            raise ValueError("need 0 < restart_min_s <= restart_max_s")
        if min(self.healthy_after_s, self.start_timeout_s, self.stop_timeout_s) <= 0:
            raise ValueError("healthy_after_s, start_timeout_s and stop_timeout_s must be > 0")

    @property
    def restart_backoff(self) -> BackoffPolicy:
        """Restart delays: the platform's shared full-jitter policy."""
        return BackoffPolicy(self.restart_min_s, self.restart_max_s)

    def restart_delay_s(self, crashes: int, rng: Rng) -> float:
        """Delay before restart number ``crashes`` (1 = first crash in a row)."""
        return self.restart_backoff.delay_s(max(0, crashes - 1), rng)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One supervised process: started in ascending ``rank``, stopped in descending ``rank``."""

    name: str
    argv: tuple[str, ...]
    rank: int
    env: Mapping[str, str] = field(default_factory=dict)  # added to the supervisor's own
    port: int | None = None  # the port it serves; its start counts once /health answers 200


class ChildState(StrEnum):
    STARTING = "starting"  # spawned, /health not answering 200 yet
    RUNNING = "running"
    BACKOFF = "backoff"  # exited; restart pending
    FAILED = "failed"  # exited with a configuration error; not restarted
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    last_exit_code: int | None = None
    started_ns: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: the restart delays decided, newest last (the last 16): what the backoff policy did
    backoffs: deque[float] = field(default_factory=lambda: deque(maxlen=16))

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    def health(self, now_ns: int) -> dict[str, Any]:
        started = self.started_ns if self.pid is not None else None
        return {
            "name": self.spec.name,
            "rank": self.spec.rank,
            "pid": self.pid,
            "port": self.spec.port,
            "state": self.state.value,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_backoff_s": self.backoffs[-1] if self.backoffs else None,
            "uptime_s": None if started is None else round((now_ns - started) / 1e9, 3),
        }


def die_with_supervisor(environ: MutableMapping[str, str] = os.environ) -> None:
    """In a supervised child, first thing: SIGKILL when the supervisor dies, so no orphan keeps a
    port. A no-op outside a supervisor (the variable unset) and off Linux.

    The child arms this itself: a ``preexec_fn`` would run Python in the forked child of a
    multi-threaded supervisor (uvloop's worker threads), which can deadlock before ``exec`` on a
    lock another thread held at the fork (seen in CI: a restarted engine that never started, and
    uvloop blocks its loop on such a child). The variable is removed so that the child's own
    children do not inherit it; a supervisor that died before the signal was armed (the parent
    is no longer it) ends the child at once.
    """
    supervisor = environ.pop(SUPERVISOR_PID_VARIABLE, None)
    if supervisor is None or sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != supervisor:
        os.kill(os.getpid(), signal.SIGKILL)


class Supervisor:
    def __init__(
        self,
        config: SupervisorConfig,
        children: Sequence[ChildSpec],
        *,
        clock: Clock | None = None,
        describe: Mapping[str, Any] | None = None,
        rng: Rng | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.config = config
        self.children = [Child(spec) for spec in children]
        self._clock = clock or SystemClock()
        self._rng: Rng = rng if rng is not None else random.Random()
        self._describe = dict(describe or {})
        self._stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._server: asyncio.Server | None = None
        self._started_ns = 0
        self.registry = port_registry()
        self.registry.register(SupervisorCollector(self.children))

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "supervisor not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Start everything, supervise until ``stop`` (or SIGTERM/SIGINT), stop in order; 0."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        on_signal = stop_then_force(stop)  # a second signal while children stop: exit at once
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            self._started_ns = self._clock.now_ns()
            self._server = await asyncio.start_server(
                self._serve_http, self.config.host, self.config.port
            )
            log.info("supervisor /health on http://%s:%d/health", self.config.host, self.port)
            for rank in sorted({c.spec.rank for c in self.children}):
                if stop.is_set():
                    break
                await self._start_rank(rank, stop)
            await stop.wait()
            return 0
        finally:
            try:
                await self.stop()
            finally:
                # only now: a signal during the stop above must reach ``on_signal``, not
                # Python's default handler (a KeyboardInterrupt traceback)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    async def _start_rank(self, rank: int, stop: asyncio.Event) -> None:
        group = [c for c in self.children if c.spec.rank == rank]
        for child in group:
            self._tasks[child.spec.name] = asyncio.create_task(
                self._keep_running(child), name=f"supervise {child.spec.name}"
            )
        all_ready: asyncio.Future[Any] = asyncio.ensure_future(_all_ready(group))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                (all_ready, stopped),
                timeout=self.config.start_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            all_ready.cancel()
            stopped.cancel()
        late = [c.spec.name for c in group if not c.ready.is_set()]
        if late and not stop.is_set():
            log.warning(
                "rank %d: %s not serving after %.3g s; going on",
                rank,
                late,
                self.config.start_timeout_s,
            )

    async def stop(self) -> None:
        """Stop every child in descending rank; bounded by ``stop_timeout_s`` per rank."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for rank in sorted({c.spec.rank for c in self.children}, reverse=True):
            group = [c for c in self.children if c.spec.rank == rank]
            await asyncio.gather(*(self._stop_child(c) for c in group))
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _stop_child(self, child: Child) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            if child.state is not ChildState.FAILED:
                child.state = ChildState.STOPPED
            return
        child.state = ChildState.STOPPING
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.config.stop_timeout_s)
        except TimeoutError:
            log.warning(
                "%s (pid %d) still running %.3g s after SIGTERM: SIGKILL",
                child.spec.name,
                process.pid,
                self.config.stop_timeout_s,
            )
        _signal_group(process.pid, signal.SIGKILL)  # stragglers of its group, if any
        await process.wait()
        child.last_exit_code = process.returncode
        child.state = ChildState.STOPPED
        log.info("%s stopped (exit %s)", child.spec.name, process.returncode)

    # --- one child -----------------------------------------------------------------------------

    async def _keep_running(self, child: Child) -> None:
        cfg = self.config
        while not self._stopping.is_set():
            exit_code = await self._run_once(child)
            if self._stopping.is_set():
                return
            child.last_exit_code = exit_code
            if exit_code == EXIT_CONFIG_ERROR:
                child.state = ChildState.FAILED
                child.ready.set()  # nothing to wait for
                log.error(
                    "%s exited with a configuration error (2): not restarted", child.spec.name
                )
                return
            started = child.started_ns or 0
            if self._clock.now_ns() - started >= cfg.healthy_after_s * 1e9:
                child.crashes_in_a_row = 0
            child.crashes_in_a_row += 1
            delay = cfg.restart_delay_s(child.crashes_in_a_row, self._rng)
            child.backoffs.append(delay)
            child.state = ChildState.BACKOFF
            log.warning("%s exited with %s; restart in %.3g s", child.spec.name, exit_code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if not self._stopping.is_set():
                child.restarts += 1

    async def _run_once(self, child: Child) -> int:
        spec = child.spec
        child.state = ChildState.STARTING
        child.process = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env, SUPERVISOR_PID_VARIABLE: str(os.getpid())},
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own group: signals are ours to forward, in order
        )
        child.started_ns = self._clock.now_ns()
        log.info("%s started (pid %d)", spec.name, child.process.pid)
        watch = asyncio.create_task(self._watch_ready(child), name=f"ready {spec.name}")
        try:
            return await child.process.wait()
        finally:
            watch.cancel()
            _signal_group(child.process.pid, signal.SIGKILL)  # leave nothing of its group behind

    async def _watch_ready(self, child: Child) -> None:
        """Running once the child's ``/health`` answers 200 (an engine answers 503 while it
        starts, e.g. compiling JAX), not merely once its port accepts."""
        port = child.spec.port
        while port is not None:
            answer = await get_json(f"http://127.0.0.1:{port}/health", timeout_s=1.0)
            if answer.status == 200:
                break
            await asyncio.sleep(_PORT_POLL_S)
        if child.state is ChildState.STARTING:
            child.state = ChildState.RUNNING
        child.ready.set()

    # --- /health -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = self._clock.now_ns()
        children = [c.health(now) for c in self.children]
        healthy = all(c.state is ChildState.RUNNING for c in self.children)
        return {
            "status": "ok" if healthy else "degraded",
            "service": "supervisor",
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round((now - self._started_ns) / 1e9, 3),
            **self._describe,
            "children": children,
        }

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Just enough HTTP/1.1 for ``GET /health`` (one request per connection)."""
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            ctype = "application/json"
            if path == "/health":
                status, body = "200 OK", orjson.dumps(self.health())
            elif path == "/metrics":
                status, body, ctype = "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
            else:
                status = "404 Not Found"
                body = orjson.dumps({"error": {"code": "not_found", "message": f"no route {path}"}})
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, OSError, UnicodeDecodeError) as exc:
            log.debug("health request dropped: %r", exc)  # the client went away or sent garbage
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class SupervisorCollector(Collector):
    """The children as metrics, read at scrape time; label ``child`` (the layout's names)."""

    def __init__(self, children: Sequence[Child]) -> None:
        self._children = children

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "nautilus_supervisor_restarts",
            "restarts of each child after it exited",
            labels=["child"],
        )
        state = GaugeMetricFamily(
            "nautilus_supervisor_child_state",
            "1 for the state each child is in, 0 for the others",
            labels=["child", "state"],
        )
        crashes = GaugeMetricFamily(
            "nautilus_supervisor_crashes_in_a_row",
            "exits of each child without healthy_after_s of uptime between them",
            labels=["child"],
        )
        backoff = GaugeMetricFamily(
            "nautilus_supervisor_last_backoff_seconds",
            "the restart delay last decided for each child (absent before its first exit)",
            labels=["child"],
        )
        for child in self._children:
            name = child.spec.name
            restarts.add_metric([name], child.restarts)
            for each in ChildState:
                state.add_metric([name, each.value], 1.0 if child.state is each else 0.0)
            crashes.add_metric([name], child.crashes_in_a_row)
            if child.backoffs:
                backoff.add_metric([name], child.backoffs[-1])
        yield from (restarts, state, crashes, backoff)


async def _all_ready(group: Sequence[Child]) -> None:
    for child in group:
        await child.ready.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)

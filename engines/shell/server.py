"""Serving engines: uvicorn inside an already running loop, one or many per process.

``run_engine`` serves one engine's app and starts the engine; ``run_engines`` does it for several
(embedded mode, ``nautilus up``); ``main_engine`` is the blocking entry of ``nautilus engine NAME``.
uvicorn never touches signals here (the process runner owns SIGINT/SIGTERM) and never configures
logging; each server binds its own socket, so port 0 works and the bound port is known at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn

from engines.shell.app import EngineApp, create_app
from engines.shell.config import ConfigError, load_config
from engines.shell.lifecycle import Engine, EngineState, Route
from engines.shell.registry import EngineSpec, UnknownEngine, engine_spec
from realtime.bus import Bus, BusUnavailable, MemoryBus
from realtime.clock import Clock, SystemClock
from realtime.config import load_settings
from realtime.ports import PortInUse, is_port_in_use
from realtime.shutdown import stop_then_force
from realtime.storage import STORAGE_PREFIX, Storage, StorageConfig, StoreUnavailable

log = logging.getLogger(__name__)

#: Extra time past the graceful timeout before a server task is cancelled outright.
SERVER_STOP_GRACE_S = 1.0
#: httptools parses HTTP about twice as fast as h11; used whenever it is installed.
HTTP_IMPLEMENTATION = "httptools" if importlib.util.find_spec("httptools") else "h11"

#: Opens the process's bus (``realtime.distributed.open_bus`` picks it from the environment).
BusFactory = Callable[[Clock], Awaitable[Bus]]


def package_version() -> str:
    try:
        return importlib.metadata.version("nautilus-realtime")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class EmbeddedServer(uvicorn.Server):
    """uvicorn's server minus its signal capture: the process runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(slots=True)
class HttpServer:
    """One uvicorn server running as a task of the current loop."""

    server: EmbeddedServer
    task: asyncio.Task[None]
    host: str
    port: int

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the graceful timeout, then
        cancel whatever is left."""
        self.server.should_exit = True
        bound = (self.server.config.timeout_graceful_shutdown or 0.0) + SERVER_STOP_GRACE_S
        done, _ = await asyncio.wait({self.task}, timeout=bound)
        if not done:
            log.warning("HTTP server on port %d not stopped after %.3g s: cancel", self.port, bound)
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=SERVER_STOP_GRACE_S)


async def serve_app(
    app: EngineApp, *, host: str, port: int, graceful_timeout_s: float = 5.0
) -> HttpServer:
    """Serve ``app`` on ``host:port`` (0 = any free port) and return once it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        loop="none",  # the running loop is the caller's (uvloop under main_engine)
        http=HTTP_IMPLEMENTATION,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),  # uvicorn takes whole seconds
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http {host}:{port}")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises the startup error
            raise RuntimeError(f"HTTP server on {host}:{port} exited during startup")
        await asyncio.sleep(0.005)
    bound_port: int = sock.getsockname()[1]
    return HttpServer(server, task, host, bound_port)


@dataclass(slots=True)
class RunningEngine:
    """An engine with its REST server; ``await stop()`` shuts both down in order."""

    engine: Engine[Any]
    http: HttpServer

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def host(self) -> str:
        return self.http.host

    async def stop(self) -> None:
        """Stop serving REST first (stop accepting), then the engine's bounded drain."""
        await self.http.stop()
        await self.engine.stop()


async def run_engine(
    engine: Engine[Any],
    app: EngineApp | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    routes: Sequence[Route] | None = None,
) -> RunningEngine:
    """Serve ``engine`` (default app: ``create_app`` with the package version and ``routes``,
    by default the registry's for the engine) on its configured host and port unless given,
    then start it. REST comes up first, so ``/health`` answers ``starting`` during a slow
    ``on_start`` (e.g. a JAX warm-up)."""
    host = engine.config.host if host is None else host
    port = engine.config.port if port is None else port
    try:
        http = await serve_app(
            app or create_app(engine, version=package_version(), routes=routes),
            host=host,
            port=port,
            graceful_timeout_s=engine.config.drain_timeout_s,
        )
    except OSError as exc:
        if not is_port_in_use(exc):
            raise
        variable = f"NAUTILUS_{engine.name.upper()}_PORT"
        raise PortInUse(f"engine {engine.name}", host, port, variable) from None
    try:
        await engine.start()
    except BaseException:
        await http.stop()
        raise
    return RunningEngine(engine, http)


@dataclass(slots=True)
class RunningEngines:
    """Several engines served from one process (embedded mode), stopped in reverse order."""

    running: list[RunningEngine]

    def __getitem__(self, name: str) -> RunningEngine:
        for item in self.running:
            if item.engine.name == name:
                return item
        raise KeyError(name)

    async def wait_failed(self) -> Engine[Any]:
        """Return the first engine that fails."""
        waits = {asyncio.ensure_future(r.engine.wait_failed()): r.engine for r in self.running}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return waits[next(iter(done))]

    async def stop(self) -> None:
        for item in reversed(self.running):
            await item.stop()


async def run_engines(engines: Sequence[Engine[Any]]) -> RunningEngines:
    """Start ``engines`` in order on their configured ports; if one fails to start, stop the
    ones already running and re-raise."""
    group = RunningEngines([])
    try:
        for engine in engines:
            group.running.append(await run_engine(engine))
    except BaseException:
        await group.stop()
        raise
    return group


def build_engine(
    spec: EngineSpec,
    environ: Mapping[str, str],
    *,
    bus: Bus,
    clock: Clock,
    storage: Storage | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Engine[Any]:
    """Import the engine and read its config from ``environ`` (the registry's port as the
    default); ``overrides`` (command-line flags) win over the environment. ``storage`` is the
    platform's (opened and closed by the caller); without it the engine keeps a bounded
    memory store of its own."""
    config = engine_config(spec, environ, overrides)
    return spec.load()(config, bus=bus, clock=clock, storage=storage)


def engine_config(
    spec: EngineSpec, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> Any:
    """The engine's config as ``build_engine`` reads it; ``ConfigError`` names a bad variable."""
    config = load_config(spec.load().config_type, environ, defaults=spec.config_defaults())
    return dataclasses.replace(config, **overrides) if overrides else config


async def memory_bus(clock: Clock) -> Bus:
    return MemoryBus(clock=clock)


def main_engine(
    name: str,
    argv: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    bus_factory: BusFactory = memory_bus,
    registry: dict[str, EngineSpec] | None = None,
) -> int:
    """``nautilus engine NAME [--host H] [--port P]``: run one engine until SIGINT/SIGTERM.

    The configuration (the engine's and the platform storage's, ``NAUTILUS_DB_*``) is checked
    before ``bus_factory`` opens the bus. Returns 0 after a clean
    stop, 1 if the engine failed or its bus is unreachable (``BusUnavailable``, which names the
    URL), 2 for a usage or configuration error.
    """
    parser = argparse.ArgumentParser(
        prog=f"nautilus engine {name}",
        description=f"Run the {name} engine; settings come from NAUTILUS_{name.upper()}_*.",
    )
    parser.add_argument("--host", help="override the configured host")
    parser.add_argument("--port", type=int, help="override the configured port (0 = any)")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    environ = os.environ if environ is None else environ
    flags = {"host": args.host, "port": args.port}
    overrides = {key: value for key, value in flags.items() if value is not None}
    clock = SystemClock()
    try:
        spec = engine_spec(name, registry)
        config = engine_config(spec, environ, overrides)  # checked before connecting anywhere
        storage_config = load_settings(StorageConfig, environ, STORAGE_PREFIX)
    except (UnknownEngine, ConfigError, ValueError) as exc:
        print(f"nautilus engine {name}: {exc}", file=sys.stderr)
        return 2

    async def serve() -> int:
        try:
            bus = await bus_factory(clock)
        except BusUnavailable as exc:
            print(f"nautilus engine {name}: {exc}", file=sys.stderr)
            return 1
        storage = Storage(storage_config, clock=clock)
        try:
            engine = spec.load()(config, bus=bus, clock=clock, storage=storage)
        except ValueError as exc:
            print(f"nautilus engine {name}: {exc}", file=sys.stderr)
            await bus.close()
            return 2
        await storage.open()
        try:
            return await _serve_until_signalled(engine, bus, spec.routes(engine))
        finally:
            await storage.close(max(0.1, 0.8 * config.drain_timeout_s))

    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        return runner.run(serve())


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows: the standard loop
        return None
    return uvloop.new_event_loop


async def _serve_until_signalled(engine: Engine[Any], bus: Bus, routes: Sequence[Route]) -> int:
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    on_signal = stop_then_force(stop_requested)  # a second signal during the stop exits at once
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            running = await run_engine(engine, routes=routes)
        except PortInUse as exc:
            print(f"nautilus: {exc}", file=sys.stderr)
            return 1
        except StoreUnavailable as exc:  # the engine logged it as one line too
            print(f"nautilus: cannot start {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # the engine or uvicorn already logged the traceback
            log.error("engine %s did not start: %r", engine.name, exc)
            return 1
        log.info("engine %s serving on http://%s:%d", engine.name, running.host, running.port)
        await _first_of(stop_requested.wait(), engine.wait_failed())
        await running.stop()
        return 1 if engine.state is EngineState.FAILED else 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await bus.close()


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()

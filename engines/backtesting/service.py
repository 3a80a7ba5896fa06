"""Backtesting engine (port 8110): backtest jobs over the bundled history, off the event loop.

``POST /backtests`` validates the request (``jobs.parse_job``: a 400 names the field), loads the
bars and starts a job: ``jobs.run_job`` on the engine's compute threads (``run_in_executor``),
event-driven (the live Strategy, Risk and Portfolio engines under the deterministic driver,
``replay``) or vectorized (``core``'s JAX sweep). While it runs, its progress (percent, simulated
time, trades so far, ETA) is published on ``backtest.<job>`` (latest-value) every
``progress_interval_s``; the final document (fills, equity, statistics, grid summary, Deflated
Sharpe and PBO, hash) is published there too and stored (``self.storage.records``, stream
``backtests``, key = job id). ``DELETE`` cancels a running job. A job that raises (a strategy
callback, bad data) ends ``failed`` with the traceback in its ``log``; the engine goes on.

With ``cluster`` set (``NAUTILUS_BACKTESTING_CLUSTER=tcp://host:8786``) a vectorized grid's
chunks run on that Dask cluster (``cluster.DaskGrid``; same result as in process); unset, in
this process. Event-driven jobs always run here.

Job ids are ``bt<n>-<hash of the request>`` (``n`` counts this process's jobs). Limits: jobs are
kept in memory (the newest ``max_jobs``; older ones are read back from the store); a job is not
resumed after a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import msgspec

from engines.backtesting import core
from engines.backtesting.jobs import MA_CROSS, BacktestBody, JobSpec, parse_job, run_job
from engines.backtesting.replay import Cancelled
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.errors import ConflictError, NotFoundError
from protocol.channels import DeliveryClass
from realtime.bus import Bus
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage

DEFAULT_STRATEGIES = json.dumps({"ma_cross": MA_CROSS}, separators=(",", ":"))


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestingConfig(EngineConfig):
    """Backtesting settings (``NAUTILUS_BACKTESTING_<FIELD>``)."""

    name: str = field(default="backtesting", metadata={"help": "engine name", "env": False})
    strategies: str = field(
        default=DEFAULT_STRATEGIES,
        metadata=described("JSON object: strategy name a job may ask for → module:Class"),
    )
    max_grid: int = field(
        default=250_000, metadata=described("most grid points of a vectorized job")
    )
    max_event_grid: int = field(
        default=16, metadata=described("most grid points of an event-driven job")
    )
    max_event_bars: int = field(
        default=2_000_000, metadata=described("most bars × symbols × points of an event job")
    )
    pbo_blocks: int = field(default=16, metadata=described("CSCV blocks of the PBO (even)"))
    progress_interval_s: float = field(
        default=0.25, metadata=described("seconds between progress messages of a job")
    )
    max_jobs: int = field(default=256, metadata=described("jobs kept in memory"))
    cluster: str = field(
        default="",
        metadata=described(
            "Dask scheduler address (tcp://host:8786) a vectorized grid's chunks fan out over "
            "(the cluster extra); empty = in this process"
        ),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        self.strategy_paths()
        if self.pbo_blocks < 2 or self.pbo_blocks % 2:
            raise ValueError("pbo_blocks must be even and >= 2")
        if min(self.max_grid, self.max_event_grid, self.max_event_bars, self.max_jobs) < 1:
            raise ValueError("the limits must be >= 1")
        if self.progress_interval_s <= 0:
            raise ValueError("progress_interval_s must be > 0")

    def strategy_paths(self) -> dict[str, str]:
        try:
            paths = msgspec.json.decode(self.strategies, type=dict[str, str])
        except msgspec.DecodeError as exc:
            raise ValueError(f"strategies: {exc}") from None
        return paths


@dataclass(slots=True)
class Job:
    """One job's live state (what ``GET /backtests/{id}`` shows while it runs)."""

    id: str
    body: BacktestBody
    status: str = "queued"
    fraction: float = 0.0
    simulated_ns: int = 0
    trades: int = 0
    started_ns: int = 0
    log: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, simulated_ns: int, trades: int) -> None:
        """Called from the worker thread: plain assignments, read by the loop."""
        self.fraction, self.simulated_ns, self.trades = fraction, simulated_ns, trades

    def view(self, now_ns: int) -> dict[str, Any]:
        elapsed = max(0, now_ns - self.started_ns) / 1e9 if self.started_ns else 0.0
        eta = elapsed * (1 - self.fraction) / self.fraction if 0 < self.fraction < 1 else None
        done = self.status in ("done", "failed", "cancelled")
        return {
            "job": self.id,
            "status": self.status,
            "percent": round(100.0 * (1.0 if self.status == "done" else self.fraction), 3),
            "simulated_ns": self.simulated_ns,
            "trades": self.trades,
            "eta_s": 0.0 if done else eta,
            "request": msgspec.to_builtins(self.body),
            "log": list(self.log),
        }


class BacktestingEngine(Engine[BacktestingConfig]):
    config_type = BacktestingConfig

    def __init__(
        self, config: BacktestingConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.strategy_paths = config.strategy_paths()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.results: RecordStore[dict[str, Any]] = self.storage.records(
            self.name, "backtests", dict, key=itemgetter("job"), time=itemgetter("event_ns")
        )
        self._count = 0
        self.grid_map: core.ChunkMap = core.map_in_process
        self._cluster: Any = None  # a cluster.DaskGrid when ``config.cluster`` is set

    async def on_start(self) -> None:
        if self.config.cluster:
            try:
                from engines.backtesting.cluster import DaskGrid
            except ImportError as exc:
                raise RuntimeError(
                    "NAUTILUS_BACKTESTING_CLUSTER is set but dask.distributed is not installed "
                    f"(pip install 'nautilus-realtime[cluster]'): {exc}"
                ) from exc
            self._cluster = DaskGrid(self.config.cluster)
            self.grid_map = self._cluster

    async def on_stop(self) -> None:
        if self._cluster is not None:
            await self.run_in_executor(self._cluster.close)

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo("backtest.*", DeliveryClass.LATEST_VALUE, "job progress, then its result"),
        )

    def health_extra(self) -> dict[str, object]:
        running = sum(1 for j in self.jobs.values() if j.status in ("queued", "running"))
        return {"jobs": len(self.jobs), "running": running, "cluster": self.config.cluster or None}

    # ── jobs ─────────────────────────────────────────────────────────────────────────────────

    async def submit(self, body: BacktestBody) -> Job:
        """Validate and load (off the loop; ``JobInputError`` names the field), then start."""
        cfg = self.config
        spec = await self.run_in_executor(
            parse_job, body, self.strategy_paths, max_grid=cfg.max_grid,
            max_event_grid=cfg.max_event_grid, max_event_bars=cfg.max_event_bars,
            blocks=cfg.pbo_blocks,
        )  # fmt: skip
        self._count += 1
        digest = hashlib.sha256(msgspec.json.encode(body)).hexdigest()[:10]
        job = Job(f"bt{self._count}-{digest}", body)
        self.jobs[job.id] = job
        while len(self.jobs) > cfg.max_jobs:
            oldest = next(iter(self.jobs))
            if self.jobs[oldest].status in ("queued", "running"):
                break
            del self.jobs[oldest]
        self.spawn(lambda: self._run(job, spec), name=f"job {job.id}")
        return job

    async def _run(self, job: Job, spec: JobSpec) -> None:
        job.status, job.started_ns = "running", self.clock.now_ns()
        await self._publish(job)
        work = asyncio.ensure_future(
            self.run_in_executor(
                run_job, spec, job.id, progress=job.progress, cancel=job.cancel,
                blocks=self.config.pbo_blocks, map_chunks=self.grid_map,
            )
        )  # fmt: skip
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self.config.progress_interval_s)
                if not work.done():
                    await self._publish(job)
            job.result = work.result()
            job.status = "done"
        except asyncio.CancelledError:
            job.cancel.set()
            job.status = "cancelled"
            raise
        except Exception as exc:
            job.status = "cancelled" if isinstance(exc, Cancelled) else "failed"
            job.log.append(f"{type(exc).__name__}: {exc}")
            if job.status == "failed":
                job.log.append("".join(traceback.format_exception(exc)))
                self.log.warning("backtest %s failed: %s", job.id, exc)
        finally:
            if job.status != "running":
                await self._finish(job)

    async def _finish(self, job: Job) -> None:
        document = {**job.view(self.clock.now_ns()), "event_ns": self.clock.now_ns()}
        document["result"] = job.result
        self.results.append([document])
        await self.publish(f"backtest.{job.id}", _without_series(document))

    async def _publish(self, job: Job) -> None:
        view = job.view(self.clock.now_ns())
        view.pop("request")
        await self.publish(f"backtest.{job.id}", view)

    def cancel(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no running job {job_id}", parameter="id")
        if job.status not in ("queued", "running"):
            raise ConflictError(f"job {job_id} is already {job.status}", parameter="id")
        job.cancel.set()
        job.log.append(f"cancel requested at {self.clock.now_ns()} ns")
        return job

    async def document(self, job_id: str) -> dict[str, Any]:
        """A job's state, with its result once done (from memory, else the store)."""
        job = self.jobs.get(job_id)
        if job is not None:
            return {**job.view(self.clock.now_ns()), "result": job.result}
        stored = await self.results.latest(job_id)
        if stored is None:
            raise NotFoundError(f"no backtest {job_id}", parameter="id")
        return stored


def _without_series(document: dict[str, Any]) -> dict[str, Any]:
    """The bus copy of a result: the summary, not the fills and equity (REST has those)."""
    result = document.get("result")
    if result is None:
        return document
    slim = {k: v for k, v in result.items() if k not in ("fills", "equity", "grid")}
    return {**document, "result": slim}

"""The supervisor with real child processes (small Python scripts): restart with backoff, /health,
start and stop order, stragglers killed, configuration errors not retried."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from realtime.supervisor import (
    SUPERVISOR_PID_VARIABLE,
    ChildSpec,
    ChildState,
    Supervisor,
    SupervisorConfig,
)
from tests.support import until

#: Appends "<name> start <time>" to $LOG, runs $RUN_S seconds (forever if unset), exits with
#: $CODE; on SIGTERM appends "<name> stop <time>" and exits 0, unless $IGNORE_TERM is set.
#: With $LISTEN it serves HTTP on that port once $LISTEN_AFTER_S has passed: /health answers 503
#: ("starting") until $READY_AFTER_S more seconds have passed, then 200.
CHILD = """
import os, signal, sys, time
name, log = os.environ["NAME"], os.environ["LOG"]
def note(what):
    with open(log, "a") as f:
        f.write(f"{name} {what} {time.time()}\\n")
def on_term(*_):
    note("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else on_term)
note("start")
if os.environ.get("LISTEN"):
    import http.server, threading
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ready = time.time() >= ready_at
            body = b'{"status": "ok"}' if ready else b'{"status": "starting"}'
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    time.sleep(float(os.environ.get("LISTEN_AFTER_S", "0")))
    ready_at = time.time() + float(os.environ.get("READY_AFTER_S", "0"))
    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["LISTEN"])), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    note("listening")
run_s = os.environ.get("RUN_S")
deadline = time.time() + (float(run_s) if run_s else 3600)
while time.time() < deadline:
    time.sleep(0.01)
sys.exit(int(os.environ.get("CODE", "0")))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child(name: str, log: Path, rank: int = 0, port: int | None = None, **env: str) -> ChildSpec:
    variables = {"NAME": name, "LOG": str(log), **env}
    if port is not None:
        variables["LISTEN"] = str(port)
    return ChildSpec(name, (sys.executable, "-c", CHILD), rank, variables, port)


def events(log: Path) -> list[tuple[str, str, float]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(name, what, float(at)) for name, what, at in rows]


def config(**overrides: float) -> SupervisorConfig:
    values = {"port": 0, "restart_min_s": 0.1, "restart_max_s": 0.4, "stop_timeout_s": 2.0}
    values |= overrides
    return SupervisorConfig(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(15):
            assert await task == 0
        for c in supervisor.children:  # nothing may survive the supervisor
            if c.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.process.pid, signal.SIGKILL)


async def get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], body


class TopDraw:
    """Backoff randomness that always draws 1.0: every delay is its window's ceiling."""

    def random(self) -> float:
        return 1.0


def test_restart_delay_is_full_jitter_under_a_ceiling_that_doubles_up_to_the_cap() -> None:
    cfg = SupervisorConfig(restart_min_s=0.5, restart_max_s=30.0)
    ceilings = [cfg.restart_delay_s(n, TopDraw()) for n in range(1, 9)]
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30]
    rng = random.Random(1)
    drawn = [cfg.restart_delay_s(n, rng) for n in range(1, 9)]
    assert all(0 <= d <= c for d, c in zip(drawn, ceilings, strict=True))
    assert drawn != ceilings
    with pytest.raises(ValueError):
        SupervisorConfig(restart_min_s=2.0, restart_max_s=1.0)


async def test_crashing_child_restarts_with_growing_bounded_backoff(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = config()
    supervisor = Supervisor(cfg, [child("crash", log, RUN_S="0", CODE="3")], rng=random.Random(3))
    async with running(supervisor):
        await until(lambda: len(events(log)) >= 6)
        health = supervisor.health()["children"][0]
    # the policy's decisions, not the machine's scheduling: full-jitter draws under the
    # ceilings 0.1, 0.2, 0.4 (the cap), 0.4, 0.4 -- the same draws a same-seeded rng gives
    reference = random.Random(3)
    expected = [cfg.restart_delay_s(n, reference) for n in range(1, 6)]
    backoffs = list(supervisor.children[0].backoffs)
    assert backoffs[:5] == expected
    assert all(d <= c for d, c in zip(expected, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True))
    # and each was honoured: no restart came sooner than its delay after the previous start
    starts = [at for _, what, at in events(log) if what == "start"]
    gaps = [b - a for a, b in itertools.pairwise(starts)][:5]
    assert all(gap >= delay for gap, delay in zip(gaps, expected, strict=True))
    assert health["last_backoff_s"] == backoffs[-1]
    assert health["restarts"] >= 5 and health["last_exit_code"] == 3


async def test_a_healthy_period_resets_the_backoff(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = config(restart_min_s=0.05, restart_max_s=5.0, healthy_after_s=0.3)
    supervisor = Supervisor(cfg, [child("flaky", log, RUN_S="0.4", CODE="1")], rng=TopDraw())
    async with running(supervisor):
        await until(lambda: len(events(log)) >= 4)
    # every run lasted 0.4 s ≥ healthy_after_s: the backoff was reset each time, so every delay
    # came from the first window (else its ceiling would grow 0.05, 0.1, 0.2, ...); checked on
    # the policy's decisions, not on scheduling
    backoffs = list(supervisor.children[0].backoffs)
    assert len(backoffs) >= 3 and set(backoffs) == {0.05}


async def test_configuration_error_is_not_retried(tmp_path: Path) -> None:
    log = tmp_path / "log"
    supervisor = Supervisor(config(), [child("bad", log, RUN_S="0", CODE="2")])
    async with running(supervisor):
        await until(lambda: supervisor.children[0].state is ChildState.FAILED)
        await asyncio.sleep(0.4)
        assert len(events(log)) == 1
        assert supervisor.health()["status"] == "degraded"


async def test_health_endpoint_lists_every_child(tmp_path: Path) -> None:
    log = tmp_path / "log"
    specs = [child("a", log), child("b", log, rank=1, RUN_S="0", CODE="5")]
    cfg = config(restart_min_s=2.0, restart_max_s=2.0)
    # the delay is exactly 2 s (the ceiling): b stays in backoff while /health is read
    supervisor = Supervisor(cfg, specs, describe={"bus": "redis://x"}, rng=TopDraw())
    async with running(supervisor):
        await until(lambda: supervisor.children[1].state is ChildState.BACKOFF)
        status, body = await get(supervisor.port, "/health")
        missing, _ = await get(supervisor.port, "/nope")
        a_pid = supervisor.children[0].pid
        assert a_pid is not None and os.getpgid(a_pid) == a_pid  # its own process group
    health = orjson.loads(body)
    assert status == "HTTP/1.1 200 OK" and missing == "HTTP/1.1 404 Not Found"
    assert health["bus"] == "redis://x" and health["status"] == "degraded"
    a, b = health["children"]
    assert (a["name"], a["state"], a["restarts"], a["last_exit_code"]) == ("a", "running", 0, None)
    assert a["pid"] == a_pid
    assert (b["name"], b["state"], b["pid"], b["last_exit_code"]) == ("b", "backoff", None, 5)


async def test_ranks_start_in_order_and_stop_backwards(tmp_path: Path) -> None:
    log = tmp_path / "log"
    specs = [
        child("feed", log, rank=2),
        child("engine", log, rank=1, port=free_port(), LISTEN_AFTER_S="0.3"),
        child("hub", log, rank=0, port=free_port(), LISTEN_AFTER_S="0.3"),
    ]
    supervisor = Supervisor(config(), specs)
    async with running(supervisor):
        await until(lambda: len(events(log)) >= 5)
    order = [(name, what) for name, what, _ in events(log)]
    assert order[:5] == [
        ("hub", "start"),
        ("hub", "listening"),
        ("engine", "start"),
        ("engine", "listening"),
        ("feed", "start"),
    ]
    assert order[5:] == [("feed", "stop"), ("engine", "stop"), ("hub", "stop")]
    assert [c.state for c in supervisor.children] == [ChildState.STOPPED] * 3


async def test_a_child_answering_starting_is_not_running_yet(tmp_path: Path) -> None:
    """Readiness is /health answering 200, not the port accepting: an engine still compiling
    answers 503 ``starting`` and the next rank waits for it."""
    log = tmp_path / "log"
    port = free_port()
    specs = [child("engine", log, rank=0, port=port, READY_AFTER_S="0.5"), child("feed", log, 1)]
    supervisor = Supervisor(config(), specs)
    async with running(supervisor):
        await until(lambda: ("engine", "listening") in [(n, w) for n, w, _ in events(log)])
        assert supervisor.children[0].state is ChildState.STARTING  # listening, not ready
        await until(lambda: supervisor.children[0].state is ChildState.RUNNING)
        await until(lambda: len(events(log)) >= 3)
    starts = {name: at for name, what, at in events(log) if what in ("start", "listening")}
    listening = next(at for name, what, at in events(log) if what == "listening")
    assert starts["feed"] >= listening + 0.5  # the feed waited for the engine's 200


async def test_straggler_is_killed_after_the_stop_bound(tmp_path: Path) -> None:
    log = tmp_path / "log"
    supervisor = Supervisor(config(stop_timeout_s=0.5), [child("stuck", log, IGNORE_TERM="1")])
    async with running(supervisor) as stop:
        await until(lambda: len(events(log)) >= 1)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        stop.set()
    took = time.monotonic() - started
    assert 0.5 <= took < 2.0
    assert supervisor.children[0].last_exit_code == -signal.SIGKILL


#: A supervised child that arms its death signal, writes "<pid> <variable as inherited>
#: <parent pid> <variable after>" to $LOG, then waits to be killed.
ARMED = """
import os, time
from realtime.supervisor import SUPERVISOR_PID_VARIABLE, die_with_supervisor
inherited = os.environ.get(SUPERVISOR_PID_VARIABLE)
die_with_supervisor()
after = os.environ.get(SUPERVISOR_PID_VARIABLE, "unset")
with open(os.environ["LOG"] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {inherited} {os.getppid()} {after}")
os.rename(os.environ["LOG"] + ".tmp", os.environ["LOG"])
time.sleep(3600)
"""

#: A supervisor in its own process, running one ARMED child.
SUPERVISING = """
import asyncio, os, sys
from realtime.supervisor import ChildSpec, Supervisor, SupervisorConfig
armed = ChildSpec("armed", (sys.executable, "-c", sys.argv[1]), 0, {"LOG": sys.argv[2]}, None)
asyncio.run(Supervisor(SupervisorConfig(port=0), [armed]).run())
"""


def gone(pid: int) -> bool:
    """No such process any more, or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_child_arms_its_own_death_signal_and_goes_with_a_killed_supervisor(
    tmp_path: Path,
) -> None:
    # no preexec_fn: the supervisor runs no Python between fork and exec (a deadlock there left a
    # restarted engine never starting in CI); the child arms the signal itself
    log = tmp_path / "armed"
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISING, ARMED, str(log)
    )
    try:
        await until(log.exists, timeout_s=30)
        pid, inherited, parent, after = log.read_text().split()
        assert inherited == parent == str(supervisor.pid)
        assert after == "unset"  # the child's own children do not inherit it
        supervisor.kill()
        await supervisor.wait()
        await until(lambda: gone(int(pid)), timeout_s=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            supervisor.kill()
        if log.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(log.read_text().split()[0]), signal.SIGKILL)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_child_whose_supervisor_is_already_gone_ends_at_once(tmp_path: Path) -> None:
    log = tmp_path / "armed"
    orphan = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ARMED,
        env={**os.environ, "LOG": str(log), SUPERVISOR_PID_VARIABLE: "1"},  # not its parent
    )
    async with asyncio.timeout(30):
        assert await orphan.wait() == -signal.SIGKILL
    assert not log.exists()

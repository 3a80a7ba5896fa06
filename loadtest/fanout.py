"""The fan-out benchmark: each scenario runs a server process and a generator process, then reports.

    python -m loadtest.fanout [--quick] [--scenario NAME ...] [--library picows] [--out PATH]
                              [--hub-env NAUTILUS_HUB_COALESCE_MAX_S=0 ...] [--no-floor]

Per scenario: start the server (hub or naive baseline) pinned to core 0, start the generator
pinned to core 1, wait until every client is subscribed, start publishing, warm up, then measure a
window: delivered messages/s, latency percentiles, hub CPU (user+sys from ``/proc/<pid>/stat``)
and RSS. After the window the publisher stops, the generator drains and reports exact losses
against the final ``seq``. Idle scenarios measure hub RSS per subscribed connection instead.
Where the latency goes: the hub under test times its own side of each tick over the window
(``hub p99``: publish → its last socket write), and after each fixed-rate scenario
``loadtest.send_floor`` times N bare loopback writes on the same cores (``floor p99``).
Children run in their own process groups and are killed on every exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from loadtest.generator import GENERATOR_BOUND_PCT
from loadtest.report import aligned, machine, write_results
from loadtest.scenarios import BY_NAME, SCENARIOS, SERVER_MODULES, Scenario, Server

ROOT = Path(__file__).resolve().parents[1]
HUB_CORE, GENERATOR_CORE = 0, 1
#: Longest wait for any child answer (5,000 handshakes on one core take a while).
ANSWER_TIMEOUT_S = 90.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Child:
    """A benchmark child process driven by lines on stdin, answering JSON lines on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid

    @classmethod
    async def spawn(cls, module: str, *args: str, env: dict[str, str] | None = None) -> Child:
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
            start_new_session=True,  # its own process group: killed as a whole
            limit=1 << 20,
        )
        return cls(proc)

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, event: str, timeout_s: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"child {self.pid} exited before answering {event!r}")
                answer: dict[str, Any] = orjson.loads(line)
                if answer.get("event") == event:
                    return answer

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, OSError, BrokenPipeError):
                await self.send("exit")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 3)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        await self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (proc(5): fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_scenario(
    scenario: Scenario,
    library: str = "picows",
    sample_every: int = 1,
    hub_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one scenario end to end; return its result row (see README "Output"). ``hub_env``:
    ``NAUTILUS_HUB_*`` settings for the hub under test (not the naive baseline)."""
    rate = "max" if scenario.rate is None else str(scenario.rate)
    hub_env = hub_env if scenario.server is Server.HUB else None
    server = await Child.spawn(
        SERVER_MODULES[scenario.server],
        *("--channel", scenario.channel, "--rate", rate, "--core", str(HUB_CORE)),
        env=hub_env,
    )
    generator: Child | None = None
    try:
        ready = await server.expect("ready")
        await asyncio.sleep(0.3)
        rss_empty = rss_bytes(server.pid)
        generator = await Child.spawn(
            "loadtest.generator",
            *("--url", f"ws://127.0.0.1:{ready['port']}/", "--channel", scenario.channel),
            *("--connections", str(scenario.connections), "--library", library),
            *("--core", str(GENERATOR_CORE), "--sample-every", str(sample_every)),
        )
        subscribed = await generator.expect("subscribed")
        row: dict[str, Any] = {
            "scenario": scenario.name,
            "server": scenario.server.value,
            "connections": scenario.connections,
            "rate": scenario.rate,
            "library": library,
            "target": scenario.target,
            "idle": scenario.idle,
            "subscribed": subscribed,
            "hub_env": hub_env or {},
        }
        if scenario.idle:
            await asyncio.sleep(scenario.warmup_s)
            rss_full = rss_bytes(server.pid)
            open_connections = max(1, int(subscribed["connections"]))
            row |= {
                "hub_rss_mb": round(rss_full / 2**20, 1),
                "hub_rss_empty_mb": round(rss_empty / 2**20, 1),
                "hub_bytes_per_connection": round((rss_full - rss_empty) / open_connections),
                "errors": sum(subscribed["errors"].values()),
            }
            return row
        await server.send("start")
        await server.expect("started")
        await asyncio.sleep(scenario.warmup_s)
        loop = asyncio.get_running_loop()
        # CPU is sampled over [mark sent, end answered]; a saturated generator answers late,
        # so its own mark..end interval (``window_s`` in its report) times the deliveries.
        t0, hub_cpu0, gen_cpu0 = loop.time(), cpu_seconds(server.pid), cpu_seconds(generator.pid)
        await server.send("mark")
        await generator.send("mark")
        await server.expect("marked")
        await generator.expect("marked")
        await asyncio.sleep(scenario.window_s)
        await generator.send("end")
        await generator.expect("ended")
        hub_cpu1, gen_cpu1 = cpu_seconds(server.pid), cpu_seconds(generator.pid)
        elapsed = loop.time() - t0
        generator_cpu_pct = round(100 * (gen_cpu1 - gen_cpu0) / elapsed, 1)
        rss = rss_bytes(server.pid)
        await server.send("stop")
        stopped = await server.expect("stopped")
        await generator.send(f"drain {stopped['last_seq']}")
        report = await generator.expect("report")
        row |= {
            "delivered_per_s": report["delivered_per_s"],
            "lost": report["lost"],
            "latency_publish_ms": report["latency_publish_ms"],
            "latency_event_ms": report["latency_event_ms"],
            "errors": sum(report["errors"].values()) + sum(subscribed["errors"].values()),
            "hub_cpu_pct": round(100 * (hub_cpu1 - hub_cpu0) / elapsed, 1),
            "generator_cpu_pct": generator_cpu_pct,
            # above GENERATOR_BOUND_PCT the generator, not the hub, limits the figures
            "generator_bound": generator_cpu_pct > GENERATOR_BOUND_PCT,
            "hub_rss_mb": round(rss / 2**20, 1),
            # what one hub core would deliver if the hub's share of it went to 100%
            "delivered_per_hub_cpu_s": round(
                report["delivered_per_s"] / max(1e-3, (hub_cpu1 - hub_cpu0) / elapsed)
            ),
            "published": stopped["last_seq"],
            "generator": report,
        }
        # the hub's own side of its ticks over the window (``hub_under_test.TickRecorder``)
        row |= {key: value for key, value in stopped.items() if key.startswith("hub_")}
        return row
    finally:
        if generator is not None:
            await generator.close()
        await server.close()


async def send_floor(connections: int) -> dict[str, Any]:
    """``loadtest.send_floor`` for ``connections`` sockets on the benchmark's cores (a child: it
    pins itself and forks its reader)."""
    rounds = max(300, 300_000 // connections)
    child = await Child.spawn(
        "loadtest.send_floor", "--json", "--connections", str(connections), "--rounds", str(rounds)
    )
    try:
        answer = await child.expect("floor")
    finally:
        await child.close()
    answer.pop("event")
    return answer


def ratios(rows: list[dict[str, Any]], key: str = "delivered_per_s") -> dict[str, float]:
    """``key`` (msgs/s, or msgs per hub CPU second) of each hub scenario over its baseline's."""
    by_name = {r["scenario"]: r for r in rows}
    out: dict[str, float] = {}
    for row in rows:
        base_of = BY_NAME[row["scenario"]].baseline_of if row["scenario"] in BY_NAME else None
        if base_of and base_of in by_name and row.get(key) and by_name[base_of].get(key):
            out[base_of] = round(by_name[base_of][key] / row[key], 1)
    return out


def _ms(latency: dict[str, float | None] | None, key: str) -> str:
    value = None if latency is None else latency.get(key)
    return "-" if value is None else f"{value:.2f}"


def table(rows: list[dict[str, Any]], ratio: dict[str, float]) -> str:
    head = (
        "scenario",
        "conns",
        "rate/s",
        "delivered/s",
        "lost",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "hub p99 ms",
        "floor p99 ms",
        "errors",
        "hub CPU%",
        "gen CPU%",
        "hub RSS MB",
        "gen-bound",
    )
    lines = [head]
    for r in rows:
        lat = r.get("latency_publish_ms")
        lines.append(
            (
                r["scenario"],
                str(r["connections"]),
                "idle" if r.get("idle") else "max" if r["rate"] is None else str(r["rate"]),
                "-" if "delivered_per_s" not in r else f"{r['delivered_per_s']:,.0f}",
                str(r.get("lost", "-")),
                _ms(lat, "p50"),
                _ms(lat, "p99"),
                _ms(lat, "p999"),
                _ms(lat, "max"),
                _ms(r.get("hub_publish_to_write_ms"), "p99"),
                "-" if "floor" not in r else f"{r['floor']['round_p99_ms']:.2f}",
                str(r.get("errors", "-")),
                str(r.get("hub_cpu_pct", "-")),
                str(r.get("generator_cpu_pct", "-")),
                str(r.get("hub_rss_mb", "-")),
                "-" if "generator_bound" not in r else "YES" if r["generator_bound"] else "no",
            )
        )
    text = [aligned(head, lines[1:])]
    text.append("latency: ts.publish -> receipt, per frame's oldest message (upper bound)")
    text.append(
        "hub p99: ts.publish -> the hub's last socket write of the message's tick, per message"
        " (the hub's share); floor p99: N loopback writes of one frame, nothing else"
        " (loadtest.send_floor: the kernel's share of a tick on this machine)"
    )
    bound = [r["scenario"] for r in rows if r.get("generator_bound")]
    if bound:
        text.append(
            f"generator-bound (generator > {GENERATOR_BOUND_PCT:.0f}% CPU; latency and rate"
            f" describe the generator, not the hub): {', '.join(bound)}"
        )
    per_cpu = ratios(rows, "delivered_per_hub_cpu_s")
    for name, value in ratio.items():
        text.append(
            f"{name}: {value}x the naive websockets broadcast in delivered msgs/s"
            f" ({per_cpu.get(name, '-')}x per hub CPU second)"
        )
    for r in rows:
        if "hub_bytes_per_connection" in r:
            kb = r["hub_bytes_per_connection"] / 1024
            text.append(f"{r['scenario']}: {kb:.1f} KB hub RSS per subscribed connection")
    return "\n".join(text)


async def run_all(
    scenarios: list[Scenario],
    library: str,
    sample_every: int = 1,
    hub_env: dict[str, str] | None = None,
    floor: bool = True,
) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenarios:
        print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
        try:
            row = await run_scenario(scenario, library, sample_every, hub_env)
            if floor and scenario.rate is not None and not scenario.idle:
                row["floor"] = await send_floor(scenario.connections)
            rows.append(row)
        except (RuntimeError, TimeoutError) as exc:
            rows.append(
                {
                    "scenario": scenario.name,
                    "connections": scenario.connections,
                    "rate": scenario.rate,
                    "failed": repr(exc),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WebSocket fan-out benchmark (issue 2)")
    parser.add_argument("--quick", action="store_true", help="1 s warm-up, 3 s windows")
    parser.add_argument("--scenario", action="append", choices=sorted(BY_NAME), default=None)
    parser.add_argument("--library", default="picows", choices=("picows", "websockets", "aiohttp"))
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: results/)")
    parser.add_argument(
        "--sample-every", type=int, default=4, help="generator: one latency sample per N frames"
    )
    parser.add_argument(
        "--hub-env",
        action="append",
        default=[],
        metavar="NAUTILUS_HUB_FIELD=VALUE",
        help="a hub setting for the hub under test (repeatable): A/B runs, e.g. of the tick",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the kernel floor (loadtest.send_floor) after each fixed-rate scenario",
    )
    args = parser.parse_args(argv)
    hub_env = dict(item.split("=", 1) for item in args.hub_env)
    if any(not name.startswith("NAUTILUS_HUB_") for name in hub_env):
        parser.error("--hub-env takes NAUTILUS_HUB_<FIELD>=<value>")
    chosen = [BY_NAME[n] for n in args.scenario] if args.scenario else list(SCENARIOS)
    if args.quick:
        chosen = [s.quick() for s in chosen]
    started = dt.datetime.now(dt.UTC)
    rows = asyncio.run(
        run_all(chosen, args.library, args.sample_every, hub_env, floor=not args.no_floor)
    )
    ratio = ratios(rows)
    print(table(rows, ratio))
    document = {
        "started": started.isoformat(),
        "quick": args.quick,
        "library": args.library,
        "machine": machine(),
        "hub_core": HUB_CORE,
        "generator_core": GENERATOR_CORE,
        "generator_bound_pct": GENERATOR_BOUND_PCT,
        "latency_sample_every": args.sample_every,
        "hub_env": hub_env,
        "scenarios": rows,
        "ratios": ratio,
        "ratios_per_hub_cpu_s": ratios(rows, "delivered_per_hub_cpu_s"),
    }
    write_results("fanout", document, started, args.out)
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())

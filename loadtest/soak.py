"""The soak: ``nautilus up`` for a long while under subscribers, its memory, CPU and fds sampled.

    python -m loadtest.soak [--feed sim|spy|binance|live|none] [--duration 30m] \\
        [--subscribers 200] [--channels-each 5] [--interval 30] [--speed X] [--out PATH]

Starts the embedded platform as a child process (``python -m nautilus_realtime up --feed F``, its
own process group) with every port taken from the environment (``NAUTILUS_HUB_PORT``,
``NAUTILUS_<ENGINE>_PORT``; unset = 0, any free port: the hub's is read from its first line),
waits until every engine runs, connects ``--subscribers`` clients (picows; each subscribes to
``--channels-each`` of the hub's channels, round-robin over the feed's channels so every one has
subscribers) and, every ``--interval`` seconds, records the platform process's RSS, CPU (user +
system over the interval, % of one core), open fds and threads (psutil when installed, else
``/proc``), the hub's bus messages so far (``/health``) and what the clients received. RSS is also
split as ``/proc/PID/status`` splits it: anonymous memory (the heap, arenas, JAX buffers: what a
leak grows) and file-backed pages (shared libraries paged in as code first runs: jaxlib alone
is >100 MB of it), so a step in RSS can be told apart from a leak.

The clients only count: frames, bytes, and messages as occurrences of ``"seq":`` in a frame,
never parsing one (``loadtest.generator``'s driven mode does the same), so 200 of them stay cheap
beside the platform. Prints a table, writes JSON (``results/soak-<feed>-*.json`` or ``--out``)
with every sample and a summary: RSS at start, 5, 10 and 30 minutes, its maximum, and its growth
per minute over the first and the last third of the run (memory that levels off grows ~0 in
the last third), the anonymous part's growth over the last third, and the file-backed RSS at
start and end. Stops the platform with SIGINT at the end and records its exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest.generator import CONNECTORS
from loadtest.report import aligned, machine, write_results
from protocol.codec import encode_client
from protocol.messages import ListChannels, Subscribe

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: The platform must print its hub URL and have every engine running within this.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
#: Channel kinds a feed's market data and its consumers publish; subscribers are spread over the
#: channels of these kinds the hub lists (in this order of preference).
SUBSCRIBED_KINDS = ("trades", "quotes", "bars", "book", "vpin", "evpin", "features")
#: RSS at these run times (seconds) go into the summary.
MARKS_S = (300, 600, 1800)
CONNECT_CONCURRENCY = 20
CONNECT_ATTEMPTS = 5
_HUB_LINE = re.compile(rb"^hub\s+ws://(\S+?):(\d+)/")
_SEQ = b'"seq":'
_HUB_MESSAGES = re.compile(r"^nautilus_hub_bus_messages_total(?:\{[^}]*\})? (\S+)$", re.M)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 600, 10m, 1h)")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


# --- the platform process ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessSample:
    rss_bytes: int
    cpu_s: float
    fds: int
    threads: int
    rss_anon_bytes: int
    rss_file_bytes: int


def read_process(pid: int) -> ProcessSample:
    """RSS, user+system CPU seconds, open fds and threads of ``pid`` (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _read_proc(pid)
    proc = psutil.Process(pid)
    with proc.oneshot():
        cpu = proc.cpu_times()
        return ProcessSample(
            proc.memory_info().rss,
            cpu.user + cpu.system,
            proc.num_fds(),
            proc.num_threads(),
            *_rss_split(pid),
        )


def _read_proc(pid: int) -> ProcessSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime, threads = int(fields[11]), int(fields[12]), int(fields[17])
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcessSample(
        rss_pages * PAGE_SIZE, (utime + stime) / CLOCK_TICKS, fds, threads, *_rss_split(pid)
    )


def _rss_split(pid: int) -> tuple[int, int]:
    """``pid``'s anonymous and file-backed resident bytes (``RssAnon``, ``RssFile`` of
    ``/proc/PID/status``, in kB there)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    anon, file = (int(fields[name].split()[0]) * 1024 for name in ("RssAnon", "RssFile"))
    return anon, file


def platform_environ(base: dict[str, str]) -> dict[str, str]:
    """``base`` with every port the platform opens set: kept when ``base`` sets it, else 0."""
    from engines.shell.registry import ENGINES

    ports = {"NAUTILUS_HUB_PORT": "0", **{f"NAUTILUS_{n.upper()}_PORT": "0" for n in ENGINES}}
    return {**ports, **base, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Platform:
    """``nautilus up`` as a child in its own process group, its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, command: list[str]) -> None:
        self.proc = proc
        self.command = command
        self.lines: list[str] = []
        self.hub_url = ""
        self.http_url = ""

    @classmethod
    async def start(cls, feed: str, speed: float | None) -> Platform:
        command = [sys.executable, "-m", "nautilus_realtime", "up", "--feed", feed]
        if speed is not None:
            command += ["--speed", str(speed)]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            env=platform_environ(dict(os.environ)),
            start_new_session=True,
        )
        return cls(proc, command)

    async def ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for the hub's URL and the ``storage`` line printed once every engine runs."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while line := await self.proc.stdout.readline():
                self.lines.append(line.decode(errors="replace").rstrip())
                if match := _HUB_LINE.match(line):
                    host, port = match.group(1).decode(), match.group(2).decode()
                    self.hub_url = f"ws://{host}:{port}/"
                    self.http_url = f"http://{host}:{port}"
                if line.startswith(b"storage") and self.hub_url:
                    asyncio.get_running_loop().create_task(self._drain())
                    return
        tail = "\n".join(self.lines[-20:])
        raise RuntimeError(f"nautilus up exited with {self.proc.returncode}:\n{tail}")

    async def _drain(self) -> None:
        """Keep reading its output (a full pipe would block it); keep the last lines."""
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            del self.lines[:-200]

    def hub_messages(self) -> int | None:
        """Bus messages the hub received so far (its ``/metrics``); None if it did not answer."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except (OSError, ValueError):
            return None
        found = _HUB_MESSAGES.search(text)
        return int(float(found.group(1))) if found else None

    async def stop(self) -> int | None:
        """SIGINT, then SIGKILL to the group after ``STOP_TIMEOUT_S``; the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
                return None
        return self.proc.returncode


# --- the subscribers ---------------------------------------------------------------------------


class CountingSink:
    """One subscriber that only counts (frames, bytes, messages): no parsing."""

    __slots__ = ("bytes", "closed", "frames", "messages", "open")

    def __init__(self) -> None:
        self.open = False
        self.closed = False
        self.frames = 0
        self.bytes = 0
        self.messages = 0

    def on_payload(self, payload: bytes) -> None:
        self.frames += 1
        self.bytes += len(payload)
        self.messages += payload.count(_SEQ)

    def on_closed(self) -> None:
        if self.open:
            self.closed = True
        self.open = False


async def hub_channels(url: str) -> list[str]:
    """Every channel the hub lists (one ``list`` request, at most the hub's list bound)."""
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        await ws.send(encode_client(ListChannels(1)).decode())
        async with asyncio.timeout(30):
            while True:
                reply = orjson.loads(await ws.recv())
                if reply.get("type") == "ack" and reply.get("id") == 1:
                    return [c["name"] for c in reply.get("available") or ()]


def spread(channels: Sequence[str], subscribers: int, each: int) -> list[list[str]]:
    """``each`` channels per subscriber, round-robin over ``channels`` of the subscribed kinds
    (kinds in ``SUBSCRIBED_KINDS`` order), so every such channel gets subscribers."""
    rank = {kind: i for i, kind in enumerate(SUBSCRIBED_KINDS)}
    chosen = sorted(
        (c for c in channels if c.split(".", 1)[0] in rank),
        key=lambda c: (rank[c.split(".", 1)[0]], c),
    )
    if not chosen:
        chosen = sorted(channels)
    if not chosen:
        return [[] for _ in range(subscribers)]
    each = min(each, len(chosen))
    return [
        list(dict.fromkeys(chosen[(i * each + k) % len(chosen)] for k in range(each)))
        for i in range(subscribers)
    ]


async def connect_all(
    url: str, sinks: list[CountingSink], requests: list[bytes], library: str, errors: Counter[str]
) -> list[Any]:
    """Connect every subscriber, ``CONNECT_CONCURRENCY`` handshakes at a time; a failed one is
    retried (a hub busy with a max-rate feed may answer a handshake late), every failure is
    counted in ``errors`` under ``connect:<error>`` and only a subscriber never connected under
    ``unconnected``."""
    connector = CONNECTORS[library]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    handles: list[Any] = []

    async def one(sink: CountingSink, request: bytes) -> None:
        for attempt in range(CONNECT_ATTEMPTS):
            async with gate:
                try:
                    handles.append(await connector(url, sink, request))
                    return
                except Exception as exc:  # a failed handshake is a result, not a crash
                    errors[f"connect:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.5 * (attempt + 1))
        errors["unconnected"] += 1

    await asyncio.gather(*(one(s, r) for s, r in zip(sinks, requests, strict=True)))
    return handles


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    cpu_pct: float | None
    fds: int
    threads: int
    hub_messages: int | None
    delivered: int
    frames: int
    open_subscribers: int


def _at(samples: Sequence[Sample], t_s: float) -> Sample | None:
    """The first sample at or after ``t_s`` (None when the run was shorter)."""
    return next((s for s in samples if s.t_s >= t_s - 1), None)


def _growth_mb_per_min(samples: Sequence[Sample], field: str = "rss_bytes") -> float | None:
    """Least-squares slope of ``field`` (RSS, or a part of it) over ``samples``, MB per minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    values = [float(getattr(s, field)) for s in samples]
    mean_t = sum(s.t_s for s in samples) / n
    mean_r = sum(values) / n
    var = sum((s.t_s - mean_t) ** 2 for s in samples)
    if var == 0:
        return None
    cov = sum((s.t_s - mean_t) * (r - mean_r) for s, r in zip(samples, values, strict=True))
    return round(cov / var * 60 / 1e6, 3)


def summary(samples: Sequence[Sample]) -> dict[str, Any]:
    third = max(2, len(samples) // 3)
    return {
        "rss_start_mb": round(samples[0].rss_bytes / 1e6, 1) if samples else None,
        "rss_at_mb": {
            str(mark): round(s.rss_bytes / 1e6, 1) if (s := _at(samples, mark)) else None
            for mark in MARKS_S
        },
        "rss_end_mb": round(samples[-1].rss_bytes / 1e6, 1) if samples else None,
        "rss_max_mb": round(max(s.rss_bytes for s in samples) / 1e6, 1) if samples else None,
        "growth_first_third_mb_per_min": _growth_mb_per_min(samples[:third]),
        "growth_last_third_mb_per_min": _growth_mb_per_min(samples[-third:]),
        "anon_growth_last_third_mb_per_min": _growth_mb_per_min(samples[-third:], "rss_anon_bytes"),
        "rss_file_start_mb": round(samples[0].rss_file_bytes / 1e6, 1) if samples else None,
        "rss_file_end_mb": round(samples[-1].rss_file_bytes / 1e6, 1) if samples else None,
        "fds_max": max((s.fds for s in samples), default=None),
        "cpu_pct_mean": round(sum(c) / len(c), 1)
        if (c := [s.cpu_pct for s in samples if s.cpu_pct is not None])
        else None,
    }


async def run(
    feed: str,
    duration_s: float,
    subscribers: int,
    channels_each: int,
    interval_s: float,
    speed: float | None,
    library: str,
) -> dict[str, Any]:
    stopping = asyncio.Event()  # SIGINT/SIGTERM: end the run early, still stop cleanly
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    platform = await Platform.start(feed, speed)
    handles: list[Any] = []
    sinks: list[CountingSink] = []
    closed_early = 0
    try:
        started_monotonic = time.monotonic()
        await platform.ready()
        ready_s = time.monotonic() - started_monotonic
        listed = await hub_channels(platform.hub_url)
        plans = spread(listed, subscribers, channels_each)
        sinks = [CountingSink() for _ in plans]
        requests = [encode_client(Subscribe(i + 1, tuple(p))) for i, p in enumerate(plans)]
        failures: Counter[str] = Counter()
        handles = await connect_all(platform.hub_url, sinks, requests, library, failures)
        errors: dict[str, int] = dict(failures)
        samples: list[Sample] = []
        t0 = time.monotonic()
        previous: tuple[float, float] | None = None

        def take() -> Sample:
            nonlocal previous
            now = time.monotonic()
            proc = read_process(platform.proc.pid)
            cpu_pct = None
            if previous is not None and now > previous[0]:
                cpu_pct = round(100 * (proc.cpu_s - previous[1]) / (now - previous[0]), 1)
            previous = (now, proc.cpu_s)
            hub_messages = platform.hub_messages()
            sample = Sample(
                round(now - t0, 1),
                proc.rss_bytes,
                proc.rss_anon_bytes,
                proc.rss_file_bytes,
                cpu_pct,
                proc.fds,
                proc.threads,
                hub_messages,
                sum(s.messages for s in sinks),
                sum(s.frames for s in sinks),
                sum(s.open for s in sinks),
            )
            samples.append(sample)
            print(_row(sample), file=sys.stderr, flush=True)
            return sample

        print(_LIVE_HEAD, file=sys.stderr, flush=True)
        take()
        deadline = t0 + duration_s
        while (left := deadline - time.monotonic()) > 0 and not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), min(interval_s, left))
            if platform.proc.returncode is not None:
                errors["platform_exited"] = platform.proc.returncode
                break
            take()
    finally:
        closed_early = sum(s.closed for s in sinks)  # the hub closed them during the run
        for sink in sinks:
            sink.open = False  # closing now is not an error
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.disconnect()
        exit_code = await platform.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return {
        "benchmark": "soak",
        "feed": feed,
        "speed": speed,
        "command": platform.command,
        "duration_s": duration_s,
        "interval_s": interval_s,
        "subscribers": subscribers,
        "channels_each": channels_each,
        "library": library,
        "ready_s": round(ready_s, 1),
        "channels_listed": len(listed),
        "subscribed_channels": len({c for p in plans for c in p}),
        "closed_subscribers": closed_early,
        "errors": errors,
        "interrupted": stopping.is_set(),
        "exit_code": exit_code,
        "samples": [asdict(s) for s in samples],
        "summary": summary(samples),
    }


HEAD = ("t_s", "rss_mb", "anon_mb", "cpu_%", "fds", "threads", "hub_msgs", "delivered", "open")


#: ``_row``'s widths: the live table on stderr is aligned as it grows.
_WIDTHS = (8, 8, 8, 6, 5, 7, 10, 12, 5)
_LIVE_HEAD = "  ".join(name.rjust(width) for name, width in zip(HEAD, _WIDTHS, strict=True))


def _row(s: Sample) -> str:
    return "  ".join(
        (
            f"{s.t_s:>8.0f}",
            f"{s.rss_bytes / 1e6:>8.1f}",
            f"{s.rss_anon_bytes / 1e6:>8.1f}",
            f"{s.cpu_pct if s.cpu_pct is not None else '-':>6}",
            f"{s.fds:>5}",
            f"{s.threads:>7}",
            f"{s.hub_messages if s.hub_messages is not None else '-':>10}",
            f"{s.delivered:>12}",
            f"{s.open_subscribers:>5}",
        )
    )


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            f"{s['t_s']:.0f}",
            f"{s['rss_bytes'] / 1e6:.1f}",
            f"{s['rss_anon_bytes'] / 1e6:.1f}",
            "-" if s["cpu_pct"] is None else f"{s['cpu_pct']:.1f}",
            str(s["fds"]),
            str(s["threads"]),
            "-" if s["hub_messages"] is None else f"{s['hub_messages']:,}",
            f"{s['delivered']:,}",
            str(s["open_subscribers"]),
        )
        for s in result["samples"]
    ]
    summ = result["summary"]
    lines = [
        f"soak: nautilus up --feed {result['feed']}, {result['subscribers']} subscribers × "
        f"{result['channels_each']} channels ({result['subscribed_channels']} channels), "
        f"{result['duration_s']:.0f} s, a sample every {result['interval_s']:.0f} s",
        aligned(HEAD, rows),
        f"RSS start {summ['rss_start_mb']} MB, at 5/10/30 min "
        f"{'/'.join(str(v) for v in summ['rss_at_mb'].values())} MB, max {summ['rss_max_mb']} MB; "
        f"growth {summ['growth_first_third_mb_per_min']} MB/min (first third) → "
        f"{summ['growth_last_third_mb_per_min']} MB/min (last third; anonymous "
        f"{summ['anon_growth_last_third_mb_per_min']} MB/min); file-backed "
        f"{summ['rss_file_start_mb']} → {summ['rss_file_end_mb']} MB; exit {result['exit_code']}",
    ]
    if result["errors"]:
        lines.append(f"errors: {result['errors']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feed", default="sim", help="spy | binance | sim | live | none")
    parser.add_argument("--duration", type=parse_duration, default=parse_duration("30m"))
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--channels-each", type=int, default=5)
    parser.add_argument("--interval", type=parse_duration, default=30.0, help="seconds")
    parser.add_argument("--speed", type=float, default=None, help="replay speed (0 = max)")
    parser.add_argument("--library", default="picows", choices=sorted(CONNECTORS))
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: results/)")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    result = asyncio.run(
        run(
            args.feed,
            args.duration,
            args.subscribers,
            args.channels_each,
            args.interval,
            args.speed,
            args.library,
        )
    )
    result["started"] = started.isoformat()
    result["machine"] = machine()
    print(table(result))
    path = write_results(f"soak-{args.feed}", result, started, args.out)
    print(f"results: {path}")
    failed = result["errors"].get("unconnected") or result["errors"].get("platform_exited")
    return 0 if result["exit_code"] == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())

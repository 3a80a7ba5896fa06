"""Engine publish → client receive across processes through Redis, against the in-process bus.

    python -m loadtest.redis_bench [--url redis://127.0.0.1:6379/0] [--out PATH]

Scenarios (each: warm-up, a measured window, then an exact loss count after a drain):

* ``memory-1c``: the in-process baseline, one process (``loadtest.hub_under_test``: hub, MemoryBus
  and publisher) at 10k msg/s, one client.
* ``redis-1c``: a publisher process on ``RedisBus`` at 10k msg/s, a hub process on ``RedisBus``,
  one client. Target: p99 ≤ 2 ms from ``ts.publish`` (the engine's publish) to receipt.
* ``redis-1hub`` / ``redis-2hub``: the same publisher, one hub or two hubs on one Redis, each hub
  with ``FANOUT_CONNECTIONS`` clients: total delivered msgs/s. On a 2-core machine the second
  hub shares the cores of the first, the publisher, Redis and the generators: the ratio shows the
  overhead of a second hub, not scale-out.

Children: ``python -m loadtest.redis_bench hub|publisher ...`` (this module) and
``loadtest.generator``, each in its own process group, killed on every exit path; every scenario
uses its own Redis key prefix and deletes its keys. Latency percentiles are the generator's:
per frame, from the oldest message's ``ts.publish`` (upper bounds). Beside them, Redis's own
share over the window from its ``INFO``: the server's CPU (``used_cpu_user`` + ``used_cpu_sys``)
and the time it spent in the publish script (``cmdstat_evalsha``) per message at the nominal
rate; the rest of the publisher's cost is its own CPU (redis-py building the pipeline and
parsing replies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.fanout import Child, cpu_seconds
from loadtest.process import emit, stdin_lines
from loadtest.publisher import RatePublisher, trade_payloads
from loadtest.report import aligned, machine, write_results
from loadtest.server_process import control_loop, prepare_process

REDIS_URL = "redis://127.0.0.1:6379/0"
CHANNEL = "trades.SIM"
RATE = 10_000
FANOUT_CONNECTIONS = 50
WARMUP_S, WINDOW_S = 1.0, 4.0
P99_TARGET_MS = 2.0
#: The hub's own per-message stages reported beside the end-to-end figure: publish → hub
#: receive (publisher queue, Redis, pub/sub read, decode), hub receive → last socket write of
#: the tick (fan-out, tick spacing); what remains of the end-to-end figure is the client's.
HUB_STAGES = ("publish_to_hub", "receive_to_send")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    bus: str  # "memory" or "redis"
    hubs: int
    connections: int  # per hub


SCENARIOS = (
    Scenario("memory-1c", "memory", 1, 1),
    Scenario("redis-1c", "redis", 1, 1),
    Scenario("redis-1hub", "redis", 1, FANOUT_CONNECTIONS),
    Scenario("redis-2hub", "redis", 2, FANOUT_CONNECTIONS),
)


# --- children ------------------------------------------------------------------------------------


async def serve_hub(url: str, prefix: str, channel: str) -> None:
    from realtime.bus.redis import RedisBus, RedisBusConfig
    from realtime.hub import Hub, HubConfig

    bus = await RedisBus.connect(RedisBusConfig(url=url, key_prefix=prefix))
    hub = Hub(HubConfig(port=0), bus)
    await hub.start()
    hub.declare([channel])
    commands = await stdin_lines()
    emit("ready", port=hub.port)
    try:
        while line := await commands.readline():
            command = line.strip()
            if command == b"stages":
                emit("stages", **{name: hub.stats.stage_counts(name) for name in HUB_STAGES})
            elif command == b"exit":
                break
    finally:
        await hub.stop()
        await bus.close()


async def serve_publisher(url: str, prefix: str, channel: str, rate: int) -> None:
    from realtime.bus.redis import RedisBus, RedisBusConfig

    bus = await RedisBus.connect(RedisBusConfig(url=url, key_prefix=prefix))
    publisher = RatePublisher(
        lambda payload, event_ns: bus.publish_nowait(channel, payload, event_ns=event_ns),
        lambda: 0,
        trade_payloads(),
        rate=rate,
    )
    try:
        await control_loop(0, publisher)
    finally:
        await bus.close()


# --- orchestration -------------------------------------------------------------------------------


async def run_scenario(scenario: Scenario, url: str) -> dict[str, Any]:
    prefix = f"nautilus-bench:{secrets.token_hex(4)}:"
    children: list[Child] = []
    hubs: list[Child] = []
    try:
        if scenario.bus == "memory":
            server = await Child.spawn(
                "loadtest.hub_under_test", "--channel", CHANNEL, "--rate", str(RATE), "--core", "0"
            )
            children.append(server)
            publisher, hubs = server, [server]
        else:
            for i in range(scenario.hubs):
                hub = await Child.spawn(
                    "loadtest.redis_bench",
                    "hub",
                    "--url",
                    url,
                    "--prefix",
                    prefix,
                    "--core",
                    str(i % 2),
                )
                children.append(hub)
                hubs.append(hub)
            publisher = await Child.spawn(
                "loadtest.redis_bench", "publisher", "--url", url, "--prefix", prefix
            )
            children.append(publisher)
        ports = [(await hub.expect("ready"))["port"] for hub in hubs]
        if publisher not in hubs:
            await publisher.expect("ready")
        generators = []
        for port in ports:
            generator = await Child.spawn(
                "loadtest.generator",
                *("--url", f"ws://127.0.0.1:{port}/", "--channel", CHANNEL),
                *("--connections", str(scenario.connections), "--core", "1", "--drain-s", "5"),
            )
            children.append(generator)
            generators.append(generator)
        for generator in generators:
            await generator.expect("subscribed")
        await publisher.send("start")
        await publisher.expect("started")
        await asyncio.sleep(WARMUP_S)
        cpu0 = [cpu_seconds(h.pid) for h in hubs]
        publisher_cpu0 = cpu_seconds(publisher.pid)
        redis0 = await redis_counters(url)
        stages0 = await _stage_counts(hubs[0]) if scenario.bus == "redis" else None
        for generator in generators:
            await generator.send("mark")
        for generator in generators:
            await generator.expect("marked")
        await asyncio.sleep(WINDOW_S)
        for generator in generators:
            await generator.send("end")
        for generator in generators:
            await generator.expect("ended")
        cpu1 = [cpu_seconds(h.pid) for h in hubs]
        publisher_cpu1 = cpu_seconds(publisher.pid)
        redis1 = await redis_counters(url)
        stages1 = await _stage_counts(hubs[0]) if scenario.bus == "redis" else None
        await publisher.send("stop")
        last_seq = (await publisher.expect("stopped"))["last_seq"]
        reports = []
        for generator in generators:
            await generator.send(f"drain {last_seq}")
            reports.append(await generator.expect("report"))
        p99s = [r["latency_publish_ms"]["p99"] or 0.0 for r in reports]
        worst = max(range(len(reports)), key=lambda i: p99s[i])
        return {
            "scenario": scenario.name,
            "bus": scenario.bus,
            "hubs": scenario.hubs,
            "connections_per_hub": scenario.connections,
            "rate": RATE,
            "published": last_seq,
            "delivered_per_s": round(sum(r["delivered_per_s"] for r in reports), 1),
            "lost": sum(r["lost"] for r in reports),
            "latency_publish_ms": reports[worst]["latency_publish_ms"],
            "latency_event_ms": reports[worst]["latency_event_ms"],
            "hub_cpu_pct": [
                round(100 * (b - a) / WINDOW_S, 1) for a, b in zip(cpu0, cpu1, strict=True)
            ],
            "publisher_cpu_pct": round(100 * (publisher_cpu1 - publisher_cpu0) / WINDOW_S, 1),
            "generator_cpu_pct": [r.get("cpu_pct") for r in reports],
            "redis_cpu_pct": round(100 * (redis1[0] - redis0[0]) / WINDOW_S, 1),
            "redis_script_us_per_msg": round((redis1[1] - redis0[1]) / (RATE * WINDOW_S), 2),
            "hub_stages_ms": _stage_quantiles(stages0, stages1),
            "generators": reports,
        }
    finally:
        for child in reversed(children):
            await child.close()
        await delete_keys(url, prefix)


async def _stage_counts(hub: Child) -> dict[str, list[int]]:
    await hub.send("stages")
    answer = await hub.expect("stages")
    return {name: list(answer[name]) for name in HUB_STAGES}


def _stage_quantiles(
    before: dict[str, list[int]] | None, after: dict[str, list[int]] | None
) -> dict[str, dict[str, float | None]] | None:
    """p50/p99 of each hub stage over the window (bucket counts after minus before), in ms."""
    from realtime.hub.metrics import LATENCY_BUCKETS
    from realtime.latency import histogram_quantile

    if before is None or after is None:
        return None
    out: dict[str, dict[str, float | None]] = {}
    for name in HUB_STAGES:
        counts = [b - a for a, b in zip(before[name], after[name], strict=True)]
        out[name] = {}
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            value = histogram_quantile(q, LATENCY_BUCKETS, counts)
            out[name][label] = None if value is None else round(value * 1e3, 3)
    return out


async def redis_counters(url: str) -> tuple[float, float]:
    """Redis's CPU seconds (user + system) and microseconds spent in ``EVALSHA`` so far."""
    from redis.asyncio import Redis

    admin = Redis.from_url(url)
    try:
        cpu = await admin.info("cpu")
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
    script = stats.get("cmdstat_evalsha", {}).get("usec", 0)
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), float(script)


async def delete_keys(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    admin = Redis.from_url(url)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


def _ms(latency: dict[str, float | None], key: str) -> str:
    value = latency.get(key)
    return "-" if value is None else f"{value:.3f}"


def _stage(quantiles: dict[str, float | None] | None) -> str:
    if not quantiles:
        return "-"
    return "/".join("-" if quantiles[k] is None else f"{quantiles[k]:.2f}" for k in ("p50", "p99"))


def table(rows: list[dict[str, Any]]) -> str:
    head: tuple[str, ...] = ("scenario", "hubs", "conns/hub", "rate/s", "delivered/s", "lost")
    head += ("p50 ms", "p99 ms", "p99.9 ms", "max ms", "hub CPU%", "pub CPU%", "gen CPU%")
    head += ("redis CPU%", "script µs/msg", "to-hub p50/p99", "in-hub p50/p99")
    lines = []
    for r in rows:
        if "failed" in r:
            lines.append((r["scenario"], *(["-"] * 15), r["failed"][:40]))
            continue
        lat = r["latency_publish_ms"]
        stages = r.get("hub_stages_ms") or {}
        lines.append(
            (
                r["scenario"],
                str(r["hubs"]),
                str(r["connections_per_hub"]),
                str(r["rate"]),
                f"{r['delivered_per_s']:,.0f}",
                str(r["lost"]),
                _ms(lat, "p50"),
                _ms(lat, "p99"),
                _ms(lat, "p999"),
                _ms(lat, "max"),
                "/".join(str(c) for c in r["hub_cpu_pct"]),
                str(r["publisher_cpu_pct"]),
                "/".join(str(c) for c in r["generator_cpu_pct"]),
                str(r["redis_cpu_pct"]),
                str(r["redis_script_us_per_msg"]),
                _stage(stages.get("publish_to_hub")),
                _stage(stages.get("receive_to_send")),
            )
        )
    text = [
        aligned(head, lines),
        "latency: ts.publish (engine publish) -> client receipt; to-hub: ts.publish -> hub "
        "receive (publisher queue, Redis, pub/sub read); in-hub: hub receive -> socket write "
        "(first hub; from its histograms, bucket-interpolated); memory-1c: pub CPU is the hub's; "
        f"script µs/msg: Redis's time in the publish script per message at {RATE} msg/s",
    ]
    by = {r["scenario"]: r for r in rows if "failed" not in r}
    if "redis-1c" in by:
        p99 = by["redis-1c"]["latency_publish_ms"]["p99"]
        verdict = "meets" if p99 is not None and p99 <= P99_TARGET_MS else "misses"
        text.append(
            f"redis-1c p99 {p99} ms {verdict} the {P99_TARGET_MS} ms target at {RATE} msg/s"
        )
    if "redis-1c" in by and "memory-1c" in by:
        extra = {
            k: round(
                (by["redis-1c"]["latency_publish_ms"][k] or 0)
                - (by["memory-1c"]["latency_publish_ms"][k] or 0),
                3,
            )
            for k in ("p50", "p99")
        }
        text.append(
            f"Redis adds over the in-process bus: p50 {extra['p50']} ms, p99 {extra['p99']} ms"
        )
    if "redis-1hub" in by and "redis-2hub" in by:
        ratio = by["redis-2hub"]["delivered_per_s"] / max(1.0, by["redis-1hub"]["delivered_per_s"])
        text.append(
            f"two hubs deliver {ratio:.2f}x one hub in total msgs/s (ideal 2.00x); on a 2-core "
            "machine this shows the overhead of a second hub, not scale-out"
        )
    return "\n".join(text)


async def run_all(url: str, only: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for scenario in SCENARIOS:
        if only and scenario.name not in only:
            continue
        print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(25):
                rows.append(await run_scenario(scenario, url))
        except (RuntimeError, TimeoutError, OSError) as exc:
            rows.append({"scenario": scenario.name, "failed": repr(exc)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redis bus latency and two-hub benchmark")
    sub = parser.add_subparsers(dest="role")
    for role in ("hub", "publisher"):
        child = sub.add_parser(role)
        child.add_argument("--url", default=REDIS_URL)
        child.add_argument("--prefix", required=True)
        child.add_argument("--channel", default=CHANNEL)
        child.add_argument("--rate", type=int, default=RATE)
        child.add_argument("--core", type=int, default=None)
    parser.add_argument("--url", default=REDIS_URL, help="Redis for the redis scenarios")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: results/)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="run only this scenario (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    if args.role == "hub":
        prepare_process(args.core)
        asyncio.run(serve_hub(args.url, args.prefix, args.channel))
        return 0
    if args.role == "publisher":
        prepare_process(args.core)
        asyncio.run(serve_publisher(args.url, args.prefix, args.channel, args.rate))
        return 0
    started = dt.datetime.now(dt.UTC)
    rows = asyncio.run(run_all(args.url, args.scenario))
    print(table(rows))
    document = {
        "started": started.isoformat(),
        "machine": machine(),
        "rate": RATE,
        "warmup_s": WARMUP_S,
        "window_s": WINDOW_S,
        "scenarios": rows,
    }
    path = write_results("redis_bench", document, started, args.out)
    print(f"results: {path}")
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

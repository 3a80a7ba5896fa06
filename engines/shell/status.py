"""The platform's status, computed from the running platform: ``GET /status`` on the hub,
``nautilus status`` and the hub's ``/status.html`` page all show this.

Every engine the product plans (``registry.ENGINE_PORTS``) has a row: ``not built`` when no code
is registered for it, else what its own ``/health`` says, polled over HTTP with a deadline
(``timeout_s``), so the same collector serves an embedded process and a distributed layout.
An engine that does not answer is ``down`` with the reason (refused, timed out, not JSON); one
answering something that is not an engine health body is ``down`` with "malformed /health".

States and thresholds (the page colours them: green, amber, red):

==========  ====================================================================  =====
running     ``/health`` status ``ok``                                              green
degraded    running with issues (storage queueing, dropped input, slow REST:      amber
            p99 over ``slow_rest_ms``) — counted as up
starting    still starting (e.g. compiling JAX) — not up yet                      amber
down        failed, stopped, unreachable or malformed                             red
not built   planned engine without code in this build — not required             grey
==========  ====================================================================  =====

``ok`` is true only when every built engine is running or degraded, the hub answers and its bus
is connected. The count line ("engines 5/5 running") is computed, never written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engines.shell.registry import ENGINE_PORTS, ENGINES, EngineSpec, start_order
from realtime.clock import Clock
from realtime.config import described
from realtime.http import get_json

STATUS_PREFIX = "NAUTILUS_STATUS_"
UP_STATES = frozenset({"running", "degraded"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusConfig:
    """``NAUTILUS_STATUS_*``: how the status view polls."""

    timeout_s: float = field(
        default=1.0, metadata=described("deadline for each engine's /health answer, seconds")
    )
    slow_rest_ms: float = field(
        default=50.0, metadata=described("an engine's REST p99 above this shows amber, ms")
    )
    prometheus_url: str = field(
        default="", metadata=described("Prometheus to ask whether it scrapes us ('' = none)")
    )
    engines: str = field(
        default="",
        metadata=described(
            "comma-separated engines this deployment runs ('' = every registered one; "
            "the supervisor sets it for its hubs)"
        ),
    )

    def engine_names(self, registered: Sequence[str]) -> list[str]:
        """The engines the view expects: ``engines`` or every registered one."""
        wanted = [n.strip() for n in self.engines.split(",") if n.strip()]
        return wanted or list(registered)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True, slots=True)
class EngineTarget:
    """Where an engine's REST answers (``port`` 0: chosen by the OS, unknown to the view)."""

    name: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def configured_targets(
    environ: Mapping[str, str],
    config: StatusConfig | None = None,
    registry: Mapping[str, EngineSpec] | None = None,
) -> list[EngineTarget]:
    """The deployment's engines (``config.engines``, default every registered one) at the
    host and port their settings name (distributed layout)."""
    specs = ENGINES if registry is None else registry
    names = (config or StatusConfig()).engine_names(list(specs))
    targets = []
    for name in start_order(names, dict(specs)):
        prefix = f"NAUTILUS_{name.upper()}_"
        host = environ.get(f"{prefix}HOST", "127.0.0.1")
        try:
            port = int(environ.get(f"{prefix}PORT", specs[name].port))
        except ValueError:
            port = 0
        targets.append(EngineTarget(name, host if host != "0.0.0.0" else "127.0.0.1", port))
    return targets


def engine_row(
    target: EngineTarget, status: int, body: Any, error: str | None, slow_ms: float
) -> dict[str, Any]:
    """One engine's row from its ``/health`` answer (or the reason there is none)."""
    row: dict[str, Any] = {"name": target.name, "port": target.port, "url": target.url}
    if error is not None:
        return {**row, "state": "down", "reason": error}
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return {**row, "state": "down", "reason": f"malformed /health (HTTP {status})"}
    health = str(body["status"])
    state = {"ok": "running", "degraded": "degraded", "starting": "starting"}.get(health, "down")
    rest = body.get("rest_latency") if isinstance(body.get("rest_latency"), dict) else None
    issues = (
        [str(i) for i in body.get("issues", [])] if isinstance(body.get("issues"), list) else []
    )
    p99 = rest.get("p99_ms") if rest else None
    if state == "running" and isinstance(p99, int | float) and p99 > slow_ms:
        state = "degraded"
        issues.append(f"REST p99 {p99:g} ms over {slow_ms:g} ms")
    bad = body.get("bad_input")
    return {
        **row,
        "state": state,
        "reason": "; ".join(issues) if issues else ("" if state in UP_STATES else health),
        "version": body.get("version"),
        "uptime_s": body.get("uptime_s"),
        "last_input_age_s": body.get("last_input_age_s"),
        "backlog": body.get("backlog"),
        "errors": body.get("errors"),
        "dropped": body.get("dropped"),
        "bad_input": sum(sum(v.values()) for v in bad.values() if isinstance(v, dict))
        if isinstance(bad, dict)
        else 0,
        "rest_latency": rest,
        "storage": body.get("storage"),
    }


async def poll_engine(target: EngineTarget, config: StatusConfig) -> dict[str, Any]:
    if not target.port:
        return engine_row(
            target, 0, None, "port chosen by the OS: unknown here", config.slow_rest_ms
        )
    answer = await get_json(f"{target.url}/health", timeout_s=config.timeout_s)
    return engine_row(target, answer.status, answer.body, answer.error, config.slow_rest_ms)


async def prometheus_section(config: StatusConfig) -> dict[str, Any]:
    if not config.prometheus_url:
        return {"configured": False, "state": "not configured"}
    url = config.prometheus_url.rstrip("/") + "/api/v1/targets?state=active"
    answer = await get_json(url, timeout_s=config.timeout_s)
    if answer.error is not None:
        return {"configured": True, "state": "down", "reason": answer.error}
    try:
        return {"configured": True, **scrape_state(answer.body["data"]["activeTargets"])}
    except (KeyError, TypeError, AttributeError):
        return {"configured": True, "state": "down", "reason": "malformed targets answer"}


def scrape_state(active_targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Prometheus's scrape state from its active targets. The supervisor's target
    (``role=supervisor``, infra/prometheus/prometheus.yml) is down by design in embedded mode:
    it counts when it is up, never against the state."""
    targets = [
        t
        for t in active_targets
        if t.get("health") == "up" or t.get("labels", {}).get("role") != "supervisor"
    ]
    up = sum(1 for t in targets if t.get("health") == "up")
    state = "running" if targets and up == len(targets) else ("degraded" if up else "down")
    return {"state": state, "targets": len(targets), "targets_up": up}


def _hub_state(hub: Mapping[str, Any] | None) -> str:
    if hub is None:
        return "down"
    return {"ok": "running", "degraded": "degraded"}.get(str(hub.get("status")), "down")


async def collect_status(
    targets: Sequence[EngineTarget],
    config: StatusConfig,
    *,
    clock: Clock,
    hub: Mapping[str, Any] | None,
    hub_error: str = "",
    storage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole view. ``hub`` is the hub's ``status_section()`` (``None``: unreachable, with
    ``hub_error``); ``storage`` the platform storage's health when this process owns it."""
    rows, prometheus = await asyncio.gather(
        asyncio.gather(*(poll_engine(t, config) for t in targets)), prometheus_section(config)
    )
    built = {t.name for t in targets}
    planned = [
        {"name": name, "port": port, "state": "not built", "reason": "no code registered"}
        for name, port in ENGINE_PORTS.items()
        if name not in built
    ]
    running = sum(1 for r in rows if r["state"] in UP_STATES)
    hub_state = _hub_state(hub)
    bus = _bus_section(hub)
    ok = running == len(rows) and hub_state in UP_STATES and bus["state"] in UP_STATES
    storage_section = _storage_section(storage, rows)
    summary = (
        f"engines {running}/{len(rows)} running"
        + (f" ({len(planned)} of {len(ENGINE_PORTS)} planned not built)" if planned else "")
        + f" · hub {hub_state} · bus {bus['kind']} {bus['state']}"
        + f" · storage {storage_section['kind']} {storage_section['state']}"
    )
    return {
        "ok": ok,
        "summary": summary,
        "generated_ns": clock.now_ns(),
        "engines": {
            "running": running,
            "built": len(rows),
            "planned": len(ENGINE_PORTS),
            "rows": [*rows, *planned],
        },
        "hub": {"state": hub_state, **(hub or {"reason": hub_error or "unreachable"})},
        "bus": bus,
        "storage": storage_section,
        "prometheus": prometheus,
    }


def _bus_section(hub: Mapping[str, Any] | None) -> dict[str, Any]:
    if hub is None:
        return {"kind": "unknown", "state": "down", "reason": "hub unreachable"}
    kind = {"MemoryBus": "memory", "RedisBus": "redis"}.get(str(hub.get("bus_kind")), "unknown")
    issues = [i for i in hub.get("issues", []) if str(i).startswith("bus")]
    counters = hub.get("bus", {})
    unreachable = any("unreachable" in str(i) for i in issues)
    return {
        "kind": kind,
        "state": "down" if unreachable else ("degraded" if issues else "running"),
        "reason": "; ".join(issues),
        "pending": hub.get("lag", {}).get("bus_pending"),
        "reconnects": counters.get("reconnects", 0),
        "dropped": counters.get("dropped", 0),
    }


def _storage_section(
    storage: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The platform storage: this process's own when it has one, else what the first engine
    that answered reports (every engine shares the platform's store)."""
    health = storage or next(
        (r["storage"] for r in rows if isinstance(r.get("storage"), dict)), None
    )
    if not health:
        return {"kind": "unknown", "state": "down", "reason": "no engine reported storage"}
    kind = str(health.get("kind", "unknown"))
    state = "running"
    reason = ""
    if kind == "postgres" and not health.get("connected", False):
        state, reason = "degraded", str(health.get("last_error") or "unreachable; rows queued")
    elif health.get("migrations") == "pending":
        state, reason = "degraded", "migrations pending"
    return {
        "kind": kind,
        "state": state,
        "reason": reason,
        "rows_queued": health.get("rows_queued"),
        "migrations": health.get("migrations"),
    }


StatusSource = Callable[[], Awaitable[dict[str, Any]]]


def render_text(status: Mapping[str, Any]) -> str:
    """``nautilus status``'s table."""
    lines = [status["summary"], ""]
    lines.append(f"{'engine':<12}{'port':>6}  {'state':<10}{'up s':>9}{'input age':>11}"
                 f"{'backlog':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}  reason")  # fmt: skip
    for row in status["engines"]["rows"]:
        rest = row.get("rest_latency") or {}
        lines.append(
            f"{row['name']:<12}{row['port']:>6}  {row['state']:<10}"
            f"{_num(row.get('uptime_s')):>9}{_num(row.get('last_input_age_s')):>11}"
            f"{_num(row.get('backlog')):>9}{_num(row.get('errors')):>8}"
            f"{_num(rest.get('p50_ms')):>9}{_num(rest.get('p99_ms')):>9}  {row.get('reason', '')}"
        )
    hub = status["hub"]
    lines.append("")
    if hub["state"] == "down":
        lines.append(f"hub        down: {hub.get('reason', '')}")
    else:
        stages = ", ".join(
            f"{name} p50 {_num(s.get('p50_ms'))} / p99 {_num(s.get('p99_ms'))} ms"
            for name, s in hub.get("stages", {}).items()
            if s.get("count")
        )
        lines.append(
            f"hub        {hub['state']}: {hub.get('connections', 0)} connections, "
            f"{_num(hub.get('deliveries_per_s'))} deliveries/s, "
            f"{hub.get('lag', {}).get('slow_connections', 0)} slow, "
            f"{hub.get('slow_disconnects', 0)} slow-disconnected"
        )
        if stages:
            lines.append(f"           {stages}")
    bus, storage, prom = status["bus"], status["storage"], status["prometheus"]
    lines.append(f"bus        {bus['kind']} {bus['state']} {bus.get('reason', '')}".rstrip())
    lines.append(
        f"storage    {storage['kind']} {storage['state']} {storage.get('reason', '')}".rstrip()
    )
    lines.append(f"prometheus {prom['state']} {prom.get('reason', '')}".rstrip())
    return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)

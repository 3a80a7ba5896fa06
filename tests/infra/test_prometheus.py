"""prometheus.yml, the dashboards and the alert rules against a real Prometheus scraping a
running platform.

Debian's ``prometheus`` package (``prometheus`` and ``promtool``) is installed by
``infra/scripts/install-prometheus.sh`` when missing; the test fails if that cannot be done. The
platform is ``nautilus up`` with MarketData replaying the simulated market on free ports, a few WebSocket clients keep
the hub delivering, and Prometheus scrapes it every second from a config generated from
``infra/prometheus/prometheus.yml`` (same jobs and labels, local targets).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from engines.marketdata.feeds import SimulatorConfig
from engines.shell.registry import ENGINE_PORTS, ENGINES, HUB_PORT
from protocol.channels import quotes, trades
from protocol.codec import encode_client
from protocol.messages import Subscribe
from realtime.supervisor import ChildSpec, Supervisor, SupervisorConfig
from tests.infra.dashboards import (
    CONCRETE,
    PROMETHEUS_YML,
    alert_rules,
    label_values_variables,
    panel_queries,
    scrape_config_for,
    scrape_jobs,
)

SIM_SYMBOLS = 8
CLIENTS = 4
#: Per port: engines compile JAX at start; on a loaded 2-core machine one took over 30 s.
START_TIMEOUT_S = 90.0
#: After the first scrapes with deliveries in them, how long every expression may take to show.
QUERY_DEADLINE_S = 20.0
#: Label names a metric may carry: each has a small fixed set of values.
#: Labels whose values are bounded by the code (``route`` is a URI template, never a raw path;
#: ``kind`` a stream kind of protocol.channels or ``other``; ``store`` memory or postgres).
#: ``account`` one of the configured accounts (NAUTILUS_RISK_ACCOUNTS / _PORTFOLIO_ACCOUNTS).
LOW_CARDINALITY_LABELS = {
    "engine", "reason", "code", "le", "method", "route", "kind", "store", "account"
}  # fmt: skip
#: prometheus_client's own families on every port (ProcessCollector, PlatformCollector).
PROCESS_FAMILIES = {
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
}
#: python_info's labels: the interpreter's version, one label set per process.
PYTHON_INFO_LABELS = {"implementation", "major", "minor", "patchlevel", "version"}
_METRIC_NAME = re.compile(r"\b(?:nautilus|process)_[a-z_]+\b|\bup\b")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now (held together while chosen; Prometheus can't bind 0)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _get(url: str, timeout_s: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def _wait_until_answers(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _get(url)
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer {url} within {START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass(frozen=True, slots=True)
class Platform:
    ports: dict[str, int]  # scrape job (hub or engine name) → port

    def url(self, job: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[job]}{path}"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    jobs = ["hub", *ENGINE_PORTS]
    ports = dict(zip(jobs, _free_ports(len(jobs)), strict=True))
    env = {
        **os.environ,
        "NAUTILUS_MARKETDATA_FEED": "sim",
        "NAUTILUS_MARKETDATA_SIM_SYMBOLS": str(SIM_SYMBOLS),
        "NAUTILUS_MARKETDATA_SIM_RATE": "500",
        **{f"NAUTILUS_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    log = tmp_path_factory.mktemp("platform") / "nautilus-up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "engines.shell.cli", "up"], env=env, stdout=out, stderr=out
        )
    platform = Platform(ports)
    try:
        for job in ["hub", *ENGINES]:
            _wait_until_answers(platform.url(job, "/health"), process, f"nautilus up ({job})")
        yield platform
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
    finally:
        _stop(process)


class Load:
    """WebSocket clients subscribed to every simulated channel, reading until stopped."""

    def __init__(self, url: str, n_clients: int) -> None:
        symbols = SimulatorConfig(n_symbols=SIM_SYMBOLS).symbols()
        channels = tuple(f(s) for s in symbols for f in (trades, quotes))
        self._subscribe = encode_client(Subscribe(1, channels)).decode()
        self._url = url
        self._stop = threading.Event()
        self.received = [0] * n_clients
        self.failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(n_clients)
        ]

    def _client(self, index: int) -> None:
        try:
            with connect(self._url, max_size=None) as ws:
                ws.send(self._subscribe)
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        ws.recv(timeout=0.2)
                        self.received[index] += 1
        except Exception as exc:  # reported by stop(): a dead client must fail the test
            self.failures.append(exc)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def load(platform: Platform) -> Iterator[Load]:
    with Load(f"ws://127.0.0.1:{platform.ports['hub']}/", CLIENTS) as running:
        yield running
    assert not running.failures, running.failures


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = json.loads(_get(url, timeout_s=5))
        except urllib.error.HTTPError as err:  # 400: the expression does not parse
            raise AssertionError(f"{expr}: {err.read().decode()}") from None
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", (expr, body["data"]["resultType"])
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def prometheus(binaries: None, platform: Platform) -> Iterator[Prometheus]:
    workdir = Path(tempfile.mkdtemp(prefix="nautilus-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config_for(platform.ports)))
    (port,) = _free_ports(1)
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=out,
        )
    try:
        _wait_until_answers(f"http://127.0.0.1:{port}/-/ready", process, "prometheus")
        yield Prometheus(port)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
    finally:
        _stop(process)
        shutil.rmtree(workdir)


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_promtool_accepts_the_config(binaries: None) -> None:
    checked = _promtool("check", "config", str(PROMETHEUS_YML))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_scrape_jobs_are_the_hub_every_registry_port_and_the_supervisor() -> None:
    expected = {"hub": HUB_PORT, **ENGINE_PORTS, "supervisor": SupervisorConfig().port}
    jobs = scrape_jobs()
    assert {job: port for job, (_, port, _) in jobs.items()} == expected
    assert {host for host, _, _ in jobs.values()} == {"127.0.0.1"}
    roles = {job: labels for job, (_, _, labels) in jobs.items()}
    role_of = {"hub": "hub", "supervisor": "supervisor"}
    assert roles == {job: {"role": role_of.get(job, "engine")} for job in expected}


def _supervisor_metrics() -> bytes:
    """What a supervisor's /metrics serves (tests/realtime/test_supervisor_metrics.py runs one)."""
    children = [ChildSpec("hub", ("true",), 0), ChildSpec("marketdata", ("true",), 1)]
    return generate_latest(Supervisor(SupervisorConfig(port=0), children).registry)


def test_every_port_serves_promtool_clean_low_cardinality_metrics(
    binaries: None, platform: Platform, load: Load
) -> None:
    texts = {job: _get(platform.url(job, "/metrics")) for job in ["hub", *ENGINES]}
    texts["supervisor"] = _supervisor_metrics()
    for job, text in texts.items():
        checked = _promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0 and not checked.stdout.strip(), (
            job,
            checked.stdout + checked.stderr,
        )
        families = list(text_string_to_metric_families(text.decode()))
        names = {family.name for family in families}
        # the process's own metrics on every port (custom registries get none by default)
        assert names >= PROCESS_FAMILIES and "python_info" in names, (job, names)
        assert not [s.name for f in families for s in f.samples if s.name.endswith("_created")]
        allowed = LOW_CARDINALITY_LABELS | ({"child", "state"} if job == "supervisor" else set())
        for family in families:
            if family.name in PROCESS_FAMILIES:
                continue
            labels = {name for sample in family.samples for name in sample.labels}
            if family.name == "python_info":
                assert labels == PYTHON_INFO_LABELS and len(family.samples) == 1, job
                continue
            assert family.name.startswith("nautilus_"), (job, family.name)
            assert labels <= allowed, (job, family.name, labels)
            # bounded: at most 32 label sets besides the histogram's buckets, each at most 32
            groups: dict[tuple[tuple[str, str], ...], int] = {}
            for sample in family.samples:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                groups[key] = groups.get(key, 0) + 1
            assert len(groups) <= 32, (job, family.name, len(groups))
            assert max(groups.values(), default=0) <= 32, (job, family.name, groups)


def _failure(prometheus: Prometheus, expr: str) -> str | None:
    """Why ``expr`` shows nothing useful yet, or None. A quantile may be NaN only while its
    histogram saw no observation in the window (an engine that consumes nothing)."""
    result = prometheus.query(expr)
    if not result:
        return "no data"
    if any(math.isfinite(float(sample["value"][1])) for sample in result):
        return None
    if expr.startswith("histogram_quantile("):
        bucket = expr.split("rate(", 1)[1].split("{", 1)[0]
        observed = bucket.removesuffix("_bucket") + "_count"
        window = CONCRETE["$__rate_interval"]
        if not prometheus.query(f"sum(increase({observed}[{window}])) > 0"):
            return None
    return f"only NaN/Inf: {result}"


def test_every_dashboard_expression_returns_data_under_load(
    platform: Platform, load: Load, prometheus: Prometheus
) -> None:
    window = CONCRETE["$__rate_interval"]
    deadline = time.monotonic() + START_TIMEOUT_S
    while not prometheus.query(f"sum(rate(nautilus_hub_messages_sent_total[{window}])) > 0"):
        assert time.monotonic() < deadline, (
            f"Prometheus saw no deliveries; clients received {load.received}; "
            f"up: {prometheus.query('up')}; sent: {prometheus.query('nautilus_hub_messages_sent_total')}"
        )
        time.sleep(0.5)
    queries = panel_queries()
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        failures = {
            str(q): (q.concrete(), why)
            for q in queries
            if (why := _failure(prometheus, q.concrete())) is not None
        }
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not failures, "\n".join(f"{k}: {expr} -> {why}" for k, (expr, why) in failures.items())
    assert min(load.received) > 0


def test_dashboard_variables_list_what_is_running(
    platform: Platform, load: Load, prometheus: Prometheus
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    for variable in label_values_variables():
        expected = (
            {f"127.0.0.1:{platform.ports['hub']}"} if variable.label == "instance" else set(ENGINES)
        )
        while True:
            result = prometheus.query(f"count by ({variable.label}) ({variable.metric})")
            values = {sample["metric"].get(variable.label) for sample in result}
            if values == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert values == expected, variable


def _rule_metrics() -> set[str]:
    """Every metric name an alert rule's expression reads."""
    return {name for rule in alert_rules() for name in _METRIC_NAME.findall(rule["expr"])}


def test_every_metric_an_alert_reads_is_exported(platform: Platform, load: Load) -> None:
    texts = [_get(platform.url(job, "/metrics")) for job in ["hub", *ENGINES]]
    texts.append(_supervisor_metrics())
    exported = {"up"}  # Prometheus's own, per target
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            exported.update(sample.name for sample in family.samples)
    read = _rule_metrics()
    assert len(read) >= 15
    assert read <= exported, sorted(read - exported)


def test_every_alert_rule_evaluates_against_the_running_platform(
    platform: Platform, load: Load, prometheus: Prometheus
) -> None:
    """Loaded from prometheus.yml's rule_files, every rule evaluates without an error against
    the real series (a many-to-many match or a bad label only shows with real data)."""
    expected = {rule["alert"] for rule in alert_rules()}
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        body = json.loads(_get(f"{prometheus.base}/api/v1/rules?type=alert", timeout_s=5))
        rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
        evaluated = {r["name"]: r for r in rules if not r["lastEvaluation"].startswith("0001-")}
        if set(evaluated) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(evaluated) == expected
    failed = {name: r["lastError"] for name, r in evaluated.items() if r["health"] != "ok"}
    assert not failed, failed
    # the platform is up: nothing that says it is down may even be pending
    down = {"NautilusHubDown", "NautilusEngineUnreachable", "NautilusEngineNotRunning"}
    assert not [r["name"] for r in rules if r["name"] in down and r["state"] != "inactive"]

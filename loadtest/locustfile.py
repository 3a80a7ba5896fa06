"""Locust load test of a Nautilus deployment: WebSocket subscribers on the hub and REST users
per engine, against any deployment ``--host`` names (the hub's URL).

    locust -f loadtest/locustfile.py --host http://HUB:8600 --headless -u 50 -r 10 -t 60s \\
        --csv results/nautilus [--ws-channels trades.SPY,bars.1m.SPY] [HubUser MarketDataUser …]

**HubUser** connects to the hub (``ws://`` on the ``--host`` host and port, path ``--ws-path``,
``--ws-token`` as ``?token=``), subscribes to ``--ws-channels`` and reports:

* every received live ``update`` as a request ``WS <channel>`` whose response time is
  ``now - ts.publish`` (end to end: engine publish → bus → hub → client; both are wall clocks,
  so across machines the figure includes their clock offset). Snapshots are not latencies (their
  ``ts`` is when the value was published, maybe long ago); replayed history is reported as
  ``WS <channel> (replay)``;
* the subscribe round trip as ``WS subscribe`` (a refused subscribe is a failure);
* as **failures**: a ``seq`` gap or a duplicate on an ordered-lossless channel (counted from the
  first message seen), an announced ``gap`` status, an epoch change, a resume answered
  ``not_recovered``, any ``error`` reply and an unexpected disconnect. Latest-value channels may
  skip ``seq`` (conflation): not a failure.

A dropped connection reconnects and resumes every ordered-lossless channel from the last
``(epoch, seq)`` it holds (protocol/README.md, "Resume rules"); ``--ws-reconnect-s S`` also
reconnects every S seconds on purpose, to load and check resume, staying away
``--ws-reconnect-pause-s P`` seconds first so that the resume has something to replay.

**REST users**, one class per engine, a mix of the documented queries weighted like a UI uses
them (latest values most, history pages less, ``/health`` everywhere): MarketData ``/bars``,
``/trades``, ``/quotes/latest``; VPIN ``/vpin/{symbol}/latest`` and ``/history``; Features
``/features/{symbol}/latest``; Portfolio ``/portfolio/{account}/pnl`` and ``/positions``; Risk
``/risk/{account}`` and ``/risk/var/{account}``. A ``/latest`` that answers 404 "nothing published
yet" is the documented answer before the first value, so it counts as a success.

Engine URLs: ``NAUTILUS_LOCUST_<ENGINE>_URL`` (e.g. ``NAUTILUS_LOCUST_VPIN_URL=http://h:10000``)
wins; otherwise the hub's ``/status`` names the port each engine runs on (so an embedded platform
on OS-chosen ports is found), else the engine's default port (``engines.shell.registry``) on the
hub's host. Pick user classes by name on the command line, as Locust allows.

Distributed mode (``--master`` / ``--worker``): nothing here is process-global but a per-process
cache of the engine URLs, looked up by each process; options come from the command line or the
environment (``LOCUST_WS_CHANNELS`` …) on every process.

Limits: one greenlet per WebSocket user, every frame parsed (``orjson``): a worker handles on the
order of 10⁴–10⁵ messages/s; use ``python -m loadtest.generator`` for fan-out at 10⁶/s.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any
from urllib.parse import urlsplit

import websocket
from locust import FastHttpUser, User, between, constant, events, task
from locust.env import Environment

from engines.shell.registry import ENGINE_PORTS, HUB_PORT
from loadtest.generator import StreamAccount

DEFAULT_CHANNELS = "trades.SPY,bars.1m.SPY,vpin.SPY,features.SPY,pnl.paper"
#: A receive waits at most this long, so a stopping user is never stuck in ``recv`` (seconds).
RECV_TIMEOUT_S = 1.0
#: Seconds a (re)connect and its subscribe ack may take.
CONNECT_TIMEOUT_S = 10.0


def _options(parser: Any) -> None:
    parser.add_argument(
        "--ws-channels",
        env_var="LOCUST_WS_CHANNELS",
        default=DEFAULT_CHANNELS,
        help="HubUser: comma-separated channels each connection subscribes to",
    )
    parser.add_argument("--ws-path", env_var="LOCUST_WS_PATH", default="/", help="hub path")
    parser.add_argument(
        "--ws-token", env_var="LOCUST_WS_TOKEN", default="", help="hub token (?token=)"
    )
    parser.add_argument(
        "--ws-reconnect-s",
        env_var="LOCUST_WS_RECONNECT_S",
        type=float,
        default=0.0,
        help="HubUser: reconnect (and resume) every S seconds; 0 = only when dropped",
    )
    parser.add_argument(
        "--ws-reconnect-pause-s",
        env_var="LOCUST_WS_RECONNECT_PAUSE_S",
        type=float,
        default=0.0,
        help="HubUser: seconds to stay disconnected before each planned reconnect",
    )
    parser.add_argument("--symbol", env_var="LOCUST_SYMBOL", default="SPY", help="REST symbol")
    parser.add_argument("--account", env_var="LOCUST_ACCOUNT", default="paper", help="account")


_parser_hook: Any = events.init_command_line_parser  # locust's hooks are untyped
_parser_hook.add_listener(_options)


def _option(environment: Environment, name: str, default: Any) -> Any:
    options = environment.parsed_options
    return getattr(options, name, default) if options is not None else default


# --- where things are ----------------------------------------------------------------------

#: Engine base URLs per hub URL: each process (master, worker) looks them up once for itself.
_engine_urls: dict[str, dict[str, str]] = {}


def hub_url(environment: Environment) -> str:
    host = environment.host or f"http://127.0.0.1:{HUB_PORT}"
    return host.rstrip("/")


def engine_url(environment: Environment, engine: str) -> str:
    """The engine's REST base URL (module docstring: env, the hub's ``/status``, default)."""
    override = os.environ.get(f"NAUTILUS_LOCUST_{engine.upper()}_URL")
    if override:
        return override.rstrip("/")
    hub = hub_url(environment)
    if hub not in _engine_urls:
        _engine_urls[hub] = _discover(hub)
    return _engine_urls[hub][engine]


def _discover(hub: str) -> dict[str, str]:
    parts = urlsplit(hub)
    scheme, host = parts.scheme or "http", parts.hostname or "127.0.0.1"
    ports = dict(ENGINE_PORTS)
    try:
        import requests

        answer = requests.get(f"{hub}/status", timeout=5).json()
        for row in answer.get("engines", {}).get("rows", []):
            if row.get("state") != "not built" and int(row.get("port") or 0) > 0:
                ports[row["name"]] = int(row["port"])
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no /status (an older hub, or none): the default ports
    return {name: f"{scheme}://{host}:{port}" for name, port in ports.items()}


def ws_url(environment: Environment) -> str:
    parts = urlsplit(hub_url(environment))
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = _option(environment, "ws_path", "/") or "/"
    token = _option(environment, "ws_token", "")
    query = f"?token={token}" if token else ""
    return f"{scheme}://{parts.netloc}{path}{query}"


# --- the WebSocket user -----------------------------------------------------------------------


class Dropped(Exception):
    """The hub closed the connection or it failed."""


class HubUser(User):
    """One WebSocket client of the hub (module docstring)."""

    wait_time = constant(0)
    weight = 3

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        channels = str(_option(environment, "ws_channels", DEFAULT_CHANNELS))
        self.channels = [c.strip() for c in channels.split(",") if c.strip()]
        self.reconnect_s = float(_option(environment, "ws_reconnect_s", 0.0) or 0.0)
        self.reconnect_pause_s = float(_option(environment, "ws_reconnect_pause_s", 0.0) or 0.0)
        self.account = StreamAccount(self.channels)
        self.ws: websocket.WebSocket | None = None
        self.connected_at = 0.0
        self.request_id = 0

    def on_start(self) -> None:
        self.connect()

    def on_stop(self) -> None:
        self.close()

    def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            with contextlib.suppress(OSError, websocket.WebSocketException):
                ws.close(timeout=1)

    def fire(
        self, name: str, response_time: float, length: int = 0, exc: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=response_time,
            response_length=length,
            exception=exc,
            context={},
        )

    def connect(self) -> None:
        """Connect and subscribe, resuming the lossless channels from the last position held."""
        started = time.perf_counter()
        self.request_id += 1
        try:
            self.ws = websocket.create_connection(
                ws_url(self.environment), timeout=CONNECT_TIMEOUT_S
            )
            self.ws.send(self.account.subscribe(self.request_id).decode())
            while True:  # the ack comes first (protocol/README.md), then replay and live data
                replies = self.receive_one()
                ack = next((r for r in replies if r.get("id") == self.request_id), None)
                if ack is not None:
                    break
        except (OSError, websocket.WebSocketException, Dropped) as exc:
            self.fire("WS subscribe", (time.perf_counter() - started) * 1000, exc=exc)
            self.close()
            return
        elapsed = (time.perf_counter() - started) * 1000
        if ack.get("type") == "error":
            self.fire(
                "WS subscribe", elapsed, exc=Dropped(f"{ack.get('code')}: {ack.get('message')}")
            )
            self.close()
            return
        self.fire("WS subscribe", elapsed)
        self.ws.settimeout(RECV_TIMEOUT_S)
        self.connected_at = time.monotonic()

    def receive_one(self) -> list[dict[str, Any]]:
        """Read and account one frame; return its replies (acks, errors)."""
        assert self.ws is not None
        frame = self.ws.recv()
        if not frame:  # websocket-client answers a close frame with ''
            raise Dropped(f"closed by the hub ({self.ws.status})")
        now = time.time_ns()
        result = self.account.on_frame(frame)
        for seen in result.data:
            if seen.kind != "update":
                continue
            name = f"WS {seen.channel} (replay)" if seen.replay else f"WS {seen.channel}"
            self.fire(name, max(0.0, (now - seen.publish_ns) / 1e6), seen.size)
        for problem in result.problems:
            detail = f"{problem.what}: {problem.detail}"
            self.fire(f"WS {problem.channel or 'hub'}", 0.0, exc=Dropped(detail))
        return result.replies

    @task
    def receive(self) -> None:
        if self.ws is None:
            self.connect()
            return
        if self.reconnect_s and time.monotonic() - self.connected_at > self.reconnect_s:
            self.close()
            time.sleep(self.reconnect_pause_s)  # cooperative: Locust runs users on gevent
            self.connect()
            return
        try:
            self.receive_one()
        except websocket.WebSocketTimeoutException:
            return  # quiet channels: heartbeats come every 5 s
        except (OSError, websocket.WebSocketException, Dropped) as exc:
            self.fire("WS disconnect", 0.0, exc=exc)
            self.close()


# --- REST users ---------------------------------------------------------------------------------


class EngineUser(FastHttpUser):
    """A REST user of one engine: ``engine`` names it, its base URL is found per process."""

    abstract = True
    engine = ""
    wait_time = between(0.05, 0.2)

    def __init__(self, environment: Environment) -> None:
        self.host = engine_url(environment, self.engine)
        super().__init__(environment)
        self.symbol = str(_option(environment, "symbol", "SPY"))
        self.account = str(_option(environment, "account", "paper"))

    def get(self, path: str, name: str, *, missing_ok: bool = False) -> None:
        """GET ``path``; a documented 404 (nothing yet) counts as success when ``missing_ok``."""
        with self.client.get(path, name=name, catch_response=True) as response:
            if response.status_code == 200 or (missing_ok and response.status_code == 404):
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]!r}")

    @task(1)
    def health(self) -> None:
        self.get("/health", f"{self.engine} /health")


class MarketDataUser(EngineUser):
    engine = "marketdata"

    @task(4)
    def bars(self) -> None:
        self.get(f"/bars?symbol={self.symbol}&spec=1m&limit=100", "marketdata /bars 1m")

    @task(1)
    def daily_bars(self) -> None:
        self.get(f"/bars?symbol={self.symbol}&spec=1d&limit=250", "marketdata /bars 1d")

    @task(3)
    def trades(self) -> None:
        self.get(f"/trades?symbol={self.symbol}&limit=100", "marketdata /trades")

    @task(4)
    def quote(self) -> None:
        self.get(
            f"/quotes/latest?symbol={self.symbol}", "marketdata /quotes/latest", missing_ok=True
        )


class VpinUser(EngineUser):
    engine = "vpin"

    @task(5)
    def latest(self) -> None:
        self.get(f"/vpin/{self.symbol}/latest", "vpin /vpin/{symbol}/latest", missing_ok=True)

    @task(1)
    def history(self) -> None:
        self.get(f"/vpin/{self.symbol}/history?limit=100", "vpin /vpin/{symbol}/history")


class FeaturesUser(EngineUser):
    engine = "features"

    @task(5)
    def latest(self) -> None:
        self.get(
            f"/features/{self.symbol}/latest", "features /features/{symbol}/latest", missing_ok=True
        )

    @task(1)
    def catalog(self) -> None:
        self.get("/features/catalog", "features /features/catalog")


class PortfolioUser(EngineUser):
    engine = "portfolio"

    @task(5)
    def pnl(self) -> None:
        self.get(
            f"/portfolio/{self.account}/pnl", "portfolio /portfolio/{account}/pnl", missing_ok=True
        )

    @task(3)
    def positions(self) -> None:
        self.get(
            f"/portfolio/{self.account}/positions",
            "portfolio /portfolio/{account}/positions",
            missing_ok=True,
        )


class RiskUser(EngineUser):
    engine = "risk"

    @task(5)
    def account_state(self) -> None:
        self.get(f"/risk/{self.account}", "risk /risk/{account}", missing_ok=True)

    @task(2)
    def var(self) -> None:
        self.get(f"/risk/var/{self.account}", "risk /risk/var/{account}", missing_ok=True)

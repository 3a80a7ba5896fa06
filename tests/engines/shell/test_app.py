from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import falcon.asgi
import msgspec
import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from engines.shell import create_app
from engines.shell.app import EngineApp
from engines.shell.rest import read_body
from engines.shell.server import serve_app
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.engines.shell.vwap_engine import VwapConfig, VwapEngine, routes

SECOND = 1_000_000_000


@pytest.fixture
async def engine() -> AsyncIterator[VwapEngine]:
    clock = ManualClock(1_700_000_000 * SECOND)
    engine = VwapEngine(VwapConfig(), bus=MemoryBus(clock=clock), clock=clock)
    yield engine
    await engine.stop()


@pytest.fixture
async def client(engine: VwapEngine) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(
        create_app(engine, version="1.2.3", routes=routes(engine))
    ) as conductor:
        yield conductor


async def test_health_follows_the_lifecycle(
    engine: VwapEngine, client: testing.ASGIConductor
) -> None:
    result = await client.simulate_get("/health")
    assert result.status_code == 503
    assert result.json["status"] == "starting"
    assert result.json["state"] == "created"

    await engine.start()
    assert isinstance(engine.clock, ManualClock)
    engine.clock.advance(90 * SECOND)
    result = await client.simulate_get("/health")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert body == {
        "status": "ok",
        "state": "running",
        "engine": "vwap",
        "version": "1.2.3",
        "uptime_s": 90.0,
        "last_input_age_s": None,
        "backlog": 0,
        "lag_s": 0.0,
        "errors": 0,
        "dropped": 0,
        "bad_input": {},
        "storage": body["storage"],
        "issues": [],
        "rest_latency": body["rest_latency"],
        "symbols": 0,
    }
    assert body["storage"]["kind"] == "memory" and body["storage"]["connected"]
    # the first /health was 90 s ago: out of the one-minute window; the second one is in
    assert body["rest_latency"]["count"] == 0
    timed = (await client.simulate_get("/health")).json["rest_latency"]
    assert timed["count"] == 1 and timed["p99_ms"] >= 0

    await engine.stop()
    result = await client.simulate_get("/health")
    assert (result.status_code, result.json["status"]) == (503, "stopped")


async def test_metrics_are_prometheus_text_with_the_standard_families(
    engine: VwapEngine, client: testing.ASGIConductor
) -> None:
    await engine.start()
    for price in (10.0, 11.0, 12.0):
        await engine.bus.publish("trades.SPY", {"price": price, "size": 1.0})
    await engine.bus.publish("trades.SPY", {"size": 1.0})  # a counted error
    await engine.stop()  # drains all four

    result = await client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(result.text)}
    assert {
        "nautilus_engine_inputs",
        "nautilus_engine_compute_seconds",
        "nautilus_engine_publish_lag_seconds",
        "nautilus_engine_errors",
        "nautilus_engine_up",
        "nautilus_engine_backlog",
    } <= set(families)
    samples = {(s.name, s.labels.get("le")): s for f in families.values() for s in f.samples}
    assert samples["nautilus_engine_inputs_total", None].value == 4
    assert samples["nautilus_engine_inputs_total", None].labels == {"engine": "vwap"}
    assert samples["nautilus_engine_published_total", None].value == 3
    assert samples["nautilus_engine_errors_total", None].value == 1
    assert samples["nautilus_engine_up", None].value == 0  # stopped
    assert families["nautilus_engine_compute_seconds"].type == "histogram"
    assert ("nautilus_engine_compute_seconds_bucket", "0.0001") in samples  # sub-ms buckets
    assert samples["nautilus_engine_compute_seconds_bucket", "+Inf"].value >= 1


async def test_two_engines_in_one_process_keep_separate_metrics() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock=clock)
    first = VwapEngine(VwapConfig(name="one"), bus=bus, clock=clock)
    second = VwapEngine(VwapConfig(name="two"), bus=bus, clock=clock)
    VwapEngine(VwapConfig(name="two"), bus=bus, clock=clock)  # no "Duplicated timeseries"
    first.metrics.inputs.inc(5)
    async with testing.ASGIConductor(
        create_app(second, version="x", routes=routes(second))
    ) as client:
        text = (await client.simulate_get("/metrics")).text
    assert 'nautilus_engine_inputs_total{engine="two"} 0.0' in text
    assert 'engine="one"' not in text


async def test_streams_lists_channels_with_delivery_class(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/streams")
    assert result.status_code == 200
    assert result.json == {
        "engine": "vwap",
        "streams": [
            {
                "channel": "signals.vwap.*",
                "delivery": "latest-value",
                "description": "running VWAP per symbol",
            }
        ],
    }


async def test_engine_resource_answers(engine: VwapEngine, client: testing.ASGIConductor) -> None:
    await engine.start()
    await engine.bus.publish("trades.SPY", {"price": 10.0, "size": 1.0})
    await engine.bus.publish("trades.SPY", {"price": 13.0, "size": 2.0})
    await engine.stop()
    result = await client.simulate_get("/vwap/SPY", params={"decimals": "1", "as_of": "5"})
    assert result.status_code == 200
    assert result.json == {"symbol": "SPY", "vwap": 12.0, "as_of": 5}


async def test_bad_parameter_is_400_naming_it(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/vwap/SPY", params={"decimals": "many"})
    assert result.status_code == 400
    assert result.json == {
        "error": {
            "code": "invalid_parameter",
            "message": "decimals must be an integer, got 'many'",
            "parameter": "decimals",
        }
    }
    result = await client.simulate_get("/vwap/SPY", params={"as_of": "2013-10-07T09:30:00"})
    assert (result.status_code, result.json["error"]["parameter"]) == (400, "as_of")


async def test_domain_not_found_is_404(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/vwap/NOPE")
    assert result.status_code == 404
    assert result.json == {
        "error": {"code": "not_found", "message": "no trades seen for NOPE", "parameter": "symbol"}
    }


async def test_unknown_route_and_method_are_json(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/no/such/route")
    assert result.status_code == 404
    assert result.json == {
        "error": {"code": "not_found", "message": "Not Found", "parameter": None}
    }
    result = await client.simulate_post("/health")
    assert result.status_code == 405
    assert result.json["error"]["code"] == "method_not_allowed"
    assert "GET" in result.headers["allow"]


async def test_unexpected_exception_is_a_500_without_internals(
    engine: VwapEngine, client: testing.ASGIConductor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        result = await client.simulate_get("/boom")
    assert result.status_code == 500
    assert result.json == {
        "error": {"code": "internal", "message": "internal error", "parameter": None}
    }
    assert "hunter2" not in result.text and "Traceback" not in result.text
    assert "hunter2" in caplog.text and "Traceback" in caplog.text  # logged, not sent
    assert engine.health()["errors"] == 1


def test_an_engine_cannot_shadow_a_shell_route() -> None:
    clock = ManualClock()
    engine = VwapEngine(VwapConfig(), bus=MemoryBus(clock=clock), clock=clock)
    with pytest.raises(ValueError, match="may not override the shell route /health"):
        create_app(engine, version="x", routes=[("/health", object())])


# --- hardening (issue 16): Falcon's own errors in our shape, a request-body limit ---------------


class Probe(msgspec.Struct, frozen=True):
    n: int


class ProbeResource:
    """Falcon's own parsing (``get_media``, ``get_param_as_int``) and ours (``read_body``)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"n": req.get_param_as_int("n", required=True)}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = await req.get_media()

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"n": (await read_body(req, Probe)).n}


def probe_app(engine: VwapEngine, **kwargs: Any) -> EngineApp:
    return create_app(engine, version="x", routes=[("/probe", ProbeResource())], **kwargs)


@pytest.mark.parametrize(
    ("request_args", "status", "code", "parameter"),
    [
        (("GET", "/probe", {"params": {"n": "x"}}), 400, "invalid_parameter", "n"),
        (("GET", "/probe", {}), 400, "invalid_parameter", "n"),
        (
            ("POST", "/probe", {"body": b"{bad", "content_type": "application/json"}),
            400,
            "invalid_parameter",
            "body",
        ),
        (
            ("POST", "/probe", {"body": b"x", "content_type": "text/x-nope"}),
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
    ],
)
async def test_falcons_own_errors_name_the_parameter(
    engine: VwapEngine,
    request_args: tuple[str, str, dict[str, Any]],
    status: int,
    code: str,
    parameter: str,
) -> None:
    method, path, kwargs = request_args
    async with testing.ASGIConductor(probe_app(engine)) as conductor:
        result = await conductor.simulate_request(method, path, **kwargs)
    assert result.status_code == status
    assert set(result.json) == {"error"}
    error = result.json["error"]
    assert set(error) == {"code", "message", "parameter"}
    assert (error["code"], error["parameter"]) == (code, parameter)


async def test_body_limit_is_configurable(engine: VwapEngine) -> None:
    async with testing.ASGIConductor(probe_app(engine, max_body_bytes=16)) as conductor:
        small = await conductor.simulate_put("/probe", body=b'{"n": 7}')
        assert (small.status_code, small.json) == (200, {"n": 7})
        large = await conductor.simulate_put("/probe", body=b'{"n": 7, "pad": "0123456789"}')
    assert large.status_code == 413
    assert large.json == {
        "error": {
            "code": "body_too_large",
            "message": "body larger than 16 bytes",
            "parameter": "body",
        }
    }


async def _exchange(port: int, head: bytes, first_body_bytes: bytes) -> bytes:
    """Send a request head and only the start of its body; return what the server answers
    (it must answer without the rest, which never comes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + first_body_bytes)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


async def test_too_large_body_is_413_before_it_is_read(engine: VwapEngine) -> None:
    server = await serve_app(probe_app(engine, max_body_bytes=1024), host="127.0.0.1", port=0)
    try:
        # 100 MB announced, 100 bytes sent: the answer cannot have waited for the body
        head = await _exchange(
            server.port,
            b"PUT /probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n",
            b"{" + b" " * 99,
        )
        assert head.startswith(b"HTTP/1.1 413 ")
        # chunked: no length to refuse it by; refused once the read passes the limit
        chunk = b'{"n": 1, "pad": "' + b"x" * 2000
        head = await _exchange(
            server.port,
            b"PUT /probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n",
        )
        assert head.startswith(b"HTTP/1.1 413 ")
    finally:
        await server.stop()


async def test_get_answers_are_readable_from_other_origins_and_nothing_else(
    client: testing.ASGIConductor,
) -> None:
    """The hub's trading UI (another port, so another origin) reads history with GET."""
    origin = {"Origin": "http://127.0.0.1:8600"}
    got = await client.simulate_get("/streams", headers=origin)
    assert got.headers["access-control-allow-origin"] == "*"
    preflight = await client.simulate_options(
        "/streams",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    posted = await client.simulate_post("/health", headers=origin)
    assert "access-control-allow-origin" not in posted.headers

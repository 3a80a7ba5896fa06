"""``GET /openapi.json`` on every registered engine: a valid OpenAPI 3.1 document (checked by
openapi-spec-validator against the OpenAPI Initiative's schema) with every route the app serves,
the methods each resource answers, its body schema from ``body_type``, its query parameters,
the shared error shape, and the 200 of every record endpoint naming its record (or stream
payload) schema. Against real answers: the embedded platform replays half an hour of the
bundled SPY day with every engine served on port 0; each engine's ``/openapi.json`` is read over
HTTP from its port, and the bodies its record endpoints answer validate against the 200 schema
that document gives (jsonschema, draft 2020-12)."""

from __future__ import annotations

import ast
import asyncio
import copy
import inspect
import textwrap
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema
import msgspec
import orjson
import pytest
from falcon import testing
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from prometheus_client import CONTENT_TYPE_LATEST

from engines.shell.app import SHELL_ROUTES, create_app
from engines.shell.config import load_config
from engines.shell.lifecycle import Engine
from engines.shell.openapi import METHODS, openapi_document, query_parameters
from engines.shell.registry import ENGINES, routes_for
from engines.shell.rest import HistoryResource, LatestResource
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.support import embedded_platform, replay_environ, until

SECOND = 1_000_000_000


def build(name: str) -> Engine[Any]:
    spec = ENGINES[name]
    cls = spec.load()
    clock = ManualClock(1_700_000_000 * SECOND)
    config = load_config(cls.config_type, {}, defaults=spec.config_defaults())
    return cls(config, bus=MemoryBus(clock=clock), clock=clock)


@pytest.fixture(scope="module")
def documents() -> dict[str, tuple[Engine[Any], dict[str, Any]]]:
    import asyncio

    async def fetch() -> dict[str, tuple[Engine[Any], dict[str, Any]]]:
        out = {}
        for name in ENGINES:
            engine = build(name)
            async with testing.ASGIConductor(create_app(engine, version="9.9.9")) as client:
                result = await client.simulate_get("/openapi.json")
                assert result.status_code == 200
                assert result.headers["content-type"].startswith("application/json")
                out[name] = (engine, result.json)
        return out

    return asyncio.run(fetch())


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_serves_a_valid_openapi_document_of_all_its_routes(
    name: str, documents: dict[str, tuple[Engine[Any], dict[str, Any]]]
) -> None:
    engine, document = documents[name]
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == "9.9.9" and name in document["info"]["title"]
    routes = routes_for(engine)
    assert routes, name
    assert set(document["paths"]) == {*SHELL_ROUTES, *(uri for uri, _ in routes)}
    for uri, resource in routes:
        answered = {m for m in METHODS if hasattr(resource, f"on_{m}")}
        item = document["paths"][uri]
        assert set(item) == answered, uri
        for operation in item.values():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert names == [s[1:-1] for s in uri.split("/") if s.startswith("{")], uri
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] \
                == {"$ref": "#/components/schemas/Error"}  # fmt: skip
        if isinstance(resource, HistoryResource):
            query = {p["name"] for p in item["get"]["parameters"] if p["in"] == "query"}
            assert {"from", "to", "limit", "cursor"} <= query, uri
        body_type: Any = getattr(resource, "body_type", None)
        for method in ("post", "put", "patch"):
            if method in item:
                has_body = "requestBody" in item[method]
                assert has_body == (body_type is not None), (uri, method)
                if has_body:
                    ref = item[method]["requestBody"]["content"]["application/json"]["schema"]
                    component = document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
                    (_,), defs = msgspec.json.schema_components([body_type])
                    assert (
                        component["properties"] == _resolved(defs[body_type.__name__])["properties"]
                    ), uri


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec's ``#/$defs/`` refs as the document's ``#/components/schemas/``."""
    text = msgspec.json.encode(schema).replace(b"#/$defs/", b"#/components/schemas/")
    result: dict[str, Any] = msgspec.json.decode(text)
    return result


def responders_reading_a_body() -> list[tuple[str, str, Any, str]]:
    """(engine, uri, resource, body type name) for every responder calling ``read_body``."""
    found = []
    for name in ENGINES:
        for uri, resource in routes_for(build(name)):
            for method in METHODS:
                responder = getattr(resource, f"on_{method}", None)
                if responder is None:
                    continue
                tree = ast.parse(textwrap.dedent(inspect.getsource(responder)))
                for node in ast.walk(tree):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                            and node.func.id == "read_body"):  # fmt: skip
                        found.append((name, uri, resource, ast.unparse(node.args[1])))
    return found


def test_every_resource_that_reads_a_body_declares_that_body_type() -> None:
    readers = responders_reading_a_body()
    assert len(readers) >= 12
    for name, uri, resource, body in readers:
        declared = getattr(resource, "body_type", None)
        assert declared is not None and declared.__name__ == body, (name, uri)


def test_query_parameters_are_read_from_the_responders_with_their_bounds() -> None:
    engine = build("strategy")
    resources: dict[str, Any] = dict(routes_for(engine))
    params = {p["name"]: p for p in query_parameters(resources["/strategy/orders"].on_get)}
    assert params["limit"]["schema"] == {"type": "integer", "default": 1_000, "minimum": 1,
                                         "maximum": 100_000}  # fmt: skip
    assert "filled" in params["status"]["schema"]["enum"]
    collateral: dict[str, Any] = dict(routes_for(build("collateral")))
    simm = {p["name"] for p in query_parameters(collateral["/collateral/simm"].on_post)}
    assert {"format", "version", "mpor", "calculation_currency"} == simm  # format via _format(req)


def test_store_resources_answer_their_record_schema(
    documents: dict[str, tuple[Engine[Any], dict[str, Any]]],
) -> None:
    engine, document = documents["collateral"]
    resources = dict(routes_for(engine))
    assert isinstance(resources["/collateral/{agreement}/history"], HistoryResource)
    answer = document["paths"]["/collateral/{agreement}/history"]["get"]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]
    assert schema["required"] == ["agreement", "items", "next_cursor"]
    assert schema["properties"]["items"]["items"] == {"$ref": "#/components/schemas/AgreementState"}
    latest = [r for r in routes_for(build("vpin")) if isinstance(r[1], LatestResource)]
    assert latest


def test_the_validator_refuses_a_broken_document() -> None:
    routes = routes_for(build("vpin"))
    document = openapi_document(title="t", version="1", routes=routes)
    validate(document)
    broken = copy.deepcopy(document)
    broken["paths"]["/vpin/{symbol}/latest"]["get"]["parameters"][0]["in"] = "body"
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


@pytest.fixture
async def vwap_client() -> AsyncIterator[testing.ASGIConductor]:
    from tests.engines.shell.vwap_engine import VwapConfig, VwapEngine, routes

    clock = ManualClock(1_700_000_000 * SECOND)
    engine = VwapEngine(VwapConfig(), bus=MemoryBus(clock=clock), clock=clock)
    async with testing.ASGIConductor(
        create_app(engine, version="1.2.3", routes=routes(engine))
    ) as conductor:
        yield conductor
    await engine.stop()


async def test_an_engine_may_not_override_the_openapi_route() -> None:
    engine = build("vpin")
    with pytest.raises(ValueError, match=r"openapi\.json"):
        create_app(engine, version="1", routes=[("/openapi.json", object())])


async def test_a_test_engines_app_documents_its_own_routes(
    vwap_client: testing.ASGIConductor,
) -> None:
    result = await vwap_client.simulate_get("/openapi.json")
    validate(result.json)
    assert {"/vwap/{symbol}", "/boom", "/slow"} <= set(result.json["paths"])
    assert result.json["paths"]["/vwap/{symbol}"]["get"]["parameters"][0]["name"] == "symbol"


# ── the 200 of record endpoints ──────────────────────────────────────────────────────────────

#: (engine, method, path) → the component its 200 names: a record (``protocol.records``, an
#: engine's stored ``Struct``) or a stream payload written in ``protocol/schemas.py``.
RECORD_ANSWERS: dict[tuple[str, str, str], str] = {
    ("marketdata", "get", "/instruments"): "InstrumentRow",
    ("marketdata", "get", "/trades"): "Trade",
    ("marketdata", "get", "/quotes"): "Quote",
    ("marketdata", "get", "/quotes/latest"): "Quote",
    ("marketdata", "get", "/bars"): "Bar",
    ("marketdata", "get", "/book/{symbol}"): "BookTop",
    ("vpin", "get", "/vpin/{symbol}/latest"): "VpinPayload",
    ("vpin", "get", "/vpin/{symbol}/history"): "VpinPayload",
    ("evpin", "get", "/evpin/{symbol}/latest"): "EvpinPayload",
    ("evpin", "get", "/evpin/{symbol}/history"): "EvpinPayload",
    ("features", "get", "/features/{symbol}/latest"): "FeatureValues",
    ("features", "get", "/features/{symbol}/history"): "FeatureValues",
    ("factor", "get", "/factor/{model}/{symbol}/latest"): "FactorPayload",
    ("factor", "get", "/factor/{model}/{symbol}/history"): "FactorPayload",
    ("ml", "get", "/ml/{model}/{symbol}/latest"): "MlPayload",
    ("ml", "get", "/ml/{model}/{symbol}/history"): "MlPayload",
    ("strategy", "get", "/strategy/orders"): "Order",
    ("strategy", "get", "/strategy/orders/{client_order_id}"): "Order",
    ("portfolio", "get", "/portfolio/{account}/positions"): "AccountPositions",
    ("portfolio", "get", "/portfolio/{account}/pnl"): "AccountState",
    ("portfolio", "get", "/portfolio/{account}/fills"): "Fill",
    ("risk", "get", "/risk/var/{account}"): "RiskVarPayload",
    ("risk", "get", "/risk/{account}/denials"): "Order",
    ("analytics", "get", "/analytics/{key}"): "AnalyticsPayload",
    ("analytics", "get", "/analytics/{key}/history"): "AnalyticsPayload",
    ("collateral", "get", "/collateral/{agreement}"): "AgreementState",
    ("collateral", "post", "/collateral/{agreement}/exposure"): "AgreementState",
    ("collateral", "get", "/collateral/calls"): "CallView",
    ("collateral", "get", "/collateral/calls/{call_id}"): "CallView",
    ("collateral", "post", "/collateral/calls/{call_id}"): "CallRecord",
    ("collateral", "get", "/collateral/{agreement}/history"): "AgreementState",
    ("collateral", "get", "/collateral/{agreement}/calls"): "CallRecord",
    ("backtesting", "get", "/backtests/{id}"): "BacktestPayload",
}
#: Answers that are not JSON.
HTML_ANSWERS = {("analytics", "/analytics/{key}/report"), ("backtesting", "/backtests/{id}/report")}


def answer_schema(document: dict[str, Any], path: str, method: str = "get") -> Any:
    content = document["paths"][path][method]["responses"]["200"]["content"]
    return content["application/json"]["schema"]


def refs(node: Any) -> Iterator[str]:
    """Every component a schema refers to, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value.rsplit("/", 1)[1]
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_record_endpoints_answer_their_record_schema(
    documents: dict[str, tuple[Engine[Any], dict[str, Any]]],
) -> None:
    for (name, method, path), record in RECORD_ANSWERS.items():
        document = documents[name][1]
        schema = answer_schema(document, path, method)
        assert record in set(refs(schema)), (name, method, path, schema)
        assert record in document["components"]["schemas"], (name, record)
    for name, path in HTML_ANSWERS:
        content = documents[name][1]["paths"][path]["get"]["responses"]["200"]["content"]
        assert content == {"text/html": {"schema": {"type": "string"}}}
    # one definition: a dict payload's component is protocol/schemas.py's, a record's msgspec's
    from protocol.schemas import DICT_PAYLOADS

    vpin = documents["vpin"][1]["components"]["schemas"]["VpinPayload"]
    assert vpin == DICT_PAYLOADS["vpin"]
    # a history page is HistoryResource's envelope around the record
    fills = answer_schema(documents["portfolio"][1], "/portfolio/{account}/fills")
    assert fills["required"] == ["account", "items", "next_cursor"]
    assert fills["properties"]["items"]["items"] == {"$ref": "#/components/schemas/Fill"}
    bars = answer_schema(documents["marketdata"][1], "/bars")
    assert bars["required"] == ["symbol", "spec", "adjustment", "items", "next_cursor"]


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_the_shells_own_routes_document_their_answers(
    name: str, documents: dict[str, tuple[Engine[Any], dict[str, Any]]]
) -> None:
    document = documents[name][1]
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [CONTENT_TYPE_LATEST]  # the Prometheus text format
    assert "EngineStreams" in set(refs(answer_schema(document, "/streams")))


def test_every_store_resource_is_typed_and_the_rest_are_counted(
    documents: dict[str, tuple[Engine[Any], dict[str, Any]]],
) -> None:
    typed = total = 0
    for name, (engine, document) in documents.items():
        for uri, resource in routes_for(engine):
            for operation in document["paths"][uri].values():
                total += 1
                content = operation["responses"]["200"]["content"]
                schema = content.get("application/json", {"schema": {"type": "string"}})["schema"]
                typed += schema != {}
                if isinstance(resource, LatestResource | HistoryResource):
                    assert schema not in ({}, {"type": "object"}), (name, uri)
    # every typed answer is in the tables above (a new one is added there, checked by the test
    # before); the rest answer ad-hoc JSON (batch computes, reports of a run, small acks)
    assert typed == len(RECORD_ANSWERS) + len(HTML_ANSWERS), (typed, total)
    assert total >= 60, total


# ── real answers, from running engines over HTTP ─────────────────────────────────────────────


def http(port: int, path: str, body: Any = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request to a running engine (blocking: a thread)."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


BACKTEST = {"strategy": "ma_cross", "mode": "vectorized", "symbols": ["SPY"], "bars": "1d",
            "from": "2018-01-01", "to": "2021-01-01"}  # fmt: skip


def validation_errors(document: dict[str, Any], path: str, method: str, body: Any) -> list[str]:
    schema = {**answer_schema(document, path, method), "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{method.upper()} {path}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in list(validator.iter_errors(body))[:3]
    ]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_real_answers_validate_against_the_served_documents() -> None:
    environ = replay_environ("09:30", "10:00")
    bodies: dict[tuple[str, str, str], Any] = {}
    documents: dict[str, dict[str, Any]] = {}
    async with embedded_platform(environ) as run:
        engines = run.engines
        marketdata: Any = engines["marketdata"].engine
        await until(lambda: marketdata.progress.done, timeout_s=150)

        async def get(
            name: str, template: str, concrete: str, body: Any = None, *, optional: bool = False
        ) -> Any:
            """The answer, kept to validate (``optional``: a 404 is fine, the replay may have
            nothing there)."""
            method = "get" if body is None else "post"
            port = engines[name].port
            status, _, raw = await asyncio.to_thread(http, port, concrete, body)
            if optional and status == 404:
                return None
            assert status == 200, (name, concrete, status, raw[:300])
            bodies[(name, method, template)] = orjson.loads(raw)
            return bodies[(name, method, template)]

        for running in engines.running:
            name = running.engine.name
            status, kind, raw = await asyncio.to_thread(http, running.port, "/openapi.json")
            assert status == 200 and kind.startswith("application/json"), name
            documents[name] = orjson.loads(raw)
            validate(documents[name])

        factor_model = engines["factor"].engine.config.model
        ml_model = engines["ml"].engine.config.models[0]
        await get("marketdata", "/instruments", "/instruments")
        for table in ("trades", "quotes"):
            await get("marketdata", f"/{table}", f"/{table}?symbol=SPY&limit=5")
        await get("marketdata", "/quotes/latest", "/quotes/latest?symbol=SPY", optional=True)
        await get("marketdata", "/book/{symbol}", "/book/SPY", optional=True)  # trades-only replay
        await get("marketdata", "/bars", "/bars?symbol=SPY&spec=1m&limit=5&adjustment=split")
        for name, prefix in (("vpin", "/vpin/SPY"), ("evpin", "/evpin/SPY"),
                             ("features", "/features/SPY"),
                             ("factor", f"/factor/{factor_model}/SPY"),
                             ("ml", f"/ml/{ml_model}/SPY")):  # fmt: skip
            template = {"factor": "/factor/{model}/{symbol}", "ml": "/ml/{model}/{symbol}"}.get(
                name, f"/{name}/{{symbol}}"
            )
            await get(name, f"{template}/latest", f"{prefix}/latest")
            page = await get(name, f"{template}/history", f"{prefix}/history?limit=3")
            assert page["items"], (name, "an empty page proves little")
        orders = await get("strategy", "/strategy/orders", "/strategy/orders?limit=5")
        assert orders["items"]
        order_id = orders["items"][-1]["client_order_id"]
        await get("strategy", "/strategy/orders/{client_order_id}", f"/strategy/orders/{order_id}")
        for view in ("positions", "pnl"):
            await get("portfolio", f"/portfolio/{{account}}/{view}", f"/portfolio/paper/{view}")
        fills = await get(
            "portfolio", "/portfolio/{account}/fills", "/portfolio/paper/fills?limit=3"
        )
        assert fills["items"]
        await get("risk", "/risk/var/{account}", "/risk/var/paper")
        await get("risk", "/risk/{account}/denials", "/risk/paper/denials?limit=3")
        await get("analytics", "/analytics/{key}", "/analytics/paper")
        await get("analytics", "/analytics/{key}/history", "/analytics/paper/history?limit=3")
        # a posted exposure past the threshold issues a call; agreeing to it is a transition
        await get("collateral", "/collateral/{agreement}", "/collateral/paper")
        await get("collateral", "/collateral/{agreement}/exposure", "/collateral/paper/exposure",
                  {"exposure": 2.5e6})  # fmt: skip
        calls = await get("collateral", "/collateral/calls", "/collateral/calls")
        call_id = calls["calls"][-1]["call_id"]
        await get("collateral", "/collateral/calls/{call_id}", f"/collateral/calls/{call_id}")
        await get("collateral", "/collateral/calls/{call_id}", f"/collateral/calls/{call_id}",
                  {"event": "agree"})  # fmt: skip
        await get(
            "collateral", "/collateral/{agreement}/history", "/collateral/paper/history?limit=3"
        )
        transitions = await get(
            "collateral", "/collateral/{agreement}/calls", "/collateral/paper/calls?limit=3"
        )
        assert transitions["items"]
        # a small backtest job, read back once done
        job = orjson.loads(
            (await asyncio.to_thread(http, engines["backtesting"].port, "/backtests", BACKTEST))[2]
        )["job"]
        backtesting: Any = engines["backtesting"].engine
        await until(lambda: backtesting.jobs[job].status in ("done", "failed"), 60)
        document = await get("backtesting", "/backtests/{id}", f"/backtests/{job}")
        assert document["status"] == "done", document["log"]
        for name, report in (("analytics", "/analytics/paper/report"),
                             ("backtesting", f"/backtests/{job}/report")):  # fmt: skip
            status, kind, _ = await asyncio.to_thread(http, engines[name].port, report)
            assert status == 200 and kind.startswith("text/html"), (name, status)

    errors = [
        error
        for (name, method, path), body in bodies.items()
        for error in validation_errors(documents[name], path, method, body)
    ]
    assert errors == []
    # every record endpoint answered but the two a trades-only replay has nothing for
    missing = set(RECORD_ANSWERS) - set(bodies)
    assert missing <= {
        ("marketdata", "get", "/quotes/latest"),
        ("marketdata", "get", "/book/{symbol}"),
    }

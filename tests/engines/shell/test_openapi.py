"""``GET /openapi.json`` on every registered engine: a valid OpenAPI 3.1 document (checked by
openapi-spec-validator against the OpenAPI Initiative's schema) with every route the app serves,
the methods each resource answers, its body schema from ``body_type``, its query parameters
and the shared error shape; and the one served by a running engine port."""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from falcon import testing
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from engines.shell.app import SHELL_ROUTES, create_app
from engines.shell.config import load_config
from engines.shell.lifecycle import Engine
from engines.shell.openapi import METHODS, openapi_document, query_parameters
from engines.shell.registry import ENGINES, routes_for
from engines.shell.rest import HistoryResource, LatestResource
from realtime.bus import MemoryBus
from realtime.clock import ManualClock

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

"""The Falcon app every engine serves: ``/health``, ``/metrics``, ``/streams`` and its own routes.

Errors are mapped here, once, for every engine: a ``DomainError`` becomes its 4xx, the store's
``InvalidQuery`` a 400 naming the parameter and ``StoreUnavailable`` a 503 (retry later), a Falcon
``HTTPError`` keeps its status, anything else is a 500 whose traceback goes to the log and never
to the client. Every
error body has the same shape, ``{"error": {"code", "message", "parameter"}}``, Falcon's own
included: its 400s name the query parameter, header or ``body`` at fault, its 415 ``Content-Type``.
A request whose ``Content-Length`` passes the body limit is answered 413 before its body is read.
"""

from __future__ import annotations

import functools
import http
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, TypeAlias

import falcon
import falcon.asgi
import falcon.media
import msgspec
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engines.shell.errors import DomainError
from engines.shell.lifecycle import Engine, Route
from engines.shell.openapi import Text, openapi_document
from engines.shell.registry import routes_for
from engines.shell.rest import MAX_BODY_BYTES, payload_too_large
from realtime.storage import InvalidQuery, StoreUnavailable

log = logging.getLogger(__name__)

_dumps = functools.partial(
    orjson.dumps, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
)
#: Statuses /health answers 200 with; others (starting, stopping, failed) answer 503 so a
#: load balancer or orchestrator reads the status line alone.
_HEALTHY = frozenset({"ok", "degraded"})
SHELL_ROUTES = ("/health", "/metrics", "/streams", "/openapi.json")

EngineApp: TypeAlias = falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]


def create_app(
    engine: Engine[Any],
    *,
    version: str,
    routes: Sequence[Route] | None = None,
    max_body_bytes: int | None = None,
) -> EngineApp:
    """Build the ASGI app for ``engine``: shell routes, then ``routes`` (default: what the
    registry's REST factory for the engine's class builds, ``registry.routes_for``). Request
    bodies are limited to ``max_body_bytes`` (default: the engine config's ``max_body_bytes``
    when it has one, else ``rest.MAX_BODY_BYTES``)."""
    if routes is None:
        routes = routes_for(engine)
    if max_body_bytes is None:
        max_body_bytes = int(getattr(engine.config, "max_body_bytes", MAX_BODY_BYTES))
    middleware: list[Any] = [
        BodyLimit(max_body_bytes),
        RequestTiming(engine),
        ReadableCrossOrigin(),
    ]
    app = falcon.asgi.App(middleware=middleware)
    json_handler = falcon.media.JSONHandler(dumps=_dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler

    served: list[Route] = [
        ("/health", HealthResource(engine, version)),
        ("/metrics", MetricsResource(engine)),
        ("/streams", StreamsResource(engine)),
    ]
    for route, _ in routes:
        if route in SHELL_ROUTES:
            raise ValueError(f"engine {engine.name} may not override the shell route {route}")
    served.extend(routes)
    served.append(("/openapi.json", OpenApiResource(engine.name, version, served)))
    for route, resource in served:
        app.add_route(route, resource)

    async def internal_error(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any
    ) -> None:
        engine.record_error(f"unhandled error serving {req.method} {req.path}", exc_info=ex)
        resp.status = 500
        resp.media = error_body("internal", "internal error")

    app.add_error_handler(Exception, internal_error)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(DomainError, _domain_error)
    app.add_error_handler(InvalidQuery, _invalid_query)
    app.add_error_handler(StoreUnavailable, _store_unavailable)
    return app


def error_body(code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    """The one error shape every engine answers with."""
    return {"error": {"code": code, "message": message, "parameter": parameter}}


class BodyLimit:
    """413 for a request whose ``Content-Length`` passes the limit, before its body is read;
    the limit rides on ``req.context`` for ``rest.read_body_bytes``, which caps a chunked read."""

    def __init__(self, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {max_body_bytes}")
        self._limit = max_body_bytes

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.max_body_bytes = self._limit
        if req.content_length is not None and req.content_length > self._limit:
            raise payload_too_large(self._limit)


class ReadableCrossOrigin:
    """``Access-Control-Allow-Origin: *`` on GET answers, so a page of another origin (the hub's
    trading UI on its own port) may read REST history. A preflight gets no such header, so a
    script of another origin still cannot send a JSON body, nor read what any other method
    answers."""

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: object, ok: bool
    ) -> None:
        if req.method == "GET":
            resp.set_header("Access-Control-Allow-Origin", "*")


class RequestTiming:
    """Times every request: ``nautilus_engine_request_seconds{method,route}`` for Prometheus
    and the engine's last-minute p50/p99 for ``/health`` and the status view. The route label
    is the URI template (bounded), never the raw path."""

    def __init__(self, engine: Engine[Any]) -> None:
        self._engine = engine
        self._histogram = engine.metrics.request_seconds

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: object, ok: bool
    ) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        seconds = time.perf_counter() - started
        route = req.uri_template or "other"
        self._histogram.labels(self._engine.name, req.method, route).observe(seconds)
        self._engine.rest_latency.observe(self._engine.clock.now_ns(), seconds)


class HealthResource:
    def __init__(self, engine: Engine[Any], version: str) -> None:
        self._engine = engine
        self._version = version

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = self._engine.health()
        body["version"] = self._version
        resp.media = body
        resp.status = 200 if body["status"] in _HEALTHY else 503


class MetricsResource:
    """``GET /metrics``: the engine's Prometheus metrics (text exposition format)."""

    response_type = Text(CONTENT_TYPE_LATEST)

    def __init__(self, engine: Engine[Any]) -> None:
        self._registry = engine.metrics.registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = generate_latest(self._registry)
        resp.content_type = CONTENT_TYPE_LATEST


class Stream(msgspec.Struct, frozen=True):
    """One stream an engine publishes: its channel pattern and delivery class."""

    channel: str
    delivery: str
    description: str


class EngineStreams(msgspec.Struct, frozen=True):
    """``GET /streams``: what the engine publishes."""

    engine: str
    streams: list[Stream]


class StreamsResource:
    """``GET /streams``: the streams this engine publishes, with their delivery class."""

    response_type = EngineStreams

    def __init__(self, engine: Engine[Any]) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        answer = EngineStreams(
            self._engine.name,
            [Stream(s.channel, s.delivery.value, s.description) for s in self._engine.streams()],
        )
        resp.media = msgspec.to_builtins(answer)


class OpenApiResource:
    """``GET /openapi.json``: the OpenAPI 3.1 document of every route this app serves
    (``engines.shell.openapi``), built on the first request."""

    def __init__(self, engine: str, version: str, routes: Sequence[Route]) -> None:
        self._engine = engine
        self._version = version
        self._routes = routes  # the app's, this one included once it is added
        self._document: dict[str, Any] | None = None

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if self._document is None:
            self._document = openapi_document(
                title=f"Nautilus Realtime {self._engine} engine",
                version=self._version,
                routes=self._routes,
                description=f"REST API of the {self._engine} engine; WebSocket streams are "
                "described by the hub's /asyncapi.json.",
            )
        resp.media = self._document


async def _domain_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: DomainError, params: Any
) -> None:
    resp.status = ex.status
    resp.media = error_body(ex.code, ex.message, ex.parameter)


async def _invalid_query(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: InvalidQuery, params: Any
) -> None:
    resp.status = 400
    resp.media = error_body("invalid_parameter", str(ex), ex.parameter)


async def _store_unavailable(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: StoreUnavailable, params: Any
) -> None:
    resp.status = 503
    resp.set_header("Retry-After", "1")
    resp.media = error_body("storage_unavailable", "storage unreachable, retry later")


#: Falcon names the query parameter or header at fault only in its description.
_NAMED = re.compile(r'The "(?P<name>[^"]+)" (?P<kind>parameter|header)')


def _parameter(ex: falcon.HTTPError) -> tuple[str | None, str | None]:
    """``(code, parameter)`` for Falcon's own errors, as ours name them: an invalid or missing
    query parameter or header, a body it could not parse or that is too large, a content type
    it has no handler for. ``(None, None)`` for any other."""
    if isinstance(ex, falcon.MediaMalformedError | falcon.MediaValidationError):
        return "invalid_parameter", "body"
    if isinstance(ex, falcon.HTTPContentTooLarge):
        return None, "body"
    if isinstance(ex, falcon.HTTPUnsupportedMediaType):
        return None, "Content-Type"
    if isinstance(ex, falcon.HTTPBadRequest) and ex.description:
        named = _NAMED.search(ex.description)
        if named is not None:
            return "invalid_parameter", named["name"]
    return None, None


async def _http_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: falcon.HTTPError, params: Any
) -> None:
    status = http.HTTPStatus(ex.status_code)
    code, parameter = _parameter(ex)
    if ex.code is not None:
        code = str(ex.code)
    elif code is None:
        code = status.phrase.lower().replace(" ", "_")
    resp.status = ex.status_code
    if ex.headers:
        resp.set_headers(ex.headers)
    resp.media = error_body(code, ex.description or status.phrase, parameter)

"""The OpenAPI 3.1 document of an engine's REST API, generated from its routes
(``GET /openapi.json`` on every engine port; ``app.create_app`` serves it).

Nothing is written twice: the document is read off the same ``(uri, resource)`` routes the app
serves.

* **paths** are the routes' URI templates (Falcon's ``{field}`` is OpenAPI's), one operation per
  responder method the resource has (``on_get``, ``on_post``, ``on_put``, ``on_patch``,
  ``on_delete``), summarised by the responder's (or else the resource's) docstring;
* **path parameters** come from the template;
* **request bodies** from the ``body_type`` a resource declares (a class attribute naming the
  ``msgspec.Struct`` its responder passes to ``rest.read_body``; msgspec writes its JSON Schema);
* **query parameters** are read from the responder's source: the shell's parameter helpers
  (``query_int(req, "limit", minimum=1)``, ``query_float``, ``query_enum``, ``query_symbol``,
  ``query_time_ns``), ``req.get_param("name")`` and ``TimeRange.from_request(req)`` (``from``,
  ``to``, ``limit``, ``cursor``: every ``HistoryResource``), followed into module functions the
  responder hands ``req`` to;
* **responses**: ``LatestResource``/``HistoryResource`` answer their store's record schema (a
  page of them for history); every operation lists the shared error shape
  (``{"error": {"code", "message", "parameter"}}``) for 400 where it takes input, 404 where the
  path names something, 413/415 where it reads a body, and as the default.

Limits: a query parameter read any other way is not listed; other responses are documented as
JSON without a schema; a parameter's default and bounds are listed only where the call spells
them as literals.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec

from engines.shell.lifecycle import Route
from engines.shell.rest import DEFAULT_LIMIT, MAX_BODY_BYTES, HistoryResource, LatestResource
from realtime.storage import MAX_PAGE_ROWS

OPENAPI_VERSION = "3.1.0"
METHODS = ("get", "post", "put", "patch", "delete")
Schema = dict[str, Any]

_FIELD = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")
_REF = "#/components/schemas/{name}"
_ERROR_REF = {"$ref": _REF.format(name="Error")}
ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": "the one error shape of every engine (engines/shell/app.py)",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "parameter"],
            "properties": {
                "code": {"type": "string", "description": "stable machine name"},
                "message": {"type": "string"},
                "parameter": {
                    "type": ["string", "null"],
                    "description": "the query parameter, path field or body field at fault",
                },
            },
        }
    },
}
_TIME: Schema = {
    "description": "ns since the Unix epoch, or ISO-8601 with an offset",
    "schema": {"type": ["integer", "string"]},
}
#: ``TimeRange.from_request``: what every history endpoint reads.
TIME_RANGE: tuple[Schema, ...] = (
    {"name": "from", "in": "query", **_TIME},
    {"name": "to", "in": "query", **_TIME},
    {
        "name": "limit",
        "in": "query",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PAGE_ROWS,
            "default": DEFAULT_LIMIT,
        },
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "opaque, from the previous page's next_cursor",
        "schema": {"type": "string"},
    },
)
_HELPERS: dict[str, Schema] = {
    "query_int": {"type": "integer"},
    "query_float": {"type": "number"},
    "query_time_ns": _TIME["schema"],
    "query_symbol": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]{1,40}$"},
    "query_enum": {"type": "string"},
}
_DEFAULT_NAMES = {"query_symbol": "symbol"}
_BOUNDS = {"minimum": "minimum", "maximum": "maximum", "default": "default"}


def openapi_document(
    *, title: str, version: str, routes: Sequence[Route], description: str = ""
) -> Schema:
    """The OpenAPI 3.1 document of ``routes`` (every route the app serves)."""
    types: list[Any] = []
    paths: dict[str, Schema] = {}
    for uri, resource in routes:
        path = _FIELD.sub(r"{\1}", uri)
        fields = _FIELD.findall(uri)
        item: Schema = {}
        for method in METHODS:
            responder = getattr(resource, f"on_{method}", None)
            if responder is not None:
                item[method] = _operation(method, path, fields, resource, responder, types)
        paths[path] = item
    names, components = _components(types)
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": _resolve(paths, names),
        "components": {"schemas": {"Error": ERROR_SCHEMA, **components}},
    }
    return document


def _operation(
    method: str, path: str, fields: list[str], resource: object,
    responder: Callable[..., Any], types: list[Any],
) -> Schema:  # fmt: skip
    doc = inspect.getdoc(responder) or inspect.getdoc(type(resource)) or ""
    params: list[Schema] = [
        {"name": f, "in": "path", "required": True, "schema": {"type": "string"}} for f in fields
    ]
    seen = set(fields)
    for param in query_parameters(responder):
        if param["name"] not in seen:
            seen.add(param["name"])
            params.append(param)
    operation: Schema = {
        "operationId": f"{method}_{_slug(path)}",
        "tags": [type(resource).__name__],
        "summary": _summary(doc) or f"{method.upper()} {path}",
    }
    if doc:
        operation["description"] = doc
    if params:
        operation["parameters"] = params
    body_type = getattr(resource, "body_type", None) if method in ("post", "put", "patch") else None
    if body_type is not None:
        types.append(body_type)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _Pending(body_type)}},
        }
    response = _response_schema(resource, types)
    content = {"application/json": {"schema": {} if response is None else response}}
    responses: Schema = {"200": {"description": "OK", "content": content}}
    if params or body_type is not None:
        responses["400"] = _error("a parameter or body field is invalid (named in the error)")
    if fields:
        responses["404"] = _error("nothing by that name")
    if body_type is not None:
        responses["413"] = _error(f"body over the engine's limit (default {MAX_BODY_BYTES} B)")
        responses["415"] = _error("unsupported Content-Type")
    responses["default"] = _error("any other error, in the same shape")
    operation["responses"] = responses
    return operation


def _summary(doc: str) -> str:
    """The docstring's first sentence, on one line."""
    first = doc.split("\n\n")[0].replace("\n", " ")
    return re.split(r"(?<=[.:;])\s", first, maxsplit=1)[0].rstrip(".:;")


def _error(text: str) -> Schema:
    return {"description": text, "content": {"application/json": {"schema": _ERROR_REF}}}


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"


class _Pending:
    """A type whose schema reference is known once every type is collected."""

    def __init__(self, type_: Any) -> None:
        self.type = type_


def _response_schema(resource: object, types: list[Any]) -> Any:
    """The answer of the shell's store resources: the store's record (a page for history)."""
    if not isinstance(resource, LatestResource | HistoryResource):
        return None
    record_type = getattr(getattr(resource, "_records", None), "record_type", None)
    if isinstance(record_type, type) and issubclass(record_type, msgspec.Struct):
        types.append(record_type)
        item: Any = _Pending(record_type)
    else:
        item = {"type": "object"}
    if isinstance(resource, LatestResource):
        return item
    key = str(getattr(resource, "_key", "key"))
    return {
        "type": "object",
        "required": [key, "items", "next_cursor"],
        "properties": {
            key: {"type": "string"},
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _components(types: list[Any]) -> tuple[dict[int, Schema], Schema]:
    unique = list({id(t): t for t in types}.values())
    if not unique:
        return {}, {}
    refs, components = msgspec.json.schema_components(unique, ref_template=_REF)
    return {id(t): ref for t, ref in zip(unique, refs, strict=True)}, components


def _resolve(node: Any, names: dict[int, Schema]) -> Any:
    if isinstance(node, _Pending):
        return names[id(node.type)]
    if isinstance(node, dict):
        return {k: _resolve(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, names) for v in node]
    return node


# ── query parameters, read from the responder's source ───────────────────────────────────────


def query_parameters(function: Callable[..., Any]) -> list[Schema]:
    """The query parameters ``function`` reads (see the module docstring), in source order."""
    found: dict[str, Schema] = {}
    for param in _reads(function, depth=2):
        found.setdefault(param["name"], param)
    return list(found.values())


def _reads(function: Callable[..., Any], depth: int) -> Iterator[Schema]:
    tree = _tree(getattr(function, "__func__", function))
    if tree is None:
        return
    module = inspect.getmodule(function)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        if name == "from_request" and _attribute_of(node) == "TimeRange":
            yield from (dict(p) for p in TIME_RANGE)
        elif name == "get_param" and node.args and _literal(node.args[0]) is not None:
            yield {"name": _literal(node.args[0]), "in": "query", "schema": {"type": "string"}}
        elif name in _HELPERS:
            param = _helper(name, node, module)
            if param is not None:
                yield param
        elif depth > 0 and isinstance(node.func, ast.Name) and _passes_req(node):
            target = getattr(module, node.func.id, None)
            if inspect.isfunction(target) and target.__module__ == getattr(module, "__name__", ""):
                yield from _reads(target, depth - 1)


@functools.lru_cache(maxsize=512)
def _tree(function: Callable[..., Any]) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    return ast.parse(source)


def _called(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _attribute_of(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id
    return None


def _passes_req(node: ast.Call) -> bool:
    return any(isinstance(a, ast.Name) and a.id == "req" for a in node.args)


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None


def _helper(name: str, node: ast.Call, module: Any) -> Schema | None:
    """One ``query_*(req, "name", …)`` call as a parameter: type, bounds, default, required."""
    raw = _literal(node.args[1]) if len(node.args) > 1 else _DEFAULT_NAMES.get(name)
    if not isinstance(raw, str):
        return None
    schema = dict(_HELPERS[name])
    required = False
    for keyword in node.keywords:
        value = _literal(keyword.value) if keyword.value is not None else None
        if keyword.arg == "required":
            required = value is True
        elif keyword.arg in _BOUNDS and isinstance(value, int | float | str):
            schema[_BOUNDS[keyword.arg]] = value
    if name == "query_enum" and len(node.args) > 2:
        choices = _enum_values(node.args[2], module)
        if choices:
            schema["enum"] = choices
    param: Schema = {"name": raw, "in": "query", "schema": schema}
    if required:
        param["required"] = True
    return param


def _enum_values(node: ast.AST, module: Any) -> list[str]:
    """The values of the enum a ``query_enum`` call names (``core.CallState``)."""
    target: Any = module
    for part in ast.unparse(node).split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return [str(member.value) for member in target]
    return []

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
* **responses**: the 200 of a resource that declares ``response_type`` (a class attribute, a
  property where the answer depends on the instance, ``ByMethod(get=…, post=…)`` where its
  methods answer differently); else, for the shell's ``LatestResource``/
  ``HistoryResource``, their store's record (a page of them for history). A declaration is a
  type msgspec knows (a record ``Struct``, ``list[Order]``: msgspec writes its schema, as for
  bodies) or one of the shapes below, which nest: ``Payload(kind)`` (a stream kind's payload,
  ``protocol.schemas``: the record type of record kinds, the schema written there for the
  others: one definition for the stream and the REST answer), ``Page(item, key=)`` (a history
  page, ``{key, "items": [...], "next_cursor"}``), ``Items(item, name=)`` (``{name: [...]}``),
  ``Extended(base, fields)`` (a record plus fields), ``Text(media_type)`` (HTML reports). Every
  operation lists the shared error shape (``{"error": {"code", "message", "parameter"}}``) for
  400 where it takes input, 404 where the path names something, 413/415 where it reads a body,
  and as the default.

Limits: a query parameter read any other way is not listed; an undeclared response is
documented as JSON without a schema; a parameter's default and bounds are listed only where the
call spells them as literals.
"""

from __future__ import annotations

import ast
import copy
import enum
import functools
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engines.shell.lifecycle import Route
from engines.shell.rest import DEFAULT_LIMIT, MAX_BODY_BYTES, HistoryResource, LatestResource
from protocol.channels import kind_of
from protocol.schemas import DICT_PAYLOADS, RECORD_PAYLOADS, payload_schema_name
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


# ── what a 200 answers: declared on the resource as ``response_type`` ───────────────────────


@dataclass(frozen=True, slots=True)
class Payload:
    """The ``data`` of stream kind ``kind`` (``protocol.schemas``): the record type of a record
    kind (``trades`` → ``Trade``), else the schema written there (``vpin`` → ``VpinPayload``)."""

    kind: str


@dataclass(frozen=True, slots=True)
class Page:
    """A history page (``HistoryResource``'s shape): ``{key: "<key>", **fields, "items":
    [item, ...], "next_cursor": "…" | null}``."""

    item: Any
    key: str = "symbol"
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Items:
    """``{name: [item, ...]}``: a list answered inside an object."""

    item: Any
    name: str = "items"


@dataclass(frozen=True, slots=True)
class Extended:
    """``base`` (a record) with ``fields`` added (``/book``: the ``BookTop`` and its state)."""

    base: Any
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Text:
    """An answer that is not JSON (the HTML reports)."""

    media_type: str


@dataclass(frozen=True, slots=True)
class ByMethod:
    """A resource whose methods answer differently (``None``: undeclared)."""

    get: Any = None
    post: Any = None
    put: Any = None
    patch: Any = None
    delete: Any = None


def stored_answer(resource: object, *, item: Any = None) -> Any:
    """What a shell ``LatestResource`` answers (one record) or a ``HistoryResource`` (a
    ``Page`` of them), ``None`` for any other resource. The record is ``item`` if given, else
    the store's record type, or, for a store of plain dicts, its stream kind's ``Payload``
    (``risk.var`` → ``risk``)."""
    if not isinstance(resource, LatestResource | HistoryResource):
        return None
    if item is None:
        records = getattr(resource, "_records", None)
        record_type = getattr(records, "record_type", None)
        if isinstance(record_type, type) and issubclass(record_type, msgspec.Struct):
            item = record_type
        else:
            kind = kind_of(records.channel("key")) if records is not None else ""
            item = Payload(kind) if kind in DICT_PAYLOADS else dict[str, Any]
    if isinstance(resource, LatestResource):
        return item
    return Page(item, key=str(getattr(resource, "_key", "symbol")))


def response_type(resource: object, method: str) -> Any:
    """The declared answer of ``resource``'s ``method`` (``None``: undeclared)."""
    declared = getattr(resource, "response_type", None)
    if isinstance(declared, ByMethod):
        return getattr(declared, method)
    if declared is not None:
        return declared
    return stored_answer(resource) if method == "get" else None


# ── the document ──────────────────────────────────────────────────────────────────────────────


class _Collected:
    """The types (msgspec writes their components at the end) and payload schemas
    (``protocol.schemas``) the document refers to."""

    def __init__(self) -> None:
        self.types: list[Any] = []
        self.payloads: dict[str, Schema] = {}


def openapi_document(
    *, title: str, version: str, routes: Sequence[Route], description: str = ""
) -> Schema:
    """The OpenAPI 3.1 document of ``routes`` (every route the app serves)."""
    collected = _Collected()
    paths: dict[str, Schema] = {}
    for uri, resource in routes:
        path = _FIELD.sub(r"{\1}", uri)
        fields = _FIELD.findall(uri)
        item: Schema = {}
        for method in METHODS:
            responder = getattr(resource, f"on_{method}", None)
            if responder is not None:
                item[method] = _operation(method, path, fields, resource, responder, collected)
        paths[path] = item
    names, components = _components(collected.types)
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": _resolve(paths, names),
        "components": {"schemas": {"Error": ERROR_SCHEMA, **components, **collected.payloads}},
    }
    return document


def _operation(
    method: str, path: str, fields: list[str], resource: object,
    responder: Callable[..., Any], collected: _Collected,
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
        collected.types.append(body_type)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _Pending(body_type)}},
        }
    responses: Schema = {"200": _answer(response_type(resource, method), collected)}
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


def _answer(declared: Any, collected: _Collected) -> Schema:
    """The 200 response of a declared answer (undeclared: JSON without a schema)."""
    if isinstance(declared, Text):
        content = {declared.media_type: {"schema": {"type": "string"}}}
    else:
        schema = {} if declared is None else _schema(declared, collected)
        content = {"application/json": {"schema": schema}}
    return {"description": "OK", "content": content}


def _schema(answer: Any, collected: _Collected) -> Any:
    """The JSON Schema of one declared shape (``_Pending`` where msgspec will write it)."""
    if isinstance(answer, Payload):
        record = RECORD_PAYLOADS.get(answer.kind)
        if record is not None:
            return _schema(record, collected)
        name = payload_schema_name(answer.kind)
        collected.payloads[name] = copy.deepcopy(DICT_PAYLOADS[answer.kind])
        return {"$ref": _REF.format(name=name)}
    if isinstance(answer, Page):
        properties = {
            answer.key: {"type": "string"},
            **{name: _schema(value, collected) for name, value in answer.fields.items()},
            "items": {"type": "array", "items": _schema(answer.item, collected)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "opaque: pass as cursor for the next page; null on the last",
            },
        }
        return {"type": "object", "required": list(properties), "properties": properties}
    if isinstance(answer, Items):
        return {
            "type": "object",
            "required": [answer.name],
            "properties": {
                answer.name: {"type": "array", "items": _schema(answer.item, collected)}
            },
        }
    if isinstance(answer, Extended):
        added = {name: _schema(value, collected) for name, value in answer.fields.items()}
        return {
            "allOf": [
                _schema(answer.base, collected),
                {"type": "object", "required": list(added), "properties": added},
            ]
        }
    collected.types.append(answer)
    return _Pending(answer)


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

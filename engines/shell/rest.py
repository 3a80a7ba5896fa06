"""REST building blocks every engine shares: history ranges, latest/history resources over a
``RecordStore``, JSON bodies validated by declaration.

An engine's ``api.py`` should be a few lines of routes built from these plus its own compute
resources. Errors need no handling in the resources: ``ValidationError`` (400 naming the
parameter or the body field), ``NotFoundError`` (404), the store's ``InvalidQuery`` (400) and
``StoreUnavailable`` (503) are mapped once by ``engines.shell.app``.

Bodies: declare the body as a ``msgspec.Struct`` (types, defaults, ``msgspec.Meta`` bounds) and
``await read_body(req, Body)``; a violation answers 400 naming the JSON path at fault
(``trades[3].q``), with no hand-written ``if`` per field. A body over the app's limit
(``create_app(max_body_bytes=)``, default ``MAX_BODY_BYTES``) answers 413: by its
``Content-Length`` before anything is read (``app.BodyLimit``), and, for a body without one
(chunked), as soon as the read passes the limit (``read_body_bytes``), never after reading it all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import falcon
import falcon.asgi
import msgspec

from engines.shell.errors import NotFoundError, ValidationError
from engines.shell.params import query_int, query_time_ns
from protocol.records import error_path
from realtime.storage import END_OF_TIME_NS, MAX_PAGE_ROWS, RecordStore

R = TypeVar("R")
B = TypeVar("B")

DEFAULT_LIMIT = 1_000
#: The largest request body an engine reads unless its app says otherwise (bigger answers 413).
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``from`` ≤ t < ``to`` (ns or ISO-8601 with an offset), a page of ``limit`` rows after
    ``cursor`` (opaque, issued by the previous page)."""

    from_ns: int
    to_ns: int
    limit: int
    cursor: str | None

    @classmethod
    def from_request(
        cls, req: falcon.asgi.Request, *, default_limit: int = DEFAULT_LIMIT
    ) -> TimeRange:
        return cls(
            from_ns=query_time_ns(req, "from", default=0),  # type: ignore[arg-type]
            to_ns=query_time_ns(req, "to", default=END_OF_TIME_NS),  # type: ignore[arg-type]
            limit=query_int(req, "limit", default=default_limit, minimum=1, maximum=MAX_PAGE_ROWS),
            cursor=req.get_param("cursor") or None,
        )


class LatestResource(Generic[R]):
    """``GET …/{key}/latest``: the newest record of a key, 404 before the first."""

    def __init__(self, records: RecordStore[R], *, key: str = "symbol") -> None:
        self._records = records
        self._key = key

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        key = params[self._key]
        latest = await self._records.latest(key)
        if latest is None:
            raise NotFoundError(f"nothing published yet for {key}", parameter=self._key)
        resp.media = msgspec.to_builtins(latest)


class HistoryResource(Generic[R]):
    """``GET …/{key}/history?from=&to=&limit=&cursor=``: stored records of a key by time,
    ``{"<key>": key, "items": [...], "next_cursor": ...}`` (``null`` on the last page)."""

    def __init__(self, records: RecordStore[R], *, key: str = "symbol") -> None:
        self._records = records
        self._key = key

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        key = params[self._key]
        span = TimeRange.from_request(req)
        page = await self._records.query(key, span.from_ns, span.to_ns, span.limit, span.cursor)
        resp.media = {
            self._key: key,
            "items": [msgspec.to_builtins(item) for item in page.items],
            "next_cursor": page.next_cursor,
        }


def body_limit(req: falcon.asgi.Request) -> int:
    """The largest body this request may carry (set by ``app.BodyLimit``)."""
    limit = getattr(req.context, "max_body_bytes", MAX_BODY_BYTES)
    return int(limit)


def payload_too_large(limit: int) -> falcon.HTTPContentTooLarge:
    """The 413 of a body over ``limit`` (``app`` maps it to our error shape, naming ``body``)."""
    error: falcon.HTTPContentTooLarge = falcon.HTTPContentTooLarge(
        description=f"body larger than {limit} bytes", code="body_too_large"
    )
    return error


async def read_body_bytes(req: falcon.asgi.Request) -> bytes:
    """The request's body, read in chunks and refused with 413 as soon as it passes the limit
    (a chunked body has no ``Content-Length`` to refuse it by before reading)."""
    limit = body_limit(req)
    if req.content_length is not None and req.content_length > limit:
        raise payload_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in req.stream:
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(req: falcon.asgi.Request, body_type: type[B]) -> B:
    """The request's JSON body as ``body_type`` (a ``msgspec.Struct`` or any type msgspec
    validates); 400 naming the field at fault, 413 past the app's body limit."""
    raw = await read_body_bytes(req)
    if not raw:
        raise ValidationError("a JSON body is required", parameter="body")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        path = error_path(exc) or "$"
        raise ValidationError(str(exc), parameter=json_path_parameter(path)) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", parameter="body") from None


def json_path_parameter(path: str) -> str:
    """``$.trades[3].q`` → ``trades[3].q``; the whole body (``$``) → ``body``."""
    stripped = path.removeprefix("$").removeprefix(".")
    return stripped or "body"


def media(value: Any) -> Any:
    """A record (or anything msgspec knows) as JSON-ready builtins for ``resp.media``."""
    return msgspec.to_builtins(value)

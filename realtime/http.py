"""A bounded HTTP GET for the platform's own JSON endpoints (``/health``, ``/status``).

The status view polls every engine's ``/health`` and the CLI polls the hub's ``/status``; both
need one GET with a hard deadline and an answer that says *why* it failed (refused, timed out,
not JSON), never an exception that escapes. Plain HTTP/1.1 on ``asyncio`` streams, one request
per connection (``Connection: close``), ``Content-Length`` or chunked bodies, at most
``MAX_BODY_BYTES``. No TLS: the platform's ports are plain HTTP on a private network.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

#: The largest body read (a /status of a large deployment is a few tens of kB).
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """``status`` is the HTTP status (0 when no answer came); ``body`` the decoded JSON or
    ``None``; ``error`` why there is no usable body (``None`` when there is one)."""

    status: int
    body: Any
    error: str | None
    elapsed_s: float


async def get_json(url: str, *, timeout_s: float = 1.0) -> JsonAnswer:
    """GET ``url`` (``http://host:port/path``) within ``timeout_s``, connection included."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    def answer(status: int, body: Any, error: str | None) -> JsonAnswer:
        return JsonAnswer(status, body, error, loop.time() - started)

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return answer(0, None, f"not an http:// URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(timeout_s):
            status, raw = await _get(parts.hostname, parts.port or 80, target, parts.netloc)
    except TimeoutError:
        return answer(0, None, f"no answer within {timeout_s:g} s")
    except OSError as exc:
        return answer(0, None, f"unreachable: {exc.strerror or exc}")
    except ValueError as exc:
        return answer(0, None, f"malformed HTTP answer: {exc}")
    try:
        return answer(status, orjson.loads(raw), None)
    except orjson.JSONDecodeError:
        return answer(status, None, f"answer is not JSON (HTTP {status}, {len(raw)} bytes)")


async def _get(host: str, port: int, target: str, netloc: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\nAccept: application/json\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"status line {lines[0][:60]!r}")
        status = int(rest.split(" ", 1)[0])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return status, await _chunked(reader)
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY_BYTES:
                raise ValueError(f"body of {length} bytes is over {MAX_BODY_BYTES}")
            return status, await reader.readexactly(length)
        body = await reader.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"body over {MAX_BODY_BYTES} bytes")
        return status, body
    except asyncio.IncompleteReadError as exc:
        raise ValueError("connection closed mid-answer") from exc
    except asyncio.LimitOverrunError as exc:
        raise ValueError("header block too long") from exc
    finally:
        writer.close()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"body over {MAX_BODY_BYTES} bytes")

"""The status poller's GET: JSON answers (sized and chunked), and every way of not answering
becomes a reason within the deadline, never an exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from realtime.http import get_json


@asynccontextmanager
async def server(reply: Callable[[], bytes] | None) -> AsyncIterator[int]:
    """A one-shot HTTP server on port 0 answering ``reply()`` (``None``: never answers)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if reply is None:
            await asyncio.sleep(3600)
        writer.write(reply())
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> Callable[[], bytes]:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
    return lambda: (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_json_with_content_length() -> None:
    async with server(answer(b'{"status": "ok"}')) as port:
        got = await get_json(f"http://127.0.0.1:{port}/health")
    assert (got.status, got.body, got.error) == (200, {"status": "ok"}, None)


async def test_chunked_json() -> None:
    body = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    body += b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    async with server(lambda: body) as port:
        got = await get_json(f"http://127.0.0.1:{port}/")
    assert (got.status, got.body) == (503, {"a": 1})


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (answer(b"<html>no</html>"), "not JSON (HTTP 200"),
        (lambda: b"SSH-2.0-OpenSSH\r\n\r\n", "malformed HTTP answer"),
        (lambda: b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", "closed mid-answer"),
    ],
)
async def test_bad_answers_are_reasons(reply: Callable[[], bytes], reason: str) -> None:
    async with server(reply) as port:
        got = await get_json(f"http://127.0.0.1:{port}/health")
    assert got.body is None and got.error is not None and reason in got.error


async def test_silence_times_out_within_the_bound() -> None:
    async with server(None) as port:
        got = await get_json(f"http://127.0.0.1:{port}/health", timeout_s=0.2)
    assert got.error == "no answer within 0.2 s" and got.elapsed_s < 1.0


async def test_refused_and_bad_urls() -> None:
    async with server(answer(b"{}")) as port:
        pass  # closed: nothing listens there now
    refused = await get_json(f"http://127.0.0.1:{port}/health")
    assert refused.error is not None and refused.error.startswith("unreachable")
    assert (await get_json("ftp://x/")).error == "not an http:// URL: 'ftp://x/'"

"""What every benchmark child process does first, and the line protocol it is driven by.

The orchestrator (``loadtest.fanout``) drives each child over its stdin/stdout: one command per
stdin line, one JSON object per stdout line. Children print nothing else on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
from typing import Any

import orjson


def pin_to_core(core: int | None) -> None:
    """Run this process on one CPU only (the hub on core 0, the generator on core 1)."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return
    available = os.sched_getaffinity(0)
    if core in available and len(available) > 1:
        os.sched_setaffinity(0, {core})


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit: 5,000 connections need 5,000 descriptors each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def install_uvloop() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout for the orchestrator."""
    sys.stdout.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stdout.buffer.flush()


async def stdin_lines() -> asyncio.StreamReader:
    """Stdin as an asyncio stream, so commands arrive without blocking the event loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader

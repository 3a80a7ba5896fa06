"""What the hub writes, as payload bytes: per-channel statuses and batch framing (no I/O).

Shared by the session (acks, replays), the fan-out and the slow-consumer drain, so that every
path frames the same way: a lone message goes as itself, several as ``batch`` frames of at most
``max_batch_bytes`` (protocol/README.md, "batch"; clients' frame limits default to 1 MiB).
"""

from __future__ import annotations

from typing import Any

from protocol.codec import encode, join_batch
from protocol.messages import Status, StatusState


def status(channel: str, state: StatusState, **fields: Any) -> bytes:
    """One encoded ``status`` message (protocol/README.md, "Status")."""
    return encode(Status(channel, state, **fields))


def batch_payloads(parts: list[bytes], max_batch_bytes: int) -> list[bytes]:
    """Frame payloads for encoded messages, in order: a lone message as itself, several as batch
    frames of at most ``max_batch_bytes`` (a single larger message goes alone)."""
    if len(parts) == 1:
        return parts
    out: list[bytes] = []
    run: list[bytes] = []
    size = 0
    for part in parts:
        if run and size + len(part) > max_batch_bytes:
            out.append(run[0] if len(run) == 1 else join_batch(run))
            run, size = [], 0
        run.append(part)
        size += len(part) + 1
    out.append(run[0] if len(run) == 1 else join_batch(run))
    return out

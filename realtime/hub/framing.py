"""What the hub writes, as payload bytes: per-channel statuses and batch framing (no I/O).

Shared by the session (acks, replays), the fan-out and the slow-consumer drain, so that every
path frames the same way: a lone message goes as itself, several as ``batch`` frames of at most
``max_batch_bytes`` (protocol/README.md, "batch"; clients' frame limits default to 1 MiB).
"""

from __future__ import annotations

from typing import Any

import orjson

from protocol.codec import encode, join_batch
from protocol.messages import Status, StatusState
from protocol.sequence import NotRecoveredReason


def status(channel: str, state: StatusState, **fields: Any) -> bytes:
    """One encoded ``status`` message (protocol/README.md, "Status")."""
    return encode(Status(channel, state, **fields))


def epoch_changed(
    channel: str, previous_epoch: str, previous_seq: int, epoch: str, next_seq: int
) -> bytes:
    """The ``status`` sent when a channel's numbering restarts mid-stream (the bus restarted
    empty; protocol/README.md, "Status states"): ``not_recovered`` with reason
    ``epoch_changed``, the new ``epoch`` and ``to_seq`` (the update that follows is
    ``to_seq + 1``), plus where the old numbering ended (``previous_epoch``, ``previous_seq``).
    Whatever came between is unknown to the hub. ``not_recovered`` rather than a new state, so
    every client that already handles a failed resume handles this too."""
    return orjson.dumps(
        {
            "type": "status",
            "channel": channel,
            "state": StatusState.NOT_RECOVERED.value,
            "to_seq": next_seq - 1,
            "epoch": epoch,
            "reason": NotRecoveredReason.EPOCH_CHANGED.value,
            "previous_epoch": previous_epoch,
            "previous_seq": previous_seq,
        }
    )


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

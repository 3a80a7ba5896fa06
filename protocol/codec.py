"""orjson encode/decode for protocol v1, with validation errors that name the field.

``decode_client`` is what the hub runs on every inbound frame: it accepts only well-formed
requests and raises ``ProtocolError`` (never anything else) for any other input.
``encode`` turns any message into the bytes of one text frame. The hub's hot path uses
``encode_data`` and ``join_batch`` directly so a message is encoded once and a batch frame is a
byte join, never a re-encode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, cast

import orjson

from protocol.channels import MAX_CHANNEL_LENGTH, parse_channel
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    Ack,
    Batch,
    ChannelInfo,
    ClientMessage,
    DataMessage,
    Error,
    Heartbeat,
    Limits,
    ListChannels,
    Ping,
    Pong,
    Recovery,
    RequestId,
    ResumePosition,
    ServerMessage,
    Snapshot,
    Status,
    StatusState,
    Subscribe,
    Timestamps,
    Unsubscribe,
    Update,
)

MAX_REQUEST_ID_LENGTH = 64
MAX_EPOCH_LENGTH = 64
_INT64_MAX = 2**63 - 1

# --- decoding client requests -----------------------------------------------------------------


def _fail(code: ErrorCode, message: str, field: str, request_id: RequestId | None) -> ProtocolError:
    return ProtocolError(code, message, field=field, request_id=request_id)


def _request_id(obj: Mapping[str, Any]) -> RequestId:
    if "id" not in obj:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "request needs an 'id'", field="id")
    rid = obj["id"]
    if isinstance(rid, float) and abs(rid) > _INT64_MAX:  # JSON integers past 64 bits parse so
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"'id' {rid:g} is out of range: an integer id must be within ±(2^63 − 1)",
            field="id",
        )
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"'id' must be an integer or string, not {_json_kind(rid)}",
            field="id",
        )
    if isinstance(rid, str) and not 0 < len(rid) <= MAX_REQUEST_ID_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"'id' must be 1..{MAX_REQUEST_ID_LENGTH} chars", field="id"
        )
    if isinstance(rid, int) and not -_INT64_MAX <= rid <= _INT64_MAX:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"'id' {rid} is out of range: an integer id must be within ±(2^63 − 1)",
            field="id",
        )
    return rid


def _json_kind(value: object) -> str:
    """What a JSON value is, for messages that say what was sent instead."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the number {value!r} (a fraction or exponent)"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _channels(obj: Mapping[str, Any], rid: RequestId) -> tuple[str, ...]:
    raw = obj.get("channels")
    if not isinstance(raw, list) or not raw:
        raise _fail(ErrorCode.BAD_MESSAGE, "'channels' must be a non-empty list", "channels", rid)
    names: list[str] = []
    for i, item in enumerate(raw):
        try:
            names.append(parse_channel(item, field=f"channels[{i}]").name)
        except ProtocolError as exc:
            exc.request_id = rid
            raise
    return tuple(dict.fromkeys(names))


def _int_field(value: object, field: str, rid: RequestId) -> int:
    if isinstance(value, float) and abs(value) > _INT64_MAX:  # integers past 64 bits parse so
        raise _fail(
            ErrorCode.BAD_RESUME, f"{field} {value:g} is out of range 0 … 2^63 − 1", field, rid
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            ErrorCode.BAD_RESUME, f"{field} must be an integer, not {_json_kind(value)}", field, rid
        )
    return value


def _resume(obj: Mapping[str, Any], channels: tuple[str, ...], rid: RequestId) -> dict[str, Any]:
    raw = obj.get("resume", {})
    if not isinstance(raw, dict):
        raise _fail(ErrorCode.BAD_RESUME, "'resume' must be an object", "resume", rid)
    out: dict[str, ResumePosition] = {}
    for name, pos in raw.items():
        field = f"resume.{name}"
        if name not in channels:
            raise _fail(
                ErrorCode.BAD_RESUME, "resume names a channel not in 'channels'", field, rid
            )
        if not isinstance(pos, dict) or set(pos) != {"epoch", "seq"}:
            raise _fail(ErrorCode.BAD_RESUME, "position must be {epoch, seq}", field, rid)
        epoch = pos["epoch"]
        if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
            raise _fail(ErrorCode.BAD_RESUME, "epoch must be a short string", f"{field}.epoch", rid)
        seq = _int_field(pos["seq"], f"{field}.seq", rid)
        if seq < 0:
            raise _fail(ErrorCode.BAD_RESUME, "seq must be >= 0", f"{field}.seq", rid)
        if seq > _INT64_MAX:
            raise _fail(
                ErrorCode.BAD_RESUME,
                f"{field}.seq {seq} is out of range 0 … 2^63 − 1",
                f"{field}.seq",
                rid,
            )
        out[name] = ResumePosition(epoch, seq)
    return out


def peek_request_id(frame: bytes | str) -> RequestId | None:
    """The ``id`` of a request that will not be processed (``rate_limited``), so its error can
    still name it: one JSON parse, nothing else validated. None when no valid id can be read."""
    try:
        obj = orjson.loads(frame)
        return _request_id(obj) if isinstance(obj, dict) else None
    except (orjson.JSONDecodeError, ProtocolError):
        return None


def _list(obj: Mapping[str, Any], rid: RequestId) -> ListChannels:
    """``list`` with its optional page: ``after`` (a name cursor), ``limit`` (>= 1)."""
    after = obj.get("after")
    if after is not None and (not isinstance(after, str) or len(after) > MAX_CHANNEL_LENGTH):
        raise _fail(
            ErrorCode.BAD_MESSAGE,
            f"'after' must be a string of at most {MAX_CHANNEL_LENGTH} chars (a channel name)",
            "after",
            rid,
        )
    limit = obj.get("limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= _INT64_MAX
    ):
        raise _fail(ErrorCode.BAD_MESSAGE, "'limit' must be a positive integer", "limit", rid)
    return ListChannels(rid, after, limit)


def decode_client(frame: bytes | str) -> ClientMessage:
    """Decode one client text frame. Raises only ``ProtocolError``."""
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a request must be a JSON object")
    rid = _request_id(obj)
    op = obj.get("op")
    if op == "subscribe":
        channels = _channels(obj, rid)
        snapshot = obj.get("snapshot", True)
        if not isinstance(snapshot, bool):
            raise _fail(ErrorCode.BAD_MESSAGE, "'snapshot' must be true or false", "snapshot", rid)
        return Subscribe(rid, channels, _resume(obj, channels, rid), snapshot)
    if op == "unsubscribe":
        return Unsubscribe(rid, _channels(obj, rid))
    if op == "list":
        return _list(obj, rid)
    if op == "ping":
        return Ping(rid)
    if not isinstance(op, str):
        raise _fail(ErrorCode.BAD_MESSAGE, "request needs an 'op' string", "op", rid)
    raise _fail(
        ErrorCode.UNKNOWN_OP, f"unknown op {op!r} (subscribe, unsubscribe, list, ping)", "op", rid
    )


def encode_client(msg: ClientMessage) -> bytes:
    """Encode a client request (clients, load generator, tests)."""
    if isinstance(msg, Subscribe):
        body: dict[str, Any] = {"op": "subscribe", "id": msg.id, "channels": list(msg.channels)}
        if msg.resume:
            body["resume"] = {k: {"epoch": v.epoch, "seq": v.seq} for k, v in msg.resume.items()}
        if not msg.snapshot:
            body["snapshot"] = False
        return orjson.dumps(body)
    if isinstance(msg, Unsubscribe):
        return orjson.dumps({"op": "unsubscribe", "id": msg.id, "channels": list(msg.channels)})
    if isinstance(msg, ListChannels):
        page = {"after": msg.after, "limit": msg.limit}
        return orjson.dumps(_drop_none({"op": "list", "id": msg.id, **page}))
    return orjson.dumps({"op": "ping", "id": msg.id})


# --- encoding server messages -----------------------------------------------------------------


def encode_data(
    kind: str,
    channel: str,
    seq: int,
    epoch: str,
    event_ns: int,
    publish_ns: int,
    hub_ns: int,
    data: Any,
) -> bytes:
    """Encode one ``update`` or ``snapshot``: the hub calls this once per message per channel.

    ``data`` may be an ``orjson.Fragment`` holding already-encoded JSON (payloads from Redis).
    """
    return orjson.dumps(
        {
            "type": kind,
            "channel": channel,
            "seq": seq,
            "epoch": epoch,
            "ts": {"event": event_ns, "publish": publish_ns, "hub": hub_ns},
            "data": data,
        }
    )


_BATCH_HEAD = b'{"type":"batch","messages":['
_BATCH_TAIL = b"]}"


def join_batch(parts: Sequence[bytes]) -> bytes:
    """One batch frame from already-encoded messages: a byte join, no re-encoding."""
    return b"".join((_BATCH_HEAD, b",".join(parts), _BATCH_TAIL))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _status_body(msg: Status) -> dict[str, Any]:
    return _drop_none({"type": "status", **asdict(msg), "state": msg.state.value})


def encode(msg: ServerMessage) -> bytes:
    """Encode any server message as the bytes of one text frame."""
    if isinstance(msg, Update | Snapshot):
        kind = "update" if isinstance(msg, Update) else "snapshot"
        ts = msg.ts
        return encode_data(
            kind, msg.channel, msg.seq, msg.epoch, ts.event, ts.publish, ts.hub, msg.data
        )
    if isinstance(msg, Status):
        return orjson.dumps(_status_body(msg))
    if isinstance(msg, Batch):
        return join_batch([encode(m) for m in msg.messages])
    if isinstance(msg, Ack):
        body: dict[str, Any] = {"type": "ack", "id": msg.id, "op": msg.op}
        body["channels"] = list(msg.channels)
        if msg.limits is not None:
            body["limits"] = asdict(msg.limits)
        if msg.recovery is not None:
            body["recovery"] = {k: _drop_none(asdict(v)) for k, v in msg.recovery.items()}
        if msg.available is not None:
            body["available"] = [asdict(c) for c in msg.available]
        if msg.next is not None:
            body["next"] = msg.next
        return orjson.dumps(body)
    if isinstance(msg, Error):
        return orjson.dumps(_drop_none({"type": "error", **asdict(msg)}))
    if isinstance(msg, Pong):
        return orjson.dumps({"type": "pong", "id": msg.id, "ts": msg.ts})
    return orjson.dumps({"type": "heartbeat", "ts": msg.ts})


def error_from(exc: ProtocolError) -> Error:
    return Error(exc.request_id, exc.code.value, exc.message, exc.field, exc.channel)


# --- decoding server messages (clients, load generator, tests) --------------------------------


def _data_message(obj: dict[str, Any]) -> DataMessage:
    kind = obj["type"]
    if kind == "status":
        fields = {k: obj.get(k) for k in ("count", "from_seq", "to_seq", "epoch", "reason")}
        return Status(obj["channel"], StatusState(obj["state"]), **fields)
    ts = obj["ts"]
    stamps = Timestamps(ts["event"], ts["publish"], ts["hub"])
    cls = Update if kind == "update" else Snapshot
    return cls(obj["channel"], obj["seq"], obj["epoch"], stamps, obj["data"])


def decode_server_obj(obj: dict[str, Any]) -> ServerMessage:
    """Typed view of an already-parsed server message. Raises ``ValueError`` on anything else."""
    try:
        kind = obj["type"]
        if kind in ("update", "snapshot", "status"):
            return _data_message(obj)
        if kind == "batch":
            return Batch(tuple(_data_message(m) for m in obj["messages"]))
        if kind == "ack":
            limits = Limits(**obj["limits"]) if "limits" in obj else None
            recovery = (
                {k: Recovery(**v) for k, v in obj["recovery"].items()}
                if "recovery" in obj
                else None
            )
            available = (
                tuple(ChannelInfo(**c) for c in obj["available"]) if "available" in obj else None
            )
            return Ack(
                obj["id"],
                obj["op"],
                tuple(obj["channels"]),
                limits,
                recovery,
                available,
                obj.get("next"),
            )
        if kind == "error":
            return Error(
                obj.get("id"), obj["code"], obj["message"], obj.get("field"), obj.get("channel")
            )
        if kind == "pong":
            return Pong(obj["id"], obj["ts"])
        if kind == "heartbeat":
            return Heartbeat(obj["ts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed server message: {exc!r}") from None
    raise ValueError(f"unknown server message type {obj.get('type')!r}")


def decode_server(frame: bytes | str) -> ServerMessage:
    obj = orjson.loads(frame)
    if not isinstance(obj, dict):
        raise ValueError("server message must be a JSON object")
    return decode_server_obj(cast(dict[str, Any], obj))


__all__ = [
    "StatusState",
    "decode_client",
    "decode_server",
    "decode_server_obj",
    "encode",
    "encode_client",
    "encode_data",
    "error_from",
    "join_batch",
]

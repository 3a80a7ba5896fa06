from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import (
    decode_client,
    decode_server,
    encode,
    encode_client,
    encode_data,
    error_from,
    join_batch,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    Ack,
    Batch,
    ChannelInfo,
    Error,
    Heartbeat,
    Limits,
    ListChannels,
    Ping,
    Pong,
    Recovery,
    ResumePosition,
    Snapshot,
    Status,
    StatusState,
    Subscribe,
    Timestamps,
    Unsubscribe,
    Update,
)

# --- strategies -------------------------------------------------------------------------------

segment = st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True)
channels = st.one_of(
    st.builds(lambda s: f"trades.{s}", segment),
    st.builds(lambda s: f"quotes.{s}", segment),
    st.builds(
        lambda spec, s: f"bars.{spec}.{s}", st.sampled_from(["1s", "1m", "tick100"]), segment
    ),
    st.builds(lambda a, b: f"risk.{a}.{b}", segment, segment),
)
request_ids = st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), st.text(min_size=1, max_size=64))
i64 = st.integers(0, 2**63 - 1)
epochs = st.text(min_size=1, max_size=16)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def subscribes(draw: st.DrawFn) -> Subscribe:
    names = tuple(dict.fromkeys(draw(st.lists(channels, min_size=1, max_size=5))))
    resumed = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    resume = {n: ResumePosition(draw(epochs), draw(i64)) for n in resumed}
    return Subscribe(draw(request_ids), names, resume, draw(st.booleans()))


client_messages = st.one_of(
    subscribes(),
    st.builds(
        Unsubscribe,
        request_ids,
        st.lists(channels, min_size=1, max_size=5).map(lambda xs: tuple(dict.fromkeys(xs))),
    ),
    st.builds(ListChannels, request_ids),
    st.builds(Ping, request_ids),
)
stamps = st.builds(Timestamps, i64, i64, i64)
updates = st.builds(Update, channels, i64, epochs, stamps, json_values)
snapshots = st.builds(Snapshot, channels, i64, epochs, stamps, json_values)
opt_int = st.none() | i64
statuses = st.builds(
    Status,
    channels,
    st.sampled_from(list(StatusState)),
    opt_int,
    opt_int,
    opt_int,
    st.none() | epochs,
    st.none() | st.text(max_size=10),
)
data_messages = st.one_of(updates, snapshots, statuses)
limits = st.builds(Limits, i64, i64, i64, i64, i64)
recoveries = st.builds(Recovery, st.booleans(), i64, epochs, i64, st.none() | st.text(max_size=8))
infos = st.builds(
    ChannelInfo, channels, st.sampled_from(["ordered-lossless", "latest-value"]), epochs, i64, i64
)
server_messages = st.one_of(
    data_messages,
    st.builds(Batch, st.lists(data_messages, max_size=5).map(tuple)),
    st.builds(
        Ack,
        request_ids,
        st.sampled_from(["subscribe", "unsubscribe", "list"]),
        st.lists(channels, max_size=4).map(tuple),
        st.none() | limits,
        st.none() | st.dictionaries(channels, recoveries, max_size=3),
        st.none() | st.lists(infos, max_size=3).map(tuple),
    ),
    st.builds(
        Error,
        st.none() | request_ids,
        st.sampled_from([c.value for c in ErrorCode]),
        st.text(max_size=30),
        st.none() | st.text(max_size=10),
        st.none() | channels,
    ),
    st.builds(Pong, request_ids, i64),
    st.builds(Heartbeat, i64),
)

# --- properties -------------------------------------------------------------------------------


@given(client_messages)
def test_client_roundtrip(msg: Any) -> None:
    assert decode_client(encode_client(msg)) == msg


@given(server_messages)
def test_server_roundtrip(msg: Any) -> None:
    assert decode_server(encode(msg)) == msg


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client(raw)


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_raises_only_protocol_errors(value: Any) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client(orjson.dumps(value))


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from(["op", "id", "channels", "resume", "snapshot"]), json_values)
)
def test_arbitrary_requests_raise_only_protocol_errors(obj: dict[str, Any]) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client(orjson.dumps(obj))


# --- examples: every error names what is wrong ------------------------------------------------


def _err(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(raw)
    return info.value


@pytest.mark.parametrize(
    ("raw", "code", "field", "rid"),
    [
        ("{nope", ErrorCode.BAD_JSON, None, None),
        (b"\xff\xfe", ErrorCode.BAD_JSON, None, None),
        ("[1,2]", ErrorCode.BAD_MESSAGE, None, None),
        ('{"op":"ping"}', ErrorCode.BAD_MESSAGE, "id", None),
        ('{"op":"ping","id":true}', ErrorCode.BAD_MESSAGE, "id", None),
        ('{"op":"ping","id":""}', ErrorCode.BAD_MESSAGE, "id", None),
        ('{"id":1}', ErrorCode.BAD_MESSAGE, "op", 1),
        ('{"op":"dance","id":1}', ErrorCode.UNKNOWN_OP, "op", 1),
        ('{"op":"subscribe","id":1}', ErrorCode.BAD_MESSAGE, "channels", 1),
        ('{"op":"subscribe","id":1,"channels":[]}', ErrorCode.BAD_MESSAGE, "channels", 1),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY",5]}',
            ErrorCode.BAD_CHANNEL,
            "channels[1]",
            1,
        ),
        (
            '{"op":"subscribe","id":"a","channels":["x.SPY"]}',
            ErrorCode.BAD_CHANNEL,
            "channels[0]",
            "a",
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"snapshot":1}',
            ErrorCode.BAD_MESSAGE,
            "snapshot",
            1,
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":[]}',
            ErrorCode.BAD_RESUME,
            "resume",
            1,
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":{"trades.QQQ":{"epoch":"e","seq":1}}}',
            ErrorCode.BAD_RESUME,
            "resume.trades.QQQ",
            1,
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":{"trades.SPY":{"epoch":"e","seq":-1}}}',
            ErrorCode.BAD_RESUME,
            "resume.trades.SPY.seq",
            1,
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":{"trades.SPY":{"epoch":"e","seq":"3"}}}',
            ErrorCode.BAD_RESUME,
            "resume.trades.SPY.seq",
            1,
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":{"trades.SPY":{"epoch":"","seq":3}}}',
            ErrorCode.BAD_RESUME,
            "resume.trades.SPY.epoch",
            1,
        ),
        (
            '{"op":"subscribe","id":1,"channels":["trades.SPY"],"resume":{"trades.SPY":{"seq":3}}}',
            ErrorCode.BAD_RESUME,
            "resume.trades.SPY",
            1,
        ),
    ],
)
def test_errors_name_the_field(raw: str, code: ErrorCode, field: str | None, rid: Any) -> None:
    exc = _err(raw)
    assert (exc.code, exc.field, exc.request_id) == (code, field, rid)
    wire = orjson.loads(encode(error_from(exc)))
    assert wire["type"] == "error" and wire["code"] == code.value
    assert wire.get("field") == field and wire.get("id") == rid


def test_subscribe_dedupes_channels_keeping_order() -> None:
    msg = decode_client('{"op":"subscribe","id":1,"channels":["trades.B","trades.A","trades.B"]}')
    assert isinstance(msg, Subscribe) and msg.channels == ("trades.B", "trades.A")


def test_update_wire_shape() -> None:
    raw = encode_data("update", "trades.SPY", 7, "e1", 1, 2, 3, {"p": 1.5})
    assert orjson.loads(raw) == {
        "type": "update",
        "channel": "trades.SPY",
        "seq": 7,
        "epoch": "e1",
        "ts": {"event": 1, "publish": 2, "hub": 3},
        "data": {"p": 1.5},
    }


def test_batch_is_a_byte_join_of_encoded_messages() -> None:
    a = encode_data("update", "trades.SPY", 1, "e", 1, 1, 1, 1)
    b = encode(Status("trades.SPY", StatusState.STALE))
    frame = join_batch([a, b])
    assert frame == b'{"type":"batch","messages":[' + a + b"," + b + b"]}"
    decoded = decode_server(frame)
    assert isinstance(decoded, Batch) and len(decoded.messages) == 2


def test_preencoded_payload_fragment_is_spliced() -> None:
    raw = encode_data("update", "vpin.SPY", 1, "e", 1, 1, 1, orjson.Fragment(b'{"vpin":0.5}'))
    assert orjson.loads(raw)["data"] == {"vpin": 0.5}


def test_decode_server_rejects_unknown_types() -> None:
    with pytest.raises(ValueError):
        decode_server('{"type":"mystery"}')
    with pytest.raises(ValueError):
        decode_server('{"type":"update"}')
    with pytest.raises(ValueError):
        decode_server("[]")

"""protocol/schemas.py: every stream kind and protocol message has a JSON Schema that accepts
what the codec and the records write and refuses what they refuse; the AsyncAPI document is
valid against the AsyncAPI Initiative's own JSON Schema of AsyncAPI 3.0.0 (vendored, see
tests/protocol/data/NOTICE.md). Real engine traffic is validated in
tests/engines/shell/test_stream_schemas.py."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.channels import STREAM_KINDS, DeliveryClass, kind_of
from protocol.codec import decode_client, encode, encode_client
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
from protocol.records import (
    AccountPositions,
    BadInput,
    Bar,
    BookTop,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Side,
    Trade,
    decode,
)
from protocol.records import encode as encode_record
from protocol.schemas import (
    CALL_STATES,
    CLIENT_MESSAGES,
    DICT_PAYLOADS,
    RECORD_PAYLOADS,
    SERVER_MESSAGES,
    asyncapi_document,
    check_payload,
    message_schema,
    payload_schema,
)

DATA = Path(__file__).parent / "data"
Validator = jsonschema.Draft202012Validator


def valid(schema: dict[str, Any], instance: Any) -> bool:
    return bool(Validator(schema).is_valid(instance))


def wire(value: Any) -> Any:
    return json.loads(msgspec.json.encode(value))


# ── payloads ────────────────────────────────────────────────────────────────────────────────


def test_every_stream_kind_has_exactly_one_well_formed_payload_schema() -> None:
    assert set(RECORD_PAYLOADS) | set(DICT_PAYLOADS) == set(STREAM_KINDS)
    assert not set(RECORD_PAYLOADS) & set(DICT_PAYLOADS)
    for kind in STREAM_KINDS:
        schema = payload_schema(kind)
        Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert STREAM_KINDS[kind].delivery.value in schema["description"]


TRADE = Trade("SPY", 1_381_152_600_000_000_000, 1_381_152_600_000_100_000, 168.91, 100.0,
              Side.BUY, 7, "P", 0)  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "record"),
    [
        ("trades", TRADE),
        ("bars", Bar("SPY", "1m", 0, 60_000_000_000, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 3)),
        ("book", BookTop("BTCUSDT", 5, 9, ((100.0, 1.0), (99.5, 2.0)), ((100.5, 0.3),))),
        (
            "positions",
            AccountPositions(account="paper", event_ns=1, positions=(Position(
                account="paper", symbol="SPY", quantity=Decimal("10"),
                average_price=Decimal("168.91"), realized_pnl=Decimal("0"),
                unrealized_pnl=None, mark_price=None, currency="USD", event_ns=1,
            ),)),
        ),
    ],
)  # fmt: skip
def test_a_record_payload_validates_and_the_schema_refuses_what_decode_refuses(
    kind: str, record: Any
) -> None:
    schema = payload_schema(kind)
    payload = wire(encode_record(record))
    assert valid(schema, payload)
    assert decode(type(record), payload) == record
    for field in schema["$defs"][type(record).__name__]["required"]:
        broken = {k: v for k, v in payload.items() if k != field}
        assert not valid(schema, broken), field
        with pytest.raises(BadInput):
            decode(type(record), broken)


@given(
    price=st.one_of(st.floats(allow_nan=False), st.text(), st.none(), st.booleans()),
    aggressor=st.one_of(st.sampled_from(["buy", "sell", None]), st.text(max_size=5)),
)
def test_the_trade_schema_and_the_record_decoder_agree(price: Any, aggressor: Any) -> None:
    payload = {**wire(encode_record(TRADE)), "p": price, "a": aggressor}
    try:
        decode(Trade, payload)
        decoded = True
    except BadInput:
        decoded = False
    assert valid(payload_schema("trades"), payload) == decoded


def test_order_kinds_share_the_order_record() -> None:
    order = Order(
        client_order_id="ma_cross-SPY-1", account="paper", strategy="ma_cross", symbol="SPY",
        side=OrderSide.BUY, type=OrderType.MARKET, quantity=Decimal("10"),
        status=OrderStatus.DENIED, event_ns=1, reason="max_position",
    )  # fmt: skip
    payload = wire(encode_record(order))
    assert payload["quantity"] == "10"  # Decimal on the wire: a string
    for kind in ("intents", "orders", "risk.denials"):
        assert valid(payload_schema(kind), payload)
        assert not valid(payload_schema(kind), {**payload, "status": "lost"})
        assert not valid(payload_schema(kind), {**payload, "quantity": 10.5})


VPIN = {
    "symbol": "SPY", "bucket": 3, "start_ns": 1, "end_ns": 2, "volume": 1e5, "buy": 6e4,
    "sell": 4e4, "oi": 2e4, "vpin": 0.21, "window": 4, "cdf_empirical": None,
    "cdf_lognormal": 0.4, "alert": False, "events": 0, "sigma": 0.01,
    "params": {"bucket_volume": 1e5}, "inputs": {"accepted": 10.0, "late": 0.0},
}  # fmt: skip


def test_a_dict_payload_schema_refuses_missing_and_mistyped_fields_and_admits_extras() -> None:
    schema = payload_schema("vpin")
    assert valid(schema, VPIN)
    assert valid(schema, {**VPIN, "added_later": [1, 2]})  # engines may add fields
    assert not valid(schema, {k: v for k, v in VPIN.items() if k != "vpin"})
    assert not valid(schema, {**VPIN, "alert": "yes"})
    assert not valid(schema, {**VPIN, "bucket": 3.5})
    assert not valid(schema, {**VPIN, "vpin": None})  # VPIN itself is always a number


def test_factor_accepts_exposures_and_ic_but_not_a_mixture_missing_both_keys() -> None:
    schema = payload_schema("factor")
    exposures = {
        "symbol": "AAPL", "model": "capm", "factors": ["SPY"], "spec": "1d", "start_ns": 0,
        "end_ns": 1, "event_ns": 1, "window": 60, "decay": 1.0, "n": 60, "alpha": None,
        "betas": {"SPY": 1.1}, "t_alpha": None, "t_betas": {"SPY": 9.0}, "r2": 0.5,
        "resid_vol": 0.01,
    }  # fmt: skip
    ic = {"signal": "mom", "source": "features:rsi_14", "horizon": 1, "start_ns": 0,
          "event_ns": 1, "ic": 0.1, "symbols": 5, "n": 1, "mean": 0.1, "std": None,
          "ir": None, "t": None}  # fmt: skip
    assert valid(schema, exposures) and valid(schema, ic)
    assert not valid(schema, {k: v for k, v in exposures.items() if k != "betas"})
    assert not valid(schema, {k: v for k, v in ic.items() if k != "ic"})


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
EXAMPLE_ORDER = Order(
    client_order_id="ma_cross-SPY-1", account="paper", strategy="ma_cross", symbol="SPY",
    side=OrderSide.BUY, type=OrderType.LIMIT, quantity=Decimal("10"), price=Decimal("168.9"),
    status=OrderStatus.SUBMITTED, event_ns=1,
)  # fmt: skip
EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("trades.SPY", wire(encode_record(TRADE))),
    ("bars.1m.SPY", wire(encode_record(Bar("SPY", "1m", 0, 6, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 3)))),
    ("book.BTCUSDT", wire(encode_record(BookTop("BTCUSDT", 5, 9, ((100.0, 1.0),), ((100.5, 0.3),))))),
    ("orders.paper", wire(encode_record(EXAMPLE_ORDER))),
    ("vpin.SPY", VPIN),
]  # fmt: skip


def agrees_with_jsonschema(channel: str, payload: Any) -> bool:
    """``check_payload``'s verdict, asserted equal to jsonschema's on the same schema."""
    try:
        check_payload(channel, payload)
        passed = True
    except ValueError:
        passed = False
    assert passed == valid(payload_schema(kind_of(channel)), payload), (channel, payload)
    return passed


@pytest.mark.parametrize(("channel", "payload"), EXAMPLES)
def test_check_payload_passes_what_the_schema_passes_and_names_the_path(
    channel: str, payload: dict[str, Any]
) -> None:
    assert agrees_with_jsonschema(channel, payload)
    schema = payload_schema(kind_of(channel))
    body = next(iter(schema["$defs"].values())) if "$defs" in schema else schema
    first = body["required"][0]
    with pytest.raises(ValueError, match=rf"^data\.{first}: missing$"):
        check_payload(channel, {k: v for k, v in payload.items() if k != first})
    check_payload("nosuchkind.X", 5)  # a channel of no known kind passes


def test_check_payload_names_the_nested_path() -> None:
    book = dict(EXAMPLES[2][1])
    with pytest.raises(ValueError, match=r"^data\.asks\[0\]: fewer than 2 items$"):
        check_payload("book.BTCUSDT", {**book, "asks": [[100.5]]})
    with pytest.raises(ValueError, match=r"^data\.bids\[0\]\[1\]: expected number"):
        check_payload("book.BTCUSDT", {**book, "bids": [[100.0, "1"]]})
    with pytest.raises(ValueError, match=r"^data\.a: matches none of the allowed forms$"):
        check_payload("trades.SPY", {**EXAMPLES[0][1], "a": "up"})
    # a whole-number float is an integer to JSON Schema (and to JavaScript)
    assert agrees_with_jsonschema("bars.1m.SPY", {**EXAMPLES[1][1], "n": 3.0})
    assert not agrees_with_jsonschema("bars.1m.SPY", {**EXAMPLES[1][1], "n": 3.5})


@given(
    example=st.sampled_from(EXAMPLES),
    drop=st.booleans(),
    replacement=JSON_VALUES,
    data=st.data(),
)
def test_check_payload_agrees_with_jsonschema_on_mutated_payloads(
    example: tuple[str, dict[str, Any]], drop: bool, replacement: Any, data: st.DataObject
) -> None:
    channel, payload = example
    key = data.draw(st.sampled_from(sorted(payload)))
    mutated = copy.deepcopy(payload)
    if drop:
        del mutated[key]
    else:
        mutated[key] = replacement
    agrees_with_jsonschema(channel, mutated)


def test_engine_structs_behind_dict_kinds_match_their_hand_written_schemas() -> None:
    """Collateral and Features publish msgspec Structs: msgspec's schema of each must name the
    same fields, and require what ours requires."""
    from engines.collateral.core import CallState
    from engines.collateral.service import AgreementState, CallRecord, CallView
    from engines.features.service import FeatureValues

    assert set(CALL_STATES) == {s.value for s in CallState}
    for kind, struct, path in (
        ("collateral", AgreementState, ()),
        ("collateral.calls", CallRecord, ()),
        ("collateral.calls", CallView, ("call",)),
        ("features", FeatureValues, ()),
    ):
        ours: dict[str, Any] = payload_schema(kind)
        for step in path:
            ours = ours["properties"][step]
        (_,), defs = msgspec.json.schema_components([struct])
        theirs = defs[struct.__name__]
        assert set(ours["properties"]) == set(theirs["properties"]), (kind, struct)
        assert set(ours["required"]) >= set(theirs.get("required", [])), (kind, struct)


# ── protocol messages ────────────────────────────────────────────────────────────────────────

STAMPS = Timestamps(1, 2, 3)
SERVER_EXAMPLES: list[Any] = [
    Ack(1, "subscribe", ("trades.SPY",), Limits(65536, 1000, 200, 50, 10000),
        {"trades.SPY": Recovery(False, 0, "e1", 7, "too_old")}),
    Ack("x", "list", (), available=(ChannelInfo("trades.SPY", "ordered-lossless", "e1", 4, 2),)),
    Error(None, "bad_json", "not valid JSON"),
    Error(2, "unknown_channel", "no channel", "channels[0]", "trades.X"),
    Pong(4, 99),
    Heartbeat(99),
    Update("trades.SPY", 5, "e1", STAMPS, {"p": 1.0}),
    Snapshot("pnl.paper", 5, "e1", STAMPS, {"equity": "1"}),
    Status("trades.SPY", StatusState.GAP, count=2, from_seq=3, to_seq=4, epoch="e1",
           reason="slow_consumer"),
    Batch((Update("trades.SPY", 5, "e1", STAMPS, 1), Status("q.X", StatusState.LAGGING))),
]  # fmt: skip


@pytest.mark.parametrize("message", SERVER_EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_server_message_the_codec_writes_validates(message: Any) -> None:
    body = json.loads(encode(message))
    schema = message_schema(body["type"])
    Validator.check_schema(schema)
    assert valid(schema, body)
    assert not valid(schema, {**body, "type": "other"})


def test_server_message_schemas_refuse_malformed_messages() -> None:
    update = json.loads(encode(SERVER_EXAMPLES[6]))
    assert not valid(message_schema("update"), {**update, "seq": -1})
    assert not valid(message_schema("update"), {**update, "channel": "bad channel"})
    assert not valid(message_schema("update"), {k: v for k, v in update.items() if k != "ts"})
    error = json.loads(encode(SERVER_EXAMPLES[2]))
    assert not valid(message_schema("error"), {**error, "code": "made_up"})
    assert {c.value for c in ErrorCode} == set(
        SERVER_MESSAGES["error"]["properties"]["code"]["enum"]
    )
    assert {s.value for s in StatusState} == set(
        SERVER_MESSAGES["status"]["properties"]["state"]["enum"]
    )


CLIENT_EXAMPLES = [
    Subscribe(1, ("trades.SPY", "bars.1m.SPY"), {"trades.SPY": ResumePosition("e1", 4)}, False),
    Unsubscribe("a", ("trades.SPY",)),
    ListChannels(3),
    Ping(-4),
]


@pytest.mark.parametrize("message", CLIENT_EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_client_request_the_codec_writes_validates(message: Any) -> None:
    body = json.loads(encode_client(message))
    assert valid(message_schema(body["op"]), body)


@pytest.mark.parametrize(
    "request_body",
    [
        {"op": "subscribe", "id": 1, "channels": []},
        {"op": "subscribe", "id": "x" * 65, "channels": ["trades.SPY"]},
        {"op": "subscribe", "id": 1, "channels": ["trades.SPY"], "snapshot": "no"},
        {"op": "subscribe", "id": 1, "channels": ["trades.SPY"],
         "resume": {"trades.SPY": {"epoch": "e", "seq": -1}}},
        {"op": "ping", "id": 2**63},
        {"op": "ping", "id": True},
    ],
)  # fmt: skip
def test_requests_the_hub_refuses_are_invalid(request_body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_client(json.dumps(request_body))
    assert not valid(message_schema(request_body["op"]), request_body)


def test_message_schemas_cover_the_message_dataclasses_fields() -> None:
    import dataclasses

    client: tuple[tuple[str, Any], ...] = (
        ("subscribe", Subscribe), ("unsubscribe", Unsubscribe), ("ping", Ping)
    )  # fmt: skip
    for name, cls in client:
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields <= set(CLIENT_MESSAGES[name]["properties"]), name
    server: tuple[tuple[str, Any], ...] = (
        ("ack", Ack), ("error", Error), ("status", Status), ("pong", Pong),
        ("update", Update), ("snapshot", Snapshot), ("heartbeat", Heartbeat),
    )  # fmt: skip
    for name, cls in server:
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields <= set(SERVER_MESSAGES[name]["properties"]), name


# ── AsyncAPI ─────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((DATA / "asyncapi-3.0.0.schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_the_asyncapi_document_is_valid_asyncapi_3(
    asyncapi_validator: jsonschema.Draft7Validator,
) -> None:
    document = wire(asyncapi_document(version="1.2.3", host="example:8600"))
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in asyncapi_validator.iter_errors(document)
    ]
    assert errors == []
    assert document["info"]["version"] == "1.2.3"
    assert document["servers"]["hub"] == {
        "host": "example:8600", "protocol": "ws", "pathname": "/", "title": "WebSocket hub"
    }  # fmt: skip
    for ref in refs(document):
        resolve(document, ref)  # every reference lands


def test_the_official_schema_refuses_a_broken_document(
    asyncapi_validator: jsonschema.Draft7Validator,
) -> None:
    document = wire(asyncapi_document(version="1"))
    broken = copy.deepcopy(document)
    broken["operations"]["sendTrades"]["action"] = "publish"  # AsyncAPI 2's word
    assert not asyncapi_validator.is_valid(broken)
    del broken["info"]
    assert not asyncapi_validator.is_valid(broken)


def test_every_stream_kind_is_a_channel_with_its_parameters_and_delivery_class() -> None:
    document = asyncapi_document(version="1")
    channels = {c["title"]: c for c in document["channels"].values()}
    assert set(STREAM_KINDS) <= set(channels)
    for kind, spec in STREAM_KINDS.items():
        channel = channels[kind]
        assert channel["address"] == ".".join((kind, *(f"{{{p}}}" for p in spec.params)))
        assert list(channel["parameters"]) == list(spec.params)
        assert channel["x-delivery"] == spec.delivery.value
        expected = {"update", "status"}
        if spec.delivery is DeliveryClass.LATEST_VALUE:
            expected.add("snapshot")
        assert set(channel["messages"]) == expected


def test_an_asyncapi_message_schema_validates_the_wire_message_in_draft_07() -> None:
    """The draft-07 rewrite keeps its meaning: a book update validates, a level of three
    numbers does not; the channel address pattern is enforced."""
    document = wire(asyncapi_document(version="1"))
    message = document["components"]["messages"]["BookUpdate"]["payload"]
    validator = jsonschema.Draft7Validator({**message, "components": document["components"]})
    book = BookTop("BTCUSDT", 5, 9, ((100.0, 1.0),), ((100.5, 0.3),))
    update = json.loads(encode(Update("book.BTCUSDT", 1, "e", STAMPS, encode_record(book))))
    assert validator.is_valid(update)
    assert not validator.is_valid({**update, "channel": "trades.BTCUSDT"})
    bad = copy.deepcopy(update)
    bad["data"]["bids"][0] = [100.0, 1.0, 7.0]
    assert not validator.is_valid(bad)

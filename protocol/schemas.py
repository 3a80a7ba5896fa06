"""The documented schema of every stream and every protocol message, as data (JSON Schema).

One source for clients, the hub's ``GET /asyncapi.json`` and the tests that validate real
traffic against it:

* ``payload_schema(kind)``: the JSON Schema (draft 2020-12) of the ``data`` of one stream kind
  (``protocol.channels.STREAM_KINDS``). Kinds whose payload is a typed record
  (``protocol.records``: trades, bars, quotes, book, intents, orders, risk.denials, fills,
  positions, pnl) take msgspec's schema of that record, so the record type *is* the schema.
  The other kinds publish plain dicts built in their engine's ``service.py``; their schemas are
  written here once from those publish calls: ``required`` lists the fields every message
  carries, numbers an engine turns from NaN into ``null`` admit ``null``, and every object
  admits further fields (engines may add some; a client ignores what it does not know).
* ``message_schema(name)``: the JSON Schema of one protocol message (``subscribe``,
  ``unsubscribe``, ``list``, ``ping`` from the client; ``ack``, ``error``, ``pong``,
  ``heartbeat``, ``update``, ``snapshot``, ``status``, ``batch`` from the hub), as
  ``protocol.codec`` writes and reads them.
* ``check_payload(channel, data)``: raises ``ValueError`` naming the JSON path when ``data``
  does not match its kind's payload schema (a client's ``validate`` callable:
  ``realtime.client.HubClient(config, validate=check_payload)``). It reads the subset of JSON
  Schema these schemas use (``$ref``, ``anyOf``, ``type``, ``const``, ``enum``, ``required``,
  ``properties``, ``additionalProperties``, ``prefixItems``/``items``, ``minItems``/``maxItems``);
  the JavaScript client's ``payloadChecker`` reads the same subset. A channel of no known kind
  passes.
* ``asyncapi_document()``: an AsyncAPI 3.0 document of the WebSocket API generated from
  ``STREAM_KINDS`` and the schemas above: a channel per stream kind (address, parameters,
  delivery class as ``x-delivery``), its messages (``update``, and ``snapshot`` for
  latest-value kinds), the control requests and replies on the connection, and the hub's
  operations. AsyncAPI's default schema format is a superset of JSON Schema draft-07, so the
  record schemas are rewritten there (``prefixItems`` → ``items`` arrays).

Limits: a schema says what a message looks like, not what it means (``seq`` continuity,
ledger identities, …: ``protocol.sequence``, the engines' tests). Decimal amounts are JSON
strings (``"format": "decimal"``). Pure: no I/O.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import msgspec

from protocol.channels import _BAR_SPEC, MAX_CHANNEL_LENGTH, STREAM_KINDS, DeliveryClass, kind_of
from protocol.codec import MAX_EPOCH_LENGTH, MAX_REQUEST_ID_LENGTH
from protocol.errors import ErrorCode
from protocol.messages import ChannelInfo, Limits, Recovery, StatusState, Timestamps
from protocol.records import (
    AccountPositions,
    AccountState,
    Bar,
    BookTop,
    Fill,
    Order,
    Quote,
    Record,
    Trade,
)

__all__ = [
    "ASYNCAPI_VERSION",
    "CLIENT_MESSAGES",
    "JSON_SCHEMA_DIALECT",
    "RECORD_PAYLOADS",
    "SERVER_MESSAGES",
    "asyncapi_document",
    "check_payload",
    "message_schema",
    "payload_schema",
    "payload_schema_name",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
Schema = dict[str, Any]

#: Stream kinds whose payload is a typed record: the record's msgspec schema is the schema.
RECORD_PAYLOADS: dict[str, type[Record]] = {
    "trades": Trade,
    "bars": Bar,
    "quotes": Quote,
    "book": BookTop,
    "intents": Order,
    "orders": Order,
    "risk.denials": Order,
    "fills": Fill,
    "positions": AccountPositions,
    "pnl": AccountState,
}

# ── building blocks ──────────────────────────────────────────────────────────────────────────

_INT: Schema = {"type": "integer"}
_NS: Schema = {"type": "integer", "description": "nanoseconds since the Unix epoch"}
_NUM: Schema = {"type": "number"}
_NUM_OR_NULL: Schema = {"type": ["number", "null"]}
_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_INT64_MAX = 2**63 - 1
_SEGMENT = r"[A-Za-z0-9_\-]{1,40}"


def _object(
    required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any
) -> Schema:
    """An object with ``required`` fields always present, ``optional`` ones sometimes, and
    room for fields engines add (``additionalProperties`` is left open)."""
    head = {k: v for k, v in extra.items() if v != ""}
    return {
        "type": "object",
        **head,
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


def _numbers(description: str) -> Schema:
    """A map of names to numbers (``null`` where undefined or not yet warm)."""
    return {"type": "object", "description": description, "additionalProperties": _NUM_OR_NULL}


def _enum(values: Any, description: str = "") -> Schema:
    out: Schema = {"type": "string", "enum": [str(v) for v in values]}
    if description:
        out["description"] = description
    return out


# ── dict payloads, from each engine's publish call ───────────────────────────────────────────

_VPIN_BUCKET = {
    "bucket": {**_INT, "description": "bucket number since the calculator started, from 0"},
    "start_ns": _NS,
    "end_ns": _NS,
    "volume": _NUM,
}
_VPIN_COMMON = {
    "window": {**_INT, "description": "buckets in the VPIN window so far"},
    "cdf_empirical": _NUM_OR_NULL,
    "cdf_lognormal": _NUM_OR_NULL,
    "alert": {**_BOOL, "description": "CDF at or above the alert threshold"},
    "events": {**_INT, "description": "alert events so far"},
    "sigma": _NUM_OR_NULL,
    "params": {"type": "object", "description": "the parameters in force"},
    "inputs": _numbers("trades accepted and refused so far, by reason"),
}
_BY_CLASSIFIER = _numbers(
    "one value per trade classifier (bvc_normal, bvc_t, tick, quote, aggressor; null where the"
    " feed cannot give it)"
)

_VPIN = _object(
    {
        "symbol": _STR,
        **_VPIN_BUCKET,
        "buy": _NUM,
        "sell": _NUM,
        "oi": {**_NUM, "description": "order imbalance |sell - buy| of the bucket"},
        "vpin": {**_NUM, "description": "VPIN over the window (ELO 2012 eq. 5)"},
        **_VPIN_COMMON,
    },
    title="VpinPayload",
    description="engines/vpin: one message per completed volume bucket",
)

_EVPIN = _object(
    {
        "symbol": _STR,
        **_VPIN_BUCKET,
        "buy": _BY_CLASSIFIER,
        "vpin": _BY_CLASSIFIER,
        "signed_vpin": _BY_CLASSIFIER,
        "band": {
            "type": "array",
            "items": _NUM,
            "minItems": 2,
            "maxItems": 2,
            "description": "[low, high] confidence band of the primary VPIN",
        },
        "ofi": {**_NUM, "description": "order-flow imbalance of the quotes during the bucket"},
        "t_df": {**_NUM, "description": "Student-t degrees of freedom in force"},
        "day": _INT,
        **_VPIN_COMMON,
    },
    title="EvpinPayload",
    description="engines/evpin: VPIN per trade classifier, signed VPIN, band and OFI per bucket",
)

_FEATURES = _object(
    {
        "source": {"const": "features"},
        "symbol": _STR,
        "spec": _STR,
        "start_ns": _NS,
        "end_ns": _NS,
        "event_ns": _NS,
        "values": _numbers("every configured feature by name (null while warming up)"),
    },
    title="FeaturesPayload",
    description="engines/features: every indicator of a symbol after one bar",
)

_FACTOR_EXPOSURES = _object(
    {
        "symbol": _STR,
        "model": _STR,
        "factors": {"type": "array", "items": _STR},
        "spec": _STR,
        "start_ns": _NS,
        "end_ns": _NS,
        "event_ns": _NS,
        "window": _INT,
        "decay": _NUM,
        "n": {**_INT, "description": "observations in the regression"},
        "alpha": _NUM_OR_NULL,
        "betas": _numbers("exposure to each factor"),
        "t_alpha": _NUM_OR_NULL,
        "t_betas": _numbers("t statistic of each beta"),
        "r2": _NUM_OR_NULL,
        "resid_vol": _NUM_OR_NULL,
    },
    {
        "hac_t_alpha": _NUM_OR_NULL,
        "hac_t_betas": _numbers("Newey-West t of each beta"),
        "risk_free": {
            **_STR,
            "description": "factors from a file: the bar's return minus this column is regressed",
        },
    },
    title="FactorExposures",
    description="factor.<model>.<symbol>: rolling regression of one return on the factors",
)
_FACTOR_IC = _object(
    {
        "signal": _STR,
        "source": _STR,
        "horizon": _INT,
        "start_ns": _NS,
        "event_ns": _NS,
        "ic": {**_NUM, "description": "Spearman rank IC of the date"},
        "symbols": _INT,
        "n": _INT,
        "mean": _NUM_OR_NULL,
        "std": _NUM_OR_NULL,
        "ir": _NUM_OR_NULL,
        "t": _NUM_OR_NULL,
    },
    title="FactorIc",
    description="factor.ic.<signal>: one date's information coefficient and its running summary",
)
_FACTOR: Schema = {
    "title": "FactorPayload",
    "description": "engines/factor: exposures (factor.<model>.<symbol>) or IC (factor.ic.<signal>)",
    "anyOf": [_FACTOR_EXPOSURES, _FACTOR_IC],
}

_ML = _object(
    {
        "model": _STR,
        "symbol": _STR,
        "version": {**_INT, "description": "bumped when drift resets the model"},
        "prediction": {**_NUM, "description": "class (logistic: 0/1) or predicted return"},
        "probability": _NUM_OR_NULL,
        "bet_size": _NUM_OR_NULL,
        "event_ns": _NS,
        "bar_end_ns": _NS,
        "learned": _INT,
        "drifts": _INT,
        "drift": _BOOL,
        "metrics": _numbers("prequential metrics: n, accuracy, log_loss, auc, mae"),
    },
    title="MlPayload",
    description="engines/ml: one model's prediction for a symbol after a features message",
)

_SIGNALS = _object(
    {"symbol": _STR, "event_ns": _NS},
    {"source": _STR, "values": _numbers("named values")},
    title="SignalPayload",
    description="signals.<name>.<key>: an engine's signal (e.g. signals.vwap.SPY: session, "
    "vwap, volume, trades)",
)

_VAR_ESTIMATE = _object({"var": _NUM_OR_NULL, "es": _NUM_OR_NULL, "std_error": _NUM_OR_NULL})
_RISK = _object(
    {
        "account": _STR,
        "event_ns": _NS,
        "as_of": {"type": ["string", "null"], "description": "last date of history used"},
        "days": _INT,
        "window": _INT,
        "lambda": _NUM,
        "positions": _numbers("money held per symbol"),
        "unpriced": {"type": "array", "items": _STR},
        "uncovered": {"type": "array", "items": _STR},
        "var": {
            "type": "object",
            "description": "{method: {level: {var, es, std_error}}}",
            "additionalProperties": {"type": "object", "additionalProperties": _VAR_ESTIMATE},
        },
        "components": {"type": ["object", "null"], "description": "Euler contributions"},
        "error": {"type": ["string", "null"]},
    },
    title="RiskVarPayload",
    description="risk.var.<account>: VaR and ES of the account's holdings by method and level",
)

_STATS = _numbers("every statistic of the return stream (null where undefined)")
_ANALYTICS = _object(
    {
        "key": _STR,
        "source": _STR,
        "event_ns": _NS,
        "from_ns": _NS,
        "period": _STR,
        "bar_spec": _STR,
        "periods_per_year": _NUM,
        "annualization": _STR,
        "convention": _STR,
        "stats": _STATS,
        "benchmark": {
            "anyOf": [
                {"type": "null"},
                _object({"symbol": _STR, "n": _INT}, additionalProperties=_NUM_OR_NULL),
            ]
        },
    },
    title="AnalyticsPayload",
    description="engines/analytics: performance statistics after each return",
)

#: engines/collateral/core.py ``CallState`` (tests/protocol/test_schemas.py keeps them equal).
CALL_STATES = ("issued", "agreed", "disputed", "settled")
_CALL_VIEW = _object(
    {
        "call_id": _STR,
        "agreement": _STR,
        "amount": _NUM,
        "state": _enum(CALL_STATES),
        "version": _INT,
        "issued_ns": _NS,
        "updated_ns": _NS,
    },
    {"settled_amount": _NUM, "reason": _STR},
    title="MarginCall",
)
_COLLATERAL = _object(
    {
        "agreement": _STR,
        "counterparty": _STR,
        "account": _STR,
        "currency": _STR,
        "updated_ns": _NS,
        "exposure_ns": _NS,
        "exposure": _NUM,
        "exposure_source": _enum(("none", "pnl", "posted")),
        "held": _NUM,
        "credit_support_amount": _NUM,
        "required": _NUM,
        "due": _NUM,
        "open_call": {"anyOf": [{"type": "null"}, _CALL_VIEW]},
        "calls_issued": _INT,
        "next_valuation_ns": _NS,
    },
    title="CollateralPayload",
    description="engines/collateral: an agreement's exposure, collateral held and open call",
)
_COLLATERAL_CALLS = _object(
    {
        "call_id": _STR,
        "agreement": _STR,
        "seq": {**_INT, "description": "the call's version after this transition"},
        "event": _STR,
        "from_state": {"anyOf": [{"type": "null"}, _enum(CALL_STATES)]},
        "to_state": _enum(CALL_STATES),
        "amount": _NUM,
        "ts_ns": _NS,
        "reason": _STR,
        "call": _CALL_VIEW,
    },
    title="CollateralCallPayload",
    description="engines/collateral: one margin-call transition",
)

_BACKTEST = _object(
    {
        "job": _STR,
        "status": _enum(("queued", "running", "done", "failed", "cancelled")),
        "percent": _NUM,
        "simulated_ns": {"type": ["integer", "null"]},
        "trades": _INT,
        "eta_s": _NUM_OR_NULL,
        "log": {"type": "array", "items": _STR},
    },
    {
        "request": {"type": "object", "description": "the job's request (final message)"},
        "event_ns": _NS,
        "result": {
            "type": ["object", "null"],
            "description": "the summary once finished (fills, equity and grid: REST)",
        },
    },
    title="BacktestPayload",
    description="engines/backtesting: a job's progress, then its result",
)

#: Stream kinds whose payload is a plain dict: the schema written from the publishing engine.
DICT_PAYLOADS: dict[str, Schema] = {
    "vpin": _VPIN,
    "evpin": _EVPIN,
    "features": _FEATURES,
    "factor": _FACTOR,
    "ml": _ML,
    "signals": _SIGNALS,
    "risk": _RISK,
    "analytics": _ANALYTICS,
    "collateral": _COLLATERAL,
    "collateral.calls": _COLLATERAL_CALLS,
    "backtest": _BACKTEST,
}


def payload_schema_name(kind: str) -> str:
    """The component name of a kind's payload schema (``Trade``, ``VpinPayload``)."""
    record = RECORD_PAYLOADS.get(kind)
    if record is not None:
        return record.__name__
    if kind in DICT_PAYLOADS:
        return str(DICT_PAYLOADS[kind]["title"])
    raise KeyError(f"no payload schema for stream kind {kind!r}")


def payload_schema(kind: str) -> Schema:
    """The standalone JSON Schema (2020-12) of the ``data`` of a ``kind`` message."""
    spec = STREAM_KINDS[kind]
    head: Schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{kind} payload",
        "description": f"{spec.description} ({spec.delivery.value})",
    }
    record = RECORD_PAYLOADS.get(kind)
    if record is None:
        body = copy.deepcopy(DICT_PAYLOADS[kind])
        body.pop("title", None)
        head["description"] += f"; {body.pop('description')}" if "description" in body else ""
        return {**head, **body}
    (ref,), defs = msgspec.json.schema_components([record], ref_template="#/$defs/{name}")
    return {**head, **ref, "$defs": defs}


@functools.cache
def _payload_schema_of(kind: str) -> Schema:
    return payload_schema(kind)


def check_payload(channel: str, data: Any) -> None:
    """``ValueError`` (``data.<path>: why``) when ``data`` does not match the payload schema of
    ``channel``'s kind; a channel of no known kind passes."""
    kind = kind_of(channel)
    if kind in STREAM_KINDS:
        schema = _payload_schema_of(kind)
        _check(schema, data, "data", schema.get("$defs", {}))


_TYPE_CHECKS: dict[str, Any] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    # JSON Schema: a number with a zero fractional part is an integer (1.0 too)
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _check(schema: Any, value: Any, path: str, defs: Schema) -> None:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], True)
    if schema is True or schema is None:
        return
    if schema is False:
        raise ValueError(f"{path}: not allowed")
    if "anyOf" in schema and not any(_passes(alt, value, path, defs) for alt in schema["anyOf"]):
        raise ValueError(f"{path}: matches none of the allowed forms")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPE_CHECKS.get(t, lambda _: True)(value) for t in types):
            raise ValueError(f"{path}: expected {' or '.join(types)}, got {value!r:.60}")
    if "const" in schema and value != schema["const"]:
        raise ValueError(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: not one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise ValueError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValueError(f"{path}: more than {schema['maxItems']} items")
        head = schema.get("prefixItems", [])
        for i, (item_schema, item) in enumerate(zip(head, value, strict=False)):
            _check(item_schema, item, f"{path}[{i}]", defs)
        rest = schema.get("items", True)
        for i in range(len(head), len(value)):
            _check(rest, value[i], f"{path}[{i}]", defs)
    elif isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise ValueError(f"{path}.{key}: missing")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            _check(properties.get(key, extra), item, f"{path}.{key}", defs)


def _passes(schema: Any, value: Any, path: str, defs: Schema) -> bool:
    try:
        _check(schema, value, path, defs)
    except ValueError:
        return False
    return True


# ── protocol messages ────────────────────────────────────────────────────────────────────────

_REQUEST_ID: Schema = {
    "description": "echoed by the reply",
    "anyOf": [
        {"type": "integer", "minimum": -_INT64_MAX, "maximum": _INT64_MAX},
        {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID_LENGTH},
    ],
}
_CHANNEL: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CHANNEL_LENGTH,
    "pattern": rf"^{_SEGMENT}(\.{_SEGMENT})*$",
}
_EPOCH: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_EPOCH_LENGTH}
_SEQ: Schema = {"type": "integer", "minimum": 0, "maximum": _INT64_MAX}
_CHANNELS: Schema = {"type": "array", "items": _CHANNEL}


def _struct_schema(cls: type) -> Schema:
    """msgspec's schema of one of ``protocol.messages``' flat dataclasses, inlined."""
    (_ref,), defs = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    out: Schema = defs[cls.__name__]
    return out


def _message(type_: str, required: dict[str, Schema], optional: dict[str, Schema] | None = None,
             description: str = "") -> Schema:  # fmt: skip
    return _object(
        {"type": {"const": type_}, **required}, optional, title=type_, description=description
    )


def _request(op: str, required: dict[str, Schema], optional: dict[str, Schema] | None = None,
             description: str = "") -> Schema:  # fmt: skip
    return _object(
        {"op": {"const": op}, "id": _REQUEST_ID, **required}, optional, title=op,
        description=description,
    )  # fmt: skip


_TIMESTAMPS = _struct_schema(Timestamps)


def _data_message(type_: str, data: Schema, channel: Schema, description: str) -> Schema:
    return _message(
        type_,
        {"channel": channel, "seq": _SEQ, "epoch": _EPOCH, "ts": _TIMESTAMPS, "data": data},
        description=description,
    )


_STATUS = _message(
    "status",
    {"channel": _CHANNEL, "state": _enum(StatusState)},
    {
        "count": _INT,
        "from_seq": _SEQ,
        "to_seq": _SEQ,
        "epoch": _EPOCH,
        "reason": _STR,
        "previous_epoch": _EPOCH,
        "previous_seq": _SEQ,
    },
    "a per-channel condition: lagging, conflated, gap, stale, live, recovered, not_recovered",
)
_UPDATE = _data_message("update", {}, _CHANNEL, "one message of a channel")
_SNAPSHOT = _data_message("snapshot", {}, _CHANNEL, "a latest-value channel's current value")

#: Requests a client sends (protocol/README.md, "Client requests").
CLIENT_MESSAGES: dict[str, Schema] = {
    "subscribe": _request(
        "subscribe",
        {"channels": {**_CHANNELS, "minItems": 1}},
        {
            "resume": {
                "type": "object",
                "description": "positions to resume from, for channels named in 'channels'",
                "additionalProperties": _object(
                    {"epoch": _EPOCH, "seq": _SEQ}, additionalProperties=False
                ),
            },
            "snapshot": {**_BOOL, "default": True},
        },
        "subscribe (all or nothing), optionally resuming from (epoch, seq)",
    ),
    "unsubscribe": _request("unsubscribe", {"channels": {**_CHANNELS, "minItems": 1}}),
    "list": _request(
        "list",
        {},
        {
            "after": {**_STR, "maxLength": 128, "description": "the previous page's 'next'"},
            "limit": {"type": "integer", "minimum": 1, "maximum": _INT64_MAX},
        },
        "one page of the channels the hub carries, by name (the hub caps 'limit')",
    ),
    "ping": _request("ping", {}),
}

#: Messages the hub sends (protocol/README.md, "Server messages").
SERVER_MESSAGES: dict[str, Schema] = {
    "ack": _message(
        "ack",
        {
            "id": _REQUEST_ID,
            "op": _enum(("subscribe", "unsubscribe", "list")),
            "channels": {**_CHANNELS, "description": "the effective subscription set"},
        },
        {
            "limits": _struct_schema(Limits),
            "recovery": {"type": "object", "additionalProperties": _struct_schema(Recovery)},
            "available": {"type": "array", "items": _struct_schema(ChannelInfo)},
            "next": {**_STR, "description": "list: more channels follow; send as 'after'"},
        },
        "reply to a request; limits and recovery come with subscribe, available (and next, "
        "when more follow) with list",
    ),
    "error": _message(
        "error",
        {"code": _enum(ErrorCode), "message": _STR},
        {"id": _REQUEST_ID, "field": _STR, "channel": _STR},
        "a refused request; the connection stays open",
    ),
    "pong": _message("pong", {"id": _REQUEST_ID, "ts": _NS}),
    "heartbeat": _message("heartbeat", {"ts": _NS}, description="sent every few seconds"),
    "update": _UPDATE,
    "snapshot": _SNAPSHOT,
    "status": _STATUS,
    "batch": _message(
        "batch",
        {"messages": {"type": "array", "items": {"anyOf": [_UPDATE, _SNAPSHOT, _STATUS]}}},
        description="several data messages in one frame, in order",
    ),
}


def message_schema(name: str) -> Schema:
    """The standalone JSON Schema (2020-12) of one protocol message (``subscribe``, ``ack``…)."""
    found = CLIENT_MESSAGES.get(name) or SERVER_MESSAGES[name]
    return {"$schema": JSON_SCHEMA_DIALECT, **copy.deepcopy(found)}


# ── AsyncAPI ─────────────────────────────────────────────────────────────────────────────────

_REF = "#/components/schemas/{name}"


def _draft07(node: Any) -> Any:
    """2020-12 → draft-07 (AsyncAPI's schema dialect): ``prefixItems`` + ``items: false``
    become an ``items`` array + ``additionalItems: false``."""
    if isinstance(node, list):
        return [_draft07(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft07(v) for k, v in node.items()}
    if "prefixItems" in out:
        out["additionalItems"] = out.pop("items", True)
        out["items"] = out.pop("prefixItems")
    return out


def _address_pattern(kind: str) -> str:
    params = STREAM_KINDS[kind].params
    segments = [re.escape(kind), *(_SEGMENT for _ in params)]
    if kind == "bars":
        segments[1] = _BAR_SPEC.pattern
    return "^" + r"\.".join(segments) + "$"


_PARAMETER_TEXT = {
    "symbol": "instrument symbol (SPY, BTCUSDT)",
    "spec": "bar spec: 1s 1m 5m 1h 1d tick100 volume5000 dollar1000000",
    "account": "account name (paper)",
    "strategy": "strategy name (ma_cross)",
    "model": "model name (logistic, linear; for factor: the factor model, or ic)",
    "metric": "risk metric (var)",
    "key": "a symbol or account",
    "name": "signal name (vwap)",
    "agreement": "collateral agreement name",
    "job": "backtest job id",
}


def _component(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("."))


@functools.lru_cache(maxsize=1)
def _asyncapi_base(version: str) -> Schema:
    records = sorted(set(RECORD_PAYLOADS.values()), key=lambda t: t.__name__)
    _, record_components = msgspec.json.schema_components(records, ref_template=_REF)
    schemas: Schema = {name: _draft07(s) for name, s in sorted(record_components.items())}
    for kind, schema in DICT_PAYLOADS.items():
        schemas[payload_schema_name(kind)] = copy.deepcopy(schema)
    for name, schema in {**CLIENT_MESSAGES, **SERVER_MESSAGES}.items():
        schemas[f"{name.capitalize()}Message"] = copy.deepcopy(schema)

    messages: Schema = {}
    channels: Schema = {}
    operations: Schema = {}
    for kind, spec in STREAM_KINDS.items():
        name = _component(kind)
        data = {"$ref": _REF.format(name=payload_schema_name(kind))}
        channel = {"type": "string", "pattern": _address_pattern(kind)}
        kinds = ["update"]
        if spec.delivery is DeliveryClass.LATEST_VALUE:
            kinds.append("snapshot")
        refs = {}
        for type_ in kinds:
            message_id = f"{name}{type_.capitalize()}"
            text = "current value, sent on subscribe" if type_ == "snapshot" else "one message"
            messages[message_id] = {
                "name": f"{kind}.{type_}",
                "title": f"{kind} {type_}",
                "summary": f"{spec.description}: {text}",
                "contentType": "application/json",
                "payload": _data_message(type_, data, channel, f"{kind} {type_}"),
            }
            refs[type_] = {"$ref": f"#/components/messages/{message_id}"}
        refs["status"] = {"$ref": "#/components/messages/Status"}
        address = ".".join((kind, *(f"{{{p}}}" for p in spec.params)))
        channels[name] = {
            "address": address,
            "title": kind,
            "description": f"{spec.description}. Delivery: {spec.delivery.value}.",
            "parameters": {p: {"description": _PARAMETER_TEXT.get(p, p)} for p in spec.params},
            "messages": refs,
            "x-delivery": spec.delivery.value,
        }
        operations[f"send{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"the hub sends {address} to its subscribers",
            "messages": [{"$ref": f"#/channels/{name}/messages/{t}"} for t in refs],
        }

    for name in (*CLIENT_MESSAGES, *SERVER_MESSAGES):
        messages[name.capitalize()] = {
            "name": name,
            "title": name,
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(name=f"{name.capitalize()}Message")},
        }
    control = {
        "address": None,
        "title": "connection",
        "description": "requests and replies on the WebSocket connection itself; data of "
        "several channels may arrive in one batch frame",
        "messages": {
            name: {"$ref": f"#/components/messages/{name.capitalize()}"}
            for name in (*CLIENT_MESSAGES, *SERVER_MESSAGES)
        },
    }
    channels["connection"] = control
    replies = [{"$ref": "#/channels/connection/messages/ack"},
               {"$ref": "#/channels/connection/messages/error"}]  # fmt: skip
    for name in CLIENT_MESSAGES:
        reply = [{"$ref": "#/channels/connection/messages/pong"}] if name == "ping" else replies
        operations[f"receive{name.capitalize()}"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/connection"},
            "messages": [{"$ref": f"#/channels/connection/messages/{name}"}],
            "reply": {"channel": {"$ref": "#/channels/connection"}, "messages": reply},
        }
    for name in ("heartbeat", "batch", "status"):
        operations[f"send{name.capitalize()}"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/connection"},
            "messages": [{"$ref": f"#/channels/connection/messages/{name}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Nautilus Realtime WebSocket API",
            "version": version,
            "description": "JSON text frames over one WebSocket per client; protocol v1 "
            "(protocol/README.md). Each channel's delivery class is its x-delivery.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def asyncapi_document(*, version: str, host: str = "localhost:8600") -> Schema:
    """The AsyncAPI 3.0 document of the hub's WebSocket API (``GET /asyncapi.json``)."""
    document = copy.deepcopy(_asyncapi_base(version))
    server = {"host": host, "protocol": "ws", "pathname": "/", "title": "WebSocket hub"}
    return {**document, "servers": {"hub": server}}

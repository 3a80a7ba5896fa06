"""The trading pipeline's records: what goes on the bus comes back equal (Decimal exactly, enums
by value), and a payload that is not the record is a ``BadInput`` naming the field."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from protocol.records import (
    AccountState,
    BadInput,
    Fill,
    Intent,
    Liquidity,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Record,
    decode,
    encode,
)

T = 1_381_152_600_000_000_000

PIPELINE: list[Record] = [
    Intent(intent_id="ma-1", strategy="ma", account="paper", symbol="SPY", event_ns=T,
           target_quantity=Decimal("100"), signal_ids=("features.SPY:17",)),
    Order(client_order_id="ma-1-1", account="paper", strategy="ma", symbol="SPY",
          side=OrderSide.BUY, type=OrderType.LIMIT, quantity=Decimal("100"),
          status=OrderStatus.PARTIALLY_FILLED, event_ns=T, price=Decimal("168.93"),
          filled_quantity=Decimal("40"), average_price=Decimal("168.925")),
    Fill(fill_id="ma-1-1-1", client_order_id="ma-1-1", account="paper", strategy="ma",
         symbol="SPY", side=OrderSide.BUY, quantity=Decimal("40"), price=Decimal("168.925"),
         fee=Decimal("0.20"), fee_currency="USD", liquidity=Liquidity.TAKER, event_ns=T),
    Position(account="paper", symbol="SPY", quantity=Decimal("40"),
             average_price=Decimal("168.925"), realized_pnl=Decimal("0"),
             unrealized_pnl=None, mark_price=None, currency="USD", event_ns=T),
    AccountState(account="paper", currency="USD", starting_cash=Decimal("1000000"),
                 cash=Decimal("993242.80"), equity=Decimal("999999.80"),
                 realized_pnl=Decimal("0"), unrealized_pnl=Decimal("0"), fees=Decimal("0.20"),
                 gross_exposure=Decimal("6757.00"), net_exposure=Decimal("6757.00"),
                 event_ns=T, unpriceable=("AIG",)),
]  # fmt: skip


@pytest.mark.parametrize("record", PIPELINE, ids=lambda r: type(r).__name__)
def test_pipeline_records_survive_the_wire_exactly(record: Record) -> None:
    wire = orjson.dumps(encode(record))
    assert decode(type(record), wire) == record
    assert decode(type(record), orjson.loads(wire)) == record


def test_money_is_decimal_on_the_wire_never_a_float() -> None:
    payload = encode(PIPELINE[2])
    assert payload["price"] == "168.925" and payload["fee"] == "0.20"


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"quantity": "forty"}, "invalid_value", "$.quantity"),
        ({"side": "hold"}, "invalid_value", "$.side"),
        ({"event_ns": "soon"}, "wrong_type", "$.event_ns"),
    ],
)
def test_a_bad_fill_names_its_field(change: dict[str, object], reason: str, field: str) -> None:
    payload = {**encode(PIPELINE[2]), **change}
    with pytest.raises(BadInput) as caught:
        decode(Fill, payload)
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_a_missing_field_is_named() -> None:
    payload = encode(PIPELINE[4])
    del payload["equity"]
    with pytest.raises(BadInput) as caught:
        decode(AccountState, payload)
    assert caught.value.reason == "missing_field"

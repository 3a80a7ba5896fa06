from __future__ import annotations

import pytest

from protocol.channels import (
    STREAM_KINDS,
    ChannelPattern,
    DeliveryClass,
    bars,
    channel,
    delivery_of,
    parse_channel,
    trades,
)
from protocol.errors import ErrorCode, ProtocolError


@pytest.mark.parametrize(
    ("name", "kind", "params"),
    [
        ("trades.SPY", "trades", ("SPY",)),
        ("bars.1m.SPY", "bars", ("1m", "SPY")),
        ("bars.volume5000.BTCUSDT", "bars", ("volume5000", "BTCUSDT")),
        ("vpin.SPY", "vpin", ("SPY",)),
        ("risk.var.main", "risk", ("var", "main")),
        ("book.BRK-B", "book", ("BRK-B",)),
        ("risk.denials.paper", "risk.denials", ("paper",)),
        ("collateral.calls.paper", "collateral.calls", ("paper",)),
        ("collateral.paper", "collateral", ("paper",)),
        ("features.SPY", "features", ("SPY",)),
    ],
)
def test_parse_valid_names(name: str, kind: str, params: tuple[str, ...]) -> None:
    parsed = parse_channel(name)
    assert (parsed.kind, parsed.params, parsed.name, str(parsed)) == (kind, params, name, name)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "1..128"),
        ("x" * 129, "1..128"),
        ("nope.SPY", "unknown stream kind"),
        ("trades", "trades.<symbol>"),
        ("trades.SPY.extra", "trades.<symbol>"),
        ("trades.SP Y", "must be 1-40"),
        ("trades.", "must be 1-40"),
        ("bars.7x.SPY", "bar spec"),
        ("bars.0m.SPY", "bar spec"),
    ],
)
def test_parse_rejects_with_reason(name: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_channel(name, field="channels[3]")
    assert info.value.code is ErrorCode.BAD_CHANNEL
    assert info.value.field == "channels[3]"
    assert fragment in info.value.message


def test_non_string_channel() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_channel(42)
    assert info.value.code is ErrorCode.BAD_CHANNEL


def test_builders_and_delivery_classes() -> None:
    assert trades("SPY") == "trades.SPY"
    assert bars("5m", "SPY") == "bars.5m.SPY"
    assert channel("risk", "var", "main") == "risk.var.main"
    assert delivery_of("trades.SPY") is DeliveryClass.ORDERED_LOSSLESS
    assert delivery_of("bars.1m.SPY") is DeliveryClass.ORDERED_LOSSLESS
    assert delivery_of("quotes.SPY") is DeliveryClass.LATEST_VALUE
    assert parse_channel("vpin.SPY").delivery is DeliveryClass.LATEST_VALUE
    with pytest.raises(ProtocolError):
        channel("trades", "bad name")


def test_every_kind_declares_class_and_description() -> None:
    for kind in STREAM_KINDS.values():
        assert isinstance(kind.delivery, DeliveryClass)
        assert kind.description and kind.params


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("trades.*", "trades.SPY", True),
        ("trades.*", "quotes.SPY", False),
        ("trades.*", "trades", False),
        ("bars.>", "bars.1m.SPY", True),
        ("bars.>", "bars", False),
        (">", "risk.var.main", True),
        ("bars.*.SPY", "bars.1m.SPY", True),
        ("bars.*.SPY", "bars.1m.QQQ", False),
        ("trades.SPY", "trades.SPY", True),
    ],
)
def test_pattern_matching(pattern: str, name: str, expected: bool) -> None:
    assert ChannelPattern.parse(pattern).matches(name) is expected


@pytest.mark.parametrize("bad", ["", "a.>.b", "trades.S P"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ValueError):
        ChannelPattern.parse(bad)


def test_pattern_literal_flag() -> None:
    assert ChannelPattern.parse("trades.SPY").is_literal
    assert not ChannelPattern.parse("trades.*").is_literal


def test_a_two_segment_kind_wins_over_its_first_segment() -> None:
    # one family, two deliveries: the state is latest-value, the events lossless
    assert delivery_of("risk.var.paper") is DeliveryClass.LATEST_VALUE
    assert delivery_of("risk.denials.paper") is DeliveryClass.ORDERED_LOSSLESS
    assert delivery_of("collateral.paper") is DeliveryClass.LATEST_VALUE
    assert delivery_of("collateral.calls.paper") is DeliveryClass.ORDERED_LOSSLESS
    with pytest.raises(ProtocolError, match=r"collateral\.calls\.<agreement>"):
        parse_channel("collateral.calls.paper.extra")


def test_every_lossless_trading_stream_is_lossless() -> None:
    # docs/architecture.md, "Channels and delivery classes": orders, fills and denials are
    # ordered-lossless; states are latest-value
    for kind in ("orders", "fills", "intents", "risk.denials", "collateral.calls", "trades"):
        assert STREAM_KINDS[kind].delivery is DeliveryClass.ORDERED_LOSSLESS
    for kind in ("positions", "pnl", "analytics", "collateral", "features", "backtest"):
        assert STREAM_KINDS[kind].delivery is DeliveryClass.LATEST_VALUE

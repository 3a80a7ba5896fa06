from __future__ import annotations

import enum

import numpy as np
import pytest
from falcon import testing
from falcon.asgi import Request

from engines.shell.errors import ValidationError
from engines.shell.params import (
    query_enum,
    query_float,
    query_int,
    query_symbol,
    query_time_ns,
)


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


def req(query: str) -> Request:
    return testing.create_asgi_req(query_string=query)


def test_int_with_default_and_bounds() -> None:
    assert query_int(req(""), "limit", default=100) == 100
    assert query_int(req("limit=7"), "limit", default=100, minimum=1, maximum=10) == 7
    assert query_int(req(""), "limit") is None
    with pytest.raises(ValidationError, match="limit must be an integer") as caught:
        query_int(req("limit=ten"), "limit", default=1)
    assert (caught.value.parameter, caught.value.status) == ("limit", 400)
    with pytest.raises(ValidationError, match="limit must be <= 10") as caught:
        query_int(req("limit=11"), "limit", default=1, maximum=10)
    assert caught.value.parameter == "limit"
    with pytest.raises(ValidationError, match="depth must be >= 1"):
        query_int(req("depth=0"), "depth", default=5, minimum=1)
    with pytest.raises(ValidationError, match="depth is required") as caught:
        query_int(req(""), "depth", required=True)
    assert caught.value.code == "missing_parameter"


def test_float_is_finite() -> None:
    assert query_float(req("q=0.25"), "q", default=0.5) == 0.25
    with pytest.raises(ValidationError, match="q must be finite"):
        query_float(req("q=nan"), "q", default=0.5)
    with pytest.raises(ValidationError, match="q must be a number"):
        query_float(req("q=half"), "q", default=0.5)


@pytest.mark.parametrize(
    "text",
    [
        "2013-10-07T09:30:00.123456-04:00",
        "2013-10-07T13:30:00.123456Z",
        "2013-10-07T13:30:00.123456+00:00",
    ],
)
def test_iso_timestamp_equals_numpy_datetime64(text: str) -> None:
    expected = int(np.datetime64("2013-10-07T13:30:00.123456", "ns").astype(np.int64))
    assert query_time_ns(req(f"from={text.replace('+', '%2B')}"), "from") == expected


def test_ns_timestamp_and_refusals() -> None:
    assert query_time_ns(req("to=1381152600123456789"), "to") == 1381152600123456789
    with pytest.raises(ValidationError, match="needs a UTC offset") as caught:
        query_time_ns(req("to=2013-10-07T09:30:00"), "to")
    assert caught.value.parameter == "to"
    with pytest.raises(ValidationError, match="ns since the epoch or ISO-8601"):
        query_time_ns(req("to=yesterday"), "to")


def test_symbol_and_enum() -> None:
    assert query_symbol(req("symbol=BTCUSDT")) == "BTCUSDT"
    with pytest.raises(ValidationError, match="symbol must be 1-40") as caught:
        query_symbol(req("symbol=SPY.X"))
    assert caught.value.parameter == "symbol"
    assert query_enum(req("side=sell"), "side", Side) is Side.SELL
    with pytest.raises(ValidationError, match="side must be one of buy, sell"):
        query_enum(req("side=short"), "side", Side)

"""The shared instrument table: the bundled grids, an unknown symbol refused, a bad file named."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engines.shell.instruments import UnknownInstrument, load_instruments, on_grid


def test_bundled_table_has_the_replay_and_daily_symbols_on_their_grids() -> None:
    table = load_instruments()
    assert {"SPY", "AIG", "BAC", "AAPL", "QQQ", "BTCUSDT"} <= set(table)
    spy = table["SPY"]
    assert (spy.tick, spy.lot, spy.currency) == (Decimal("0.01"), Decimal(1), "USD")
    btc = table["BTCUSDT"]
    assert (btc.tick, btc.lot, btc.min_notional) == (Decimal("0.01"), Decimal("0.00001"), 5)


def test_unknown_symbol_is_refused_by_name() -> None:
    with pytest.raises(UnknownInstrument, match="'XYZ'"):
        load_instruments()["XYZ"]


def test_grid_check() -> None:
    assert on_grid(Decimal("168.93"), Decimal("0.01"))
    assert not on_grid(Decimal("168.935"), Decimal("0.01"))


def test_a_bad_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "instruments.json"
    path.write_text('{"instruments": [{"s": "X", "price_precision": "two"}]}')
    with pytest.raises(ValueError, match=r"price_precision"):
        load_instruments(path)

"""The instrument table engines share: what is traded, on which price and size grids.

Strategy, Risk and Portfolio must agree on every instrument's tick, lot, multiplier and currency,
so there is one table: the bundled ``engines/shell/data/instruments.json`` (US equities on a 0.01
tick and 1-share lots, BTCUSDT on Binance's grids), or a JSON file of the same shape an engine's
config names. An order or fill for a symbol outside the table is refused (``UnknownInstrument``),
never priced on a guessed grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Generic, TypeVar

import msgspec

from protocol.records import Instrument

__all__ = [
    "InstrumentTable",
    "PriceMemo",
    "UnknownInstrument",
    "load_instruments",
    "on_grid",
    "reference_volumes",
]


class UnknownInstrument(LookupError):
    def __init__(self, symbol: str) -> None:
        super().__init__(f"unknown instrument {symbol!r}")
        self.symbol = symbol


class _File(msgspec.Struct, forbid_unknown_fields=False):
    instruments: list[Instrument]


class _Volume(msgspec.Struct, forbid_unknown_fields=False):
    symbol: str = msgspec.field(name="s")
    adv: Annotated[float, msgspec.Meta(gt=0)] | None = None


class _Volumes(msgspec.Struct, forbid_unknown_fields=False):
    instruments: list[_Volume]


class InstrumentTable(Mapping[str, Instrument]):
    """Instruments by symbol; ``table[symbol]`` raises ``UnknownInstrument``."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self._by_symbol: dict[str, Instrument] = {}
        for instrument in instruments:
            if instrument.symbol in self._by_symbol:
                raise ValueError(f"instrument {instrument.symbol} listed twice")
            if instrument.tick <= 0 or instrument.lot <= 0 or instrument.multiplier <= 0:
                raise ValueError(
                    f"instrument {instrument.symbol}: tick, lot, multiplier must be > 0"
                )
            self._by_symbol[instrument.symbol] = instrument

    def __getitem__(self, symbol: str) -> Instrument:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise UnknownInstrument(symbol) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_symbol)

    def __len__(self) -> int:
        return len(self._by_symbol)


def _read(path: str | Path) -> bytes:
    if path:
        return Path(path).read_bytes()
    return resources.files("engines.shell").joinpath("data/instruments.json").read_bytes()


def load_instruments(path: str | Path = "") -> InstrumentTable:
    """The table in ``path`` (``""``: the bundled one). A malformed file raises ``ValueError``
    naming the field at fault."""
    raw = _read(path)
    try:
        parsed = msgspec.json.decode(raw, type=_File)
    except msgspec.ValidationError as exc:
        raise ValueError(f"instrument file {path or '(bundled)'}: {exc}") from None
    return InstrumentTable(parsed.instruments)


def on_grid(value: Decimal, step: Decimal) -> bool:
    """``value`` is a whole number of ``step``s."""
    return (value % step) == 0


def reference_volumes(path: str | Path = "") -> dict[str, float]:
    """Each instrument's reference average daily volume (``adv``, in size units), where the file
    gives one: reference data, fixed before any replay (the bundled file documents how each was
    computed). ``ValueError`` names the field at fault (``adv`` must be > 0)."""
    try:
        parsed = msgspec.json.decode(_read(path), type=_Volumes)
    except msgspec.ValidationError as exc:
        raise ValueError(f"instrument file {path or '(bundled)'}: {exc}") from None
    return {row.symbol: row.adv for row in parsed.instruments if row.adv is not None}


P = TypeVar("P")


class PriceMemo(Generic[P]):
    """What ``convert(symbol, price)`` made of each market-data float, remembered per symbol: a
    session's prices recur, so each is converted (to an exact price on the grid) once. At most
    ``bound`` prices a symbol, forgotten all at once when full."""

    __slots__ = ("_bound", "_by_symbol", "_convert")

    def __init__(self, convert: Callable[[str, float], P], bound: int) -> None:
        self._convert = convert
        self._bound = bound
        self._by_symbol: dict[str, dict[float, P]] = {}

    def __call__(self, symbol: str, price: float) -> P:
        seen = self._by_symbol.get(symbol)
        if seen is None:
            seen = self._by_symbol[symbol] = {}
        elif price in seen:
            return seen[price]
        elif len(seen) >= self._bound:
            seen.clear()
        made = seen[price] = self._convert(symbol, price)
        return made

    def __getitem__(self, symbol: str) -> Mapping[float, P]:
        """The prices of ``symbol`` remembered now."""
        return self._by_symbol[symbol]

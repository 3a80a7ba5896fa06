"""Session-anchored VWAP, the pure part: Σ price·size / Σ size since the session began.

A session starts at ``session_offset_ns`` after each UTC midnight (default 0: the UTC day); the
first trade of a new session resets the sums. Pure: no clock, no I/O — the trade's own time
decides the session, so a replay and a live run give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_NS = 86_400_000_000_000


@dataclass(frozen=True, slots=True)
class VwapValue:
    """The VWAP after one trade: its session (day number since the epoch), the value and the
    sums behind it, so a reader can check or re-aggregate it."""

    session: int
    vwap: float
    notional: float
    volume: float
    trades: int


class SessionVwap:
    """Running VWAP of one symbol; ``add`` is O(1)."""

    __slots__ = ("_notional", "_offset_ns", "_session", "_trades", "_volume")

    def __init__(self, session_offset_ns: int = 0) -> None:
        self._offset_ns = session_offset_ns
        self._session: int | None = None
        self._notional = 0.0
        self._volume = 0.0
        self._trades = 0

    def add(self, event_ns: int, price: float, size: float) -> VwapValue:
        """Fold one trade in; ``size`` must be positive (the caller's input rule)."""
        session = (event_ns - self._offset_ns) // DAY_NS
        if session != self._session:
            self._session, self._notional, self._volume, self._trades = session, 0.0, 0.0, 0
        self._notional += price * size
        self._volume += size
        self._trades += 1
        return VwapValue(
            session, self._notional / self._volume, self._notional, self._volume, self._trades
        )

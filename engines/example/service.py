"""The example engine: ``trades.*`` in, ``signals.vwap.<SYM>`` out, every value stored.

Everything an engine needs, and nothing more: a frozen config (``NAUTILUS_EXAMPLE_*``), one input
decoded to ``Trade`` by the shell (a payload that is not a trade is counted as bad input, never
crashes the engine), a rule of its own (a non-positive size is refused with ``BadInput``, counted
the same way), one published stream, one record store read by the REST history.

It is not in the platform's registry (the thirteen engines own the ports); tests run it exactly
as the registry would (``tests/engines/example``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engines.example.core import SessionVwap
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass, channel
from protocol.records import BadInput, Trade
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage


@dataclass(frozen=True, slots=True, kw_only=True)
class ExampleConfig(EngineConfig):
    name: str = field(default="example", metadata={"help": "engine name", "env": False})
    session_offset_ns: int = field(
        default=0, metadata=described("session start after UTC midnight, ns (VWAP resets there)")
    )


class VwapSignal(msgspec.Struct, frozen=True, kw_only=True):
    """One published value (``signals.vwap.<SYM>``), as stored and served."""

    symbol: str
    event_ns: int
    session: int
    vwap: float
    volume: float
    trades: int


class ExampleEngine(Engine[ExampleConfig]):
    config_type = ExampleConfig

    def __init__(
        self, config: ExampleConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.sessions: dict[str, SessionVwap] = {}
        self.values: RecordStore[VwapSignal] = self.storage.records(
            self.name, "vwap", VwapSignal, key=lambda v: v.symbol, time=lambda v: v.event_ns
        )

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {"trades.*": on(Trade, self.on_trade)}

    def streams(self) -> Sequence[StreamInfo]:
        return (StreamInfo("signals.vwap.*", DeliveryClass.LATEST_VALUE, "session VWAP"),)

    def health_extra(self) -> Mapping[str, object]:
        return {"symbols": len(self.sessions)}

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        if not trade.size > 0:
            raise BadInput("non_positive_size", f"size {trade.size} must be > 0", "q")
        session = self.sessions.get(trade.symbol)
        if session is None:
            session = self.sessions[trade.symbol] = SessionVwap(self.config.session_offset_ns)
        value = session.add(trade.event_ns, trade.price, trade.size)
        signal = VwapSignal(
            symbol=trade.symbol,
            event_ns=trade.event_ns,
            session=value.session,
            vwap=value.vwap,
            volume=value.volume,
            trades=value.trades,
        )
        published = await self.publish(
            channel("signals", "vwap", trade.symbol), msgspec.to_builtins(signal),
            event_ns=trade.event_ns,
        )  # fmt: skip
        self.values.append([signal], seqs=[published.seq])

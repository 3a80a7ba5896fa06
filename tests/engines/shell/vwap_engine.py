"""A small engine for the shell's tests: running VWAP of ``trades.*`` onto ``signals.vwap.SYM``.

Knobs a test can turn through the input itself: a trade without ``price`` raises (a counted
error), ``{"hang": true}`` blocks its handler forever (bounded stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import falcon.asgi

from engines.shell import (
    Engine,
    EngineConfig,
    NotFoundError,
    Route,
    StreamInfo,
)
from engines.shell.lifecycle import Input, on
from engines.shell.params import query_int, query_time_ns
from protocol.channels import DeliveryClass
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.storage import Storage


@dataclass(frozen=True, slots=True, kw_only=True)
class VwapConfig(EngineConfig):
    name: str = field(default="vwap", metadata={"help": "engine name", "env": False})
    symbols_limit: int = field(default=100, metadata={"help": "most symbols tracked"})
    fail_on_start: bool = field(default=False, metadata={"help": "raise in on_start (tests)"})
    http_hang_s: float = field(default=0.0, metadata={"help": "seconds /slow sleeps (tests)"})


class VwapEngine(Engine[VwapConfig]):
    config_type = VwapConfig

    def __init__(
        self, config: VwapConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.notional: dict[str, float] = {}
        self.volume: dict[str, float] = {}
        self.handled = 0
        self.state_seen_in_on_start: str | None = None
        self.stopped_cleanly = False

    def inputs(self) -> Mapping[str, Input[dict[str, object]]]:
        return {"trades.*": on(dict, self.on_trade)}

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo("signals.vwap.*", DeliveryClass.LATEST_VALUE, "running VWAP per symbol"),
        )

    def health_extra(self) -> Mapping[str, object]:
        return {"symbols": len(self.volume)}

    async def on_start(self) -> None:
        self.state_seen_in_on_start = self.state.value
        if self.config.fail_on_start:
            raise RuntimeError("cannot open the (pretend) store")

    async def on_trade(self, payload: dict[str, object], envelope: Envelope) -> None:
        if payload.get("hang"):
            await asyncio.Event().wait()
        symbol = envelope.channel.split(".", 1)[1]
        price, size = float(payload["price"]), float(payload["size"])  # type: ignore[arg-type]
        self.notional[symbol] = self.notional.get(symbol, 0.0) + price * size
        self.volume[symbol] = self.volume.get(symbol, 0.0) + size
        self.handled += 1
        vwap = self.notional[symbol] / self.volume[symbol]
        await self.publish(f"signals.vwap.{symbol}", {"vwap": vwap}, event_ns=envelope.event_ns)

    async def on_stop(self) -> None:
        self.stopped_cleanly = True


def routes(engine: VwapEngine) -> Sequence[Route]:
    return (
        ("/vwap/{symbol}", VwapResource(engine)),
        ("/boom", BoomResource()),
        ("/slow", SlowResource(engine.config.http_hang_s)),
    )


class VwapResource:
    def __init__(self, engine: VwapEngine) -> None:
        self._engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        decimals = query_int(req, "decimals", default=6, minimum=0, maximum=12)
        as_of = query_time_ns(req, "as_of")
        volume = self._engine.volume.get(symbol)
        if volume is None:
            raise NotFoundError(f"no trades seen for {symbol}", parameter="symbol")
        vwap = self._engine.notional[symbol] / volume
        resp.media = {"symbol": symbol, "vwap": round(vwap, decimals), "as_of": as_of}


class BoomResource:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raise RuntimeError("secret internals: password=hunter2")


class SlowResource:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await asyncio.sleep(self._seconds)
        resp.media = {"slept": self._seconds}

"""VPIN engine (port 10000): ``trades.*`` in, one ``vpin.SYM`` message per completed bucket out.

Per symbol a ``VpinCalculator`` (engines.vpin.core) is fed every ``protocol.records.Trade``; each
completed bucket is published (latest-value channel) with the parameters in force and the input
counts, and appended to the engine's record store (the platform's storage), which the history
endpoint reads. A payload that is not a trade is counted by the shell (``bad_input``); a trade
breaking one of VPIN's documented rules (size or price not positive, late) by the calculator
(``inputs``). The JAX batch classifier is compiled in ``on_start`` (off the loop), so no request
ever waits for a compile.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from prometheus_client import Counter

from engines.shell import Engine, StreamInfo
from engines.shell.lifecycle import Input, on
from engines.vpin import core
from engines.vpin.config import VpinConfig
from protocol.channels import DeliveryClass
from protocol.records import Trade
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.storage import RecordStore, Storage

#: A published bucket: ``{"symbol", **VpinBucket.to_payload(), "params", "inputs"}``.
BucketPayload = dict[str, Any]


class VpinEngine(Engine[VpinConfig]):
    """One ``VpinCalculator`` per symbol; bucket results on ``vpin.SYM`` and in the store."""

    config_type = VpinConfig

    def __init__(
        self, config: VpinConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        #: the parameters every bucket is published with (the config is frozen: built once)
        self.params_payload = self.config.params().to_payload()
        self.calculators: dict[str, core.VpinCalculator] = {}
        self.buckets: RecordStore[BucketPayload] = self.storage.records(
            self.name, "vpin", dict, key=itemgetter("symbol"), time=itemgetter("end_ns")
        )
        self.rejected = Counter(
            "nautilus_vpin_rejected_trades",
            "trades refused by a documented bad-input rule",
            ["reason"],
            registry=self.metrics.registry,
        )
        self.buckets_total = Counter(
            "nautilus_vpin_buckets",
            "completed volume buckets published",
            registry=self.metrics.registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {"trades.*": on(Trade, self.on_trade)}

    def streams(self) -> list[StreamInfo]:
        return [
            StreamInfo(
                "vpin.*", DeliveryClass.LATEST_VALUE, "VPIN per completed volume bucket (ELO 2012)"
            )
        ]

    def health_extra(self) -> Mapping[str, object]:
        return {
            "symbols": len(self.calculators),
            "inputs": {s: c.counts.to_payload() for s, c in self.calculators.items()},
        }

    async def on_start(self) -> None:
        await self.run_in_executor(
            core.warm_up, self.config.warmup_bars, self.config.warmup_symbols
        )

    # ── per message ────────────────────────────────────────────────────────────────────────

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        calc = self.calculators.get(trade.symbol)
        if calc is None:
            calc = self.calculators[trade.symbol] = core.VpinCalculator(self.config.params())
        before = calc.counts.to_payload()
        buckets = calc.add_trade(trade.event_ns, trade.price, trade.size)
        for reason, refused in core.rejections(before, calc.counts.to_payload()).items():
            self.rejected.labels(reason).inc(refused)
        for bucket in buckets:
            payload = {
                "symbol": trade.symbol,
                **bucket.to_payload(),
                "params": self.params_payload,
                "inputs": calc.counts.to_payload(),
            }
            published = await self.publish(
                f"vpin.{trade.symbol}", payload, event_ns=envelope.event_ns
            )
            self.buckets.append([payload], seqs=[published.seq])
            self.buckets_total.inc()

    # ── batch (REST) ───────────────────────────────────────────────────────────────────────

    def batch_compute(
        self, columns: tuple[Any, Any, Any, Any], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """Batch mode over posted or stored trades (runs on the compute threads)."""
        event_ns, price, size, _ = columns
        params = core.VpinParams.from_payload(overrides, self.config.params())
        return {
            "params": params.to_payload(),
            **series_payload(core.compute_vpin(event_ns, price, size, params)),
        }

    def batch_compute_many(
        self, columns_by_symbol: Mapping[str, tuple[Any, Any, Any, Any]], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """Batch mode for many symbols at once, same parameters for all (compute threads):
        ``{"params", "symbols": {SYM: {"inputs", "buckets"}}}``."""
        params = core.VpinParams.from_payload(overrides, self.config.params())
        trades = {symbol: (t, p, q) for symbol, (t, p, q, _) in columns_by_symbol.items()}
        many = core.compute_vpin_many(trades, params)
        return {
            "params": params.to_payload(),
            "symbols": {symbol: series_payload(series) for symbol, series in many.items()},
        }


def series_payload(series: core.BucketSeries) -> dict[str, Any]:
    """The REST answer's per-symbol part: input counts and every bucket."""
    return {
        "inputs": series.counts.to_payload(),
        "buckets": [series.bucket(i).to_payload() for i in range(len(series))],
    }

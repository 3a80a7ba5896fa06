"""VPIN engine (port 10000): ``trades.*`` in, one ``vpin.SYM`` message per completed bucket out.

Per symbol a ``VpinCalculator`` (engines.vpin.core) is fed every ``protocol.records.Trade``; each
completed bucket is published (latest-value channel) with the parameters in force for that symbol
and the input counts, and appended to the engine's record store (the platform's storage), which
the history endpoint reads. The bucket volume V is per symbol (``VpinConfig.bucket_volume_rule``:
the ``bucket_volumes`` table, the ``bucket_volume`` setting, the instrument table's reference ADV
/ 50); a symbol with none of these is probed: its trades are held for its first
``adv_probe_bars`` bars, V is fixed from their volume rate (``core.BucketVolumeProbe``), and the
held trades are then bucketed in order, so the numbers are those of a calculator that knew V from
the start (and of batch mode, which applies the same probe to the posted trades). A payload that
is not a trade is counted by the shell (``bad_input``); a trade breaking one of VPIN's documented
rules (size or price not positive, late) by the calculator (``inputs``).

The JAX batch classifier (``POST /vpin/batch``) is compiled on a compute thread in the background
from ``on_start`` on (``warmup_bars`` × ``warmup_symbols`` shapes: 35 compiles, ~6 s on an idle
core and 40 s or more on a busy one, measured): the realtime path does not use JAX, and the feeds
start after every consumer is running, so a blocking compile delayed the first trade of the whole
platform by that much. ``/health`` says ``batch_compiled`` once done; a batch request before then
compiles the shape it needs itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from prometheus_client import Counter

from engines.shell import Engine, StreamInfo
from engines.shell.lifecycle import Input, on
from engines.vpin import core
from engines.vpin.config import (
    BucketVolumeSource,
    VpinConfig,
    batch_params,
    common_payload,
    params_payload,
)
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
        self.bucket_volumes = config.bucket_volume_rule()
        self.calculators: dict[str, core.VpinCalculator] = {}
        self.batch_compiled = False
        self._stopping = threading.Event()
        #: the parameters each symbol's buckets are published with (built once per symbol)
        self.params_payloads: dict[str, dict[str, Any]] = {}
        #: symbols whose V is still being probed: the probe and the trades held meanwhile
        self.probing: dict[str, tuple[core.BucketVolumeProbe, list[Trade]]] = {}
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
            "batch_compiled": self.batch_compiled,
            "inputs": {s: c.counts.to_payload() for s, c in self.calculators.items()},
            "bucket_volume": {s: c.params.bucket_volume for s, c in self.calculators.items()},
            "probing": {s: len(held) for s, (_, held) in self.probing.items()},
        }

    async def on_start(self) -> None:
        self.spawn(self._compile_batch, name="batch compile")

    async def _compile_batch(self) -> None:
        config = self.config
        self.batch_compiled = await self.run_in_executor(
            core.warm_up, config.warmup_bars, config.warmup_symbols, self._stopping.is_set
        )

    async def on_stop(self) -> None:
        self._stopping.set()  # the background compile ends after its current shape

    # ── per message ────────────────────────────────────────────────────────────────────────

    def calculator(self, trade: Trade) -> tuple[core.VpinCalculator | None, list[Trade]]:
        """The symbol's calculator and the trades to feed it (this one, after any held ones);
        ``(None, [])`` while the symbol's V is being probed (the trade is held)."""
        symbol = trade.symbol
        calc = self.calculators.get(symbol)
        if calc is not None:
            return calc, [trade]
        resolved = self.bucket_volumes.resolve(symbol)
        held: list[Trade] = []
        if resolved is None:
            probe, held = self.probing.setdefault(
                symbol,
                (core.BucketVolumeProbe(self.config.params(1.0), self.config.adv_probe_bars), []),
            )
            volume = probe.add(trade.event_ns, trade.price, trade.size)
            if volume is None:
                held.append(trade)
                return None, []
            del self.probing[symbol]
            resolved = volume, BucketVolumeSource.PROBE
        params = self.config.params(resolved[0])
        self.params_payloads[symbol] = params_payload(params, resolved[1])
        calc = self.calculators[symbol] = core.VpinCalculator(params)
        return calc, [*held, trade]

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        calc, trades = self.calculator(trade)
        if calc is None:
            return
        for each in trades:
            await self._add(calc, each, envelope)

    async def _add(self, calc: core.VpinCalculator, trade: Trade, envelope: Envelope) -> None:
        before = calc.counts.to_payload()
        buckets = calc.add_trade(trade.event_ns, trade.price, trade.size)
        for reason, refused in core.rejections(before, calc.counts.to_payload()).items():
            self.rejected.labels(reason).inc(refused)
        for bucket in buckets:
            payload = {
                "symbol": trade.symbol,
                **bucket.to_payload(),
                "params": self.params_payloads[trade.symbol],
                "inputs": calc.counts.to_payload(),
            }
            published = await self.publish(
                f"vpin.{trade.symbol}", payload, event_ns=envelope.event_ns
            )
            self.buckets.append([payload], seqs=[published.seq])
            self.buckets_total.inc()

    # ── batch (REST) ───────────────────────────────────────────────────────────────────────

    def batch_params(
        self, symbol: str | None, columns: tuple[Any, Any, Any, Any], overrides: dict[str, Any]
    ) -> tuple[core.VpinParams | None, dict[str, Any]]:
        """The parameters a batch over ``columns`` runs with and their published form: the
        request's overrides over the engine's, V from the request, else the symbol's V (the
        realtime rule, the probe applied to ``columns``). ``None`` when a probe does not end
        within the trades (realtime would not have cut a bucket either)."""
        return batch_params(self.config, self.bucket_volumes, symbol, columns, overrides)

    def batch_compute(
        self,
        columns: tuple[Any, Any, Any, Any],
        overrides: dict[str, Any],
        symbol: str | None = None,
    ) -> dict[str, Any]:
        """Batch mode over posted or stored trades (runs on the compute threads)."""
        event_ns, price, size, _ = columns
        params, payload = self.batch_params(symbol, columns, overrides)
        if params is None:
            _, counts = core.accepted_bars(event_ns, price, size, self.config.params(1.0))
            return {"params": payload, "inputs": counts.to_payload(), "buckets": []}
        return {
            "params": payload,
            **series_payload(core.compute_vpin(event_ns, price, size, params)),
        }

    def batch_compute_many(
        self, columns_by_symbol: Mapping[str, tuple[Any, Any, Any, Any]], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """Batch mode for many symbols at once (compute threads): ``{"params", "symbols": {SYM:
        {"params", "inputs", "buckets"}}}``; symbols with the same parameters share one
        vectorized call. The top-level ``params`` are those common to all symbols
        (``bucket_volume`` null when the symbols' V differ)."""
        groups: dict[core.VpinParams, dict[str, tuple[Any, Any, Any]]] = {}
        payloads: dict[str, dict[str, Any]] = {}
        answers: dict[str, dict[str, Any]] = {}
        for symbol, columns in columns_by_symbol.items():
            params, payloads[symbol] = self.batch_params(symbol, columns, dict(overrides))
            if params is None:
                answers[symbol] = self.batch_compute(columns, dict(overrides), symbol)
            else:
                groups.setdefault(params, {})[symbol] = columns[:3]
        for params, trades in groups.items():
            for symbol, series in core.compute_vpin_many(trades, params).items():
                answers[symbol] = {"params": payloads[symbol], **series_payload(series)}
        return {
            "params": common_payload(list(payloads.values())),
            "symbols": {symbol: answers[symbol] for symbol in columns_by_symbol},
        }


def series_payload(series: core.BucketSeries) -> dict[str, Any]:
    """The REST answer's per-symbol part: input counts and every bucket."""
    return {
        "inputs": series.counts.to_payload(),
        "buckets": [series.bucket(i).to_payload() for i in range(len(series))],
    }

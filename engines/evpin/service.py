"""Enhanced VPIN engine (port 10001): ``trades.*`` and ``quotes.*`` in, ``evpin.SYM`` out.

An engine of its own (composed, not a subclass of VPIN's): an ``EnhancedVpinCalculator`` per
symbol, which holds VPIN's bar and bucket stepping (engines.vpin.core); quotes feed Lee–Ready and
the order-flow imbalance, the trade's aggressor flag (``a``) feeds the aggressor classifier. It
shares VPIN's settings (engines.vpin.config) and batch endpoint (engines.vpin.batch), and VPIN's
per-symbol bucket volume rule (``VpinConfig.bucket_volume_rule``, the probe of a symbol without a
V held the same way: its trades and quotes are kept in arrival order until the probe ends, then
replayed through the new calculator). V is the first day's size; from the second session day on
the trailing ADV (``adv_days``) replaces it, as before.
Trades and quotes arrive on two bus subscriptions, so their relative
order is the order their batches are handled in (each stream's own order is kept).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from prometheus_client import Counter

from engines.evpin import core
from engines.shell import Engine, StreamInfo
from engines.shell.lifecycle import Input, on
from engines.vpin import core as vpin_core
from engines.vpin.config import BucketVolumeSource, VpinConfig, batch_params, common_payload
from engines.vpin.core import VpinParams
from protocol.channels import DeliveryClass
from protocol.records import Quote, Trade
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage

#: A published bucket: ``{"symbol", **EnhancedBucket.to_payload(), "params", "inputs"}``.
BucketPayload = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnhancedVpinConfig(VpinConfig):
    name: str = field(default="evpin", metadata={"help": "engine name", "env": False})
    adv_days: int = field(
        default=5, metadata=described("V = trailing ADV of that many days / buckets_per_day")
    )
    t_df: float = field(default=4.0, metadata=described("Student-t ν for BVC-t (first day)"))
    fit_t_df: bool = field(default=True, metadata=described("refit ν daily on the previous day"))
    band_z: float = field(default=1.96, metadata=described("band half-width, standard errors"))

    def enhanced(self, bucket_volume: float | None = None) -> core.EnhancedParams:
        """The parameters in force with V = ``bucket_volume`` (``VpinConfig.params``)."""
        return core.EnhancedParams(
            base=self.params(bucket_volume),
            t_df=self.t_df,
            fit_t_df=self.fit_t_df,
            band_z=self.band_z,
        )


#: What a probing symbol holds until its V is known: trades and quotes in arrival order.
Held = list[Trade | Quote]


class EnhancedVpinEngine(Engine[EnhancedVpinConfig]):
    """One ``EnhancedVpinCalculator`` per symbol; results on ``evpin.SYM`` and in the store."""

    config_type = EnhancedVpinConfig

    def __init__(
        self,
        config: EnhancedVpinConfig,
        *,
        bus: Bus,
        clock: Clock,
        storage: Storage | None = None,
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.bucket_volumes = config.bucket_volume_rule()
        self.calculators: dict[str, core.EnhancedVpinCalculator] = {}
        self.batch_compiled = False
        self._stopping = threading.Event()
        #: the parameters each symbol's buckets are published with (built once per symbol)
        self.params_payloads: dict[str, dict[str, Any]] = {}
        #: symbols whose V is still being probed: the probe and the events held meanwhile
        self.probing: dict[str, tuple[vpin_core.BucketVolumeProbe, Held]] = {}
        self.buckets: RecordStore[BucketPayload] = self.storage.records(
            self.name, "evpin", dict, key=itemgetter("symbol"), time=itemgetter("end_ns")
        )
        self._reports: dict[tuple[int, int, int], Any] = {}
        self.rejected = Counter(
            "nautilus_evpin_rejected_trades",
            "trades refused by a documented bad-input rule",
            ["reason"],
            registry=self.metrics.registry,
        )
        self.buckets_total = Counter(
            "nautilus_evpin_buckets",
            "completed volume buckets published",
            registry=self.metrics.registry,
        )

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {"trades.*": on(Trade, self.on_trade), "quotes.*": on(Quote, self.on_quote)}

    def streams(self) -> list[StreamInfo]:
        return [
            StreamInfo(
                "evpin.*",
                DeliveryClass.LATEST_VALUE,
                "VPIN per classifier, signed VPIN, band and OFI per completed bucket",
            ),
        ]

    def health_extra(self) -> Mapping[str, object]:
        return {
            "symbols": len(self.calculators),
            "batch_compiled": self.batch_compiled,
            "inputs": {s: c.counts.to_payload() for s, c in self.calculators.items()},
            "bucket_volume": {s: c.params.base.bucket_volume for s, c in self.calculators.items()},
            "probing": {s: len(held) for s, (_, held) in self.probing.items()},
        }

    async def on_start(self) -> None:
        self.spawn(self._compile_batch, name="batch compile")

    async def _compile_batch(self) -> None:
        """In the background, as VPIN's (engines.vpin.service): the stream does not wait."""
        self.batch_compiled = await self.run_in_executor(
            vpin_core.warm_up, self.config.warmup_bars, 0, self._stopping.is_set
        )

    async def on_stop(self) -> None:
        self._stopping.set()

    def calculator(self, event: Trade | Quote) -> tuple[core.EnhancedVpinCalculator | None, Held]:
        """The symbol's calculator and the events to feed it (this one, after any held ones);
        ``(None, [])`` while the symbol's V is being probed (the event is held)."""
        symbol = event.symbol
        calc = self.calculators.get(symbol)
        if calc is not None:
            return calc, [event]
        resolved = self.bucket_volumes.resolve(symbol)
        held: Held = []
        if resolved is None:
            probe, held = self.probing.setdefault(
                symbol,
                (
                    vpin_core.BucketVolumeProbe(
                        self.config.params(1.0), self.config.adv_probe_bars
                    ),
                    [],
                ),
            )
            volume = (
                probe.add(event.event_ns, event.price, event.size)
                if isinstance(event, Trade)
                else None
            )
            if volume is None:
                held.append(event)
                return None, []
            del self.probing[symbol]
            resolved = volume, BucketVolumeSource.PROBE
        params = self.config.enhanced(resolved[0])
        self.params_payloads[symbol] = {
            **params.to_payload(),
            "bucket_volume_source": resolved[1].value,
        }
        calc = self.calculators[symbol] = core.EnhancedVpinCalculator(params)
        return calc, [*held, event]

    async def on_quote(self, quote: Quote, envelope: Envelope) -> None:
        await self.on_event(quote, envelope)

    async def on_trade(self, trade: Trade, envelope: Envelope) -> None:
        await self.on_event(trade, envelope)

    async def on_event(self, event: Trade | Quote, envelope: Envelope) -> None:
        calc, events = self.calculator(event)
        if calc is None:
            return
        for each in events:
            if isinstance(each, Quote):
                calc.add_quote(each.bid, each.bid_size, each.ask, each.ask_size)
            else:
                await self._add_trade(calc, each, envelope)

    async def _add_trade(
        self, calc: core.EnhancedVpinCalculator, trade: Trade, envelope: Envelope
    ) -> None:
        before = calc.counts.to_payload()
        buckets = calc.add_trade(trade.event_ns, trade.price, trade.size, trade.aggressor_sign)
        after = calc.counts.to_payload()
        for reason, refused in vpin_core.rejections(before, after).items():
            self.rejected.labels(reason).inc(refused)
        for bucket in buckets:
            payload = {
                "symbol": trade.symbol,
                **bucket.to_payload(),
                "params": self.params_payloads[trade.symbol],
                "inputs": after,
            }
            published = await self.publish(
                f"evpin.{trade.symbol}", payload, event_ns=envelope.event_ns
            )
            self.buckets.append([payload], seqs=[published.seq])
            self.buckets_total.inc()

    # ── batch (REST) ───────────────────────────────────────────────────────────────────────

    def batch_compute(
        self,
        columns: tuple[Any, Any, Any, Any],
        overrides: dict[str, Any],
        symbol: str | None = None,
    ) -> dict[str, Any]:
        """Batch mode over posted or stored trades, V as VPIN's batch picks it (the symbol's,
        the request's, or the probe over the trades)."""
        event_ns, price, size, aggressor = columns
        extra = {k: overrides.pop(k) for k in ("t_df", "fit_t_df", "band_z") if k in overrides}
        base, payload = batch_params(self.config, self.bucket_volumes, symbol, columns, overrides)
        defaults = self.config.enhanced(1.0)
        params = core.EnhancedParams(
            base=base or VpinParams.from_payload(overrides, self.config.params(1.0)),
            t_df=float(extra.get("t_df", defaults.t_df)),
            fit_t_df=bool(extra.get("fit_t_df", defaults.fit_t_df)),
            band_z=float(extra.get("band_z", defaults.band_z)),
        )
        published = {
            **params.to_payload(),
            "bucket_volume": payload["bucket_volume"],
            "bucket_volume_source": payload["bucket_volume_source"],
        }
        if base is None:  # the probe did not end within the trades: no bucket, as realtime
            _, counts = vpin_core.accepted_bars(event_ns, price, size, params.base)
            return {"params": published, "inputs": counts.to_payload(), "buckets": []}
        buckets, counts = core.run_enhanced(event_ns, price, size, params, aggressor)
        return {
            "params": published,
            "inputs": counts.to_payload(),
            "buckets": [b.to_payload() for b in buckets],
        }

    def batch_compute_many(
        self, columns_by_symbol: Mapping[str, tuple[Any, Any, Any, Any]], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """Per symbol (Enhanced VPIN's classifiers are not vectorized across symbols); the
        top-level ``params`` are those common to all symbols."""
        answers = {
            symbol: self.batch_compute(columns, dict(overrides), symbol)
            for symbol, columns in columns_by_symbol.items()
        }
        return {
            "params": common_payload([answer["params"] for answer in answers.values()]),
            "symbols": answers,
        }

    # ── accuracy report (REST) ─────────────────────────────────────────────────────────────

    def spy_bucket_volume(self) -> float:
        """SPY's V for the report's SPY part: the engine's rule for SPY, else ELO's default."""
        resolved = self.bucket_volumes.resolve("SPY")
        return resolved[0] if resolved is not None else VpinParams().bucket_volume

    async def accuracy_report(self, bar_ms: int, quote_lag_ms: int, spy_days: int) -> Any:
        key = (bar_ms, quote_lag_ms, spy_days)
        if key not in self._reports:
            self._reports[key] = await self.run_in_executor(
                accuracy_report, self.config.enhanced(self.spy_bucket_volume()), *key
            )
        return self._reports[key]


def accuracy_report(
    params: core.EnhancedParams, bar_ms: int, quote_lag_ms: int, spy_days: int
) -> dict[str, Any]:
    """Classifier accuracy on the bundled Binance file; VPIN per classifier on SPY buckets."""
    from dataclasses import replace

    import numpy as np

    from engines.marketdata import feeds
    from engines.marketdata.records import Quote

    events = list(feeds.read_binance_feed())
    trades = feeds.binance_trade_columns(events)
    quotes = [e for e in events if isinstance(e, Quote)]
    quote_columns = (
        np.array([q.receive_ns for q in quotes], dtype=np.int64),
        np.array([q.bid for q in quotes]),
        np.array([q.ask for q in quotes]),
    )
    binance_params = replace(params, base=replace(params.base, bar_ns=bar_ms * 1_000_000))
    accuracy = core.classifier_accuracy(
        trades.receive_ns,
        trades.price,
        trades.size,
        trades.aggressor,
        quote_columns,
        binance_params,
        quote_lag_ns=quote_lag_ms * 1_000_000,
    )
    spy: dict[str, Any] = {"days": spy_days, "buckets": 0, "vpin": {}}
    if spy_days:
        days = [feeds.read_lean_trade_ticks(feeds.lean_tick_path(d)) for d in feeds.lean_days()]
        days = days[:spy_days]
        buckets, _ = core.run_enhanced(
            np.concatenate([d.event_ns for d in days]),
            np.concatenate([d.price for d in days]),
            np.concatenate([d.size for d in days]),
            params,
        )
        spy["buckets"] = len(buckets)
        for c in ("bvc_normal", "bvc_t", "tick"):
            values = [v for b in buckets if (v := b.vpin[c]) is not None]
            spy["vpin"][c] = {
                "mean": float(np.mean(values)) if values else None,
                "last": values[-1] if values else None,
            }
    return {
        "binance": {
            "trades": len(trades),
            "bar_ms": bar_ms,
            "quote_lag_ms": quote_lag_ms,
            "classifiers": [a.to_payload() for a in accuracy],
        },
        "spy": spy,
    }

"""Enhanced VPIN engine (port 10001): ``trades.*`` and ``quotes.*`` in, ``evpin.SYM`` out.

The VPIN engine's wiring (engines.vpin.service) with an ``EnhancedVpinCalculator`` per symbol:
quotes feed Lee–Ready and the order-flow imbalance, the trade's aggressor flag (``a``) feeds the
aggressor classifier. Trades and quotes arrive on two bus subscriptions, so their relative
order is the order their batches are handled in (each stream's own order is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engines.evpin import core
from engines.shell import Route, StreamInfo
from engines.vpin.core import VpinParams
from engines.vpin.service import BadTrade, VpinConfig, VpinEngine
from protocol.channels import DeliveryClass
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import SignalRow


@dataclass(frozen=True, slots=True, kw_only=True)
class EnhancedVpinConfig(VpinConfig):
    name: str = field(default="evpin", metadata={"help": "engine name", "env": False})
    adv_days: int = field(
        default=5, metadata=described("V = trailing ADV of that many days / buckets_per_day")
    )
    t_df: float = field(default=4.0, metadata=described("Student-t ν for BVC-t (first day)"))
    fit_t_df: bool = field(default=True, metadata=described("refit ν daily on the previous day"))
    band_z: float = field(default=1.96, metadata=described("band half-width, standard errors"))

    def enhanced(self) -> core.EnhancedParams:
        return core.EnhancedParams(
            base=self.params(), t_df=self.t_df, fit_t_df=self.fit_t_df, band_z=self.band_z
        )


class EnhancedVpinEngine(VpinEngine):
    config_type = EnhancedVpinConfig
    channel_kind = "evpin"

    def __init__(self, config: VpinConfig, *, bus: Bus, clock: Clock) -> None:
        super().__init__(config, bus=bus, clock=clock)
        self._reports: dict[tuple[int, int, int], Any] = {}

    @property
    def enhanced_config(self) -> EnhancedVpinConfig:
        assert isinstance(self.config, EnhancedVpinConfig)
        return self.config

    def inputs(self) -> Sequence[str]:
        return ("trades.*", "quotes.*")

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo(
                "evpin.*",
                DeliveryClass.LATEST_VALUE,
                "VPIN per classifier, signed VPIN, band and OFI per completed bucket",
            ),
        )

    def resources(self) -> Sequence[Route]:
        from engines.evpin import api

        return api.routes(self)

    def new_calculator(self) -> Any:
        return core.EnhancedVpinCalculator(self.enhanced_config.enhanced())

    def params_payload(self) -> dict[str, Any]:
        return self.enhanced_config.enhanced().to_payload()

    def add_trade(self, calc: Any, event_ns: int, price: float, size: float, side: int) -> Any:
        return calc.add_trade(event_ns, price, size, side)

    async def consume(self, envelope: Envelope) -> list[SignalRow]:
        if not envelope.channel.startswith("quotes."):
            return await super().consume(envelope)
        payload = envelope.payload
        try:
            symbol = str(payload["s"])
            quote = tuple(float(payload[k]) for k in ("b", "bq", "k", "kq"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadTrade(f"not a quote payload: {exc!r}") from None
        calc = self.calculators.get(symbol)
        if calc is None:
            calc = self.calculators[symbol] = self.new_calculator()
        calc.add_quote(*quote)
        return []

    def batch_compute(
        self, columns: tuple[Any, Any, Any, Any], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        event_ns, price, size, aggressor = columns
        extra = {k: overrides.pop(k) for k in ("t_df", "fit_t_df", "band_z") if k in overrides}
        base = VpinParams.from_payload(overrides, self.config.params())
        defaults = self.enhanced_config.enhanced()
        params = core.EnhancedParams(
            base=base,
            t_df=float(extra.get("t_df", defaults.t_df)),
            fit_t_df=bool(extra.get("fit_t_df", defaults.fit_t_df)),
            band_z=float(extra.get("band_z", defaults.band_z)),
        )
        buckets, counts = core.run_enhanced(event_ns, price, size, params, aggressor)
        return {
            "params": params.to_payload(),
            "inputs": counts.to_payload(),
            "buckets": [b.to_payload() for b in buckets],
        }

    # ── accuracy report (REST) ─────────────────────────────────────────────────────────────

    async def accuracy_report(self, bar_ms: int, quote_lag_ms: int, spy_days: int) -> Any:
        key = (bar_ms, quote_lag_ms, spy_days)
        if key not in self._reports:
            self._reports[key] = await self.run_in_executor(
                accuracy_report, self.enhanced_config.enhanced(), *key
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

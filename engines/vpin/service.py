"""VPIN engine (port 10000): ``trades.*`` in, one ``vpin.SYM`` message per completed bucket out.

Per symbol a ``VpinCalculator`` (engines.vpin.core) is fed every trade payload
(``{"s","t","p","q",...}``, engines.marketdata.records); each completed bucket is published
(latest-value channel) with the parameters in force and the input counts, and written to the
store's signals table (PostgreSQL when ``dsn`` is set, else a bounded memory store), which the
history endpoint reads. The JAX batch classifier is compiled in ``on_start`` (off the loop), so
no request ever waits for a compile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from engines.shell import Engine, EngineConfig, Route, StreamInfo
from engines.vpin import core
from protocol.channels import DeliveryClass
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import (
    DEFAULT_SCHEMA,
    MemoryStore,
    PostgresConfig,
    PostgresStore,
    SignalRow,
    Store,
    migrate,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VpinConfig(EngineConfig):
    """Defaults follow ELO (2012): 1-minute bars, 50 buckets a day, a 50-bucket window."""

    name: str = field(default="vpin", metadata={"help": "engine name", "env": False})
    bar_ns: int = field(default=60_000_000_000, metadata=described("time bar length, ns"))
    bucket_volume: float = field(
        default=2_514_583.0,
        metadata=described("V, shares per bucket (default: SPY Oct 2013 regular-hours ADV / 50)"),
    )
    window: int = field(default=50, metadata=described("n, buckets per VPIN value"))
    sigma_decay: float = field(default=0.94, metadata=described("EWMA λ of the bar ΔP variance"))
    sigma_seed: float = field(
        default=0.0, metadata=described("σ_ΔP before any bar (0 = sign rule)")
    )
    adv_days: int = field(
        default=0, metadata=described("> 0: V = trailing ADV of that many days / buckets_per_day")
    )
    buckets_per_day: int = field(default=50, metadata=described("buckets per day for the ADV rule"))
    day_offset_ns: int = field(
        default=0, metadata=described("shift of UTC midnight to the day cut")
    )
    cdf_window: int = field(default=1_000, metadata=described("VPIN values in the trailing CDF"))
    cdf_kind: core.CdfKind = field(
        default=core.CdfKind.LOGNORMAL, metadata=described("CDF the alert uses")
    )
    alert_threshold: float = field(default=0.9, metadata=described("alert when CDF >= this"))
    dsn: str = field(
        default="", metadata=described("PostgreSQL DSN ('' = bounded in-memory store)")
    )
    schema: str = field(default=DEFAULT_SCHEMA, metadata=described("PostgreSQL schema"))
    memory_rows: int = field(default=100_000, metadata=described("memory store: rows per channel"))
    warmup_bars: int = field(
        default=1 << 14, metadata=described("compile the batch path for up to this many bars")
    )
    warmup_symbols: int = field(
        default=8,
        metadata=described(
            "compile the many-symbol batch path for up to this many symbols a call at start "
            "(≤ 64; 8: ~6 s on one core, 64: ~12 s; larger batches compile once on first use)"
        ),
    )
    max_batch_trades: int = field(
        default=2_000_000, metadata=described("most trades one POST batch may carry (all symbols)")
    )
    max_batch_symbols: int = field(
        default=64, metadata=described("most symbols one POST batch may carry")
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        self.params()  # validates
        if not 0 <= self.warmup_symbols <= core.MAX_PADDED_SYMBOLS:
            raise ValueError(
                f"warmup_symbols must be in [0, {core.MAX_PADDED_SYMBOLS}], "
                f"got {self.warmup_symbols}"
            )
        if self.max_batch_symbols < 1 or self.max_batch_trades < 1:
            raise ValueError("max_batch_symbols and max_batch_trades must be >= 1")

    def params(self) -> core.VpinParams:
        return core.VpinParams(
            bar_ns=self.bar_ns,
            bucket_volume=self.bucket_volume,
            window=self.window,
            sigma_decay=self.sigma_decay,
            sigma_seed=self.sigma_seed,
            adv_days=self.adv_days,
            buckets_per_day=self.buckets_per_day,
            day_offset_ns=self.day_offset_ns,
            cdf_window=self.cdf_window,
            cdf_kind=self.cdf_kind,
            alert_threshold=self.alert_threshold,
        )


class BadTrade(ValueError):
    """A trade payload without a usable symbol, time, price or size (counted, then skipped)."""


def trade_fields(payload: Any) -> tuple[str, int, float, float, int]:
    """``(symbol, event_ns, price, size, aggressor)`` of a ``trades.SYM`` payload."""
    try:
        side = payload.get("a")
        return (
            str(payload["s"]),
            int(payload["t"]),
            float(payload["p"]) if payload["p"] is not None else math.nan,
            float(payload["q"]) if payload["q"] is not None else math.nan,
            1 if side == "buy" else -1 if side == "sell" else 0,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadTrade(f"not a trade payload: {exc!r}") from None


class VpinEngine(Engine[VpinConfig]):
    """One ``VpinCalculator`` per symbol; bucket results on ``vpin.SYM`` and in the store."""

    config_type = VpinConfig
    #: channel family published, and the signals' ``engine`` column
    channel_kind = "vpin"

    def __init__(self, config: VpinConfig, *, bus: Bus, clock: Clock) -> None:
        super().__init__(config, bus=bus, clock=clock)
        self.store: Store = (
            PostgresStore(PostgresConfig(dsn=config.dsn, schema=config.schema), clock=clock)
            if config.dsn
            else MemoryStore(config.memory_rows)
        )
        self.calculators: dict[str, Any] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.malformed = 0
        self.rejected = Counter(
            f"nautilus_{self.channel_kind}_rejected_trades",
            "trades refused by a documented bad-input rule",
            ["reason"],
            registry=self.metrics.registry,
        )
        self.buckets_total = Counter(
            f"nautilus_{self.channel_kind}_buckets",
            "completed volume buckets published",
            registry=self.metrics.registry,
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Sequence[str]:
        return ("trades.*",)

    def streams(self) -> Sequence[StreamInfo]:
        return (
            StreamInfo(
                f"{self.channel_kind}.*",
                DeliveryClass.LATEST_VALUE,
                "VPIN per completed volume bucket (ELO 2012)",
            ),
        )

    def resources(self) -> Sequence[Route]:
        from engines.vpin import api

        return api.routes(self)

    def health_extra(self) -> Mapping[str, object]:
        return {
            "symbols": len(self.calculators),
            "storage": self.store.kind,
            "malformed_trades": self.malformed,
            "inputs": {s: c.counts.to_payload() for s, c in self.calculators.items()},
        }

    async def on_start(self) -> None:
        if self.config.dsn:
            await migrate(self.config.dsn, self.config.schema)
        await self.store.start()
        symbols = self.config.warmup_symbols if self.vectorized_batch() else 0
        await self.run_in_executor(core.warm_up, self.config.warmup_bars, symbols)

    async def on_stop(self) -> None:
        await self.store.close(max(0.1, 0.8 * self.config.drain_timeout_s))

    async def handle_batch(self, envelopes: Sequence[Envelope]) -> None:
        rows: list[SignalRow] = []
        for envelope in envelopes:
            try:
                rows += await self.consume(envelope)
            except BadTrade as exc:
                self.malformed += 1
                self.rejected.labels("malformed").inc()
                self.log.debug("skipping %s seq %d: %s", envelope.channel, envelope.seq, exc)
        if rows:
            self.store.write_signals(rows)

    # ── per message ────────────────────────────────────────────────────────────────────────

    def new_calculator(self) -> Any:
        return core.VpinCalculator(self.config.params())

    def params_payload(self) -> dict[str, Any]:
        return self.config.params().to_payload()

    async def consume(self, envelope: Envelope) -> list[SignalRow]:
        symbol, event_ns, price, size, aggressor = trade_fields(envelope.payload)
        calc = self.calculators.get(symbol)
        if calc is None:
            calc = self.calculators[symbol] = self.new_calculator()
        before = calc.counts.to_payload()
        buckets = self.add_trade(calc, event_ns, price, size, aggressor)
        self._count_rejections(before, calc.counts.to_payload())
        return [await self.emit(symbol, calc, bucket, envelope) for bucket in buckets]

    def add_trade(self, calc: Any, event_ns: int, price: float, size: float, side: int) -> Any:
        return calc.add_trade(event_ns, price, size)

    async def emit(self, symbol: str, calc: Any, bucket: Any, trigger: Envelope) -> SignalRow:
        payload = {
            "symbol": symbol,
            **bucket.to_payload(),
            "params": self.params_payload(),
            "inputs": calc.counts.to_payload(),
        }
        channel = f"{self.channel_kind}.{symbol}"
        envelope = await self.publish(channel, payload, event_ns=trigger.event_ns)
        self.latest[symbol] = payload
        self.buckets_total.inc()
        return SignalRow(self.name, channel, symbol, bucket.end_ns, envelope.seq, payload)

    def _count_rejections(self, before: dict[str, float], after: dict[str, float]) -> None:
        for reason in ("bad_size", "bad_price", "late"):
            if after[reason] != before[reason]:
                self.rejected.labels(reason).inc(after[reason] - before[reason])

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

    def vectorized_batch(self) -> bool:
        """Whether ``batch_compute`` is this class's (plain VPIN, which ``compute_vpin_many``
        vectorizes), not a subclass's own batch (the enhanced engine's), run per symbol."""
        return type(self).batch_compute is VpinEngine.batch_compute

    def batch_compute_many(
        self, columns_by_symbol: Mapping[str, tuple[Any, Any, Any, Any]], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """Batch mode for many symbols at once, same parameters for all (compute threads):
        ``{"params", "symbols": {SYM: {"inputs", "buckets"}}}``."""
        if not self.vectorized_batch():
            answers = {
                symbol: self.batch_compute(columns, dict(overrides))
                for symbol, columns in columns_by_symbol.items()
            }
            first = next(iter(answers.values()))
            return {
                "params": first["params"],
                "symbols": {
                    symbol: {k: v for k, v in answer.items() if k != "params"}
                    for symbol, answer in answers.items()
                },
            }
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

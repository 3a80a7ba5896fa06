"""VPIN's settings (``NAUTILUS_VPIN_*``), shared by Enhanced VPIN, whose settings extend them.

Defaults follow ELO (2012). A module of its own so Enhanced VPIN reuses the settings without
importing VPIN's engine (``service``) or REST (``api``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any

from engines.shell import EngineConfig
from engines.shell.config import env_prefix
from engines.shell.instruments import load_instruments, reference_volumes
from engines.vpin import core
from realtime.config import ConfigError, described


class BucketVolumeSource(StrEnum):
    """Where a symbol's bucket volume V came from (published in ``params``)."""

    #: ``bucket_volumes``: the per-symbol table
    TABLE = "table"
    #: ``bucket_volume``: one V for every symbol not in the table
    SETTING = "setting"
    #: the instrument table's reference ADV / ``buckets_per_day``, floored to the lot
    REFERENCE = "reference"
    #: the symbol's first ``adv_probe_bars`` bars (``core.BucketVolumeProbe``)
    PROBE = "probe"
    #: a batch request's ``params.bucket_volume``
    REQUEST = "request"


@dataclass(frozen=True, slots=True)
class BucketVolumeRule:
    """V per symbol: the table, else ``bucket_volume`` (> 0), else the reference ADV /
    ``buckets_per_day`` floored to the instrument's lot, else ``None`` (probe the first bars)."""

    table: Mapping[str, float]
    every: float
    reference: Mapping[str, float]

    def resolve(self, symbol: str | None) -> tuple[float, BucketVolumeSource] | None:
        if symbol is not None and symbol in self.table:
            return self.table[symbol], BucketVolumeSource.TABLE
        if self.every > 0:
            return self.every, BucketVolumeSource.SETTING
        if symbol is not None and symbol in self.reference:
            return self.reference[symbol], BucketVolumeSource.REFERENCE
        return None


def parse_bucket_volumes(entries: tuple[str, ...]) -> dict[str, float]:
    """``("SPY:2514583", "BTCUSDT:5")`` → ``{"SPY": 2514583.0, "BTCUSDT": 5.0}``; ``ValueError``
    names the entry (``SYMBOL:V``, V a finite number > 0, each symbol once)."""
    table: dict[str, float] = {}
    for entry in entries:
        symbol, colon, text = entry.strip().partition(":")
        symbol = symbol.strip()
        try:
            volume = float(text)
        except ValueError:
            volume = math.nan
        if not colon or not symbol or not (math.isfinite(volume) and volume > 0):
            raise ValueError(f"entry {entry!r}: want SYMBOL:V with V a number > 0")
        if symbol in table:
            raise ValueError(f"entry {entry!r}: {symbol} is listed twice")
        table[symbol] = volume
    return table


@dataclass(frozen=True, slots=True, kw_only=True)
class VpinConfig(EngineConfig):
    """Defaults follow ELO (2012): 1-minute bars, 50 buckets a day, a 50-bucket window."""

    name: str = field(default="vpin", metadata={"help": "engine name", "env": False})
    bar_ns: int = field(default=60_000_000_000, metadata=described("time bar length, ns"))
    bucket_volume: float = field(
        default=0.0,
        metadata=described(
            "V, size units per bucket, for every symbol not in bucket_volumes (0 = per symbol: "
            "the instrument table's reference ADV / buckets_per_day, floored to the lot — SPY "
            "2,514,583 shares, BTCUSDT 4.37915 BTC — else the symbol's first adv_probe_bars "
            "bars' volume rate × 24 h / buckets_per_day)"
        ),
    )
    bucket_volumes: tuple[str, ...] = field(
        default=(),
        metadata=described(
            "V per symbol, SYMBOL:V comma-separated (SPY:2514583,BTCUSDT:500); wins over "
            "bucket_volume and the reference ADV"
        ),
    )
    adv_probe_bars: int = field(
        default=5,
        metadata=described(
            "bars a symbol without a V or reference ADV is watched for before its V is fixed "
            "(its trades are held, then bucketed)"
        ),
    )
    instruments: str = field(
        default="",
        metadata=described("instrument table JSON with reference ADVs ('' = the bundled one)"),
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
        prefix = env_prefix(self.name)
        if not (math.isfinite(self.bucket_volume) and self.bucket_volume >= 0):
            raise ConfigError(
                f"{prefix}BUCKET_VOLUME",
                f"must be a number >= 0 (0 = the per-symbol rule), got {self.bucket_volume}",
            )
        try:
            parse_bucket_volumes(self.bucket_volumes)
        except ValueError as exc:
            raise ConfigError(f"{prefix}BUCKET_VOLUMES", str(exc)) from None
        if self.adv_probe_bars < 1:
            raise ConfigError(f"{prefix}ADV_PROBE_BARS", f"must be >= 1, got {self.adv_probe_bars}")
        try:
            self.bucket_volume_rule()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{prefix}INSTRUMENTS", str(exc)) from None
        self.params(1.0)  # validates the other parameters
        if not 0 <= self.warmup_symbols <= core.MAX_PADDED_SYMBOLS:
            raise ValueError(
                f"warmup_symbols must be in [0, {core.MAX_PADDED_SYMBOLS}], "
                f"got {self.warmup_symbols}"
            )
        if self.max_batch_symbols < 1 or self.max_batch_trades < 1:
            raise ValueError("max_batch_symbols and max_batch_trades must be >= 1")

    def bucket_volume_rule(self) -> BucketVolumeRule:
        """V per symbol (reads the instrument table: build once, at engine start)."""
        instruments = load_instruments(self.instruments)
        reference = {}
        for symbol, adv in reference_volumes(self.instruments).items():
            lot = instruments[symbol].lot
            per_bucket = Decimal(repr(adv)) / self.buckets_per_day
            reference[symbol] = float((per_bucket / lot).to_integral_value(ROUND_FLOOR) * lot)
        return BucketVolumeRule(
            parse_bucket_volumes(self.bucket_volumes), self.bucket_volume, reference
        )

    def params(self, bucket_volume: float | None = None) -> core.VpinParams:
        """The parameters in force with V = ``bucket_volume`` (default: the ``bucket_volume``
        setting; a symbol's own V comes from ``bucket_volume_rule``)."""
        volume = self.bucket_volume if bucket_volume is None else bucket_volume
        if not volume > 0:
            raise ValueError(
                "no bucket volume: bucket_volume is 0 (per symbol), so name the symbol's V"
            )
        return core.VpinParams(
            bar_ns=self.bar_ns,
            bucket_volume=volume,
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


def params_payload(params: core.VpinParams, source: BucketVolumeSource) -> dict[str, Any]:
    """``params`` as published (with each bucket and in batch answers): ``VpinParams`` and where
    V came from (``bucket_volume_source``)."""
    return {**params.to_payload(), "bucket_volume_source": source.value}


def batch_params(
    config: VpinConfig,
    rule: BucketVolumeRule,
    symbol: str | None,
    columns: tuple[Any, Any, Any, Any],
    overrides: dict[str, Any],
) -> tuple[core.VpinParams | None, dict[str, Any]]:
    """The parameters a batch over ``columns`` runs with and their published form (VPIN's and
    Enhanced VPIN's ``batch_compute``): the request's overrides over the engine's; V from the
    request, else the symbol's V (the realtime rule, the probe applied to ``columns``). ``None``
    when a probe does not end within the trades (realtime would not have cut a bucket either).
    ``ValueError`` on bad overrides."""
    base = core.VpinParams.from_payload(overrides, config.params(1.0))
    if "bucket_volume" in overrides:
        return base, params_payload(base, BucketVolumeSource.REQUEST)
    resolved = rule.resolve(symbol)
    if resolved is None:
        event_ns, price, size, _ = columns
        volume = core.probe_bucket_volume(event_ns, price, size, base, config.adv_probe_bars)
        if volume is None:
            return None, {**params_payload(base, BucketVolumeSource.PROBE), "bucket_volume": None}
        resolved = volume, BucketVolumeSource.PROBE
    params = replace(base, bucket_volume=resolved[0])
    return params, params_payload(params, resolved[1])


def common_payload(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The entries every payload agrees on; the others as ``None`` (e.g. V of many symbols)."""
    first = payloads[0]
    return {k: v if all(p.get(k) == v for p in payloads) else None for k, v in first.items()}

"""VPIN's settings (``NAUTILUS_VPIN_*``), shared by Enhanced VPIN, whose settings extend them.

Defaults follow ELO (2012). A module of its own so Enhanced VPIN reuses the settings without
importing VPIN's engine (``service``) or REST (``api``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engines.shell import EngineConfig
from engines.vpin import core
from realtime.config import described


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

"""ADWIN against river's ``drift.ADWIN``: the same drift indices, window width, mean and variance
after every value, on Gaussian and Bernoulli streams with shifts, for default and non-default
settings. Tolerance: exact (``==``) — ``engines.ml.adwin`` runs river's arithmetic in its order."""

# river ships no type hints: its calls are untyped here.
# mypy: disable-error-code="no-untyped-call,attr-defined,unused-ignore"

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from engines.ml.adwin import Adwin


def shifted(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([
        rng.normal(0.0, 1.0, 3_000), rng.normal(1.5, 1.0, 2_000),
        rng.binomial(1, 0.3, 3_000).astype(float), 2.0 * rng.binomial(1, 0.7, 3_000),
        rng.normal(0.0, 5.0, 6_000),
    ])  # fmt: skip


def run_both(values: np.ndarray, **settings: Any) -> list[int]:
    ours, ref = Adwin(**settings), drift.ADWIN(**settings)
    hits: list[int] = []
    for i, v in enumerate(values):
        got = ours.update(float(v))
        ref.update(float(v))
        assert got == ref.drift_detected, i
        assert (ours.width, ours.estimation, ours.variance) == (
            ref.width, ref.estimation, ref.variance
        ), i  # fmt: skip
        if got:
            hits.append(i)
    return hits


SETTINGS = {
    "defaults": {},
    "clock-1": {"clock": 1},
    "small": dict(delta=0.05, clock=4, max_buckets=3, min_window_length=3, grace_period=20),
}


@pytest.mark.parametrize("kw", SETTINGS.values(), ids=SETTINGS.keys())
def test_adwin_reproduces_river(kw: dict[str, Any]) -> None:
    hits = run_both(shifted(0), **kw)
    # each of the four shifts is found soon after it happens
    for shift in (3_000, 5_000, 8_000, 11_000):
        assert any(shift <= h < shift + 300 for h in hits), (shift, hits)


@given(seed=st.integers(0, 10_000), clock=st.integers(1, 40), buckets=st.integers(2, 6))
@settings(max_examples=30, deadline=None)
def test_random_streams_reproduce_river(seed: int, clock: int, buckets: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0, 1, 500), rng.normal(rng.uniform(-3, 3), 1, 500)])
    run_both(values, clock=clock, max_buckets=buckets)


def test_a_constant_stream_never_drifts_and_the_window_keeps_everything() -> None:
    detector = Adwin()
    assert not any(detector.update(0.25) for _ in range(5_000))
    assert detector.width == 5_000 and detector.estimation == 0.25 and detector.variance == 0.0


def test_bad_settings_are_refused() -> None:
    for bad in ({"delta": 0.0}, {"delta": 1.0}, {"clock": 0}, {"max_buckets": 1},
                {"min_window_length": 0}, {"grace_period": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            Adwin(**bad)

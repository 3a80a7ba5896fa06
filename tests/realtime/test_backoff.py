"""The shared retry policy: capped exponential ceilings, full-jitter draws below them."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.backoff import Backoff, BackoffPolicy


class TopDraw:
    """Always draws 1.0: the delays are the ceilings themselves."""

    def random(self) -> float:
        return 1.0


policies = st.builds(
    lambda initial, spread, multiplier: BackoffPolicy(initial, initial * spread, multiplier),
    st.floats(1e-4, 100.0),
    st.floats(1.0, 1e4),
    st.floats(1.0, 10.0),
)


@given(policies, st.integers(0, 5_000), st.integers(0, 2**32 - 1))
def test_every_delay_lies_in_zero_to_the_ceiling_and_never_past_max(
    policy: BackoffPolicy, attempt: int, seed: int
) -> None:
    ceiling = policy.ceiling_s(attempt)
    delay = policy.delay_s(attempt, random.Random(seed))
    assert 0.0 <= delay <= ceiling <= policy.max_s
    assert policy.initial_s <= ceiling  # the window never shrinks below the first one


@given(policies, st.integers(0, 200))
def test_ceilings_start_at_initial_grow_by_the_multiplier_and_stop_at_max(
    policy: BackoffPolicy, attempt: int
) -> None:
    assert policy.ceiling_s(0) == policy.initial_s
    now, after = policy.ceiling_s(attempt), policy.ceiling_s(attempt + 1)
    assert now <= after
    expected = min(policy.max_s, now * policy.multiplier)
    assert after == pytest.approx(expected, rel=1e-9)


def test_the_ceilings_are_the_capped_exponential() -> None:
    policy = BackoffPolicy(initial_s=0.1, max_s=1.0)
    assert [policy.ceiling_s(k) for k in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert [policy.delay_s(k, TopDraw()) for k in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    triple = BackoffPolicy(initial_s=1.0, max_s=100.0, multiplier=3.0)
    assert [triple.ceiling_s(k) for k in range(6)] == [1, 3, 9, 27, 81, 100]
    # past the float range the ceiling is simply the cap, for float and int multipliers
    assert policy.ceiling_s(100_000) == 1.0
    assert BackoffPolicy(0.1, 1.0, multiplier=2).ceiling_s(100_000) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("attempt", [0, 3, 40])
def test_draws_are_uniform_over_the_whole_window(seed: int, attempt: int) -> None:
    """Full jitter, not "equal jitter" (ceiling/2 + U) nor a ±20 % wobble: the draws cover
    [0, ceiling] uniformly. Kolmogorov–Smirnov against U(0, ceiling) at α = 0.001 on 20,000
    draws (fixed seeds: the same numbers on every run)."""
    policy = BackoffPolicy(initial_s=0.05, max_s=2.0)
    rng = random.Random(seed)
    ceiling = policy.ceiling_s(attempt)
    n = 20_000
    draws = sorted(policy.delay_s(attempt, rng) / ceiling for _ in range(n))
    ks = max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(draws))
    assert ks < 1.95 / math.sqrt(n)
    assert statistics.fmean(draws) == pytest.approx(0.5, abs=0.01)
    assert draws[0] < 0.001 and draws[-1] > 0.999  # both ends of the window are reached


def test_clients_failing_together_spread_out() -> None:
    """The point of jitter: 1,000 clients that lost the server at once do not return at once."""
    policy = BackoffPolicy(initial_s=1.0, max_s=1.0)
    first = [policy.delay_s(0, random.Random(client)) for client in range(1_000)]
    per_100ms = [sum(1 for d in first if k / 10 <= d < (k + 1) / 10) for k in range(10)]
    assert max(per_100ms) < 150  # ~100 each; without jitter all 1,000 land in the last one


def test_backoff_counts_failures_in_a_row_and_resets() -> None:
    policy = BackoffPolicy(initial_s=0.5, max_s=30.0)
    backoff = Backoff(policy, random.Random(11))
    delays = [backoff.next_s() for _ in range(8)]
    reference = random.Random(11)
    assert delays == [policy.delay_s(k, reference) for k in range(8)]
    assert backoff.attempt == 8
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_s() == policy.delay_s(0, reference)
    ceilings = Backoff(policy, TopDraw())
    assert [ceilings.next_s() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_backoff_draws_fresh_randomness_by_default() -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=1.0)
    assert len({Backoff(policy).next_s() for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("initial_s", "max_s", "multiplier"),
    [(0.0, 1.0, 2.0), (-1.0, 1.0, 2.0), (2.0, 1.0, 2.0), (0.1, 1.0, 0.5), (math.nan, 1.0, 2.0)],
)
def test_invalid_policies_are_refused(initial_s: float, max_s: float, multiplier: float) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(initial_s, max_s, multiplier)


def test_a_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        BackoffPolicy(0.1, 1.0).ceiling_s(-1)

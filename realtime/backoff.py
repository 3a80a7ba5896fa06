"""The one retry-delay policy of the platform: capped exponential backoff with full jitter.

Every component that retries through an outage (the Redis bus's reconnect and publish retry, the
PostgreSQL writer and the background migration, the supervisor's restarts, the live feed's
reconnect and snapshot fetch, the Python hub client) waits ``BackoffPolicy.delay_s(attempt)``:

    ceiling(attempt) = min(max_s, initial_s · multiplier^attempt)
    delay(attempt)   = uniform(0, ceiling(attempt))

AWS Architecture Blog, "Exponential Backoff And Jitter" (2015), "Full Jitter": the ceiling grows
as plain exponential backoff does, and the draw spreads the clients that lost the same server at
the same moment over the whole window, so they do not come back in lock-step.

Pure: no asyncio, no clock. The randomness is injected (anything with ``random() -> float`` in
[0, 1]; ``random.Random`` by default) so tests replay exactly: a seeded ``random.Random`` gives a
known sequence, and a source that always draws 1.0 gives the ceilings themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class Rng(Protocol):
    """The randomness the policy draws from: ``random.Random`` satisfies it."""

    def random(self) -> float:
        """A draw in [0, 1] (``random.Random`` never returns 1.0; a test source may)."""
        ...


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """``delay_s(attempt)`` = uniform(0, min(max_s, initial_s · multiplier^attempt)).

    ``attempt`` counts the failures in a row before this wait, from 0: the first wait is drawn
    from [0, initial_s], and no wait is ever longer than ``max_s``.
    """

    initial_s: float
    max_s: float
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(
                f"need 0 < initial_s <= max_s, got initial_s={self.initial_s} max_s={self.max_s}"
            )
        if not self.multiplier >= 1:
            raise ValueError(f"need multiplier >= 1, got {self.multiplier}")

    def ceiling_s(self, attempt: int) -> float:
        """The longest wait before retry ``attempt`` (0-based): the un-jittered backoff."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        try:
            grown = self.initial_s * self.multiplier**attempt
        except OverflowError:  # multiplier^attempt past the float range: long since capped
            return self.max_s
        return min(self.max_s, grown)

    def delay_s(self, attempt: int, rng: Rng) -> float:
        """A wait drawn uniformly from [0, ``ceiling_s(attempt)``] (full jitter)."""
        return rng.random() * self.ceiling_s(attempt)


class Backoff:
    """A policy plus the count of failures in a row: the state every retry loop keeps.

    ``next_s()`` after each failure (the wait to sleep; the count goes up), ``reset()`` after a
    success (the next failure waits at most ``initial_s`` again).
    """

    __slots__ = ("_rng", "attempt", "policy")

    def __init__(self, policy: BackoffPolicy, rng: Rng | None = None) -> None:
        self.policy = policy
        self._rng: Rng = rng if rng is not None else random.Random()
        #: failures in a row so far (the ``attempt`` of the next wait)
        self.attempt = 0

    def next_s(self) -> float:
        """The wait after one more failure."""
        delay = self.policy.delay_s(self.attempt, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

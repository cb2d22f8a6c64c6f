"""Backoff delays and a per-bank circuit breaker: one failing bank never slows the others.

Both are pure (no I/O, injectable clock and RNG) so they are tested on their own and the
refresh loop only asks them questions: "how long until this credential is retried?" and
"how many calls may this bank take right now?".
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff
    And Jitter"), never shorter than the bank's ``Retry-After`` (RFC 9110 §10.2.3).

    Full jitter spreads a fleet's retries over the whole window, so the credentials a
    bank outage made due together do not come back together.
    """

    base: float = 1.0
    cap: float = 900.0

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds until the next try after ``attempts`` consecutive failures (>= 1)."""
        window = min(self.cap, self.base * 2 ** max(attempts - 1, 0))
        jittered = rng.uniform(window / 2, window)
        if retry_after is not None and retry_after > 0:
            # Honour the bank's ask, plus a little jitter so we are not all first in line.
            return max(jittered, retry_after + rng.uniform(0, min(retry_after / 10, 5.0)))
        return jittered


class BreakerState(enum.Enum):
    """Where a bank's breaker stands; the value is the metric's gauge value."""

    CLOSED = 0  # calls flow, up to the bank's concurrency limit
    HALF_OPEN = 1  # the cool-down passed: one probe call decides
    OPEN = 2  # the bank failed repeatedly: no calls until the cool-down passes


class Breaker:
    """Opens after ``threshold`` consecutive failures; after ``cool_down`` s lets one
    probe through (half-open); a success closes it, a failure re-opens it with a doubled
    cool-down (capped), so a bank that stays down is probed ever more gently.

    Example::

        breaker = Breaker(threshold=5, cool_down=10.0)
        if breaker.allowance(limit=8) > in_flight:
            ...call the bank...
            breaker.success()   # or breaker.failure(retry_after)
    """

    def __init__(
        self, threshold: int = 5, cool_down: float = 10.0, max_cool_down: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cool_down = cool_down
        self.max_cool_down = max_cool_down
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._cool_down = cool_down
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self._cool_down:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def reopens_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 unless open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cool_down - self._clock())

    def allowance(self, limit: int) -> int:
        """How many calls the bank may have in flight now: ``limit``, 1 probe, or 0."""
        state = self.state
        if state is BreakerState.CLOSED:
            return limit
        if state is BreakerState.HALF_OPEN:
            return 0 if self._probing else 1
        return 0

    def begin_probe(self) -> bool:
        """Claim the half-open probe; False if closed (no probe needed) or taken."""
        if self.state is not BreakerState.HALF_OPEN or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False
        self._cool_down = self.base_cool_down

    def failure(self, retry_after: float | None = None) -> None:
        self._failures += 1
        was_probe = self._probing
        self._probing = False
        if was_probe:
            self._cool_down = min(self._cool_down * 2, self.max_cool_down)
        if was_probe or self._failures >= self.threshold:
            self._opened_at = self._clock()
            if retry_after is not None:
                self._cool_down = max(self._cool_down, min(retry_after, self.max_cool_down))

"""Backoff and the per-bank breaker, on a fake clock."""

from __future__ import annotations

import random

from aggregator.worker import Backoff, Breaker, BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: Breaker) -> BreakerState:
    return breaker.state  # a call, so the type checker does not narrow across steps


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    backoff, rng = Backoff(base=1.0, cap=60.0), random.Random(3)
    for attempts in range(1, 12):
        window = min(60.0, 2.0 ** (attempts - 1))
        delays = [backoff.delay(attempts, None, rng) for _ in range(50)]
        assert all(window / 2 <= d <= window for d in delays)
        assert len(set(delays)) > 40


def test_backoff_never_retries_before_retry_after() -> None:
    backoff, rng = Backoff(base=1.0), random.Random(1)
    assert all(30 <= backoff.delay(1, 30, rng) <= 33 for _ in range(50))


def test_breaker_opens_after_consecutive_failures_and_probes_once_half_open() -> None:
    clock = Clock()
    breaker = Breaker(threshold=3, cool_down=10, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success resets the streak
    for _ in range(3):
        breaker.failure()
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.allowance(8) == 0
    clock.now = 10.0
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.allowance(8) == 1
    assert breaker.begin_probe()
    assert not breaker.begin_probe()  # one probe at a time
    breaker.failure()  # the probe failed: open again, twice as long
    clock.now = 25.0
    assert state_of(breaker) is BreakerState.OPEN
    clock.now = 30.0
    assert breaker.begin_probe()
    breaker.success()
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.allowance(8) == 8


def test_breaker_cool_down_honours_retry_after() -> None:
    clock = Clock()
    breaker = Breaker(threshold=1, cool_down=1, clock=clock)
    breaker.failure(retry_after=30)
    clock.now = 29.0
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.reopens_in() == 1.0

"""Bank health as readers see it: live breakers, percentiles, retention."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import func, select

from aggregator.bankhealth import CallRecorder
from aggregator.bankhealth.reads import breakers, hourly, last_hour, quantile
from aggregator.bankhealth.store import prune, publish_breakers, withdraw_breakers
from aggregator.models import BankCallMinute, BreakerHeartbeat
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter


def test_p95_is_the_bound_of_the_bucket_it_falls_in() -> None:
    assert quantile(0, [0] * 7, 0.95) is None
    assert quantile(100, [90, 5, 5, 0, 0, 0, 0], 0.95) == 0.25
    assert quantile(100, [90, 4, 5, 0, 0, 0, 0], 0.95) == 0.5
    assert quantile(10, [0] * 7, 0.95) == math.inf  # all above the last bound


async def test_the_worst_live_breaker_is_shown_and_stale_heartbeats_are_ignored(
    region_router: RegionRouter,
) -> None:
    now = utcnow()
    opened = now - timedelta(seconds=30)
    await publish_breakers(region_router, "eu", "w1:1", {"sandbox": ("closed", now),
                                                         "slowbank": ("half_open", now)}, now)
    await publish_breakers(region_router, "eu", "w2:2", {"sandbox": ("open", opened)}, now)
    await publish_breakers(region_router, "eu", "w3:3", {"sandbox": ("open", opened)}, now)
    # A worker that died two minutes ago: its open breaker no longer counts.
    await publish_breakers(region_router, "eu", "dead:9", {"slowbank": ("open", opened)},
                           now - timedelta(minutes=2))
    async with region_router.reader("eu") as session:
        seen = await breakers(session, now)
    assert (seen["sandbox"].state, seen["sandbox"].reporting, seen["sandbox"].live) == (
        "open", 2, 3)
    assert seen["sandbox"].since == opened
    assert (seen["slowbank"].state, seen["slowbank"].reporting) == ("half_open", 1)

    await withdraw_breakers(region_router, "eu", "w2:2")
    await withdraw_breakers(region_router, "eu", "w3:3")
    async with region_router.reader("eu") as session:
        assert (await breakers(session, now))["sandbox"].state == "closed"
    async with region_router.reader("us") as session:
        assert await breakers(session, now) == {}


async def test_hours_are_summed_per_bank_and_old_rows_are_pruned(
    region_router: RegionRouter,
) -> None:
    now = utcnow().replace(minute=30)
    recorder = CallRecorder(region_router)
    recorder.call("eu", "sandbox", "sync", "complete", 0.4, at=now)
    recorder.call("eu", "sandbox", "sync", "bank_unavailable", 12.0, at=now)
    recorder.call("eu", "sandbox", "sync", "complete", 0.4, at=now - timedelta(hours=2))
    recorder.call("eu", "sandbox", "sync", "complete", 0.4, at=now - timedelta(days=8))
    await recorder.flush()
    await publish_breakers(region_router, "eu", "old:1", {"sandbox": ("open", now)},
                           now - timedelta(days=2))
    async with region_router.reader("eu") as session:
        hours = (await hourly(session, now))["sandbox"]["sync"]
        hour = await last_hour(session, now)
    assert {h: s.calls for h, s in hours.items()} == {
        now.strftime("%Y-%m-%dT%H"): 2,
        (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H"): 1}
    assert hour["sandbox"]["sync"].error_rate == 0.5
    assert hour["sandbox"]["sync"].p95 == math.inf

    assert await prune(region_router, "eu", now) == 2  # the 8-day-old minute, the heartbeat
    async with region_router.reader("eu") as session:
        assert await session.scalar(select(func.sum(BankCallMinute.calls))) == 3
        assert await session.scalar(select(func.count()).select_from(BreakerHeartbeat)) == 0

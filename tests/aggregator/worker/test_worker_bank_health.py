"""The worker's part of bank health: each refresh tallied and kept in the connection's
history (no write per refresh), and this process's breakers published as heartbeats."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from aggregator.bankhealth import CallRecorder
from aggregator.bankhealth.reads import breakers, last_hour, refresh_history
from aggregator.custody import RegionCustody
from aggregator.models import BankCallMinute, RefreshAttempt
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.worker.process import bank_health_job
from aggregator.worker.refresh import refresh_leased
from connectors import BankUnavailable
from tests.aggregator._factories import LinkFactory
from tests.aggregator.worker.test_worker_refresh import StubOAuth, _ctx, _lease


async def _rows(router: RegionRouter) -> tuple[int, int]:
    async with router.reader("eu") as session:
        calls = await session.scalar(select(func.count()).select_from(BankCallMinute))
        attempts = await session.scalar(select(func.count()).select_from(RefreshAttempt))
    return calls or 0, attempts or 0


async def test_refreshes_are_tallied_in_memory_and_kept_in_the_history_after_a_flush(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old")
    recorder = CallRecorder(region_router, interval=3600)
    failing = _ctx(region_router, custody, StubOAuth(fail=BankUnavailable("down")),
                   recorder=recorder)
    assert await refresh_leased(failing, "eu", await _lease(region_router, linked)) == (
        "unavailable")
    working = _ctx(region_router, custody, StubOAuth(), recorder=recorder)
    assert await refresh_leased(working, "eu", await _lease(region_router, linked)) == "ok"
    assert await _rows(region_router) == (0, 0)  # nothing written per refresh

    await recorder.flush()
    async with region_router.reader("eu") as session:
        history = await refresh_history(session, linked.connection.id)
        figures = (await last_hour(session, utcnow()))["sandbox"]["refresh"]
    assert [(a.outcome, a.error_code, a.worker) for a in history] == [
        ("ok", None, "t"), ("unavailable", "bank_unavailable", "t")]
    assert (figures.calls, figures.failures) == (2, 1)
    columns = {c.name for c in RefreshAttempt.__table__.columns}
    assert not any("token" in c for c in columns)  # no token material, by construction


async def test_the_job_publishes_this_processs_breakers_and_withdraws_them_at_stop(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> None:
    ctx = _ctx(region_router, custody, StubOAuth(), recorder=CallRecorder(region_router),
               breaker_threshold=1)
    ctx.banks._profiles = {}  # no profile: the breaker goes to every region
    ctx.breaker("sandbox").failure()
    job = bank_health_job(ctx)
    await job.run_once(asyncio.Event())
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            seen = (await breakers(session, utcnow()))["sandbox"]
        assert (seen.state, seen.reporting, seen.live) == ("open", 1, 1)
    await job.close()
    async with region_router.reader("eu") as session:
        assert await breakers(session, utcnow()) == {}

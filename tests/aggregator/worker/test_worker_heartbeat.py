"""Lease heartbeats: a live worker keeps its short leases; a dead one's come back in seconds."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from aggregator.models import Credential
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.worker import lease_batch
from aggregator.worker.lease import heartbeat
from tests.aggregator._factories import LinkFactory

SHORT = timedelta(seconds=3)


async def _due_now(router: RegionRouter) -> None:
    async with router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            refresh_due_at=utcnow() - timedelta(seconds=1)))


async def _leases(router: RegionRouter) -> dict[str, tuple[str | None, object]]:
    async with router.reader("eu") as session:
        rows = (await session.execute(select(
            Credential.id, Credential.lease_owner, Credential.lease_expires_at))).all()
    return {row[0]: (row[1], row[2]) for row in rows}


async def test_a_heartbeat_extends_only_the_owners_live_leases(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    mine, theirs = await make_linked("eu"), await make_linked("eu")
    await _due_now(region_router)
    start = utcnow()
    leased = await lease_batch(region_router, "eu", "alive", now=start, limit=1,
                               lease_for=SHORT)
    other = await lease_batch(region_router, "eu", "other", now=start, limit=1,
                              lease_for=SHORT)
    assert {lease.credential.id for lease in [*leased, *other]} == {
        mine.credential.id, theirs.credential.id}
    before = await _leases(region_router)

    extended = await heartbeat(region_router, "eu", "alive", now=start + timedelta(seconds=2),
                               lease_for=SHORT)

    after = await _leases(region_router)
    (held,) = leased
    assert extended == {held.credential.id}
    assert after[held.credential.id] == ("alive", start + timedelta(seconds=5))
    (held_by_other,) = other
    assert after[held_by_other.credential.id] == before[held_by_other.credential.id]


async def test_a_dead_workers_lease_comes_back_within_the_short_lease(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    await make_linked("eu")
    await _due_now(region_router)
    start = utcnow()
    [dead] = await lease_batch(region_router, "eu", "dead", now=start, limit=1, lease_for=SHORT)
    # No heartbeat comes (the worker was killed): a heartbeat after expiry revives nothing.
    assert await heartbeat(region_router, "eu", "dead", now=start + SHORT,
                           lease_for=SHORT) == set()
    assert await lease_batch(region_router, "eu", "next", now=start + timedelta(seconds=1),
                             limit=1, lease_for=SHORT) == []
    [taken] = await lease_batch(region_router, "eu", "next", now=start + SHORT, limit=1,
                                lease_for=SHORT)
    assert taken.credential.id == dead.credential.id

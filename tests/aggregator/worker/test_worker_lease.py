"""Leasing due credentials: disjoint batches, expiry, compare-and-set, what is skipped."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import insert, text, update

from aggregator.ids import new_id
from aggregator.models import Connection, ConnectionStatus, Credential
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.worker.lease import backlog, lease_batch, lease_query, mark_in_flight, release
from tests.aggregator._factories import Linked, LinkFactory

LEASE = timedelta(seconds=30)


async def _due(router: RegionRouter, linked: list[Linked], seconds: float = -5) -> None:
    async with router.session("eu") as session, session.begin():
        await session.execute(
            update(Credential)
            .where(Credential.id.in_([x.credential.id for x in linked]))
            .values(refresh_due_at=utcnow() + timedelta(seconds=seconds))
        )


async def test_concurrent_lease_batches_are_disjoint_and_cover_every_due_row(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = [await make_linked("eu") for _ in range(20)]
    await _due(region_router, linked)
    now = utcnow()

    batches = await asyncio.gather(*(
        lease_batch(region_router, "eu", f"w{i}", now=now, limit=8, lease_for=LEASE)
        for i in range(4)
    ))

    ids = [lease.credential.id for batch in batches for lease in batch]
    assert len(ids) == len(set(ids)) == 20
    assert all(lease.credential.lease_owner == f"w{i}"
               for i, batch in enumerate(batches) for lease in batch)
    assert await lease_batch(region_router, "eu", "late", now=now, limit=8,
                             lease_for=LEASE) == []


async def test_an_expired_lease_comes_back_marked_and_the_stale_holder_cannot_write(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await _due(region_router, [linked])
    now = utcnow()
    [dead] = await lease_batch(region_router, "eu", "dead", now=now, limit=5, lease_for=LEASE)
    claimed = await mark_in_flight(region_router, "eu", dead, now=now)
    assert claimed == dead.claimed + 1
    assert await lease_batch(region_router, "eu", "w", now=now, limit=5, lease_for=LEASE) == []

    later = now + LEASE + timedelta(seconds=1)
    [taken] = await lease_batch(region_router, "eu", "w", now=later, limit=5, lease_for=LEASE)

    assert taken.in_flight_before  # the dead worker's request may have reached the bank
    assert not await release(region_router, "eu", linked.credential.id, claimed,
                             due_at=None, keep_in_flight=False, failed=False)
    assert await release(region_router, "eu", linked.credential.id, taken.claimed,
                         due_at=later, keep_in_flight=True, failed=True)


async def test_not_due_inactive_and_excluded_banks_are_not_leased(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    later, inactive, due = [await make_linked("eu") for _ in range(3)]
    await _due(region_router, [inactive, due])
    await _due(region_router, [later], seconds=600)
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == inactive.connection.id)
                              .values(status=ConnectionStatus.REAUTH_REQUIRED))
    now = utcnow()
    assert (await backlog(region_router, "eu", now)).due == 1

    assert await lease_batch(region_router, "eu", "w", now=now, limit=5, lease_for=LEASE,
                             exclude_banks={"sandbox"}) == []
    leased = await lease_batch(region_router, "eu", "w", now=now, limit=5, lease_for=LEASE)

    assert [lease.credential.id for lease in leased] == [due.credential.id]
    assert (await backlog(region_router, "eu", now)).due == 0


async def test_the_lease_query_walks_the_due_index_not_the_table(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    owner = await make_linked("eu")
    later = utcnow() + timedelta(days=1)
    rows = [{"c": new_id("con", "eu"), "k": new_id("crd", "eu"), "u": owner.user.id,
             "a": owner.connection.application_id, "due": later + timedelta(seconds=i)}
            for i in range(3000)]
    async with region_router.session("eu") as session, session.begin():
        await session.execute(text(
            "INSERT INTO connections (id, user_id, application_id, bank_id, status, change_seq,"
            " created_at, updated_at) VALUES (:c, :u, :a, 'sandbox', 'active', 0,"
            " :due, :due)"), rows)
        await session.execute(
            insert(Credential), [{"id": r["k"], "connection_id": r["c"],
                                  "user_id": r["u"], "access_token_sealed": b"\0",
                                  "refresh_due_at": r["due"]} for r in rows])
    engine = region_router.engine("eu")
    query = lease_query(utcnow(), 32).compile(engine.sync_engine,
                                              compile_kwargs={"literal_binds": True})
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("ANALYZE credentials"))
            await conn.execute(text("ANALYZE connections"))
            explain = "EXPLAIN"
        else:
            await conn.execute(text("ANALYZE"))
            explain = "EXPLAIN QUERY PLAN"
        plan = "\n".join(str(row) for row in (await conn.execute(text(f"{explain} {query}"))))

    # An ordered walk of the due index: no sequential scan, no sort of all due rows.
    if engine.dialect.name == "postgresql":
        assert "Index Scan using ix_credentials_refresh_due_at" in plan, plan
        assert "Sort" not in plan, plan
    else:
        assert "USING INDEX ix_credentials_refresh_due_at" in plan, plan
        assert "TEMP B-TREE" not in plan, plan

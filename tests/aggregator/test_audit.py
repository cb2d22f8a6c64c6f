"""The audit chain: appends link up, tampering is named, concurrent appends stay linked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from aggregator.audit import anonymize_ip, record, verify
from aggregator.errors import AuditValueRejected
from aggregator.ids import ApplicationId, new_id
from aggregator.settings import Settings
from aggregator.store import RegionRouter


async def _append(router: RegionRouter, region: str, app_id: ApplicationId, n: int) -> list[str]:
    ids = []
    for i in range(n):
        async with router.session(region) as session, session.begin():
            event = await record(
                session, actor=app_id, action="connection.created",
                target_id=new_id("con", region), request_id=new_id("req"),
                client_ip=f"203.0.113.{i % 250}",
            )
            ids.append(event.id)
    return ids


async def test_an_untouched_chain_verifies(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    for region in region_router.regions:
        report = await verify(region_router.engine(region), region)
        assert report.ok
        assert report.events == 0
    await _append(region_router, "eu", app_id, 5)
    report = await verify(region_router.engine("eu"), "eu")
    assert report.ok, report.problem
    assert (report.events, report.head_seq) == (5, 5)


async def test_a_tampered_event_is_named(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    ids = await _append(region_router, "eu", app_id, 6)
    async with region_router.engine("eu").begin() as conn:
        await conn.execute(text("UPDATE audit_events SET action = 'user.erased' WHERE seq = 4"))
    report = await verify(region_router.engine("eu"), "eu")
    assert not report.ok
    assert (report.broken_seq, report.broken_id) == (4, ids[3])
    assert report.problem is not None
    assert "altered" in report.problem
    assert report.events == 3


async def test_deleted_events_are_named(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    ids = await _append(region_router, "eu", app_id, 5)
    async with region_router.engine("eu").begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    report = await verify(region_router.engine("eu"), "eu")
    assert (report.broken_seq, report.broken_id) == (3, ids[2])
    assert report.problem == "events 2..2 are missing (deleted)"

    await _append(region_router, "us", app_id, 3)
    async with region_router.engine("us").begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    report = await verify(region_router.engine("us"), "us")
    assert report.problem is not None
    assert "deleted from the end" in report.problem


async def test_a_chain_copied_from_another_region_does_not_verify(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    await _append(region_router, "eu", app_id, 1)
    # Same contents, but hashed for region eu: in region us the hash cannot match.
    async with region_router.engine("eu").connect() as conn:
        row = (await conn.execute(text("SELECT * FROM audit_events"))).mappings().one()
    report_eu = await verify(region_router.engine("eu"), "eu")
    assert report_eu.ok
    report = await verify(region_router.engine("eu"), "us")
    assert report.broken_id == row["id"]


@pytest.mark.parametrize(("field", "value"), [
    ("actor", "erika@example.test"),
    ("actor", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    ("action", "login by erika@example.test"),
    ("action", "Connection.Created"),
    ("target_id", "DE89370400440532013000"),
    ("request_id", "rt-1a2b3c4d5e6f7a8b9c0d1e2f"),
    ("client_ip", "erika-laptop.local"),
])
async def test_values_that_could_hold_secrets_or_pii_are_refused(
    region_router: RegionRouter, app_id: ApplicationId, field: str, value: str
) -> None:
    fields: dict[str, Any] = {"actor": app_id, "action": "user.created", field: value}
    async with region_router.session("eu") as session:
        with pytest.raises(AuditValueRejected):
            await record(session, **fields)
    report = await verify(region_router.engine("eu"), "eu")
    assert report.events == 0


async def test_system_actors_and_anonymized_addresses_are_accepted(
    region_router: RegionRouter,
) -> None:
    async with region_router.session("us") as session, session.begin():
        event = await record(
            session, actor="worker", action="credential.refreshed",
            client_ip=anonymize_ip("2001:db8:1234:5678::1"),
            at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        )
    assert event.client_ip == "2001:db8:1234::"
    assert anonymize_ip("198.51.100.77") == "198.51.100.0"
    assert (await verify(region_router.engine("us"), "us")).ok


async def test_concurrent_appends_keep_the_chain_intact(
    settings: Settings, region_router: RegionRouter, app_id: ApplicationId
) -> None:
    # 50 writers on 25 separate connections really contend for the chain head, while
    # leaving room under PostgreSQL's default 100 connections for a parallel test run.
    router = RegionRouter(settings, engine_options={"pool_size": 25, "max_overflow": 0})
    in_flight, overlap = 0, 0

    async def append(i: int) -> int:
        nonlocal in_flight, overlap
        async with router.session("eu") as session, session.begin():
            in_flight += 1
            overlap = max(overlap, in_flight)
            event = await record(
                session, actor=app_id, action="account.synced",
                target_id=new_id("acc", "eu"), request_id=new_id("req"),
            )
            await asyncio.sleep(0)  # let others queue on the head lock mid-transaction
            in_flight -= 1
            return event.seq

    try:
        seqs = await asyncio.gather(*(append(i) for i in range(50)))
    finally:
        await router.dispose()
    assert overlap > 1
    assert sorted(seqs) == list(range(1, 51))
    report = await verify(region_router.engine("eu"), "eu")
    assert report.ok, report.problem
    assert report.events == 50

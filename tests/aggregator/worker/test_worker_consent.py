"""The worker's consent watch: one warning per consent period, one flag at its end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from aggregator.models import AuditEvent, Connection, ConnectionStatus, OutboundEvent
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from aggregator.worker.consent import CONSENT_EXPIRED, ConsentWatch
from connectors import load_profiles
from tests.aggregator._factories import LinkFactory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ENDS = NOW + timedelta(days=30)


@pytest.fixture
async def banks() -> AsyncIterator[BankDirectory]:
    profile = load_profiles([])["sandbox-eu"]
    async with httpx.AsyncClient() as http:  # never used: the watch calls no bank
        yield BankDirectory({"sandbox": profile}, http)


async def consent_until(router: RegionRouter, connection_id: str, at: datetime | None) -> None:
    async with router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == connection_id)
                              .values(consent_expires_at=at))


async def events(router: RegionRouter, connection_id: str) -> list[tuple[str, dict[str, str]]]:
    async with router.reader("eu") as session:
        rows = (await session.execute(
            select(OutboundEvent).order_by(OutboundEvent.created_at, OutboundEvent.id)
        )).scalars()
        return [(e.type, e.data) for e in rows if e.data.get("connection_id") == connection_id]


async def connection(router: RegionRouter, connection_id: str) -> Connection:
    async with router.reader("eu") as session:
        found = await session.get(Connection, connection_id)
    assert found is not None
    return found


async def test_the_warning_goes_out_once_per_period_even_from_concurrent_workers(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")
    cid = linked.connection.id
    await consent_until(region_router, cid, ENDS)
    watches = [ConsentWatch(region_router, banks) for _ in range(4)]

    # 24 days before the end nothing is due; 7 days before, one warning in all.
    early = ENDS - timedelta(days=8)
    assert sum(await asyncio.gather(*(w.run_once(asyncio.Event(), now=early)
                                      for w in watches))) == 0
    due = ENDS - timedelta(days=7)
    handled = await asyncio.gather(*(w.run_once(asyncio.Event(), now=due) for w in watches),
                                   *(w.warn("eu", cid, due) for w in watches))
    assert sum(handled) == 1
    # Later passes before the end send nothing more.
    for days in (6, 1):
        assert await watches[0].run_once(asyncio.Event(), now=ENDS - timedelta(days=days)) == 0

    sent = await events(region_router, cid)
    assert [t for t, _ in sent] == ["connection.consent_expiring"]
    data = sent[0][1]
    assert data == {"connection_id": cid, "user_id": linked.user.id, "bank_id": "sandbox",
                    "status": "active", "consent_expires_at": ENDS.isoformat()}
    assert (await connection(region_router, cid)).consent_warned_for == ENDS


async def test_at_the_end_the_connection_is_flagged_once_with_reason_consent_expired(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")
    cid = linked.connection.id
    await consent_until(region_router, cid, ENDS)
    first, second = ConsentWatch(region_router, banks), ConsentWatch(region_router, banks)

    stop = asyncio.Event()
    handled = await asyncio.gather(first.run_once(stop, now=ENDS), second.run_once(stop, now=ENDS),
                                   first.expire("eu", cid, ENDS), second.expire("eu", cid, ENDS))

    assert sum(handled) == 1
    assert await first.run_once(stop, now=ENDS + timedelta(days=1)) == 0
    flagged = await connection(region_router, cid)
    assert flagged.status is ConnectionStatus.REAUTH_REQUIRED
    assert flagged.status_reason == CONSENT_EXPIRED
    # No late warning for a consent that is already over: only the flag.
    assert await events(region_router, cid) == [("connection.reauth_required", {
        "connection_id": cid, "user_id": linked.user.id, "bank_id": "sandbox",
        "status": "reauth_required", "reason": "consent_expired",
        "consent_expires_at": ENDS.isoformat(),
    })]
    async with region_router.reader("eu") as session:
        audited = (await session.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "connection.reauth_required",
            AuditEvent.target_id == cid))).scalar_one()
    assert audited == 1


async def test_a_renewed_consent_re_arms_the_warning(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")
    cid = linked.connection.id
    await consent_until(region_router, cid, ENDS)
    watch = ConsentWatch(region_router, banks)
    assert await watch.run_once(asyncio.Event(), now=ENDS - timedelta(days=5)) == 1

    renewed = ENDS + timedelta(days=180)  # re-consented through an update-mode link
    await consent_until(region_router, cid, renewed)

    assert await watch.run_once(asyncio.Event(), now=ENDS) == 0  # the old end means nothing
    assert await watch.run_once(asyncio.Event(), now=renewed - timedelta(days=7)) == 1
    assert await watch.run_once(asyncio.Event(), now=renewed - timedelta(days=6)) == 0
    sent = await events(region_router, cid)
    assert [(t, d["consent_expires_at"]) for t, d in sent] == [
        ("connection.consent_expiring", ENDS.isoformat()),
        ("connection.consent_expiring", renewed.isoformat()),
    ]
    assert (await connection(region_router, cid)).status is ConnectionStatus.ACTIVE


async def test_the_warning_period_is_configurable_and_others_are_left_alone(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    mine, unknown_bank, revoked, no_expiry = [await make_linked("eu") for _ in range(4)]
    for linked in (mine, unknown_bank, revoked):
        await consent_until(region_router, linked.connection.id, ENDS)
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection)
                              .where(Connection.id == unknown_bank.connection.id)
                              .values(bank_id="plaid"))  # Plaid announces its own expiry
        await session.execute(update(Connection).where(Connection.id == revoked.connection.id)
                              .values(status=ConnectionStatus.REVOKED))
    watch = ConsentWatch(region_router, banks, warning=timedelta(days=3))

    assert await watch.run_once(asyncio.Event(), now=ENDS - timedelta(days=4)) == 0
    assert await watch.run_once(asyncio.Event(), now=ENDS - timedelta(days=3)) == 1
    assert await watch.run_once(asyncio.Event(), now=ENDS + timedelta(days=1)) == 1

    assert [t for t, _ in await events(region_router, mine.connection.id)] == [
        "connection.consent_expiring", "connection.reauth_required"]
    for other in (unknown_bank, revoked, no_expiry):
        assert await events(region_router, other.connection.id) == []
    assert (await connection(region_router, unknown_bank.connection.id)).status is (
        ConnectionStatus.ACTIVE)

"""The worker's scheduled sync: due connections synced once each, never past the budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from aggregator.ids import ConnectionId
from aggregator.models import Connection, SyncSpend, SyncState
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory, BudgetMetrics, spend_for_sync
from aggregator.worker.sync_schedule import ACTOR, SyncSchedule
from connectors import BankUnavailable, SyncPolicy, load_profiles
from tests.aggregator._factories import Linked, LinkFactory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class RecordingSyncer:
    """Stands in for :class:`~aggregator.sync.Syncer`: records, and marks the sync done."""

    def __init__(self, router: RegionRouter, fail: Exception | None = None) -> None:
        self.router = router
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    async def sync(self, connection_id: ConnectionId, *, actor: str = "gateway",
                   request_id: str | None = None, spent_at: datetime | None = None) -> None:
        self.calls.append((connection_id, actor))
        await asyncio.sleep(0.01)  # let a concurrent pass overlap
        if self.fail is not None:
            raise self.fail
        await synced_at(self.router, connection_id, NOW)


async def synced_at(router: RegionRouter, connection_id: str, at: datetime) -> None:
    async with router.session("eu") as session, session.begin():
        state = await session.get(SyncState, connection_id)
        if state is None:
            connection = await session.get(Connection, connection_id)
            assert connection is not None
            state = SyncState(connection_id=connection_id, user_id=connection.user_id)
            session.add(state)
        state.last_synced_at = at


@pytest.fixture
async def banks() -> AsyncIterator[BankDirectory]:
    profile = load_profiles([])["sandbox-eu"]
    assert profile.sync == SyncPolicy(interval_hours=6, daily_budget=4)
    async with httpx.AsyncClient() as http:  # never used: the syncer is a stand-in
        yield BankDirectory({"sandbox": profile}, http)


async def spent(router: RegionRouter, linked: Linked) -> list[tuple[str, str, str]]:
    """(ledger account: ``''`` or ``account``, data type, reason) of every spend."""
    async with router.reader("eu") as session:
        rows = await session.execute(
            select(SyncSpend.account_id, SyncSpend.data_type, SyncSpend.reason)
            .where(SyncSpend.connection_id == linked.connection.id)
            .order_by(SyncSpend.account_id, SyncSpend.data_type, SyncSpend.n)
        )
        return [("account" if a == linked.account.id else a, t.value, reason)
                for a, t, reason in rows]


async def test_a_due_connection_is_synced_and_one_without_budget_is_skipped(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    due, broke, fresh = [await make_linked("eu") for _ in range(3)]
    await synced_at(region_router, due.connection.id, NOW - timedelta(hours=7))
    # Four on-demand syncs 17-20 h ago: none within the interval, but no budget left.
    for hours in (20, 19, 18, 17):
        await spend_for_sync(region_router, ConnectionId(broke.connection.id),
                             SyncPolicy(), reason="on_demand", now=NOW - timedelta(hours=hours))
    await synced_at(region_router, fresh.connection.id, NOW - timedelta(hours=1))
    syncer = RecordingSyncer(region_router)
    job = SyncSchedule(region_router, banks, syncer)

    assert await job.run_once(asyncio.Event(), now=NOW) == 1

    assert syncer.calls == [(due.connection.id, ACTOR)]
    # A full sync: the account list, and the one account's balances and transactions.
    assert await spent(region_router, due) == [("", "accounts", "scheduled"),
                                               ("account", "accounts", "scheduled"),
                                               ("account", "transactions", "scheduled")]
    assert len(await spent(region_router, broke)) == 12  # untouched
    assert await spent(region_router, fresh) == []
    # Even when the query's budget filter is bypassed, the claim refuses to overspend.
    assert not await job.sync_one("eu", broke.connection.id, SyncPolicy(), now=NOW)
    assert len(syncer.calls) == 1


async def test_concurrent_worker_passes_sync_a_due_connection_once(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")  # never synced: due at once
    syncer = RecordingSyncer(region_router)
    jobs = [SyncSchedule(region_router, banks, syncer) for _ in range(4)]

    done = await asyncio.gather(*(job.run_once(asyncio.Event(), now=NOW) for job in jobs))

    assert sum(done) == 1
    assert syncer.calls == [(linked.connection.id, ACTOR)]
    assert len(await spent(region_router, linked)) == 3
    # The next pass within the interval finds nothing due; after it, the connection is.
    assert await jobs[0].run_once(asyncio.Event(), now=NOW + timedelta(hours=5)) == 0
    assert await jobs[0].run_once(asyncio.Event(), now=NOW + timedelta(hours=6)) == 1


async def test_a_failed_scheduled_sync_keeps_its_unit_and_waits_an_interval(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")
    syncer = RecordingSyncer(region_router, fail=BankUnavailable("sandbox is down"))
    job = SyncSchedule(region_router, banks, syncer)

    assert await job.run_once(asyncio.Event(), now=NOW) == 0
    assert await job.run_once(asyncio.Event(), now=NOW + timedelta(hours=1)) == 0

    assert len(syncer.calls) == 1  # no hot loop against a failing bank
    assert len(await spent(region_router, linked)) == 3


async def test_scheduled_syncs_leave_the_reserve_for_a_webhook_triggered_sync(
    region_router: RegionRouter, make_linked: LinkFactory, banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")
    syncer = RecordingSyncer(region_router)
    registry = CollectorRegistry()
    job = SyncSchedule(region_router, banks, syncer, metrics=BudgetMetrics.of(registry))
    for hours in (0, 6, 12):
        assert await job.run_once(asyncio.Event(), now=NOW + timedelta(hours=hours)) == 1

    # Due by the interval, but three of four units are the scheduled share: it waits.
    later = NOW + timedelta(hours=18)
    assert await job.run_once(asyncio.Event(), now=later) == 0
    assert not await job.sync_one("eu", linked.connection.id, SyncPolicy(), now=later)
    assert registry.get_sample_value("aggregator_sync_budget_exhausted_total",
                                     {"bank": "sandbox", "reason": "scheduled"}) == 1.0
    # The bank says there is new data: the reserved unit serves it.
    await spend_for_sync(region_router, ConnectionId(linked.connection.id), SyncPolicy(),
                         reason="webhook", now=later)
    assert [r for _, _, r in await spent(region_router, linked)].count("webhook") == 3
    # Every spend counts against the scheduled share: with the first one aged out, the
    # window still holds three (6 h, 12 h, the webhook's); after the next, a unit is free.
    assert await job.run_once(asyncio.Event(), now=NOW + timedelta(hours=24)) == 0
    assert await job.run_once(asyncio.Event(), now=NOW + timedelta(hours=30)) == 1
    assert len(syncer.calls) == 4

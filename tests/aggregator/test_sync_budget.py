"""Sync rate budgets: a rolling 24 h ledger that concurrent spenders never overrun."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, DataType, SyncSpend
from aggregator.store import RegionRouter
from aggregator.sync import (
    BudgetExhausted,
    ConnectionNotActive,
    next_allowed_at,
    spend_for_sync,
)
from connectors import SyncPolicy
from tests.aggregator._factories import LinkFactory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = SyncPolicy(interval_hours=6, daily_budget=4)


async def spends(router: RegionRouter, connection_id: str) -> dict[DataType, int]:
    async with router.reader("eu") as session:
        rows = await session.execute(
            select(SyncSpend.data_type, func.count()).where(
                SyncSpend.connection_id == connection_id
            ).group_by(SyncSpend.data_type)
        )
        return {data_type: count for data_type, count in rows}


async def allowed_at(router: RegionRouter, connection_id: str, now: datetime,
                     policy: SyncPolicy = POLICY) -> datetime:
    async with router.reader("eu") as session:
        return await next_allowed_at(session, connection_id, policy, now)


async def test_a_burst_of_concurrent_spends_never_exceeds_the_budget(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    connection_id = ConnectionId(linked.connection.id)

    results = await asyncio.gather(*(
        spend_for_sync(region_router, connection_id, POLICY, reason="on_demand", now=T0)
        for _ in range(12)
    ), return_exceptions=True)

    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert [r for r in results if r is not None and r not in refused] == []
    assert len(results) - len(refused) == POLICY.daily_budget
    assert await spends(region_router, connection_id) == {
        DataType.ACCOUNTS: 4, DataType.TRANSACTIONS: 4}
    assert {r.next_allowed_at for r in refused} == {T0 + timedelta(hours=24)}
    assert {r.retry_after for r in refused} == {24 * 3600}


async def test_next_sync_allowed_at_follows_the_rolling_window(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    connection_id = ConnectionId(linked.connection.id)
    made = [T0 + timedelta(hours=h) for h in (0, 1, 2, 3)]
    for at in made:
        assert await allowed_at(region_router, connection_id, at) == at  # allowed now
        await spend_for_sync(region_router, connection_id, POLICY, reason="on_demand", now=at)

    later = T0 + timedelta(hours=5)
    assert await allowed_at(region_router, connection_id, later) == T0 + timedelta(hours=24)
    with pytest.raises(BudgetExhausted) as caught:
        await spend_for_sync(region_router, connection_id, POLICY, reason="on_demand",
                             now=later)
    assert caught.value.retry_after == 19 * 3600

    # The first spend ages out exactly 24 h after it was made, and only that one.
    again = T0 + timedelta(hours=24)
    await spend_for_sync(region_router, connection_id, POLICY, reason="on_demand", now=again)
    assert await allowed_at(region_router, connection_id, again) == made[1] + timedelta(
        hours=24)
    assert await spends(region_router, connection_id) == {  # the aged-out row was pruned
        DataType.ACCOUNTS: 4, DataType.TRANSACTIONS: 4}


async def test_a_lowered_budget_counts_the_spends_already_made(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    for h in (0, 1, 2):
        await spend_for_sync(region_router, ConnectionId(linked.connection.id), POLICY,
                             reason="scheduled", now=T0 + timedelta(hours=h))

    tighter = SyncPolicy(daily_budget=2)
    now = T0 + timedelta(hours=3)
    # Three spends, room for one fewer than two: the second must age out first.
    assert await allowed_at(region_router, linked.connection.id, now, tighter) == (
        T0 + timedelta(hours=25))


async def test_a_connection_that_is_not_active_spends_nothing(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == linked.connection.id)
                              .values(status=ConnectionStatus.REAUTH_REQUIRED))

    with pytest.raises(ConnectionNotActive):
        await spend_for_sync(region_router, ConnectionId(linked.connection.id), POLICY,
                             reason="on_demand", now=T0)
    assert await spends(region_router, linked.connection.id) == {}

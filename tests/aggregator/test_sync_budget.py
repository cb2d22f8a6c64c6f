"""Sync rate budgets: rolling 24 h ledgers per account and data type that concurrent
spenders never overrun, with a reserve scheduled syncs leave alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, update

from aggregator.ids import ConnectionId, new_id
from aggregator.models import (
    Account,
    AccountType,
    Connection,
    ConnectionStatus,
    DataType,
    SyncSpend,
)
from aggregator.store import RegionRouter
from aggregator.sync import (
    SCHEDULED,
    BudgetExhausted,
    BudgetMetrics,
    ConnectionNotActive,
    account_allowed_at,
    lock_connection,
    next_allowed_at,
    record_first_reads,
    spend_for_sync,
)
from connectors import SyncPolicy
from tests.aggregator._factories import Linked, LinkFactory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = SyncPolicy(interval_hours=6, daily_budget=4, reserve=1)


async def spends(router: RegionRouter, connection_id: str) -> dict[tuple[str, DataType], int]:
    """Spends per ledger: (account id or '', data type)."""
    async with router.reader("eu") as session:
        rows = await session.execute(
            select(SyncSpend.account_id, SyncSpend.data_type, func.count()).where(
                SyncSpend.connection_id == connection_id
            ).group_by(SyncSpend.account_id, SyncSpend.data_type)
        )
        return {(account, data_type): count for account, data_type, count in rows}


def full(account_id: str, n: int) -> dict[tuple[str, DataType], int]:
    """The ledgers of ``n`` full syncs of a connection with one account."""
    return {("", DataType.ACCOUNTS): n, (account_id, DataType.ACCOUNTS): n,
            (account_id, DataType.TRANSACTIONS): n}


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
    assert [r for r in results if r != T0 and r not in refused] == []  # spent_at, or refused
    assert len(results) - len(refused) == POLICY.daily_budget
    assert await spends(region_router, connection_id) == full(linked.account.id, 4)
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
    # The aged-out rows were pruned.
    assert await spends(region_router, connection_id) == full(linked.account.id, 4)


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


async def add_account(router: RegionRouter, linked: Linked, name: str) -> str:
    async with router.session("eu") as session, session.begin():
        account = Account(id=new_id("acc", "eu"), connection_id=linked.connection.id,
                          user_id=linked.user.id, bank_account_id=f"bank-{name}", name=name,
                          type=AccountType.SAVINGS, currency="EUR")
        session.add(account)
    return account.id


async def test_concurrent_scheduled_and_webhook_spenders_respect_ledgers_and_reserve(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    second = await add_account(region_router, linked, "Savings")
    connection_id = ConnectionId(linked.connection.id)
    reasons = [SCHEDULED, "webhook", "on_demand"] * 6

    results = await asyncio.gather(*(
        spend_for_sync(region_router, connection_id, POLICY, reason=reason, now=T0)
        for reason in reasons
    ), return_exceptions=True)

    assert all(r == T0 or isinstance(r, BudgetExhausted) for r in results)
    served = [reason for reason, r in zip(reasons, results, strict=True) if r == T0]
    assert len(served) == POLICY.daily_budget
    assert served.count(SCHEDULED) <= POLICY.daily_budget - POLICY.reserve
    # Every ledger, the list's and each account's, holds exactly the budget.
    assert await spends(region_router, connection_id) == {
        **full(linked.account.id, 4), (second, DataType.ACCOUNTS): 4,
        (second, DataType.TRANSACTIONS): 4}


async def test_a_webhook_after_three_scheduled_syncs_is_still_served(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    connection_id = ConnectionId(linked.connection.id)
    for hours in (0, 6, 12):
        await spend_for_sync(region_router, connection_id, POLICY, reason=SCHEDULED,
                             now=T0 + timedelta(hours=hours))
    at = T0 + timedelta(hours=18)
    async with region_router.reader("eu") as session:
        scheduled_at = await next_allowed_at(session, connection_id, POLICY, at,
                                             reason=SCHEDULED)
    assert scheduled_at == T0 + timedelta(hours=24)  # the reserve is not the worker's
    assert await allowed_at(region_router, connection_id, at) == at  # but is on demand
    with pytest.raises(BudgetExhausted):
        await spend_for_sync(region_router, connection_id, POLICY, reason=SCHEDULED, now=at)

    await spend_for_sync(region_router, connection_id, POLICY, reason="webhook", now=at)

    with pytest.raises(BudgetExhausted) as caught:
        await spend_for_sync(region_router, connection_id, POLICY, reason="webhook",
                             now=at + timedelta(minutes=1))
    assert caught.value.next_allowed_at == T0 + timedelta(hours=24)
    assert await spends(region_router, connection_id) == full(linked.account.id, 4)


async def test_each_account_has_its_own_ledger(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    first = linked.account.id
    second = await add_account(region_router, linked, "Savings")
    connection_id = ConnectionId(linked.connection.id)
    # A webhook about the first account reads it alone, four times: its ledger is full.
    for minutes in range(4):
        await spend_for_sync(region_router, connection_id, POLICY, reason="webhook",
                             now=T0 + timedelta(minutes=minutes), accounts=[first])
    now = T0 + timedelta(hours=1)
    with pytest.raises(BudgetExhausted):
        await spend_for_sync(region_router, connection_id, POLICY, reason="webhook", now=now,
                             accounts=[first])
    # The second account and the account list are untouched, so reads of them go on; a
    # full sync, which reads the first account too, waits for its oldest spend to age out.
    await spend_for_sync(region_router, connection_id, POLICY, reason="webhook", now=now,
                         accounts=[second])
    assert await allowed_at(region_router, connection_id, now) == T0 + timedelta(hours=24)
    async with region_router.reader("eu") as session:
        per_account = await account_allowed_at(session, connection_id, POLICY, now)
    assert per_account == {first: T0 + timedelta(hours=24), second: now}
    assert await spends(region_router, connection_id) == {
        (first, DataType.ACCOUNTS): 4, (first, DataType.TRANSACTIONS): 4,
        (second, DataType.ACCOUNTS): 1, (second, DataType.TRANSACTIONS): 1}


async def test_an_item_level_spend_uses_the_connection_ledgers_only(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    connection_id = ConnectionId(linked.connection.id)

    await spend_for_sync(region_router, connection_id, POLICY, reason="webhook", now=T0,
                         accounts=())

    assert await spends(region_router, connection_id) == {
        ("", DataType.ACCOUNTS): 1, ("", DataType.TRANSACTIONS): 1}


async def test_the_first_read_of_a_new_account_is_booked_within_its_budget(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    connection_id = ConnectionId(linked.connection.id)
    for hours in (0, 1, 2):
        await spend_for_sync(region_router, connection_id, POLICY, reason="on_demand",
                             now=T0 + timedelta(hours=hours))
    # The third sync's account list named a new account, read once before it was known.
    new = await add_account(region_router, linked, "Savings")
    async with region_router.session("eu") as session, session.begin():
        locked = await lock_connection(session, connection_id)
        assert locked is not None
        booked = await record_first_reads(session, locked, {linked.account.id},
                                          now=T0 + timedelta(hours=2))
    assert booked == 1

    # One more full sync fits (the new account has used one unit of four), then none.
    await spend_for_sync(region_router, connection_id, POLICY, reason="on_demand",
                         now=T0 + timedelta(hours=3))
    with pytest.raises(BudgetExhausted):
        await spend_for_sync(region_router, connection_id, POLICY, reason="on_demand",
                             now=T0 + timedelta(hours=4))
    counts = await spends(region_router, connection_id)
    assert counts[(new, DataType.ACCOUNTS)] == counts[(new, DataType.TRANSACTIONS)] == 2
    assert counts[(linked.account.id, DataType.TRANSACTIONS)] == 4


async def test_refused_spends_are_counted_by_bank_and_reason(
    region_router: RegionRouter, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    registry = CollectorRegistry()
    metrics = BudgetMetrics.of(registry)
    assert BudgetMetrics.of(registry) is metrics  # one per registry: no duplicate series
    tight = SyncPolicy(daily_budget=1)
    connection_id = ConnectionId(linked.connection.id)
    await spend_for_sync(region_router, connection_id, tight, reason="on_demand", now=T0,
                         metrics=metrics)
    for reason in ("on_demand", "on_demand", SCHEDULED):
        with pytest.raises(BudgetExhausted):
            await spend_for_sync(region_router, connection_id, tight, reason=reason, now=T0,
                                 metrics=metrics)

    def sample(reason: str) -> float | None:
        return registry.get_sample_value("aggregator_sync_budget_exhausted_total",
                                         {"bank": "sandbox", "reason": reason})

    assert (sample("on_demand"), sample(SCHEDULED)) == (2.0, 1.0)

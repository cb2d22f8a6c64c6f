"""The worker's scheduled sync: each due connection synced once, within its bank's budget.

A connection is due when its last successful sync (``sync_states.last_synced_at``) is
older than its bank profile's ``[sync] interval_hours``, no unit of its budget was spent
within that interval, and every ledger of it (per account and data type) has room below
``daily_budget - reserve`` in the rolling 24 h (:mod:`aggregator.sync.budget`): the
reserve is left for on-demand and webhook-triggered syncs. The candidates are found by
a plain read, which already leaves out connections without budget; a worker then
*claims* one in a write transaction that locks the connection row (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite's writers take turns), checks again that it is due and
spends the budget with reason ``scheduled`` (a refusal there, a race lost to another
spender, counts in ``aggregator_sync_budget_exhausted_total{reason="scheduled"}``). The
spend is the lease: a second worker finds it and skips the connection, and if the
claiming worker dies before syncing, the connection is due again one interval later
(its unit stays spent; the bank may have counted the call). The sync itself
(:class:`~aggregator.sync.Syncer`) runs after the claim commits, with no lock held
across the bank calls.

Plaid connections (``bank_id`` :data:`~aggregator.sync.banks.PLAID_BANK_ID`) of a region
with Plaid set up are scheduled the same way, under the region's Plaid policy
(:meth:`~aggregator.sync.BankDirectory.plaid_policy`): webhooks may be lost or late, and
a scheduled sync is what catches up. Plaid's ``/transactions/sync`` is one item-level
call, so their spends are about the connection as a whole (``accounts=()``), as the
webhook path's are (:mod:`aggregator.plaid.apply`).

A sync the egress policy refused marks the connection ``status_reason``
``egress_refused`` (:mod:`aggregator.worker.egress`); the next successful one clears it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import ColumnElement, and_, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, SyncSpend, SyncState
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync import (
    SCHEDULED,
    WINDOW,
    BankDirectory,
    BudgetExhausted,
    BudgetMetrics,
    lock_connection,
    spend,
)
from aggregator.sync.banks import PLAID_BANK_ID
from aggregator.sync.budget import limit_for
from aggregator.worker.egress import clear_refused, mark_refused
from connectors import ConnectorError, EgressRefused, SyncPolicy

log = logging.getLogger(__name__)

#: The audit trail's actor (a closed set, :data:`aggregator.audit.SYSTEM_ACTORS`): a
#: name outside it made the real Syncer's audit record refuse every scheduled sync.
ACTOR: Final = "worker"


class ConnectionSync(Protocol):
    """What the job runs for a claimed connection: :class:`~aggregator.sync.Syncer`."""

    async def sync(self, connection_id: ConnectionId, *, actor: str = ...,
                   request_id: str | None = ...) -> Any: ...


@dataclass
class SyncSchedule:
    """:class:`~aggregator.worker.jobs.PeriodicJob` running scheduled syncs; one per worker.

    Example::

        SyncSchedule(router, banks, Syncer(router, custody, banks), batch=20)
    """

    router: RegionRouter
    banks: BankDirectory
    syncer: ConnectionSync
    batch: int = 20
    interval: float = 60.0
    name: str = "sync_schedule"
    metrics: BudgetMetrics | None = None

    async def run_once(self, stop: asyncio.Event, *, now: datetime | None = None) -> int:
        synced = 0
        for region in self.router.regions:
            for bank_id, policy, accounts in self.targets(region):
                for connection_id in await self.due(region, bank_id, policy, now or utcnow()):
                    if stop.is_set():
                        return synced
                    if await self.sync_one(region, connection_id, policy, now=now,
                                           accounts=accounts):
                        synced += 1
        return synced

    def targets(self, region: str) -> Iterator[tuple[str, SyncPolicy, Collection[str] | None]]:
        """(bank id, its policy, the ledgers a sync spends as in
        :func:`~aggregator.sync.budget.ledgers`) of every bank ``region``'s connections use."""
        for bank_id in self.banks.bank_ids(region):
            if not self.banks.is_plaid(bank_id):  # a profile may not pose as Plaid
                yield bank_id, self.banks.profile(bank_id).sync, None
        if region in self.banks.plaid_regions():
            yield PLAID_BANK_ID, self.banks.plaid_policy(region), ()

    async def due(self, region: str, bank_id: str, policy: SyncPolicy, now: datetime
                  ) -> list[str]:
        """Connections to ``bank_id`` due for a scheduled sync, least recently synced first."""
        c, s = Connection, SyncState
        interval = timedelta(hours=policy.interval_hours)
        async with self.router.reader(region) as session:
            return list((await session.execute(
                select(c.id).outerjoin(s, s.connection_id == c.id).where(
                    c.bank_id == bank_id, c.status == ConnectionStatus.ACTIVE,
                    s.last_synced_at.is_(None) | (s.last_synced_at <= now - interval),
                    ~_spent_since(now - interval),
                    ~_a_ledger_full(limit_for(policy, SCHEDULED), now),
                ).order_by(s.last_synced_at.asc().nulls_first(), c.id).limit(self.batch)
            )).scalars())

    async def sync_one(self, region: str, connection_id: str, policy: SyncPolicy, *,
                       now: datetime | None = None,
                       accounts: Collection[str] | None = None) -> bool:
        """Claim and sync one connection; False if it was not due any more, or failed.

        ``accounts`` as in :func:`~aggregator.sync.budget.ledgers`: ``()`` for Plaid.
        """
        if not await self._claim(region, connection_id, policy, now or utcnow(), accounts):
            return False
        try:
            await self.syncer.sync(ConnectionId(connection_id), actor=ACTOR)
        except ConnectorError as exc:  # recorded on sync_states.last_error by the Syncer
            log.warning("scheduled sync of %s failed: %s", connection_id, exc.code)
            if isinstance(exc, EgressRefused):  # configuration, not an outage
                async with self.router.session(region) as session, session.begin():
                    await mark_refused(session, connection_id)
            return False
        async with self.router.session(region) as session, session.begin():
            await clear_refused(session, connection_id)
        return True

    async def _claim(self, region: str, connection_id: str, policy: SyncPolicy,
                     now: datetime, accounts: Collection[str] | None) -> bool:
        interval = timedelta(hours=policy.interval_hours)
        async with self.router.session(region) as session, session.begin():
            connection = await lock_connection(session, connection_id, skip_locked=True)
            if connection is None or connection.status is not ConnectionStatus.ACTIVE:
                return False
            if not await _still_due(session, connection_id, now - interval):
                return False
            try:
                await spend(session, connection, policy, now=now, reason=SCHEDULED,
                            accounts=accounts, metrics=self.metrics)
            except BudgetExhausted as exc:
                log.info("scheduled sync of %s waits for its budget until %s",
                         connection_id, exc.next_allowed_at.isoformat())
                return False
        return True


def _spent_since(since: datetime) -> ColumnElement[bool]:
    p = SyncSpend
    return exists().where(p.connection_id == Connection.id, p.spent_at > since)


def _a_ledger_full(limit: int, now: datetime) -> ColumnElement[bool]:
    """Some ledger of the connection holds ``limit`` spends in the window already.

    A prefilter only: the claim's :func:`~aggregator.sync.budget.spend` decides, under
    the row lock.
    """
    p = SyncSpend
    return exists(
        select(literal(1)).where(p.connection_id == Connection.id, p.spent_at > now - WINDOW)
        .group_by(p.account_id, p.data_type).having(func.count() >= limit)
    )


async def _still_due(session: AsyncSession, connection_id: str, since: datetime) -> bool:
    s, p = SyncState, SyncSpend
    synced = (await session.execute(
        select(s.last_synced_at).where(s.connection_id == connection_id)
    )).scalar_one_or_none()
    if synced is not None and synced > since:
        return False
    spent = (await session.execute(
        select(exists().where(and_(p.connection_id == connection_id, p.spent_at > since)))
    )).scalar_one()
    return not spent

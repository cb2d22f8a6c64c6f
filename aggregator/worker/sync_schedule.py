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

Retries that keep the budget: a scheduled sync that fails *transiently* (a timeout, a
connect error, a 5xx, a 429: :class:`~connectors.BankUnavailable`) is retried after
:func:`retry_delay` (exponential from :data:`RETRY_BASE`, at least the bank's
``Retry-After``, never more than the ceiling: :data:`RETRY_CEILING` or a quarter of the
interval, whichever is shorter), at most :data:`MAX_RETRIES` times, then it waits for
the interval as before. ``sync_states.retry_at`` makes the connection due again
although units were spent within the interval. Each retry spends its units like any
scheduled sync (so the bank's limit holds, the reserve included), and the units of calls
that never reached the bank are refunded (:func:`~aggregator.sync.refund`: a connect
error was not counted, an answered call was).
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
from connectors import BankUnavailable, ConnectorError, EgressRefused, SyncPolicy

log = logging.getLogger(__name__)

#: The first retry's delay after a transient failure; each further one doubles it.
RETRY_BASE: Final = timedelta(seconds=60)
#: No retry waits longer than this (or a quarter of the profile's interval, if shorter),
#: whatever ``Retry-After`` asks: it would otherwise cost the sync interval.
RETRY_CEILING: Final = timedelta(minutes=15)
#: Transient failures retried before the connection waits for its interval.
MAX_RETRIES: Final = 4


def retry_delay(attempt: int, retry_after: float | None, interval: timedelta) -> timedelta:
    """The wait before retry number ``attempt`` (0-based): doubling from
    :data:`RETRY_BASE`, at least ``retry_after`` (RFC 9110 §10.2.3), at most the ceiling."""
    ceiling = min(RETRY_CEILING, interval / 4)
    backoff = RETRY_BASE * (2 ** min(attempt, 16))
    wanted: timedelta = max(backoff, timedelta(seconds=retry_after or 0))
    return min(wanted, ceiling)


#: The audit trail's actor (a closed set, :data:`aggregator.audit.SYSTEM_ACTORS`): a
#: name outside it made the real Syncer's audit record refuse every scheduled sync.
ACTOR: Final = "worker"


class ConnectionSync(Protocol):
    """What the job runs for a claimed connection: :class:`~aggregator.sync.Syncer`."""

    async def sync(self, connection_id: ConnectionId, *, actor: str = ...,
                   request_id: str | None = ..., spent_at: datetime | None = ...) -> Any: ...


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
                    (s.last_synced_at.is_(None) | (s.last_synced_at <= now - interval))
                    & ~_spent_since(now - interval) | (s.retry_at <= now),
                    ~_a_ledger_full(limit_for(policy, SCHEDULED), now),
                ).order_by(s.last_synced_at.asc().nulls_first(), c.id).limit(self.batch)
            )).scalars())

    async def sync_one(self, region: str, connection_id: str, policy: SyncPolicy, *,
                       now: datetime | None = None,
                       accounts: Collection[str] | None = None) -> bool:
        """Claim and sync one connection; False if it was not due any more, or failed.

        ``accounts`` as in :func:`~aggregator.sync.budget.ledgers`: ``()`` for Plaid.
        """
        claimed_at = now or utcnow()
        if not await self._claim(region, connection_id, policy, claimed_at, accounts):
            return False
        try:
            await self.syncer.sync(ConnectionId(connection_id), actor=ACTOR,
                                   spent_at=claimed_at)
        except ConnectorError as exc:  # recorded on sync_states.last_error by the Syncer
            log.warning("scheduled sync of %s failed: %s", connection_id, exc.code)
            async with self.router.session(region) as session, session.begin():
                if isinstance(exc, EgressRefused):  # configuration, not an outage
                    await mark_refused(session, connection_id)
                elif isinstance(exc, BankUnavailable):
                    await _plan_retry(session, connection_id, exc.retry_after,
                                      timedelta(hours=policy.interval_hours), claimed_at)
            return False
        async with self.router.session(region) as session, session.begin():
            await clear_refused(session, connection_id)
            await _clear_retry(session, connection_id)
        return True

    async def _claim(self, region: str, connection_id: str, policy: SyncPolicy,
                     now: datetime, accounts: Collection[str] | None) -> bool:
        interval = timedelta(hours=policy.interval_hours)
        async with self.router.session(region) as session, session.begin():
            connection = await lock_connection(session, connection_id, skip_locked=True)
            if connection is None or connection.status is not ConnectionStatus.ACTIVE:
                return False
            if not await _still_due(session, connection_id, now, interval):
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


async def _plan_retry(session: AsyncSession, connection_id: str, retry_after: float | None,
                      interval: timedelta, failed_at: datetime) -> None:
    state = await session.get(SyncState, connection_id)
    if state is None:  # the Syncer records a state on every failure; erased meanwhile
        return
    if state.retry_attempts >= MAX_RETRIES:
        state.retry_at = None  # enough: the connection waits for its interval
        return
    delay = retry_delay(state.retry_attempts, retry_after, interval)
    state.retry_at = failed_at + delay
    state.retry_attempts += 1
    log.info("scheduled sync of %s retries in %ds (attempt %d)", connection_id,
             delay.total_seconds(), state.retry_attempts)


async def _clear_retry(session: AsyncSession, connection_id: str) -> None:
    state = await session.get(SyncState, connection_id)
    if state is not None:
        state.retry_at, state.retry_attempts = None, 0


async def _still_due(session: AsyncSession, connection_id: str, now: datetime,
                     interval: timedelta) -> bool:
    s, p, since = SyncState, SyncSpend, now - interval
    synced, retry_at = (await session.execute(
        select(s.last_synced_at, s.retry_at).where(s.connection_id == connection_id)
    )).one_or_none() or (None, None)
    if retry_at is not None and retry_at <= now:
        return True
    if synced is not None and synced > since:
        return False
    spent = (await session.execute(
        select(exists().where(and_(p.connection_id == connection_id, p.spent_at > since)))
    )).scalar_one()
    return not spent

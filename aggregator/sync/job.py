"""The sync job: one connection's accounts, balances and transactions, brought up to date.

Run inline at the end of linking, on demand (``POST /v1/connections/{id}/sync``) and
by the worker. Connections made through Plaid go to
:class:`aggregator.plaid.sync.PlaidSyncer` (cursor-based ``/transactions/sync``); the
rest read their bank's API. The order is fixed by what may wait on what: a fresh token
first (which may refresh at the bank), then every bank read, and only then one write
transaction, which locks the connection row so two syncs of one connection take turns.
A failure is recorded on ``sync_states.last_error`` as a short code, never a message.

Unattended syncs spend the connection's rate budget before they start
(:mod:`aggregator.sync.budget`); the first read of an account new to us cannot be spent
in advance, so a budgeted sync books it in its write transaction
(:func:`~aggregator.sync.budget.record_first_reads`). The Link flow's first sync runs
with the user present, which PSD2 RTS Art. 36(5) does not limit, and books nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.events.hooks import sync_completed
from aggregator.ids import ConnectionId
from aggregator.models import Account, Connection, SyncState, Transaction, TransactionStatus
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync.bank_limits import exhaust_until
from aggregator.sync.banks import BankDirectory
from aggregator.sync.budget import record_first_reads
from aggregator.sync.consents import consent_dead, explain_refusal, resource_headers
from aggregator.sync.snapshot import read_snapshot, window_start
from aggregator.sync.tokens import fresh_grant
from aggregator.sync.upsert import SnapshotWriter, SyncCounts
from connectors import AccessExceeded, ConnectorError, ConsentInvalid, UserPresence


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync did; ``counts`` are rows touched, not the connection's totals."""

    connection_id: ConnectionId
    counts: SyncCounts
    synced_at: datetime


@dataclass(frozen=True, slots=True)
class Syncer:
    """The sync job with what it needs, built once per process.

    Example::

        syncer = Syncer(router, custody, banks)
        result = await syncer.sync(connection_id, actor=app_id, request_id=request_id)
    """

    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    banks: BankDirectory

    async def sync(
        self, connection_id: ConnectionId, *, actor: str = "gateway",
        request_id: str | None = None, budgeted: bool = True,
        presence: UserPresence | None = None,
    ) -> SyncResult:
        """Sync one connection; ``presence`` with an address marks the user present
        (connectors/consents/base.py, ``UserPresence``)."""
        region = self.router.region_of(connection_id)
        if await self._through_plaid(region, connection_id):
            from aggregator.plaid.sync import PlaidSyncer  # the Plaid layer builds on this one

            counts, at = await PlaidSyncer(self.router, self.custody, self.banks).sync(
                connection_id, actor=actor, request_id=request_id)
            return SyncResult(connection_id, counts, at)
        custody = self.custody[region]
        grant = await fresh_grant(
            self.router, custody, self.banks, connection_id, owner=f"sync:{os.getpid()}"
        )
        connection = grant.connection
        since = await self._window(region, connection_id)
        try:
            dialect = self.banks.dialect(connection.bank_id, grant.access_token, grant.dpop_key,
                                         resource_headers(self.banks, connection, presence))
            snapshot = await read_snapshot(dialect, since)
        except ConnectorError as exc:
            error = await explain_refusal(self.banks, connection, exc)
            await self._failed(region, connection, error.code)
            if isinstance(error, AccessExceeded):  # the bank's frequencyPerDay is spent
                await exhaust_until(self.router, region, connection, error.reset_at,
                                    self.banks.profile(connection.bank_id).sync)
            if isinstance(error, ConsentInvalid):
                await consent_dead(self.router, region, connection, error, actor=actor)
            if error is exc:
                raise
            raise error from exc
        now = utcnow()
        async with self.router.session(region) as session, session.begin():
            locked = (await session.execute(
                select(Connection).where(Connection.id == connection_id).with_for_update()
            )).scalar_one()
            key = await custody.data_keys.load(session, locked.user_id)
            known = set((await session.execute(
                select(Account.id).where(Account.connection_id == connection_id)
            )).scalars())
            counts = await SnapshotWriter(session, custody, key, locked, now).apply(snapshot)
            if budgeted:
                await record_first_reads(session, locked, known, now=now)
            await _save_state(session, locked, now, synced_through=now.date(), error=None)
            await audit.record(
                session, actor=actor, action="connection.synced", target_id=connection_id,
                request_id=request_id,
            )
            await sync_completed(session, locked, accounts=counts.accounts, added=counts.added,
                                 modified=counts.modified, removed=counts.removed)
        return SyncResult(connection_id, counts, now)

    async def _through_plaid(self, region: str, connection_id: ConnectionId) -> bool:
        async with self.router.reader(region) as session:
            bank_id = (await session.execute(
                select(Connection.bank_id).where(Connection.id == connection_id)
            )).scalar_one_or_none()
        return bank_id is not None and self.banks.is_plaid(bank_id)

    async def _window(self, region: str, connection_id: ConnectionId) -> date | None:
        pending = (Transaction.connection_id == connection_id,
                   Transaction.status == TransactionStatus.PENDING,
                   Transaction.removed_at.is_(None))
        async with self.router.reader(region) as session:
            state = await session.get(SyncState, connection_id)
            oldest = (await session.execute(
                select(func.min(Transaction.booked_on)).where(*pending)
            )).scalar_one_or_none()
            undated = (await session.execute(
                select(func.count()).select_from(Transaction)
                .where(*pending, Transaction.booked_on.is_(None))
            )).scalar_one()
        synced = state.synced_through if state is not None else None
        return window_start(synced, oldest, bool(undated))

    async def _failed(self, region: str, connection: Connection, code: str) -> None:
        async with self.router.session(region) as session, session.begin():
            await _save_state(session, connection, utcnow(), synced_through=None, error=code)


async def _save_state(
    session: AsyncSession, connection: Connection, now: datetime, *,
    synced_through: date | None, error: str | None,
) -> None:
    state = await session.get(SyncState, connection.id)
    if state is None:
        state = SyncState(connection_id=connection.id, user_id=connection.user_id)
        session.add(state)
    state.last_error = error[:64] if error else None
    if error is None:
        state.synced_through = synced_through
        state.last_synced_at = now

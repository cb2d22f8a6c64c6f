"""The sync job: one connection's accounts, balances and transactions, brought up to date.

Run inline at the end of linking, on demand (``POST /v1/connections/{id}/sync``) and
by the worker. Connections made through Plaid go to
:class:`aggregator.plaid.sync.PlaidSyncer` (cursor-based ``/transactions/sync``); the
rest read their bank's API. The order is fixed by what may wait on what: a fresh token
first (which may refresh at the bank), then every bank read, and only then one write
transaction, which locks the connection row so two syncs of one connection take turns.
Each sync leaves a run (:mod:`aggregator.sync.runs`): the account list is required, and
a resource of an account the bank refuses (403 ``not_permitted``) or lacks (404/501
``not_offered``) is recorded and skipped while what was read is committed (``partial``,
``sync.partial``); a failure commits nothing (``failed``, ``sync.failed``) and is kept on
``sync_states.last_error`` as a short code, never a message.

Unattended syncs spend the connection's rate budget before they start
(:mod:`aggregator.sync.budget`); the first read of an account new to us cannot be spent
in advance, so a budgeted sync books it in its write transaction
(:func:`~aggregator.sync.budget.record_first_reads`). The Link flow's first sync runs
with the user present, which PSD2 RTS Art. 36(5) does not limit, and books nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.bankhealth import CallRecorder
from aggregator.custody import RegionCustody
from aggregator.ids import ConnectionId
from aggregator.models import (
    Account,
    Connection,
    DataType,
    SyncState,
    Transaction,
    TransactionStatus,
)
from aggregator.models.base import utcnow
from aggregator.models.budgets import CONNECTION_LEVEL
from aggregator.store import RegionRouter
from aggregator.sync.bank_limits import exhaust_until
from aggregator.sync.banks import BankDirectory
from aggregator.sync.budget import Ledger, record_first_reads, refund
from aggregator.sync.consents import consent_dead, explain_refusal, resource_headers
from aggregator.sync.runs import (
    RunStart,
    SyncResult,
    record_failure,
    record_success,
    trigger_of,
)
from aggregator.sync.snapshot import CallLog, read_snapshot, window_start
from aggregator.sync.tokens import CredentialBusy, fresh_grant
from aggregator.sync.upsert import SnapshotWriter
from connectors import AccessExceeded, ConnectorError, ConsentInvalid, UserPresence

log = logging.getLogger(__name__)


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
    #: Where each sync's outcome and duration go (docs/architecture.md, "Bank health").
    recorder: CallRecorder | None = None

    async def sync(
        self, connection_id: ConnectionId, *, actor: str = "gateway",
        request_id: str | None = None, budgeted: bool = True,
        spent_at: datetime | None = None, presence: UserPresence | None = None,
    ) -> SyncResult:
        """Sync ``connection_id`` now; raises what failed it (after recording the run).

        ``spent_at``: when the caller spent this sync's budget units; the units of calls
        that never reached the bank are then refunded (:func:`~aggregator.sync.refund`).
        ``presence`` with an address marks the user present (connectors/consents/base.py,
        ``UserPresence``).
        """
        region = self.router.region_of(connection_id)
        if await self._through_plaid(region, connection_id):
            from aggregator.plaid.sync import PlaidSyncer  # the Plaid layer builds on this one

            return await PlaidSyncer(self.router, self.custody, self.banks).sync(
                connection_id, actor=actor, request_id=request_id, budgeted=budgeted,
                spent_at=spent_at)
        custody = self.custody[region]
        started = utcnow()
        calls = CallLog()
        try:
            grant = await fresh_grant(
                self.router, custody, self.banks, connection_id, owner=f"sync:{os.getpid()}",
                recorder=self.recorder,
            )
        except (ConnectorError, CredentialBusy) as exc:
            await self._failed(region, connection_id, trigger_of(actor, budgeted), started,
                               exc.code, None, calls, spent_at)
            raise
        start = RunStart(grant.connection, trigger_of(actor, budgeted), started)
        connection = grant.connection
        since = await self._window(region, connection_id)
        dialect = None
        reading = time.perf_counter()
        try:
            dialect = self.banks.dialect(connection.bank_id, grant.access_token, grant.dpop_key,
                                         resource_headers(self.banks, connection, presence))
            resources = self.banks.profile(connection.bank_id).api.resources
            snapshot = await read_snapshot(dialect, since, resources, calls)
        except ConnectorError as exc:
            error = await explain_refusal(self.banks, connection, exc)
            self._record(region, connection.bank_id, error.code, reading)
            await self._failed(region, connection_id, start.trigger, started, error.code,
                               dialect.last_request_id if dialect is not None else None,
                               calls, spent_at)
            log.warning("sync of %s at %s failed: %s", connection_id, connection.bank_id,
                        error.code, extra={"fields": {
                            "connection_id": connection_id, "bank": connection.bank_id,
                            "outcome": error.code}})
            if isinstance(error, AccessExceeded):  # the bank's frequencyPerDay is spent
                await exhaust_until(self.router, region, connection, error.reset_at,
                                    self.banks.profile(connection.bank_id).sync)
            if isinstance(error, ConsentInvalid):
                await consent_dead(self.router, region, connection, error, actor=actor)
            if error is exc:
                raise
            raise error from exc
        read_for = time.perf_counter() - reading
        now = utcnow()
        async with self.router.session(region) as session, session.begin():
            locked = (await session.execute(
                select(Connection).where(Connection.id == connection_id).with_for_update()
            )).scalar_one()
            key = await custody.data_keys.load(session, locked.user_id)
            known = set((await session.execute(
                select(Account.id).where(Account.connection_id == connection_id)
            )).scalars())
            writer = SnapshotWriter(session, custody, key, locked, now)
            counts = await writer.apply(snapshot)
            if budgeted:
                await record_first_reads(session, locked, known, now=now)
            if spent_at is not None:
                await refund(session, connection_id, spent_at,
                             await _sent_ledgers(session, connection_id, calls))
            run = await record_success(session, RunStart(locked, start.trigger, started),
                                       snapshot, writer.account_ids, counts, now)
            await audit.record(
                session, actor=actor, action="connection.synced", target_id=connection_id,
                request_id=request_id,
            )
        if self.recorder is not None:
            self.recorder.call(region, connection.bank_id, "sync", run.outcome.value, read_for)
        # One line per sync, naming ids, bank and outcome (docs/operations.md, "What runs").
        log.info("sync of %s at %s: %d accounts, +%d ~%d -%d transactions", connection_id,
                 connection.bank_id, counts.accounts, counts.added, counts.modified,
                 counts.removed, extra={"fields": {
                     "connection_id": connection_id, "bank": connection.bank_id,
                     "outcome": run.outcome.value, "actor": actor}})
        return SyncResult(connection_id, counts, now, run.outcome.value, run.id)

    def _record(self, region: str, bank_id: str, outcome: str, reading: float) -> None:
        """A sync that reached the bank's reads counts as a sync call (batched)."""
        if self.recorder is not None:
            self.recorder.call(region, bank_id, "sync", outcome, time.perf_counter() - reading)

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

    async def _failed(self, region: str, connection_id: ConnectionId, trigger: str,
                      started: datetime, code: str, request_id: str | None,
                      calls: CallLog, spent_at: datetime | None) -> None:
        async with self.router.session(region) as session, session.begin():
            connection = await session.get(Connection, connection_id)
            if connection is None:
                return  # erased meanwhile: nothing to record about
            if spent_at is not None:
                await refund(session, connection_id, spent_at,
                             await _sent_ledgers(session, connection_id, calls))
            await record_failure(session, RunStart(connection, trigger, started), code,
                                 request_id, utcnow())


async def _sent_ledgers(session: AsyncSession, connection_id: ConnectionId, calls: CallLog
                        ) -> set[Ledger]:
    """The budget ledgers (:mod:`aggregator.sync.budget`) of the calls that reached the bank."""
    ours = {bank_id: ours_id for bank_id, ours_id in await session.execute(
        select(Account.bank_account_id, Account.id).where(Account.connection_id == connection_id)
    )}
    found: set[Ledger] = set()
    for bank_account_id, resource in calls.sent:
        if resource == "accounts":
            found.add((CONNECTION_LEVEL, DataType.ACCOUNTS))
        elif bank_account_id in ours:
            found.add((ours[bank_account_id], DataType.ACCOUNTS if resource == "balances"
                       else DataType.TRANSACTIONS))
    return found

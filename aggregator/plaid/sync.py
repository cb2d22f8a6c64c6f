"""Syncing a Plaid connection: ``/accounts/get``, then ``/transactions/sync`` from our cursor.

Plaid reports changes, not snapshots: ``added``, ``modified`` and ``removed`` since the
cursor we stored (``sync_states.upstream_cursor``). The order mirrors the open-banking
sync (:mod:`aggregator.sync.job`): every Plaid call first, outside any transaction (the
connector loops while ``has_more`` and restarts from our cursor on
``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION``), then one write transaction that locks
the connection, applies the delta and stores the new cursor together, so a crash can
never store the cursor without the changes or the changes without the cursor.

If another sync of the same connection committed in between (the stored cursor is no
longer the one this run started from), this run's delta is dropped: the other run read
Plaid later or at the same time, and applying an older delta over it could regress rows.

Pending → posted (Plaid "Transactions: pending and posted"): a posted entry names its
pending predecessor in ``pending_transaction_id`` and Plaid lists the pending one in
``removed``; the predecessor becomes a tombstone either way, so the app sees removed +
added, as it does for the open-banking banks (:mod:`aggregator.sync.upsert`).

Each sync leaves a run (``sync_runs``, :mod:`aggregator.sync.runs`) as the bank syncs do:
its trigger, ``complete`` or ``failed`` with the error code, the counts, and per account
its ``balances`` (from ``/accounts/get``) and ``transactions`` (the Item-level
``/transactions/sync`` covers every account), which also set the accounts' freshness.
A budgeted sync's units (Item-level: the account list and the transactions) whose call
never reached Plaid are refunded by the rule of :mod:`aggregator.sync.budget`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.events.hooks import sync_completed
from aggregator.ids import ConnectionId
from aggregator.models import (
    Account,
    Connection,
    ConnectionStatus,
    DataType,
    ResourceOutcome,
    SyncOutcome,
    SyncRun,
    SyncState,
    Transaction,
)
from aggregator.models.base import utcnow
from aggregator.models.budgets import CONNECTION_LEVEL
from aggregator.reauth import require_reauth
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from aggregator.sync.budget import Ledger, refund
from aggregator.sync.runs import (
    RunStart,
    SyncResult,
    add_run,
    resource_entry,
    touch_resource,
    trigger_of,
)
from aggregator.sync.snapshot import AccountSnapshot, reached_bank
from aggregator.sync.tokens import ConnectionNotActive, load_credential
from aggregator.sync.upsert import SnapshotWriter, SyncCounts, _Plan
from connectors import Account as BankAccount
from connectors import Balance, ConnectorError, ItemLoginRequired, SyncBatch
from connectors import Transaction as BankTransaction
from vault import Secret

log = logging.getLogger(__name__)
_IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's limits
T = TypeVar("T")
#: The Item-level ledgers of a Plaid sync's two calls (:func:`aggregator.sync.budget.ledgers`
#: with ``accounts=()``).
_ACCOUNTS: Ledger = (CONNECTION_LEVEL, DataType.ACCOUNTS)
_TRANSACTIONS: Ledger = (CONNECTION_LEVEL, DataType.TRANSACTIONS)


@dataclass(frozen=True, slots=True)
class PlaidDelta:
    """Everything one Plaid sync read, before anything is written."""

    accounts: Sequence[BankAccount]
    balances: Sequence[Balance]
    batch: SyncBatch


class DeltaWriter(SnapshotWriter):
    """Applies a Plaid delta through :class:`SnapshotWriter`'s sealing and change log."""

    async def apply_delta(self, delta: PlaidDelta) -> SyncCounts:
        counts = SyncCounts(accounts=len(delta.accounts))
        balances = {b.bank_account_id: b for b in delta.balances}
        accounts: dict[str, Account] = {}
        for bank in delta.accounts:
            account = await self._account(bank)
            await self._balance(account, AccountSnapshot(bank, balances.get(bank.bank_account_id)))
            accounts[bank.bank_account_id] = account
            self.account_ids[bank.bank_account_id] = account.id
        plan = _Plan()
        await self._plan(plan, accounts, delta.batch)
        await self._write(plan, counts)
        return counts

    async def _plan(self, plan: _Plan, accounts: Mapping[str, Account], batch: SyncBatch
                    ) -> None:
        gone = {r.bank_transaction_id for r in batch.removed}
        reported: dict[str, BankTransaction] = {}
        for entry in (*batch.added, *batch.modified):  # a later page's version wins
            if entry.bank_transaction_id not in gone:
                reported[entry.bank_transaction_id] = entry
        replaced = {t.pending_transaction_id for t in reported.values()
                    if t.pending_transaction_id}
        held = await self._held({*reported, *gone, *replaced})
        for bank_id, entry in reported.items():
            account = accounts.get(entry.bank_account_id)
            if account is None:
                await self._unknown_account(entry.bank_account_id)
                continue
            row = held.get(bank_id)
            if row is None:
                plan.inserts.append(await self._new_row(account, entry))
            elif row.removed_at is not None:
                plan.updates.append({**await self._values(row, entry), "revive": True})
            elif changed := await self._changes(row, entry):
                plan.updates.append({"row_id": row.id, "revive": False, **changed})
        for bank_id in sorted(gone | (replaced - reported.keys())):
            row = held.get(bank_id)
            if row is not None and row.removed_at is None:
                plan.removals.append(row.id)

    async def _held(self, bank_ids: Iterable[str]) -> dict[str, Transaction]:
        wanted = sorted(bank_ids)
        found: dict[str, Transaction] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            rows = await self.session.execute(select(Transaction).where(
                Transaction.connection_id == self.connection.id,
                Transaction.bank_transaction_id.in_(wanted[i:i + _IN_CHUNK]),
            ))
            found.update((t.bank_transaction_id, t) for t in rows.scalars())
        return found

    async def _unknown_account(self, bank_account_id: str) -> None:
        # /accounts/get lists every account of the Item; a transaction of another one
        # means Plaid's two answers disagree. Skipped, never attached to a wrong account.
        log.warning("plaid connection %s: a transaction names an account /accounts/get did "
                    "not list; skipped", self.connection.id)


@dataclass(frozen=True, slots=True)
class PlaidSyncer:
    """The sync job for connections made through Plaid (``bank_id`` "plaid").

    Example::

        result = await PlaidSyncer(router, custody, banks).sync(connection_id)
    """

    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    banks: BankDirectory

    async def sync(self, connection_id: ConnectionId, *, actor: str = "gateway",
                   request_id: str | None = None, budgeted: bool = True,
                   spent_at: datetime | None = None) -> SyncResult:
        """As :meth:`aggregator.sync.Syncer.sync`: raises what failed the sync, after
        recording its run; ``spent_at`` gets the units of calls never sent refunded."""
        started = utcnow()
        region = self.router.region_of(connection_id)
        custody = self.custody[region]
        connector = self.banks.plaid(region)
        async with self.router.reader(region) as session:
            connection = await session.get(Connection, connection_id)
            if connection is None or connection.status is not ConnectionStatus.ACTIVE:
                state = "missing" if connection is None else connection.status.value
                raise ConnectionNotActive(f"connection {connection_id} is {state}")
            credential = await load_credential(session, connection_id)
            key = await custody.data_keys.load(session, connection.user_id)
            token = await custody.sealer.open_from(key, credential, "access_token_sealed")
            stored = await session.get(SyncState, connection_id)
        if token is None:
            raise ConnectionNotActive(f"connection {connection_id} holds no access token")
        cursor = stored.upstream_cursor if stored is not None else None
        access = Secret(token)
        start = RunStart(connection, trigger_of(actor, budgeted), started)
        sent: set[Ledger] = set()
        try:
            accounts, balances = await _counted(sent, _ACCOUNTS, connector.get_accounts(access))
            batch = await _counted(sent, _TRANSACTIONS,
                                   connector.sync_transactions(access, cursor))
        except ItemLoginRequired:
            await self._login_required(region, start, actor, request_id, spent_at, sent)
            raise
        except ConnectorError as exc:
            await self._failed(region, start, exc.code, spent_at, sent)
            raise
        delta = PlaidDelta(accounts, balances, batch)
        return await self._write(custody, start, cursor, delta, actor, request_id)

    async def _write(
        self, custody: RegionCustody, start: RunStart, cursor: str | None,
        delta: PlaidDelta, actor: str, request_id: str | None,
    ) -> SyncResult:
        connection_id = start.connection.id
        now = utcnow()
        async with self.router.session(custody.region) as session, session.begin():
            locked = (await session.execute(
                select(Connection).where(Connection.id == connection_id).with_for_update()
            )).scalar_one_or_none()
            if locked is None or locked.status is not ConnectionStatus.ACTIVE:
                raise ConnectionNotActive(f"connection {connection_id} stopped during sync")
            state = await _state(session, locked)
            run_start = RunStart(locked, start.trigger, start.started_at)
            if state.upstream_cursor != cursor:
                log.info("plaid connection %s: a concurrent sync committed first; this "
                         "run's delta is dropped", connection_id)
                run = add_run(session, run_start, SyncOutcome.COMPLETE, now)
                return SyncResult(connection_id, SyncCounts(), now, run.outcome.value, run.id)
            key = await custody.data_keys.load(session, locked.user_id)
            writer = DeltaWriter(session, custody, key, locked, now)
            counts = await writer.apply_delta(delta)
            run = await _record_run(session, run_start, delta, writer.account_ids, counts, now)
            state.upstream_cursor = delta.batch.next_cursor
            state.synced_through = now.date()
            state.last_synced_at = now
            state.last_error = None
            state.last_outcome = "complete"  # the API's last_sync_outcome
            await audit.record(session, actor=actor, action="connection.synced",
                               target_id=connection_id, request_id=request_id)
            await sync_completed(session, locked, accounts=counts.accounts, added=counts.added,
                                 modified=counts.modified, removed=counts.removed)
        return SyncResult(connection_id, counts, now, run.outcome.value, run.id)

    async def _failed(self, region: str, start: RunStart, code: str,
                      spent_at: datetime | None, sent: set[Ledger]) -> None:
        connection_id = start.connection.id
        async with self.router.session(region) as session, session.begin():
            connection = await session.get(Connection, connection_id)
            if connection is None:
                return  # erased meanwhile: nothing to record about
            state = await _state(session, connection)
            state.last_error = code[:64]
            state.last_outcome = "failed"
            await _close_failed(session, RunStart(connection, start.trigger, start.started_at),
                                code, spent_at, sent)

    async def _login_required(self, region: str, start: RunStart, actor: str,
                              request_id: str | None, spent_at: datetime | None,
                              sent: set[Ledger]) -> None:
        """Plaid says only the user can fix the Item: ``reauth_required``, event, audit."""
        connection_id = start.connection.id
        async with self.router.session(region) as session, session.begin():
            locked = (await session.execute(
                select(Connection).where(Connection.id == connection_id).with_for_update()
            )).scalar_one_or_none()
            if locked is None or locked.status is not ConnectionStatus.ACTIVE:
                return
            state = await _state(session, locked)
            state.last_error = ItemLoginRequired.code
            state.last_outcome = "failed"
            await _close_failed(session, RunStart(locked, start.trigger, start.started_at),
                                ItemLoginRequired.code, spent_at, sent)
            await session.flush()
            await require_reauth(session, connection_id, reason="item_login_required",
                                 actor=actor, request_id=request_id)


async def _counted(sent: set[Ledger], ledger: Ledger, call: Awaitable[T]) -> T:
    """Await one Plaid call; note its ledger in ``sent`` if Plaid may have counted it."""
    try:
        result = await call
    except ConnectorError as exc:
        if reached_bank(exc):
            sent.add(ledger)
        raise
    sent.add(ledger)
    return result


async def _close_failed(session: AsyncSession, start: RunStart, code: str,
                        spent_at: datetime | None, sent: set[Ledger]) -> SyncRun:
    """The failed run, and the refund of the units whose call never reached Plaid."""
    if spent_at is not None:
        await refund(session, start.connection.id, spent_at, sent)
    return add_run(session, start, SyncOutcome.FAILED, utcnow(), error_code=code)


async def _record_run(session: AsyncSession, start: RunStart, delta: PlaidDelta,
                      account_ids: Mapping[str, str], counts: SyncCounts, now: datetime
                      ) -> SyncRun:
    """The complete run, each account's ``balances`` and ``transactions`` on it and in its
    freshness: ``/accounts/get`` answered the one, ``/transactions/sync`` the other."""
    with_balance = {b.bank_account_id for b in delta.balances}
    entries = []
    for bank in delta.accounts:
        account_id = account_ids[bank.bank_account_id]
        for resource, read in (("balances", bank.bank_account_id in with_balance),
                               ("transactions", True)):
            if not read:
                continue
            entries.append(resource_entry(account_id, resource, ResourceOutcome.OK))
            await touch_resource(session, start.connection, account_id, resource,
                                 ResourceOutcome.OK, now)
    return add_run(session, start, SyncOutcome.COMPLETE, now, counts=counts, resources=entries)


async def _state(session: AsyncSession, connection: Connection) -> SyncState:
    state = await session.get(SyncState, connection.id)
    if state is None:
        state = SyncState(connection_id=connection.id, user_id=connection.user_id)
        session.add(state)
    return state


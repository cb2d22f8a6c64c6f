"""Recording a sync run: the run row, each account's resource freshness, the state, the event.

Everything here writes in the caller's transaction: a committed sync always has its run
and its event (``sync.completed``, ``sync.partial`` or ``sync.failed``), a rolled-back one
has neither. Error codes are our own short vocabulary (:attr:`ConnectorError.code`,
:attr:`GatewayError.code`); the message shown beside one comes from :data:`MESSAGES`,
never from the bank's answer, whose body may hold anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.events.hooks import sync_failed, sync_finished
from aggregator.ids import ConnectionId, new_id, parse_id
from aggregator.models import (
    AccountResource,
    Connection,
    ResourceOutcome,
    SyncOutcome,
    SyncRun,
    SyncState,
)
from aggregator.sync.snapshot import ResourceRead, Snapshot
from aggregator.sync.upsert import SyncCounts

#: What an application's user may read about an error code; unknown codes get the default.
MESSAGES: Mapping[str, str] = {
    "not_permitted": "The user's consent at the bank does not cover this data.",
    "not_offered": "The bank does not offer this data.",
    "bank_unavailable": "The bank could not be reached or asked us to slow down; "
                        "a later sync retries.",
    "egress_refused": "The gateway's outbound policy refused the bank's address.",
    "bank_protocol_error": "The bank answered something the gateway could not read.",
    "response_too_large": "The bank's answer was larger or slower than allowed.",
    "grant_revoked": "The bank no longer accepts the user's grant; the user must "
                     "re-authorise.",
    "credential_busy": "A token refresh for this connection did not finish; it is "
                       "being resolved.",
    "budget_exhausted": "The bank's daily limit of unattended reads is spent.",
}
DEFAULT_MESSAGE = "The sync failed; a later sync retries."


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync did; ``counts`` are rows touched, not the connection's totals."""

    connection_id: ConnectionId
    counts: SyncCounts
    synced_at: datetime
    #: ``complete`` or ``partial`` (a failed sync raises); and the run's id.
    outcome: str = "complete"
    run_id: str | None = None



def message_for(code: str) -> str:
    return MESSAGES.get(code, DEFAULT_MESSAGE)


def trigger_of(actor: str, budgeted: bool) -> str:
    """``link``, ``scheduled``, ``webhook`` or ``on_demand``, from who ran the sync."""
    if not budgeted:
        return "link"
    return {"worker": "scheduled", "webhook": "webhook"}.get(actor, "on_demand")


@dataclass(frozen=True, slots=True)
class RunStart:
    """What is known of a run when it starts: its connection, trigger and start time."""

    connection: Connection
    trigger: str
    started_at: datetime


def _entries(snapshot: Snapshot, account_ids: Mapping[str, str]) -> list[dict[str, Any]]:
    out = []
    for item in snapshot.accounts:
        for read in item.reads.values():
            out.append(_entry(read, account_ids.get(item.account.bank_account_id)))
    return out


def _entry(read: ResourceRead, account_id: str | None) -> dict[str, Any]:
    return {"account_id": account_id, "resource": read.resource, "outcome": read.outcome,
            "error_code": read.error_code, "request_id": read.request_id}


def add_run(
    session: AsyncSession, start: RunStart, outcome: SyncOutcome, now: datetime, *,
    counts: SyncCounts | None = None, error_code: str | None = None,
    request_id: str | None = None, resources: list[dict[str, Any]] | None = None,
) -> SyncRun:
    """Add the run row alone (no state, no event): for syncs that keep those themselves,
    such as Plaid's (:mod:`aggregator.plaid.sync`). ``resources`` as :func:`resource_entry`
    makes them."""
    counts = counts or SyncCounts()
    run = SyncRun(
        id=new_id("syn", _region(start.connection)), connection_id=start.connection.id,
        user_id=start.connection.user_id, trigger=start.trigger, started_at=start.started_at,
        finished_at=now, outcome=outcome, error_code=error_code[:64] if error_code else None,
        request_id=request_id[:64] if request_id else None, accounts=counts.accounts,
        added=counts.added, modified=counts.modified, removed=counts.removed,
        resources=resources or [],
    )
    session.add(run)
    return run


def resource_entry(account_id: str | None, resource: str, outcome: ResourceOutcome,
                   error_code: str | None = None, request_id: str | None = None
                   ) -> dict[str, Any]:
    """One ``sync_runs.resources`` entry (the shape :class:`SyncRun` documents)."""
    return {"account_id": account_id, "resource": resource, "outcome": outcome.value,
            "error_code": error_code, "request_id": request_id}


async def touch_resource(session: AsyncSession, connection: Connection, account_id: str,
                         resource: str, outcome: ResourceOutcome, now: datetime,
                         error_code: str | None = None) -> None:
    """The account's ``account_resources`` row for ``resource``: checked now, and synced
    now when ``outcome`` is ``ok`` (what ``freshness`` on an account shows)."""
    row = await session.get(AccountResource, (account_id, resource))
    if row is None:
        row = AccountResource(account_id=account_id, resource=resource,
                              user_id=connection.user_id)
        session.add(row)
    row.outcome = outcome
    row.error_code = error_code
    row.checked_at = now
    if outcome is ResourceOutcome.OK:
        row.synced_at = now


async def record_success(
    session: AsyncSession, start: RunStart, snapshot: Snapshot, account_ids: Mapping[str, str],
    counts: SyncCounts, now: datetime,
) -> SyncRun:
    """The run of a sync whose account list was read (complete or partial), in the write
    transaction that committed its data; emits ``sync.completed`` or ``sync.partial``."""
    outcome = SyncOutcome.COMPLETE if snapshot.complete else SyncOutcome.PARTIAL
    first_error = next((r.error_code for a in snapshot.accounts for r in a.reads.values()
                        if not r.expected), None)
    run = SyncRun(
        id=new_id("syn", _region(start.connection)), connection_id=start.connection.id,
        user_id=start.connection.user_id, trigger=start.trigger, started_at=start.started_at,
        finished_at=now, outcome=outcome, error_code=first_error,
        request_id=snapshot.listing.request_id if snapshot.listing else None,
        accounts=counts.accounts, added=counts.added, modified=counts.modified,
        removed=counts.removed, resources=_entries(snapshot, account_ids),
    )
    session.add(run)
    await _freshness(session, start.connection, snapshot, account_ids, now)
    await save_state(session, start.connection, now, outcome, error=first_error,
                     synced_through=now.date())
    await sync_finished(session, start.connection, outcome.value, reason=first_error,
                        accounts=counts.accounts, added=counts.added,
                        modified=counts.modified, removed=counts.removed)
    return run


async def record_failure(
    session: AsyncSession, start: RunStart, code: str, request_id: str | None, now: datetime,
) -> SyncRun:
    """The run of a sync that committed nothing; emits ``sync.failed`` with ``code``."""
    run = SyncRun(
        id=new_id("syn", _region(start.connection)), connection_id=start.connection.id,
        user_id=start.connection.user_id, trigger=start.trigger, started_at=start.started_at,
        finished_at=now, outcome=SyncOutcome.FAILED, error_code=code[:64],
        request_id=request_id[:64] if request_id else None, accounts=0, added=0,
        modified=0, removed=0, resources=[],
    )
    session.add(run)
    await save_state(session, start.connection, now, SyncOutcome.FAILED, error=code,
                     synced_through=None)
    await sync_failed(session, start.connection, reason=code[:64])
    return run


async def _freshness(session: AsyncSession, connection: Connection, snapshot: Snapshot,
                     account_ids: Mapping[str, str], now: datetime) -> None:
    for item in snapshot.accounts:
        account_id = account_ids[item.account.bank_account_id]
        for resource, read in item.reads.items():
            await touch_resource(session, connection, account_id, resource,
                                 ResourceOutcome(read.outcome), now, read.error_code)


async def save_state(
    session: AsyncSession, connection: Connection, now: datetime, outcome: SyncOutcome, *,
    error: str | None, synced_through: date | None,
) -> None:
    """``sync_states``: ``last_synced_at`` moves whenever data was committed."""
    state = await session.get(SyncState, connection.id)
    if state is None:
        state = SyncState(connection_id=connection.id, user_id=connection.user_id)
        session.add(state)
    state.last_error = error[:64] if error else None
    state.last_outcome = outcome.value
    if outcome is not SyncOutcome.FAILED:
        state.synced_through = synced_through
        state.last_synced_at = now
        state.retry_at, state.retry_attempts = None, 0  # no scheduled retry owed any more


def _region(connection: Connection) -> str:
    region = parse_id(connection.id, kind="con").region
    assert region is not None  # a connection id always names its region
    return region

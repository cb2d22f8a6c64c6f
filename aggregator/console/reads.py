"""What the console's pages read, one region at a time.

Every function here takes one region's read session and queries that region only:
no statement names two regions, and pages put regions side by side in Python
(:func:`aggregator.store.outage.each_region`), so one region being down costs only its
own column. Nothing sealed is selected: account numbers come from the clear
``masked_identifier`` column, and holder names, descriptions, counterparties and tokens
are never read at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.bankhealth.reads import refresh_history
from aggregator.console import paging
from aggregator.models import (
    Account,
    ApiKey,
    Application,
    AuditEvent,
    AuditHead,
    Connection,
    ConnectionStatus,
    Credential,
    DataKeyRecord,
    ErasureRequest,
    ErasureRevocation,
    ErasureState,
    KekRotation,
    OutboundEvent,
    RefreshAttempt,
    SyncRun,
    SyncSpend,
    SyncState,
)

EVENTS_PAGE = 50  # webhook events on a connection's page

#: A list's position in one region (aggregator/console/paging.py): None from the top.
After = tuple[datetime, str] | None


@dataclass
class Overview:
    statuses: dict[str, int]
    expiring: int
    open_erasures: int
    overdue_erasures: int
    audit_head: int
    events_pending: int
    events_failed: int


async def overview(session: AsyncSession, now: datetime) -> Overview:
    statuses = dict((await session.execute(
        select(Connection.status, func.count()).group_by(Connection.status)
    )).all())
    expiring = await session.scalar(select(func.count()).where(
        Connection.status == ConnectionStatus.ACTIVE,
        Connection.consent_expires_at.is_not(None),
        Connection.consent_expires_at <= now + timedelta(days=14)))
    open_q = select(func.count()).where(ErasureRequest.state != ErasureState.COMPLETED)
    open_erasures = await session.scalar(open_q)
    overdue = await session.scalar(open_q.where(ErasureRequest.deadline_at < now))
    head = await session.scalar(select(AuditHead.seq))
    pending = await session.scalar(select(func.count()).where(
        OutboundEvent.next_attempt_at.is_not(None)))
    failed = await session.scalar(select(func.count()).where(
        OutboundEvent.next_attempt_at.is_(None), OutboundEvent.delivered_at.is_(None)))
    return Overview({s.value: n for s, n in statuses.items()}, expiring or 0,
                    open_erasures or 0, overdue or 0, head or 0, pending or 0, failed or 0)


@dataclass
class AppView:
    app: Application
    keys: list[ApiKey]


async def applications(session: AsyncSession) -> list[AppView]:
    apps = (await session.execute(select(Application).order_by(Application.name,
                                                               Application.id))).scalars()
    keys = (await session.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars().all()
    return [AppView(a, [k for k in keys if k.application_id == a.id]) for a in apps]


@dataclass
class Delivery:
    delivered_24h: int = 0
    pending: int = 0
    failed: int = 0
    last_error: str | None = None
    last_status: int | None = None


async def deliveries(session: AsyncSession, now: datetime) -> dict[str, Delivery]:
    """Webhook delivery health per application in this region."""
    out: dict[str, Delivery] = {}
    e = OutboundEvent
    rows = (await session.execute(
        select(e.application_id,
               func.count().filter(e.delivered_at >= now - timedelta(hours=24)),
               func.count().filter(e.next_attempt_at.is_not(None)),
               func.count().filter(e.next_attempt_at.is_(None), e.delivered_at.is_(None)))
        .group_by(e.application_id)
    ))
    for app_id, delivered, pending, failed in rows:
        out[app_id] = Delivery(delivered, pending, failed)
    last = (await session.execute(
        select(e.application_id, e.last_error, e.last_status)
        .where(e.last_error.is_not(None)).order_by(e.created_at.desc()).limit(50)
    ))
    for app_id, error, status in last:
        d = out.setdefault(app_id, Delivery())
        if d.last_error is None:
            d.last_error, d.last_status = error, status
    return out


@dataclass(frozen=True)
class ConnectionFilter:
    status: str | None = None
    bank: str | None = None
    application: str | None = None
    region: str | None = None


async def connections(session: AsyncSession, where: ConnectionFilter, after: After = None
                      ) -> list[Connection]:
    """Newest first, up to one more than a page (the extra row says a next page exists)."""
    stmt = select(Connection)
    if after is not None:
        stmt = stmt.where(or_(Connection.created_at < after[0],
                              and_(Connection.created_at == after[0],
                                   Connection.id < after[1])))
    if where.status:
        stmt = stmt.where(Connection.status == ConnectionStatus(where.status))
    if where.bank:
        stmt = stmt.where(Connection.bank_id == where.bank)
    if where.application:
        stmt = stmt.where(Connection.application_id == where.application)
    stmt = stmt.order_by(Connection.created_at.desc(), Connection.id.desc()).limit(paging.PAGE + 1)
    return list((await session.execute(stmt)).scalars())


@dataclass
class ConnectionDetail:
    connection: Connection
    credential: Any | None
    sync: SyncState | None
    accounts: list[Any]
    history: list[AuditEvent]
    events: list[OutboundEvent]
    spends: list[Any] = field(default_factory=list)
    refreshes: list[RefreshAttempt] = field(default_factory=list)
    #: The latest sync runs (bank and Plaid syncs alike), newest first.
    runs: list[SyncRun] = field(default_factory=list)


async def connection_events(session: AsyncSession, found: Connection, after: After = None
                            ) -> list[OutboundEvent]:
    """Events about the connection, newest first, up to one more than a page of
    :data:`EVENTS_PAGE`; matched on the payload's ``connection_id`` in SQL."""
    e = OutboundEvent
    stmt = select(e).where(e.user_id == found.user_id,
                           e.data["connection_id"].as_string() == found.id)
    if after is not None:
        stmt = stmt.where(or_(e.created_at < after[0],
                              and_(e.created_at == after[0], e.id < after[1])))
    return list((await session.execute(
        stmt.order_by(e.created_at.desc(), e.id.desc()).limit(EVENTS_PAGE + 1)
    )).scalars())


async def connection(session: AsyncSession, connection_id: str, events_after: After = None
                     ) -> ConnectionDetail | None:
    found = await session.get(Connection, connection_id)
    if found is None:
        return None
    c = Credential
    credential = (await session.execute(
        select(c.access_expires_at, c.refresh_due_at, c.attempts, c.updated_at,
               c.refresh_started_at, c.lease_expires_at, c.version)
        .where(c.connection_id == connection_id)
    )).one_or_none()
    sync = await session.get(SyncState, connection_id)
    accounts = (await session.execute(
        select(Account.id, Account.type, Account.currency, Account.masked_identifier,
               Account.updated_at)
        .where(Account.connection_id == connection_id).order_by(Account.created_at)
    )).all()
    history = (await session.execute(
        select(AuditEvent).where(AuditEvent.target_id == connection_id)
        .order_by(AuditEvent.seq.desc()).limit(50)
    )).scalars().all()
    events = await connection_events(session, found, events_after)
    spends = (await session.execute(
        select(SyncSpend.data_type, SyncSpend.account_id, SyncSpend.spent_at, SyncSpend.reason)
        .where(SyncSpend.connection_id == connection_id)
        .order_by(SyncSpend.spent_at.desc()).limit(20)
    )).all()
    refreshes = await refresh_history(session, connection_id)
    runs = (await session.execute(
        select(SyncRun).where(SyncRun.connection_id == connection_id)
        .order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(20)
    )).scalars().all()
    return ConnectionDetail(found, credential, sync, list(accounts), list(history), events,
                            list(spends), refreshes, list(runs))


@dataclass
class BankStats:
    statuses: dict[str, int] = field(default_factory=dict)
    sync_errors: int = 0
    last_error: str | None = None
    exhausted: int = 0  # connections with a budget ledger at its limit now


async def bank_stats(session: AsyncSession, now: datetime, budgets: dict[str, int]
                     ) -> dict[str, BankStats]:
    """Per bank: connections by status, sync errors, connections at their sync budget."""
    out: dict[str, BankStats] = {}
    for bank, status, n in (await session.execute(
        select(Connection.bank_id, Connection.status, func.count())
        .group_by(Connection.bank_id, Connection.status)
    )):
        out.setdefault(bank, BankStats()).statuses[status.value] = n
    for bank, n, last in (await session.execute(
        select(Connection.bank_id, func.count(), func.max(SyncState.last_error))
        .join(SyncState, SyncState.connection_id == Connection.id)
        .where(SyncState.last_error.is_not(None)).group_by(Connection.bank_id)
    )):
        stats = out.setdefault(bank, BankStats())
        stats.sync_errors, stats.last_error = n, last
    ledgers = (await session.execute(
        select(Connection.bank_id, SyncSpend.connection_id, func.count())
        .join(Connection, Connection.id == SyncSpend.connection_id)
        .where(SyncSpend.spent_at > now - timedelta(hours=24))
        .group_by(Connection.bank_id, SyncSpend.connection_id, SyncSpend.account_id,
                  SyncSpend.data_type)
    ))
    full: dict[str, set[str]] = {}
    for bank, connection_id, n in ledgers:
        if n >= budgets.get(bank, 4):
            full.setdefault(bank, set()).add(connection_id)
    for bank, ids in full.items():
        out.setdefault(bank, BankStats()).exhausted = len(ids)
    return out


@dataclass
class DayOutcomes:
    day: str
    counts: dict[str, int]


#: Audit actions that tell how a connection's grant or data fared, for the chart.
OUTCOMES = ("connection.synced", "connection.reauth_required", "connection.linked")


async def outcomes_by_bank(session: AsyncSession, now: datetime, days: int = 14
                           ) -> dict[str, dict[str, dict[str, int]]]:
    """bank -> day (ISO) -> action -> count, from this region's audit trail."""
    since = now - timedelta(days=days)
    rows = (await session.execute(
        select(Connection.bank_id, AuditEvent.occurred_at, AuditEvent.action)
        .join(Connection, Connection.id == AuditEvent.target_id)
        .where(AuditEvent.occurred_at >= since, AuditEvent.action.in_(OUTCOMES))
    ))
    out: dict[str, dict[str, dict[str, int]]] = {}
    for bank, at, act in rows:
        day = out.setdefault(bank, {}).setdefault(at.date().isoformat(), {})
        day[act] = day.get(act, 0) + 1
    return out


async def expiries(session: AsyncSession, now: datetime, days: int) -> list[Connection]:
    return list((await session.execute(
        select(Connection).where(
            Connection.status.in_([ConnectionStatus.ACTIVE, ConnectionStatus.REAUTH_REQUIRED]),
            Connection.consent_expires_at.is_not(None),
            Connection.consent_expires_at <= now + timedelta(days=days))
        .order_by(Connection.consent_expires_at, Connection.id).limit(paging.PAGE)
    )).scalars())


@dataclass
class ErasureView:
    request: ErasureRequest
    revocations: dict[str, int]
    retryable: int


async def erasures(session: AsyncSession, after: After = None) -> list[ErasureView]:
    """Newest first, up to one more than a page."""
    q = ErasureRequest
    stmt = select(q)
    if after is not None:
        stmt = stmt.where(or_(q.requested_at < after[0],
                              and_(q.requested_at == after[0], q.id < after[1])))
    requests = (await session.execute(
        stmt.order_by(q.requested_at.desc(), q.id.desc()).limit(paging.PAGE + 1)
    )).scalars().all()
    r = ErasureRevocation
    counts: dict[str, dict[str, int]] = {}
    retry: dict[str, int] = {}
    for request_id, outcome, escrowed, n in (await session.execute(
        select(r.request_id, r.outcome, r.token_escrow.is_not(None), func.count())
        .where(r.request_id.in_([q.id for q in requests]))
        .group_by(r.request_id, r.outcome, r.token_escrow.is_not(None))
    )):
        by = counts.setdefault(request_id, {})
        by[outcome.value] = by.get(outcome.value, 0) + n
        if outcome.value == "failed" and escrowed:
            retry[request_id] = retry.get(request_id, 0) + n
    return [ErasureView(q, counts.get(q.id, {}), retry.get(q.id, 0)) for q in requests]


@dataclass
class Custody:
    rotation: KekRotation | None
    versions: list[tuple[str, str, int, int]]  # provider, kek id, version, data keys


async def custody(session: AsyncSession) -> Custody:
    rotation = (await session.execute(select(KekRotation).limit(1))).scalar_one_or_none()
    d = DataKeyRecord
    versions = (await session.execute(
        select(d.provider, d.kek_id, d.kek_version, func.count())
        .group_by(d.provider, d.kek_id, d.kek_version)
        .order_by(d.kek_id, d.kek_version.desc())
    )).all()
    return Custody(rotation, list(versions))


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    actor: str | None = None
    target: str | None = None


async def audit_events(session: AsyncSession, where: AuditFilter, before: int | None = None
                       ) -> list[AuditEvent]:
    """Newest first (by ``seq``), up to one more than a page."""
    stmt = select(AuditEvent)
    if before is not None:
        stmt = stmt.where(AuditEvent.seq < before)
    if where.action:
        stmt = stmt.where(or_(AuditEvent.action == where.action,
                              AuditEvent.action.startswith(where.action + ".", autoescape=True)))
    if where.actor:
        stmt = stmt.where(AuditEvent.actor == where.actor)
    if where.target:
        stmt = stmt.where(and_(AuditEvent.target_id == where.target))
    stmt = stmt.order_by(AuditEvent.seq.desc()).limit(paging.PAGE + 1)
    return list((await session.execute(stmt)).scalars())

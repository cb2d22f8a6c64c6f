"""The local steps of an erasure, each one transaction that also advances the state.

Two transactions do the local work: :func:`stop` (no new activity, grants enlisted for
revocation) and :func:`conclude` (delete every row, destroy the data key, write the
receipt). Deleting, shredding and finishing need no commit of their own: one
transaction makes them all-or-nothing, which is as resumable as three (a crash leaves
the request at ``stopped`` with nothing deleted) and pays one commit instead of three.
Every transaction ends with a compare-and-set of ``erasure_requests.state`` from the
state it started in: a second runner that got there first makes it roll back whole (its
deletes included) instead of counting rows twice. Which tables hold a user's rows is
read from the metadata (every table with a ``user_id`` foreign key to ``users``), so a
table added later is erased without a change here.

Why nothing is resurrected by a refresh or a sync racing the job:

- :func:`stop` bumps every credential's ``version`` and clears its lease: a refresh in
  flight persists through a compare-and-set on the version it claimed, finds none, and
  gives up (:func:`aggregator.sync.tokens.persist_refresh`); connections become
  ``revoked``, so no worker leases them again and no sync gets a grant;
- :func:`unrevoked` locks the user's connections first (``FOR UPDATE``; SQLite's
  single writer does the same), so a sync that already holds one commits before the
  delete reads, and one that comes later finds no connection;
- every user-owned table has a foreign key to ``users``, deleted with the data key: an
  insert after that fails on the key, and nothing can be sealed for the user again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.erasure.escrow import seal_token
from aggregator.events.hooks import user_erased
from aggregator.ids import UserId
from aggregator.models import (
    Connection,
    ConnectionStatus,
    Credential,
    DataKeyRecord,
    ErasureRequest,
    ErasureRevocation,
    ErasureState,
    LinkSession,
    LinkStatus,
    RevocationOutcome,
    User,
    metadata,
)
from aggregator.models.base import table_of

_requests = table_of(ErasureRequest)
_revocations = table_of(ErasureRevocation)
_connections = table_of(Connection)
_credentials = table_of(Credential)
_links = table_of(LinkSession)
_users = table_of(User)
_data_keys = table_of(DataKeyRecord)

#: A seam for tables that must be scrubbed rather than deleted (the outbox keeps PII-free
#: delivery metadata of events about the user). Each hook runs inside the deletion
#: transaction and returns rows touched per table name.
ErasureHook = Callable[[AsyncSession, UserId], Awaitable[dict[str, int]]]
HOOKS: list[ErasureHook] = []

#: Deleted by :func:`shred` (with the key), not by :func:`delete_rows`.
_KEPT_FOR_SHRED = frozenset({"users", "data_keys"})

#: Connection-reached tables whose rows may also name a grant by its external id
#: (``connections.external_ref``, e.g. Plaid's ``item_id``) without a foreign key: a
#: webhook stored as orphaned before its connection existed still names the user's item.
EXTERNAL_REF_COLUMNS: dict[str, str] = {"plaid_webhook_events": "item_id"}


class StepLost(Exception):
    """Another runner advanced the request first; this step's transaction is discarded."""


async def advance(
    session: AsyncSession, request_id: str, current: ErasureState, target: ErasureState,
    **values: Any,
) -> None:
    result = await session.execute(
        update(_requests).where(_requests.c.id == request_id, _requests.c.state == current)
        .values(state=target, **values)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise StepLost(f"erasure {request_id} left state {current.value} meanwhile")


def user_tables() -> list[Table]:
    """Tables holding rows of a user, children before parents (safe delete order)."""
    out = []
    for table in reversed(metadata.sorted_tables):
        column = table.columns.get("user_id")
        if column is None or table.name in _KEPT_FOR_SHRED:
            continue
        if any(fk.column.table.name == "users" for fk in column.foreign_keys):
            out.append(table)
    return out


def connection_tables() -> list[tuple[Table, Column[Any]]]:
    """Tables reaching a user only through a connection (Plaid webhook events), with the
    column that names it: deleted, and counted, before the connections themselves."""
    out = []
    for table in reversed(metadata.sorted_tables):
        if "user_id" in table.columns or table.name == "connections":
            continue
        for column in table.columns:
            if any(fk.column.table.name == "connections" for fk in column.foreign_keys):
                out.append((table, column))
    return out


async def enlist(
    session: AsyncSession, custody: RegionCustody, request_id: str, user_id: UserId,
    now: datetime, *, first: bool = False,
) -> int:
    """Stop every connection of the user not enlisted yet; returns how many were new.

    Each gets a revocation row holding its token in escrow, its status ``revoked`` and
    its credential's lease voided (version bumped, so an in-flight refresh cannot store).
    ``first``: called by :func:`stop`, whose transaction is the only one that can have
    enlisted anything before (it commits together with leaving ``requested``).
    """
    known = [] if first else (await session.execute(
        select(_revocations.c.connection_id, _revocations.c.n)
        .where(_revocations.c.request_id == request_id)
    )).all()
    enlisted = {row.connection_id for row in known}
    last = max((row.n for row in known), default=0)
    rows = (await session.execute(
        select(Connection, Credential)
        .outerjoin(Credential, Credential.connection_id == Connection.id)
        .where(Connection.user_id == user_id).order_by(Connection.id)
    )).all()
    fresh = [(c, k) for c, k in rows if c.id not in enlisted]
    if not fresh:
        return 0
    key = await custody.data_keys.load(session, user_id)
    revocations = []
    for n, (connection, credential) in enumerate(fresh, start=int(last) + 1):
        token_type, token = None, None
        if credential is not None and connection.status is not ConnectionStatus.REVOKED:
            token_type = "refresh_token" if credential.refresh_token_sealed else "access_token"
            token = await custody.sealer.open_from(key, credential, f"{token_type}_sealed")
        consent_id = (connection.consent_id
                      if connection.status is not ConnectionStatus.REVOKED else None)
        raced = credential is not None and credential.refresh_started_at is not None and (
            credential.lease_expires_at is not None and credential.lease_expires_at > now
        )
        revocations.append({
            "request_id": request_id, "n": n, "connection_id": connection.id,
            "bank_id": connection.bank_id, "bank_client_id": connection.bank_client_id,
            "token_type": token_type if token else None,
            "token_escrow": seal_token(custody.hasher, request_id, n, token) if token else None,
            # A consent resource (connectors/consents) is deleted at the bank even when
            # no token is left; it stays in clear on this row only until then.
            "consent_id": consent_id,
            "outcome": RevocationOutcome.PENDING if token or consent_id
            else RevocationOutcome.NO_TOKEN,
            "attempts": 0, "raced_refresh": raced,
        })
    await session.execute(_revocations.insert(), revocations)
    ids = [c.id for c, _ in fresh]
    await session.execute(update(_connections).where(_connections.c.id.in_(ids)).values(
        status=ConnectionStatus.REVOKED, status_reason="erasure", updated_at=now,
    ))
    await session.execute(update(_credentials).where(_credentials.c.connection_id.in_(ids))
                          .values(lease_owner=None, lease_expires_at=None, refresh_due_at=None,
                                  refresh_started_at=None,
                                  version=_credentials.c.version + 1))
    return len(fresh)


async def stop(
    session: AsyncSession, custody: RegionCustody, request: ErasureRequest, now: datetime
) -> None:
    """Step 1: no new activity for the user (see the module docstring)."""
    user_id = _user(request)
    await session.execute(update(_users).where(
        _users.c.id == user_id, _users.c.erasing_since.is_(None)).values(erasing_since=now))
    await session.execute(update(_links).where(
        _links.c.user_id == user_id,
        _links.c.status.in_([LinkStatus.PENDING, LinkStatus.AUTHORIZING]),
    ).values(status=LinkStatus.EXPIRED, expires_at=now))
    await enlist(session, custody, request.id, user_id, now, first=True)
    await advance(session, request.id, ErasureState.REQUESTED, ErasureState.STOPPED,
                  started_at=request.started_at or now)


async def unrevoked(session: AsyncSession, request: ErasureRequest) -> int:
    """Lock the user's connections; count those created after :func:`stop` (a Link
    callback already in flight), which must be enlisted and revoked before deleting."""
    known = select(_revocations.c.connection_id).where(
        _revocations.c.request_id == request.id, _revocations.c.connection_id.is_not(None)
    )
    rows = (await session.execute(
        select(_connections.c.id, _connections.c.id.in_(known).label("known"))
        .where(_connections.c.user_id == _user(request)).with_for_update(of=_connections)
    )).all()
    return sum(1 for row in rows if not row.known)


async def delete_rows(session: AsyncSession, request: ErasureRequest) -> dict[str, int]:
    """Every row of the user but the user row and its key, counted per table.

    The caller has checked :func:`unrevoked` in this same transaction, so no grant is
    deleted before it was revoked. Rows reaching the user through a connection (Plaid
    webhooks) are deleted here, including those recorded as orphaned that name one of
    the user's grants by its external id (a webhook that arrived before the connection
    existed). The rows of :func:`user_tables` are *counted* here and deleted by the
    ``ON DELETE CASCADE`` of the user row in :func:`shred`, in the same transaction: a
    plain cascade's cost, where deleting child tables first makes every parent's
    cascade re-scan the children it just emptied. The counts are exact because the user
    row is locked first (``FOR UPDATE``): any insert of a row owned by the user takes a
    key-share lock on it (its foreign key check) and so either committed before the
    count or waits for this transaction and then fails; SQLite's single writer gives
    the same. The final scan of every table proves nothing is left (tests).
    """
    user_id = _user(request)
    await session.execute(select(_users.c.id).where(_users.c.id == user_id).with_for_update())
    counts: dict[str, int] = {}
    owned = select(_connections.c.id).where(_connections.c.user_id == user_id)
    refs = select(_connections.c.external_ref).where(
        _connections.c.user_id == user_id, _connections.c.external_ref.is_not(None))
    for table, column in connection_tables():
        where: ColumnElement[bool] = column.in_(owned)
        if (named := EXTERNAL_REF_COLUMNS.get(table.name)) is not None:
            where = where | table.c[named].in_(refs)
        result = await session.execute(delete(table).where(where))
        counts[table.name] = counts.get(table.name, 0) + _count(result)
    tables = user_tables()
    row = (await session.execute(select(*(
        select(func.count()).select_from(table).where(table.c.user_id == user_id)
        .scalar_subquery().label(table.name) for table in tables
    )))).one()
    counts.update({table.name: int(n) for table, n in zip(tables, row, strict=True)})
    for hook in HOOKS:
        for name, count in (await hook(session, user_id)).items():
            counts[name] = counts.get(name, 0) + count
    return counts


async def shred(
    session: AsyncSession, custody: RegionCustody, request: ErasureRequest
) -> dict[str, int]:
    """Destroy the wrapped data key and delete the user row (its cascade deletes what
    :func:`delete_rows` counted).

    Every value ever sealed for the user, in this database, its replicas and its
    backups, needs that key: from here on none of them opens (``DataKeyDestroyed``).
    """
    user_id = _user(request)
    keys = 1 if await custody.data_keys.destroy(session, user_id) else 0
    result = await session.execute(delete(_users).where(_users.c.id == user_id))
    return {"data_keys": keys, "users": _count(result)}


async def conclude(
    session: AsyncSession, custody: RegionCustody, request: ErasureRequest, now: datetime,
    *, actor: str,
) -> dict[str, int]:
    """Delete the rows, destroy the key, forget the user id, close the receipt and append
    ``user.erased``: one transaction, from whichever of ``revoked``/``deleted``/
    ``shredded`` an older release left the request in, or from ``stopped``."""
    state = request.state
    user_id = request.user_id  # forgotten by the advance below; the event still names it
    counts = dict(request.counts or {})
    if state in (ErasureState.STOPPED, ErasureState.REVOKED):
        counts.update(await delete_rows(session, request))
    if state is not ErasureState.SHREDDED:
        counts.update(await shred(session, custody, request))
    await session.execute(update(_revocations).where(_revocations.c.request_id == request.id)
                          .values(connection_id=None))
    await advance(session, request.id, state, ErasureState.COMPLETED, counts=counts,
                  user_id=None, completed_at=now, lease_owner=None, lease_expires_at=None,
                  last_error=None)
    await audit.record(session, actor=actor, action="user.erased", target_id=request.id)
    for listener in ERASED_LISTENERS:
        await listener(session, request.id, user_id)
    return counts


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


#: The seam for the ``user.erased`` outbound event: the outbox writes it here, in the
#: transaction that completes the request. Listeners get the request id and the erased
#: user's id (the gateway's random id; the receipt itself keeps only its digest).
ErasedListener = Callable[[AsyncSession, str, str | None], Awaitable[None]]
ERASED_LISTENERS: list[ErasedListener] = [user_erased]


def _user(request: ErasureRequest) -> UserId:
    if request.user_id is None:
        raise RuntimeError(f"erasure {request.id} no longer knows its user")
    return UserId(request.user_id)

"""The local steps of an erasure, each one transaction that also advances the state.

Every step ends with a compare-and-set of ``erasure_requests.state`` from the state it
started in: a second runner that got there first makes the step roll back whole (its
deletes included) instead of counting rows twice. Which tables hold a user's rows is
read from the metadata (every table with a ``user_id`` foreign key to ``users``), so a
table added later is erased without a change here.

Why nothing is resurrected by a refresh or a sync racing the job:

- :func:`stop` bumps every credential's ``version`` and clears its lease: a refresh in
  flight persists through a compare-and-set on the version it claimed, finds none, and
  gives up (:func:`aggregator.sync.tokens.persist_refresh`); connections become
  ``revoked``, so no worker leases them again and no sync gets a grant;
- :func:`delete_rows` locks the user's connections first (``FOR UPDATE``; SQLite's
  single writer does the same), so a sync that already holds one commits before the
  delete reads, and one that comes later finds no connection;
- every user-owned table has a foreign key to ``users``, deleted in :func:`shred`: an
  insert after that fails on the key, and nothing can be sealed for the user again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, delete, func, select, update
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
    now: datetime,
) -> int:
    """Stop every connection of the user not enlisted yet; returns how many were new.

    Each gets a revocation row holding its token in escrow, its status ``revoked`` and
    its credential's lease voided (version bumped, so an in-flight refresh cannot store).
    """
    known = set((await session.execute(
        select(_revocations.c.connection_id).where(_revocations.c.request_id == request_id)
    )).scalars())
    last = (await session.execute(
        select(func.coalesce(func.max(_revocations.c.n), 0))
        .where(_revocations.c.request_id == request_id)
    )).scalar_one()
    rows = (await session.execute(
        select(Connection, Credential)
        .outerjoin(Credential, Credential.connection_id == Connection.id)
        .where(Connection.user_id == user_id).order_by(Connection.id)
    )).all()
    fresh = [(c, k) for c, k in rows if c.id not in known]
    if not fresh:
        return 0
    key = await custody.data_keys.load(session, user_id)
    for n, (connection, credential) in enumerate(fresh, start=int(last) + 1):
        token_type, token = None, None
        if credential is not None and connection.status is not ConnectionStatus.REVOKED:
            token_type = "refresh_token" if credential.refresh_token_sealed else "access_token"
            token = await custody.sealer.open_from(key, credential, f"{token_type}_sealed")
        raced = credential is not None and credential.refresh_started_at is not None and (
            credential.lease_expires_at is not None and credential.lease_expires_at > now
        )
        await session.execute(_revocations.insert().values(
            request_id=request_id, n=n, connection_id=connection.id, bank_id=connection.bank_id,
            token_type=token_type if token else None,
            token_escrow=seal_token(custody.hasher, request_id, n, token) if token else None,
            outcome=RevocationOutcome.PENDING if token else RevocationOutcome.NO_TOKEN,
            attempts=0, raced_refresh=raced,
        ))
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
    await enlist(session, custody, request.id, user_id, now)
    await advance(session, request.id, ErasureState.REQUESTED, ErasureState.STOPPED,
                  started_at=request.started_at or now)


async def unenlisted(session: AsyncSession, request: ErasureRequest) -> int:
    """Connections created after :func:`stop` (a Link callback already in flight)."""
    known = select(_revocations.c.connection_id).where(
        _revocations.c.request_id == request.id, _revocations.c.connection_id.is_not(None)
    )
    return int((await session.execute(
        select(func.count()).select_from(_connections).where(
            _connections.c.user_id == _user(request), _connections.c.id.not_in(known)
        )
    )).scalar_one())


async def delete_rows(session: AsyncSession, request: ErasureRequest) -> dict[str, int]:
    """Step 3: every row of the user but the user row and its key, counted per table.

    The caller has checked :func:`unenlisted` in this same transaction after
    :func:`lock_connections`, so no grant is deleted before it was revoked.
    """
    user_id = _user(request)
    counts: dict[str, int] = {}
    owned = select(_connections.c.id).where(_connections.c.user_id == user_id)
    for table, column in connection_tables():
        result = await session.execute(delete(table).where(column.in_(owned)))
        counts[table.name] = counts.get(table.name, 0) + int(getattr(result, "rowcount", 0) or 0)
    for table in user_tables():
        result = await session.execute(delete(table).where(table.c.user_id == user_id))
        counts[table.name] = int(getattr(result, "rowcount", 0) or 0)
    for hook in HOOKS:
        for name, count in (await hook(session, user_id)).items():
            counts[name] = counts.get(name, 0) + count
    await advance(session, request.id, ErasureState.REVOKED, ErasureState.DELETED,
                  counts=counts)
    return counts


async def lock_connections(session: AsyncSession, request: ErasureRequest) -> None:
    await session.execute(
        select(_connections.c.id).where(_connections.c.user_id == _user(request))
        .with_for_update()
    )


async def shred(
    session: AsyncSession, custody: RegionCustody, request: ErasureRequest
) -> dict[str, int]:
    """Step 4: destroy the wrapped data key and delete the user row, in one transaction.

    Every value ever sealed for the user, in this database, its replicas and its
    backups, needs that key: from here on none of them opens (``DataKeyDestroyed``).
    """
    user_id = _user(request)
    keys = 1 if await custody.data_keys.destroy(session, user_id) else 0
    result = await session.execute(delete(_users).where(_users.c.id == user_id))
    counts = {**(request.counts or {}), "data_keys": keys,
              "users": int(getattr(result, "rowcount", 0) or 0)}
    await advance(session, request.id, ErasureState.DELETED, ErasureState.SHREDDED,
                  counts=counts)
    return counts


async def finish(
    session: AsyncSession, request: ErasureRequest, now: datetime, *, actor: str
) -> None:
    """Step 5: forget the user id, close the receipt, append ``user.erased``."""
    await session.execute(update(_revocations).where(_revocations.c.request_id == request.id)
                          .values(connection_id=None))
    await advance(session, request.id, ErasureState.SHREDDED, ErasureState.COMPLETED,
                  user_id=None, completed_at=now, lease_owner=None, lease_expires_at=None,
                  last_error=None)
    await audit.record(session, actor=actor, action="user.erased", target_id=request.id)
    for listener in ERASED_LISTENERS:
        await listener(session, request.id)


#: The seam for the ``user.erased`` outbound event: the outbox writes it here, in the
#: transaction that completes the request. Listeners get the request id, never the user.
ErasedListener = Callable[[AsyncSession, str], Awaitable[None]]
ERASED_LISTENERS: list[ErasedListener] = [user_erased]


def _user(request: ErasureRequest) -> UserId:
    if request.user_id is None:
        raise RuntimeError(f"erasure {request.id} no longer knows its user")
    return UserId(request.user_id)

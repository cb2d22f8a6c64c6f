"""Leasing due credentials in batches: the only coordination between worker processes.

A lease is ``lease_owner`` + ``lease_expires_at`` on the row; every step taken under it
bumps ``version`` and is a compare-and-set on the version the step expects, so a worker
whose lease lapsed can no longer change the row (:func:`persist_refresh` in
:mod:`aggregator.sync.tokens` follows the same rule).

- PostgreSQL: ``SELECT … ORDER BY refresh_due_at LIMIT n FOR UPDATE OF credentials SKIP
  LOCKED`` walks the ``refresh_due_at`` index from its oldest entry and stops after ``n``
  free rows; concurrent workers skip each other's locked rows instead of queueing, and
  the cost does not grow with the number of rows that are not due.
- SQLite: the same ``SELECT`` (no row locks there) and a compare-and-set ``UPDATE``
  whose ``WHERE`` repeats "lease free", inside a write transaction that SQLite
  serialises (``BEGIN IMMEDIATE``, :mod:`aggregator.store.engines`).

A row whose lease expired comes back to whoever leases next: that is how a dead worker's
work is recovered. Leases are short (15 s by default) and a live worker extends its own
every few seconds (:func:`heartbeat`), so a dead worker's rows come back in seconds.
If it still carries ``refresh_started_at``, its refresh may have
reached the bank: :mod:`aggregator.worker.refresh` resolves it instead of retrying.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.datakeys import DataKeys
from aggregator.models import Connection, ConnectionStatus, Credential
from aggregator.models.base import table_of
from aggregator.store import RegionRouter
from vault import WrappedKey

_credentials = table_of(Credential)
_connections = table_of(Connection)


@dataclass(frozen=True, slots=True)
class Lease:
    """One leased credential: the row as leased, its bank, and the version we own."""

    credential: Credential
    bank_id: str
    #: Another worker's refresh may have reached the bank (it died in flight).
    in_flight_before: bool
    #: The in-flight mark was committed with the lease itself (``mark_in_flight=True``).
    marked: bool = False
    #: The user's data key, when the lease loaded it (None: not loaded, or erased).
    key: WrappedKey | None = None
    #: The bank client that linked the connection (None: the profile's static client).
    bank_client_id: str | None = None

    @property
    def claimed(self) -> int:
        return self.credential.version


def _free(now: datetime) -> ColumnElement[bool]:
    c = _credentials.c
    return (c.lease_expires_at.is_(None)) | (c.lease_expires_at <= now)


def lease_query(
    now: datetime, limit: int, exclude_banks: Collection[str] = ()
) -> Select[tuple[str, str, datetime | None, str | None]]:
    """The ``SELECT`` that picks due, free credentials of active connections, oldest first."""
    c, k = _credentials.c, _connections.c
    query = (
        select(c.id, k.bank_id, c.refresh_started_at, k.bank_client_id)
        .join(_connections, k.id == c.connection_id)
        .where(c.refresh_due_at <= now, _free(now), k.status == ConnectionStatus.ACTIVE)
        .order_by(c.refresh_due_at)
        .limit(limit)
        .with_for_update(of=_credentials, skip_locked=True)
    )
    if exclude_banks:
        query = query.where(k.bank_id.not_in(sorted(exclude_banks)))
    return query


async def lease_batch(
    router: RegionRouter, region: str, owner: str, *, now: datetime, limit: int,
    lease_for: timedelta, exclude_banks: Collection[str] = (), mark_in_flight: bool = False,
    keys: DataKeys | None = None,
) -> list[Lease]:
    """Lease up to ``limit`` due credentials for ``owner``, in one short transaction.

    The refresh worker passes ``mark_in_flight=True`` and its region's ``keys``: the
    in-flight mark (``refresh_started_at``) is then committed with the lease, before any
    request can leave, and the batch's data keys are loaded in the same transaction,
    instead of one more transaction per credential. A worker that dies between the
    lease and the bank call leaves marks on rows it never sent: the next lessee treats
    them as possibly in flight, which costs nothing (it presents the stored refresh
    token once, as it would anyway) but counts them as takeovers.
    """
    if limit <= 0:
        return []
    c = _credentials.c
    values: dict[str, object] = {
        "lease_owner": owner[:64], "lease_expires_at": now + lease_for,
        "version": c.version + 1,
    }
    if mark_in_flight:
        values["refresh_started_at"] = now
    async with router.session(region) as session, session.begin():
        picked = {row.id: row for row in
                  (await session.execute(lease_query(now, limit, exclude_banks))).all()}
        if not picked:
            return []
        rows = (await session.execute(
            update(Credential).where(Credential.id.in_(list(picked)), _free(now))
            .values(values).returning(Credential),
            execution_options={"synchronize_session": False},
        )).scalars().all()
        found = await keys.load_many(session, {r.user_id for r in rows}) if keys else {}
    order = {cid: i for i, cid in enumerate(picked)}  # oldest due first, as picked
    return [
        Lease(row, picked[row.id].bank_id, picked[row.id].refresh_started_at is not None,
              mark_in_flight, found.get(row.user_id), picked[row.id].bank_client_id)
        for row in sorted(rows, key=lambda r: order[r.id])
    ]


async def mark_in_flight(
    router: RegionRouter, region: str, lease: Lease, *, now: datetime
) -> int | None:
    """Commit "a refresh may be at the bank" before it leaves; the new claimed version.

    None when the lease was lost meanwhile (the row is someone else's now).
    """
    async with router.session(region) as session, session.begin():
        return await mark(session, lease, now=now)


async def mark(session: AsyncSession, lease: Lease, *, now: datetime) -> int | None:
    """:func:`mark_in_flight` inside the caller's transaction, which must commit it."""
    c = _credentials.c
    result = await session.execute(
        update(_credentials)
        .where(c.id == lease.credential.id, c.version == lease.claimed)
        .values(refresh_started_at=now, version=lease.claimed + 1)
    )
    return lease.claimed + 1 if getattr(result, "rowcount", 0) == 1 else None


async def release(
    router: RegionRouter, region: str, credential_id: str, claimed: int, *,
    due_at: datetime | None, keep_in_flight: bool, failed: bool,
) -> bool:
    """End a lease without new tokens, with the next due time; False if it was lost.

    ``keep_in_flight`` leaves ``refresh_started_at`` set when the request may have
    reached the bank (a timeout after sending, a cancelled task): the next lessee then
    resolves the row instead of presenting the refresh token blindly.
    """
    c = _credentials.c
    values: dict[str, object] = {
        "lease_owner": None, "lease_expires_at": None, "version": claimed + 1,
        "refresh_due_at": due_at,
    }
    if not keep_in_flight:
        values["refresh_started_at"] = None
    if failed:
        values["attempts"] = c.attempts + 1
    async with router.session(region) as session, session.begin():
        result = await session.execute(
            update(_credentials).where(c.id == credential_id, c.version == claimed).values(values)
        )
    return getattr(result, "rowcount", 0) == 1


async def reread(session: AsyncSession, credential_id: str) -> Credential | None:
    return await session.get(Credential, credential_id, populate_existing=True)


@dataclass(frozen=True, slots=True)
class Backlog:
    due: int
    oldest_due_at: datetime | None


async def backlog(router: RegionRouter, region: str, now: datetime) -> Backlog:
    """How many credentials are due and not leased, and since when the oldest is."""
    c, k = _credentials.c, _connections.c
    async with router.reader(region) as session:
        row = (await session.execute(
            select(func.count(), func.min(c.refresh_due_at))
            .select_from(_credentials.join(_connections, k.id == c.connection_id))
            .where(c.refresh_due_at <= now, _free(now), k.status == ConnectionStatus.ACTIVE)
        )).one()
    oldest: datetime | None = row[1]
    if isinstance(oldest, str):  # SQLite aggregates lose the column type
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=now.tzinfo)
    return Backlog(int(row[0]), oldest)


async def heartbeat(router: RegionRouter, region: str, owner: str, *, now: datetime,
                    lease_for: timedelta) -> set[str]:
    """Extend every unexpired lease ``owner`` holds in ``region`` to ``now + lease_for``.

    Ownership and ``version`` stay as they are (the steps under the lease keep their
    compare-and-set); a lease that already lapsed is not revived, since another worker
    may be about to take it. Returns the ids of the credentials whose leases were
    extended: only their in-memory deadlines may move (the refresh guard in
    :mod:`aggregator.worker.refresh`), since a row can also leave its holder before its
    lease ends (a stale presentation makes it suspect, and the owner is cleared).
    """
    c = _credentials.c
    async with router.session(region) as session, session.begin():
        moved = await session.execute(
            update(_credentials)
            .where(c.lease_owner == owner[:64], c.lease_expires_at > now)
            .values(lease_expires_at=now + lease_for)
            .returning(c.id)
        )
        return set(moved.scalars().all())

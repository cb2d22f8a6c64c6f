"""The worker's consent watch: warn before a user's consent at the bank ends, flag it after.

A connection's consent lasts until ``connections.consent_expires_at``, set when the Link
flow links or re-consents it (:mod:`aggregator.link.grants`: the bank's answer, else the
profile's ``[consent] max_days``). Each pass makes two transitions, each a
compare-and-set ``UPDATE`` whose ``WHERE`` clause is the transition's precondition, and
inserts the outbound event in the same transaction only when that ``UPDATE`` changed the
row (the transactional outbox, :mod:`aggregator.events.outbox`):

- *warning*, ``warning`` (``[worker] consent_warning_days``) before the end: set
  ``consent_warned_for`` to the current ``consent_expires_at`` and emit
  ``connection.consent_expiring``;
- *expiry*, once the end has passed: status ``reauth_required`` with reason
  ``consent_expired`` and ``connection.reauth_required``, audited. The refresh worker
  then leaves the credential alone (it leases active connections only).

Exactly once, with any number of workers: two workers issuing the same ``UPDATE`` are
serialised by the row lock; PostgreSQL re-evaluates the loser's ``WHERE`` against the
committed row (READ COMMITTED) and it matches nothing any more, and SQLite's writers take
turns. Once per consent period: renewal writes a new ``consent_expires_at``, which no
longer equals ``consent_warned_for``, so the warning re-arms without anyone resetting it.
A consent that expired while no worker ran gets no late warning, only the flag.

Plaid items are not watched here: Plaid announces their end itself (``PENDING_EXPIRATION``
webhooks, :mod:`aggregator.plaid.apply`). Only connections to profile banks are.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.events.hooks import connection_event
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus
from aggregator.models.base import table_of, utcnow
from aggregator.reauth import require_reauth
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory

log = logging.getLogger(__name__)

#: The audit trail's actor (a closed set, :data:`aggregator.audit.SYSTEM_ACTORS`).
ACTOR: Final = "worker"
#: ``status_reason`` and event ``reason`` of a connection whose consent ran out.
CONSENT_EXPIRED: Final = "consent_expired"
DEFAULT_WARNING: Final = timedelta(days=7)

_connections = table_of(Connection)


@dataclass
class ConsentWatch:
    """:class:`~aggregator.worker.jobs.PeriodicJob` for consent expiry; one per worker.

    Example::

        ConsentWatch(router, banks, warning=timedelta(days=settings.worker.consent_warning_days))
    """

    router: RegionRouter
    banks: BankDirectory
    warning: timedelta = DEFAULT_WARNING
    batch: int = 100
    interval: float = 300.0
    name: str = "consent"

    async def run_once(self, stop: asyncio.Event, *, now: datetime | None = None) -> int:
        now = now or utcnow()
        changed = 0
        for region in self.router.regions:
            for connection_id, expires in await self.candidates(region, now):
                if stop.is_set():
                    return changed
                if expires <= now:
                    changed += await self.expire(region, connection_id, now)
                else:
                    changed += await self.warn(region, connection_id, now)
        return changed

    async def candidates(self, region: str, now: datetime) -> list[tuple[str, datetime]]:
        """Active connections whose consent has ended, or is due a warning, soonest first."""
        c = Connection
        banks = self.banks.bank_ids(region)
        if not banks:
            return []
        async with self.router.reader(region) as session:
            rows = await session.execute(
                select(c.id, c.consent_expires_at).where(
                    c.status == ConnectionStatus.ACTIVE, c.bank_id.in_(banks),
                    c.consent_expires_at.is_not(None),
                    c.consent_expires_at <= now + self.warning,
                    _unwarned() | (c.consent_expires_at <= now),
                ).order_by(c.consent_expires_at, c.id).limit(self.batch)
            )
            return [(row[0], row[1]) for row in rows if row[1] is not None]

    async def warn(self, region: str, connection_id: str, now: datetime) -> int:
        """Emit ``connection.consent_expiring`` unless this period was warned about; 1 if so."""
        k = _connections.c
        async with self.router.session(region) as session, session.begin():
            moved = await session.execute(
                update(_connections).where(
                    k.id == connection_id, k.status == ConnectionStatus.ACTIVE,
                    k.consent_expires_at > now, k.consent_expires_at <= now + self.warning,
                    or_(k.consent_warned_for.is_(None),
                        k.consent_warned_for != k.consent_expires_at),
                ).values(consent_warned_for=k.consent_expires_at)
            )
            if getattr(moved, "rowcount", 0) != 1:
                return 0
            expires = await _expiry(session, connection_id)
            await connection_event(session, ConnectionId(connection_id),
                                   "connection.consent_expiring",
                                   consent_expires_at=expires.isoformat())
        log.info("connection %s: consent ends %s; warned", connection_id, expires.isoformat())
        return 1

    async def expire(self, region: str, connection_id: str, now: datetime) -> int:
        """Flag a connection whose consent has ended ``reauth_required``; 1 if this did it."""
        k = _connections.c
        async with self.router.session(region) as session, session.begin():
            expires = (await session.execute(
                select(Connection.consent_expires_at).where(Connection.id == connection_id)
            )).scalar_one_or_none()
            if expires is None or not await require_reauth(
                session, ConnectionId(connection_id), reason=CONSENT_EXPIRED, actor=ACTOR,
                condition=(k.consent_expires_at <= now) & (k.consent_expires_at == expires),
                consent_expires_at=expires.isoformat(),
            ):
                return 0
        return 1


def _unwarned() -> ColumnElement[bool]:
    c = Connection
    return c.consent_warned_for.is_(None) | (c.consent_warned_for != c.consent_expires_at)


async def _expiry(session: AsyncSession, connection_id: str) -> datetime:
    expires = (await session.execute(
        select(Connection.consent_expires_at).where(Connection.id == connection_id)
    )).scalar_one()
    if expires is None:  # the UPDATE's WHERE required it; a NULL here is a schema bug
        raise RuntimeError(f"connection {connection_id} lost its consent_expires_at")
    return expires

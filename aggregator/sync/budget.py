"""Sync rate budgets: spend a connection's unattended bank calls, never more than allowed.

A bank profile's :class:`~connectors.SyncPolicy` sets ``daily_budget`` calls per
connection and data type in any rolling 24 hours (:mod:`aggregator.models.budgets`
says why rolling). A sync reads accounts and transactions, so it spends one unit of
each, both or neither.

Race safety: :func:`spend` runs in a write transaction that first locks the connection
row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite write transactions begin
``IMMEDIATE``, so writers already take turns), then counts and inserts. Two workers or
requests therefore never both spend the last unit; the ledger's primary key
(``connection_id, data_type, n``) would refuse a second ``n`` even if they did.

A unit is spent *before* the bank is called and is not refunded when the sync fails:
the bank may have counted the call anyway, and a refund would let a failing bank be
called in a loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.errors import GatewayError
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, DataType, SyncSpend
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync.tokens import ConnectionNotActive
from connectors import SyncPolicy

#: The window a budget applies to (PSD2 RTS Art. 36(5)(b): "in a 24-hour period").
WINDOW: Final = timedelta(hours=24)
#: What one sync reads, in the order its units are spent.
SYNC_TYPES: Final = (DataType.ACCOUNTS, DataType.TRANSACTIONS)


class BudgetExhausted(GatewayError):
    """Raised when a connection has no budget left; ``next_allowed_at`` says until when."""

    code = "sync_budget_exhausted"

    def __init__(self, connection_id: str, next_allowed_at: datetime, now: datetime) -> None:
        super().__init__(
            f"connection {connection_id} has spent its sync budget; the next sync is "
            f"allowed at {next_allowed_at.isoformat()}"
        )
        self.next_allowed_at = next_allowed_at
        #: Whole seconds to wait (RFC 9110 §10.2.3), at least 1.
        self.retry_after = max(1, math.ceil((next_allowed_at - now).total_seconds()))


async def next_allowed_at(
    session: AsyncSession, connection_id: str, policy: SyncPolicy, now: datetime,
    types: Sequence[DataType] = SYNC_TYPES,
) -> datetime:
    """When a call of every type in ``types`` is next within budget; ``now`` if it is now.

    With ``k >= budget`` spends in the window, sorted oldest first, the window holds
    ``budget - 1`` of them once spend ``k - budget + 1`` (1-based) has aged out, 24 hours
    after it was made.
    """
    allowed = now
    for data_type in types:
        times = await _spent_in_window(session, connection_id, data_type, now)
        if len(times) >= policy.daily_budget:
            allowed = max(allowed, times[len(times) - policy.daily_budget] + WINDOW)
    return allowed


async def spend(
    session: AsyncSession, connection: Connection, policy: SyncPolicy, *, now: datetime,
    reason: str, types: Sequence[DataType] = SYNC_TYPES,
) -> None:
    """Spend one unit of each of ``types``, or raise :class:`BudgetExhausted` and spend none.

    Contract: ``session`` is in a write transaction that has locked ``connection``'s row
    (:func:`lock_connection`); the caller commits.
    """
    allowed = await next_allowed_at(session, connection.id, policy, now, types)
    if allowed > now:
        raise BudgetExhausted(connection.id, allowed, now)
    s = SyncSpend
    await session.execute(delete(s).where(
        s.connection_id == connection.id, s.spent_at <= now - WINDOW
    ))
    for data_type in types:
        last = (await session.execute(
            select(func.max(s.n)).where(s.connection_id == connection.id,
                                        s.data_type == data_type)
        )).scalar_one_or_none()
        session.add(SyncSpend(
            connection_id=connection.id, data_type=data_type, n=(last or 0) + 1,
            user_id=connection.user_id, spent_at=now, reason=reason,
        ))
    await session.flush()


async def lock_connection(
    session: AsyncSession, connection_id: str, *, skip_locked: bool = False
) -> Connection | None:
    """The connection's row, locked until the transaction ends (None if it is gone).

    With ``skip_locked`` a row another transaction holds is None too (PostgreSQL's
    ``SKIP LOCKED``; SQLite's writers take turns anyway).
    """
    return (await session.execute(
        select(Connection).where(Connection.id == connection_id)
        .with_for_update(skip_locked=skip_locked)
    )).scalar_one_or_none()


async def spend_for_sync(
    router: RegionRouter, connection_id: ConnectionId, policy: SyncPolicy, *, reason: str,
    now: datetime | None = None,
) -> None:
    """Spend one sync's units in a transaction of its own (the on-demand path)."""
    region = router.region_of(connection_id)
    async with router.session(region) as session, session.begin():
        connection = await lock_connection(session, connection_id)
        if connection is None or connection.status is not ConnectionStatus.ACTIVE:
            raise ConnectionNotActive(f"connection {connection_id} is not active")
        # The clock is read under the lock: read before it, a caller that queued behind
        # another spend would record an older spent_at than the spend ahead of it.
        await spend(session, connection, policy, now=now or utcnow(), reason=reason)


async def _spent_in_window(
    session: AsyncSession, connection_id: str, data_type: DataType, now: datetime
) -> list[datetime]:
    s = SyncSpend
    return list((await session.execute(
        select(s.spent_at).where(
            s.connection_id == connection_id, s.data_type == data_type,
            s.spent_at > now - WINDOW,
        ).order_by(s.spent_at)
    )).scalars())

"""A bank's own count of unattended calls, carried into the sync budget ledger.

A Berlin Group consent carries ``frequencyPerDay``, the bank's allowance of reads without
the user (NextGenPSD2 Implementation Guidelines v1.3.x; PSD2 RTS Art. 36(5)(b)); the
gateway asks for exactly the profile's ``daily_budget``, so the ledger
(:mod:`aggregator.sync.budget`) normally refuses a call before the bank would. When the
bank still answers 429 ``ACCESS_EXCEEDED`` (it counted a call we did not, or counts per
calendar day where the ledger's window rolls), the bank is right: :func:`exhaust_until`
fills every ledger of the connection so that it frees up exactly at the bank's reset.
The connection's ``next_sync_allowed_at`` then says so, scheduled syncs are deferred to
it, and no call reaches the bank before it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from aggregator.models import Connection, SyncSpend
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync.budget import WINDOW, ledgers, lock_connection
from connectors import SyncPolicy

#: The ``sync_spends.reason`` of units booked for the bank's own refusal.
BANK_LIMIT = "bank_limit"


async def exhaust_until(
    router: RegionRouter, region: str, connection: Connection, until: datetime,
    policy: SyncPolicy,
) -> None:
    """Book ``daily_budget`` units dated ``until - 24 h`` on every ledger of the connection.

    With the rolling window, a ledger holding ``daily_budget`` units spent at ``t`` is free
    again at ``t + 24 h`` = ``until``. Units already booked after ``t`` leave that instant
    unchanged (the ledger is full either way), so calling this twice is harmless.
    """
    now = utcnow()
    if until <= now:
        return
    at = until - WINDOW
    async with router.session(region) as session, session.begin():
        locked = await lock_connection(session, connection.id)
        if locked is None:
            return
        last = {
            (account, data_type): n for account, data_type, n in await session.execute(
                select(SyncSpend.account_id, SyncSpend.data_type, func.max(SyncSpend.n))
                .where(SyncSpend.connection_id == connection.id)
                .group_by(SyncSpend.account_id, SyncSpend.data_type)
            )
        }
        for account, data_type in await ledgers(session, connection.id):
            first = (last.get((account, data_type)) or 0) + 1
            session.add_all(
                SyncSpend(connection_id=connection.id, account_id=account,
                          data_type=data_type, n=first + i, user_id=connection.user_id,
                          spent_at=at, reason=BANK_LIMIT)
                for i in range(policy.daily_budget)
            )

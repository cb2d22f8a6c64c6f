"""Loading what the calling application owns, and turning rows into API views.

Every lookup filters on the caller's application id in the same query as the id, so a
resource of another application is exactly as absent as one that never existed: the
same 404, the same work, no oracle. Sealed fields are opened under the owning user's
data key (one unwrap per key per cache period, then local AES-GCM).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.custody import RegionCustody
from aggregator.http.problems import NotFound
from aggregator.http.views import ConnectionOut, ErrorOut, TransactionOut
from aggregator.ids import ApplicationId
from aggregator.models import (
    Connection,
    SyncOutcome,
    SyncState,
    TransactionStatus,
    User,
)
from aggregator.sync.runs import message_for
from vault import WrappedKey


async def owned_user(session: AsyncSession, user_id: str, app_id: ApplicationId) -> User:
    user = (await session.execute(
        select(User).where(User.id == user_id, User.application_id == app_id)
    )).scalar_one_or_none()
    if user is None:
        raise NotFound("no user with this id")
    return user


async def owned_connection(
    session: AsyncSession, connection_id: str, app_id: ApplicationId
) -> Connection:
    connection = (await session.execute(
        select(Connection).where(
            Connection.id == connection_id, Connection.application_id == app_id
        )
    )).scalar_one_or_none()
    if connection is None:
        raise NotFound("no connection with this id")
    return connection


def connection_view(
    connection: Connection, next_sync_allowed_at: datetime | None = None,
    state: SyncState | None = None, in_flight: str | None = None,
) -> ConnectionOut:
    """``state`` and ``in_flight`` as :func:`aggregator.http.routes.syncs.sync_state` reads
    them."""
    outcome = state.last_outcome if state is not None else None
    code = state.last_error if state is not None else None
    return ConnectionOut(
        id=connection.id, user_id=connection.user_id, bank_id=connection.bank_id,
        status=connection.status, status_reason=connection.status_reason,
        consent_expires_at=connection.consent_expires_at, created_at=connection.created_at,
        updated_at=connection.updated_at, next_sync_allowed_at=next_sync_allowed_at,
        last_synced_at=state.last_synced_at if state is not None else None,
        last_sync_outcome=SyncOutcome(outcome) if outcome else None,
        last_error=ErrorOut(code, message_for(code)) if code else None,
        in_flight=in_flight,
    )


async def transaction_views(
    custody: RegionCustody, key: WrappedKey, rows: Sequence[Any]
) -> list[TransactionOut]:
    """API views of Core rows (``id``, ``user_id`` and the view's columns), their sealed
    columns opened a column at a time (:meth:`~aggregator.sealing.Sealer.open_column`)."""
    open_column = custody.sealer.open_column
    descriptions = await open_column(key, "transactions", "description_sealed",
                                     [(r.id, r.user_id, r.description_sealed) for r in rows])
    counterparties = await open_column(key, "transactions", "counterparty_sealed",
                                       [(r.id, r.user_id, r.counterparty_sealed) for r in rows])
    return [
        TransactionOut(
            id=row.id, account_id=row.account_id, amount=row.amount, currency=row.currency,
            status=TransactionStatus(row.status), booked_on=row.booked_on,
            value_on=row.value_on, description=(description or b"").decode("utf-8"),
            counterparty=None if counterparty is None else counterparty.decode("utf-8"),
            merchant_category=row.merchant_category,
        )
        for row, description, counterparty in zip(rows, descriptions, counterparties,
                                                  strict=True)
    ]

"""The emitters plugged into other packages' seams, each inside the caller's transaction.

- :func:`connection_event`: the Link flow (``connection.created`` /
  ``connection.reauthorized``), the refresh worker (``connection.reauth_required``);
- :func:`sync_completed`, :func:`sync_finished`, :func:`sync_failed`: the sync job
  (``sync.completed``, ``sync.partial``, ``sync.failed``);
- :func:`user_erased`: an :data:`aggregator.erasure.ERASED_LISTENERS` entry;
- :class:`OutboxPlaidHooks`: :class:`aggregator.plaid.apply.PlaidHooks` for Plaid's
  ``ITEM`` webhooks.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.events.outbox import emit
from aggregator.ids import ConnectionId, OutboundEventId
from aggregator.models import Connection, ErasureRequest


def _connection_data(connection: Connection) -> dict[str, Any]:
    return {"connection_id": connection.id, "user_id": connection.user_id,
            "bank_id": connection.bank_id, "status": connection.status.value}


async def connection_event(
    session: AsyncSession, connection_id: ConnectionId, type: str, **data: Any
) -> OutboundEventId:
    """Emit ``type`` about a connection, read in the caller's transaction (its status is
    the one being committed)."""
    await session.flush()  # then reload: the caller may have changed it with Core UPDATEs
    connection = await session.get(Connection, connection_id, populate_existing=True)
    if connection is None:
        raise LookupError(f"no connection {connection_id}")
    return await emit(session, connection.application_id, type,
                      {**_connection_data(connection), **data})


async def sync_completed(
    session: AsyncSession, connection: Connection, *, accounts: int, added: int,
    modified: int, removed: int,
) -> OutboundEventId:
    return await emit(session, connection.application_id, "sync.completed", {
        "connection_id": connection.id, "user_id": connection.user_id,
        "accounts": accounts, "added": added, "modified": modified, "removed": removed,
    })


async def sync_finished(
    session: AsyncSession, connection: Connection, outcome: str, *, reason: str | None,
    accounts: int, added: int, modified: int, removed: int,
) -> OutboundEventId:
    """``sync.completed``, or ``sync.partial`` with the first resource error as ``reason``:
    the data that was read is committed either way (``GET /v1/connections/{id}/syncs``
    has the details)."""
    if outcome == "complete":
        return await sync_completed(session, connection, accounts=accounts, added=added,
                                    modified=modified, removed=removed)
    return await emit(session, connection.application_id, "sync.partial", {
        "connection_id": connection.id, "user_id": connection.user_id, "reason": reason,
        "accounts": accounts, "added": added, "modified": modified, "removed": removed,
    })


async def sync_failed(session: AsyncSession, connection: Connection, *, reason: str
                      ) -> OutboundEventId:
    """``sync.failed``: nothing was committed; ``reason`` is the error code."""
    return await emit(session, connection.application_id, "sync.failed", {
        "connection_id": connection.id, "user_id": connection.user_id, "reason": reason,
    })


async def user_erased(session: AsyncSession, request_id: str, user_id: str | None) -> None:
    """``user.erased`` names the erased user and the erasure request (docs/api.md, "Events").

    The receipt forgets the user id; the event carries it because the application must
    match the event to its own user, and the id is the gateway's random id, not personal
    data (the audit trail keeps it too). It is in the payload only: the event row's
    ``user_id`` column points at users, and that row is gone.
    """
    request = await session.get(ErasureRequest, request_id)
    if request is None:
        raise LookupError(f"no erasure request {request_id}")
    await emit(session, request.application_id, "user.erased",
               {"user_id": user_id, "erasure_request_id": request.id, "status": "completed"})


class OutboxPlaidHooks:
    """Plaid's ``ITEM`` webhooks become events; sync requests are the sync queue's."""

    async def sync_requested(self, session: AsyncSession, connection: Connection) -> None:
        return None

    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None:
        # aggregator.reauth.require_reauth already wrote the one connection.reauth_required.
        return None

    async def consent_expiring(self, session: AsyncSession, connection: Connection) -> None:
        expires = connection.consent_expires_at
        await emit(session, connection.application_id, "connection.consent_expiring", {
            **_connection_data(connection),
            "consent_expires_at": expires.isoformat() if expires else None,
        })

    async def new_accounts(self, session: AsyncSession, connection: Connection) -> None:
        return None

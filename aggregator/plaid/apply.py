"""Acting on a stored Plaid webhook: what the worker calls for each pending row.

==============================================  ============================================
webhook                                         effect on the connection
==============================================  ============================================
ITEM/ERROR with ``ITEM_LOGIN_REQUIRED``         ``reauth_required`` (+ hook: outbound event)
ITEM/LOGIN_REPAIRED                             ``active`` again, if it was reauth_required
ITEM/PENDING_EXPIRATION, PENDING_DISCONNECT     ``consent_expires_at`` (+ hook)
ITEM/USER_PERMISSION_REVOKED, …ACCOUNT_REVOKED  ``revoked``: syncing stops
ITEM/NEW_ACCOUNTS_AVAILABLE                     hook (flag for update mode)
TRANSACTIONS/SYNC_UPDATES_AVAILABLE             hook: queue a sync (rate budget applies there)
anything else                                   acknowledged, nothing changes
==============================================  ============================================

A revoked connection is never revived by a webhook. Each change is audited with the
actor ``webhook``. Applying is idempotent per row: a row already applied is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.events.hooks import OutboxPlaidHooks
from aggregator.models import Connection, ConnectionStatus, PlaidWebhookEvent, WebhookStatus

#: Plaid disconnects an Item about seven days after PENDING_DISCONNECT.
PENDING_DISCONNECT_NOTICE = timedelta(days=7)
_REVOKED_CODES = frozenset({"USER_PERMISSION_REVOKED", "USER_ACCOUNT_REVOKED"})


class PlaidHooks(Protocol):
    """What applying a webhook asks of the rest of the gateway, in the same transaction.

    The outbound events and the sync queue are colleagues' work; until they land,
    :class:`NoPlaidHooks` does nothing.
    """

    async def sync_requested(self, session: AsyncSession, connection: Connection) -> None: ...
    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None: ...
    async def consent_expiring(self, session: AsyncSession, connection: Connection) -> None: ...
    async def new_accounts(self, session: AsyncSession, connection: Connection) -> None: ...


class NoPlaidHooks:
    async def sync_requested(self, session: AsyncSession, connection: Connection) -> None:
        return None

    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None:
        return None

    async def consent_expiring(self, session: AsyncSession, connection: Connection) -> None:
        return None

    async def new_accounts(self, session: AsyncSession, connection: Connection) -> None:
        return None


async def pending_events(session: AsyncSession, limit: int = 100) -> Sequence[bytes]:
    """Keys of pending webhooks that are due, oldest first (the worker's poll)."""
    rows = await session.execute(
        select(PlaidWebhookEvent.body_sha256)
        .where(PlaidWebhookEvent.status == WebhookStatus.PENDING,
               PlaidWebhookEvent.available_at <= datetime.now(UTC))
        .order_by(PlaidWebhookEvent.received_at).limit(limit)
    )
    return list(rows.scalars())


async def apply_webhook_event(
    session: AsyncSession, body_sha256: bytes, hooks: PlaidHooks | None = None
) -> str | None:
    """Apply one stored webhook in the caller's transaction; returns its outcome code.

    ``None`` when the row is gone or no longer pending (another worker applied it).
    """
    hooks = hooks or OutboxPlaidHooks()
    event = (await session.execute(
        select(PlaidWebhookEvent).where(PlaidWebhookEvent.body_sha256 == body_sha256)
        .with_for_update()
    )).scalar_one_or_none()
    if event is None or event.status is not WebhookStatus.PENDING:
        return None
    event.attempts += 1
    connection = None
    if event.connection_id is not None:
        connection = (await session.execute(
            select(Connection).where(Connection.id == event.connection_id).with_for_update()
        )).scalar_one_or_none()
    outcome = "orphaned" if connection is None else await _act(session, event, connection, hooks)
    event.status = WebhookStatus.ORPHANED if connection is None else WebhookStatus.APPLIED
    event.applied_at = datetime.now(UTC)
    event.outcome = outcome
    return outcome


async def _act(
    session: AsyncSession, event: PlaidWebhookEvent, connection: Connection, hooks: PlaidHooks
) -> str:
    payload = json.loads(event.body)
    kind, code = event.webhook_type, event.webhook_code
    revoked = connection.status is ConnectionStatus.REVOKED
    if kind == "TRANSACTIONS" and code == "SYNC_UPDATES_AVAILABLE":
        if connection.status is not ConnectionStatus.ACTIVE:
            return "ignored_inactive"
        await hooks.sync_requested(session, connection)
        return "sync_requested"
    if kind != "ITEM" or revoked:
        return "acknowledged"
    error = payload.get("error")
    if code == "ERROR" and isinstance(error, dict) and error.get("error_code") == (
            "ITEM_LOGIN_REQUIRED"):
        await _set_status(session, connection, ConnectionStatus.REAUTH_REQUIRED,
                          "item_login_required", "connection.reauth_required")
        await hooks.reauth_required(session, connection)
        return "reauth_required"
    if code == "LOGIN_REPAIRED":
        if connection.status is not ConnectionStatus.REAUTH_REQUIRED:
            return "acknowledged"
        await _set_status(session, connection, ConnectionStatus.ACTIVE, None,
                          "connection.repaired")
        return "active"
    if code in ("PENDING_EXPIRATION", "PENDING_DISCONNECT"):
        connection.consent_expires_at = _expiry(payload, code)
        await hooks.consent_expiring(session, connection)
        return "consent_expiring"
    if code in _REVOKED_CODES:
        await _set_status(session, connection, ConnectionStatus.REVOKED,
                          code.lower()[:64], "connection.revoked")
        return "revoked"
    if code == "NEW_ACCOUNTS_AVAILABLE":
        await hooks.new_accounts(session, connection)
        return "new_accounts"
    return "acknowledged"


async def _set_status(session: AsyncSession, connection: Connection,
                      status: ConnectionStatus, reason: str | None, action: str) -> None:
    connection.status = status
    connection.status_reason = reason
    await session.flush()
    await audit.record(session, actor="webhook", action=action, target_id=connection.id)


def _expiry(payload: dict[str, object], code: str) -> datetime:
    value = payload.get("consent_expiration_time")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC) + (PENDING_DISCONNECT_NOTICE if code == "PENDING_DISCONNECT"
                                else timedelta(0))

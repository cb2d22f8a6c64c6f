"""Acting on a stored Plaid webhook: what the worker calls for each pending row.

==============================================  ============================================
webhook                                         effect on the connection
==============================================  ============================================
ITEM/ERROR with ``ITEM_LOGIN_REQUIRED``         ``reauth_required`` (+ hook: outbound event)
ITEM/LOGIN_REPAIRED                             ``active`` again, if it was reauth_required
                                                (+ ``connection.reauthorized``)
ITEM/PENDING_EXPIRATION, PENDING_DISCONNECT     ``consent_expires_at`` (+ hook)
ITEM/USER_PERMISSION_REVOKED, …ACCOUNT_REVOKED  ``revoked``: syncing stops
ITEM/NEW_ACCOUNTS_AVAILABLE                     hook (flag for update mode)
TRANSACTIONS/SYNC_UPDATES_AVAILABLE             spend a sync budget unit: ``sync_requested``
                                                (or ``deferred`` to next_sync_allowed_at)
anything else                                   acknowledged, nothing changes
==============================================  ============================================

A revoked connection is never revived by a webhook. Each change is audited with the
actor ``webhook``. Applying is idempotent per row: a row already applied is skipped.

``SYNC_UPDATES_AVAILABLE`` is the one webhook whose work happens after the transaction:
the row *is* the sync's queue entry. Applying it spends one unit of the connection's rate
budget (:func:`aggregator.sync.budget.spend`, under the connection's row lock) and leaves
the row ``pending`` with outcome ``sync_requested``; the worker syncs and then calls
:func:`finish_sync`. A crash in between brings the row back with its unit already spent,
so it is synced without spending again. With no unit left the row stays ``pending`` with
``available_at`` = the connection's ``next_sync_allowed_at``, outcome ``deferred``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.events.hooks import OutboxPlaidHooks, connection_event
from aggregator.models import Connection, ConnectionStatus, PlaidWebhookEvent, WebhookStatus
from aggregator.reauth import require_reauth
from aggregator.sync.budget import BudgetExhausted, spend
from connectors import SyncPolicy

#: Plaid disconnects an Item about seven days after PENDING_DISCONNECT.
PENDING_DISCONNECT_NOTICE = timedelta(days=7)
_REVOKED_CODES = frozenset({"USER_PERMISSION_REVOKED", "USER_ACCOUNT_REVOKED"})
#: Outcomes that leave the row pending: the sync is still to run (or to be afforded).
SYNC_REQUESTED, DEFERRED = "sync_requested", "deferred"
_STILL_PENDING = frozenset({SYNC_REQUESTED, DEFERRED})


class PlaidHooks(Protocol):
    """What applying a webhook asks of the rest of the gateway, in the same transaction.

    :class:`~aggregator.events.hooks.OutboxPlaidHooks` emits the outbound events;
    :class:`NoPlaidHooks` does nothing (tests).
    """

    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None: ...
    async def consent_expiring(self, session: AsyncSession, connection: Connection) -> None: ...
    async def new_accounts(self, session: AsyncSession, connection: Connection) -> None: ...


class NoPlaidHooks:
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
    session: AsyncSession, body_sha256: bytes, hooks: PlaidHooks | None = None,
    policy: SyncPolicy | None = None,
) -> str | None:
    """Apply one stored webhook in the caller's transaction; returns its outcome code.

    ``None`` when the row is gone or no longer pending (another worker applied it).
    ``policy`` is the rate budget a requested sync spends (the region's Plaid setting).
    """
    hooks = hooks or OutboxPlaidHooks()
    policy = policy or SyncPolicy()
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
    if connection is None:
        outcome = "orphaned"
    elif (event.webhook_type, event.webhook_code) == _SYNC:
        outcome = await _sync(session, event, connection, policy)
    else:
        outcome = await _act(session, event, connection, hooks)
    event.outcome = outcome
    if outcome not in _STILL_PENDING:
        event.status = WebhookStatus.ORPHANED if connection is None else WebhookStatus.APPLIED
        event.applied_at = datetime.now(UTC)
    return outcome


_SYNC = ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")


async def _sync(session: AsyncSession, event: PlaidWebhookEvent, connection: Connection,
                policy: SyncPolicy) -> str:
    if connection.status is not ConnectionStatus.ACTIVE:
        return "ignored_inactive"
    if event.outcome == SYNC_REQUESTED:
        return SYNC_REQUESTED  # spent before a crash: sync without spending twice
    now = datetime.now(UTC)
    try:
        await spend(session, connection, policy, now=now, reason="webhook",
                    accounts=())  # Plaid's /transactions/sync is one item-level call
    except BudgetExhausted as exc:
        event.available_at = exc.next_allowed_at
        return DEFERRED
    return SYNC_REQUESTED


async def finish_sync(
    session: AsyncSession, body_sha256: bytes, outcome: str, *, started_at: datetime
) -> int:
    """Mark a ``sync_requested`` row done with ``outcome``; returns how many rows it closed.

    A successful sync read everything Plaid had when it started, so other pending
    ``SYNC_UPDATES_AVAILABLE`` rows of the connection received before ``started_at`` are
    closed with it (``coalesced``) instead of spending a unit each.
    """
    event = await session.get(PlaidWebhookEvent, body_sha256, with_for_update=True)
    if event is None or event.status is not WebhookStatus.PENDING:
        return 0
    now = datetime.now(UTC)
    event.status, event.outcome, event.applied_at = WebhookStatus.APPLIED, outcome, now
    closed = 1
    if outcome == "synced" and event.connection_id is not None:
        e = PlaidWebhookEvent
        others = (await session.execute(select(e).where(
            e.connection_id == event.connection_id, e.status == WebhookStatus.PENDING,
            e.webhook_type == _SYNC[0], e.webhook_code == _SYNC[1],
            e.received_at <= started_at, e.body_sha256 != body_sha256,
        ).with_for_update())).scalars()
        for other in others:
            other.status, other.outcome, other.applied_at = (
                WebhookStatus.APPLIED, "coalesced", now)
            closed += 1
    return closed


async def _act(
    session: AsyncSession, event: PlaidWebhookEvent, connection: Connection, hooks: PlaidHooks
) -> str:
    payload = json.loads(event.body)
    kind, code = event.webhook_type, event.webhook_code
    revoked = connection.status is ConnectionStatus.REVOKED
    if kind != "ITEM" or revoked:
        return "acknowledged"
    error = payload.get("error")
    if code == "ERROR" and isinstance(error, dict) and error.get("error_code") == (
            "ITEM_LOGIN_REQUIRED"):
        await require_reauth(session, connection.id, reason="item_login_required",
                             actor="webhook")
        await hooks.reauth_required(session, connection)
        return "reauth_required"
    if code == "LOGIN_REPAIRED":
        if connection.status is not ConnectionStatus.REAUTH_REQUIRED:
            return "acknowledged"
        await _set_status(session, connection, ConnectionStatus.ACTIVE, None,
                          "connection.repaired")
        # The user repaired the login outside update mode (e.g. at the bank): the app
        # hears it the same way as after an update-mode link.
        await connection_event(session, connection.id, "connection.reauthorized")
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


#: How long an applied or orphaned webhook is kept for de-duplication. Plaid retries an
#: unacknowledged webhook for about a day (Plaid API docs, "Webhooks"); a retry is
#: re-signed, so only the body digest de-duplicates it. Three days leave a wide margin.
DEDUP_RETENTION = timedelta(days=3)


async def purge_expired(session: AsyncSession, before: datetime, limit: int = 500) -> int:
    """Delete up to ``limit`` applied/orphaned rows received before ``before``.

    Pending rows are jobs and are never purged. Bounded per call, so one pass never
    holds a long write transaction; the ``(status, received_at)`` index finds them.
    """
    e = PlaidWebhookEvent
    done = (WebhookStatus.APPLIED, WebhookStatus.ORPHANED)
    keys = list((await session.execute(
        select(e.body_sha256).where(e.status.in_(done), e.received_at < before)
        .order_by(e.received_at).limit(limit)
    )).scalars())
    if keys:
        await session.execute(delete(e).where(e.body_sha256.in_(keys), e.status.in_(done)))
    return len(keys)

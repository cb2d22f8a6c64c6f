"""Acting on a stored Plaid webhook: what the worker calls for each pending row.

Every code Plaid documents for ``ITEM`` and ``TRANSACTIONS`` webhooks (Plaid API docs,
"Items: webhooks" and "Transactions: webhooks") is acted on or acknowledged, and the
worker counts each by type, code and outcome (README, "Plaid webhooks: codes"):

==========================================  ===========================================
webhook                                     effect (outcome code)
==========================================  ===========================================
ITEM/ERROR, ``ITEM_LOGIN_REQUIRED``         ``reauth_required`` (+ outbound event);
                                            already so: nothing (``already_reauth``)
ITEM/ERROR, any other error code            the code on ``sync_states.last_error``
                                            (``item_error``); the connection stays
ITEM/LOGIN_REPAIRED                         ``active`` again if it was reauth_required
                                            (+ ``connection.reauthorized``)
ITEM/PENDING_EXPIRATION, PENDING_DISCONNECT ``consent_expires_at`` = the earlier of the
                                            stored and the announced expiry; event only
                                            when it moved (``consent_expiring``)
ITEM/USER_PERMISSION_REVOKED                ``revoked``: syncing stops for good
ITEM/USER_ACCOUNT_REVOKED                   one *account* revoked at the bank; audited
                                            (``account_revoked``), the connection stays
ITEM/NEW_ACCOUNTS_AVAILABLE                 hook (flag for update mode)
ITEM/WEBHOOK_UPDATE_ACKNOWLEDGED            acknowledged
TRANSACTIONS/SYNC_UPDATES_AVAILABLE         spend a sync budget unit: ``sync_requested``
                                            (or ``deferred`` to next_sync_allowed_at)
TRANSACTIONS/INITIAL_UPDATE,                acknowledged (``legacy``): for
HISTORICAL_UPDATE, DEFAULT_UPDATE,          ``/transactions/get`` users; Plaid sends
TRANSACTIONS_REMOVED                        SYNC_UPDATES_AVAILABLE too, which we act on
TRANSACTIONS/RECURRING_TRANSACTIONS_UPDATE  acknowledged (product not used)
anything else                               acknowledged, nothing changes
==========================================  ===========================================

A revoked connection is never revived by a webhook. Each change is audited with the
actor ``webhook``.

Idempotence. Plaid repeats a notification with a byte-identical body, and the receiver
re-arms an applied row when its body comes again (:mod:`aggregator.plaid.receiver`), so
applying a code twice must do no more than applying it once, apart from what the repeat
itself announces: a second ``SYNC_UPDATES_AVAILABLE`` syncs again (from the stored
cursor: a no-op when nothing changed); a second ``ITEM_LOGIN_REQUIRED`` after the user
repaired the login marks the connection again; while it is still ``reauth_required``
it changes nothing and emits nothing. Every other row of the table above sets a value
it would set again, or emits only when a value moved.
``tests/aggregator/plaid/test_repeats.py`` applies every code twice and proves it.

``SYNC_UPDATES_AVAILABLE`` is the one webhook whose work happens after the transaction:
the row *is* the sync's queue entry. Applying it spends one unit of the connection's rate
budget (:func:`aggregator.sync.budget.spend`, under the connection's row lock) and leaves
the row ``pending`` with outcome ``sync_requested``; the worker syncs and then calls
:func:`finish_sync`. A crash in between brings the row back with its unit already spent,
so it is synced without spending again. With no unit left the row stays ``pending`` with
``available_at`` = the connection's ``next_sync_allowed_at``, outcome ``deferred``. A
repeat that arrived while the sync ran (``redelivered_at``) re-arms the row once the
sync is done: Plaid may have had more than that sync read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.events.hooks import OutboxPlaidHooks, connection_event
from aggregator.models import (
    Connection,
    ConnectionStatus,
    PlaidWebhookEvent,
    SyncState,
    WebhookStatus,
)
from aggregator.reauth import require_reauth
from aggregator.sync.budget import BudgetExhausted, spend
from connectors import SyncPolicy

#: Plaid disconnects an Item about seven days after PENDING_DISCONNECT.
PENDING_DISCONNECT_NOTICE = timedelta(days=7)
#: The ``/transactions/get`` era's notifications; ``SYNC_UPDATES_AVAILABLE`` covers them.
LEGACY_TRANSACTIONS = frozenset({"INITIAL_UPDATE", "HISTORICAL_UPDATE", "DEFAULT_UPDATE",
                                 "TRANSACTIONS_REMOVED"})
#: Every ``(webhook_type, webhook_code)`` Plaid documents for the products we use.
DOCUMENTED_CODES = frozenset({
    *(("ITEM", c) for c in ("ERROR", "LOGIN_REPAIRED", "NEW_ACCOUNTS_AVAILABLE",
                            "PENDING_EXPIRATION", "PENDING_DISCONNECT",
                            "USER_PERMISSION_REVOKED", "USER_ACCOUNT_REVOKED",
                            "WEBHOOK_UPDATE_ACKNOWLEDGED")),
    *(("TRANSACTIONS", c) for c in (*LEGACY_TRANSACTIONS, "SYNC_UPDATES_AVAILABLE",
                                    "RECURRING_TRANSACTIONS_UPDATE")),
})
_ERROR_CODE = re.compile(r"^[A-Z0-9_]{1,64}$")
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
    if event.redelivered_at is not None and event.redelivered_at >= started_at:
        # Plaid repeated the notification while this sync ran: sync once more (a new
        # budget unit) rather than trust that this run read what the repeat announced.
        event.outcome, event.available_at, event.redelivered_at = None, now, None
        return 0
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
    kind, code = event.webhook_type, event.webhook_code
    if kind == "TRANSACTIONS" and code in LEGACY_TRANSACTIONS:
        return "legacy"
    if kind != "ITEM" or connection.status is ConnectionStatus.REVOKED:
        return "acknowledged"
    payload = json.loads(event.body)
    if code == "ERROR":
        return await _item_error(session, connection, payload.get("error"), hooks)
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
        expiry = _expiry(payload, code)
        current = connection.consent_expires_at
        if current is not None and current <= expiry:
            return "consent_unchanged"  # a repeat, or a later date than we already hold
        connection.consent_expires_at = expiry
        await hooks.consent_expiring(session, connection)
        return "consent_expiring"
    if code == "USER_PERMISSION_REVOKED":
        await _set_status(session, connection, ConnectionStatus.REVOKED,
                          code.lower()[:64], "connection.revoked")
        return "revoked"
    if code == "USER_ACCOUNT_REVOKED":
        # One account's access was withdrawn at the bank (Plaid: re-grantable through
        # update mode or the bank's portal); the Item and its other accounts stay.
        await audit.record(session, actor="webhook", action="connection.account_revoked",
                           target_id=connection.id)
        return "account_revoked"
    if code == "NEW_ACCOUNTS_AVAILABLE":
        await hooks.new_accounts(session, connection)
        return "new_accounts"
    return "acknowledged"


async def _item_error(session: AsyncSession, connection: Connection, error: object,
                      hooks: PlaidHooks) -> str:
    code = error.get("error_code") if isinstance(error, dict) else None
    if code == "ITEM_LOGIN_REQUIRED":
        if connection.status is ConnectionStatus.REAUTH_REQUIRED:
            return "already_reauth"  # a repeat before the user acted: nothing new
        await require_reauth(session, connection.id, reason="item_login_required",
                             actor="webhook")
        await hooks.reauth_required(session, connection)
        return "reauth_required"
    if not isinstance(code, str) or not _ERROR_CODE.match(code):
        return "acknowledged"
    # Plaid's error code (e.g. INSTITUTION_NOT_RESPONDING) is a code, never user data;
    # the app sees it as the connection's last error until a sync succeeds.
    state = await session.get(SyncState, connection.id)
    if state is None:
        state = SyncState(connection_id=connection.id, user_id=connection.user_id)
        session.add(state)
    state.last_error = code
    return "item_error"


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


#: How long an applied or orphaned webhook is kept, as history (what it did, when). It is
#: no longer needed for de-duplication: a repeat of an applied body re-arms its row. The
#: table holds one row per distinct body received in this window, plus pending jobs.
HISTORY_RETENTION = timedelta(days=1)
DEDUP_RETENTION = HISTORY_RETENTION  # the name the previous release used


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

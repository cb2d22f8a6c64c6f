"""The one way a connection becomes ``reauth_required``: :func:`require_reauth`.

Several places learn that a grant or consent is dead: the refresh worker
(``invalid_grant``), an on-demand or scheduled sync refreshing its token
(:mod:`aggregator.sync.tokens`), the consent watch (the consent's end passed,
:mod:`aggregator.worker.consent`), Plaid (``ITEM_LOGIN_REQUIRED`` in a webhook or a
``/transactions/sync`` answer) and a bank's consent-status answer. Each calls
:func:`require_reauth` in its own transaction, which makes the outcome the same
everywhere: the status and its reason, one audit record and exactly one
``connection.reauth_required`` event. Only an ``active`` connection moves: when two paths
learn of the same death (a sync and the worker racing), the second finds the connection
already flagged and writes nothing, so the application hears it once.

Event reasons are codes (``invalid_grant``, ``invalid_grant_after_crash``,
``consent_expired``, ``item_login_required``, ``consent_revoked``), never a bank's text.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.events.hooks import connection_event
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus
from aggregator.models.base import table_of, utcnow

log = logging.getLogger(__name__)

_connections = table_of(Connection)


async def require_reauth(
    session: AsyncSession, connection_id: ConnectionId, *, reason: str, actor: str,
    request_id: str | None = None, condition: ColumnElement[bool] | None = None,
    **event_data: Any,
) -> bool:
    """Flag an ``active`` connection ``reauth_required`` for ``reason``; True if this did it.

    Runs in the caller's transaction (the status, the audit record and the event commit
    together or not at all). ``condition`` narrows the update further (the consent watch
    demands the consent's end still be past); ``event_data`` adds codes or instants to the
    event (:data:`aggregator.events.outbox.FIELDS`). Example::

        async with router.session(region) as session, session.begin():
            await require_reauth(session, connection_id, reason="invalid_grant",
                                 actor="worker")
    """
    k = _connections.c
    stmt = update(_connections).where(
        k.id == connection_id, k.status == ConnectionStatus.ACTIVE)
    if condition is not None:
        stmt = stmt.where(condition)
    moved = await session.execute(stmt.values(
        status=ConnectionStatus.REAUTH_REQUIRED, status_reason=reason[:64],
        updated_at=utcnow(),
    ))
    if getattr(moved, "rowcount", 0) != 1:
        return False
    await audit.record(session, actor=actor, action="connection.reauth_required",
                       target_id=connection_id, request_id=request_id)
    await connection_event(session, connection_id, "connection.reauth_required",
                           reason=reason[:64], **event_data)
    log.info("connection %s needs re-consent (%s)", connection_id, reason[:64])
    return True

"""Applying stored Plaid webhooks to connections, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.models import (
    Connection,
    ConnectionStatus,
    OutboundEvent,
    PlaidWebhookEvent,
    SyncSpend,
    WebhookStatus,
)
from aggregator.plaid import (
    DEDUP_RETENTION,
    SYNC_REQUESTED,
    NoPlaidHooks,
    Receipt,
    apply_webhook_event,
    finish_sync,
    pending_events,
    purge_expired,
    store_webhook,
)
from aggregator.store import RegionRouter
from aggregator.sync import next_allowed_at
from connectors import PlaidWebhook, SyncPolicy
from tests.aggregator.plaid.conftest import ITEM


def webhook(kind: str, code: str, **extra: Any) -> PlaidWebhook:
    payload = {"webhook_type": kind, "webhook_code": code, "item_id": ITEM, **extra}
    body = json.dumps(payload).encode()
    return PlaidWebhook(body, hashlib.sha256(body).digest(), "kid", datetime.now(UTC), kind,
                        code, str(payload["item_id"]), payload)


class Recorder(NoPlaidHooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None:
        self.calls.append("reauth")

    async def consent_expiring(self, session: AsyncSession, connection: Connection) -> None:
        self.calls.append("consent")


async def deliver(router: RegionRouter, hook: PlaidWebhook, hooks: Recorder) -> str | None:
    async with router.session("eu") as session, session.begin():
        assert await store_webhook(session, "eu", hook) is Receipt.STORED
    async with router.session("eu") as session, session.begin():
        return await apply_webhook_event(session, hook.body_sha256, hooks)


async def state(router: RegionRouter, connection_id: str) -> Connection:
    async with router.reader("eu") as session:
        return (await session.execute(
            select(Connection).where(Connection.id == connection_id))).scalar_one()


async def test_login_required_then_repaired(
    region_router: RegionRouter, connection: Connection
) -> None:
    hooks = Recorder()
    outcome = await deliver(region_router, webhook(
        "ITEM", "ERROR", error={"error_code": "ITEM_LOGIN_REQUIRED"}), hooks)
    assert outcome == "reauth_required"
    current = await state(region_router, connection.id)
    assert current.status is ConnectionStatus.REAUTH_REQUIRED
    assert current.status_reason == "item_login_required"
    assert hooks.calls == ["reauth"]
    assert await deliver(region_router, webhook("ITEM", "LOGIN_REPAIRED"), hooks) == "active"
    assert (await state(region_router, connection.id)).status is ConnectionStatus.ACTIVE
    async with region_router.reader("eu") as session:
        types = list((await session.execute(select(OutboundEvent.type))).scalars())
    assert "connection.reauthorized" in types


async def test_pending_expiration_records_the_consent_expiry(
    region_router: RegionRouter, connection: Connection
) -> None:
    hooks = Recorder()
    hook = webhook("ITEM", "PENDING_EXPIRATION", consent_expiration_time="2026-12-01T00:00:00Z")
    assert await deliver(region_router, hook, hooks) == "consent_expiring"
    current = await state(region_router, connection.id)
    assert current.consent_expires_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert hooks.calls == ["consent"]


async def test_pending_disconnect_expires_in_about_a_week(
    region_router: RegionRouter, connection: Connection
) -> None:
    await deliver(region_router, webhook("ITEM", "PENDING_DISCONNECT"), Recorder())
    expires = (await state(region_router, connection.id)).consent_expires_at
    assert expires is not None
    assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7)


async def test_permission_revoked_is_final(
    region_router: RegionRouter, connection: Connection
) -> None:
    hooks = Recorder()
    assert await deliver(region_router, webhook("ITEM", "USER_PERMISSION_REVOKED"),
                         hooks) == "revoked"
    assert (await state(region_router, connection.id)).status is ConnectionStatus.REVOKED
    # Neither a repair nor a sync revives a revoked connection.
    assert await deliver(region_router, webhook("ITEM", "LOGIN_REPAIRED"), hooks) \
        == "acknowledged"
    assert await deliver(region_router, webhook("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"),
                         hooks) == "ignored_inactive"
    assert (await state(region_router, connection.id)).status is ConnectionStatus.REVOKED
    assert hooks.calls == []


async def event_row(router: RegionRouter, key: bytes) -> PlaidWebhookEvent:
    async with router.reader("eu") as session:
        found = await session.get(PlaidWebhookEvent, key)
    assert found is not None
    return found


async def spends(router: RegionRouter, connection_id: str) -> list[str]:
    async with router.reader("eu") as session:
        return list((await session.execute(
            select(SyncSpend.reason).where(SyncSpend.connection_id == connection_id)
        )).scalars())


async def test_sync_updates_available_spends_a_unit_and_stays_queued(
    region_router: RegionRouter, connection: Connection
) -> None:
    hook = webhook("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", historical_update_complete=True)
    assert await deliver(region_router, hook, Recorder()) == SYNC_REQUESTED
    event = await event_row(region_router, hook.body_sha256)
    assert (event.status, event.outcome) == (WebhookStatus.PENDING, SYNC_REQUESTED)
    assert await spends(region_router, connection.id) == ["webhook", "webhook"]
    # Applied again (a crash before the sync ran): synced without spending twice.
    async with region_router.session("eu") as session, session.begin():
        assert await apply_webhook_event(session, hook.body_sha256) == SYNC_REQUESTED
    assert len(await spends(region_router, connection.id)) == 2


async def test_sync_over_budget_is_deferred_to_next_sync_allowed_at(
    region_router: RegionRouter, connection: Connection
) -> None:
    policy = SyncPolicy(daily_budget=1)
    first = webhook("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", n=1)
    second = webhook("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", n=2)
    for hook in (first, second):
        async with region_router.session("eu") as session, session.begin():
            await store_webhook(session, "eu", hook)
    async with region_router.session("eu") as session, session.begin():
        assert await apply_webhook_event(session, first.body_sha256, policy=policy) \
            == SYNC_REQUESTED
    async with region_router.session("eu") as session, session.begin():
        assert await apply_webhook_event(session, second.body_sha256, policy=policy) \
            == "deferred"
    async with region_router.reader("eu") as session:
        allowed = await next_allowed_at(session, connection.id, policy, datetime.now(UTC))
    deferred = await event_row(region_router, second.body_sha256)
    assert deferred.status is WebhookStatus.PENDING
    assert abs((deferred.available_at - allowed).total_seconds()) < 5
    assert deferred.available_at > datetime.now(UTC) + timedelta(hours=23)
    assert await pending_events_due(region_router) == [first.body_sha256]

    # The first sync ran: it covers the deferred request, which closes with it.
    async with region_router.session("eu") as session, session.begin():
        closed = await finish_sync(session, first.body_sha256, "synced",
                                   started_at=datetime.now(UTC))
    assert closed == 2
    assert (await event_row(region_router, second.body_sha256)).outcome == "coalesced"


async def pending_events_due(router: RegionRouter) -> list[bytes]:
    async with router.reader("eu") as session:
        return list(await pending_events(session))


async def test_purge_drops_expired_done_rows_and_keeps_jobs(
    region_router: RegionRouter, connection: Connection
) -> None:
    done = webhook("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED")
    await deliver(region_router, done, Recorder())
    queued = webhook("ITEM", "LOGIN_REPAIRED")
    async with region_router.session("eu") as session, session.begin():
        await store_webhook(session, "eu", queued)
        await session.execute(update(PlaidWebhookEvent).values(
            received_at=datetime.now(UTC) - DEDUP_RETENTION - timedelta(hours=1)))
    async with region_router.session("eu") as session, session.begin():
        assert await purge_expired(session, datetime.now(UTC) - DEDUP_RETENTION) == 1
    async with region_router.reader("eu") as session:
        left = list((await session.execute(select(PlaidWebhookEvent.body_sha256))).scalars())
    assert left == [queued.body_sha256]
    # Once purged, Plaid's body is new again: past the retry window it is stored anew.
    async with region_router.session("eu") as session, session.begin():
        assert await store_webhook(session, "eu", done) is Receipt.STORED


async def test_unknown_codes_are_acknowledged_and_marked_applied(
    region_router: RegionRouter, connection: Connection
) -> None:
    hook = webhook("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED")
    assert await deliver(region_router, hook, Recorder()) == "acknowledged"
    async with region_router.reader("eu") as session:
        event = (await session.execute(select(PlaidWebhookEvent))).scalar_one()
    assert (event.status, event.outcome, event.attempts) == (
        WebhookStatus.APPLIED, "acknowledged", 1)
    assert (await state(region_router, connection.id)).status is ConnectionStatus.ACTIVE


async def test_orphan_is_never_applied(region_router: RegionRouter) -> None:
    hook = webhook("ITEM", "USER_PERMISSION_REVOKED")
    async with region_router.session("eu") as session, session.begin():
        assert await store_webhook(session, "eu", hook) is Receipt.ORPHANED
    async with region_router.session("eu") as session, session.begin():
        assert await apply_webhook_event(session, hook.body_sha256) is None

"""The emitters in other packages' seams: each change writes its event, in its transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import select, update

from aggregator.ids import ApplicationId
from aggregator.models import Connection, OutboundEvent
from aggregator.plaid import Receipt, apply_webhook_event, store_webhook
from aggregator.store import RegionRouter
from aggregator.worker.refresh import on_reauth_required
from connectors import PlaidWebhook
from tests.aggregator._factories import LinkFactory

ITEM = "item-events-1"


async def _events(router: RegionRouter) -> list[OutboundEvent]:
    async with router.reader("eu") as session:
        return list((await session.execute(
            select(OutboundEvent).order_by(OutboundEvent.created_at))).scalars())


def _plaid(code: str, **extra: object) -> PlaidWebhook:
    payload = {"webhook_type": "ITEM", "webhook_code": code, "item_id": ITEM, **extra}
    body = json.dumps(payload).encode()
    return PlaidWebhook(body, hashlib.sha256(body).digest(), "kid", datetime.now(UTC), "ITEM",
                        code, ITEM, payload)


async def test_worker_reauth_seam_emits_reauth_required(
    region_router: RegionRouter, make_linked: LinkFactory, app_id: ApplicationId,
) -> None:
    linked = await make_linked("eu")
    async with region_router.session("eu") as session, session.begin():
        await on_reauth_required(session, linked.connection.id, reason="invalid_grant")
    (event,) = await _events(region_router)
    assert (event.type, event.application_id) == ("connection.reauth_required", app_id)
    assert event.data["status"] == "reauth_required"
    assert event.data["reason"] == "invalid_grant"


async def test_plaid_item_webhooks_emit_reauth_and_consent_expiring(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == linked.connection.id)
                              .values(external_ref=ITEM))
    hooks = [
        _plaid("PENDING_EXPIRATION", consent_expiration_time="2030-01-01T00:00:00Z"),
        _plaid("ERROR", error={"error_code": "ITEM_LOGIN_REQUIRED"}),
    ]
    for hook in hooks:
        async with region_router.session("eu") as session, session.begin():
            assert await store_webhook(session, "eu", hook) is Receipt.STORED
        async with region_router.session("eu") as session, session.begin():
            await apply_webhook_event(session, hook.body_sha256)
    expiring, reauth = await _events(region_router)
    assert expiring.type == "connection.consent_expiring"
    assert expiring.data["consent_expires_at"].startswith("2030-01-01T00:00:00")
    assert reauth.type == "connection.reauth_required"
    assert reauth.data["reason"] == "item_login_required"
    assert all(e.data["connection_id"] == linked.connection.id for e in (expiring, reauth))

"""Every path that learns a grant or consent is dead goes through
:func:`aggregator.reauth.require_reauth`: status, reason, and exactly one
``connection.reauth_required`` event, even when the path runs twice.

The event table (path → reason):

==================  ========================
worker refresh      ``invalid_grant``
on-demand sync      ``invalid_grant``
scheduled sync      ``invalid_grant``
consent expiry      ``consent_expired``
Plaid webhook       ``item_login_required``
==================  ========================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from aggregator.models import (
    AuditEvent,
    Connection,
    ConnectionStatus,
    Credential,
    OutboundEvent,
    PlaidWebhookEvent,
    SyncState,
    WebhookStatus,
)
from aggregator.models.base import utcnow
from aggregator.plaid.apply import apply_webhook_event
from aggregator.sandbox import Faults
from aggregator.sync import BankDirectory, Syncer
from aggregator.worker import RefreshContext, WorkerMetrics, lease_batch
from aggregator.worker.consent import ConsentWatch
from aggregator.worker.refresh import refresh_leased
from aggregator.worker.sync_schedule import SyncSchedule
from tests.aggregator.e2e.conftest import Gateway

Path = Callable[[Gateway, str], Awaitable[None]]


def _banks(gateway: Gateway) -> BankDirectory:
    banks = gateway.services.banks
    assert isinstance(banks, BankDirectory)
    return banks


async def _expire_token(gateway: Gateway) -> None:
    """The access token is past, the bank refuses every refresh: the grant is dead."""
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            access_expires_at=utcnow() - timedelta(minutes=1),
            refresh_due_at=utcnow() - timedelta(seconds=1),
        ).execution_options(synchronize_session=False))
    gateway.bank.faults = Faults(force_invalid_grant=True)


async def worker_refresh(gateway: Gateway, connection_id: str) -> None:
    await _expire_token(gateway)
    services = gateway.services
    ctx = RefreshContext(services.router, services.custody, _banks(gateway), WorkerMetrics(),
                         "t", max_interval=timedelta(hours=1))
    for lease in await lease_batch(services.router, "eu", "t", now=utcnow(), limit=5,
                                   lease_for=timedelta(seconds=30)):
        await refresh_leased(ctx, "eu", lease)


async def on_demand_sync(gateway: Gateway, connection_id: str) -> None:
    await _expire_token(gateway)
    answer = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
    assert answer.status_code >= 400  # the grant is dead: no data, a problem document


async def scheduled_sync(gateway: Gateway, connection_id: str) -> None:
    await _expire_token(gateway)
    services, banks = gateway.services, _banks(gateway)
    schedule = SyncSchedule(services.router, banks,
                            Syncer(services.router, services.custody, banks))
    async with services.router.session("eu") as session, session.begin():
        await session.execute(update(SyncState).values(
            last_synced_at=utcnow() - timedelta(days=1)))
    await schedule.sync_one("eu", connection_id, banks.profile("sandbox-eu").sync)


async def consent_expiry(gateway: Gateway, connection_id: str) -> None:
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(update(Connection).values(
            consent_expires_at=utcnow() - timedelta(minutes=1)))
    watch = ConsentWatch(gateway.services.router, _banks(gateway))
    await watch.expire("eu", connection_id, utcnow())


async def plaid_webhook(gateway: Gateway, connection_id: str) -> None:
    body = json.dumps({"webhook_type": "ITEM", "webhook_code": "ERROR",
                       "error": {"error_code": "ITEM_LOGIN_REQUIRED"},
                       "n": utcnow().isoformat()})
    digest = hashlib.sha256(body.encode()).digest()
    async with gateway.services.router.session("eu") as session, session.begin():
        session.add(PlaidWebhookEvent(
            body_sha256=digest, region="eu", item_id="item-1", connection_id=connection_id,
            webhook_type="ITEM", webhook_code="ERROR", body=body, signed_at=utcnow(),
            status=WebhookStatus.PENDING, available_at=utcnow()))
    async with gateway.services.router.session("eu") as session, session.begin():
        await apply_webhook_event(session, digest)


PATHS: dict[str, tuple[Path, str]] = {
    "worker_refresh": (worker_refresh, "invalid_grant"),
    "on_demand_sync": (on_demand_sync, "invalid_grant"),
    "scheduled_sync": (scheduled_sync, "invalid_grant"),
    "consent_expiry": (consent_expiry, "consent_expired"),
    "plaid_webhook": (plaid_webhook, "item_login_required"),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_path_flags_reauth_with_exactly_one_event(
    gateway: Gateway, path: str,
) -> None:
    run, reason = PATHS[path]
    _, connection_id = await gateway.link("eu")

    await run(gateway, connection_id)
    await run(gateway, connection_id)  # learning it again must not tell the app twice

    router = gateway.services.router
    async with router.reader("eu") as session:
        connection = await session.get(Connection, connection_id)
        events = (await session.execute(
            select(OutboundEvent).where(OutboundEvent.type == "connection.reauth_required")
        )).scalars().all()
        audited = (await session.execute(select(AuditEvent.action).where(
            AuditEvent.action == "connection.reauth_required"))).scalars().all()
    assert connection is not None
    assert connection.status is ConnectionStatus.REAUTH_REQUIRED
    assert connection.status_reason == reason
    assert [(e.data["connection_id"], e.data["reason"]) for e in events] == [
        (connection_id, reason)]
    assert len(audited) == 1

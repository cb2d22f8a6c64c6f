"""The worker's Plaid pass: each stored webhook applied once, failures backed off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.models import (
    AuditEvent,
    Connection,
    ConnectionStatus,
    PlaidWebhookEvent,
    WebhookStatus,
)
from aggregator.plaid import NoPlaidHooks, Receipt, store_webhook
from aggregator.store import RegionRouter
from aggregator.worker.plaid import PlaidSweep
from tests.aggregator._factories import LinkFactory
from tests.aggregator.plaid.conftest import ITEM
from tests.aggregator.plaid.test_apply import webhook


async def _linked_item(make_linked: LinkFactory, router: RegionRouter) -> str:
    linked = await make_linked("eu")
    async with router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == linked.connection.id)
                              .values(external_ref=ITEM))
    return linked.connection.id


async def _store_login_required(router: RegionRouter) -> bytes:
    hook = webhook("ITEM", "ERROR", error={"error_code": "ITEM_LOGIN_REQUIRED"})
    async with router.session("eu") as session, session.begin():
        assert await store_webhook(session, "eu", hook) is Receipt.STORED
    return hook.body_sha256


class CountingHooks(NoPlaidHooks):
    def __init__(self) -> None:
        self.reauth = 0

    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None:
        self.reauth += 1


async def test_item_login_required_is_applied_once_by_two_concurrent_worker_passes(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    connection_id = await _linked_item(make_linked, region_router)
    key = await _store_login_required(region_router)
    hooks = CountingHooks()
    first, second = PlaidSweep(region_router, hooks), PlaidSweep(region_router, hooks)
    stop = asyncio.Event()

    applied = await asyncio.gather(first.run_once(stop), second.run_once(stop),
                                   first.apply_one("eu", key), second.apply_one("eu", key))

    assert applied[0] + applied[1] + int(applied[2]) + int(applied[3]) == 1
    assert hooks.reauth == 1
    async with region_router.reader("eu") as session:
        connection = await session.get(Connection, connection_id)
        event = await session.get(PlaidWebhookEvent, key)
        audits = (await session.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "connection.reauth_required"))).scalar_one()
    assert connection is not None
    assert connection.status is ConnectionStatus.REAUTH_REQUIRED
    assert event is not None
    assert event.status is WebhookStatus.APPLIED
    assert event.attempts == 1
    assert audits == 1


class BrokenHooks(NoPlaidHooks):
    async def reauth_required(self, session: AsyncSession, connection: Connection) -> None:
        raise RuntimeError("outbox unavailable")


async def test_a_failing_event_is_rolled_back_and_retried_later_with_backoff(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    connection_id = await _linked_item(make_linked, region_router)
    key = await _store_login_required(region_router)
    sweep = PlaidSweep(region_router, BrokenHooks())

    assert await sweep.run_once(asyncio.Event()) == 0
    assert await sweep.run_once(asyncio.Event()) == 0  # not due again yet: no hot loop

    async with region_router.reader("eu") as session:
        event = await session.get(PlaidWebhookEvent, key)
        connection = await session.get(Connection, connection_id)
    assert event is not None
    assert event.status is WebhookStatus.PENDING
    assert event.attempts == 1
    assert event.available_at > datetime.now(UTC)
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE  # rolled back


async def test_applied_webhooks_are_counted_by_type_code_and_outcome(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    from prometheus_client import CollectorRegistry

    await _linked_item(make_linked, region_router)
    registry = CollectorRegistry()
    sweep = PlaidSweep(region_router, CountingHooks(), registry=registry)
    hooks = [webhook("ITEM", "ERROR", error={"error_code": "ITEM_LOGIN_REQUIRED"}),
             webhook("TRANSACTIONS", "DEFAULT_UPDATE"), webhook("ITEM", "MADE_UP_CODE")]
    async with region_router.session("eu") as session, session.begin():
        for hook in hooks:
            await store_webhook(session, "eu", hook)
    assert await sweep.run_once(asyncio.Event()) == 3

    def count(kind: str, code: str, outcome: str) -> float | None:
        return registry.get_sample_value("aggregator_plaid_webhooks_applied_total", {
            "region": "eu", "type": kind, "code": code, "outcome": outcome})

    assert count("ITEM", "ERROR", "reauth_required") == 1
    assert count("TRANSACTIONS", "DEFAULT_UPDATE", "legacy") == 1
    assert count("OTHER", "OTHER", "acknowledged") == 1  # the label set stays bounded

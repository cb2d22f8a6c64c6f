"""Plaid's repeated notifications: coalesced while pending, applied again once applied.

Plaid sends later notifications of the same kind with byte-identical bodies (only the
signature's ``iat`` differs). These tests deliver them through the receiver with its
verifier, both on injected clocks (minutes pass without sleeping), and prove that every
documented code is idempotent when applied twice.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from aggregator.events.hooks import OutboxPlaidHooks
from aggregator.models import (
    Connection,
    ConnectionStatus,
    OutboundEvent,
    PlaidWebhookEvent,
    SyncSpend,
    SyncState,
    WebhookStatus,
)
from aggregator.plaid import (
    SYNC_REQUESTED,
    PlaidWebhooks,
    Receipt,
    apply_webhook_event,
    finish_sync,
)
from aggregator.plaid.apply import DOCUMENTED_CODES
from aggregator.store import RegionRouter
from connectors import WebhookKeys, WebhookVerifier
from tests.aggregator.plaid.conftest import ITEM
from tests.connectors.plaid.fake_plaid import FakePlaid
from tests.connectors.plaid.test_webhooks import Keys


class Clock:
    """One instant for the verifier (Unix seconds) and the receiver (datetime)."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)

    def seconds(self) -> float:
        return self.at.timestamp()

    def now(self) -> datetime:
        return self.at


class Deliveries:
    """Plaid signing a body now and the gateway receiving it (the real verifier)."""

    def __init__(self, router: RegionRouter) -> None:
        self.router = router
        self.clock = Clock()
        self.plaid = FakePlaid()
        self.key = self.plaid.add_key()
        keys = WebhookKeys(Keys(self.plaid), clock=self.clock.seconds)
        self.receiver = PlaidWebhooks(
            router, {"eu": WebhookVerifier(keys, clock=self.clock.seconds)},
            clock=self.clock.now)

    async def send(self, body: bytes) -> Receipt:
        header = self.plaid.sign(body, self.key, iat=int(self.clock.seconds()))
        return await self.receiver.receive("eu", body, header)

    def later(self, minutes: float) -> None:
        self.clock.at += timedelta(minutes=minutes)

    async def apply(self, body: bytes) -> str | None:
        async with self.router.session("eu") as session, session.begin():
            return await apply_webhook_event(session, hashlib.sha256(body).digest(),
                                             OutboxPlaidHooks())


@pytest.fixture
def plaid(region_router: RegionRouter) -> Deliveries:
    return Deliveries(region_router)


def body(kind: str, code: str, **extra: Any) -> bytes:
    return json.dumps({"webhook_type": kind, "webhook_code": code, "item_id": ITEM,
                       "environment": "sandbox", **extra}).encode()


LOGIN_REQUIRED = body("ITEM", "ERROR", error={"error_code": "ITEM_LOGIN_REQUIRED"})
SYNC = body("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", initial_update_complete=True,
            historical_update_complete=True)


async def connection_of(router: RegionRouter, connection_id: str) -> Connection:
    async with router.reader("eu") as session:
        return (await session.execute(
            select(Connection).where(Connection.id == connection_id))).scalar_one()


async def count(router: RegionRouter, model: Any, *where: Any) -> int:
    async with router.reader("eu") as session:
        return int((await session.execute(
            select(func.count()).select_from(model).where(*where))).scalar_one())


async def test_the_same_login_required_twice_minutes_apart_both_take_effect(
    plaid: Deliveries, region_router: RegionRouter, connection: Connection,
) -> None:
    assert await plaid.send(LOGIN_REQUIRED) is Receipt.STORED
    assert await plaid.apply(LOGIN_REQUIRED) == "reauth_required"
    assert (await connection_of(region_router, connection.id)).status \
        is ConnectionStatus.REAUTH_REQUIRED
    # The user repairs the login through update mode; the connection is active again.
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == connection.id)
                              .values(status=ConnectionStatus.ACTIVE, status_reason=None))
    plaid.later(minutes=6)  # Plaid finds the login broken again: the same bytes
    assert await plaid.send(LOGIN_REQUIRED) is Receipt.STORED
    assert await plaid.apply(LOGIN_REQUIRED) == "reauth_required"
    assert (await connection_of(region_router, connection.id)).status \
        is ConnectionStatus.REAUTH_REQUIRED
    reauth = OutboundEvent.type == "connection.reauth_required"
    assert await count(region_router, OutboundEvent, reauth) == 2
    assert await count(region_router, PlaidWebhookEvent) == 1  # one row per distinct body


async def test_the_same_sync_updates_twice_minutes_apart_both_sync(
    plaid: Deliveries, region_router: RegionRouter, connection: Connection,
) -> None:
    key = hashlib.sha256(SYNC).digest()
    for round_ in range(2):
        assert await plaid.send(SYNC) is Receipt.STORED
        assert await plaid.apply(SYNC) == SYNC_REQUESTED
        async with region_router.session("eu") as session, session.begin():
            assert await finish_sync(session, key, "synced", started_at=plaid.clock.now()) == 1
        plaid.later(minutes=6)
        assert await count(region_router, SyncSpend,
                           SyncSpend.connection_id == connection.id) == 2 * (round_ + 1)


async def test_a_repeat_while_pending_is_coalesced_into_one_job(
    plaid: Deliveries, region_router: RegionRouter, connection: Connection,
) -> None:
    assert await plaid.send(LOGIN_REQUIRED) is Receipt.STORED
    plaid.later(minutes=1)
    assert await plaid.send(LOGIN_REQUIRED) is Receipt.DUPLICATE
    assert await plaid.apply(LOGIN_REQUIRED) == "reauth_required"
    assert await plaid.apply(LOGIN_REQUIRED) is None  # one job, applied once
    assert await count(region_router, OutboundEvent,
                       OutboundEvent.type == "connection.reauth_required") == 1


async def test_a_repeat_during_the_sync_brings_another_sync(
    plaid: Deliveries, region_router: RegionRouter, connection: Connection,
) -> None:
    key = hashlib.sha256(SYNC).digest()
    await plaid.send(SYNC)
    assert await plaid.apply(SYNC) == SYNC_REQUESTED
    started = plaid.clock.now()
    plaid.later(minutes=1)  # Plaid repeats while our sync reads
    assert await plaid.send(SYNC) is Receipt.DUPLICATE
    async with region_router.session("eu") as session, session.begin():
        assert await finish_sync(session, key, "synced", started_at=started) == 0
    async with region_router.reader("eu") as session:
        row = await session.get(PlaidWebhookEvent, key)
    assert row is not None
    assert (row.status, row.outcome) == (WebhookStatus.PENDING, None)
    assert await plaid.apply(SYNC) == SYNC_REQUESTED  # a second sync, a second unit
    assert await count(region_router, SyncSpend, SyncSpend.connection_id == connection.id) == 4


def _bodies() -> dict[str, bytes]:
    found = {f"{k}/{c}": body(k, c) for k, c in sorted(DOCUMENTED_CODES)
             if (k, c) not in {("ITEM", "ERROR"), ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")}}
    found["ITEM/ERROR ITEM_LOGIN_REQUIRED"] = LOGIN_REQUIRED
    found["ITEM/ERROR INSTITUTION_NOT_RESPONDING"] = body(
        "ITEM", "ERROR", error={"error_code": "INSTITUTION_NOT_RESPONDING"})
    found["ITEM/PENDING_EXPIRATION at a time"] = body(
        "ITEM", "PENDING_EXPIRATION", consent_expiration_time="2027-01-01T00:00:00Z")
    found["ITEM/USER_ACCOUNT_REVOKED"] = body("ITEM", "USER_ACCOUNT_REVOKED",
                                              account_id="acc-1")
    return found


BODIES = _bodies()


async def snapshot(router: RegionRouter, connection_id: str) -> tuple[Any, ...]:
    current = await connection_of(router, connection_id)
    async with router.reader("eu") as session:
        state = await session.get(SyncState, connection_id)
    return (current.status, current.status_reason, current.consent_expires_at,
            state.last_error if state else None,
            await count(router, OutboundEvent), await count(router, SyncSpend))


@pytest.mark.parametrize("name", sorted(BODIES))
async def test_every_documented_code_applied_twice_changes_nothing_the_second_time(
    plaid: Deliveries, region_router: RegionRouter, connection: Connection, name: str,
) -> None:
    raw = BODIES[name]
    assert await plaid.send(raw) is Receipt.STORED
    first = await plaid.apply(raw)
    after_first = await snapshot(region_router, connection.id)
    plaid.later(minutes=6)
    assert await plaid.send(raw) is Receipt.STORED  # applied before: a new notification
    second = await plaid.apply(raw)
    assert second is not None
    assert await snapshot(region_router, connection.id) == after_first, (first, second)


async def test_the_repeat_table_stays_one_row_per_body(
    plaid: Deliveries, region_router: RegionRouter, connection: Connection,
) -> None:
    for _ in range(10):
        await plaid.send(SYNC)
        await plaid.apply(SYNC)
        plaid.later(minutes=3)
    assert await count(region_router, PlaidWebhookEvent) == 1

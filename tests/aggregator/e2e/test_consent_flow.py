"""A consent's life over real sockets: linked, warned, expired, renewed through Link."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select

from aggregator.models import Connection, OutboundEvent
from aggregator.sync import BankDirectory
from aggregator.worker.consent import ConsentWatch
from tests.aggregator.e2e.conftest import Gateway


async def _events(gateway: Gateway, region: str) -> list[tuple[str, dict[str, str]]]:
    async with gateway.services.router.reader(region) as session:
        rows = (await session.execute(
            select(OutboundEvent).order_by(OutboundEvent.created_at, OutboundEvent.id)
        )).scalars()
        return [(e.type, e.data) for e in rows if e.type.startswith("connection.")]


async def test_consent_is_set_at_linking_expires_and_is_renewed_in_update_mode(
    gateway: Gateway,
) -> None:
    before = datetime.now().astimezone()
    user_id, connection_id = await gateway.link("eu")
    shown = (await gateway.api.get(f"/v1/connections/{connection_id}")).json()
    granted = datetime.fromisoformat(shown["consent_expires_at"])
    # sandbox-eu is a German bank and names no expiry: the EEA's 180 days apply.
    assert before + timedelta(days=180) <= granted <= datetime.now().astimezone() + timedelta(
        days=180)
    assert await _events(gateway, "eu") == [("connection.created", {
        "connection_id": connection_id, "user_id": user_id, "bank_id": "sandbox-eu",
        "status": "active", "consent_expires_at": granted.isoformat(),
    })]

    banks = gateway.services.banks
    assert isinstance(banks, BankDirectory)
    watch = ConsentWatch(gateway.services.router, banks)
    assert await watch.run_once(asyncio.Event(), now=granted - timedelta(days=7)) == 1
    assert await watch.run_once(asyncio.Event(), now=granted) == 1
    expired = (await gateway.api.get(f"/v1/connections/{connection_id}")).json()
    assert (expired["status"], expired["status_reason"]) == ("reauth_required",
                                                             "consent_expired")
    assert (await gateway.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 409

    walk = await gateway.walk(await gateway.link_url(user_id, connection_id=connection_id))

    assert walk.landed_query == {"connection_id": connection_id, "outcome": "success"}
    renewed = (await gateway.api.get(f"/v1/connections/{connection_id}")).json()
    assert renewed["status"] == "active"
    assert renewed["status_reason"] is None
    renewed_until = datetime.fromisoformat(renewed["consent_expires_at"])
    assert renewed_until >= granted
    sent = await _events(gateway, "eu")
    assert [(t, d.get("reason"), d.get("consent_expires_at")) for t, d in sent] == [
        ("connection.created", None, granted.isoformat()),
        ("connection.consent_expiring", None, granted.isoformat()),
        ("connection.reauth_required", "consent_expired", granted.isoformat()),
        ("connection.reauthorized", None, renewed_until.isoformat()),
    ]
    async with gateway.services.router.reader("eu") as session:
        row = await session.get(Connection, connection_id)
    assert row is not None
    assert row.consent_warned_for == granted != row.consent_expires_at  # re-armed
    # The renewed period gets its own warning.
    assert await watch.run_once(asyncio.Event(), now=renewed_until - timedelta(days=7)) == 1


async def test_a_bank_outside_the_uk_and_eea_gets_no_assumed_consent_period(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("us")

    shown = (await gateway.api.get(f"/v1/connections/{connection_id}")).json()

    assert shown["consent_expires_at"] is None

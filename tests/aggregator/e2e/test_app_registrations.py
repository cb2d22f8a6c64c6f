"""Per-application bank clients by dynamic registration (RFC 7591/7592), end to end.

The sandbox bank and the gateway run on loopback sockets over SQLite and PostgreSQL
(tests/aggregator/e2e/conftest.py); both sandbox profiles get ``[registration]
per_application = true`` here, so the bank's consent page names the application's brand.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from html import escape
from typing import Any

import pytest
from sqlalchemy import select, update

from aggregator.applications import disable_application, update_application
from aggregator.link.wiring import LinkComponents
from aggregator.models import (
    AppRegistration,
    AuditEvent,
    Connection,
    Credential,
    RegistrationStatus,
)
from aggregator.models.base import utcnow
from aggregator.registrations import Registrations, RegistrationSweep
from aggregator.sandbox import DEV_CLIENT_ID
from tests.aggregator._logs import LogLines
from tests.aggregator.conftest import REGIONS, Backend
from tests.aggregator.e2e.conftest import Gateway
from tests.aggregator.e2e.test_sealed_at_rest import _dumps

BRAND = 'Budgetly <Pro> & "Co"'


@pytest.fixture
def profile_overrides() -> dict[str, Any]:
    return {"registration": {"per_application": True}}


def _consent_page(pages: list[str]) -> str:
    found = [p for p in pages if 'value="approve"' in p]
    assert len(found) == 1, pages
    return found[0]


async def _link_page(gateway: Gateway, region: str, external_id: str) -> tuple[str, str]:
    """Link a new user; (the bank's consent page, the connection id)."""
    user_id = await gateway.user(region, external_id)
    walk = await gateway.walk(await gateway.link_url(user_id))
    assert walk.landed_query["outcome"] == "success", walk.hops
    return _consent_page(walk.pages), walk.landed_query["connection_id"]


async def _registration(gateway: Gateway, region: str, bank_id: str) -> AppRegistration:
    async with gateway.services.router.reader(region) as session:
        row = await session.get(AppRegistration, (gateway.app_id, bank_id))
    assert row is not None
    return row


async def _connection(gateway: Gateway, region: str, connection_id: str) -> Connection:
    async with gateway.services.router.reader(region) as session:
        found = await session.get(Connection, connection_id)
    assert found is not None
    return found


async def test_the_banks_consent_page_names_the_brand_and_the_grant_stays_with_its_client(
    gateway: Gateway,
) -> None:
    await update_application(gateway.services.router, gateway.app_id, brand_name=BRAND)
    page, connection_id = await _link_page(gateway, "eu", "customer-1")
    assert f"<strong>{escape(BRAND)}</strong>" in page
    assert BRAND not in page
    assert DEV_CLIENT_ID not in page

    row = await _registration(gateway, "eu", "sandbox-eu")
    assert row.status is RegistrationStatus.ACTIVE
    assert row.client_name == BRAND
    assert list(gateway.bank.server.registered) == [row.client_id]
    assert (await _connection(gateway, "eu", connection_id)).bank_client_id == row.client_id
    async with gateway.services.router.reader("us") as session:  # the bank's region only
        assert (await session.execute(select(AppRegistration))).first() is None

    # A second link reuses the client; an expired token is refreshed by that client
    # (the bank refuses a refresh token presented by any other client: invalid_grant).
    await _link_page(gateway, "eu", "customer-2")
    assert len(gateway.bank.server.registered) == 1
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(
            update(Credential)
            .where(Credential.connection_id == connection_id)
            .values(
                access_expires_at=utcnow() - timedelta(seconds=1),
                updated_at=utcnow() - timedelta(minutes=5),
            )
        )
    issued = len(gateway.issued_tokens)
    synced = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text
    assert len(gateway.issued_tokens) - issued == 2  # refreshed: access + refresh token

    # Revocation goes to the same client: the bank's grant for it ends.
    deleted = await gateway.api.delete(f"/v1/connections/{connection_id}")
    assert deleted.status_code == 200, deleted.text
    store = gateway.bank.store
    grants = [g for g in store._grants.values() if g.client_id == row.client_id]
    assert any(g.revoked for g in grants)
    assert not all(g.revoked for g in grants)


async def test_a_brand_change_is_on_the_next_consent_page_of_the_same_client(
    gateway: Gateway,
) -> None:
    await update_application(gateway.services.router, gateway.app_id, brand_name="Budgetly")
    first, _ = await _link_page(gateway, "eu", "customer-1")
    assert "<strong>Budgetly</strong>" in first
    before = await _registration(gateway, "eu", "sandbox-eu")

    await update_application(gateway.services.router, gateway.app_id, brand_name="Budgetly Plus")
    assert (await _registration(gateway, "eu", "sandbox-eu")).status is RegistrationStatus.STALE
    second, _ = await _link_page(gateway, "eu", "customer-2")
    assert "<strong>Budgetly Plus</strong>" in second
    after = await _registration(gateway, "eu", "sandbox-eu")
    assert after.status is RegistrationStatus.ACTIVE
    assert after.client_name == "Budgetly Plus"
    assert after.client_id == before.client_id  # updated (RFC 7592 PUT), not re-registered
    assert list(gateway.bank.server.registered) == [before.client_id]

    await update_application(gateway.services.router, gateway.app_id, brand_name="")
    third, _ = await _link_page(gateway, "eu", "customer-3")
    assert "<strong>Budgetly</strong>" in third  # no brand: the application's name


async def test_disabling_the_app_deletes_its_client_at_the_bank_retrying_a_failure(
    gateway: Gateway,
) -> None:
    _, connection_id = await _link_page(gateway, "eu", "customer-1")
    row = await _registration(gateway, "eu", "sandbox-eu")
    assert row.client_name == "Budgetly"  # no brand name set: the application's name
    real_uri = row.registration_client_uri
    await disable_application(gateway.services.router, gateway.app_id)
    assert (await _registration(gateway, "eu", "sandbox-eu")).status is (
        RegistrationStatus.DELETING
    )
    assert row.client_id in gateway.bank.server.registered

    # The bank is unreachable on the first pass: kept, counted, audited, retried.
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(
            update(AppRegistration).values(
                registration_client_uri="http://127.0.0.1:9/register/" + row.client_id
            )
        )
    components = gateway.services.extra["aggregator.link"]
    assert isinstance(components, LinkComponents)
    registrations = components.flow.registrations
    assert isinstance(registrations, Registrations)
    sweep = RegistrationSweep(registrations)
    assert await sweep.run_once(asyncio.Event()) == 0
    failed = await _registration(gateway, "eu", "sandbox-eu")
    assert failed.status is RegistrationStatus.DELETING
    assert failed.attempts == 1
    assert failed.last_error == "bank_unavailable"
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(update(AppRegistration).values(registration_client_uri=real_uri))
    assert await sweep.run_once(asyncio.Event()) == 1

    assert row.client_id not in gateway.bank.server.clients
    deleted = await _registration(gateway, "eu", "sandbox-eu")
    assert deleted.status is RegistrationStatus.DELETED
    assert deleted.deleted_at is not None
    assert deleted.client_secret_sealed is None
    assert deleted.registration_access_token_sealed is None
    async with gateway.services.router.reader("eu") as session:
        actions = [
            a
            for (a,) in await session.execute(
                select(AuditEvent.action).where(AuditEvent.target_id == gateway.app_id)
            )
        ]
    assert actions.count("bank_client.registered") == 1
    assert actions.count("bank_client.delete_failed") == 1
    assert actions.count("bank_client.deleted") == 1
    assert await sweep.run_once(asyncio.Event()) == 0  # nothing left to delete
    assert (await _connection(gateway, "eu", connection_id)).bank_client_id == row.client_id


# Both sandbox profiles, with the eu one's per-application registration switched off.
@pytest.mark.parametrize("profile_overrides", [{"registration": {"per_application": False}}])
async def test_a_bank_without_registration_keeps_the_static_client(
    gateway: Gateway,
    profile_overrides: dict[str, Any],
) -> None:
    await update_application(gateway.services.router, gateway.app_id, brand_name=BRAND)
    page, connection_id = await _link_page(gateway, "eu", "customer-1")
    assert f"<strong>{DEV_CLIENT_ID}</strong>" in page
    assert escape(BRAND) not in page
    assert (await _connection(gateway, "eu", connection_id)).bank_client_id is None
    assert not gateway.bank.server.registered
    for region in REGIONS:
        async with gateway.services.router.reader(region) as session:
            assert (await session.execute(select(AppRegistration))).first() is None


async def test_client_secrets_are_neither_in_clear_columns_nor_in_logs(
    gateway: Gateway,
    backend: Backend,
    log_lines: LogLines,
) -> None:
    await update_application(gateway.services.router, gateway.app_id, brand_name=BRAND)
    await _link_page(gateway, "eu", "customer-1")
    await update_application(gateway.services.router, gateway.app_id, brand_name="Renamed")
    await _link_page(gateway, "eu", "customer-2")  # the PUT's answer is stored too
    row = await _registration(gateway, "eu", "sandbox-eu")
    client = gateway.bank.server.registered[row.client_id]
    secret = client.settings.client_secret
    assert secret is not None
    needles = {secret, *gateway.issued_tokens}
    assert len(needles) >= 4  # the client secret, the registration token, the grant's
    dumps = await _dumps(backend)
    assert row.client_id in dumps["eu"]  # the client id is in clear, on purpose
    assert row.client_secret_sealed is not None
    assert row.registration_access_token_sealed is not None
    assert bytes(row.client_secret_sealed).hex() in dumps["eu"].lower()
    for region, dump in dumps.items():
        leaked = [n for n in needles if n in dump]
        assert not leaked, (region, [n[:4] + "…" for n in leaked])
    text = json.dumps(log_lines())
    assert "registered a client" in text  # the log was captured...
    assert not [n for n in needles if n in text]  # ...and holds no credential

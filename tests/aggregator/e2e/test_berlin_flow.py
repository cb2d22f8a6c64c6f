"""Berlin Group NextGenPSD2 end to end: the gateway and the sandbox's XS2A interface.

Over real loopback sockets, on SQLite and PostgreSQL (the ``region_router`` fixture),
through both SCA approaches the sandbox offers: OAuth2 (``scope=AIS:{consentId}``) and
redirect (the bank's own page, then the consent status).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import select

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.link.walk import Walk, follow, forms_of, submit
from aggregator.link.wiring import install
from aggregator.models import Connection, OutboundEvent
from aggregator.sandbox import SandboxBank, SandboxConfig
from aggregator.sandbox.berlin import Consent, iban_of
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import load_profiles
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway, gateway_client

BANK = "sandbox-berlin"
APPROACHES = {
    "oauth": {"api.base_url": "/xs2a/oauth", "berlin_group.sca_approach": "oauth"},
    "redirect": {"api.base_url": "/xs2a/redirect", "berlin_group.sca_approach": "redirect"},
}


@pytest.fixture(params=sorted(APPROACHES))
def approach(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def access(request: pytest.FixtureRequest) -> str:
    """The profile's ``[berlin_group] access``; parametrize indirectly to change it."""
    return str(getattr(request, "param", "all_accounts"))


@pytest.fixture
async def berlin(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    approach: str, access: str,
) -> AsyncIterator[Gateway]:
    bank = SandboxBank(SandboxConfig(clients=[gateway_client()]))
    async with bank.serve() as bank_url, httpx.AsyncClient(timeout=10) as http:
        overrides = {BANK: {"issuer": bank_url, **APPROACHES[approach],
                            "berlin_group.status_poll_interval_ms": 50,
                            "berlin_group.access": access}}
        services = Services(settings, region_router, custody,
                            BankDirectory(load_profiles([], overrides), http))
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        app = create_app(settings, services=services)
        app_id, key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(timeout=20) as browser,
        ):
            yield Gateway(url, bank, bank_url, services, api, browser, app_id)


async def _link(gateway: Gateway, user_id: str | None = None, **extra: str
                ) -> tuple[str, dict[str, str]]:
    user_id = user_id or await gateway.user("eu")
    walk = await gateway.walk(await gateway.link_url(user_id, bank_id=BANK, **extra))
    return user_id, walk.landed_query


def _consent(gateway: Gateway, consent_id: str) -> Consent:
    return gateway.bank.berlin.all()[consent_id]


async def _connection(gateway: Gateway, connection_id: str) -> Connection:
    region = gateway.services.router.region_of(connection_id)
    async with gateway.services.router.reader(region) as session:
        found = await session.get(Connection, connection_id)
    assert found is not None
    return found


async def _events(gateway: Gateway, connection_id: str, kind: str) -> int:
    region = gateway.services.router.region_of(connection_id)
    async with gateway.services.router.reader(region) as session:
        rows = (await session.execute(
            select(OutboundEvent.data).where(OutboundEvent.type == kind))).scalars().all()
    return sum(1 for data in rows if data.get("connection_id") == connection_id)


async def test_link_creates_an_authorised_consent_and_syncs_user_present(
    berlin: Gateway, approach: str,
) -> None:
    _, query = await _link(berlin)
    assert query["outcome"] == "success", query
    connection = await _connection(berlin, query["connection_id"])
    assert connection.consent_id is not None
    consent = _consent(berlin, connection.consent_id)
    assert consent.status == "valid"
    assert consent.approach == approach.upper()
    assert consent.frequency_per_day == 4  # the profile's [sync] daily_budget
    assert consent.recurring
    # validUntil (180 days for a DE bank) is the connection's consent end, that day's end.
    expected = datetime.combine(consent.valid_until + timedelta(days=1), time(), UTC)
    assert connection.consent_expires_at == expected
    # The first sync ran with the user at the Link page: nothing counted as unattended.
    assert consent.usage == {}
    accounts = (await berlin.api.get(f"/v1/connections/{connection.id}/accounts")).json()
    assert accounts["data"], accounts


async def test_on_demand_sync_is_unattended_and_counts_at_the_bank(berlin: Gateway) -> None:
    _, query = await _link(berlin)
    connection_id = query["connection_id"]
    answer = await berlin.api.post(f"/v1/connections/{connection_id}/sync")
    assert answer.status_code == 200, answer.text
    consent = _consent(berlin, str((await _connection(berlin, connection_id)).consent_id))
    assert consent.usage[("accounts", "")] == 1
    assert consent.usage  # balances and transactions per account too
    assert all(count == 1 for count in consent.usage.values())


async def test_removal_deletes_the_consent_at_the_bank(berlin: Gateway) -> None:
    _, query = await _link(berlin)
    connection_id = query["connection_id"]
    consent_id = str((await _connection(berlin, connection_id)).consent_id)
    answer = await berlin.api.delete(f"/v1/connections/{connection_id}")
    assert answer.status_code in (200, 204), answer.text
    assert _consent(berlin, consent_id).status == "terminatedByTpp"


async def test_erasure_deletes_the_consent_at_the_bank(berlin: Gateway) -> None:
    user_id, query = await _link(berlin)
    consent_id = str((await _connection(berlin, query["connection_id"])).consent_id)
    answer = await berlin.api.delete(f"/v1/users/{user_id}")
    assert answer.status_code == 202, answer.text
    for _ in range(100):  # the job runs after the 202 went out: poll, bounded
        if _consent(berlin, consent_id).status == "terminatedByTpp":
            break
        await asyncio.sleep(0.05)
    assert _consent(berlin, consent_id).status == "terminatedByTpp"


async def test_update_mode_replaces_the_consent_and_deletes_the_old_one(
    berlin: Gateway,
) -> None:
    user_id, query = await _link(berlin)
    connection_id = query["connection_id"]
    old = str((await _connection(berlin, connection_id)).consent_id)
    _, again = await _link(berlin, user_id, connection_id=connection_id)
    assert again["outcome"] == "success", again
    assert again["connection_id"] == connection_id
    new = (await _connection(berlin, connection_id)).consent_id
    assert new is not None
    assert new != old
    assert _consent(berlin, new).status == "valid"
    assert _consent(berlin, old).status == "terminatedByTpp"


async def test_consent_revoked_at_the_bank_needs_reauth_with_one_event(
    berlin: Gateway,
) -> None:
    _, query = await _link(berlin)
    connection_id = query["connection_id"]
    berlin.bank.berlin.revoke_by_psu(str((await _connection(berlin, connection_id)).consent_id))
    for _ in range(2):  # a second sync finds it dead again and adds nothing
        answer = await berlin.api.post(f"/v1/connections/{connection_id}/sync")
        assert answer.status_code >= 400
    connection = await _connection(berlin, connection_id)
    assert connection.status.value == "reauth_required"
    assert connection.status_reason == "consent_revoked"
    assert await _events(berlin, connection_id, "connection.reauth_required") == 1


async def test_frequency_per_day_spent_at_the_bank_sets_next_sync_allowed_at(
    berlin: Gateway,
) -> None:
    _, query = await _link(berlin)
    connection_id = query["connection_id"]
    consent = _consent(berlin, str((await _connection(berlin, connection_id)).consent_id))
    today = berlin.bank.ledger.today
    for _ in range(consent.frequency_per_day):  # calls the bank counted and we did not
        assert berlin.bank.berlin.count_unattended(consent, "accounts", None, today)
    refused = await berlin.api.post(f"/v1/connections/{connection_id}/sync")
    assert refused.status_code >= 400
    reset = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(), UTC)
    body: dict[str, Any] = (await berlin.api.get(f"/v1/connections/{connection_id}")).json()
    allowed = datetime.fromisoformat(body["next_sync_allowed_at"])
    assert abs((allowed - reset).total_seconds()) < 2, body
    before = dict(consent.usage)
    again = await berlin.api.post(f"/v1/connections/{connection_id}/sync")
    assert again.status_code == 429  # the ledger refuses now; the bank is not asked
    assert consent.usage == before


@pytest.mark.parametrize("approach", ["redirect"], indirect=True)
async def test_refused_sca_is_denied_and_the_consent_deleted(berlin: Gateway) -> None:
    user_id = await berlin.user("eu")
    walk = await berlin.walk(await berlin.link_url(user_id, bank_id=BANK), decision="deny")
    assert walk.landed_query["outcome"] == "denied", walk.hops
    # The bank said `rejected`; the gateway then deleted the unused consent.
    statuses = {c.status for c in berlin.bank.berlin.all().values()}
    assert statuses == {"terminatedByTpp"}


@pytest.mark.parametrize("approach", ["redirect"], indirect=True)
async def test_received_after_the_redirect_is_polled_until_valid(berlin: Gateway) -> None:
    berlin.bank.berlin.status_lag = 2
    _, query = await _link(berlin)
    assert query["outcome"] == "success", query


async def _sign_in_at_bank(gateway: Gateway, page: httpx.Response, walk: Walk,
                           decision: str = "approve") -> httpx.Response:
    http = gateway.browser
    page = await follow(http, await submit(http, page, {
        "username": "alice", "password": "alice-pass"}), walk)
    return await follow(http, await submit(http, page, {}, button=("decision", decision)),
                        walk)


@pytest.mark.parametrize("access", ["two_step"], indirect=True)
async def test_two_step_consent_shares_only_the_accounts_picked(berlin: Gateway) -> None:
    http = berlin.browser
    user_id = await berlin.user("eu")
    walk = Walk(APP_REDIRECT)
    page = await follow(http, await http.get(
        await berlin.link_url(user_id, bank_id=BANK), follow_redirects=False), walk)
    page = await follow(http, await submit(http, page, {"bank_id": BANK}), walk)
    page = await _sign_in_at_bank(berlin, page, walk)
    # Back at the gateway: the accounts the one-off list consent showed, to pick from.
    assert page.status_code == 200, walk.hops
    assert "Choose your accounts" in page.text
    listing = [c for c in berlin.bank.berlin.all().values() if c.access.available]
    assert len(listing) == 1
    assert (listing[0].recurring, listing[0].frequency_per_day) == (False, 1)
    assert listing[0].status == "terminatedByTpp"  # its one use is spent
    (form,) = forms_of(page.text)
    ibans = [iban_of(a) for a in berlin.bank.ledger.accounts_of("alice")]
    assert ibans
    assert not any(iban in page.text for iban in ibans)  # masked; the IBANs stay sealed
    state = form.fields["state"]
    picked = await http.post(urljoin(str(page.url), form.action),
                             data={"state": state, "account": ["0"]}, follow_redirects=False)
    page = await follow(http, picked, walk)
    await _sign_in_at_bank(berlin, page, walk)
    assert walk.landed is not None, walk.hops
    query = walk.landed_query
    assert query["outcome"] == "success", walk.hops
    connection = await _connection(berlin, query["connection_id"])
    assert connection.consent_id is not None
    detailed = _consent(berlin, connection.consent_id)
    assert detailed.recurring
    assert len(detailed.access.accounts) == 1
    accounts = (await berlin.api.get(f"/v1/connections/{connection.id}/accounts")).json()
    assert len(accounts["data"]) == 1
    # The form cannot be posted twice.
    again = await http.post(urljoin(str(page.url), form.action),
                            data={"state": state, "account": ["0"]}, follow_redirects=False)
    assert again.status_code in (404, 409)


@pytest.mark.parametrize("access", ["two_step"], indirect=True)
@pytest.mark.parametrize("approach", ["redirect"], indirect=True)
async def test_two_step_choice_outside_the_offer_is_refused(berlin: Gateway) -> None:
    http = berlin.browser
    walk = Walk(APP_REDIRECT)
    page = await follow(http, await http.get(
        await berlin.link_url(await berlin.user("eu"), bank_id=BANK),
        follow_redirects=False), walk)
    page = await follow(http, await submit(http, page, {"bank_id": BANK}), walk)
    page = await _sign_in_at_bank(berlin, page, walk)
    (form,) = forms_of(page.text)
    action = urljoin(str(page.url), form.action)
    for bad in (["99"], ["x"], []):
        refused = await http.post(action, data={"state": form.fields["state"], "account": bad},
                                  follow_redirects=False)
        assert refused.status_code == 400, bad
    # The page can still be used after a refused choice.
    ok = await http.post(action, data={"state": form.fields["state"], "account": ["1"]},
                         follow_redirects=False)
    assert ok.status_code == 303


async def test_on_demand_sync_with_the_users_address_is_not_counted(berlin: Gateway) -> None:
    _, query = await _link(berlin)
    connection_id = query["connection_id"]
    answer = await berlin.api.post(f"/v1/connections/{connection_id}/sync",
                                   headers={"X-Customer-IP-Address": "203.0.113.7"})
    assert answer.status_code == 200, answer.text
    consent = _consent(berlin, str((await _connection(berlin, connection_id)).consent_id))
    assert consent.usage == {}  # PSU-IP-Address sent: the user is present

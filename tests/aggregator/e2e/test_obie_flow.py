"""UK Open Banking end to end: the gateway against the sandbox bank's ``sandbox-obie`` mode.

Real sockets, both databases (the ``region_router`` fixture), the built-in
``sandbox-obie`` profile with its development key, and the bank's own consent store as
the witness: what the gateway did shows in the consent's status at the bank.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, update

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.link.walk import Walk, follow, forms_of, link_as_person, submit
from aggregator.link.wiring import install
from aggregator.models import Connection, ConnectionStatus, Credential, OutboundEvent
from aggregator.models.base import utcnow
from aggregator.sandbox import SandboxConfig
from aggregator.sandbox.obie import ObieSandboxBank, dev_obie_client
from aggregator.sandbox_keys import KEY_DIRECTORY, resolve_sandbox_keys
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import PemSigner, load_profiles
from tests.aggregator._logs import LogLines

APP_REDIRECT = "https://app.example/linked"
BANK = "sandbox-obie"
CALLBACK = ("http://127.0.0.1/link/callback",)


@dataclass
class Obie:
    """A gateway and the sandbox bank in OBIE mode, and what the gateway sent the API."""

    bank: ObieSandboxBank
    services: Services
    api: httpx.AsyncClient
    browser: httpx.AsyncClient
    #: (path, headers) of every account-API call the gateway made.
    resource_calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: Every request object the gateway pushed (RFC 9126), compact JWS.
    pushed: list[str] = field(default_factory=list)

    async def link(self, external_id: str = "customer-1", decision: str = "approve",
                   **extra: str) -> Walk:
        user_id = extra.pop("user_id", None)
        if user_id is None:
            answer = await self.api.post("/v1/users", json={"external_id": external_id,
                                                            "region": "eu"})
            user_id = answer.json()["id"]
        session = await self.api.post("/v1/link/sessions", json={
            "user_id": user_id, "redirect_uri": APP_REDIRECT, "bank_id": BANK, **extra})
        assert session.status_code == 201, session.text
        walk = await link_as_person(self.browser, session.json()["link_url"],
                                    username="alice", password="alice-pass",
                                    bank_id=BANK, stop_at=APP_REDIRECT, decision=decision)
        walk.user_id = user_id  # type: ignore[attr-defined]
        return walk

    async def linked(self) -> tuple[str, Connection]:
        walk = await self.link()
        assert walk.landed_query.get("outcome") == "success", walk.hops
        connection = await self.connection(walk.landed_query["connection_id"])
        return walk.user_id, connection  # type: ignore[attr-defined]

    async def connection(self, connection_id: str) -> Connection:
        async with self.services.router.reader("eu") as session:
            found = await session.get(Connection, connection_id)
        assert found is not None
        return found

    def consent_status(self, consent_id: str | None) -> str:
        found = self.bank.consents.get(consent_id or "")
        assert found is not None
        return found.status


def _calls(recorded: list[tuple[str, dict[str, str]]], pushed: list[str]
           ) -> Callable[[httpx.Request], Any]:
    async def hook(request: httpx.Request) -> None:
        if request.url.path.startswith("/open-banking/v3.1/aisp/accounts"):
            recorded.append((request.url.path, dict(request.headers)))
        elif request.url.path == "/par":  # the pushed request object, for the log test
            form = parse_qs(request.content.decode())
            pushed.extend(form.get("request", []))
    return hook


@contextlib.asynccontextmanager
async def running(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    bank: ObieSandboxBank, **profile: Any,
) -> AsyncIterator[Obie]:
    calls: list[tuple[str, dict[str, str]]] = []
    pushed: list[str] = []
    async with (
        bank.serve() as bank_url,
        httpx.AsyncClient(timeout=10, event_hooks={"request": [_calls(calls, pushed)]}
                          ) as http,
    ):
        profiles = resolve_sandbox_keys(
            load_profiles([], {BANK: {"issuer": bank_url, **profile}}), settings.data_dir)
        banks = BankDirectory(profiles, http)
        services = Services(settings, region_router, custody, banks)
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        app = create_app(settings, services=services)
        _, key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(timeout=20) as browser,
        ):
            yield Obie(bank, services, api, browser, calls, pushed)
        await banks.aclose()


@pytest.fixture
async def obie(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> AsyncIterator[Obie]:
    bank = ObieSandboxBank(SandboxConfig(clients=[dev_obie_client(settings.data_dir, CALLBACK)]))
    async with running(settings, region_router, custody, bank) as found:
        yield found


async def _events(obie: Obie, kind: str) -> list[OutboundEvent]:
    async with obie.services.router.reader("eu") as session:
        return list((await session.execute(
            select(OutboundEvent).where(OutboundEvent.type == kind))).scalars())


async def test_linking_creates_authorises_and_stores_the_consent(obie: Obie) -> None:
    _, connection = await obie.linked()

    consent = obie.bank.consents.get(connection.consent_id or "")
    assert consent is not None
    assert consent.status == "Authorised"
    assert consent.client_id == "sandbox-obie-client"
    assert consent.permissions == ("ReadAccountsDetail", "ReadBalances",
                                   "ReadTransactionsDetail", "ReadTransactionsCredits",
                                   "ReadTransactionsDebits")
    # The consent period (90 days for a GB bank) went to the bank and came back.
    assert consent.expires_at is not None
    assert connection.consent_expires_at == consent.expires_at
    assert timedelta(days=89) < consent.expires_at - utcnow() <= timedelta(days=90)
    assert connection.status is ConnectionStatus.ACTIVE
    accounts = (await obie.api.get(f"/v1/connections/{connection.id}/accounts")).json()
    assert sorted(a["name"] for a in accounts["data"]) == ["Everyday", "Rainy day"]
    assert all(a["balance"] for a in accounts["data"])
    # The first sync ran with the user present: the bank saw the address and auth date.
    path, headers = obie.resource_calls[0]
    assert path.endswith("/accounts")
    assert headers["x-fapi-customer-ip-address"] == "127.0.0.1"
    assert "x-fapi-auth-date" in headers
    assert headers["x-fapi-auth-date"].endswith(" GMT")
    assert len({h["x-fapi-interaction-id"] for _, h in obie.resource_calls}) == len(
        obie.resource_calls)


async def test_the_front_channel_carries_only_the_pushed_reference(obie: Obie) -> None:
    walk = await obie.link()
    authorize = next(url for _, url, _ in walk.hops if "/authorize?" in url)
    # RFC 9126 §4: the signed request object went by PAR; nothing else in the URL.
    assert set(parse_qs(urlsplit(authorize).query)) == {"client_id", "request_uri"}


async def test_a_sync_is_unattended_unless_the_app_forwards_the_users_address(
    obie: Obie,
) -> None:
    _, connection = await obie.linked()
    obie.resource_calls.clear()
    assert (await obie.api.post(f"/v1/connections/{connection.id}/sync")).status_code == 200
    assert obie.resource_calls
    assert all("x-fapi-customer-ip-address" not in h for _, h in obie.resource_calls)
    assert all("x-fapi-auth-date" in h for _, h in obie.resource_calls)

    obie.resource_calls.clear()
    present = await obie.api.post(f"/v1/connections/{connection.id}/sync",
                                  headers={"X-Customer-IP-Address": "2001:db8::7"})
    assert present.status_code == 200, present.text
    assert {h["x-fapi-customer-ip-address"] for _, h in obie.resource_calls} == {"2001:db8::7"}

    bad = await obie.api.post(f"/v1/connections/{connection.id}/sync",
                              headers={"X-Customer-IP-Address": "not-an-address"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_an_expired_access_token_is_refreshed_under_the_consent(obie: Obie) -> None:
    _, connection = await obie.linked()
    async with obie.services.router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            access_expires_at=utcnow() - timedelta(minutes=1)
        ).execution_options(synchronize_session=False))
        before = (await session.execute(select(Credential))).scalar_one().version

    assert (await obie.api.post(f"/v1/connections/{connection.id}/sync")).status_code == 200

    async with obie.services.router.reader("eu") as session:
        after = (await session.execute(select(Credential))).scalar_one()
    assert after.version == before + 2
    assert after.access_expires_at is not None
    assert after.access_expires_at > utcnow()


async def test_update_mode_makes_a_new_consent_and_deletes_the_old_one(obie: Obie) -> None:
    user_id, connection = await obie.linked()
    old = connection.consent_id

    walk = await obie.link(user_id=user_id, connection_id=connection.id)

    assert walk.landed_query == {"connection_id": connection.id, "outcome": "success"}
    renewed = await obie.connection(connection.id)
    assert renewed.consent_id not in (None, old)
    assert obie.consent_status(renewed.consent_id) == "Authorised"
    assert obie.consent_status(old) == "Revoked"
    assert (await obie.api.post(f"/v1/connections/{connection.id}/sync")).status_code == 200


async def test_removing_a_connection_deletes_its_consent(obie: Obie) -> None:
    _, connection = await obie.linked()

    answer = await obie.api.delete(f"/v1/connections/{connection.id}")

    assert answer.status_code == 200
    assert answer.json()["status"] == "revoked"
    assert obie.consent_status(connection.consent_id) == "Revoked"
    assert (await obie.connection(connection.id)).status_reason == "revoked_by_application"


async def test_erasing_the_user_deletes_the_consent_at_the_bank(obie: Obie) -> None:
    user_id, connection = await obie.linked()

    answer = await obie.api.delete(f"/v1/users/{user_id}")
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["id"]
    for _ in range(100):  # the job runs after the 202: poll, bounded
        body = (await obie.api.get(f"/v1/erasure-requests/{request_id}")).json()
        if body["state"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert body["state"] == "completed", body
    assert [r["outcome"] for r in body["receipt"]["revocations"]] == ["revoked"]
    assert obie.consent_status(connection.consent_id) == "Revoked"


async def test_a_consent_revoked_at_the_bank_needs_reauth_with_one_event(obie: Obie) -> None:
    _, connection = await obie.linked()
    assert obie.bank.revoke_consent(connection.consent_id or "")

    first = await obie.api.post(f"/v1/connections/{connection.id}/sync")
    second = await obie.api.post(f"/v1/connections/{connection.id}/sync")

    assert first.status_code >= 400
    assert second.status_code == 409  # no longer active: not sent to the bank again
    flagged = await obie.connection(connection.id)
    assert flagged.status is ConnectionStatus.REAUTH_REQUIRED
    assert flagged.status_reason == "consent_revoked"
    events = await _events(obie, "connection.reauth_required")
    assert [e.data.get("reason") for e in events] == ["consent_revoked"]


async def test_a_refused_request_object_links_nothing_and_deletes_the_consent(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> None:
    # The bank verifies this client's request objects with a key the gateway lacks.
    other = PemSigner(ec.generate_private_key(ec.SECP256R1()), key_id="not-ours")
    bank = ObieSandboxBank(
        SandboxConfig(clients=[dev_obie_client(settings.data_dir, CALLBACK)]),
        request_object_keys={"sandbox-obie-client": {"keys": [other.public_jwk()]}},
    )
    async with running(settings, region_router, custody, bank) as obie:
        walk = await obie.link()

    assert walk.landed is None
    assert walk.final is not None
    assert walk.final.status_code == 502
    async with region_router.reader("eu") as session:
        assert (await session.execute(select(func.count(Connection.id)))).scalar_one() == 0
    created = list(bank.consents._consents.values())
    assert [c.status for c in created] == ["Revoked"]  # the unused consent was deleted


def test_the_development_key_is_accepted_only_for_a_loopback_bank() -> None:
    from connectors import ProfileError

    with pytest.raises(ProfileError, match="dev_private_key"):
        load_profiles([], {BANK: {"issuer": "https://bank.example"}})


async def test_no_key_or_request_object_signing_input_reaches_the_logs(
    obie: Obie, log_lines: LogLines, settings: Settings,
) -> None:
    _, connection = await obie.linked()
    assert (await obie.api.delete(f"/v1/connections/{connection.id}")).status_code == 200
    text = json.dumps(log_lines())
    pem = (settings.data_dir / KEY_DIRECTORY / "sandbox-obie-client.pem").read_text()
    body = "".join(pem.strip().splitlines()[1:-1])
    for chunk in (body[i:i + 24] for i in range(0, len(body), 24)):
        assert chunk not in text
    # The request object the gateway pushed: its signing input (header.payload), its
    # payload's claims, and its signature appear nowhere.
    assert len(obie.pushed) == 1
    header, payload, signature = obie.pushed[0].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert json.loads(base64.urlsafe_b64decode(header + "==="))["typ"] == "oauth-authz-req+jwt"
    for part in (header, payload[:40], payload[-40:], signature[:40]):
        assert part not in text
    for claim in ("code_challenge", "nonce", "state"):
        assert claims[claim] not in text
    assert "openbanking_intent_id" not in text
    assert "x-fapi-interaction-id" in text  # logged: it is the support ticket's handle


@pytest.mark.parametrize("tamper", [None, "code"])
async def test_the_hybrid_flow_checks_the_front_channel_id_token(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    tamper: str | None,
) -> None:
    bank = ObieSandboxBank(SandboxConfig(clients=[dev_obie_client(settings.data_dir, CALLBACK)]))
    hybrid = {"obie": {"response_type": "code id_token"}}
    async with running(settings, region_router, custody, bank, **hybrid) as obie:
        walk = await obie.link()
        # The bank answered by form post (OIDC Form Post Response Mode), not a redirect.
        page = walk.final
        assert page is not None
        assert walk.landed is None
        [form] = forms_of(page.text)
        assert form.action.endswith("/link/callback")
        assert {"code", "id_token", "state", "iss"} <= set(form.fields)
        values = {"code": form.fields["code"][::-1]} if tamper else {}
        answer = await submit(obie.browser, page, values)
        await follow(obie.browser, answer, walk)

        if tamper is None:
            assert walk.landed_query.get("outcome") == "success", walk.hops
            connection = await obie.connection(walk.landed_query["connection_id"])
            assert obie.consent_status(connection.consent_id) == "Authorised"
        else:
            # c_hash no longer matches: the code is never sent to the token endpoint.
            assert walk.landed_query == {"outcome": "error"}
            async with region_router.reader("eu") as session:
                count = (await session.execute(select(func.count(Connection.id)))).scalar_one()
            assert count == 0
            assert [c.status for c in bank.consents._consents.values()] == ["Revoked"]


async def test_a_user_who_says_no_at_the_bank_links_nothing(obie: Obie) -> None:
    walk = await obie.link(decision="deny")

    assert walk.landed_query == {"outcome": "denied"}
    async with obie.services.router.reader("eu") as session:
        assert (await session.execute(select(func.count(Connection.id)))).scalar_one() == 0
    [consent] = obie.bank.consents._consents.values()
    # Rejected by the user, then deleted by the gateway: nothing is left awaiting.
    assert consent.status == "Revoked"
    assert consent.user is None

"""The OBIE consent manager against a scripted bank (``httpx.MockTransport``): how it
reads the answers a real bank may give, beyond what the sandbox bank does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.sandbox_keys import resolve_sandbox_keys
from connectors import (
    BankOAuthClient,
    BankProtocolError,
    BankUnavailable,
    ConsentInvalid,
    ConsentRequest,
    ConsentState,
    CreatedConsent,
    UserPresence,
    load_profiles,
)
from connectors.consents.obie import ObieConsents
from tests.connectors.oauth.conftest import FakeBank, form, metadata_document

ISSUER = "http://127.0.0.1:8601"
CONSENTS = "/open-banking/v3.1/aisp/account-access-consents"


def consent_json(status: str, consent_id: str = "aac-1", **data: Any) -> dict[str, Any]:
    return {"Data": {"ConsentId": consent_id, "Status": status, "Permissions": [],
                     **data}, "Risk": {}}


@pytest.fixture
def bank() -> FakeBank:
    endpoints = {name: f"{ISSUER}/{path}" for name, path in (
        ("authorization_endpoint", "authorize"), ("token_endpoint", "token"),
        ("pushed_authorization_request_endpoint", "par"), ("revocation_endpoint", "revoke"))}
    return FakeBank(metadata=metadata_document(issuer=ISSUER, **endpoints))


@pytest.fixture
async def consents(bank: FakeBank, tmp_path: Path) -> AsyncIterator[ObieConsents]:
    profiles = load_profiles([], {"sandbox-obie": {"issuer": ISSUER}})
    profile = resolve_sandbox_keys(profiles, tmp_path)["sandbox-obie"]
    async with httpx.AsyncClient(transport=httpx.MockTransport(bank.handler)) as http:
        yield ObieConsents(profile, BankOAuthClient.from_environment(profile, http, {}), http)


def token(seconds: int = 300) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "cc-1", "token_type": "Bearer",
                                     "expires_in": seconds, "scope": "accounts"})


async def test_creation_sends_the_profile_permissions_period_and_user_address(
    bank: FakeBank, consents: ObieConsents,
) -> None:
    bank.reply("/token", token())
    bank.reply(CONSENTS, httpx.Response(201, json=consent_json("AwaitingAuthorisation")))
    until = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)

    created = await consents.create(ConsentRequest(
        "http://127.0.0.1/link/callback", "sta_eu_x", until, UserPresence("198.51.100.4")))

    assert created.id == "aac-1"
    assert created.state is ConsentState.AWAITING
    [sent] = bank.sent(CONSENTS)
    body = json.loads(sent.content)
    assert body["Data"]["ExpirationDateTime"] == "2027-03-01T12:00:00+00:00"
    assert "TransactionFromDateTime" in body["Data"]
    assert body["Data"]["Permissions"][0] == "ReadAccountsDetail"
    assert sent.headers["authorization"] == "Bearer cc-1"
    assert sent.headers["x-fapi-customer-ip-address"] == "198.51.100.4"
    assert sent.headers["x-fapi-interaction-id"]
    [token_request] = bank.sent("/token")
    assert form(token_request)["grant_type"] == "client_credentials"
    assert form(token_request)["scope"] == "accounts"
    assert "client_assertion" in form(token_request)  # private_key_jwt


async def test_one_client_token_serves_many_calls_until_it_nears_expiry(
    bank: FakeBank, consents: ObieConsents,
) -> None:
    bank.reply("/token", token(300), token(300))
    for _ in range(3):
        bank.reply(f"{CONSENTS}/aac-1", httpx.Response(200, json=consent_json("Authorised")))
        assert await consents.status("aac-1") is ConsentState.AUTHORISED
    assert len(bank.sent("/token")) == 1


@pytest.mark.parametrize(("answer", "state"), [
    (httpx.Response(200, json=consent_json("Rejected")), ConsentState.REJECTED),
    (httpx.Response(200, json=consent_json("Revoked")), ConsentState.REVOKED),
    (httpx.Response(200, json=consent_json("Authorised", ExpirationDateTime=(
        datetime.now(UTC) - timedelta(days=1)).isoformat())), ConsentState.EXPIRED),
    (httpx.Response(404), ConsentState.UNKNOWN),
    (httpx.Response(400, json={"Errors": [{"ErrorCode": "UK.OBIE.Resource.NotFound"}]}),
     ConsentState.UNKNOWN),
])
async def test_a_dead_consent_fails_confirmation_with_its_state(
    bank: FakeBank, consents: ObieConsents, answer: httpx.Response, state: ConsentState,
) -> None:
    bank.reply("/token", token())
    bank.reply(f"{CONSENTS}/aac-1", answer)
    with pytest.raises(ConsentInvalid) as caught:
        await consents.confirm(CreatedConsent("aac-1", ConsentState.AWAITING))
    assert caught.value.state == state.value
    assert state.dead


async def test_confirmation_returns_the_banks_expiry(
    bank: FakeBank, consents: ObieConsents,
) -> None:
    bank.reply("/token", token())
    end = "2027-03-01T00:00:00+00:00"
    bank.reply(f"{CONSENTS}/aac-1", httpx.Response(200, json=consent_json(
        "Authorised", ExpirationDateTime=end)))
    granted = await consents.confirm(CreatedConsent("aac-1", ConsentState.AWAITING))
    assert granted.expires_at == datetime.fromisoformat(end)


@pytest.mark.parametrize("answer", [
    httpx.Response(201, json=consent_json("Authorised")),  # not awaiting the user
    httpx.Response(201, json={"Data": {"Status": "AwaitingAuthorisation"}}),  # no id
    httpx.Response(201, json=consent_json("Pending")),  # a status v3.1 does not have
    httpx.Response(400, json={"Errors": [{"ErrorCode": "UK.OBIE.Field.Invalid"}]}),
])
async def test_a_creation_answer_that_breaks_the_spec_is_refused(
    bank: FakeBank, consents: ObieConsents, answer: httpx.Response,
) -> None:
    bank.reply("/token", token())
    bank.reply(CONSENTS, answer)
    with pytest.raises(BankProtocolError):
        await consents.create(ConsentRequest("http://127.0.0.1/cb", "s"))


async def test_deleting_is_idempotent_and_an_outage_is_retryable(
    bank: FakeBank, consents: ObieConsents,
) -> None:
    bank.reply("/token", token())
    bank.reply(f"{CONSENTS}/aac-1", httpx.Response(204), httpx.Response(404),
               httpx.Response(503, headers={"Retry-After": "7"}))
    await consents.revoke("aac-1")
    await consents.revoke("aac-1")  # already gone: success
    with pytest.raises(BankUnavailable) as caught:
        await consents.revoke("aac-1")
    assert caught.value.retry_after == 7
    assert [r.method for r in bank.sent(f"{CONSENTS}/aac-1")] == ["DELETE"] * 3


def test_resource_headers_name_the_user_only_when_present(consents: ObieConsents) -> None:
    when = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    unattended = consents.resource_headers("aac-1", UserPresence(None, when))
    present = consents.resource_headers("aac-1", UserPresence("2001:db8::1", when))
    assert unattended == {"x-fapi-auth-date": "Sun, 06 Dec 2026 09:30:00 GMT"}
    assert present["x-fapi-customer-ip-address"] == "2001:db8::1"
    assert consents.resource_headers("aac-1", None) == {}

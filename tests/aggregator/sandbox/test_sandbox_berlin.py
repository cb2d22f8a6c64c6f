"""The sandbox bank's Berlin Group XS2A interface, over real loopback sockets."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from aggregator.sandbox.berlin_testing import complete_sca
from aggregator.sandbox.testing import Callback, FlowDriver, Served, query_of

REDIRECT = "/xs2a/redirect/v1"
OAUTH = "/xs2a/oauth/v1"
TPP_REDIRECT = "http://127.0.0.1:53682/cb?link=1"


def _headers(**extra: str) -> dict[str, str]:
    return {"X-Request-ID": str(uuid.uuid4()), **extra}


def _body(**overrides: Any) -> dict[str, Any]:
    return {
        "access": {"allPsd2": "allAccounts"}, "recurringIndicator": True,
        "validUntil": (date.today() + timedelta(days=90)).isoformat(),
        "frequencyPerDay": 2, "combinedServiceIndicator": False, **overrides,
    }


async def _create(served: Served, base: str = REDIRECT, **overrides: Any) -> dict[str, Any]:
    response = await served.http.post(
        f"{base}/consents", json=_body(**overrides),
        headers=_headers(**{"PSU-IP-Address": "192.0.2.7", "TPP-Redirect-URI": TPP_REDIRECT}),
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _redirect_consent(served: Served, **overrides: Any) -> str:
    created = await _create(served, **overrides)
    back = await complete_sca(served.http, created["_links"]["scaRedirect"]["href"])
    assert back == TPP_REDIRECT
    return str(created["consentId"])


def _codes(response: Any) -> list[str]:
    return [m["code"] for m in response.json()["tppMessages"]]


async def test_redirect_consent_authorised_reads_accounts_balances_transactions(
    served: Served,
) -> None:
    created = await _create(served)
    assert created["consentStatus"] == "received"
    consent_id = created["consentId"]
    status = await served.http.get(f"{REDIRECT}/consents/{consent_id}/status",
                                   headers=_headers())
    assert status.json() == {"consentStatus": "received"}
    assert await complete_sca(served.http, created["_links"]["scaRedirect"]["href"]) \
        == TPP_REDIRECT
    status = await served.http.get(f"{REDIRECT}/consents/{consent_id}/status",
                                   headers=_headers())
    assert status.json() == {"consentStatus": "valid"}
    rid = str(uuid.uuid4())
    accounts = await served.http.get(f"{REDIRECT}/accounts", headers={
        "X-Request-ID": rid, "Consent-ID": consent_id, "PSU-IP-Address": "192.0.2.7"})
    assert accounts.status_code == 200
    assert accounts.headers["X-Request-ID"] == rid
    listed = accounts.json()["accounts"]
    assert listed
    assert all(a["iban"].startswith("DE") for a in listed)
    first = listed[0]["resourceId"]
    attended = {"Consent-ID": consent_id, "PSU-IP-Address": "192.0.2.7"}
    balances = await served.http.get(f"{REDIRECT}/accounts/{first}/balances",
                                     headers=_headers(**attended))
    assert {b["balanceType"] for b in balances.json()["balances"]} >= {"interimBooked"}
    txns = await served.http.get(f"{REDIRECT}/accounts/{first}/transactions",
                                 params={"bookingStatus": "both"}, headers=_headers(**attended))
    assert txns.status_code == 200
    assert txns.json()["transactions"]["booked"]


async def test_consent_request_is_checked_field_by_field(served: Served) -> None:
    url = f"{REDIRECT}/consents"
    good = {"PSU-IP-Address": "192.0.2.7", "TPP-Redirect-URI": TPP_REDIRECT}
    missing_id = await served.http.post(url, json=_body(), headers=good)
    assert missing_id.status_code == 400
    assert _codes(missing_id) == ["FORMAT_ERROR"]
    cases: list[dict[str, Any]] = [{"frequencyPerDay": 0}, {"recurringIndicator": "yes"},
                {"validUntil": "2000-01-01"}, {"access": {}},
                {"combinedServiceIndicator": True},
                {"recurringIndicator": False, "frequencyPerDay": 4}]
    for bad in cases:
        answer = await served.http.post(url, json=_body(**bad), headers=_headers(**good))
        assert answer.status_code == 400, bad
        assert _codes(answer) == ["FORMAT_ERROR"], bad
    no_ip = await served.http.post(url, json=_body(),
                                   headers=_headers(**{"TPP-Redirect-URI": TPP_REDIRECT}))
    assert no_ip.status_code == 400
    foreign = await served.http.post(url, json=_body(), headers=_headers(**{
        "PSU-IP-Address": "192.0.2.7", "TPP-Redirect-URI": "https://evil.example/cb"}))
    assert foreign.status_code == 400


async def test_consent_id_is_checked_on_every_account_call(served: Served) -> None:
    unknown = await served.http.get(f"{REDIRECT}/accounts",
                                    headers=_headers(**{"Consent-ID": "nope"}))
    assert unknown.status_code == 400
    assert _codes(unknown) == ["CONSENT_UNKNOWN"]
    created = await _create(served)
    pending = await served.http.get(f"{REDIRECT}/accounts",
                                    headers=_headers(**{"Consent-ID": created["consentId"]}))
    assert pending.status_code == 401
    assert _codes(pending) == ["CONSENT_INVALID"]
    no_request_id = await served.http.get(f"{REDIRECT}/accounts",
                                          headers={"Consent-ID": created["consentId"]})
    assert no_request_id.status_code == 400


async def test_revoked_deleted_and_expired_consents_are_refused(served: Served) -> None:
    revoked = await _redirect_consent(served)
    served.bank.berlin.revoke_by_psu(revoked)
    answer = await served.http.get(f"{REDIRECT}/accounts",
                                   headers=_headers(**{"Consent-ID": revoked}))
    assert answer.status_code == 401
    assert _codes(answer) == ["CONSENT_INVALID"]

    deleted = await _redirect_consent(served)
    gone = await served.http.delete(f"{REDIRECT}/consents/{deleted}", headers=_headers())
    assert gone.status_code == 204
    status = await served.http.get(f"{REDIRECT}/consents/{deleted}", headers=_headers())
    assert status.json()["consentStatus"] == "terminatedByTpp"

    short = await _redirect_consent(served, validUntil=date.today().isoformat())
    served.bank.advance_day()
    expired = await served.http.get(f"{REDIRECT}/accounts",
                                    headers=_headers(**{"Consent-ID": short}))
    assert expired.status_code == 401
    assert _codes(expired) == ["CONSENT_EXPIRED"]


async def test_frequency_per_day_binds_only_unattended_reads(served: Served) -> None:
    consent_id = await _redirect_consent(served, frequencyPerDay=2)
    unattended = {"Consent-ID": consent_id}
    for _ in range(2):
        ok = await served.http.get(f"{REDIRECT}/accounts", headers=_headers(**unattended))
        assert ok.status_code == 200
    over = await served.http.get(f"{REDIRECT}/accounts", headers=_headers(**unattended))
    assert over.status_code == 429
    assert _codes(over) == ["ACCESS_EXCEEDED"]
    attended = await served.http.get(f"{REDIRECT}/accounts", headers=_headers(
        **unattended, **{"PSU-IP-Address": "192.0.2.7"}))
    assert attended.status_code == 200
    served.bank.advance_day()
    assert (await served.http.get(f"{REDIRECT}/accounts",
                                  headers=_headers(**unattended))).status_code == 200


async def test_available_accounts_consent_lists_but_does_not_read(served: Served) -> None:
    consent_id = await _redirect_consent(served, access={"availableAccounts": "allAccounts"})
    headers = {"Consent-ID": consent_id, "PSU-IP-Address": "192.0.2.7"}
    listed = await served.http.get(f"{REDIRECT}/accounts", headers=_headers(**headers))
    account = listed.json()["accounts"][0]
    refused = await served.http.get(f"{REDIRECT}/accounts/{account['resourceId']}/balances",
                                    headers=_headers(**headers))
    assert refused.status_code == 401
    assert _codes(refused) == ["CONSENT_INVALID"]
    detailed = await _redirect_consent(served, access={
        "accounts": [{"iban": account["iban"]}], "balances": [{"iban": account["iban"]}],
        "transactions": [{"iban": account["iban"]}]})
    detailed_headers = {**headers, "Consent-ID": detailed}
    only = await served.http.get(f"{REDIRECT}/accounts", headers=_headers(**detailed_headers))
    assert [a["iban"] for a in only.json()["accounts"]] == [account["iban"]]
    read = await served.http.get(f"{REDIRECT}/accounts/{account['resourceId']}/balances",
                                 headers=_headers(**detailed_headers))
    assert read.status_code == 200


async def test_refused_sca_rejects_the_consent(served: Served) -> None:
    created = await _create(served)
    await complete_sca(served.http, created["_links"]["scaRedirect"]["href"], decision="deny")
    status = await served.http.get(f"{REDIRECT}/consents/{created['consentId']}/status",
                                   headers=_headers())
    assert status.json() == {"consentStatus": "rejected"}


async def test_oauth_approach_binds_the_token_to_the_consent(
    served: Served, driver: FlowDriver,
) -> None:
    created = await _create(served, base=OAUTH)
    consent_id = created["consentId"]
    assert urlsplit(created["_links"]["scaOAuth"]["href"]).path == \
        "/.well-known/oauth-authorization-server"
    params, verifier = driver.authorization_params(scope=f"AIS:{consent_id}")
    location = await driver.authorize(params)
    answer = await driver.exchange(Callback(location, query_of(location), verifier))
    token = answer.json()["access_token"]
    assert f"AIS:{consent_id}" in answer.json()["scope"].split()
    headers = {"Consent-ID": consent_id, "PSU-IP-Address": "192.0.2.7"}
    without = await served.http.get(f"{OAUTH}/accounts", headers=_headers(**headers))
    assert without.status_code == 401
    assert _codes(without) == ["TOKEN_INVALID"]
    with_token = await served.http.get(f"{OAUTH}/accounts", headers=_headers(
        **headers, Authorization=f"Bearer {token}"))
    assert with_token.status_code == 200
    other = await _create(served, base=OAUTH)
    crossed = await served.http.get(f"{OAUTH}/accounts", headers=_headers(
        **{**headers, "Consent-ID": other["consentId"]}, Authorization=f"Bearer {token}"))
    assert crossed.status_code == 401


async def test_oauth_scope_for_an_unknown_consent_is_refused(driver: FlowDriver) -> None:
    params, _ = driver.authorization_params(scope="AIS:not-a-consent")
    answer = await driver.http.get("/authorize", params=params)
    assert answer.status_code == 302
    assert query_of(answer.headers["location"])["error"] == "invalid_scope"


@pytest.mark.parametrize("lag", [2])
async def test_status_lag_reports_received_then_valid(served: Served, lag: int) -> None:
    served.bank.berlin.status_lag = lag
    consent_id = await _redirect_consent(served)
    seen = [(await served.http.get(f"{REDIRECT}/consents/{consent_id}/status",
                                   headers=_headers())).json()["consentStatus"]
            for _ in range(lag + 1)]
    assert seen == ["received"] * lag + ["valid"]


async def test_admin_revokes_a_consent_and_switches_settings(served: Served) -> None:
    consent_id = await _redirect_consent(served)
    answer = await served.http.post(f"/_sandbox/xs2a/consents/{consent_id}/revoke")
    assert answer.status_code == 200
    assert served.bank.berlin.all()[consent_id].status == "revokedByPsu"
    assert (await served.http.post("/_sandbox/xs2a/consents/nope/revoke")).status_code == 404
    switched = await served.http.post("/_sandbox/xs2a/settings",
                                      json={"require_signatures": True, "status_lag": 1})
    assert switched.status_code == 200
    assert served.bank.berlin.require_signatures
    unsealed = await served.http.get(f"{REDIRECT}/consents/{consent_id}", headers=_headers())
    assert unsealed.status_code == 401
    assert _codes(unsealed) == ["SIGNATURE_MISSING"]
    refused = await served.http.post("/_sandbox/xs2a/settings", json={"status_lag": "x"})
    assert refused.status_code == 400
    assert (await served.http.get("/_sandbox/faults")).status_code == 200  # still reachable

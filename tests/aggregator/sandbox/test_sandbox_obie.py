"""The sandbox bank's OBIE mode, driven over sockets as a UK TPP would drive a bank.

Each rule of aggregator/sandbox/obie.py is shown refusing what it must refuse: consent
management only with the client's own token, permission codes checked, request objects
verified (key, audience, intent), and the account API serving exactly what the user
authorised (accounts picked, permissions granted) until the consent ends.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt

from aggregator.link.walk import forms_of
from aggregator.sandbox import SandboxConfig
from aggregator.sandbox.obie import ObieSandboxBank, obie_client
from aggregator.sandbox.testing import ClientKey, interaction_id, pkce_pair, query_of

CLIENT = "tpp-1"
OTHER = "tpp-2"
CALLBACK = "http://127.0.0.1:53682/cb"
CONSENTS = "/open-banking/v3.1/aisp/account-access-consents"
ACCOUNTS = "/open-banking/v3.1/aisp/accounts"
FULL = ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail",
        "ReadTransactionsCredits", "ReadTransactionsDebits"]


class Tpp:
    """One registered client of the bank, with its key."""

    def __init__(self, http: httpx.AsyncClient, issuer: str, client_id: str,
                 key: ClientKey) -> None:
        self.http, self.issuer, self.client_id, self.key = http, issuer, client_id, key

    def _auth(self) -> dict[str, str]:
        return {"client_id": self.client_id,
                "client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self.key.assertion(self.issuer, self.client_id)}

    async def client_token(self) -> str:
        answer = await self.http.post("/token", data={
            "grant_type": "client_credentials", "scope": "accounts", **self._auth()})
        assert answer.status_code == 200, answer.text
        assert "refresh_token" not in answer.json()
        return str(answer.json()["access_token"])

    async def consent(self, permissions: list[str] = FULL, **data: Any) -> str:
        answer = await self.http.post(CONSENTS, headers=self._bearer(await self.client_token()),
                                      json={"Data": {"Permissions": permissions, **data},
                                            "Risk": {}})
        assert answer.status_code == 201, answer.text
        assert answer.json()["Data"]["Status"] == "AwaitingAuthorisation"
        return str(answer.json()["Data"]["ConsentId"])

    def request_object(self, intent: str, *, key: ClientKey | None = None,
                       **overrides: Any) -> tuple[str, str]:
        verifier, challenge = pkce_pair()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id, "aud": self.issuer, "client_id": self.client_id,
            "response_type": "code", "scope": "openid accounts", "redirect_uri": CALLBACK,
            "state": str(uuid.uuid4()), "nonce": str(uuid.uuid4()),
            "code_challenge": challenge, "code_challenge_method": "S256",
            "claims": {"id_token": {"openbanking_intent_id": {"value": intent,
                                                             "essential": True}}},
            "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()),
            **overrides,
        }
        signer = key or self.key
        header = {"alg": "ES256", "kid": signer.kid, "typ": "oauth-authz-req+jwt"}
        return jwt.encode(header, claims, signer.private), verifier

    async def authorize(self, request: str) -> httpx.Response:
        query = urlencode({"client_id": self.client_id, "response_type": "code",
                           "scope": "openid accounts", "request": request})
        return await self.http.get(f"/authorize?{query}")

    async def grant(self, intent: str, *, pick: int | None = None,
                    decision: str = "approve") -> dict[str, Any]:
        """Authorise ``intent`` as alice (all accounts, or only the ``pick``-th)."""
        request, verifier = self.request_object(intent)
        page = await self.authorize(request)
        assert page.status_code == 200, page.text
        iid = interaction_id(page.text)
        consent_page = await self.http.post("/login", data={
            "interaction": iid, "username": "alice", "password": "alice-pass"})
        boxes = [n for n in forms_of(consent_page.text)[0].inputs if n.startswith("account_")]
        assert len(boxes) == 2
        chosen = boxes if pick is None else [boxes[pick]]
        answer = await self.http.post("/consent", data={
            "interaction": iid, "decision": decision, **dict.fromkeys(chosen, "on")})
        assert answer.status_code == 302
        params = query_of(answer.headers["location"])
        if "code" not in params:
            return params
        tokens = await self.http.post("/token", data={
            "grant_type": "authorization_code", "code": params["code"],
            "redirect_uri": CALLBACK, "code_verifier": verifier, **self._auth()})
        assert tokens.status_code == 200, tokens.text
        return {**tokens.json(), "picked": [b.removeprefix("account_") for b in chosen]}

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": refresh_token, **self._auth()})

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def tpps() -> AsyncIterator[tuple[ObieSandboxBank, Tpp, Tpp]]:
    keys = {CLIENT: ClientKey(), OTHER: ClientKey(kid="k2")}
    bank = ObieSandboxBank(SandboxConfig(clients=[
        obie_client({"keys": [k.public_jwk]}, client_id=c, redirect_uris=["http://127.0.0.1/cb"])
        for c, k in keys.items()]))
    async with bank.serve() as issuer, httpx.AsyncClient(base_url=issuer, timeout=10) as http:
        yield bank, Tpp(http, issuer, CLIENT, keys[CLIENT]), Tpp(http, issuer, OTHER,
                                                                  keys[OTHER])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_consents_need_the_clients_own_client_credentials_token(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp],
) -> None:
    _, tpp, other = tpps
    body = {"Data": {"Permissions": FULL}, "Risk": {}}
    assert (await tpp.http.post(CONSENTS, json=body)).status_code == 401
    granted = await tpp.grant(await tpp.consent())
    # A user's access token is not the client's: it manages no consent.
    user_token = await tpp.http.post(CONSENTS, json=body, headers=bearer(
        granted["access_token"]))
    assert user_token.status_code == 401
    # Another client's consent does not exist for this one.
    intent = await tpp.consent()
    foreign = await other.http.get(f"{CONSENTS}/{intent}",
                                   headers=bearer(await other.client_token()))
    assert foreign.status_code == 400
    assert foreign.json()["Errors"][0]["ErrorCode"] == "UK.OBIE.Resource.NotFound"


@pytest.mark.parametrize("permissions", [
    [], ["ReadEverything"], ["ReadTransactionsBasic"], ["ReadTransactionsCredits"],
])
async def test_malformed_permissions_are_refused(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp], permissions: list[str],
) -> None:
    _, tpp, _ = tpps
    answer = await tpp.http.post(CONSENTS, headers=bearer(await tpp.client_token()),
                                 json={"Data": {"Permissions": permissions}, "Risk": {}})
    assert answer.status_code == 400
    assert answer.json()["Errors"][0]["ErrorCode"] == "UK.OBIE.Field.Invalid"


async def test_the_authorization_request_must_be_a_valid_request_object_for_a_waiting_consent(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp],
) -> None:
    _, tpp, other = tpps
    intent = await tpp.consent()
    plain = await tpp.http.get("/authorize?" + urlencode({
        "client_id": CLIENT, "response_type": "code", "scope": "openid accounts",
        "redirect_uri": CALLBACK}))
    refusals = {
        "none": plain,
        "key": await tpp.authorize(tpp.request_object(intent, key=ClientKey())[0]),
        "aud": await tpp.authorize(tpp.request_object(intent, aud="https://else.example")[0]),
        "expired": await tpp.authorize(tpp.request_object(
            intent, exp=int(time.time()) - 120)[0]),
        "intent": await tpp.authorize(tpp.request_object("aac-unknown")[0]),
        "foreign": await tpp.authorize(tpp.request_object(await other.consent())[0]),
    }
    for why, answer in refusals.items():
        assert answer.status_code == 400, why
        assert "invalid_request_object" in answer.text, why
    await tpp.grant(intent)
    again = await tpp.authorize(tpp.request_object(intent)[0])  # already authorised
    assert again.status_code == 400


async def test_the_api_serves_only_the_picked_accounts_and_the_granted_permissions(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp],
) -> None:
    bank, tpp, _ = tpps
    intent = await tpp.consent(["ReadAccountsBasic", "ReadTransactionsBasic",
                                "ReadTransactionsCredits"])
    granted = await tpp.grant(intent, pick=0)
    auth = bearer(granted["access_token"])
    consent = bank.consents.get(intent)
    assert consent is not None
    assert consent.status == "Authorised"
    [picked] = granted["picked"]
    assert consent.account_ids == (picked,)

    listed = (await tpp.http.get(ACCOUNTS, headers=auth)).json()["Data"]["Account"]
    assert [a["AccountId"] for a in listed] == [picked]
    assert "Account" not in listed[0]  # Basic: no sort code, number or holder name
    assert (await tpp.http.get(f"{ACCOUNTS}/{picked}/balances", headers=auth)).status_code \
        == 403
    entries = (await tpp.http.get(f"{ACCOUNTS}/{picked}/transactions",
                                  headers=auth)).json()["Data"]["Transaction"]
    assert entries
    assert {t["CreditDebitIndicator"] for t in entries} == {"Credit"}
    assert all("TransactionInformation" not in t for t in entries)
    unpicked = next(a.account_id for a in bank.ledger.accounts_of("alice")
                    if a.account_id != picked)
    refused = await tpp.http.get(f"{ACCOUNTS}/{unpicked}/transactions", headers=auth)
    assert refused.status_code == 403


async def test_a_deleted_consent_ends_api_access_and_refreshing(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp],
) -> None:
    _, tpp, _ = tpps
    intent = await tpp.consent()
    granted = await tpp.grant(intent)
    auth = bearer(granted["access_token"])
    assert (await tpp.http.get(ACCOUNTS, headers=auth)).status_code == 200
    client = bearer(await tpp.client_token())

    assert (await tpp.http.delete(f"{CONSENTS}/{intent}", headers=client)).status_code == 204

    read = await tpp.http.get(f"{CONSENTS}/{intent}", headers=client)
    assert read.json()["Data"]["Status"] == "Revoked"
    assert (await tpp.http.get(ACCOUNTS, headers=auth)).status_code == 403
    refreshed = await tpp.refresh(granted["refresh_token"])
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"


async def test_a_denied_consent_is_rejected_at_the_bank(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp],
) -> None:
    bank, tpp, _ = tpps
    intent = await tpp.consent()
    answer = await tpp.grant(intent, decision="deny")
    assert answer["error"] == "access_denied"
    consent = bank.consents.get(intent)
    assert consent is not None
    assert consent.status == "Rejected"


async def test_metadata_advertises_request_objects_and_client_credentials(
    tpps: tuple[ObieSandboxBank, Tpp, Tpp],
) -> None:
    _, tpp, _ = tpps
    metadata = (await tpp.http.get("/.well-known/openid-configuration")).json()
    assert "client_credentials" in metadata["grant_types_supported"]
    assert metadata["require_signed_request_object"] is True
    assert set(metadata["request_object_signing_alg_values_supported"]) == {"PS256", "ES256"}
    assert json.dumps(metadata).count("openbanking_intent_id") == 1

"""DPoP (RFC 9449): proofs, and the OAuth client against the FAPI 2.0 sandbox over sockets."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.sandbox import SandboxConfig
from aggregator.sandbox.fapi2 import Fapi2SandboxBank, dev_fapi2_client
from aggregator.sandbox.rfc9449 import NonceSource, ProofRefused, ProofVerifier
from aggregator.sandbox.store import SandboxClock
from aggregator.sandbox_keys import resolve_sandbox_keys
from connectors import (
    BankOAuthClient,
    BankProtocolError,
    BankUnsupported,
    DPoPKey,
    GrantRevoked,
    ObieDialect,
    PendingAuthorization,
    TokenSet,
    load_profiles,
    parse_callback,
)
from connectors.oauth.rfc9449 import choose_algorithm, jwk_thumbprint, target_uri
from tests.connectors.sandbox_driver import consent_in_sandbox

CALLBACK = "http://127.0.0.1:8700/link/callback"
INTERACTION = {"x-fapi-interaction-id": "00000000-0000-4000-8000-000000000000"}


def _claims(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = proof.split(".")

    def part(text: str) -> dict[str, Any]:
        padded = text + "=" * (-len(text) % 4)
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
        return decoded

    return part(head), part(body)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256"])
def test_proof_carries_what_rfc9449_section_4_2_lists_and_verifies(alg: str) -> None:
    key = DPoPKey.generate(alg)
    proof = key.proof("get", "https://bank.example/a/accounts?page=2#x", access_token="tok",
                      nonce="n-1")
    header, claims = _claims(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == alg
    assert "d" not in header["jwk"]
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://bank.example/a/accounts"
    assert claims["nonce"] == "n-1"
    assert len(claims["jti"]) >= 22
    nonces = NonceSource(SandboxClock())
    verifier = ProofVerifier(None)
    verified = verifier.verify(proof, method="GET", uri="https://bank.example/a/accounts",
                               access_token="tok")
    assert verified.jkt == key.thumbprint
    with pytest.raises(ProofRefused, match="already used"):  # §11.1 replay
        verifier.verify(proof, method="GET", uri="https://bank.example/a/accounts",
                        access_token="tok")
    other = key.proof("GET", "https://bank.example/a/accounts", access_token="tok")
    with pytest.raises(ProofRefused, match="ath"):
        ProofVerifier(None).verify(other, method="GET", uri="https://bank.example/a/accounts",
                                   access_token="another")
    with pytest.raises(ProofRefused) as refused:
        ProofVerifier(nonces).verify(other, method="GET", uri="https://bank.example/a/accounts",
                                     access_token="tok")
    assert refused.value.error == "use_dpop_nonce"


def test_key_survives_sealing_form_and_hides_in_repr() -> None:
    key = DPoPKey.generate()
    again = DPoPKey.from_private_bytes(key.private_bytes())
    assert again.thumbprint == key.thumbprint
    assert "PRIVATE" not in repr(again)
    assert key.thumbprint in repr(again)
    with pytest.raises(ValueError, match="not a readable") as caught:
        DPoPKey.from_private_bytes(
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----"
        )
    assert "c2VjcmV0" not in str(caught.value)


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1's RSA key and its published thumbprint.
    jwk = {
        "kty": "RSA", "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
             "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5"
             "v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbIS"
             "D08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
             "kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_htu_drops_query_and_fragment_and_algorithm_follows_the_bank() -> None:
    assert target_uri("https://b.example:8443/t?x=1#f") == "https://b.example:8443/t"
    assert choose_algorithm(None) == "ES256"
    assert choose_algorithm(["PS256", "EdDSA"]) == "EdDSA"
    with pytest.raises(BankUnsupported):
        choose_algorithm(["RS256"])


@dataclass
class Fapi2:
    bank: Fapi2SandboxBank
    client: BankOAuthClient
    http: httpx.AsyncClient
    sent: list[httpx.Request]

    async def link(self) -> tuple[PendingAuthorization, TokenSet]:
        pending, url = await self.client.start_authorization(CALLBACK)
        query = await consent_in_sandbox(url)
        code = parse_callback(pending, query, await self.client.metadata())
        return pending, await self.client.exchange_code(pending, code)

    def dialect(self, tokens: TokenSet, key: DPoPKey) -> ObieDialect:
        profile = self.client.profile
        return ObieDialect(self.http, profile.api.base_url, tokens.access_token,
                           auth=self.client.dpop_auth(key, tokens.access_token))

    def count(self, path: str) -> int:
        return sum(1 for r in self.sent if r.url.path.endswith(path))


@asynccontextmanager
async def fapi2_bank(**options: Any) -> AsyncIterator[Fapi2]:
    with tempfile.TemporaryDirectory() as tmp:
        # The client key is generated where the gateway's data directory would be.
        data_dir = Path(tmp)
        bank = Fapi2SandboxBank(SandboxConfig(clients=[dev_fapi2_client(data_dir)],
                                              require_par=True), **options)
        sent: list[httpx.Request] = []

        async def record(request: httpx.Request) -> None:
            sent.append(request)

        async with bank.serve() as issuer, httpx.AsyncClient(
            timeout=10, event_hooks={"request": [record]}
        ) as http:
            profiles = load_profiles([], {"sandbox-fapi2": {"issuer": issuer}})
            profile = resolve_sandbox_keys(profiles, data_dir)["sandbox-fapi2"]
            yield Fapi2(bank, BankOAuthClient.from_environment(profile, http, {}), http, sent)


async def test_link_binds_code_and_tokens_to_the_connection_key_with_nonce_round_trip() -> None:
    async with fapi2_bank() as f:
        pending, tokens = await f.link()
        assert pending.dpop_key is not None
        assert "***" in repr(pending)
        key = DPoPKey.from_private_bytes(pending.dpop_key)
        assert tokens.token_type == "DPoP"
        assert f.bank.gate.bound_key(tokens.access_token) == key.thumbprint
        # The token endpoint demanded its nonce once; the retry carried it (§8).
        assert f.bank.refused == {"use_dpop_nonce": 1}
        assert f.count("/token") == 2
        par = next(r for r in f.sent if r.url.path == "/par")
        assert f"dpop_jkt={key.thumbprint}" in par.content.decode()

        dialect = f.dialect(tokens, key)
        accounts = await dialect.accounts()  # resource nonce demanded once, then served
        assert accounts
        assert f.bank.refused["use_dpop_nonce"] == 2
        await dialect.balances(accounts[0].bank_account_id)  # the nonce is known now
        assert f.bank.refused["use_dpop_nonce"] == 2

        assert tokens.refresh_token is not None
        refreshed = await f.client.refresh(tokens.refresh_token, dpop_key=key)
        assert refreshed.token_type == "DPoP"
        assert f.bank.gate.bound_key(refreshed.access_token) == key.thumbprint
        assert f.count("/token") == 3  # the token endpoint's nonce was already known


async def test_refresh_with_another_key_is_refused_once_without_retry() -> None:
    async with fapi2_bank() as f:
        _, tokens = await f.link()
        assert tokens.refresh_token is not None
        before = f.count("/token")
        with pytest.raises(BankProtocolError, match="invalid_dpop_proof"):
            await f.client.refresh(tokens.refresh_token, dpop_key=DPoPKey.generate())
        assert f.count("/token") == before + 1
        assert f.bank.refused["invalid_dpop_proof"] == 1


async def test_bank_refuses_replayed_proof_and_ath_mismatch() -> None:
    async with fapi2_bank(require_nonce=False) as f:
        pending, tokens = await f.link()
        assert pending.dpop_key is not None
        key = DPoPKey.from_private_bytes(pending.dpop_key)
        url = f"{f.client.profile.api.base_url}/accounts"
        proof = key.proof("GET", url, access_token=tokens.access_token)
        headers = {"Authorization": f"DPoP {tokens.access_token}", "DPoP": proof, **INTERACTION}
        assert (await f.http.get(url, headers=headers)).status_code == 200
        replayed = await f.http.get(url, headers=headers)
        assert replayed.status_code == 401
        assert 'error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]
        wrong_ath = key.proof("GET", url, access_token="not-this-token")
        answer = await f.http.get(url, headers={**headers, "DPoP": wrong_ath})
        assert answer.status_code == 401
        assert "ath" in answer.headers["WWW-Authenticate"]
        bearer = await f.http.get(url, headers={**INTERACTION,
                                                "Authorization": f"Bearer {tokens.access_token}"})
        assert bearer.status_code == 401  # §7.2: a bound token is no bearer token


async def test_resource_nonce_demanded_forever_costs_two_requests_not_a_loop() -> None:
    async with fapi2_bank() as f:
        pending, tokens = await f.link()
        assert pending.dpop_key is not None
        f.bank.resource_nonces.accepts = lambda nonce: False  # type: ignore[method-assign]
        dialect = f.dialect(tokens, DPoPKey.from_private_bytes(pending.dpop_key))
        before = f.count("/accounts")
        with pytest.raises(BankProtocolError, match="refused the access token"):
            await dialect.accounts()
        assert f.count("/accounts") == before + 2


async def test_token_nonce_demanded_forever_costs_two_requests_not_a_loop() -> None:
    async with fapi2_bank() as f:
        f.bank.token_nonces.accepts = lambda nonce: False  # type: ignore[method-assign]
        pending, url = await f.client.start_authorization(CALLBACK)
        query = await consent_in_sandbox(url)
        code = parse_callback(pending, query, await f.client.metadata())
        with pytest.raises(BankProtocolError, match="use_dpop_nonce"):
            await f.client.exchange_code(pending, code)
        assert f.count("/token") == 2


async def test_a_grant_without_a_dpop_key_needs_the_user_not_a_request() -> None:
    async with fapi2_bank() as f:
        await f.client.metadata()
        before = len(f.sent)
        with pytest.raises(GrantRevoked, match="no DPoP key"):
            await f.client.refresh("a-refresh-token-from-before-dpop")
        assert len(f.sent) == before


def test_a_bearer_answer_to_a_dpop_request_is_refused() -> None:
    now = datetime.now(UTC)
    answer = {"access_token": "at", "token_type": "Bearer", "expires_in": 60}
    with pytest.raises(BankProtocolError, match="not DPoP"):
        TokenSet.from_response(answer, now=now, token_type="DPoP")
    bound = TokenSet.from_response({**answer, "token_type": "dpop"}, now=now, token_type="DPoP")
    assert bound.token_type == "DPoP"

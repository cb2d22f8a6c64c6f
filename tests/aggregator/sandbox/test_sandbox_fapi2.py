"""``sandbox-fapi2`` refuses what FAPI 2.0 and RFC 9449 refuse, over real sockets.

Raw HTTP against the served bank (no gateway code on the client side but the proof and
assertion builders), so each refusal is the bank's own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aggregator.errors import ConfigError
from aggregator.sandbox import SandboxClient, SandboxConfig
from aggregator.sandbox.fapi2 import FAPI2_CLIENT_ID, Fapi2SandboxBank
from aggregator.sandbox.testing import complete_login, pkce_pair, query_of
from connectors import DPoPKey, PemSigner, build_client_assertion

REDIRECT = "http://127.0.0.1/callback"
SIGNER = PemSigner.from_pem(ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@dataclass
class Served:
    bank: Fapi2SandboxBank
    issuer: str
    http: httpx.AsyncClient

    async def auth(self) -> dict[str, str]:
        assertion = await build_client_assertion(
            SIGNER, client_id=FAPI2_CLIENT_ID, audience=self.issuer, now=datetime.now(UTC))
        return {"client_id": FAPI2_CLIENT_ID, "client_assertion": assertion,
                "client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}

    async def code(self, key: DPoPKey) -> tuple[str, str]:
        """PAR with ``dpop_jkt``, sign-in and consent; (code, verifier)."""
        verifier, challenge = pkce_pair()
        pushed = await self.http.post("/par", data={
            "response_type": "code", "redirect_uri": REDIRECT, "scope": "accounts",
            "state": "s" * 16, "code_challenge": challenge, "code_challenge_method": "S256",
            "dpop_jkt": key.thumbprint, **await self.auth()})
        assert pushed.status_code == 201, pushed.text
        url = httpx.URL(self.issuer + "/authorize").copy_merge_params(
            {"client_id": FAPI2_CLIENT_ID, "request_uri": pushed.json()["request_uri"]})
        async with httpx.AsyncClient(timeout=10) as browser:
            location = await complete_login(browser, str(url))
        return query_of(location)["code"], verifier

    async def token(self, form: dict[str, str], proof: str | None) -> httpx.Response:
        headers = {"DPoP": proof} if proof else {}
        return await self.http.post("/token", data={**form, **await self.auth()},
                                    headers=headers)

    def nonce(self) -> str:
        return self.bank.token_nonces.current()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    bank = Fapi2SandboxBank(SandboxConfig(
        clients=[SandboxClient(client_id=FAPI2_CLIENT_ID, redirect_uris=[REDIRECT],
                               auth_methods=["private_key_jwt"],
                               jwks={"keys": [SIGNER.public_jwk()]})],
        require_par=True))
    async with bank.serve() as issuer, httpx.AsyncClient(base_url=issuer, timeout=10) as http:
        yield Served(bank, issuer, http)


def _exchange(code: str, verifier: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}


def test_fapi2_mode_refuses_a_config_without_par_or_with_secret_clients() -> None:
    with pytest.raises(ConfigError, match="PAR"):
        Fapi2SandboxBank(SandboxConfig(require_par=False))
    with pytest.raises(ConfigError, match="private_key_jwt only"):
        Fapi2SandboxBank(SandboxConfig(require_par=True))  # the secret-based dev client


async def test_par_without_dpop_jkt_is_refused(served: Served) -> None:
    _, challenge = pkce_pair()
    answer = await served.http.post("/par", data={
        "response_type": "code", "redirect_uri": REDIRECT, "scope": "accounts",
        "code_challenge": challenge, "code_challenge_method": "S256", **await served.auth()})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


async def test_the_code_is_redeemed_only_with_a_proof_of_the_key_it_is_bound_to(
    served: Served,
) -> None:
    key = DPoPKey.generate()
    code, verifier = await served.code(key)
    token_url = served.issuer + "/token"

    missing = await served.token(_exchange(code, verifier), None)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_dpop_proof"
    no_nonce = await served.token(_exchange(code, verifier), key.proof("POST", token_url))
    assert no_nonce.json()["error"] == "use_dpop_nonce"
    assert no_nonce.headers["DPoP-Nonce"] == served.nonce()
    other = DPoPKey.generate().proof("POST", token_url, nonce=served.nonce())
    assert (await served.token(_exchange(code, verifier), other)).json()["error"] == \
        "invalid_dpop_proof"

    good = await served.token(_exchange(code, verifier),
                              key.proof("POST", token_url, nonce=served.nonce()))
    assert good.status_code == 200, good.text
    assert good.json()["token_type"] == "DPoP"
    assert served.bank.gate.bound_key(good.json()["access_token"]) == key.thumbprint


@pytest.mark.parametrize("flaw", ["htm", "htu", "iat", "typ", "private_jwk", "alg_none",
                                  "signature"])
async def test_token_endpoint_refuses_a_malformed_proof(served: Served, flaw: str) -> None:
    key = DPoPKey.generate()
    code, verifier = await served.code(key)
    url, nonce = served.issuer + "/token", served.nonce()
    proof = {
        "htm": lambda: key.proof("GET", url, nonce=nonce),
        "htu": lambda: key.proof("POST", served.issuer + "/par", nonce=nonce),
        "iat": lambda: key.proof("POST", url, nonce=nonce,
                                 now=datetime.now(UTC) - timedelta(minutes=5)),
        "typ": lambda: _tampered(key.proof("POST", url, nonce=nonce), typ="JWT"),
        "private_jwk": lambda: _tampered(key.proof("POST", url, nonce=nonce), jwk_d="AAAA"),
        "alg_none": lambda: _tampered(key.proof("POST", url, nonce=nonce), alg="none"),
        "signature": lambda: key.proof("POST", url, nonce=nonce)[:-6] + "AAAAAA",
    }[flaw]()

    answer = await served.token(_exchange(code, verifier), proof)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_dpop_proof"


async def test_api_refuses_bearer_replay_wrong_ath_and_another_key(served: Served) -> None:
    key = DPoPKey.generate()
    code, verifier = await served.code(key)
    url = served.issuer + "/token"
    tokens = (await served.token(_exchange(code, verifier),
                                 key.proof("POST", url, nonce=served.nonce()))).json()
    access = tokens["access_token"]
    api = served.issuer + "/open-banking/v3.1/aisp/accounts"
    nonce = served.bank.resource_nonces.current()

    def call(proof: str, scheme: str = "DPoP") -> httpx.Request:
        return served.http.build_request("GET", api, headers={
            "Authorization": f"{scheme} {access}", "DPoP": proof,
            "x-fapi-interaction-id": "00000000-0000-4000-8000-000000000000"})

    proof = key.proof("GET", api + "?page=1", access_token=access, nonce=nonce)
    assert (await served.http.send(call(proof))).status_code == 200  # htu ignores the query
    replay = await served.http.send(call(proof))
    assert replay.status_code == 401
    assert "already used" in replay.headers["WWW-Authenticate"]
    for bad, why in (
        (key.proof("GET", api, access_token="x" * 43, nonce=nonce), "ath"),
        (DPoPKey.generate().proof("GET", api, access_token=access, nonce=nonce), "not bound"),
        (key.proof("GET", api, access_token=access), "use_dpop_nonce"),
    ):
        answer = await served.http.send(call(bad))
        assert answer.status_code == 401
        assert why in answer.headers["WWW-Authenticate"]
    bearer = await served.http.send(call(key.proof("GET", api, access_token=access,
                                                   nonce=nonce), scheme="Bearer"))
    assert bearer.status_code == 401


def _tampered(proof: str, *, typ: str | None = None, alg: str | None = None,
              jwk_d: str | None = None) -> str:
    head, body, signature = proof.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if typ is not None:
        header["typ"] = typ
    if alg is not None:
        header["alg"] = alg
    if jwk_d is not None:
        header["jwk"]["d"] = jwk_d
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{body}.{signature}"

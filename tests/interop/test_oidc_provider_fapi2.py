"""Our client against oidc-provider's FAPI 2.0 configuration: PAR, private_key_jwt, DPoP.

The server (``server.mjs --fapi2``) runs oidc-provider's own FAPI 2.0 profile with DPoP
(RFC 9449) and demands a server nonce at the token endpoint and at the userinfo endpoint,
the resource server it ships. A profile with ``sender_constraint = "dpop"`` must link
(PAR with ``dpop_jkt``, code exchange with a proof, after the nonce round trip), refresh
with a proof of the same key, and call the resource with ``Authorization: DPoP`` — all
checked by a server we did not write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from connectors import BankOAuthClient, DPoPKey, load_profiles, parse_callback

from .conftest import OidcProviderFactory
from .oidc_driver import drive_login
from .oidc_server import REDIRECT_URI, SCOPE, OidcProviderServer

pytestmark = pytest.mark.interop

KEY_ENV = "INTEROP_FAPI2_CLIENT_KEY_PEM"


@pytest.fixture(scope="session")
def fapi2_server(oidc_provider_factory: OidcProviderFactory) -> OidcProviderServer:
    return oidc_provider_factory(fapi2=True)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(5.0), follow_redirects=False, trust_env=False
    ) as client:
        yield client


def fapi2_client(server: OidcProviderServer, http: httpx.AsyncClient,
                 tmp_path: Path) -> BankOAuthClient:
    client = server.client("private_key_jwt")
    scopes = ", ".join(f'"{scope}"' for scope in SCOPE.split())
    (tmp_path / "fapi2.toml").write_text(f"""
id = "interop-fapi2"
display_name = "oidc-provider {server.version} (FAPI 2.0)"
country = "DE"
region = "eu"
issuer = "{server.issuer}"
scopes = [{scopes}]
use_par = true
sender_constraint = "dpop"
hooks = ["prompt_consent_for_offline_access"]
client_id = "{client.client_id}"
client_auth_method = "private_key_jwt"
private_key_pem_env = "{KEY_ENV}"
signing_alg = "ES256"
client_key_id = "{client.key_id}"

[api]
dialect = "obie"
base_url = "/accounts-api"
""", encoding="utf-8")
    profile = load_profiles([tmp_path], include_builtin=False)["interop-fapi2"]
    environ = {KEY_ENV: client.private_key_pem().decode("ascii")}
    return BankOAuthClient.from_environment(profile, http, environ)


async def test_dpop_link_refresh_and_resource_call_at_a_fapi2_server(
    fapi2_server: OidcProviderServer, interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient, tmp_path: Path,
) -> None:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    interop_http.event_hooks["request"].append(record)
    bank = fapi2_client(fapi2_server, interop_http, tmp_path)
    metadata = await bank.metadata()
    assert metadata.require_pushed_authorization_requests
    assert "ES256" in metadata.raw["dpop_signing_alg_values_supported"]

    pending, url = await bank.start_authorization(REDIRECT_URI)
    assert set(dict(parse_qsl(urlsplit(url).query))) == {"client_id", "request_uri"}
    assert pending.dpop_key is not None
    key = DPoPKey.from_private_bytes(pending.dpop_key)
    par = next(r for r in sent if r.url.path.endswith("/request"))
    assert f"dpop_jkt={key.thumbprint}" in par.content.decode()

    callback = await drive_login(browser, url, login="alice")
    code = parse_callback(pending, dict(parse_qsl(urlsplit(callback).query)), metadata)
    tokens = await bank.exchange_code(pending, code)
    assert tokens.token_type == "DPoP"
    assert tokens.refresh_token is not None
    token_calls = [r for r in sent if r.url.path.endswith("/token")]
    assert len(token_calls) == 2  # the server demanded its nonce once (§8); one retry
    assert all("DPoP" in r.headers for r in token_calls)

    # The server's own resource endpoint (userinfo) checks the proof, ath and its nonce.
    userinfo = str(metadata.raw["userinfo_endpoint"])
    auth = bank.dpop_auth(key, tokens.access_token)
    answer = await interop_http.get(userinfo, auth=auth)
    assert answer.status_code == 200, answer.headers.get("WWW-Authenticate")
    assert answer.json()["sub"] == "alice"
    assert auth.sent == 2  # 401 use_dpop_nonce, then the retry with the nonce (§9)

    bearer = await interop_http.get(
        userinfo, headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert bearer.status_code in (400, 401)  # a DPoP-bound token is no bearer token

    refreshed = await bank.refresh(tokens.refresh_token, dpop_key=key)
    assert refreshed.token_type == "DPoP"
    again = bank.dpop_auth(key, refreshed.access_token)
    assert (await interop_http.get(userinfo, auth=again)).status_code == 200
    assert again.sent == 1  # the resource nonce is known now

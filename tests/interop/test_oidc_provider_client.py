"""Our ``BankOAuthClient`` against oidc-provider, a certified server we did not write.

Each test reads a real bank profile (TOML through ``load_profiles``), builds the client with
``BankOAuthClient.from_environment`` and links through the server's login and consent pages:
discovery, PAR (RFC 9126), PKCE S256, the ``iss`` check (RFC 9207), code exchange with the
ID token check, refresh with rotation, revocation (RFC 7009). Parametrised over the three
client authentication methods the server accepts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from connectors import (
    BankOAuthClient,
    BankUnsupported,
    ConsentRejected,
    GrantRevoked,
    IssuerMismatch,
    PendingAuthorization,
    TokenSet,
    load_profiles,
    parse_callback,
)

from .conftest import OidcProviderFactory
from .oidc_driver import drive_login
from .oidc_server import (
    AUTH_METHODS,
    REDIRECT_URI,
    SCOPE,
    AuthMethod,
    OidcProviderServer,
    RegisteredClient,
)

pytestmark = pytest.mark.interop

ParSetting = Literal["auto", "always", "never"]
USE_PAR_TOML: dict[ParSetting, str] = {"auto": '"auto"', "always": "true", "never": "false"}
SECRET_ENV = "INTEROP_CLIENT_SECRET"
KEY_ENV = "INTEROP_CLIENT_KEY_PEM"


@dataclass(frozen=True)
class Linked:
    """The outcome of one successful link: what the client stored and what it received."""

    pending: PendingAuthorization
    authorization_url: str
    tokens: TokenSet


def profile_toml(
    server: OidcProviderServer, client: RegisteredClient, bank_id: str, use_par: ParSetting
) -> str:
    credentials = (
        f'client_secret_env = "{SECRET_ENV}"'
        if client.client_secret is not None
        else f'private_key_pem_env = "{KEY_ENV}"\n'
        f'signing_alg = "ES256"\n'
        f'client_key_id = "{client.key_id}"'
    )
    scopes = ", ".join(f'"{scope}"' for scope in SCOPE.split())
    return f"""
id = "{bank_id}"
display_name = "oidc-provider {server.version} ({client.auth_method})"
country = "DE"
region = "eu"
issuer = "{server.issuer}"
scopes = [{scopes}]
use_par = {USE_PAR_TOML[use_par]}
hooks = ["prompt_consent_for_offline_access"]
client_id = "{client.client_id}"
client_auth_method = "{client.auth_method}"
{credentials}

[api]
dialect = "obie"
base_url = "/accounts-api"
"""


def make_client(
    server: OidcProviderServer,
    auth_method: AuthMethod,
    http: httpx.AsyncClient,
    tmp_path: Path,
    *,
    use_par: ParSetting = "auto",
) -> BankOAuthClient:
    """Our client as the gateway builds it: a profile file, credentials from the environment."""
    client = server.client(auth_method)
    bank_id = f"interop-{client.client_id}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / f"{bank_id}.toml").write_text(
        profile_toml(server, client, bank_id, use_par), encoding="utf-8"
    )
    profile = load_profiles([tmp_path], include_builtin=False)[bank_id]
    if client.client_secret is not None:
        environ = {SECRET_ENV: client.client_secret}
    else:
        environ = {KEY_ENV: client.private_key_pem().decode("ascii")}
    return BankOAuthClient.from_environment(profile, http, environ)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """The user's browser: its own cookie jar, apart from the client's back channel."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(5.0), follow_redirects=False, trust_env=False
    ) as client:
        yield client


async def start_and_login(
    bank: BankOAuthClient, browser: httpx.AsyncClient, redirect_uri: str, *, consent: bool = True
) -> tuple[PendingAuthorization, str, str]:
    pending, url = await bank.start_authorization(redirect_uri)
    callback = await drive_login(browser, url, login="alice", consent=consent)
    return pending, url, callback


async def link(bank: BankOAuthClient, browser: httpx.AsyncClient) -> Linked:
    pending, url, callback = await start_and_login(bank, browser, REDIRECT_URI)
    code = parse_callback(pending, query_of(callback), await bank.metadata())
    tokens = await bank.exchange_code(pending, code)
    return Linked(pending=pending, authorization_url=url, tokens=tokens)


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_client_links_with_par_pkce_and_iss(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
    auth_method: AuthMethod,
) -> None:
    bank = make_client(oidc_provider, auth_method, interop_http, tmp_path)

    linked = await link(bank, browser)

    front_channel = query_of(linked.authorization_url)
    # RFC 9126 §4: only the client id and the reference travel through the browser.
    assert set(front_channel) == {"client_id", "request_uri"}
    assert front_channel["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert linked.tokens.refresh_token is not None
    assert linked.tokens.id_token is not None
    assert set((linked.tokens.scope or "").split()) == set(SCOPE.split())


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_client_links_through_the_front_channel_without_par(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
    auth_method: AuthMethod,
) -> None:
    bank = make_client(oidc_provider, auth_method, interop_http, tmp_path, use_par="never")

    linked = await link(bank, browser)

    front_channel = query_of(linked.authorization_url)
    assert front_channel["code_challenge_method"] == "S256"
    assert "offline_access" in front_channel["scope"].split()
    assert "consent" in front_channel["prompt"].split()  # OIDC Core §11, via the profile hook
    assert linked.tokens.refresh_token is not None


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_client_refresh_rotates_and_reuse_raises_grant_revoked(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
    auth_method: AuthMethod,
) -> None:
    bank = make_client(oidc_provider, auth_method, interop_http, tmp_path)
    first = (await link(bank, browser)).tokens
    assert first.refresh_token is not None

    second = await bank.refresh(first.refresh_token)
    assert second.refresh_token is not None
    with pytest.raises(GrantRevoked):
        await bank.refresh(first.refresh_token)
    with pytest.raises(GrantRevoked):  # the reuse took the rotated token down with the grant
        await bank.refresh(second.refresh_token)

    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_client_revocation_ends_the_grant(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
    auth_method: AuthMethod,
) -> None:
    bank = make_client(oidc_provider, auth_method, interop_http, tmp_path)
    tokens = (await link(bank, browser)).tokens
    assert tokens.refresh_token is not None

    await bank.revoke(tokens.refresh_token, "refresh_token")
    await bank.revoke(tokens.refresh_token, "refresh_token")  # RFC 7009 §2.2: still success

    with pytest.raises(GrantRevoked):
        await bank.refresh(tokens.refresh_token)


async def test_client_rejects_callback_naming_another_issuer(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    bank = make_client(oidc_provider, "client_secret_basic", interop_http, tmp_path)
    pending, _, callback = await start_and_login(bank, browser, REDIRECT_URI)
    query = query_of(callback)
    assert query["iss"] == oidc_provider.issuer

    # A mix-up (RFC 9700 §4.4): the same answer relayed as if another server issued it.
    forged = {**query, "iss": "http://127.0.0.1:1/"}
    stripped = {key: value for key, value in query.items() if key != "iss"}

    with pytest.raises(IssuerMismatch):
        parse_callback(pending, forged, await bank.metadata())
    with pytest.raises(IssuerMismatch):
        parse_callback(pending, stripped, await bank.metadata())


async def test_client_reports_denied_consent(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    bank = make_client(oidc_provider, "private_key_jwt", interop_http, tmp_path)

    pending, _, callback = await start_and_login(bank, browser, REDIRECT_URI, consent=False)

    with pytest.raises(ConsentRejected):
        parse_callback(pending, query_of(callback), await bank.metadata())


async def test_client_pushes_when_the_server_requires_par(
    oidc_provider_factory: OidcProviderFactory,
    interop_http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    server = oidc_provider_factory(require_par=True)
    auto = make_client(server, "private_key_jwt", interop_http, tmp_path / "auto")
    never = make_client(
        server, "private_key_jwt", interop_http, tmp_path / "never", use_par="never"
    )

    linked = await link(auto, browser)

    assert "request_uri" in query_of(linked.authorization_url)
    with pytest.raises(BankUnsupported):
        await never.metadata()

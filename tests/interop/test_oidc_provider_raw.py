"""The oidc-provider harness, exercised with hand-written HTTP calls (no client of ours).

These pin the server behaviour our OAuth client is tested against: discovery metadata, PKCE
(RFC 7636), PAR (RFC 9126), the authorization response ``iss`` (RFC 9207), refresh token
rotation with reuse detection, revocation (RFC 7009), and the three client authentication
methods (RFC 6749 §2.3.1, RFC 7523 §2.2).
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import ECKey

from .conftest import OidcProviderFactory
from .oidc_driver import drive_login
from .oidc_server import AUTH_METHODS, SCOPE, AuthMethod, OidcProviderServer, RegisteredClient

pytestmark = pytest.mark.interop

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


async def discover(http: httpx.AsyncClient, server: OidcProviderServer) -> dict[str, Any]:
    response = await http.get(server.discovery_url)
    response.raise_for_status()
    metadata: dict[str, Any] = response.json()
    return metadata


def client_assertion(client: RegisteredClient, audience: str) -> str:
    """RFC 7523 §3 assertion; a fresh ``jti`` each time, since the server rejects replays."""
    now = int(time.time())
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + 60,
    }
    assert client.private_key is not None
    key = ECKey.import_key(client.private_key)
    return jwt.encode({"alg": "ES256", "kid": client.key_id}, claims, key)


async def post_as_client(
    http: httpx.AsyncClient,
    server: OidcProviderServer,
    client: RegisteredClient,
    endpoint: str,
    form: dict[str, str],
) -> httpx.Response:
    """POST ``form`` to an endpoint, authenticated the way ``client`` registered."""
    data = dict(form)
    if client.auth_method == "client_secret_basic":
        assert client.client_secret is not None
        # Our ids and secrets are URL-safe, so RFC 6749 §2.3.1's form-encoding is a no-op.
        auth = httpx.BasicAuth(client.client_id, client.client_secret)
        return await http.post(endpoint, data=data, auth=auth)
    if client.auth_method == "client_secret_post":
        assert client.client_secret is not None
        data.update(client_id=client.client_id, client_secret=client.client_secret)
    else:
        # The issuer is the audience every endpoint accepts (FAPI 2.0 §5.3.2.1 asks for it).
        data.update(
            client_id=client.client_id,
            client_assertion_type=JWT_BEARER,
            client_assertion=client_assertion(client, server.issuer),
        )
    return await http.post(endpoint, data=data)


def query_params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def authorization_params(
    client: RegisteredClient, challenge: str, state: str, **extra: str
) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uri,
        "scope": SCOPE,
        "state": state,
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        # OIDC Core §11: without prompt=consent the server drops offline_access silently.
        "prompt": "consent",
        **extra,
    }


async def authorize(
    http: httpx.AsyncClient,
    server: OidcProviderServer,
    client: RegisteredClient,
    *,
    pushed: bool = False,
    **extra: str,
) -> tuple[dict[str, str], str, str]:
    """Run the front channel; return the callback parameters, the state and the verifier."""
    metadata = await discover(http, server)
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    params = authorization_params(client, create_s256_code_challenge(verifier), state, **extra)
    if pushed:
        response = await post_as_client(
            http, server, client, metadata["pushed_authorization_request_endpoint"], params
        )
        assert response.status_code == httpx.codes.CREATED, response.text
        params = {"client_id": client.client_id, "request_uri": response.json()["request_uri"]}
    callback = await drive_login(
        http, f"{metadata['authorization_endpoint']}?{urlencode(params)}", login="alice"
    )
    assert callback.startswith(client.redirect_uri + "?")
    return query_params(callback), state, verifier


async def token_request(
    http: httpx.AsyncClient,
    server: OidcProviderServer,
    client: RegisteredClient,
    form: dict[str, str],
) -> httpx.Response:
    metadata = await discover(http, server)
    return await post_as_client(http, server, client, metadata["token_endpoint"], form)


async def exchange_code(
    http: httpx.AsyncClient,
    server: OidcProviderServer,
    client: RegisteredClient,
    code: str,
    verifier: str,
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uri,
        "code_verifier": verifier,
    }
    return await token_request(http, server, client, form)


async def refresh(
    http: httpx.AsyncClient,
    server: OidcProviderServer,
    client: RegisteredClient,
    refresh_token: str,
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await token_request(http, server, client, form)


async def tokens_for(
    http: httpx.AsyncClient, server: OidcProviderServer, client: RegisteredClient
) -> dict[str, Any]:
    callback, _, verifier = await authorize(http, server, client)
    response = await exchange_code(http, server, client, callback["code"], verifier)
    assert response.status_code == httpx.codes.OK, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def test_discovery_advertises_iss_par_pkce_and_revocation(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    metadata = await discover(interop_http, oidc_provider)

    assert metadata["issuer"] == oidc_provider.issuer
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["pushed_authorization_request_endpoint"].startswith(oidc_provider.issuer)
    assert "require_pushed_authorization_requests" not in metadata
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["revocation_endpoint"].startswith(oidc_provider.issuer)
    assert set(metadata["token_endpoint_auth_methods_supported"]) == set(AUTH_METHODS)
    assert {"openid", "offline_access", "accounts"} <= set(metadata["scopes_supported"])


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
@pytest.mark.parametrize("pushed", [False, True], ids=["query", "par"])
async def test_code_flow_with_pkce_returns_iss_and_refresh_token(
    oidc_provider: OidcProviderServer,
    interop_http: httpx.AsyncClient,
    auth_method: AuthMethod,
    pushed: bool,
) -> None:
    client = oidc_provider.client(auth_method)

    callback, state, verifier = await authorize(interop_http, oidc_provider, client, pushed=pushed)
    response = await exchange_code(interop_http, oidc_provider, client, callback["code"], verifier)

    assert callback["state"] == state
    assert callback["iss"] == oidc_provider.issuer  # RFC 9207 §2
    assert response.status_code == httpx.codes.OK, response.text
    tokens = response.json()
    assert tokens["token_type"].lower() == "bearer"
    assert {"access_token", "refresh_token", "id_token"} <= tokens.keys()
    assert set(tokens["scope"].split()) == set(SCOPE.split())


async def test_code_exchange_rejects_wrong_verifier(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    client = oidc_provider.client("client_secret_basic")
    callback, _, _ = await authorize(interop_http, oidc_provider, client)

    response = await exchange_code(
        interop_http, oidc_provider, client, callback["code"], secrets.token_urlsafe(48)
    )

    assert response.status_code == httpx.codes.BAD_REQUEST
    assert response.json()["error"] == "invalid_grant"


async def test_authorization_code_is_single_use(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    client = oidc_provider.client("client_secret_post")
    callback, _, verifier = await authorize(interop_http, oidc_provider, client)
    first = await exchange_code(interop_http, oidc_provider, client, callback["code"], verifier)

    second = await exchange_code(interop_http, oidc_provider, client, callback["code"], verifier)

    assert first.status_code == httpx.codes.OK
    assert second.status_code == httpx.codes.BAD_REQUEST
    assert second.json()["error"] == "invalid_grant"


async def test_authorization_request_without_pkce_is_refused(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    client = oidc_provider.client("client_secret_basic")
    metadata = await discover(interop_http, oidc_provider)
    params = authorization_params(client, "unused", "s1")
    del params["code_challenge"], params["code_challenge_method"]

    callback = await drive_login(
        interop_http, f"{metadata['authorization_endpoint']}?{urlencode(params)}", login="alice"
    )

    error = query_params(callback)
    assert error["error"] == "invalid_request"
    assert "PKCE" in error["error_description"]
    assert error["iss"] == oidc_provider.issuer


async def test_offline_access_without_prompt_consent_yields_no_refresh_token(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    client = oidc_provider.client("client_secret_basic")
    callback, _, verifier = await authorize(interop_http, oidc_provider, client, prompt="login")

    response = await exchange_code(interop_http, oidc_provider, client, callback["code"], verifier)

    tokens = response.json()
    assert "refresh_token" not in tokens
    assert "offline_access" not in tokens["scope"].split()


async def test_denied_consent_returns_access_denied_with_iss(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    client = oidc_provider.client("client_secret_basic")
    metadata = await discover(interop_http, oidc_provider)
    params = authorization_params(client, create_s256_code_challenge("v" * 43), "s2")

    callback = await drive_login(
        interop_http,
        f"{metadata['authorization_endpoint']}?{urlencode(params)}",
        login="alice",
        consent=False,
    )

    error = query_params(callback)
    assert error["error"] == "access_denied"
    assert error["state"] == "s2"
    assert error["iss"] == oidc_provider.issuer


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_reused_refresh_token_revokes_grant(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient, auth_method: AuthMethod
) -> None:
    client = oidc_provider.client(auth_method)
    first = await tokens_for(interop_http, oidc_provider, client)

    rotated = await refresh(interop_http, oidc_provider, client, first["refresh_token"])
    replayed = await refresh(interop_http, oidc_provider, client, first["refresh_token"])
    after_replay = await refresh(
        interop_http, oidc_provider, client, rotated.json()["refresh_token"]
    )

    assert rotated.status_code == httpx.codes.OK, rotated.text
    assert rotated.json()["refresh_token"] != first["refresh_token"]
    assert replayed.status_code == httpx.codes.BAD_REQUEST
    assert replayed.json()["error"] == "invalid_grant"
    # The replay revoked the whole grant, the rotated token with it.
    assert after_replay.status_code == httpx.codes.BAD_REQUEST
    assert after_replay.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_revoked_refresh_token_cannot_refresh(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient, auth_method: AuthMethod
) -> None:
    client = oidc_provider.client(auth_method)
    tokens = await tokens_for(interop_http, oidc_provider, client)
    metadata = await discover(interop_http, oidc_provider)

    revoked = await post_as_client(
        interop_http,
        oidc_provider,
        client,
        metadata["revocation_endpoint"],
        {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
    )
    response = await refresh(interop_http, oidc_provider, client, tokens["refresh_token"])

    assert revoked.status_code == httpx.codes.OK  # RFC 7009 §2.2
    assert response.status_code == httpx.codes.BAD_REQUEST
    assert response.json()["error"] == "invalid_grant"


async def test_required_par_refuses_plain_authorization_request(
    oidc_provider_factory: OidcProviderFactory, interop_http: httpx.AsyncClient
) -> None:
    server = oidc_provider_factory(require_par=True)
    client = server.client("client_secret_basic")
    metadata = await discover(interop_http, server)
    params = authorization_params(client, create_s256_code_challenge("v" * 43), "s3")

    plain = await drive_login(
        interop_http, f"{metadata['authorization_endpoint']}?{urlencode(params)}", login="alice"
    )
    pushed, _, _ = await authorize(interop_http, server, client, pushed=True)

    assert metadata["require_pushed_authorization_requests"] is True
    assert query_params(plain)["error"] == "invalid_request"
    assert "code" in pushed


async def test_revoked_access_token_is_inactive_and_grant_survives(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    # RFC 7009 §2.1 lets a server drop the whole grant here; oidc-provider 8 keeps it. Other
    # servers do not, so our client never revokes "just the access token"
    # (docs/architecture.md, "Refreshing").
    client = oidc_provider.client("client_secret_basic")
    tokens = await tokens_for(interop_http, oidc_provider, client)
    metadata = await discover(interop_http, oidc_provider)

    revoked = await post_as_client(
        interop_http,
        oidc_provider,
        client,
        metadata["revocation_endpoint"],
        {"token": tokens["access_token"], "token_type_hint": "access_token"},
    )
    introspected = await post_as_client(
        interop_http,
        oidc_provider,
        client,
        metadata["introspection_endpoint"],
        {"token": tokens["access_token"]},
    )
    refreshed = await refresh(interop_http, oidc_provider, client, tokens["refresh_token"])

    assert revoked.status_code == httpx.codes.OK
    assert introspected.json() == {"active": False}
    assert refreshed.status_code == httpx.codes.OK


async def test_replayed_client_assertion_is_rejected(
    oidc_provider: OidcProviderServer, interop_http: httpx.AsyncClient
) -> None:
    client = oidc_provider.client("private_key_jwt")
    metadata = await discover(interop_http, oidc_provider)
    form = {
        "token": "not-a-token",
        "client_id": client.client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion(client, oidc_provider.issuer),
    }

    first = await interop_http.post(metadata["revocation_endpoint"], data=form)
    replay = await interop_http.post(metadata["revocation_endpoint"], data=form)

    assert first.status_code == httpx.codes.OK
    assert replay.status_code == httpx.codes.UNAUTHORIZED
    assert replay.json()["error"] == "invalid_client"

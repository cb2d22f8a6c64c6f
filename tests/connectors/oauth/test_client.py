"""BankOAuthClient against a scripted server: what it sends, and how it reads answers."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import ECKey

from connectors import (
    BankMisconfigured,
    BankOAuthClient,
    BankProtocolError,
    BankUnavailable,
    BankUnsupported,
    ConnectorError,
    GrantRevoked,
    IssuerMismatch,
    PendingAuthorization,
    TokenSet,
)
from tests.connectors.oauth.conftest import (
    AUTH_METHODS,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    REDIRECT_URI,
    ClientFactory,
    FakeBank,
    Reply,
    form,
    jwt_claims,
    metadata_document,
    profile_for,
    token_json,
)
from vault import Secret


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def assert_client_authenticated(request: httpx.Request, auth_method: str, ec_pem: bytes) -> None:
    body = form(request)
    if auth_method == "client_secret_basic":
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        assert request.headers["authorization"] == f"Basic {expected}"
        assert "client_secret" not in body
    elif auth_method == "client_secret_post":
        assert (body["client_id"], body["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
        assert "authorization" not in request.headers
    else:
        assert body["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        key = ECKey.import_key(ec_pem)
        token = jwt.decode(body["client_assertion"], key, algorithms=["ES256"])
        claims = token.claims
        assert claims["aud"] == ISSUER  # the issuer, as a string
        assert claims["iss"] == claims["sub"] == CLIENT_ID
        assert 0 < claims["exp"] - claims["iat"] <= 60
        assert claims["jti"]
        assert CLIENT_SECRET not in request.content.decode()


async def start(
    client_factory: ClientFactory, auth_method: str = "client_secret_basic", **overrides: object
) -> tuple[PendingAuthorization, str]:
    client = client_factory(auth_method, **overrides)
    return await client.start_authorization(REDIRECT_URI)


async def test_authorization_url_carries_pkce_state_nonce_and_hook_params(
    make_client: ClientFactory,
) -> None:
    pending, url = await start(make_client, use_par=False)

    params = query(url)
    assert url.startswith(f"{ISSUER}/authorize?")
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == REDIRECT_URI
    assert params["scope"] == "openid offline_access accounts transactions"
    assert params["state"] == pending.state
    assert params["nonce"] == pending.nonce
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] == create_s256_code_challenge(pending.code_verifier)
    assert params["prompt"] == "consent"  # prompt_consent_for_offline_access (OIDC Core §11)
    assert pending.code_verifier not in url
    assert 43 <= len(pending.code_verifier) <= 128
    assert pending.expires_at - pending.created_at == timedelta(minutes=10)


async def test_every_authorization_is_fresh(make_client: ClientFactory) -> None:
    client = make_client(use_par=False)
    first, _ = await client.start_authorization(REDIRECT_URI)
    second, _ = await client.start_authorization(REDIRECT_URI)

    assert first.state != second.state
    assert first.code_verifier != second.code_verifier
    assert first.nonce != second.nonce


async def test_no_nonce_without_openid(make_client: ClientFactory) -> None:
    pending, url = await start(make_client, use_par=False, scopes="accounts")

    assert pending.nonce is None
    assert "nonce" not in query(url)
    assert "prompt" not in query(url)


async def test_extra_authorize_params_are_sent(make_client: ClientFactory) -> None:
    _, url = await start(make_client, use_par=False, extra_authorize_params={"ui_locales": "de"})

    assert query(url)["ui_locales"] == "de"


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_par_pushes_parameters_and_url_carries_only_the_reference(
    make_client: ClientFactory, bank: FakeBank, auth_method: str, ec_pem: bytes
) -> None:
    bank.reply("/par", httpx.Response(201, json={"request_uri": "urn:x:1", "expires_in": 60}))

    pending, url = await start(make_client, auth_method, use_par=True)

    assert query(url) == {"client_id": CLIENT_ID, "request_uri": "urn:x:1"}
    (pushed,) = bank.sent("/par")
    pairs = parse_qsl(pushed.content.decode())
    assert len(pairs) == len(dict(pairs))  # RFC 6749 §3.2: no parameter twice
    body = form(pushed)
    assert body["state"] == pending.state
    assert body["code_challenge"] == create_s256_code_challenge(pending.code_verifier)
    assert body["redirect_uri"] == REDIRECT_URI
    assert_client_authenticated(pushed, auth_method, ec_pem)


async def test_auto_par_is_used_when_advertised_and_skipped_otherwise(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    bank.reply("/par", httpx.Response(201, json={"request_uri": "urn:x:2", "expires_in": 60}))
    _, pushed_url = await start(make_client)  # built-in profile: use_par = "auto"
    bank.metadata = metadata_document(pushed_authorization_request_endpoint=None)
    _, plain_url = await start(make_client)

    assert "request_uri" in query(pushed_url)
    assert "code_challenge" in query(plain_url)


async def test_bank_requiring_par_refuses_profile_that_disables_it(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    bank.metadata = metadata_document(require_pushed_authorization_requests=True)

    with pytest.raises(BankUnsupported, match="use_par = false"):
        await start(make_client, use_par=False)


async def test_bank_without_s256_is_refused(make_client: ClientFactory, bank: FakeBank) -> None:
    bank.metadata = metadata_document(code_challenge_methods_supported=["plain"])

    with pytest.raises(BankUnsupported, match="PKCE S256"):
        await make_client().metadata()


async def test_plain_pkce_only_when_allowed_and_logged(
    make_client: ClientFactory, bank: FakeBank, caplog: pytest.LogCaptureFixture
) -> None:
    bank.metadata = metadata_document(code_challenge_methods_supported=["plain"])
    caplog.set_level(logging.WARNING)

    pending, url = await start(make_client, use_par=False, allow_plain_pkce=True)

    assert query(url)["code_challenge_method"] == "plain"
    assert query(url)["code_challenge"] == pending.code_verifier
    assert "using plain because allow_plain_pkce is set" in caplog.text


async def test_discovery_happens_once_per_client(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    client = make_client(use_par=False)
    for _ in range(3):
        await client.start_authorization(REDIRECT_URI)

    assert len(bank.sent("/.well-known/oauth-authorization-server")) == 1


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_code_exchange_sends_verifier_redirect_and_client_auth(
    make_client: ClientFactory, bank: FakeBank, auth_method: str, ec_pem: bytes
) -> None:
    client = make_client(auth_method, use_par=False)
    pending, _ = await client.start_authorization(REDIRECT_URI)
    bank.reply("/token", httpx.Response(200, json=token_json()))

    tokens = await client.exchange_code(pending, "the-code")

    (request,) = bank.sent("/token")
    body = form(request)
    assert body["grant_type"] == "authorization_code"
    assert body["code"] == "the-code"
    assert body["code_verifier"] == pending.code_verifier
    assert body["redirect_uri"] == REDIRECT_URI
    assert_client_authenticated(request, auth_method, ec_pem)
    assert tokens.access_token == "at-1"
    assert tokens.refresh_token == "rt-1"
    assert tokens.token_type == "Bearer"
    assert tokens.expires_at is not None
    assert tokens.expires_at.tzinfo is not None
    assert timedelta(seconds=290) < tokens.expires_at - datetime.now(UTC) <= timedelta(seconds=300)


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_refresh_and_revoke_authenticate_the_client(
    make_client: ClientFactory, bank: FakeBank, auth_method: str, ec_pem: bytes
) -> None:
    client = make_client(auth_method)
    bank.reply("/token", httpx.Response(200, json=token_json(refresh_token="rt-2")))
    bank.reply("/revoke", httpx.Response(200))

    tokens = await client.refresh("rt-1")
    await client.revoke("rt-2", "refresh_token")

    (refresh,) = bank.sent("/token")
    assert form(refresh)["grant_type"] == "refresh_token"
    assert form(refresh)["refresh_token"] == "rt-1"
    assert "scope" not in form(refresh)
    assert_client_authenticated(refresh, auth_method, ec_pem)
    assert tokens.refresh_token == "rt-2"
    (revoke,) = bank.sent("/revoke")
    assert form(revoke)["token"] == "rt-2"
    assert form(revoke)["token_type_hint"] == "refresh_token"
    assert_client_authenticated(revoke, auth_method, ec_pem)


async def test_basic_auth_form_encodes_id_and_secret(
    http: httpx.AsyncClient, bank: FakeBank
) -> None:
    client = BankOAuthClient(profile_for(), http, Secret("p@ss:w%rd +/"))
    bank.reply("/token", httpx.Response(200, json=token_json()))

    await client.refresh("rt-1")

    (request,) = bank.sent("/token")
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "gw-client:p%40ss%3Aw%25rd+%2B%2F"


async def test_private_key_jwt_assertions_are_never_reused(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    client = make_client("private_key_jwt")
    bank.reply("/token", *(httpx.Response(200, json=token_json()) for _ in range(2)))

    await client.refresh("rt-1")
    await client.refresh("rt-1")

    jtis = {jwt_claims(form(r)["client_assertion"])["jti"] for r in bank.sent("/token")}
    assert len(jtis) == 2


async def test_refresh_keeps_the_old_refresh_token_when_the_bank_does_not_rotate(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    bank.reply("/token", httpx.Response(200, json=token_json(refresh_token=None, scope=None)))

    tokens = await make_client().refresh("rt-old")

    assert tokens.refresh_token == "rt-old"
    assert tokens.scope is None  # "unchanged" after a refresh


async def test_expires_in_string_needs_the_hook(make_client: ClientFactory, bank: FakeBank) -> None:
    quirky = token_json(expires_in="3600", scope=["accounts", "transactions"])
    bank.reply("/token", httpx.Response(200, json=quirky), httpx.Response(200, json=quirky))

    with pytest.raises(BankProtocolError, match=r"scope|expires_in"):
        await make_client().refresh("rt-1")
    tokens = await make_client(hooks=["expires_in_as_string", "scope_as_list"]).refresh("rt-1")

    assert tokens.expires_at is not None
    assert tokens.scope == "accounts transactions"


def _date_in(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (httpx.Response(400, json={"error": "invalid_grant"}), GrantRevoked, None),
        (httpx.Response(401, json={"error": "invalid_client"}), BankMisconfigured, None),
        (httpx.Response(503, text="down", headers={"Retry-After": "120"}), BankUnavailable, 120),
        (httpx.Response(500, text="<html>oops</html>"), BankUnavailable, None),
        (
            # An HTTP-date, computed when the bank answers.
            lambda _: httpx.Response(
                429, json={"error": "slow_down"}, headers={"Retry-After": _date_in(90)}
            ),
            BankUnavailable,
            90,
        ),
        (httpx.Response(200, text="<html>not json</html>"), BankProtocolError, None),
        (httpx.Response(200, json={"access_token": 7}), BankProtocolError, None),
        (httpx.Response(200, json=token_json(token_type="mac")), BankProtocolError, None),
        (httpx.Response(200, json=token_json(expires_in=-5)), BankProtocolError, None),
        (httpx.Response(400, json={"error": "temporarily_unavailable"}), BankUnavailable, None),
    ],
)
async def test_token_endpoint_answers_map_to_typed_errors(
    make_client: ClientFactory,
    bank: FakeBank,
    reply: Reply,
    error: type[ConnectorError],
    retry_after: int | None,
) -> None:
    bank.reply("/token", reply)

    with pytest.raises(error) as caught:
        await make_client().refresh("rt-secret-value")

    assert type(caught.value) is error
    if retry_after is None:
        assert getattr(caught.value, "retry_after", None) is None
    else:
        assert isinstance(caught.value, BankUnavailable)
        assert caught.value.retry_after == pytest.approx(retry_after, abs=2)
    assert "rt-secret-value" not in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_transport_failures_are_bank_unavailable(
    make_client: ClientFactory, bank: FakeBank, failure: httpx.TransportError
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    bank.reply("/token", fail)

    with pytest.raises(BankUnavailable):
        await make_client().refresh("rt-1")


async def test_discovery_outage_is_bank_unavailable_and_not_cached(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    client = make_client()
    bank.down = httpx.Response(503, headers={"Retry-After": "5"})

    with pytest.raises(BankUnavailable) as caught:
        await client.metadata()
    bank.down = None

    assert caught.value.retry_after == 5
    assert (await client.metadata()).issuer == ISSUER


async def test_every_request_carries_a_timeout(make_client: ClientFactory, bank: FakeBank) -> None:
    bank.reply("/par", httpx.Response(201, json={"request_uri": "urn:x", "expires_in": 60}))
    bank.reply("/token", httpx.Response(200, json=token_json()))
    bank.reply("/revoke", httpx.Response(200))
    client = make_client(use_par=True)

    await client.start_authorization(REDIRECT_URI)
    await client.refresh("rt-1")
    await client.revoke("rt-1")

    assert {r.url.path for r in bank.requests} >= {"/par", "/token", "/revoke"}
    for request in bank.requests:
        timeout = request.extensions["timeout"]
        assert all(value is not None for value in timeout.values()), request.url


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(503, headers={"Retry-After": "30"}), BankUnavailable),
        (httpx.Response(400, json={"error": "unsupported_token_type"}), BankProtocolError),
    ],
)
async def test_revocation_failures(
    make_client: ClientFactory, bank: FakeBank, reply: httpx.Response, error: type[Exception]
) -> None:
    bank.reply("/revoke", reply)

    with pytest.raises(error):
        await make_client().revoke("rt-1", "refresh_token")


async def test_revocation_without_endpoint_is_unsupported(
    make_client: ClientFactory, bank: FakeBank
) -> None:
    bank.metadata = metadata_document(revocation_endpoint=None)

    with pytest.raises(BankUnsupported, match="revocation"):
        await make_client().revoke("rt-1")


def _id_token(**claims: object) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "ES256"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.c2ln"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({}, None),
        ({"nonce": "another-nonce"}, BankProtocolError),
        ({"aud": "someone-else"}, BankProtocolError),
        ({"iss": "https://evil.test"}, IssuerMismatch),
        ({"exp": 1_000_000}, BankProtocolError),
    ],
)
async def test_id_token_must_belong_to_this_request(
    make_client: ClientFactory,
    bank: FakeBank,
    changes: dict[str, object],
    error: type[Exception] | None,
) -> None:
    client = make_client(use_par=False)
    pending, _ = await client.start_authorization(REDIRECT_URI)
    claims = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "exp": int(datetime.now(UTC).timestamp()) + 300,
        "nonce": pending.nonce,
        **changes,
    }
    bank.reply("/token", httpx.Response(200, json=token_json(id_token=_id_token(**claims))))

    if error is None:
        tokens = await client.exchange_code(pending, "code")
        assert tokens.id_token is not None
    else:
        with pytest.raises(error):
            await client.exchange_code(pending, "code")


async def test_pending_of_another_bank_is_refused(make_client: ClientFactory) -> None:
    pending = PendingAuthorization.new(
        "other-bank", REDIRECT_URI, with_nonce=False, now=datetime.now(UTC)
    )

    with pytest.raises(ValueError, match="other-bank"):
        await make_client().exchange_code(pending, "code")


def test_client_needs_the_credential_its_method_uses() -> None:
    async_client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="client secret"):
        BankOAuthClient(profile_for("client_secret_post"), async_client, None)
    with pytest.raises(ValueError, match="private key"):
        BankOAuthClient(profile_for("private_key_jwt"), async_client, None, None)


def test_token_set_repr_masks_tokens() -> None:
    tokens = TokenSet(
        access_token="at-secret",
        refresh_token="rt-secret",
        expires_at=datetime.now(UTC),
        scope="accounts",
        token_type="Bearer",
        id_token="id-secret",
    )

    assert "secret" not in repr(tokens)
    assert "accounts" in repr(tokens)


def test_token_set_requires_utc_expiry() -> None:
    with pytest.raises(ValueError, match="UTC"):
        TokenSet("a", None, datetime.now(), None, "Bearer")  # a naive datetime


def test_pending_authorization_masks_secrets_and_round_trips() -> None:
    pending = PendingAuthorization.new(
        "sandbox-eu", REDIRECT_URI, with_nonce=True, now=datetime.now(UTC)
    )

    text = repr(pending)
    assert pending.state not in text
    assert pending.code_verifier not in text
    assert pending.nonce is not None
    assert pending.nonce not in text
    assert PendingAuthorization.from_dict(pending.to_dict()) == pending

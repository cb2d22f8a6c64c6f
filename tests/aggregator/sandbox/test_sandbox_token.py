from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet

from aggregator.sandbox import SandboxBank, SandboxClient, SandboxConfig
from aggregator.sandbox.testing import (
    ClientKey,
    FlowDriver,
    Served,
    ServeFactory,
    pkce_pair,
    query_of,
    serve_bank,
)
from tests.aggregator.sandbox.conftest import CLIENT_SECRET

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _code_grant(driver: FlowDriver, code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": driver.redirect_uri,
        "code_verifier": verifier,
    }


async def test_client_secret_basic_exchanges_the_code(driver: FlowDriver, served: Served) -> None:
    callback = await driver.code()

    response = await served.http.post(
        "/token",
        data=_code_grant(driver, callback.params["code"], callback.verifier),
        auth=driver.auth,
    )

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "accounts"
    assert body["refresh_token"]


async def test_client_secret_post_exchanges_the_code(driver: FlowDriver, served: Served) -> None:
    callback = await driver.code()
    data = {
        **_code_grant(driver, callback.params["code"], callback.verifier),
        "client_id": driver.client_id,
        "client_secret": driver.client_secret,
    }

    response = await served.http.post("/token", data=data)

    assert response.status_code == 200


async def test_wrong_client_secret_is_invalid_client(driver: FlowDriver, served: Served) -> None:
    callback = await driver.code()

    response = await served.http.post(
        "/token",
        data=_code_grant(driver, callback.params["code"], callback.verifier),
        auth=(driver.client_id, "not-the-secret"),
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def _jwt_code(driver: FlowDriver, jwt_client_id: str) -> tuple[str, str]:
    params, verifier = driver.authorization_params(client_id=jwt_client_id)
    return query_of(await driver.authorize(params))["code"], verifier


@pytest.mark.parametrize("audience", ["issuer", "token_endpoint"])
async def test_private_key_jwt_exchanges_the_code(
    driver: FlowDriver, served: Served, client_key: ClientKey, jwt_client_id: str, audience: str
) -> None:
    code, verifier = await _jwt_code(driver, jwt_client_id)
    aud = served.base_url if audience == "issuer" else f"{served.base_url}/token"
    data = {
        **_code_grant(driver, code, verifier),
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_key.assertion(aud, jwt_client_id),
    }

    response = await served.http.post("/token", data=data)

    assert response.status_code == 200, response.text


async def test_private_key_jwt_assertion_is_single_use(
    driver: FlowDriver, served: Served, client_key: ClientKey, jwt_client_id: str
) -> None:
    assertion = client_key.assertion(served.base_url, jwt_client_id, jti="once")
    code, verifier = await _jwt_code(driver, jwt_client_id)
    auth = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    assert (
        await served.http.post("/token", data={**_code_grant(driver, code, verifier), **auth})
    ).status_code == 200
    code, verifier = await _jwt_code(driver, jwt_client_id)

    replay = await served.http.post("/token", data={**_code_grant(driver, code, verifier), **auth})

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("aud", "lifetime", "other_key"),
    [
        ("https://other-bank.example", 60, False),
        ("issuer", 3600, False),
        ("issuer", 60, True),
    ],
    ids=["foreign-audience", "long-lived", "unregistered-key"],
)
async def test_private_key_jwt_rejects_bad_assertions(
    driver: FlowDriver,
    served: Served,
    client_key: ClientKey,
    jwt_client_id: str,
    aud: str,
    lifetime: int,
    other_key: bool,
) -> None:
    signer = ClientKey() if other_key else client_key
    audience = served.base_url if aud == "issuer" else aud
    code, verifier = await _jwt_code(driver, jwt_client_id)
    data = {
        **_code_grant(driver, code, verifier),
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signer.assertion(audience, jwt_client_id, lifetime=lifetime),
    }

    response = await served.http.post("/token", data=data)

    assert response.json()["error"] == "invalid_client"


async def test_private_key_jwt_client_may_not_fall_back_to_a_secret(
    driver: FlowDriver, served: Served, jwt_client_id: str
) -> None:
    code, verifier = await _jwt_code(driver, jwt_client_id)

    response = await served.http.post(
        "/token", data=_code_grant(driver, code, verifier), auth=(jwt_client_id, "x")
    )

    assert response.json()["error"] == "invalid_client"


async def test_private_key_jwt_works_with_a_registered_pem(
    client_key: ClientKey, new_driver: Callable[[Served], FlowDriver]
) -> None:
    pem = client_key.private.get_op_key("verify").public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_client = SandboxClient(
        client_id="pem-client",
        redirect_uris=["http://127.0.0.1/cb"],
        auth_methods=["private_key_jwt"],
        jwks=pem.decode(),
    )
    async with serve_bank(SandboxConfig(clients=[pem_client])) as s:
        driver = new_driver(s)
        code, verifier = await _jwt_code(driver, "pem-client")
        data = {
            **_code_grant(driver, code, verifier),
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_key.assertion(s.base_url, "pem-client"),
        }
        response = await s.http.post("/token", data=data)

    assert response.status_code == 200, response.text


async def test_wrong_code_verifier_is_invalid_grant(driver: FlowDriver) -> None:
    callback = await driver.code()
    callback.verifier = pkce_pair()[0]

    response = await driver.exchange(callback)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_reused_code_is_invalid_grant_and_revokes_its_tokens(driver: FlowDriver) -> None:
    callback = await driver.code()
    first = await driver.exchange(callback)
    assert first.status_code == 200

    replay = await driver.exchange(callback)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: tokens issued from a replayed code are revoked.
    assert (await driver.accounts(first.json()["access_token"])).status_code == 401


async def test_expired_code_is_invalid_grant(driver: FlowDriver, served: Served) -> None:
    callback = await driver.code()
    served.bank.advance_clock(61)

    response = await driver.exchange(callback)

    assert response.json()["error"] == "invalid_grant"


async def test_code_lifetime_is_configurable(
    serve: ServeFactory, new_driver: Callable[[Served], FlowDriver]
) -> None:
    async with serve(code_ttl=300) as s:
        driver = new_driver(s)
        callback = await driver.code()
        s.bank.advance_clock(120)
        response = await driver.exchange(callback)

    assert response.status_code == 200


async def test_redirect_uri_must_match_the_authorization_request(driver: FlowDriver) -> None:
    callback = await driver.code()

    response = await driver.exchange(callback, redirect_uri="http://127.0.0.1:1/cb")

    assert response.json()["error"] == "invalid_grant"


async def test_refresh_rotates_the_refresh_token(driver: FlowDriver) -> None:
    tokens = await driver.tokens()

    response = await driver.refresh(tokens["refresh_token"])

    assert response.status_code == 200
    rotated = response.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["access_token"] != tokens["access_token"]
    assert (await driver.accounts(rotated["access_token"])).status_code == 200
    assert (await driver.refresh(rotated["refresh_token"])).status_code == 200


async def test_reused_refresh_token_revokes_grant(driver: FlowDriver) -> None:
    tokens = await driver.tokens()
    rotated = (await driver.refresh(tokens["refresh_token"])).json()

    reuse = await driver.refresh(tokens["refresh_token"])

    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert (await driver.accounts(rotated["access_token"])).status_code == 401
    assert (await driver.refresh(rotated["refresh_token"])).json()["error"] == "invalid_grant"


async def test_grant_revoked_by_reuse_leaves_other_grants_alone(driver: FlowDriver) -> None:
    mine = await driver.tokens()
    other = await driver.tokens(user="bob")
    await driver.refresh(mine["refresh_token"])

    await driver.refresh(mine["refresh_token"])

    assert (await driver.accounts(other["access_token"])).status_code == 200


async def test_expired_access_token_is_refused_but_refresh_works(
    driver: FlowDriver, served: Served
) -> None:
    tokens = await driver.tokens()
    served.bank.advance_clock(301)

    assert (await driver.accounts(tokens["access_token"])).status_code == 401
    assert (await driver.refresh(tokens["refresh_token"])).status_code == 200


async def test_token_lifetimes_are_configurable(
    serve: ServeFactory, new_driver: Callable[[Served], FlowDriver]
) -> None:
    async with serve(access_token_ttl=30, refresh_token_ttl=100) as s:
        driver = new_driver(s)
        tokens = await driver.tokens()
        s.bank.advance_clock(101)
        refresh = await driver.refresh(tokens["refresh_token"])

    assert tokens["expires_in"] == 30
    assert refresh.json()["error"] == "invalid_grant"


async def test_revoking_the_refresh_token_revokes_the_grant(
    driver: FlowDriver, served: Served
) -> None:
    tokens = await driver.tokens()

    response = await served.http.post(
        "/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=driver.auth,
    )

    assert response.status_code == 200
    assert (await driver.accounts(tokens["access_token"])).status_code == 401
    assert (await driver.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_revoking_the_access_token_keeps_the_refresh_token(
    driver: FlowDriver, served: Served
) -> None:
    tokens = await driver.tokens()

    response = await served.http.post(
        "/revoke", data={"token": tokens["access_token"]}, auth=driver.auth
    )

    assert response.status_code == 200
    assert (await driver.accounts(tokens["access_token"])).status_code == 401
    assert (await driver.refresh(tokens["refresh_token"])).status_code == 200


async def test_revoking_an_unknown_token_succeeds(driver: FlowDriver, served: Served) -> None:
    response = await served.http.post("/revoke", data={"token": "nope"}, auth=driver.auth)

    assert response.status_code == 200  # RFC 7009 §2.2


async def test_revocation_requires_client_authentication(
    driver: FlowDriver, served: Served
) -> None:
    tokens = await driver.tokens()

    response = await served.http.post("/revoke", data={"token": tokens["refresh_token"]})

    assert response.status_code == 401
    assert (await driver.refresh(tokens["refresh_token"])).status_code == 200


async def test_openid_scope_adds_an_id_token_echoing_the_nonce(
    driver: FlowDriver, served: Served
) -> None:
    callback = await driver.code(scope="openid accounts", nonce="n-123")

    body = (await driver.exchange(callback)).json()

    keys = KeySet.import_key_set((await served.http.get("/jwks")).json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims
    assert claims["nonce"] == "n-123"
    assert claims["iss"] == served.base_url
    assert claims["aud"] == [driver.client_id]
    assert claims["sub"] == "alice"


async def test_token_endpoint_refuses_get(served: Served) -> None:
    response = await served.http.get("/token")

    assert response.status_code == 405


def test_token_endpoint_answers_through_a_threaded_server(
    make_config: Callable[..., SandboxConfig],
) -> None:
    """serve_in_thread: sync code gets a working bank and a clean, bounded shutdown."""
    bank = SandboxBank(make_config())
    with bank.serve_in_thread() as base_url:
        response = httpx.post(
            f"{base_url}/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            auth=("c1", CLIENT_SECRET),
        )

    assert response.json()["error"] == "invalid_grant"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/jwks")


async def test_no_credential_reaches_the_logs(
    driver: FlowDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    callback = await driver.code()
    tokens = (await driver.exchange(callback)).json()
    rotated = (await driver.refresh(tokens["refresh_token"])).json()

    secrets = [
        callback.params["code"],
        callback.verifier,
        tokens["access_token"],
        tokens["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        driver.client_secret,
    ]
    # The server side only: httpx/httpcore in this test process log the client's view.
    server_side = ("authlib", "aggregator", "uvicorn", "starlette")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith(server_side)]
    assert any(line.startswith("Authenticate c1") for line in lines)  # DEBUG was on
    assert not [s for s in secrets if any(s in line for line in lines)]


async def test_private_key_jwt_without_registered_keys_is_invalid_client(
    client_key: ClientKey, new_driver: Callable[[Served], FlowDriver]
) -> None:
    keyless = SandboxClient(
        client_id="keyless",
        client_secret="s",
        redirect_uris=["http://127.0.0.1/cb"],
        auth_methods=["client_secret_basic", "private_key_jwt"],
    )
    async with serve_bank(SandboxConfig(clients=[keyless])) as s:
        driver = new_driver(s)
        code, verifier = await _jwt_code(driver, "keyless")
        data = {
            **_code_grant(driver, code, verifier),
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_key.assertion(s.base_url, "keyless"),
        }
        response = await s.http.post("/token", data=data)

    assert response.json()["error"] == "invalid_client"

from __future__ import annotations

from collections.abc import Callable

import pytest

from aggregator.sandbox.testing import (
    ClientKey,
    FlowDriver,
    Served,
    ServeFactory,
    interaction_id,
    query_of,
)


async def test_code_flow_redirects_with_code_state_and_iss(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params(state="xyz")

    location = await driver.authorize(params)

    assert location.startswith(driver.redirect_uri + "?")
    query = query_of(location)
    assert query["state"] == "xyz"
    assert query["iss"] == served.base_url
    assert len(query["code"]) >= 32


async def test_denied_consent_redirects_with_access_denied_state_and_iss(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params(state="s-deny")

    location = await driver.authorize(params, decision="deny")

    query = query_of(location)
    assert "code" not in query
    assert query["error"] == "access_denied"
    assert query["state"] == "s-deny"
    assert query["iss"] == served.base_url


async def test_error_redirect_carries_iss_and_state(driver: FlowDriver, served: Served) -> None:
    params, _ = driver.authorization_params(scope="payments", state="s-err")

    response = await served.http.get("/authorize", params=params)

    assert response.status_code == 302
    query = query_of(response.headers["location"])
    assert query["error"] == "invalid_scope"
    assert query["state"] == "s-err"
    assert query["iss"] == served.base_url


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"code_challenge": ""}, "missing challenge"),
        ({"code_challenge_method": "plain"}, "plain method"),
        ({"code_challenge_method": ""}, "absent method means plain"),
    ],
)
async def test_authorization_without_s256_pkce_is_refused(
    driver: FlowDriver, served: Served, change: dict[str, str], reason: str
) -> None:
    params, _ = driver.authorization_params()
    params.update(change)
    params = {k: v for k, v in params.items() if v}

    response = await served.http.get("/authorize", params=params)

    assert response.status_code == 302, reason
    query = query_of(response.headers["location"])
    assert query["error"] == "invalid_request"
    assert query["iss"] == served.base_url


async def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params(redirect_uri="https://attacker.example/cb")

    response = await served.http.get("/authorize", params=params)

    assert response.status_code == 400
    assert "location" not in response.headers
    assert "href" not in response.text


async def test_loopback_redirect_uri_must_keep_path_even_on_another_port(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params(redirect_uri="http://127.0.0.1:4000/other")

    response = await served.http.get("/authorize", params=params)

    assert response.status_code == 400


async def test_login_page_is_an_accessible_form_without_script(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params()

    page = (await served.http.get("/authorize", params=params)).text

    assert '<html lang="en">' in page
    assert '<label for="username">' in page
    assert '<label for="password">' in page
    assert 'id="username" name="username"' in page
    assert "<script" not in page


async def test_wrong_password_shows_the_form_again_with_an_alert(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params()
    page = (await served.http.get("/authorize", params=params)).text

    response = await served.http.post(
        "/login",
        data={"interaction": interaction_id(page), "username": "alice", "password": "nope"},
    )

    assert response.status_code == 400
    assert 'role="alert"' in response.text
    assert interaction_id(response.text) == interaction_id(page)


async def test_consent_interaction_is_single_use(driver: FlowDriver, served: Served) -> None:
    params, _ = driver.authorization_params()
    iid = await driver.sign_in(await served.http.get("/authorize", params=params))
    assert (await driver.decide(iid)).status_code == 302

    replay = await driver.decide(iid)

    assert replay.status_code == 400


async def test_consent_without_sign_in_is_refused(driver: FlowDriver, served: Served) -> None:
    params, _ = driver.authorization_params()
    page = (await served.http.get("/authorize", params=params)).text

    response = await driver.decide(interaction_id(page))

    assert response.status_code == 400


# -- Pushed Authorization Requests (RFC 9126) ----------------------------------------


async def _push(driver: FlowDriver, params: dict[str, str]) -> dict[str, object]:
    response = await driver.http.post("/par", data=params, auth=driver.auth)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_par_flow_uses_the_pushed_parameters(driver: FlowDriver, served: Served) -> None:
    params, verifier = driver.authorization_params(state="pushed-state")
    pushed = await _push(driver, params)
    assert str(pushed["request_uri"]).startswith("urn:ietf:params:oauth:request_uri:")
    assert pushed["expires_in"] == 60

    location = await driver.authorize(
        {"client_id": driver.client_id, "request_uri": str(pushed["request_uri"])}
    )

    query = query_of(location)
    assert query["state"] == "pushed-state"
    assert query["iss"] == served.base_url
    callback_params = {"code": query["code"]}
    token = await served.http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": callback_params["code"],
            "redirect_uri": driver.redirect_uri,
            "code_verifier": verifier,
        },
        auth=driver.auth,
    )
    assert token.status_code == 200


async def test_par_request_uri_is_single_use(driver: FlowDriver, served: Served) -> None:
    params, _ = driver.authorization_params()
    request_uri = str((await _push(driver, params))["request_uri"])
    first = await served.http.get(
        "/authorize", params={"client_id": driver.client_id, "request_uri": request_uri}
    )
    assert first.status_code == 200

    second = await served.http.get(
        "/authorize", params={"client_id": driver.client_id, "request_uri": request_uri}
    )

    assert second.status_code == 400


async def test_par_request_uri_expires(driver: FlowDriver, served: Served) -> None:
    params, _ = driver.authorization_params()
    request_uri = str((await _push(driver, params))["request_uri"])
    served.bank.advance_clock(61)

    response = await served.http.get(
        "/authorize", params={"client_id": driver.client_id, "request_uri": request_uri}
    )

    assert response.status_code == 400


async def test_par_requires_client_authentication(driver: FlowDriver, served: Served) -> None:
    params, _ = driver.authorization_params()

    response = await served.http.post("/par", data=params, auth=(driver.client_id, "wrong"))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_par_validates_like_the_authorization_endpoint(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params(code_challenge_method="plain")

    response = await served.http.post("/par", data=params, auth=driver.auth)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "location" not in response.headers


async def test_required_par_refuses_plain_authorization_requests(
    serve: ServeFactory, new_driver: Callable[[Served], FlowDriver]
) -> None:
    async with serve(require_par=True) as s:
        driver = new_driver(s)
        params, _ = driver.authorization_params()
        plain = await s.http.get("/authorize", params=params)
        request_uri = str((await _push(driver, params))["request_uri"])
        pushed = await s.http.get(
            "/authorize", params={"client_id": driver.client_id, "request_uri": request_uri}
        )

    assert plain.status_code == 400
    assert "pushed authorization" in plain.text
    assert pushed.status_code == 200


async def test_consent_page_offers_allow_and_deny_buttons_without_script(
    driver: FlowDriver, served: Served
) -> None:
    params, _ = driver.authorization_params(scope="openid accounts")
    page = (await served.http.get("/authorize", params=params)).text

    consent = await served.http.post(
        "/login",
        data={"interaction": interaction_id(page), "username": "bob", "password": "bob-pass"},
    )

    assert consent.status_code == 200
    assert '<button type="submit" name="decision" value="approve">' in consent.text
    assert '<button type="submit" name="decision" value="deny">' in consent.text
    assert "<script" not in consent.text
    assert "bob" in consent.text
    assert consent.headers["x-frame-options"] == "DENY"
    assert consent.headers["cache-control"] == "no-store"


async def test_par_accepts_private_key_jwt_with_the_par_endpoint_as_audience(
    driver: FlowDriver, served: Served, client_key: ClientKey, jwt_client_id: str
) -> None:
    params, _ = driver.authorization_params(client_id=jwt_client_id)
    data = {
        **params,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_key.assertion(f"{served.base_url}/par", jwt_client_id),
    }

    response = await served.http.post("/par", data=data)

    assert response.status_code == 201, response.text
    request_uri = response.json()["request_uri"]
    page = await served.http.get(
        "/authorize", params={"client_id": jwt_client_id, "request_uri": request_uri}
    )
    assert page.status_code == 200
    assert "client_assertion" not in page.text

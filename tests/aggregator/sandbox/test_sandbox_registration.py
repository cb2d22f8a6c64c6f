"""Dynamic client registration at the sandbox bank (RFC 7591, RFC 7592), over a socket."""

from __future__ import annotations

from typing import Any

import httpx

from aggregator.sandbox.testing import FlowDriver, Served
from tests.aggregator.sandbox.conftest import CALLBACK, REGISTERED_REDIRECT_URI

NAME = 'Budgetly <b>& "Co"</b>'


async def _register(served: Served, **extra: Any) -> dict[str, Any]:
    answer = await served.http.post(
        "/register",
        json={
            "client_name": NAME,
            "redirect_uris": [REGISTERED_REDIRECT_URI],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            **extra,
        },
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _consent_page(served: Served, client: dict[str, Any]) -> str:
    driver = FlowDriver(served, client["client_id"], client["client_secret"], CALLBACK)
    params, _ = driver.authorization_params()
    start = await served.http.get("/authorize", params=params)
    iid = await driver.sign_in(start)
    assert iid
    page = await served.http.post(
        "/login", data={"interaction": iid, "username": "alice", "password": "alice-pass"}
    )
    return page.text


async def test_registered_client_name_is_shown_escaped_on_the_consent_page(
    served: Served,
) -> None:
    client = await _register(served)
    assert client["client_id"].startswith("dcr-")
    assert client["registration_client_uri"] == (
        f"{served.base_url}/register/{client['client_id']}"
    )
    page = await _consent_page(served, client)
    assert "Budgetly &lt;b&gt;&amp; &quot;Co&quot;&lt;/b&gt;" in page
    assert NAME not in page
    driver = FlowDriver(served, client["client_id"], client["client_secret"], CALLBACK)
    assert "access_token" in await driver.tokens()  # a working client, not just a name


async def test_put_renames_and_delete_ends_the_client(served: Served) -> None:
    client = await _register(served)
    uri, token = client["registration_client_uri"], client["registration_access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    renamed = await served.http.put(
        uri,
        headers=auth,
        json={
            "client_id": client["client_id"],
            "client_name": "Budgetly Pro",
            "redirect_uris": [REGISTERED_REDIRECT_URI],
            "token_endpoint_auth_method": "client_secret_basic",
        },
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["client_name"] == "Budgetly Pro"
    assert "Budgetly Pro" in await _consent_page(served, client)
    read = await served.http.get(uri, headers=auth)
    assert read.json()["client_name"] == "Budgetly Pro"
    wrong = await served.http.delete(uri, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code in (401, 403)
    assert (await served.http.delete(uri, headers=auth)).status_code == 204
    assert client["client_id"] not in served.bank.server.clients
    after = await served.http.get(
        "/authorize",
        params=FlowDriver(
            served, client["client_id"], client["client_secret"], CALLBACK
        ).authorization_params()[0],
    )
    assert after.status_code == 400  # unknown client
    again = await served.http.delete(uri, headers=auth)
    assert again.status_code in (401, 403)


async def test_registration_is_refused_to_a_peer_not_on_this_machine(served: Served) -> None:
    transport = httpx.ASGITransport(served.bank.asgi_app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url=served.base_url) as remote:
        answer = await remote.post(
            "/register", json={"client_name": "x", "redirect_uris": [REGISTERED_REDIRECT_URI]}
        )
    assert answer.status_code == 403
    assert not served.bank.server.registered

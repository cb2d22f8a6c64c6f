"""Bad input to the Link flow: the right refusal, an HTML page for people, nothing written."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, update

from aggregator.models import Connection, Credential, LinkSession, LinkStatus
from aggregator.models.base import utcnow
from tests.aggregator._logs import LogLines
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


async def _sessions(gateway: Gateway, region: str = "eu") -> int:
    async with gateway.services.router.reader(region) as session:
        return int((await session.execute(select(func.count(LinkSession.id)))).scalar_one())


def _is_error_page(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in answer.text
    assert answer.headers["x-request-id"] in answer.text  # quoted to support
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"redirect_uri": "https://evil.example/steal"}, "#/redirect_uri"),
        ({"redirect_uri": APP_REDIRECT + "/"}, "#/redirect_uri"),  # exact match only
        ({"bank_id": "sandbox-us"}, "#/bank_id"),  # a bank of another region
        ({"connection_id": "con_eu_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "#/connection_id"),
        ({"surprise": 1}, "#/surprise"),
    ],
)
async def test_bad_session_requests_are_422_problems_and_store_nothing(
    gateway: Gateway, change: dict[str, object], pointer: str
) -> None:
    user_id = await gateway.user("eu")
    body = {"user_id": user_id, "redirect_uri": APP_REDIRECT, **change}
    answer = await gateway.api.post("/v1/link/sessions", json=body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert [e["pointer"] for e in problem["errors"]] == [pointer]
    assert problem["request_id"] == answer.headers["x-request-id"]
    assert await _sessions(gateway) == 0


async def test_sessions_for_unknown_users_are_404_problems(gateway: Gateway) -> None:
    answer = await gateway.api.post("/v1/link/sessions", json={
        "user_id": "usr_eu_aaaaaaaaaaaaaaaaaaaaaaaaaa", "redirect_uri": APP_REDIRECT,
    })
    assert answer.status_code == 404
    assert answer.json()["type"] == "/problems/not_found"


async def test_unknown_forged_and_expired_link_tokens_get_error_pages(gateway: Gateway) -> None:
    for token in ("nope", "lnk_eu_" + "a" * 52, "lnk_zz_" + "a" * 52):
        _is_error_page(await gateway.browser.get(f"{gateway.url}/link/{token}"), 404)
    link_url = await gateway.link_url(await gateway.user("eu"))
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(update(LinkSession).values(
            expires_at=utcnow() - timedelta(seconds=1)
        ).execution_options(synchronize_session=False))

    page = await gateway.browser.get(link_url)

    _is_error_page(page, 410)
    assert "expired" in page.text


async def test_a_spent_link_token_and_a_replayed_callback_get_error_pages(
    gateway: Gateway,
) -> None:
    user_id = await gateway.user("eu")
    link_url = await gateway.link_url(user_id)
    walk = await gateway.walk(link_url)
    assert walk.landed_query["outcome"] == "success"
    callback = next(url for _, url, _ in walk.hops if "/link/callback?" in url)

    _is_error_page(await gateway.browser.get(link_url), 409)
    replay = await gateway.browser.get(callback, follow_redirects=False)

    _is_error_page(replay, 409)
    async with gateway.services.router.reader("eu") as session:
        assert (await session.execute(select(func.count(Connection.id)))).scalar_one() == 1
        link = (await session.execute(select(LinkSession))).scalar_one()
    assert link.status is LinkStatus.COMPLETED


async def test_a_forged_state_gets_an_error_page(gateway: Gateway) -> None:
    for query in ("state=forged&code=abc", "code=abc", "error=access_denied"):
        answer = await gateway.browser.get(f"{gateway.url}/link/callback?{query}")
        _is_error_page(answer, 404)


async def test_a_form_without_its_nonce_is_refused_and_spends_nothing(gateway: Gateway) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"))
    assert (await gateway.browser.get(link_url)).status_code == 200  # the browser opens it
    answer = await gateway.browser.post(link_url, data={"bank_id": "sandbox-eu"})
    _is_error_page(answer, 400)
    async with gateway.services.router.reader("eu") as session:
        link = (await session.execute(select(LinkSession))).scalar_one()
    assert link.status is LinkStatus.PENDING
    assert (await gateway.browser.get(link_url)).status_code == 200


async def test_a_form_that_does_not_parse_is_a_400_page_not_a_500(gateway: Gateway) -> None:
    # Found by the contract test (schemathesis): Starlette's 400 for a multipart body
    # without a boundary used to escape into the page's catch-all as a 500.
    link_url = await gateway.link_url(await gateway.user("eu"))
    assert (await gateway.browser.get(link_url)).status_code == 200
    answer = await gateway.browser.post(link_url, content=b"x",
                                        headers={"Content-Type": "multipart/form-data"})
    _is_error_page(answer, 400)
    assert (await gateway.browser.get(link_url)).status_code == 200  # nothing spent


async def test_no_token_or_code_reaches_the_app_redirect_logs_or_error_pages(
    gateway: Gateway, log_lines: LogLines,
) -> None:
    user_id = await gateway.user("eu")
    link_url = await gateway.link_url(user_id)
    walk = await gateway.walk(link_url)
    connection_id = walk.landed_query["connection_id"]
    callback = next(url for _, url, _ in walk.hops if "/link/callback?" in url)
    replay = await gateway.browser.get(callback, follow_redirects=False)
    assert (await gateway.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 200

    custody = gateway.services.custody["eu"]
    async with gateway.services.router.reader("eu") as session:
        credential = (await session.execute(select(Credential))).scalar_one()
        key = await custody.data_keys.load(session, credential.user_id)
    bank_secrets = [
        await custody.sealer.open_from(key, credential, "access_token_sealed"),
        await custody.sealer.open_from(key, credential, "refresh_token_sealed"),
        parse_qs(urlsplit(callback).query)["code"][0],
    ]
    link_token = link_url.rsplit("/", 1)[1]
    lines = log_lines()
    assert any(line["logger"] == "aggregator.http" for line in lines)
    everything = json.dumps(lines)
    # The test's own browser is an httpx client too: its request lines name the Link
    # page's URL, which a browser's history holds as well; the gateway's never do.
    gateway_lines = json.dumps([
        line for line in lines if not line["logger"].startswith(("httpx", "httpcore"))
    ])
    assert link_token not in gateway_lines
    for secret in bank_secrets:
        assert secret
        assert secret not in (walk.landed or "")
        assert secret not in replay.text
        assert secret not in everything

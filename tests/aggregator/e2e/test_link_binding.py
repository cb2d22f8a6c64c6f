"""The Link flow is bound to the browser that opened it (RFC 6749 §10.12, RFC 9700 §4.7).

Real gateway and sandbox bank on loopback sockets; each "browser" is its own httpx client
with its own cookie jar. A captured callback URL or link, replayed from another browser,
gets an error page and claims nothing; the browser that started finishes as usual.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette

from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.link.browser import LOOPBACK_NAME, POST_NAME, SECURE_NAME
from aggregator.link.walk import link_as_person
from aggregator.link.wiring import install
from aggregator.models import Connection, LinkSession, LinkStatus
from aggregator.settings import Settings
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


async def _session(gateway: Gateway) -> LinkSession:
    async with gateway.services.router.reader("eu") as session:
        return (await session.execute(select(LinkSession))).scalar_one()


async def _connections(gateway: Gateway) -> int:
    async with gateway.services.router.reader("eu") as session:
        return int((await session.execute(select(func.count(Connection.id)))).scalar_one())


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "another browser" in answer.text
    assert "outcome=" not in answer.headers.get("location", "")


async def test_a_captured_callback_completes_nothing_from_another_browser(
    gateway: Gateway,
) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"))
    # The person signs in at the bank; the redirect back is captured before it is sent.
    walk = await link_as_person(gateway.browser, link_url, username="alice",
                                password="alice-pass", stop_at=f"{gateway.url}/link/callback")
    callback = walk.landed
    assert callback is not None, walk.hops
    assert "code=" in callback

    async with httpx.AsyncClient(timeout=20) as attacker:
        _refused(await attacker.get(callback, follow_redirects=False))
    link = await _session(gateway)
    assert link.status is LinkStatus.AUTHORIZING
    assert link.used_at is None
    assert await _connections(gateway) == 0

    # The person's own browser, carrying the cookie, still completes the link.
    done = await gateway.browser.get(callback, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"].startswith(APP_REDIRECT)
    assert "outcome=success" in done.headers["location"]
    assert await _connections(gateway) == 1


async def test_a_link_opened_in_one_browser_cannot_be_used_in_another(gateway: Gateway) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"))
    opened = await gateway.browser.get(link_url)
    assert opened.status_code == 200
    cookie = SimpleCookie(opened.headers["set-cookie"])[LOOPBACK_NAME]
    assert cookie["httponly"]
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert (await _session(gateway)).browser_digest is not None

    async with httpx.AsyncClient(timeout=20) as other:
        _refused(await other.get(link_url))
        _refused(await other.post(link_url, data={"bank_id": "sandbox-eu"}))
        # A made-up cookie value is no better than none.
        other.cookies.set(LOOPBACK_NAME, "A" * 43)
        _refused(await other.get(link_url))
    assert (await _session(gateway)).status is LinkStatus.PENDING
    assert (await gateway.browser.get(link_url)).status_code == 200  # the owner goes on


async def test_one_browser_runs_two_links_at_once(gateway: Gateway) -> None:
    first = await gateway.link_url(await gateway.user("eu", "one"))
    second = await gateway.link_url(await gateway.user("eu", "two"))
    assert (await gateway.browser.get(first)).status_code == 200
    assert (await gateway.browser.get(second)).status_code == 200
    for url in (first, second):  # the second tab did not undo the first
        walk = await gateway.walk(url)
        assert walk.landed_query["outcome"] == "success", walk.hops


async def test_over_https_the_cookie_is_host_prefixed_secure_httponly_lax(
    settings: Settings, gateway: Gateway,
) -> None:
    services: Services = gateway.services
    install(services, public_url="https://gateway.example")
    app: Starlette = create_app(settings, services=services)
    link_url = await gateway.link_url(await gateway.user("eu"))
    path = link_url.split("/link/", 1)[1]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://gateway.example") as secure_browser:
        opened = await secure_browser.get(f"/link/{path}")
    assert opened.status_code == 200, opened.text
    cookies: SimpleCookie = SimpleCookie()
    for header in opened.headers.get_list("set-cookie"):
        cookies.load(header)
    cookie = cookies[SECURE_NAME]
    assert cookie["secure"]
    assert cookie["httponly"]
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert not cookie["domain"]  # __Host-: no Domain, Path=/
    # Its twin for banks answering by form post: the same value, sent cross-site.
    twin = cookies[POST_NAME]
    assert twin.value == cookie.value
    assert twin["secure"]
    assert twin["samesite"].lower() == "none"

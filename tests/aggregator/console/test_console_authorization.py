"""Who may do what in the console: every route is checked.

No session: every page and action answers ``303`` to the sign-in page (nothing runs).
A viewer reads every page and may verify an audit chain, but every other action is
refused with ``403`` and changes nothing. A form without the session's CSRF token, or
sent from another origin, is refused with ``403`` for any role.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from aggregator import console
from aggregator.models import AuditEvent, ErasureRequest, OutboundEvent
from aggregator.store import RegionRouter
from tests.aggregator._factories import Linked
from tests.aggregator.console.conftest import Console, ConsoleFactory

ADMIN_ACTIONS = {
    "/console/connections/{id}/sync", "/console/events/{id}/redeliver",
    "/console/erasures", "/console/erasures/{id}/retry",
    "/console/applications/{id}/disable", "/console/keys/{prefix}/revoke",
}
ANY_ROLE_ACTIONS = {"/console/audit/verify", "/console/sign-out"}
OPEN = {"/console/sign-in", "/console/static/console.css"}


def _route_table() -> list[tuple[str, str]]:
    return [(r.path, m) for r in console.routes() for m in sorted(r.methods or ())  # type: ignore[attr-defined]
            if m != "HEAD"]


def test_every_console_route_is_classified() -> None:
    """A route added later must be placed in one of the sets this module tests."""
    for path, method in _route_table():
        if method == "POST":
            assert path in ADMIN_ACTIONS | ANY_ROLE_ACTIONS | OPEN, path


def _concrete(path: str, linked: Linked, event_id: str) -> str:
    ids = {"/console/connections/{id}": linked.connection.id,
           "/console/connections/{id}/sync": linked.connection.id,
           "/console/events/{id}/redeliver": event_id,
           "/console/erasures/{id}/retry": "era_eu_" + "a" * 26,
           "/console/applications/{id}/disable": linked.connection.application_id}
    if "{prefix}" in path:
        return path.replace("{prefix}", "abcdefgh")
    return path.replace("{id}", ids[path]) if "{id}" in path else path


async def _event_id(router: RegionRouter) -> str:
    async with router.reader("eu") as session:
        found = await session.scalar(select(OutboundEvent.id))
    assert found is not None
    return str(found)


async def _audit_count(router: RegionRouter) -> int:
    async with router.reader("eu") as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


async def test_without_a_session_every_route_sends_to_sign_in(
    console_factory: ConsoleFactory, linked: Linked, region_router: RegionRouter
) -> None:
    anonymous = await console_factory()
    event_id = await _event_id(region_router)
    for path, method in _route_table():
        if path in OPEN:
            continue
        url = _concrete(path, linked, event_id)
        answer = await anonymous.http.request(method, url, data={"csrf": "x"} if
                                              method == "POST" else None)
        assert answer.status_code == 303, (method, url, answer.status_code)
        target = urlsplit(answer.headers["location"])
        assert target.path == "/console/sign-in", (method, url)
        if method == "GET":
            assert parse_qs(target.query)["next"] == [url]
    async with region_router.reader("eu") as session:
        assert await session.scalar(select(func.count()).select_from(ErasureRequest)) == 0


async def test_a_viewer_reads_every_page_but_cannot_act(
    viewer: Console, linked: Linked, region_router: RegionRouter
) -> None:
    event_id = await _event_id(region_router)
    for path, method in _route_table():
        if method == "GET" and path not in OPEN:
            answer = await viewer.http.get(_concrete(path, linked, event_id))
            assert answer.status_code == 200, path
            assert "Sync now" not in answer.text  # admins' buttons are not offered
            assert "Redeliver</button>" not in answer.text
    before = await _audit_count(region_router)
    for path in sorted(ADMIN_ACTIONS):
        answer = await viewer.post(_concrete(path, linked, event_id),
                                   user_id=linked.user.id, confirm=linked.user.id)
        assert answer.status_code == 403, path
        assert "only an admin can act" in answer.text
    assert await _audit_count(region_router) == before  # nothing happened, nothing recorded
    async with region_router.reader("eu") as session:
        assert await session.scalar(select(func.count()).select_from(ErasureRequest)) == 0
    verified = await viewer.post("/console/audit/verify", region="eu")
    assert verified.status_code == 200
    assert "is intact" in verified.text


@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
async def test_an_action_without_the_sessions_csrf_token_is_refused(
    admin: Console, linked: Linked, region_router: RegionRouter, csrf: str | None
) -> None:
    event_id = await _event_id(region_router)
    before = await _audit_count(region_router)
    for path in sorted(ADMIN_ACTIONS | ANY_ROLE_ACTIONS):
        data = {"region": "eu", "user_id": linked.user.id, "confirm": linked.user.id}
        if csrf is not None:
            data["csrf"] = csrf
        answer = await admin.http.post(_concrete(path, linked, event_id), data=data)
        assert answer.status_code == 403, path
        assert "Form expired" in answer.text
    assert await _audit_count(region_router) == before
    assert (await admin.http.get("/console")).status_code == 200  # still signed in


async def test_another_sessions_csrf_token_or_origin_is_refused(
    admin: Console, console_factory: ConsoleFactory
) -> None:
    other = await console_factory()
    assert (await other.sign_in("ada")).status_code == 303
    foreign = await other.csrf()
    answer = await admin.http.post("/console/audit/verify",
                                   data={"csrf": foreign, "region": "eu"})
    assert answer.status_code == 403
    cross = await admin.http.post(
        "/console/audit/verify", data={"csrf": await admin.csrf(), "region": "eu"},
        headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    same = await admin.http.post(
        "/console/audit/verify", data={"csrf": await admin.csrf(), "region": "eu"},
        headers={"Origin": "https://console.test"})
    assert same.status_code == 200


async def test_sign_in_refuses_a_wrong_password_and_records_it(
    console_factory: ConsoleFactory, region_router: RegionRouter, operators: dict[str, str]
) -> None:
    visitor = await console_factory()
    answer = await visitor.sign_in("ada", "not the password at all")
    assert answer.status_code == 401
    assert "do not match" in answer.text
    assert "__Host-aggregator-console=" not in answer.headers.get("set-cookie", "")
    unknown = await visitor.sign_in("nobody", "whatever-password")
    assert unknown.status_code == 401
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            failed = (await session.execute(
                select(AuditEvent.actor, AuditEvent.target_id)
                .where(AuditEvent.action == "operator.sign_in_failed")
                .order_by(AuditEvent.seq))).all()
        assert [tuple(f) for f in failed] == [("operator", operators["ada"]),
                                              ("operator", None)]


async def test_sign_in_sets_a_host_cookie_and_sign_out_ends_the_session(
    console_factory: ConsoleFactory, region_router: RegionRouter, operators: dict[str, str]
) -> None:
    browser = await console_factory()
    answer = await browser.sign_in("vic")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-aggregator-console=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert attribute.lower() in cookie.lower()
    assert "domain=" not in cookie.lower()
    token = browser.http.cookies["__Host-aggregator-console"]
    assert (await browser.http.get("/console")).status_code == 200
    assert (await browser.post("/console/sign-out")).status_code == 303
    replay = httpx.AsyncClient(transport=browser.http._transport, base_url=browser.http.base_url,
                               cookies={"__Host-aggregator-console": token})
    async with replay:
        assert (await replay.get("/console")).status_code == 303  # the token is dead
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            actions = (await session.execute(
                select(AuditEvent.action).where(AuditEvent.actor == operators["vic"])
                .order_by(AuditEvent.seq))).scalars().all()
        assert actions == ["operator.signed_in", "operator.signed_out"]


async def test_sign_in_returns_only_to_a_console_path(console_factory: ConsoleFactory,
                                                      operators: dict[str, str]) -> None:
    for target, expected in (("/console/banks", "/console/banks"),
                             ("https://evil.example/", "/console"),
                             ("//evil.example/console", "/console"),
                             ("/v1/users", "/console")):
        browser = await console_factory()
        form = await browser.http.get("/console/sign-in", params={"next": target})
        nonce = form.text.split('name="nonce" value="')[1].split('"')[0]
        sent = form.text.split('name="next" value="')[1].split('"')[0]
        answer = await browser.http.post("/console/sign-in", data={
            "name": "ada", "password": "correct horse battery staple", "nonce": nonce,
            "next": sent})
        assert answer.headers["location"] == expected, target


async def test_the_sign_in_page_sends_a_signed_in_operator_on(admin: Console) -> None:
    answer = await admin.http.get("/console/sign-in", params={"next": "/console/keys"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/keys"

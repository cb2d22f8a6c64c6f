""""Cancel and return to the app": the outcome, the closed session, the audit, the event."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from aggregator.link.walk import forms_of
from aggregator.models import LinkSession, LinkStatus
from aggregator.models.audit import AuditEvent
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_cancel_returns_to_the_app_and_closes_the_session(gateway: Gateway) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"), locale="de")
    page = await gateway.browser.get(link_url)
    assert page.status_code == 200
    assert '<html lang="de">' in page.text
    [cancel] = [f for f in forms_of(page.text) if f.action.endswith("/cancel")]
    assert "Abbrechen und zurück zu Budgetly" in page.text

    # A forged form (no nonce) is refused and leaves the session usable.
    forged = await gateway.browser.post(cancel.action, data={"form_nonce": "x"})
    assert forged.status_code == 400
    answer = await gateway.browser.post(cancel.action, data=cancel.fields)
    assert answer.status_code == 303
    landed = urlsplit(answer.headers["location"])
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == APP_REDIRECT
    assert parse_qs(landed.query) == {"outcome": ["cancelled"]}

    again = await gateway.browser.get(link_url)  # the token opens nothing any more
    assert again.status_code == 409
    twice = await gateway.browser.post(cancel.action, data=cancel.fields)
    assert twice.status_code == 409
    choose = await gateway.browser.post(link_url, data={**cancel.fields,
                                                        "bank_id": "sandbox-eu"})
    assert choose.status_code == 409

    async with gateway.services.router.reader("eu") as session:
        link = (await session.execute(select(LinkSession))).scalars().one()
        actions = (await session.execute(
            select(AuditEvent.action).where(AuditEvent.target_id == link.id)
            .order_by(AuditEvent.seq))).scalars().all()
    assert link.status is LinkStatus.FAILED
    assert link.locale == "de"
    assert actions == ["link_session.created", "link_session.cancelled"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cancel_needs_the_browser_the_link_is_bound_to(gateway: Gateway) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"))
    page = await gateway.browser.get(link_url)
    [cancel] = [f for f in forms_of(page.text) if f.action.endswith("/cancel")]
    async with httpx.AsyncClient(timeout=10) as stranger:
        refused = await stranger.post(cancel.action, data=cancel.fields)
    assert refused.status_code == 403
    assert (await gateway.browser.get(link_url)).status_code == 200  # still usable


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_unsupported_locale_is_refused_naming_the_field(gateway: Gateway) -> None:
    answer = await gateway.api.post("/v1/link/sessions", json={
        "user_id": await gateway.user("eu"), "redirect_uri": APP_REDIRECT, "locale": "xx"})
    assert answer.status_code == 422
    assert "/locale" in answer.text

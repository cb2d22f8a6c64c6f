"""A person who changes their mind on the Link page goes back to the app: ``cancelled``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from aggregator.link.walk import forms_of
from aggregator.models import AuditEvent, Connection, LinkSession, LinkStatus, OutboundEvent
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


async def test_cancel_returns_to_the_app_with_outcome_cancelled(gateway: Gateway) -> None:
    user_id = await gateway.user("eu")
    link_url = await gateway.link_url(user_id)
    page = await gateway.browser.get(link_url)
    assert "Cancel and return to Budgetly" in page.text
    [form] = forms_of(page.text)
    answer = await gateway.browser.post(link_url, data={**form.fields, "cancel": "1"})
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == APP_REDIRECT
    assert parse_qs(target.query) == {"outcome": ["cancelled"]}
    async with gateway.services.router.reader("eu") as session:
        link = (await session.execute(select(LinkSession))).scalar_one()
        assert (await session.execute(select(func.count(Connection.id)))).scalar_one() == 0
        actions = (await session.execute(
            select(AuditEvent.action).where(AuditEvent.target_id == link.id))).scalars().all()
        events = (await session.execute(select(OutboundEvent))).scalars().all()
    assert link.status is LinkStatus.FAILED
    assert "link_session.cancelled" in actions
    # The app's backend hears it too, as a user's choice rather than a failure.
    assert [(e.type, e.data) for e in events] == [
        ("link.cancelled", {"link_session_id": link.id, "user_id": user_id})]
    assert events[0].application_id == gateway.app_id
    again = await gateway.browser.get(link_url)  # the link is spent
    assert again.status_code == 409


async def test_cancel_needs_the_pages_own_form(gateway: Gateway) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"))
    elsewhere = await gateway.browser.post(link_url, data={"form_nonce": "x", "cancel": "1"})
    assert elsewhere.status_code == 403  # not the browser the link is bound to
    assert (await gateway.browser.get(link_url)).status_code == 200  # binds this browser
    answer = await gateway.browser.post(link_url, data={"form_nonce": "forged", "cancel": "1"})
    assert answer.status_code == 400
    async with gateway.services.router.reader("eu") as session:
        link = (await session.execute(select(LinkSession))).scalar_one()
        events = (await session.execute(select(OutboundEvent))).scalars().all()
    assert link.status is LinkStatus.PENDING
    assert events == []  # a refused cancel tells the app nothing

"""An operator works the console in headless Chromium with the keyboard only.

Debian's Chromium driven by Playwright with the flags of the Link browser test. The
operator signs in, finds a connection linked through the real Link flow, syncs it at the
sandbox bank, redelivers its webhook event and verifies the audit chain, pressing keys
on focused controls (Tab order, Enter, Space) rather than clicking. axe-core (pinned in
``axe/package.json``, installed with ``npm ci`` on first use and run from disk, so
nothing is fetched) must report no violation on any console page. Screenshots are kept
under ``test-artifacts/console-browser/``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from aggregator.bankhealth import CallRecorder
from aggregator.bankhealth.store import publish_breakers
from aggregator.models import AuditEvent, OperatorRole
from aggregator.models.base import utcnow
from aggregator.operators import create_operator
from aggregator.store import RegionRouter
from tests.aggregator.e2e.conftest import ARTIFACTS as ALL_ARTIFACTS
from tests.aggregator.e2e.conftest import Chromium, Gateway
from tests.aggregator.e2e.conftest import assert_accessible as check_accessible

ARTIFACTS = ALL_ARTIFACTS / "console-browser"
PASSWORD = "correct horse battery staple"

pytestmark = pytest.mark.browser


async def assert_accessible(page: Any, name: str) -> None:
    await check_accessible(page, name, ARTIFACTS)


async def press(page: Any, role: str, name: str, key: str = "Enter") -> None:
    """Focus a control the way Tab would reach it, then press a key on it."""
    control = page.get_by_role(role, name=name, exact=True)
    await control.focus()
    assert await control.evaluate("e => e === document.activeElement")
    await page.keyboard.press(key)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_an_operator_syncs_redelivers_and_verifies_with_the_keyboard(
    gateway: Gateway, region_router: RegionRouter, chromium: Chromium
) -> None:
    operator_id = await create_operator(region_router, "ada", OperatorRole.ADMIN, PASSWORD)
    # Bank health for the Banks page (its table and both charts go through axe too).
    recorder = CallRecorder(region_router)
    for outcome in ("ok", "ok", "unavailable", "invalid_grant", "lease_lost"):
        recorder.call("eu", "sandbox-eu", "refresh", outcome, 0.3)
    recorder.call("eu", "sandbox-eu", "sync", "complete", 1.2)
    await recorder.flush()
    await publish_breakers(region_router, "eu", "w:1", {"sandbox-eu": ("open", utcnow())})
    _, connection_id = await gateway.link("eu")
    # Secure cookies are kept for http://localhost (a potentially trustworthy origin).
    base = gateway.url.replace("127.0.0.1", "localhost")

    context = await chromium()  # under the console's real Content-Security-Policy
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(f"{base}/console/connections")
    assert "/console/sign-in" in page.url
    await assert_accessible(page, "1-sign-in")
    # The name field has focus on arrival; Tab moves to the password.
    assert await page.evaluate("document.activeElement.id") == "name"
    await page.keyboard.type("ada")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Connections").wait_for()
    assert page.url.endswith("/console/connections")  # back where it started

    await assert_accessible(page, "2-connections")
    await page.get_by_label("Region").select_option("eu")
    await press(page, "button", "Filter")
    await page.get_by_role("link", name=connection_id).wait_for()
    await press(page, "link", connection_id)
    await page.get_by_role("heading", name=f"Connection {connection_id}").wait_for()
    await assert_accessible(page, "3-connection")

    await press(page, "button", "Sync now")
    status = page.get_by_role("status")
    await status.wait_for()
    assert await status.inner_text() == "The sync ran."
    await assert_accessible(page, "4-synced")

    redeliver = page.get_by_role("button", name="Redeliver connection.created event",
                                 exact=False)
    await redeliver.focus()
    await page.keyboard.press("Space")
    await page.get_by_text("The event is due for delivery again").wait_for()

    for label, shot in (("Overview", "5-overview"), ("Applications", "6-applications"),
                        ("Banks", "7-banks"), ("Consent expiries", "8-expiries"),
                        ("Erasure requests", "9-erasures"), ("Key custody", "10-keys"),
                        ("Audit trail", "11-audit")):
        await press(page, "link", label)
        await page.get_by_role("heading", name=label, exact=True).wait_for()
        await assert_accessible(page, shot)

    await press(page, "button", "Verify the eu chain")
    await page.get_by_role("status").wait_for()
    assert "The audit chain of region eu is intact" in await page.get_by_role(
        "status").inner_text()
    await assert_accessible(page, "12-verified")

    async with region_router.reader("eu") as session:
        done = (await session.execute(
            select(AuditEvent.action, AuditEvent.target_id)
            .where(AuditEvent.actor == operator_id).order_by(AuditEvent.seq)
        )).all()
    actions = [a for a, _ in done]
    assert actions[0] == "operator.signed_in"
    assert ("operator.sync_requested", connection_id) in done
    assert ("connection.synced", connection_id) in done  # the sync job, as the operator
    assert "event.redelivered" in actions
    assert actions[-1] == "audit.verified"

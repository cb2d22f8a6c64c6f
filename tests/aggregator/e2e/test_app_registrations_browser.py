"""In headless Chromium, the bank's consent page names the application's brand.

The sandbox profiles get ``[registration] per_application = true``, so the first link
registers the application's own client with its brand name as ``client_name``
(aggregator/registrations.py). Chromium through the ``chromium`` fixture of conftest.py;
the consent page is kept as ``test-artifacts/link-browser/dcr-bank-consent.png``.
"""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.applications import update_application
from tests.aggregator.e2e.conftest import APP_REDIRECT, Chromium, Gateway
from tests.aggregator.e2e.test_link_browser import ARTIFACTS

pytestmark = pytest.mark.browser

BRAND = "Budgetly <Pro>"


@pytest.fixture
def profile_overrides() -> dict[str, Any]:
    return {"registration": {"per_application": True}}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_bank_consent_page_in_chromium_names_the_brand(
    gateway: Gateway, chromium: Chromium
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await update_application(gateway.services.router, gateway.app_id, brand_name=BRAND)
    link_url = await gateway.link_url(await gateway.user("eu"))

    async def the_app(route: Any) -> None:
        await route.fulfill(
            status=200,
            content_type="text/html",
            body='<!doctype html><html lang="en"><title>App</title><h1>Connected</h1></html>',
        )

    context = await chromium(width=800)
    await context.route(APP_REDIRECT + "*", the_app)
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(link_url)
    await page.get_by_role("radio", name="Sandbox Bank (EU)").check()
    await page.get_by_role("button", name="Continue to your bank").click()
    signing_in = await page.locator("main p").first.inner_text()
    assert signing_in == f"Sign in to let {BRAND} see your accounts."
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("alice-pass")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Allow").wait_for()
    asks = page.locator("main p", has_text="asks to:")
    assert await asks.inner_text() == f"{BRAND} asks to:"  # shown as text, not markup
    await page.screenshot(path=str(ARTIFACTS / "dcr-bank-consent.png"), full_page=True)
    await page.get_by_role("button", name="Allow").click()
    await page.get_by_role("heading", name="Connected").wait_for()

"""A person in headless Chromium links a bank through the hosted Link page.

Debian's Chromium (``/usr/bin/chromium``) driven by Playwright for Python, with the flags
docs/architecture.md ("Performance notes") lists and a fresh profile (the ``chromium``
fixture of conftest.py). Each page is kept as a
screenshot under ``test-artifacts/link-browser/`` (git-ignored) for people to look at.
The app's redirect URI is answered inside the browser: nothing listens there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aggregator.ids import parse_id
from tests.aggregator.e2e.conftest import APP_REDIRECT, Chromium, Gateway

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "link-browser"

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_person_links_a_bank_in_chromium(gateway: Gateway, chromium: Chromium) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    link_url = await gateway.link_url(await gateway.user("eu"))
    landed: list[str] = []

    async def the_app(route: Any) -> None:
        landed.append(route.request.url)
        await route.fulfill(
            status=200, content_type="text/html",
            body='<!doctype html><html lang="en"><title>Budgetly</title>'
                 "<h1>Your bank is connected</h1></html>",
        )

    context = await chromium(width=800)
    await context.route(APP_REDIRECT + "*", the_app)
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(link_url)
    assert await page.locator("h1").inner_text() == "Connect your bank"
    # Keyboard only, as a person without a mouse would: focus the bank, choose.
    radio = page.get_by_role("radio", name="Sandbox Bank (EU)")
    await radio.focus()
    await page.keyboard.press("Space")
    assert await radio.is_checked()
    await page.screenshot(path=str(ARTIFACTS / "1-link-page.png"), full_page=True)
    await page.get_by_role("button", name="Continue to your bank").click()

    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("alice-pass")
    await page.screenshot(path=str(ARTIFACTS / "2-bank-sign-in.png"), full_page=True)
    await page.get_by_role("button", name="Sign in").click()

    await page.get_by_role("button", name="Allow").wait_for()
    await page.screenshot(path=str(ARTIFACTS / "3-bank-consent.png"), full_page=True)
    await page.get_by_role("button", name="Allow").click()

    await page.get_by_role("heading", name="Your bank is connected").wait_for()
    await page.screenshot(path=str(ARTIFACTS / "4-back-at-the-app.png"))
    await page.goto(link_url)  # the spent link now explains itself
    await page.screenshot(path=str(ARTIFACTS / "5-link-already-used.png"))
    assert await page.locator("h1").inner_text() == "This link was already used"

    assert len(landed) == 1
    query = dict(p.split("=", 1) for p in landed[0].split("?", 1)[1].split("&"))
    assert query["outcome"] == "success"
    assert parse_id(query["connection_id"]) == ("con", "eu")
    connection = (await gateway.api.get(f"/v1/connections/{query['connection_id']}")).json()
    assert connection["status"] == "active"

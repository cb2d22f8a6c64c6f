"""The Link page in headless Chromium: branded, in two languages, accessible, cancellable.

Complements ``test_link_browser_locales.py`` (languages from ``Accept-Language``): here
the app's branding under the page's real CSP, and the session's ``locale`` winning over
the browser's.

The ``chromium`` fixture of ``conftest.py`` (Debian's Chromium driven by Playwright). The
pages keep their real Content-Security-Policy here (no ``bypass_csp``): the app's accent
(an inline style allowed by its hash) and its ``data:`` logo must survive it. axe-core,
pinned in ``axe/package.json`` and installed with ``npm ci`` on first use, is run through
the DevTools protocol (not a page script, which the CSP would block) on every page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from aggregator.applications import update_application
from aggregator.branding import data_url
from tests.aggregator.e2e.conftest import APP_REDIRECT, Chromium, Gateway
from tests.aggregator.e2e.conftest import ARTIFACTS as ALL_ARTIFACTS
from tests.aggregator.e2e.conftest import assert_accessible as check_accessible
from tests.aggregator.link.test_page_i18n_brand import png

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ALL_ARTIFACTS / "link-page"
ACCENT = "#7a1fa2"

pytestmark = pytest.mark.browser


async def assert_accessible(page: Any, name: str) -> None:
    await check_accessible(page, name, ARTIFACTS)


async def brand(gateway: Gateway) -> None:
    await update_application(gateway.services.router, gateway.app_id,
                             brand_name="Budgetly", brand_accent=ACCENT,
                             brand_logo=data_url(png(32, 32)))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_branded_link_in_french_from_accept_language(
        gateway: Gateway, chromium: Chromium) -> None:
    await brand(gateway)
    link_url = await gateway.link_url(await gateway.user("eu"))
    landed: list[str] = []
    context = await chromium(locale="fr-FR", width=800)

    async def the_app(route: Any) -> None:
        landed.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html",
                            body='<!doctype html><html lang="fr"><title>Budgetly</title>'
                                 "<h1>Budgetly</h1></html>")

    await context.route(APP_REDIRECT + "*", the_app)
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(link_url)
    assert await page.get_attribute("html", "lang") == "fr"
    assert await page.locator("h1").inner_text() == "Connectez votre banque"
    assert "Budgetly" in await page.locator(".brand").inner_text()
    # The CSP let the hashed accent style and the data: logo through.
    button = page.get_by_role("button", name="Continuer vers votre banque")
    assert await button.evaluate("b => getComputedStyle(b).backgroundColor") == \
        "rgb(122, 31, 162)"
    assert await page.locator(".app-logo").evaluate("i => i.naturalWidth") == 32
    await assert_accessible(page, "fr-picker")
    radio = page.get_by_role("radio", name="Sandbox Bank (EU)")
    await radio.focus()
    await page.keyboard.press("Space")
    await button.focus()
    await page.keyboard.press("Enter")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("alice-pass")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Allow").click()
    await page.get_by_role("heading", name="Budgetly").wait_for()
    await page.goto(link_url)
    assert await page.locator("h1").inner_text() == "Ce lien a déjà été utilisé"
    await assert_accessible(page, "fr-already-used")
    assert parse_qs(urlsplit(landed[0]).query)["outcome"] == ["success"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_link_in_german_is_cancelled_back_to_the_app(
        gateway: Gateway, chromium: Chromium) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"), locale="de")
    landed: list[str] = []
    context = await chromium(locale="en-GB", width=800)  # the session's locale wins

    async def the_app(route: Any) -> None:
        landed.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html",
                            body='<!doctype html><html lang="de"><title>App</title>'
                                 "<h1>Budgetly</h1></html>")

    await context.route(APP_REDIRECT + "*", the_app)
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(link_url)
    assert await page.get_attribute("html", "lang") == "de"
    assert await page.locator("h1").inner_text() == "Verbinden Sie Ihre Bank"
    await assert_accessible(page, "de-picker")
    cancel = page.get_by_role("button", name="Abbrechen und zurück zu Budgetly")
    await cancel.focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Budgetly").wait_for()
    assert parse_qs(urlsplit(landed[0]).query) == {"outcome": ["cancelled"]}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_branded_page_for_the_readme(
        gateway: Gateway, chromium: Chromium) -> None:
    """English, branded: kept as docs/link-branded.png when LINK_SCREENSHOT=1."""
    await brand(gateway)
    link_url = await gateway.link_url(await gateway.user("eu"))
    context = await chromium(locale="en-US", width=800)
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(link_url)
    assert await page.locator("h1").inner_text() == "Connect your bank"
    await page.get_by_role("radio", name="Sandbox Bank (EU)").focus()
    await page.keyboard.press("Space")
    await assert_accessible(page, "en-branded-picker")
    if os.environ.get("LINK_SCREENSHOT") == "1":
        await page.screenshot(path=str(ROOT / "docs" / "link-branded.png"),
                              full_page=True)

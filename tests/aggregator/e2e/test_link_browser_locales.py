"""The Link page in the browser's language (German, French), accessible in each.

Chromium is started with a locale, so it sends that ``Accept-Language`` as a person's
browser would; axe-core (``assert_accessible`` in conftest.py) reports no violation on the page,
and the person links with the keyboard in that language.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.aggregator.e2e.conftest import APP_REDIRECT, Chromium, Gateway, assert_accessible
from tests.aggregator.e2e.test_console_browser import ARTIFACTS

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(("locale", "heading", "button"), [
    ("de-DE", "Verbinden Sie Ihre Bank", "Weiter zu Ihrer Bank"),
    ("fr-FR", "Connectez votre banque", "Continuer vers votre banque"),
])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_link_page_speaks_the_browsers_language(
    gateway: Gateway, chromium: Chromium, locale: str, heading: str, button: str
) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"))

    async def the_app(route: Any) -> None:
        await route.fulfill(status=200, content_type="text/html",
                            body='<!doctype html><html lang="en"><title>App</title></html>')

    context = await chromium(locale=locale, width=420, bypass_csp=True)
    await context.route(APP_REDIRECT + "*", the_app)
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(link_url)
    assert await page.locator("h1").inner_text() == heading
    assert await page.get_attribute("html", "lang") == locale[:2]
    await assert_accessible(page, f"link-{locale}", ARTIFACTS)
    radio = page.get_by_role("radio", name="Sandbox Bank (EU)")
    await radio.focus()
    await page.keyboard.press("Space")
    submit = page.get_by_role("button", name=button)
    await submit.focus()
    await page.keyboard.press("Enter")
    await page.get_by_label("Username").wait_for()  # at the bank


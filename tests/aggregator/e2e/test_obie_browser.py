"""A person in headless Chromium links a UK Open Banking bank through the hybrid flow.

The sandbox's OBIE mode with ``response_type = "code id_token"``: the bank's consent page
lets the person leave an account out, and its answer comes back as a form the browser
posts to the gateway by itself (OIDC Form Post Response Mode), whose ID token the gateway
checks as a detached signature. Chromium through the ``chromium`` fixture of conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.custody import RegionCustody
from aggregator.sandbox import SandboxConfig
from aggregator.sandbox.obie import ObieSandboxBank, dev_obie_client
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from tests.aggregator.e2e.conftest import Chromium
from tests.aggregator.e2e.test_obie_flow import APP_REDIRECT, BANK, CALLBACK, running

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_person_links_one_of_two_accounts_through_the_hybrid_flow(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    chromium: Chromium,
) -> None:
    bank = ObieSandboxBank(SandboxConfig(clients=[dev_obie_client(settings.data_dir, CALLBACK)]))
    hybrid = {"obie": {"response_type": "code id_token"}}
    landed: list[str] = []

    async def the_app(route: Any) -> None:
        landed.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html",
                            body="<!doctype html><title>Budgetly</title><h1>Connected</h1>")

    async with running(settings, region_router, custody, bank, **hybrid) as obie:
        user = (await obie.api.post("/v1/users", json={"external_id": "p1", "region": "eu"}))
        session = await obie.api.post("/v1/link/sessions", json={
            "user_id": user.json()["id"], "redirect_uri": APP_REDIRECT, "bank_id": BANK})
        context = await chromium(height=720)
        await context.route(APP_REDIRECT + "*", the_app)
        page = context.pages[0] if context.pages else await context.new_page()
        await page.goto(session.json()["link_url"])
        await page.get_by_role("radio", name="Sandbox Bank (UK Open Banking)").check()
        await page.get_by_role("button", name="Continue to your bank").click()
        await page.get_by_label("Username").fill("alice")
        await page.get_by_label("Password").fill("alice-pass")
        await page.get_by_role("button", name="Sign in").click()
        savings = page.get_by_role("checkbox", name="Rainy day", exact=False)
        await savings.uncheck()
        await page.get_by_role("button", name="Allow").click()
        await page.get_by_role("heading", name="Connected").wait_for()

        [url] = landed
        assert "outcome=success" in url
        connection_id = url.split("connection_id=")[1].split("&")[0]
        accounts = (await obie.api.get(f"/v1/connections/{connection_id}/accounts")).json()
        assert [a["name"] for a in accounts["data"]] == ["Everyday"]
        connection = await obie.connection(connection_id)
        assert obie.consent_status(connection.consent_id) == "Authorised"

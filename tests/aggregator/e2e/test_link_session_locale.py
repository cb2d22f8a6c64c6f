"""The link session's ``locale``: stored, winning over ``Accept-Language``, validated."""

from __future__ import annotations

import pytest

from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_the_sessions_locale_wins_over_the_browsers(gateway: Gateway) -> None:
    link_url = await gateway.link_url(await gateway.user("eu"), locale="es-MX")
    page = await gateway.browser.get(link_url, headers={"Accept-Language": "de,en;q=0.5"})
    assert page.status_code == 200
    assert '<html lang="es">' in page.text
    assert page.headers["content-language"] == "es"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("locale", ["xx", "pt-BR", "de_DE", ""])
async def test_a_locale_the_page_does_not_speak_is_refused_naming_the_field(
        gateway: Gateway, locale: str) -> None:
    answer = await gateway.api.post("/v1/link/sessions", json={
        "user_id": await gateway.user("eu"), "redirect_uri": APP_REDIRECT, "locale": locale})
    assert answer.status_code == 422
    assert "/locale" in answer.text

"""Guessing an operator's password is slowed per client address (the ``link`` class)."""

from __future__ import annotations

from dataclasses import replace

import httpx

from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.ratelimit.policy import RouteClass, classify
from aggregator.settings import RateLimit, Settings
from aggregator.settings.rate_limits import DEFAULT_RATE_LIMITS
from tests.aggregator.console.conftest import _NONCE, ORIGIN, PASSWORDS


def test_only_the_password_form_is_charged() -> None:
    assert classify("POST", "/console/sign-in") is RouteClass.LINK
    assert classify("GET", "/console/sign-in") is None
    assert classify("GET", "/console/connections") is None


async def test_repeated_sign_in_attempts_from_one_address_get_a_429(
    settings: Settings, services: Services, operators: dict[str, str]
) -> None:
    limits = replace(settings.rate_limits,
                     classes={**DEFAULT_RATE_LIMITS, "link": RateLimit(2, 0.01)})
    app = create_app(replace(settings, rate_limits=limits), services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as browser:
        statuses = []
        for _ in range(3):
            form = await browser.get("/console/sign-in")
            nonce = _NONCE.search(form.text)
            assert nonce is not None
            answer = await browser.post("/console/sign-in", data={
                "name": "ada", "password": "guess-number-one", "nonce": nonce.group(1)})
            statuses.append(answer.status_code)
        assert statuses == [401, 401, 429]
        assert answer.headers["retry-after"]
        # The right password is refused too until the bucket refills: no oracle.
        form = await browser.get("/console/sign-in")
        nonce = _NONCE.search(form.text)
        assert nonce is not None
        right = await browser.post("/console/sign-in", data={
            "name": "ada", "password": PASSWORDS["ada"], "nonce": nonce.group(1)})
        assert right.status_code == 429

"""A bank refusing our configuration is shown as such, not as an outage: PAR required by
the bank while the profile says ``use_par = false`` (a sandbox switch), and a client the
bank does not know (``invalid_client`` at the token endpoint)."""

from __future__ import annotations

import html
from typing import Any

import pytest
from sqlalchemy import select

from aggregator.models import LinkSession, LinkStatus
from aggregator.sandbox import SandboxConfig
from tests.aggregator._logs import LogLines
from tests.aggregator.e2e.conftest import Gateway, gateway_client


@pytest.fixture
def bank_config() -> SandboxConfig:
    return SandboxConfig(clients=[gateway_client()], require_par=True)


@pytest.fixture
def profile_overrides() -> dict[str, Any]:
    return {"use_par": False}


async def _link_failures(gateway: Gateway) -> list[dict[str, Any]]:
    answer = await gateway.api.get("/v1/events")
    assert answer.status_code == 200, answer.text
    return [e["data"] for e in answer.json()["data"] if e["type"] == "link.failed"]


async def test_par_required_with_use_par_false_is_a_configuration_error_not_an_outage(
    gateway: Gateway, log_lines: LogLines,
) -> None:
    user_id = await gateway.user("eu")
    walk = await gateway.walk(await gateway.link_url(user_id))

    page = walk.final
    assert page is not None
    assert page.status_code == 502
    assert "can't be linked right now" in html.unescape(page.text)
    assert "not reachable" not in page.text
    (failed,) = await _link_failures(gateway)
    assert failed["reason"] == "par_required"
    assert failed["bank_id"] == "sandbox-eu"
    assert failed["user_id"] == user_id
    async with gateway.services.router.reader("eu") as session:
        (status,) = (await session.execute(select(LinkSession.status))).scalars().all()
    assert status is LinkStatus.FAILED
    operator = [str(line) for line in log_lines() if "refuses our configuration" in str(line)]
    assert operator
    assert "sandbox-eu" in operator[0]
    assert "use_par" in operator[0]
    metrics = (await gateway.api.get("/metrics")).text
    assert ('aggregator_bank_misconfigured_total{bank="sandbox-eu",reason="par_required",'
            'setting="use_par"} 1.0') in metrics


async def test_the_misconfigured_bank_page_speaks_the_browsers_language(
    gateway: Gateway,
) -> None:
    gateway.browser.headers["Accept-Language"] = "de-DE,de;q=0.9"
    walk = await gateway.walk(await gateway.link_url(await gateway.user("eu")))

    page = walk.final
    assert page is not None
    assert page.status_code == 502
    assert page.headers["content-language"] == "de"
    text = html.unescape(page.text)
    assert "<h1>Diese Bank kann gerade nicht verbunden werden</h1>" in text
    assert "Mit Ihrem Konto ist alles in Ordnung." in text
    assert "wählen Sie eine andere Bank" in text
    assert "can't be linked" not in text

"""A client secret the bank does not accept: ``invalid_client`` (here at the pushed
authorization request, RFC 9126 §2.3) is a configuration error: the user's page says the
bank can't be linked, the app gets ``link.failed`` reason ``invalid_client``, the
operator a metric naming the setting; not an outage and not the user's refusal."""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.sandbox import DEV_CLIENT_ID, SandboxClient, SandboxConfig
from tests.aggregator.e2e.conftest import Gateway


@pytest.fixture
def profile_overrides() -> dict[str, Any]:
    # The gateway's own (static) client is the misconfigured one here, at both banks.
    return {"registration": {"per_application": False}}


@pytest.fixture
def bank_config() -> SandboxConfig:
    rotated = SandboxClient(client_id=DEV_CLIENT_ID, client_secret="rotated-at-the-bank",
                            redirect_uris=("http://127.0.0.1/link/callback",))
    return SandboxConfig(clients=[rotated])


async def test_invalid_client_at_the_token_endpoint_tells_app_and_operator(
    gateway: Gateway,
) -> None:
    user_id = await gateway.user("eu")
    walk = await gateway.walk(await gateway.link_url(user_id))

    assert walk.final is not None
    assert walk.final.status_code == 502
    assert "not reachable" not in walk.final.text
    events = (await gateway.api.get("/v1/events")).json()["data"]
    failed = [e["data"] for e in events if e["type"] == "link.failed"]
    assert [(f["reason"], f["bank_id"]) for f in failed] == [("invalid_client", "sandbox-eu")]
    metrics = (await gateway.api.get("/metrics")).text
    assert ('aggregator_bank_misconfigured_total{bank="sandbox-eu",reason="invalid_client",'
            'setting="client_auth_method"} 1.0') in metrics

"""No credential or personal data reaches a response or a log line, at any log level."""

from __future__ import annotations

import logging

import httpx

from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET, SandboxBank
from aggregator.sandbox.testing import FlowDriver, Served
from tests.aggregator._factories import LinkFactory, TransactionFactory
from tests.aggregator._logs import LogLines
from tests.aggregator.http.conftest import BANK_ISSUER


async def test_no_token_or_pii_appears_in_responses_or_logs(
    api: httpx.AsyncClient, api_key: str, make_linked: LinkFactory,
    add_transaction: TransactionFactory, bank: SandboxBank, bank_http: httpx.AsyncClient,
    log_lines: LogLines,
) -> None:
    driver = FlowDriver(Served(bank, BANK_ISSUER, bank_http), DEV_CLIENT_ID,
                        DEV_CLIENT_SECRET, "http://127.0.0.1/callback")
    tokens = await driver.tokens(scope="accounts offline_access")
    linked = await make_linked("eu", external_id="erika@example.test",
                               access_token=tokens["access_token"],
                               refresh_token=tokens["refresh_token"])
    await add_transaction(linked, description="Rent flat 4b", counterparty="Jane Landlord")
    logging.getLogger().setLevel(logging.DEBUG)  # the fixture restores the level

    responses = [
        await api.post("/v1/users", json={"external_id": "max@example.test", "region": "us"}),
        await api.get(f"/v1/users/{linked.user.id}"),
        await api.get(f"/v1/connections/{linked.connection.id}/accounts"),
        await api.get(f"/v1/accounts/{linked.account.id}/transactions"),
        await api.get(f"/v1/connections/{linked.connection.id}/transactions/sync"),
        await api.delete(f"/v1/connections/{linked.connection.id}"),
        await api.get("/v1/users/x", headers={"Authorization": f"Bearer {api_key}x"}),
        await api.get("/v1/users/x", headers={"Authorization": f"Bearer {tokens['access_token']}"}),
    ]
    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200, 200, 401, 401]
    key_secret = api_key.split("_", 2)[2]
    credentials = [key_secret, tokens["access_token"], tokens["refresh_token"]]
    personal = ["erika@example.test", "max@example.test", "Rent flat 4b", "Jane Landlord",
                "DE89370400440532013000"]
    for response in responses:
        exposed = response.text + str(response.headers)
        for secret in credentials:
            assert secret not in exposed, response.request.url
    gateway_lines = [line for line in log_lines()
                     if not line["logger"].startswith("aggregator.sandbox")]
    assert any(line["logger"] == "aggregator.http" for line in gateway_lines)
    assert any(line["logger"].startswith("httpx") for line in gateway_lines)  # bank calls
    text = "\n".join(map(str, gateway_lines))
    for value in credentials + personal:
        assert value not in text

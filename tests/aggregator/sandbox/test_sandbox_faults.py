from __future__ import annotations

import time

import httpx
import pytest

from aggregator.errors import ConfigError
from aggregator.sandbox import Faults, SandboxBank
from aggregator.sandbox.testing import FlowDriver, Served, query_of


async def test_rate_limit_answers_429_with_retry_after(driver: FlowDriver, served: Served) -> None:
    tokens = await driver.tokens()
    served.bank.faults = Faults(rate_limit_retry_after=7)

    api = await driver.accounts(tokens["access_token"])
    token = await driver.refresh(tokens["refresh_token"])

    assert api.status_code == token.status_code == 429
    assert api.headers["retry-after"] == token.headers["retry-after"] == "7"
    assert api.headers["x-fapi-interaction-id"]
    # The throttled refresh never reached the grant: the refresh token is still good.
    served.bank.faults = Faults()
    assert (await driver.refresh(tokens["refresh_token"])).status_code == 200


async def test_error_rate_is_a_seeded_share_of_503s(driver: FlowDriver, served: Served) -> None:
    token = (await driver.tokens())["access_token"]

    async def statuses() -> list[int]:
        served.bank.faults = Faults(error_rate=0.5, seed=42)
        return [(await driver.accounts(token)).status_code for _ in range(40)]

    first, second = await statuses(), await statuses()

    assert first == second  # same seed, same sequence
    assert set(first) == {200, 503}
    assert 8 <= first.count(503) <= 32


@pytest.mark.parametrize("rate", [0.0, 1.0])
async def test_error_rate_bounds_are_exact(driver: FlowDriver, served: Served, rate: float) -> None:
    token = (await driver.tokens())["access_token"]
    served.bank.faults = Faults(error_rate=rate)

    statuses = {(await driver.accounts(token)).status_code for _ in range(10)}

    assert statuses == ({503} if rate else {200})


async def test_forced_invalid_grant_fails_every_token_request(
    driver: FlowDriver, served: Served
) -> None:
    tokens = await driver.tokens()
    served.bank.faults = Faults(force_invalid_grant=True)

    response = await driver.refresh(tokens["refresh_token"])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert (await driver.accounts(tokens["access_token"])).status_code == 200


async def test_deny_consent_redirects_at_once_with_access_denied(
    driver: FlowDriver, served: Served
) -> None:
    served.bank.faults = Faults(deny_consent=True)
    params, _ = driver.authorization_params(state="auto")

    response = await served.http.get("/authorize", params=params)

    assert response.status_code == 302
    query = query_of(response.headers["location"])
    assert query["error"] == "access_denied"
    assert query["state"] == "auto"
    assert query["iss"] == served.base_url


async def test_latency_delays_answers(driver: FlowDriver, served: Served) -> None:
    token = (await driver.tokens())["access_token"]
    served.bank.faults = Faults(latency=0.2)

    started = time.perf_counter()
    response = await driver.accounts(token)

    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.2


async def test_admin_endpoint_sets_and_resets_faults(driver: FlowDriver, served: Served) -> None:
    response = await served.http.post("/_sandbox/faults", json={"rate_limit_retry_after": 3})

    assert response.status_code == 200
    assert served.bank.faults == Faults(rate_limit_retry_after=3)
    token = await served.http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=driver.auth,
    )
    assert token.status_code == 429

    await served.http.post("/_sandbox/faults", json={})

    assert served.bank.faults == Faults()
    assert (await served.http.get("/_sandbox/faults")).json()["rate_limit_retry_after"] is None


@pytest.mark.parametrize(
    "body", [{"error_rate": 2}, {"latency": "slow"}, {"nonsense": True}, {"deny_consent": 1}, []]
)
async def test_admin_endpoint_rejects_bad_switches(served: Served, body: object) -> None:
    response = await served.http.post("/_sandbox/faults", json=body)

    assert response.status_code == 400
    assert served.bank.faults == Faults()


async def test_admin_endpoint_advances_the_day(served: Served) -> None:
    today = served.bank.ledger.today

    response = await served.http.post("/_sandbox/advance-day")

    assert response.status_code == 200
    assert (served.bank.ledger.today - today).days == 1


async def test_admin_endpoints_refuse_non_loopback_peers() -> None:
    bank = SandboxBank()
    transport = httpx.ASGITransport(app=bank.asgi_app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.post("/_sandbox/faults", json={"deny_consent": True})
        advance = await http.post("/_sandbox/advance-day")

    assert response.status_code == advance.status_code == 403
    assert bank.faults == Faults()


def test_faults_validate_their_ranges() -> None:
    with pytest.raises(ConfigError):
        Faults(error_rate=1.5)
    with pytest.raises(ConfigError):
        Faults(latency=-1)

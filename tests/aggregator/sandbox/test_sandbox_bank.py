from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from aggregator.errors import ConfigError
from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET, SandboxBank, SandboxConfig
from aggregator.sandbox.testing import FlowDriver, Served, complete_login, pkce_pair, query_of


async def test_serve_binds_a_free_port_and_stops_quickly() -> None:
    bank = SandboxBank()
    async with bank.serve(port=0) as base_url, httpx.AsyncClient() as http:
        doc = (await http.get(f"{base_url}/.well-known/openid-configuration")).json()
        # Keep a connection alive across the shutdown: it must not hold the server up.
        started = time.perf_counter()

    assert doc["issuer"] == base_url
    assert base_url.startswith("http://127.0.0.1:")
    assert time.perf_counter() - started < 2
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"{base_url}/jwks")


async def test_serve_stops_while_a_client_holds_a_keep_alive_connection() -> None:
    bank = SandboxBank()
    async with httpx.AsyncClient() as http:
        started = 0.0
        async with bank.serve() as base_url:
            assert (await http.get(f"{base_url}/jwks")).status_code == 200
            started = time.perf_counter()
        elapsed = time.perf_counter() - started

    assert elapsed < 2


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])  # noqa: S104 - proves refusal
async def test_serve_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ConfigError):
        async with SandboxBank().serve(host=host):
            pass


async def test_a_bank_serves_once_at_a_time() -> None:
    bank = SandboxBank()
    async with bank.serve():
        with pytest.raises(RuntimeError):
            async with bank.serve():
                pass


async def test_default_dev_client_completes_a_client_credentials_check() -> None:
    bank = SandboxBank()
    async with bank.serve() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/revoke", data={"token": "unknown"}, auth=(DEV_CLIENT_ID, DEV_CLIENT_SECRET)
        )

    assert response.status_code == 200


async def test_configured_issuer_wins_over_the_base_url() -> None:
    bank = SandboxBank(SandboxConfig(issuer="http://127.0.0.1:9"))
    async with bank.serve() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        doc = (await http.get("/.well-known/oauth-authorization-server")).json()

    assert doc["issuer"] == "http://127.0.0.1:9"


async def test_asgi_app_works_without_a_server() -> None:
    bank = SandboxBank()
    transport = httpx.ASGITransport(app=bank.asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8600") as http:
        doc = (await http.get("/.well-known/oauth-authorization-server")).json()

    assert doc["issuer"] == "http://127.0.0.1:8600"


def test_serve_in_thread_serves_sync_callers_and_lets_them_mutate_state() -> None:
    bank = SandboxBank()
    with bank.serve_in_thread() as base_url:
        assert httpx.get(f"{base_url}/jwks").status_code == 200
        before = bank.ledger.today
        bank.advance_day()
        assert httpx.post(f"{base_url}/_sandbox/advance-day").status_code == 200
    assert (bank.ledger.today - before).days == 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/jwks")


def test_serve_in_thread_reports_start_up_failures() -> None:
    with pytest.raises(ConfigError), SandboxBank().serve_in_thread(host="0.0.0.0"):  # noqa: S104 - refused
        pass


async def test_concurrent_refreshes_of_one_token_yield_one_winner(driver: FlowDriver) -> None:
    """Rotation is atomic: of racing refreshes with one token, exactly one wins."""
    tokens = await driver.tokens()

    results = await asyncio.gather(*(driver.refresh(tokens["refresh_token"]) for _ in range(3)))

    assert sorted(r.status_code for r in results) == [200, 400, 400]


async def test_complete_login_drives_a_url_built_elsewhere(served: Served) -> None:
    _, challenge = pkce_pair()
    url = httpx.URL(f"{served.base_url}/authorize").copy_merge_params(
        {
            "response_type": "code",
            "client_id": "c1",
            "redirect_uri": "http://127.0.0.1:4444/cb",
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )

    location = await complete_login(served.http, str(url), user="bob")

    assert query_of(location)["state"] == "s1"
    assert query_of(location)["iss"] == served.base_url

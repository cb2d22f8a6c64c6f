"""Fixtures for the HTTP layer, on top of tests/aggregator/conftest.py's stores.

Every fixture that touches a store inherits the ``backend`` parametrisation, so those
tests run on SQLite and on PostgreSQL. The bank behind ``DELETE /v1/connections/{id}``
is the sandbox bank's ASGI app reached through ``httpx.ASGITransport`` (no socket),
under the ``sandbox-eu`` profile mapped to the bank id ``sandbox`` that
``make_linked`` writes; :class:`BankSwitch` makes it unreachable on demand.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from aggregator.applications import create_application, new_api_key
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.ids import ApplicationId
from aggregator.models import ApiKey
from aggregator.sandbox import SandboxBank
from aggregator.settings import RegionSettings, Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import load_profiles
from tests.aggregator._logs import LogLines, json_log_lines
from vault import LocalKeyringConfig

BANK_ISSUER = "http://127.0.0.1:8600"
GATEWAY = "http://gateway.test"

AppFactory = Callable[..., Starlette]
ClientFactory = Callable[..., httpx.AsyncClient]


class BankSwitch(httpx.AsyncBaseTransport):
    """Forwards to the sandbox bank, or fails every request while ``down`` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("bank unreachable", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def bank() -> SandboxBank:
    return SandboxBank()


@pytest.fixture
def bank_switch(bank: SandboxBank) -> BankSwitch:
    return BankSwitch(httpx.ASGITransport(app=bank.asgi_app))


@pytest.fixture
async def bank_http(bank_switch: BankSwitch) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=bank_switch, base_url=BANK_ISSUER) as http:
        yield http


@pytest.fixture
def services(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    bank_http: httpx.AsyncClient,
) -> Services:
    profile = load_profiles([], {"sandbox-eu": {"issuer": BANK_ISSUER}})["sandbox-eu"]
    return Services(settings, region_router, custody, BankDirectory({"sandbox": profile},
                                                                    bank_http))


@pytest.fixture
def make_app(settings: Settings, services: Services) -> AppFactory:
    """``make_app(routes=[…])``: the gateway over the test stores."""

    def make(**options: Any) -> Starlette:
        return create_app(settings, services=services, **options)

    return make


@pytest.fixture
async def client_factory(make_app: AppFactory) -> AsyncIterator[ClientFactory]:
    """``client_factory(key)``: an httpx client on one gateway app, with that API key."""
    app = make_app()
    clients: list[httpx.AsyncClient] = []

    def make(key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=GATEWAY, headers=headers
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def api_key(region_router: RegionRouter, app_id: ApplicationId) -> str:
    """An API key of the ``app_id`` fixture's application (whose users make_linked makes)."""
    key, prefix, digest = new_api_key()
    for region in region_router.regions:
        async with region_router.session(region) as session, session.begin():
            session.add(ApiKey(prefix=prefix, application_id=app_id, key_digest=digest))
    return key


@pytest.fixture
def api(client_factory: ClientFactory, api_key: str) -> httpx.AsyncClient:
    """A client calling as the ``app_id`` fixture's application."""
    return client_factory(api_key)


@pytest.fixture
async def other_api(
    client_factory: ClientFactory, region_router: RegionRouter
) -> httpx.AsyncClient:
    """A client calling as a second, unrelated application."""
    _, key = await create_application(region_router, "Other app", [])
    return client_factory(key)


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every record logged during the test, as the JSON lines production would write."""
    with json_log_lines(logging.INFO) as lines:
        yield lines


@pytest.fixture
def bare_settings(tmp_path: Path) -> Settings:
    """Settings for tests that never touch a store (one SQLite region, never opened)."""
    return Settings(data_dir=tmp_path, regions={"eu": RegionSettings(
        "eu", f"sqlite+aiosqlite:///{tmp_path / 'eu.sqlite3'}",
        LocalKeyringConfig(tmp_path / "keys", "eu"),
    )}, sandbox_banks=True)

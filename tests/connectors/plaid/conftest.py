"""A loopback Plaid per test, and connectors pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aggregator.http.serving import bind, serving
from connectors import PlaidConfig, PlaidConnector, PlaidEnvironment
from tests.connectors.plaid.fake_plaid import CLIENT_ID, SECRET, FakePlaid
from vault import Secret


@pytest.fixture
async def fake_plaid() -> AsyncIterator[tuple[FakePlaid, str]]:
    fake = FakePlaid()
    async with serving(fake.app(), bind("127.0.0.1", 0)) as url:
        yield fake, url


@pytest.fixture
def plaid_connector(fake_plaid: tuple[FakePlaid, str]) -> PlaidConnector:
    _, url = fake_plaid
    return PlaidConnector(PlaidConfig("us", CLIENT_ID, Secret(SECRET), PlaidEnvironment.SANDBOX,
                                      host=url, timeout=5.0))

"""A bank issuing 15-second access tokens (``expires_in = 15``): no refresh storm, and a
sync that finds its token expired refreshes on demand, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from aggregator.models import Credential
from aggregator.models.base import utcnow
from aggregator.sandbox import SandboxConfig
from aggregator.worker import lease_batch
from tests.aggregator.e2e.conftest import Gateway, gateway_client


@pytest.fixture
def bank_config() -> SandboxConfig:
    return SandboxConfig(clients=[gateway_client()], access_token_ttl=15)


async def _credential(gateway: Gateway) -> Credential:
    async with gateway.services.router.reader("eu") as session:
        return (await session.execute(select(Credential))).scalar_one()


async def test_a_15_second_token_is_not_refreshed_more_than_once_a_minute(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    credential = await _credential(gateway)
    assert credential.access_expires_at is not None
    assert credential.refresh_due_at is not None
    assert credential.access_expires_at - utcnow() <= timedelta(seconds=15)
    assert credential.refresh_due_at - utcnow() >= timedelta(seconds=55)
    # The refresh worker finds nothing due although the access token is about to expire.
    leased = await lease_batch(gateway.services.router, "eu", "t", now=utcnow(), limit=10,
                               lease_for=timedelta(seconds=30))
    assert leased == []

    # Time passes: the access token expired. A sync refreshes on demand, under the lease,
    # and the next sync uses that token instead of refreshing again.
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            access_expires_at=utcnow() - timedelta(seconds=1),
            updated_at=utcnow() - timedelta(seconds=16)))
    issued = len(gateway.issued_tokens)
    for _ in range(2):
        synced = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
        assert synced.status_code == 200, synced.text
    assert len(gateway.issued_tokens) - issued == 2  # one access + one refresh token
    after = await _credential(gateway)
    assert after.version == credential.version + 2  # claimed, persisted: one refresh
    assert after.lease_owner is None
    assert after.refresh_started_at is None
    assert after.refresh_due_at is not None
    assert after.refresh_due_at - utcnow() >= timedelta(seconds=55)

"""A connection holding the Plaid item the webhooks of these tests name."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from aggregator.models import Connection
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory

ITEM = "item-apply-1"


@pytest.fixture
async def connection(make_linked: LinkFactory, region_router: RegionRouter) -> Connection:
    linked = await make_linked("eu")
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == linked.connection.id)
                              .values(external_ref=ITEM))
    return linked.connection

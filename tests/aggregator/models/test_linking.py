"""Credentials are compare-and-swap: a stale writer changes nothing and is told so."""

from __future__ import annotations

import pytest
from sqlalchemy.orm.exc import StaleDataError

from aggregator.models import Credential
from aggregator.store import RegionRouter
from tests.aggregator import _factories as fixtures


async def test_a_stale_credential_update_is_refused(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory
) -> None:
    linked = await make_linked("eu")
    assert linked.credential.version == 1
    async with region_router.reader("eu") as session:  # worker 2 reads version 1 ...
        theirs = await session.get(Credential, linked.credential.id)
    assert theirs is not None
    async with region_router.session("eu") as session, session.begin():  # ... worker 1 wins
        mine = await session.get(Credential, linked.credential.id)
        assert mine is not None
        mine.lease_owner = "worker-1"
    assert mine.version == 2
    theirs.lease_owner = "worker-2"
    async with region_router.session("eu") as session:
        with pytest.raises(StaleDataError):
            await session.merge(theirs)
    async with region_router.reader("eu") as session:
        stored = await session.get(Credential, linked.credential.id)
    assert stored is not None
    assert (stored.lease_owner, stored.version) == ("worker-1", 2)

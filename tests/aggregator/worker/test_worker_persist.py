"""An erasure that lands while the bank answers a refresh: the refresh must not write back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from aggregator.custody import RegionCustody
from aggregator.ids import UserId
from aggregator.models import Credential
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync.tokens import CredentialBusy, persist_refresh
from aggregator.worker import RefreshContext, WorkerMetrics, lease_batch
from aggregator.worker.refresh import refresh_leased
from connectors import TokenSet
from tests.aggregator._factories import Linked, LinkFactory
from tests.aggregator.worker.test_worker_refresh import StubBanks, StubOAuth

ERASURE_STEPS = ["data_key_destroyed", "credential_deleted", "both"]


async def _erase_part(
    router: RegionRouter, custody: RegionCustody, linked: Linked, what: str
) -> None:
    async with router.session("eu") as session, session.begin():
        if what in ("credential_deleted", "both"):
            await session.execute(delete(Credential).where(Credential.id == linked.credential.id))
        if what in ("data_key_destroyed", "both"):
            assert await custody.data_keys.destroy(session, UserId(linked.user.id))


async def _stored(router: RegionRouter, linked: Linked) -> Credential | None:
    async with router.reader("eu") as session:
        return (await session.execute(
            select(Credential).where(Credential.id == linked.credential.id)
        )).scalar_one_or_none()


@pytest.mark.parametrize("what", ERASURE_STEPS)
async def test_erasure_during_the_bank_call_makes_the_refresh_lease_lost(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
    what: str,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old")
    before = await _stored(region_router, linked)
    assert before is not None

    async def erase_meanwhile() -> None:
        await _erase_part(region_router, custody["eu"], linked, what)

    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Credential).where(Credential.id == linked.credential.id)
                              .values(refresh_due_at=utcnow() - timedelta(seconds=1)))
    [lease] = await lease_batch(region_router, "eu", "t", now=utcnow(), limit=1,
                                lease_for=timedelta(seconds=30))
    ctx = RefreshContext(region_router, custody, StubBanks(StubOAuth(during=erase_meanwhile)),
                         WorkerMetrics(), "t", max_interval=timedelta(hours=1))

    assert await refresh_leased(ctx, "eu", lease) == "lease_lost"

    after = await _stored(region_router, linked)
    if what == "data_key_destroyed":
        assert after is not None  # nothing written: the sealed tokens are the old ones
        assert after.access_token_sealed == before.access_token_sealed
        assert after.refresh_token_sealed == before.refresh_token_sealed
    else:
        assert after is None  # not resurrected


async def test_persist_refresh_raises_lease_lost_when_the_data_key_is_gone(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    keys = custody["eu"]
    async with region_router.reader("eu") as session:
        key = await keys.data_keys.load(session, UserId(linked.user.id))
    await _erase_part(region_router, keys, linked, "data_key_destroyed")
    tokens = TokenSet("at-new", "rt-new", utcnow() + timedelta(days=1), None, "Bearer")

    with pytest.raises(CredentialBusy):
        await persist_refresh(region_router, keys, key, linked.credential,
                              linked.credential.version, tokens)

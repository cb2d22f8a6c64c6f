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
from aggregator.sync.tokens import CredentialBusy, Rotation, persist_refresh, persist_refreshes
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


async def test_a_group_commit_stores_each_claimed_row_and_skips_only_the_lost_one(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    keys = custody["eu"]
    linked = [await make_linked("eu", refresh_token=f"rt-old-{i}") for i in range(3)]
    lost = linked[1].credential
    async with region_router.session("eu") as session, session.begin():
        # Another worker took the middle row over: its version moved on.
        await session.execute(update(Credential).where(Credential.id == lost.id)
                              .values(version=Credential.version + 2))
    rotations = []
    for i, item in enumerate(linked):
        async with region_router.reader("eu") as session:
            key = await keys.data_keys.load(session, UserId(item.user.id))
        tokens = TokenSet(f"at-new-{i}", f"rt-new-{i}", utcnow() + timedelta(hours=1), None,
                          "Bearer")
        rotations.append(Rotation(item.credential, item.credential.version, tokens, key))

    stored = await persist_refreshes(region_router, keys, rotations)

    assert stored == [True, False, True]
    for i, item in enumerate(linked):
        row = await _stored(region_router, item)
        assert row is not None
        async with region_router.reader("eu") as session:
            key = await keys.data_keys.load(session, UserId(item.user.id))
        token = await keys.sealer.open_from(key, row, "refresh_token_sealed")
        assert token == (f"rt-old-{i}" if i == 1 else f"rt-new-{i}")
        assert (row.version == item.credential.version + 1) == (i != 1)


async def test_a_bank_that_does_not_rotate_keeps_the_stored_refresh_token(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    keys = custody["eu"]
    linked = await make_linked("eu", refresh_token="rt-kept")
    async with region_router.reader("eu") as session:
        key = await keys.data_keys.load(session, UserId(linked.user.id))
    tokens = TokenSet("at-new", None, utcnow() + timedelta(hours=1), None, "Bearer")

    await persist_refresh(region_router, keys, key, linked.credential,
                          linked.credential.version, tokens)

    row = await _stored(region_router, linked)
    assert row is not None
    assert await keys.sealer.open_from(key, row, "refresh_token_sealed") == "rt-kept"
    assert await keys.sealer.open_from(key, row, "access_token_sealed") == "at-new"

"""Data keys: per user, wrapped at rest, counted across processes, shredded on erasure."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text, update

from aggregator.custody import RegionCustody
from aggregator.datakeys import dek_id_for, key_versions, older_than, rewrap_data_keys
from aggregator.errors import ResidencyViolation, SealReservationMissing
from aggregator.ids import new_id
from aggregator.models import Credential, DataKeyRecord
from aggregator.sealing import Field
from aggregator.store import RegionRouter
from tests.aggregator import _factories as fixtures
from vault import DataKeyDestroyed, SealLimitReached


async def test_a_fresh_process_unwraps_the_stored_key_and_opens_values(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory,
    make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-fresh-process")
    later = (await custody_factory())["eu"]  # empty cache, as after a restart
    async with region_router.reader("eu") as session:
        record = await session.get(DataKeyRecord, linked.user.id)
        key = await later.data_keys.load(session, linked.user.id)
        credential = await session.get(Credential, linked.credential.id)
    assert record is not None
    assert credential is not None
    assert record.dek_id == dek_id_for(linked.user.id) == key.dek_id
    assert (record.provider, record.kek_id, record.kek_version) == ("local", "eu", 1)
    assert await later.sealer.open_from(key, credential, "refresh_token_sealed") == (
        "rt-fresh-process"
    )
    assert later.envelope.stats().unwraps == 1


async def test_seal_counts_are_reserved_in_the_database_by_every_process(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory,
    make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu")

    async def count() -> int:
        async with region_router.reader("eu") as session:
            return int((await session.execute(
                select(DataKeyRecord.seal_count).where(DataKeyRecord.user_id == linked.user.id)
            )).scalar_one())

    first = await count()
    assert first > 0
    for _ in range(2):  # two more processes, each sealing once
        eu = (await custody_factory())["eu"]
        async with region_router.session("eu") as session, session.begin():
            key = await eu.data_keys.load(session, linked.user.id)
            credential = await session.get(Credential, linked.credential.id)
            assert credential is not None
            await eu.sealer.seal_into(key, credential, "access_token_sealed", "at-2",
                                      session=session)
    assert await count() == first + 2 * eu.ledger.block


async def test_a_unit_of_work_seals_after_writing_without_waiting_on_itself(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory,
    make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu")
    eu = (await custody_factory())["eu"]  # nothing reserved yet in this "process"
    async with region_router.session("eu") as session, session.begin():
        await session.execute(  # the transaction now holds SQLite's write lock
            text("UPDATE connections SET bank_id = 'other' WHERE id = :id"),
            {"id": linked.connection.id},
        )
        key = await eu.data_keys.load(session, linked.user.id)
        blob = await eu.sealer.seal(key, Field("t", "c", "r", linked.user.id), "v")
    assert blob


async def test_the_seal_limit_holds_across_processes(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory,
    make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu")
    limit = 100_000
    async with region_router.session("eu") as session, session.begin():
        await session.execute(
            text("UPDATE data_keys SET seal_count = :n WHERE user_id = :u"),
            {"n": limit - 10, "u": linked.user.id},
        )
    eu = (await custody_factory(seal_limit=limit))["eu"]
    async with region_router.session("eu") as session:
        key = await eu.data_keys.load(session, linked.user.id)
        credential = await session.get(Credential, linked.credential.id)
        assert credential is not None
        with pytest.raises(SealLimitReached):
            await eu.sealer.seal_into(key, credential, "access_token_sealed", "x",
                                      session=session)


async def test_sealing_around_the_ledger_is_refused(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory,
    make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu")
    eu = (await custody_factory())["eu"]
    async with region_router.reader("eu") as session:
        key = await eu.data_keys.load(session, linked.user.id)
    with pytest.raises(SealReservationMissing):
        eu.envelope.seal(key, b"value", b"aad")


async def test_destroying_a_key_makes_the_users_values_unreadable(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    custody_factory: fixtures.CustodyFactory, make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu")
    eu = custody["eu"]
    async with region_router.session("eu") as session, session.begin():
        key = await eu.data_keys.load(session, linked.user.id)
        assert await eu.data_keys.destroy(session, linked.user.id)
    assert not eu.envelope.is_cached(key.dek_id)
    for keys in (eu, (await custody_factory())["eu"]):
        async with region_router.reader("eu") as session:
            with pytest.raises(DataKeyDestroyed):
                await keys.data_keys.load(session, linked.user.id)
        with pytest.raises(DataKeyDestroyed):
            await keys.ledger.ensure(key.dek_id)


async def test_other_processes_drop_an_erased_key_from_memory_when_they_next_load(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    custody_factory: fixtures.CustodyFactory, make_linked: fixtures.LinkFactory,
) -> None:
    erased, other = await make_linked("eu"), await make_linked("eu")
    worker = (await custody_factory())["eu"]  # a long-lived process with its own cache
    worker.data_keys._poll_every = 0.0
    async with region_router.reader("eu") as session:
        gone = await worker.data_keys.load(session, erased.user.id)
    assert worker.envelope.is_cached(gone.dek_id)

    async with region_router.session("eu") as session, session.begin():  # the gateway
        assert await custody["eu"].data_keys.destroy(session, erased.user.id)

    # The worker touches another user's key: it learns of the erasure on the way.
    async with region_router.reader("eu") as session:
        await worker.data_keys.load(session, other.user.id)
    assert not worker.envelope.is_cached(gone.dek_id)
    assert worker.envelope.is_cached(dek_id_for(other.user.id))


async def test_a_data_key_is_created_only_in_the_users_region(
    region_router: RegionRouter, custody: dict[str, RegionCustody]
) -> None:
    async with region_router.session("eu") as session:
        with pytest.raises(ResidencyViolation):
            await custody["eu"].data_keys.create(session, new_id("usr", "us"))


async def test_a_rewrap_batch_isolates_a_key_the_provider_refuses(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory,
) -> None:
    users = [(await make_linked("eu")).user.id for _ in range(4)]
    bad = users[1]
    async with region_router.session("eu") as session, session.begin():
        record = await session.get(DataKeyRecord, bad)
        assert record is not None
        record.ciphertext = bytes(record.ciphertext[:-1]) + bytes([record.ciphertext[-1] ^ 1])
    provider = custody["eu"].envelope.provider
    provider.rotate()

    outcome = await rewrap_data_keys(region_router, "eu", provider, newest=2, limit=10)

    assert outcome.failed == (dek_id_for(bad),)
    assert (outcome.rewrapped, outcome.skipped, outcome.read) == (3, 0, 4)
    assert await key_versions(region_router, "eu") == {1: 1, 2: 3}
    assert await older_than(region_router, "eu", 2) == 1 + 1  # the bad key and the pepper


async def test_a_rewrap_leaves_keys_of_another_kek_alone(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory,
) -> None:
    mine, foreign = (await make_linked("eu")).user.id, (await make_linked("eu")).user.id
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(DataKeyRecord).where(DataKeyRecord.user_id == foreign)
                              .values(kek_id="eu-old-keyring"))
    provider = custody["eu"].envelope.provider
    provider.rotate()

    first = await rewrap_data_keys(region_router, "eu", provider, newest=2, limit=1)
    rest = await rewrap_data_keys(region_router, "eu", provider, newest=2, limit=1,
                                  after=first.last)

    assert (first.rewrapped, first.last, rest.read) == (1, mine, 0)
    async with region_router.reader("eu") as session:
        other = await session.get(DataKeyRecord, foreign)
    assert other is not None
    assert (other.kek_id, other.kek_version, other.rewrapped_at) == ("eu-old-keyring", 1, None)

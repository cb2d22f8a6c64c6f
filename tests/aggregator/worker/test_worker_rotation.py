"""Scheduled KEK rotation and rewrap, on SQLite and PostgreSQL and on every provider:
due rotations happen once across workers, every key moves in bounded passes that
survive a crash, and a rewrap never races a seal or writes back an erased user's key."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from aggregator.custody import RegionCustody, region_custody
from aggregator.datakeys import SealLedger, key_versions
from aggregator.erasure import ErasureJob, request_erasure
from aggregator.errors import ConfigError
from aggregator.ids import ApplicationId, UserId
from aggregator.models import DataKeyRecord, ErasureState, RegionSecret, User
from aggregator.models.base import utcnow
from aggregator.pepper import load_pepper
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter
from aggregator.users import create_user
from aggregator.worker.rotation import KeyMetrics, KeyRotation
from tests.aggregator.erasure.conftest import FAST, FakeBanks
from tests.vault._openbao import openbao_fixture  # noqa: F401  (session fixture `openbao`)
from tests.vault._softhsm import softhsm_fixture  # noqa: F401  (session fixture `softhsm`)
from vault import Envelope, KeyProvider, LocalKeyringConfig, ProviderConfig, open_provider

EVERY = timedelta(days=90)
Custody = dict[str, RegionCustody]
MakeCustody = Callable[[], Awaitable[Custody]]


@pytest.fixture(params=[
    "local",
    pytest.param("pkcs11", marks=pytest.mark.hsm),
    pytest.param("transit", marks=pytest.mark.transit),
])
def provider_config(request: pytest.FixtureRequest, tmp_path: Path) -> ProviderConfig:
    """The region ``eu``'s KEK on one of the three real providers, fresh per test."""
    name = f"rot-{uuid.uuid4().hex[:12]}"
    if request.param == "local":
        return LocalKeyringConfig(tmp_path / "rotation-keys", name)
    if request.param == "pkcs11":
        return request.getfixturevalue("softhsm").config(name)  # type: ignore[no-any-return]
    return request.getfixturevalue("openbao").config(name)  # type: ignore[no-any-return]


@pytest.fixture
async def make_custody(region_router: RegionRouter, provider_config: ProviderConfig,
                       tmp_path: Path) -> AsyncIterator[MakeCustody]:
    """Custody as a fresh process builds it (nothing cached), ``eu`` on the tested provider."""
    made: list[KeyProvider] = []

    async def make() -> Custody:
        out = {}
        for region in region_router.regions:
            config = provider_config if region == "eu" else LocalKeyringConfig(
                tmp_path / "other-keys", region)
            provider = open_provider(config)
            provider.ensure_kek()
            made.append(provider)
            ledger = SealLedger(region_router.engine(region))
            out[region] = await region_custody(
                region_router, region, Envelope(provider, seal_counter=ledger), ledger)
        return out

    yield make
    for provider in made:
        provider.close()


async def _users(router: RegionRouter, custody: Custody, app_id: ApplicationId,
                 n: int) -> list[UserId]:
    ids = []
    async with router.session("eu") as session, session.begin():
        for i in range(n):
            user = await create_user(session, custody["eu"], app_id, f"person-{i}@example.test")
            ids.append(user.id)
    return ids


def _job(router: RegionRouter, custody: Custody, **options: object) -> KeyRotation:
    return KeyRotation(router, custody, {"eu": EVERY, "us": None}, **options)  # type: ignore[arg-type]


def _provider(custody: Custody) -> KeyProvider:
    return custody["eu"].envelope.provider


async def _all_open_after_retiring(router: RegionRouter, make: MakeCustody,
                                   ids: list[UserId], version: int) -> None:
    """Raise the minimum past every older version; a fresh process still opens it all."""
    fresh = await make()
    _provider(fresh).set_min_decryption_version(version)
    fresh = await make()  # and the pepper (a region secret) unwraps at start-up
    async with router.reader("eu") as session:
        for i, user_id in enumerate(ids):
            user = await session.get(User, user_id)
            assert user is not None
            key = await fresh["eu"].data_keys.load(session, user_id)
            assert key.kek_version == version
            opened = await fresh["eu"].sealer.open_from(key, user, "external_id_sealed")
            assert opened == f"person-{i}@example.test"


async def test_a_due_rotation_rewraps_every_key_in_bounded_passes(
    region_router: RegionRouter, make_custody: MakeCustody, app_id: ApplicationId,
) -> None:
    custody = await make_custody()
    ids = await _users(region_router, custody, app_id, 5)
    registry = CollectorRegistry()
    job = _job(region_router, custody, metrics=KeyMetrics(registry), batch=2, per_pass=3)
    start = utcnow()

    assert await job.run_once(asyncio.Event(), now=start) == 0  # schedule starts now
    assert await job.run_once(asyncio.Event(), now=start + EVERY - timedelta(hours=1)) == 0
    assert _provider(custody).status().latest_version == 1

    due = start + EVERY
    # Bounded: the pepper and 3 of the 5 data keys this pass.
    assert await job.run_once(asyncio.Event(), now=due) == 1 + 3
    assert _provider(custody).status().latest_version == 2
    assert await key_versions(region_router, "eu") == {1: 2, 2: 3}
    assert await job.run_once(asyncio.Event(), now=due) == 2  # not due again: drains
    assert await job.run_once(asyncio.Event(), now=due) == 0
    assert await key_versions(region_router, "eu") == {2: 5}
    assert _provider(custody).status().latest_version == 2

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"region": "eu", **labels})

    assert sample("aggregator_data_keys", kek_version="2") == 5
    assert sample("aggregator_data_keys", kek_version="1") is None  # gone, not stale
    assert sample("aggregator_data_keys_rewrapped_total") == 5 + 1  # and the pepper
    assert sample("aggregator_kek_rotations_total") == 1
    assert sample("aggregator_kek_latest_version") == 2
    async with region_router.reader("eu") as session:
        [pepper_version] = (await session.execute(select(RegionSecret.kek_version))).scalars()
    assert pepper_version == 2
    await _all_open_after_retiring(region_router, make_custody, ids, 2)


async def test_workers_racing_for_a_due_rotation_rotate_once(
    region_router: RegionRouter, make_custody: MakeCustody, app_id: ApplicationId,
) -> None:
    workers = [await make_custody() for _ in range(3)]
    await _users(region_router, workers[0], app_id, 4)
    jobs = [_job(region_router, c, owner=f"w{i}") for i, c in enumerate(workers)]
    start = utcnow()
    await jobs[0].run_once(asyncio.Event(), now=start)

    done = await asyncio.gather(*(j.run_once(asyncio.Event(), now=start + EVERY) for j in jobs))

    assert _provider(workers[0]).status().latest_version == 2  # one rotation, not three
    assert sum(done) == 4 + 1  # each key written once (and the pepper), by the lease holder
    assert await key_versions(region_router, "eu") == {2: 4}


async def test_a_crash_mid_rewrap_resumes_from_the_rows_and_a_lost_rotation_is_adopted(
    region_router: RegionRouter, make_custody: MakeCustody, app_id: ApplicationId,
) -> None:
    custody = await make_custody()
    ids = await _users(region_router, custody, app_id, 5)
    start = utcnow()
    await _job(region_router, custody).run_once(asyncio.Event(), now=start)
    # A worker rotated at the provider and died before recording it.
    assert _provider(custody).rotate() == 2
    calls = 0

    async def die_on_second_batch() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # the pepper, one batch of data keys, then the crash
            raise RuntimeError("worker killed")

    dying = _job(region_router, await make_custody(), batch=2, pause=die_on_second_batch,
                 owner="dying")
    later = start + timedelta(days=1)
    with pytest.raises(RuntimeError, match="killed"):
        await dying.run_region("eu", asyncio.Event(), now=later)
    assert _provider(custody).status().latest_version == 2  # adopted, not rotated again
    assert await key_versions(region_router, "eu") == {1: 3, 2: 2}

    survivor = _job(region_router, await make_custody(), owner="survivor")
    assert await survivor.run_once(asyncio.Event(), now=later) == 3  # lease released
    assert await survivor.run_once(asyncio.Event(), now=start + EVERY) == 0  # 90 d from 'later'
    assert _provider(custody).status().latest_version == 2
    await survivor.run_once(asyncio.Event(), now=later + EVERY)
    assert _provider(custody).status().latest_version == 3
    await _all_open_after_retiring(region_router, make_custody, ids, 3)


async def test_an_erased_users_key_is_never_written_back_by_a_rewrap(
    region_router: RegionRouter, make_custody: MakeCustody, app_id: ApplicationId,
) -> None:
    custody = await make_custody()
    ids = await _users(region_router, custody, app_id, 3)
    erased = ids[1]
    request = await request_erasure(region_router, custody["eu"], erased, app_id,
                                    config=FAST, actor=app_id)
    assert request is not None
    _provider(custody).rotate()

    async def erase_meanwhile() -> None:  # after the provider rewrapped, before the write
        if await key_versions(region_router, "eu") == {1: 3}:
            job = ErasureJob(region_router, custody, FakeBanks(), FAST)
            assert await job.run(request.id) is ErasureState.COMPLETED

    job = _job(region_router, custody, pause=erase_meanwhile)
    assert await job.run_once(asyncio.Event(), now=utcnow()) == 1 + 2  # pepper, 2 keys

    async with region_router.reader("eu") as session:
        rows = (await session.execute(select(DataKeyRecord.user_id))).scalars().all()
        assert await session.get(User, erased) is None
    assert sorted(rows) == sorted([ids[0], ids[2]])
    assert await key_versions(region_router, "eu") == {2: 2}


async def test_erasure_and_rewrap_running_at_once_leave_no_key_of_the_erased_user(
    region_router: RegionRouter, make_custody: MakeCustody, app_id: ApplicationId,
) -> None:
    custody = await make_custody()
    ids = await _users(region_router, custody, app_id, 6)
    requests = []
    for user_id in ids[::2]:
        request = await request_erasure(region_router, custody["eu"], user_id, app_id,
                                        config=FAST, actor=app_id)
        assert request is not None
        requests.append(request.id)
    _provider(custody).rotate()
    erasure = ErasureJob(region_router, custody, FakeBanks(), FAST)
    rotation = _job(region_router, await make_custody(), batch=1)

    async def erase_all() -> None:
        for request_id in requests:
            assert await erasure.run(request_id) is ErasureState.COMPLETED
            await asyncio.sleep(0)

    await asyncio.gather(erase_all(), rotation.run_once(asyncio.Event(), now=utcnow()))
    await rotation.run_once(asyncio.Event(), now=utcnow())

    async with region_router.reader("eu") as session:
        rows = (await session.execute(select(DataKeyRecord.user_id))).scalars().all()
    assert sorted(rows) == sorted(ids[1::2])
    assert await key_versions(region_router, "eu") == {2: 3}


async def test_a_seal_reservation_taken_during_a_rewrap_is_kept(
    region_router: RegionRouter, make_custody: MakeCustody, app_id: ApplicationId,
) -> None:
    custody = await make_custody()
    [user_id] = await _users(region_router, custody, app_id, 1)
    _provider(custody).rotate()
    sealer = await make_custody()  # another process, sealing for the same user
    ledger = sealer["eu"].ledger

    async def seal_meanwhile() -> None:
        async with region_router.session("eu") as session, session.begin():
            key = await sealer["eu"].data_keys.load(session, user_id)
            user = await session.get(User, user_id)
            assert user is not None
            await sealer["eu"].sealer.seal_into(key, user, "external_id_sealed",
                                                "person-0@example.test", session=session)

    async with region_router.reader("eu") as session:
        before = (await session.execute(select(DataKeyRecord.seal_count))).scalar_one()
    job = _job(region_router, custody, pause=seal_meanwhile)
    assert await job.run_once(asyncio.Event(), now=utcnow()) == 1 + 1  # pepper, the key

    async with region_router.reader("eu") as session:
        row = (await session.execute(select(DataKeyRecord))).scalar_one()
    assert row.kek_version == 2
    assert row.rewrapped_at is not None
    assert row.seal_count == before + ledger.block  # the reservation survived the rewrap
    await _all_open_after_retiring(region_router, make_custody, [user_id], 2)


async def test_the_pepper_unwraps_after_its_kek_version_is_retired(
    region_router: RegionRouter, make_custody: MakeCustody,
) -> None:
    custody = await make_custody()
    pepper = await load_pepper(region_router, "eu", _provider(custody))
    _provider(custody).rotate()
    await _job(region_router, custody).run_once(asyncio.Event(), now=utcnow())
    fresh = await make_custody()
    _provider(fresh).set_min_decryption_version(2)
    assert await load_pepper(region_router, "eu", _provider(fresh)) == pepper


def _settings(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    return load_settings(path, environ=env or {})


def test_rotate_every_is_global_with_a_per_region_override_and_env(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).region("eu").rotate_every is None
    settings = _settings(tmp_path, '[keys]\nrotate_every = "90d"\n'
                                   '[regions.eu.keys]\nrotate_every = "2w"\n'
                                   '[regions.us.keys]\nrotate_every = "off"\n'
                                   '[regions.ap]\n')
    assert settings.region("eu").rotate_every == timedelta(weeks=2)
    assert settings.region("us").rotate_every is None
    assert settings.region("ap").rotate_every == timedelta(days=90)
    env = {"AGGREGATOR_KEYS_ROTATE_EVERY": "36h",
           "AGGREGATOR_REGION_US_KEYS_ROTATE_EVERY": "30d"}
    overridden = _settings(tmp_path, '[regions.eu]\n[regions.us]\n', env)
    assert overridden.region("eu").rotate_every == timedelta(hours=36)
    assert overridden.region("us").rotate_every == timedelta(days=30)


@pytest.mark.parametrize(("text", "env", "named"), [
    ('[keys]\nrotate_every = "90"\n', {}, "keys.rotate_every: '90'"),
    ('[keys]\nrotate_every = 90\n', {}, "keys.rotate_every: 90"),
    ('[keys]\nrotate_every = "90D"\n', {}, "keys.rotate_every: '90D'"),
    ('[keys]\nrotate_every = "0d"\n', {}, "keys.rotate_every: '0d'"),
    ('[keys]\nrotate_every = "1.5d"\n', {}, "keys.rotate_every: '1.5d'"),
    ('[regions.eu.keys]\nrotate_every = "90s"\n', {}, "regions.eu.keys.rotate_every: '90s'"),
    ("", {"AGGREGATOR_KEYS_ROTATE_EVERY": " 90d"}, "AGGREGATOR_KEYS_ROTATE_EVERY: ' 90d'"),
])
def test_a_bad_rotation_period_fails_at_start_up_naming_the_field(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        _settings(tmp_path, text, env)

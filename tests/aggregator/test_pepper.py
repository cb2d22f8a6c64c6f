"""The pepper: created once per region, wrapped at rest, the same for every process."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from sqlalchemy import select

from aggregator.errors import ResidencyViolation
from aggregator.models import RegionSecret
from aggregator.pepper import load_pepper
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from tests.aggregator import _factories as fixtures
from vault import open_provider


async def test_every_process_derives_the_same_lookups(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory
) -> None:
    first, second = await custody_factory(), await custody_factory()
    for region in ("eu", "us"):
        assert first[region].hasher.external_user_id("app_x", "u1") == (
            second[region].hasher.external_user_id("app_x", "u1")
        )
    assert first["eu"].hasher.external_user_id("app_x", "u1") != (
        first["us"].hasher.external_user_id("app_x", "u1")
    )
    async with region_router.reader("eu") as session:
        row = (await session.execute(select(RegionSecret))).scalar_one()
    assert (row.name, row.region, row.provider, row.kek_id) == ("pepper", "eu", "local", "eu")
    assert len(row.ciphertext) > 32  # wrapped: nonce, key and tag


async def test_concurrent_first_starts_agree_on_one_pepper(
    region_router: RegionRouter, settings: Settings
) -> None:
    provider = open_provider(settings.region("eu").keys)
    provider.ensure_kek()
    peppers = await asyncio.gather(*(load_pepper(region_router, "eu", provider) for _ in range(4)))
    assert len(set(peppers)) == 1
    assert len(peppers[0]) == 32


async def test_a_database_of_another_region_is_refused(
    region_router: RegionRouter, custody_factory: fixtures.CustodyFactory, settings: Settings
) -> None:
    await custody_factory()  # stamps both databases
    swapped = Settings(
        data_dir=settings.data_dir,
        regions={
            "eu": replace(settings.region("eu"), database_url=settings.region("us").database_url),
        },
    )
    provider = open_provider(settings.region("eu").keys)
    async with RegionRouter(swapped) as wrong:
        with pytest.raises(ResidencyViolation, match="belongs to region 'us'"):
            await load_pepper(wrong, "eu", provider)

"""Applications live in every region; their API keys verify in whichever region serves."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from aggregator.applications import authenticate, create_application, replicate_application
from aggregator.errors import InvalidApiKey
from aggregator.ids import parse_id
from aggregator.models import ApiKey, Application
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter


async def test_an_application_and_its_key_exist_in_every_region(
    region_router: RegionRouter,
) -> None:
    app_id, key = await create_application(region_router, "Budgetly", ["https://app.test/cb"])
    assert parse_id(app_id) == ("app", None)
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            assert await authenticate(session, key) == app_id
            app = await session.get(Application, app_id)
            stored = (await session.execute(select(ApiKey.key_digest))).scalar_one()
        assert app is not None
        assert app.redirect_uris == ["https://app.test/cb"]
        assert key.encode() not in stored


@pytest.mark.parametrize("presented", ["", "agk_", "agk_nope_nope", "Bearer x", "sk_live_1"])
async def test_unknown_keys_are_refused(region_router: RegionRouter, presented: str) -> None:
    await create_application(region_router, "Budgetly", [])
    async with region_router.reader("eu") as session:
        with pytest.raises(InvalidApiKey):
            await authenticate(session, presented)


async def test_a_forged_secret_with_a_real_prefix_is_refused(region_router: RegionRouter) -> None:
    _app, key = await create_application(region_router, "Budgetly", [])
    forged = key[: key.rindex("_") + 1] + "A" * 43
    async with region_router.reader("us") as session:
        with pytest.raises(InvalidApiKey, match="unknown"):
            await authenticate(session, forged)


async def test_a_revoked_key_is_refused(region_router: RegionRouter) -> None:
    _app, key = await create_application(region_router, "Budgetly", [])
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(ApiKey).values(revoked_at=utcnow()))
    async with region_router.reader("eu") as session:
        with pytest.raises(InvalidApiKey, match="revoked"):
            await authenticate(session, key)


async def test_replication_repairs_a_region_that_missed_the_application(
    region_router: RegionRouter,
) -> None:
    app_id, key = await create_application(region_router, "Budgetly", ["https://a.test/cb"])
    async with region_router.session("us") as session, session.begin():
        await session.execute(delete(ApiKey))
        await session.execute(delete(Application))
    await replicate_application(region_router, "eu", app_id)
    await replicate_application(region_router, "eu", app_id)  # idempotent
    async with region_router.reader("us") as session:
        assert await authenticate(session, key) == app_id

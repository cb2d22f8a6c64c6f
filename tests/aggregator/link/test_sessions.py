"""Link sessions: short-lived, single-use, high-entropy tokens stored only as digests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId, parse_secret, secret_digest
from aggregator.link.errors import LinkNotFound, LinkRequestInvalid
from aggregator.link.sessions import LINK_TTL, LinkRequest, create_link_session, open_link
from aggregator.models import LinkSession, LinkStatus
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from aggregator.users import create_user
from connectors import load_profiles
from tests.aggregator._factories import RawFiles
from tests.aggregator.conftest import Backend

REDIRECT = "https://app.test/cb"


@pytest.fixture
async def banks() -> AsyncIterator[BankDirectory]:
    async with httpx.AsyncClient() as http:
        yield BankDirectory(load_profiles([]), http)


async def _user(router: RegionRouter, custody: RegionCustody, app_id: ApplicationId) -> str:
    async with router.session(custody.region) as session, session.begin():
        user = await create_user(session, custody, app_id, "customer-9")
    return user.id


async def test_a_session_token_names_its_region_and_is_stored_only_hashed(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    banks: BankDirectory, raw_files: RawFiles, backend: Backend,
) -> None:
    user_id = await _user(region_router, custody["us"], app_id)
    issued = await create_link_session(
        region_router, banks, LinkRequest(app_id, user_id, REDIRECT)
    )
    assert parse_secret(issued.token, kind="lnk") == "us"
    assert len(issued.token) == len("lnk_us_") + 52  # 256 bits of base32
    assert issued.token not in repr(issued)
    async with region_router.reader("us") as session:
        row = (await session.execute(select(LinkSession))).scalar_one()
    assert row.token_digest == secret_digest(issued.token)
    assert row.status is LinkStatus.PENDING
    assert row.expires_at - row.created_at == LINK_TTL == timedelta(minutes=10)
    opened = await open_link(region_router, custody, banks, issued.token)
    assert [b.id for b in opened.banks] == ["sandbox-us"]  # the user's region only
    if backend.name == "sqlite":
        assert all(issued.token.encode() not in raw for _, raw in raw_files())


async def test_a_session_for_another_apps_user_or_redirect_is_refused(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    banks: BankDirectory,
) -> None:
    user_id = await _user(region_router, custody["eu"], app_id)
    with pytest.raises(LinkNotFound):
        await create_link_session(region_router, banks, LinkRequest(
            ApplicationId("app_aaaaaaaaaaaaaaaaaaaaaaaaaa"), user_id, REDIRECT))
    with pytest.raises(LinkRequestInvalid) as refused:
        await create_link_session(region_router, banks, LinkRequest(
            app_id, user_id, "https://app.test/cb?extra=1"))
    assert refused.value.pointer == "#/redirect_uri"
    with pytest.raises(LinkNotFound):
        await open_link(region_router, custody, banks, "lnk_eu_" + "a" * 52)

"""Operator accounts: argon2id hashes, replicated rows, sessions with an idle timeout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from aggregator.errors import ConfigError
from aggregator.ids import parse_id, secret_digest
from aggregator.models import Operator, OperatorRole, OperatorSession
from aggregator.models.base import utcnow
from aggregator.operators import (
    IDLE_TIMEOUT,
    LIFETIME,
    create_operator,
    csrf_matches,
    csrf_token,
    resume,
    sign_in,
)
from aggregator.store import RegionRouter

PASSWORD = "a long operator password"


async def test_an_operator_is_written_to_every_region_with_an_argon2id_hash(
    region_router: RegionRouter,
) -> None:
    operator_id = await create_operator(region_router, "ada", OperatorRole.ADMIN, PASSWORD)
    assert parse_id(operator_id) == ("opr", None)
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            row = (await session.execute(select(Operator))).scalar_one()
            dump = " ".join(str(v) for v in (await session.execute(
                text("SELECT * FROM operators"))).one())
        assert row.id == operator_id
        assert row.password_hash.startswith("$argon2id$")
        assert PASSWORD not in dump


async def test_names_and_passwords_are_checked_and_names_are_unique(
    region_router: RegionRouter,
) -> None:
    with pytest.raises(ConfigError, match="NAME"):
        await create_operator(region_router, "Ada Lovelace", OperatorRole.ADMIN, PASSWORD)
    with pytest.raises(ConfigError, match="password"):
        await create_operator(region_router, "ada", OperatorRole.ADMIN, "short")
    await create_operator(region_router, "ada", OperatorRole.VIEWER, PASSWORD)
    with pytest.raises(ConfigError, match="exists already"):
        await create_operator(region_router, "ada", OperatorRole.ADMIN, PASSWORD)


async def test_a_session_ends_after_the_idle_timeout_and_the_lifetime(
    region_router: RegionRouter,
) -> None:
    await create_operator(region_router, "vic", OperatorRole.VIEWER, PASSWORD)
    signed = await sign_in(region_router, "vic", PASSWORD)
    assert signed is not None
    who, token = signed
    assert who.role is OperatorRole.VIEWER
    assert not who.is_admin
    start = utcnow()
    # Active every 20 minutes: the session lives on, its last_seen_at moving each time.
    at = start
    while at < start + LIFETIME - timedelta(minutes=30):
        at += timedelta(minutes=20)
        assert await resume(region_router, token, now=at) is not None, at
    assert await resume(region_router, token, now=start + LIFETIME) is None
    # Idle for longer than the timeout: over.
    again = await sign_in(region_router, "vic", PASSWORD)
    assert again is not None
    late = utcnow() + IDLE_TIMEOUT + timedelta(seconds=1)
    assert await resume(region_router, again[1], now=late) is None
    assert await resume(region_router, "not-a-token") is None


async def test_only_the_token_digest_is_stored(region_router: RegionRouter) -> None:
    await create_operator(region_router, "ada", OperatorRole.ADMIN, PASSWORD)
    signed = await sign_in(region_router, "ada", PASSWORD)
    assert signed is not None
    _, token = signed
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            rows = (await session.execute(select(OperatorSession))).scalars().all()
        assert [r.token_digest for r in rows] == [secret_digest(token)]


def test_the_csrf_token_is_bound_to_the_session_token() -> None:
    assert csrf_matches("token-a", csrf_token("token-a"))
    assert not csrf_matches("token-b", csrf_token("token-a"))
    assert not csrf_matches("token-a", "")
    assert not csrf_matches("token-a", "é" * 64)


async def test_sign_in_refuses_a_disabled_operator(region_router: RegionRouter) -> None:
    operator_id = await create_operator(region_router, "ada", OperatorRole.ADMIN, PASSWORD)
    for region in region_router.regions:
        async with region_router.session(region) as session, session.begin():
            row = await session.get(Operator, operator_id)
            assert row is not None
            row.disabled_at = utcnow()
    assert await sign_in(region_router, "ada", PASSWORD) is None


async def test_a_password_past_the_limit_is_refused_even_if_it_starts_right(
    region_router: RegionRouter,
) -> None:
    exact = "x" * 1024
    await create_operator(region_router, "ada", OperatorRole.ADMIN, exact)
    assert await sign_in(region_router, "ada", exact) is not None
    assert await sign_in(region_router, "ada", exact + "y") is None

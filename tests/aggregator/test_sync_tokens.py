"""A fresh access token for the sync job: refreshed once, under a lease, never blindly."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from aggregator.custody import RegionCustody
from aggregator.models import AuditEvent, Connection, ConnectionStatus, Credential
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory, CredentialBusy, fresh_grant, refresh_due_at
from connectors import BankUnavailable, GrantRevoked, RefreshPolicy, TokenSet
from tests.aggregator._factories import Linked, LinkFactory


class StubOAuth:
    """The one call the token code makes: ``refresh``, counted, optionally failing."""

    def __init__(self, fail: Exception | None = None, delay: float = 0.0) -> None:
        self.presented: list[str] = []
        self.fail = fail
        self.delay = delay

    async def refresh(self, refresh_token: str, *, dpop_key: object = None) -> TokenSet:
        self.presented.append(refresh_token)
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        n = len(self.presented)
        return TokenSet(f"at-new-{n}", f"rt-new-{n}", utcnow() + timedelta(minutes=5),
                        "accounts", "Bearer")


class StubBanks(BankDirectory):
    def __init__(self, oauth: StubOAuth) -> None:  # no profiles, no HTTP
        self.stub = oauth

    def oauth(self, bank_id: str) -> StubOAuth:  # type: ignore[override]
        return self.stub


async def expire(router: RegionRouter, linked: Linked, **values: object) -> None:
    async with router.session("eu") as session, session.begin():
        await session.execute(
            update(Credential).where(Credential.id == linked.credential.id).values(
                access_expires_at=utcnow() - timedelta(seconds=1), **values
            )
        )


def test_refresh_is_due_before_expiry_with_bounded_jitter() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    expires = now + timedelta(minutes=5)
    rng = random.Random(7)
    dues = [refresh_due_at(expires, now, rng=rng) for _ in range(200)]
    assert all(d is not None and now <= d <= expires - timedelta(seconds=60) for d in dues)
    assert len(set(dues)) > 100  # jitter spreads a fleet out
    assert refresh_due_at(None, now) is None
    # Already expired as issued: still not asked again within the floor's minute.
    assert refresh_due_at(now - timedelta(seconds=5), now) == now + timedelta(seconds=60)


@pytest.mark.parametrize("expires_in", [1, 15, 30, 61, 120, 300, 3600, 86400])
def test_no_expires_in_makes_a_refresh_storm(expires_in: int) -> None:
    """Issue 14: at 15 s every refresh used to be due at once (61 a minute)."""
    now = datetime(2025, 3, 1, tzinfo=UTC)
    rng = random.Random(3)
    for _ in range(50):
        due = refresh_due_at(now + timedelta(seconds=expires_in), now, rng=rng)
        assert due is not None
        assert due - now >= timedelta(seconds=max(60, expires_in / 2))
        if expires_in >= 120:  # long enough to refresh ahead of expiry
            assert due < now + timedelta(seconds=expires_in)


def test_a_profile_floor_bounds_the_cadence() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    policy = RefreshPolicy(min_interval_seconds=300, min_lifetime_percent=80)
    due = refresh_due_at(now + timedelta(seconds=600), now, policy=policy)
    assert due == now + timedelta(seconds=480)
    due = refresh_due_at(now + timedelta(seconds=15), now, policy=policy)
    assert due == now + timedelta(seconds=300)


async def test_a_valid_token_is_used_without_asking_the_bank(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu", access_token="at-live")
    bank = StubOAuth()
    grant = await fresh_grant(region_router, custody["eu"], StubBanks(bank),
                              linked.connection.id, owner="t")
    assert grant.access_token == "at-live"
    assert "at-live" not in repr(grant)
    assert bank.presented == []


async def test_concurrent_syncs_refresh_an_expired_token_exactly_once(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old")
    await expire(region_router, linked)
    bank = StubOAuth(delay=0.2)
    banks = StubBanks(bank)

    grants = await asyncio.gather(*(
        fresh_grant(region_router, custody["eu"], banks, linked.connection.id, owner=f"w{i}")
        for i in range(3)
    ))

    assert bank.presented == ["rt-old"]
    assert {g.access_token for g in grants} == {"at-new-1"}
    async with region_router.reader("eu") as session:
        credential = (await session.execute(select(Credential))).scalar_one()
        key = await custody["eu"].data_keys.load(session, credential.user_id)
    opened = await custody["eu"].sealer.open_from(key, credential, "refresh_token_sealed")
    assert opened == "rt-new-1"
    assert credential.lease_owner is None
    assert credential.refresh_started_at is None


async def test_invalid_grant_marks_the_connection_for_re_consent(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await expire(region_router, linked)
    banks = StubBanks(StubOAuth(fail=GrantRevoked("sandbox: invalid_grant")))

    with pytest.raises(GrantRevoked):
        await fresh_grant(region_router, custody["eu"], banks, linked.connection.id, owner="t")

    async with region_router.reader("eu") as session:
        connection = await session.get(Connection, linked.connection.id)
        credential = (await session.execute(select(Credential))).scalar_one()
        actions = (await session.execute(select(AuditEvent.action))).scalars().all()
    assert connection is not None
    assert connection.status is ConnectionStatus.REAUTH_REQUIRED
    assert connection.status_reason == "invalid_grant"
    assert credential.lease_owner is None
    assert credential.refresh_due_at is None
    assert "connection.reauth_required" in actions


async def test_a_bank_that_was_never_reached_leaves_the_token_retryable(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await expire(region_router, linked)
    bank = StubOAuth(fail=BankUnavailable("sandbox: 503"))

    with pytest.raises(BankUnavailable):
        await fresh_grant(region_router, custody["eu"], StubBanks(bank), linked.connection.id,
                          owner="t")
    bank.fail = None
    grant = await fresh_grant(region_router, custody["eu"], StubBanks(bank),
                              linked.connection.id, owner="t")

    assert grant.access_token == "at-new-2"


async def test_a_refresh_that_crashed_midway_is_not_retried_blindly(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await expire(region_router, linked, refresh_started_at=utcnow() - timedelta(minutes=5),
                 lease_owner="dead", lease_expires_at=utcnow() - timedelta(minutes=4))
    bank = StubOAuth()

    with pytest.raises(CredentialBusy):
        await fresh_grant(region_router, custody["eu"], StubBanks(bank), linked.connection.id,
                          owner="t")
    assert bank.presented == []


async def test_an_inline_refresh_is_tallied_and_kept_in_the_connections_history(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    from aggregator.bankhealth import CallRecorder
    from aggregator.bankhealth.reads import last_hour, refresh_history

    linked = await make_linked("eu")
    await expire(region_router, linked)
    recorder = CallRecorder(region_router, interval=3600)
    with pytest.raises(GrantRevoked):
        await fresh_grant(region_router, custody["eu"],
                          StubBanks(StubOAuth(fail=GrantRevoked("sandbox: invalid_grant"))),
                          linked.connection.id, owner="sync:7", recorder=recorder)
    await recorder.flush()
    async with region_router.reader("eu") as session:
        history = await refresh_history(session, linked.connection.id)
        figures = (await last_hour(session, utcnow()))["sandbox"]["refresh"]
    assert [(a.outcome, a.error_code, a.worker) for a in history] == [
        ("invalid_grant", "grant_revoked", "sync:7")]
    assert (figures.calls, figures.failures) == (1, 0)  # a refused grant is a proper answer

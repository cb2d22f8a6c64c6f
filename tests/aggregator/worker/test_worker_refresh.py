"""One leased credential through the refresh path, against a stub bank."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from aggregator.custody import RegionCustody
from aggregator.models import AuditEvent, Connection, ConnectionStatus, Credential
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from aggregator.worker import Breaker, RefreshContext, WorkerMetrics, lease_batch
from aggregator.worker.lease import Lease, mark_in_flight
from aggregator.worker.refresh import refresh_leased
from connectors import BankUnavailable, GrantRevoked, TokenSet
from tests.aggregator._factories import Linked, LinkFactory

LEASE = timedelta(seconds=30)


class StubOAuth:
    def __init__(self, fail: Exception | None = None,
                 during: Callable[[], Awaitable[None]] | None = None) -> None:
        self.presented: list[str] = []
        self.fail = fail
        self.during = during

    async def refresh(self, refresh_token: str, *, dpop_key: object = None) -> TokenSet:
        self.presented.append(refresh_token)
        if self.during is not None:
            await self.during()
        if self.fail is not None:
            raise self.fail
        return TokenSet("at-new", "rt-new", utcnow() + timedelta(days=30), "accounts", "Bearer")


class StubBanks(BankDirectory):
    def __init__(self, oauth: StubOAuth) -> None:
        self.stub = oauth

    def oauth(self, bank_id: str) -> StubOAuth:  # type: ignore[override]
        return self.stub


def _ctx(router: RegionRouter, custody: dict[str, RegionCustody], bank: StubOAuth,
         **kw: object) -> RefreshContext:
    return RefreshContext(router, custody, StubBanks(bank), WorkerMetrics(), "t",
                          max_interval=timedelta(hours=1), **kw)  # type: ignore[arg-type]


async def _lease(router: RegionRouter, linked: Linked, **values: object) -> Lease:
    async with router.session("eu") as session, session.begin():
        await session.execute(update(Credential).where(Credential.id == linked.credential.id)
                              .values(refresh_due_at=utcnow() - timedelta(seconds=1), **values))
    [lease] = await lease_batch(router, "eu", "t", now=utcnow(), limit=1, lease_for=LEASE)
    return lease


async def _row(router: RegionRouter) -> tuple[Credential, Connection]:
    async with router.reader("eu") as session:
        found = (await session.execute(select(Credential, Connection).join(
            Connection, Connection.id == Credential.connection_id))).one()
    return found[0], found[1]


async def test_rotated_tokens_are_committed_with_a_due_time_capped_by_the_max_interval(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old")
    bank = StubOAuth()
    lease = await _lease(region_router, linked)

    assert await refresh_leased(_ctx(region_router, custody, bank), "eu", lease) == "ok"

    credential, _ = await _row(region_router)
    async with region_router.reader("eu") as session:
        key = await custody["eu"].data_keys.load(session, credential.user_id)
    assert bank.presented == ["rt-old"]
    assert await custody["eu"].sealer.open_from(key, credential, "refresh_token_sealed") == "rt-new"
    assert credential.refresh_due_at is not None
    assert credential.refresh_due_at <= utcnow() + timedelta(hours=1)  # not in 24 days
    assert credential.lease_owner is None
    assert credential.refresh_started_at is None


async def test_retry_after_sets_the_next_due_time_and_clears_the_in_flight_mark(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    bank = StubOAuth(fail=BankUnavailable("429", retry_after=30))
    lease = await _lease(region_router, linked)

    outcome = await refresh_leased(_ctx(region_router, custody, bank), "eu", lease)

    credential, _ = await _row(region_router)
    assert outcome == "rate_limited"
    assert credential.refresh_due_at is not None
    assert credential.refresh_due_at >= utcnow() + timedelta(seconds=29)
    assert credential.attempts == 1
    assert credential.refresh_started_at is None  # a 429 answer rotated nothing
    assert credential.lease_owner is None


async def test_a_timeout_after_sending_keeps_the_in_flight_mark_for_resolution(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    timeout = BankUnavailable("timeout")
    timeout.__cause__ = httpx.ReadTimeout("read timed out")
    lease = await _lease(region_router, linked)

    outcome = await refresh_leased(
        _ctx(region_router, custody, StubOAuth(fail=timeout)), "eu", lease)

    credential, _ = await _row(region_router)
    assert outcome == "unavailable"
    assert credential.refresh_started_at is not None
    assert credential.lease_owner is None


async def test_a_dead_workers_in_flight_row_is_tried_once_then_flagged_for_re_consent(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    bank = StubOAuth(fail=GrantRevoked("invalid_grant"))
    lease = await _lease(region_router, linked, refresh_started_at=utcnow() - timedelta(minutes=2),
                         lease_owner="dead", lease_expires_at=utcnow() - timedelta(minutes=1))
    assert lease.in_flight_before

    outcome = await refresh_leased(_ctx(region_router, custody, bank), "eu", lease)

    credential, connection = await _row(region_router)
    async with region_router.reader("eu") as session:
        actions = (await session.execute(select(AuditEvent.action))).scalars().all()
    assert outcome == "invalid_grant"
    assert len(bank.presented) == 1
    assert connection.status is ConnectionStatus.REAUTH_REQUIRED
    assert "connection.reauth_required" in actions
    assert credential.refresh_due_at is None
    assert credential.lease_owner is None


async def test_a_timeout_after_the_lease_was_taken_over_has_the_row_verified(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    """Our request may have reached the bank after a peer took the row over: the release
    fails on the version, and the row is handed to its next lessee for verification."""
    linked = await make_linked("eu")
    timeout = BankUnavailable("timeout")
    timeout.__cause__ = httpx.ReadTimeout("read timed out")

    async def taken_over() -> None:
        async with region_router.session("eu") as session, session.begin():
            await session.execute(update(Credential).values(
                version=Credential.version + 1, lease_owner="peer",
                lease_expires_at=utcnow() + LEASE))

    lease = await _lease(region_router, linked)

    outcome = await refresh_leased(
        _ctx(region_router, custody, StubOAuth(fail=timeout, during=taken_over)), "eu", lease)

    credential, connection = await _row(region_router)
    assert outcome == "unavailable"
    assert connection.status is ConnectionStatus.ACTIVE
    assert credential.refresh_started_at is not None
    assert credential.lease_owner is None  # the peer's heartbeat no longer extends it
    # our mark, the peer's lease, then ours: a commit pending under the peer's is refused
    assert credential.version == lease.claimed + 3


async def test_invalid_grant_after_another_worker_stored_tokens_has_them_verified(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    """The peer's tokens are kept but not trusted: at a strict bank our late presentation
    of the old refresh token revoked the grant they belong to (the real-bank orders are in
    test_worker_takeover.py). The row is due now and marked, for its next lessee."""
    linked = await make_linked("eu")

    async def another_worker_wins() -> None:
        # Our lease lapses mid-call and a peer refreshes and commits first.
        async with region_router.session("eu") as session, session.begin():
            await session.execute(update(Credential).values(
                version=Credential.version + 5, refresh_token_sealed=b"peer", lease_owner=None,
                lease_expires_at=None, refresh_started_at=None))

    bank = StubOAuth(fail=GrantRevoked("invalid_grant"), during=another_worker_wins)
    lease = await _lease(region_router, linked)

    outcome = await refresh_leased(_ctx(region_router, custody, bank), "eu", lease)

    credential, connection = await _row(region_router)
    assert outcome == "reverify"
    assert connection.status is ConnectionStatus.ACTIVE  # not flagged on a guess
    assert credential.refresh_token_sealed == b"peer"
    assert credential.refresh_started_at is not None  # its next lessee resolves it
    assert credential.refresh_due_at is not None
    assert credential.refresh_due_at <= utcnow()
    assert credential.lease_owner is None
    assert credential.version > lease.claimed + 5


async def test_an_open_breaker_hands_the_lease_back_without_calling_the_bank(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    bank = StubOAuth()
    ctx = _ctx(region_router, custody, bank, breaker_cool_down=20.0)
    breaker = ctx.breakers["sandbox"] = Breaker(threshold=1, cool_down=20.0)
    breaker.failure()
    lease = await _lease(region_router, linked)

    assert "sandbox" in ctx.unavailable_banks()
    assert await refresh_leased(ctx, "eu", lease) == "breaker_open"

    credential, _ = await _row(region_router)
    assert bank.presented == []
    assert credential.lease_owner is None
    assert credential.refresh_due_at is not None
    assert credential.refresh_due_at >= utcnow() + timedelta(seconds=19)


async def test_a_stale_lease_never_persists_over_newer_tokens(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    lease = await _lease(region_router, linked)
    assert await mark_in_flight(region_router, "eu", lease, now=utcnow()) is not None
    # The same (now stale) lease tries again: its version is gone.
    assert await mark_in_flight(region_router, "eu", lease, now=utcnow()) is None
    bank = StubOAuth()

    assert await refresh_leased(_ctx(region_router, custody, bank), "eu", lease) == "lease_lost"
    assert bank.presented == []
    await asyncio.sleep(0)


async def test_each_refresh_logs_one_line_with_ids_bank_and_outcome_never_a_token(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old-secret")
    lease = await _lease(region_router, linked)
    caplog.set_level(logging.INFO, logger="aggregator.worker.refresh")

    assert await refresh_leased(_ctx(region_router, custody, StubOAuth()), "eu", lease) == "ok"

    lines = [r for r in caplog.records if r.name == "aggregator.worker.refresh"]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields == {"credential_id": linked.credential.id,
                      "connection_id": linked.connection.id,
                      "bank": linked.connection.bank_id, "outcome": "ok"}
    assert linked.connection.id in lines[0].getMessage()
    assert "rt-" not in caplog.text
    assert "at-new" not in caplog.text


async def test_a_refresh_is_not_sent_when_its_lease_may_have_lapsed(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    """Sent after the lease's end, it could race a worker that took the row over with the
    same refresh token: a strict bank then revokes the grant and neither worker sees it."""
    linked = await make_linked("eu")
    bank = StubOAuth()
    lease = await _lease(region_router, linked)
    ctx = _ctx(region_router, custody, bank)
    ctx.lease_deadlines[lease.credential.id] = time.monotonic() - 1.0  # long past

    outcome = await refresh_leased(ctx, "eu", lease)

    credential, _ = await _row(region_router)
    assert outcome == "lease_lost"
    assert bank.presented == []  # nothing left for the bank
    assert credential.lease_owner is None  # handed back, due again

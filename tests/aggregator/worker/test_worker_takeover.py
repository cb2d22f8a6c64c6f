"""A lapsed lease taken over by a second worker, against the real sandbox bank on loopback.

The sandbox bank rotates refresh tokens and revokes the whole grant when a used one is
presented again (reuse detection). Two refresh contexts stand for two workers; the first
one's lease lapses by the clock seam (the second leases at a ``now`` past its end), and
the order in which their requests reach the bank is set by awaiting them in turn, never
by sleeping. Whatever the order, the credential must end with live tokens stored or with
the connection flagged ``reauth_required`` by exactly one event: never ``active`` with a
dead grant (an unflagged loss).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId
from aggregator.models import ConnectionStatus, OutboundEvent
from aggregator.models.base import utcnow
from aggregator.sandbox.testing import sandbox_profile
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from aggregator.sync.tokens import Rotation
from aggregator.worker import RefreshContext, WorkerMetrics, lease_batch
from aggregator.worker.commit import Committer
from aggregator.worker.lease import Lease
from aggregator.worker.refresh import refresh_leased
from connectors import load_profiles
from connectors.egress import EgressPolicy
from tests.aggregator.worker._harness import Bank, link_many, revoked_grants, serve_banks, states

LEASE = timedelta(seconds=15)
BANK = "strict"


@pytest.fixture
def bank() -> Iterator[Bank]:
    with serve_banks(BANK) as banks:
        yield banks[BANK]


@pytest.fixture
async def directory(bank: Bank, tmp_path: Path) -> AsyncIterator[BankDirectory]:
    (tmp_path / f"{BANK}.toml").write_text(sandbox_profile(BANK, bank.url))
    profiles = load_profiles([tmp_path])
    async with httpx.AsyncClient() as http:
        found = BankDirectory(profiles, http, environ={},
                              policy=EgressPolicy(allow_http_loopback=True))
        yield found
        await found.aclose()


class HeldCommitter(Committer):
    """A committer that holds each rotation until :attr:`go` is set: the bank has
    answered, nothing is stored yet (the answered-but-uncommitted window, stretched)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.answered = asyncio.Event()
        self.go = asyncio.Event()

    async def persist(self, region: str, rotation: Rotation) -> bool:
        self.answered.set()
        await self.go.wait()
        return await super().persist(region, rotation)


def _worker(router: RegionRouter, custody: dict[str, RegionCustody], banks: BankDirectory,
            owner: str) -> RefreshContext:
    return RefreshContext(router, custody, banks, WorkerMetrics(), owner,
                          max_interval=timedelta(hours=1))


async def _lease(ctx: RefreshContext, custody: dict[str, RegionCustody], *,
                 at_offset: float = 0.0) -> Lease:
    """Lease the one due credential as the Worker does (marked in flight with the lease),
    at ``now + at_offset`` seconds: the clock seam that makes another lease lapse."""
    [lease] = await lease_batch(ctx.router, "eu", ctx.owner,
                                now=utcnow() + timedelta(seconds=at_offset), limit=1,
                                lease_for=LEASE, mark_in_flight=True,
                                keys=custody["eu"].data_keys)
    return lease


async def _settle(router: RegionRouter, custody: dict[str, RegionCustody],
                  banks: BankDirectory) -> list[str]:
    """A later worker's passes: refresh whatever is due now (bounded), as the next
    lessee of a row left for resolution would. Returns the outcomes."""
    ctx = _worker(router, custody, banks, "settler")
    outcomes: list[str] = []
    for _ in range(3):
        leases = await lease_batch(router, "eu", ctx.owner, now=utcnow(), limit=10,
                                   lease_for=LEASE, mark_in_flight=True,
                                   keys=custody["eu"].data_keys)
        if not leases:
            break
        outcomes += [await refresh_leased(ctx, "eu", lease) for lease in leases]
    return outcomes


async def _reauth_events(router: RegionRouter) -> int:
    async with router.reader("eu") as session:
        types = (await session.execute(select(OutboundEvent.type))).scalars().all()
    return sum(1 for t in types if t == "connection.reauth_required")


async def _assert_never_unflagged(router: RegionRouter, custody: dict[str, RegionCustody],
                                  bank: Bank) -> ConnectionStatus:
    [state] = (await states(router, custody["eu"], {BANK: bank})).values()
    if state.status is ConnectionStatus.ACTIVE:
        assert state.refresh_live, "unflagged loss: the connection is active, its grant dead"
        assert await _reauth_events(router) == 0
    else:
        assert state.status is ConnectionStatus.REAUTH_REQUIRED
        assert await _reauth_events(router) == 1
    assert not state.leased
    return state.status


async def test_a_late_request_after_a_takeover_that_rotated_ends_flagged_not_silently_dead(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    bank: Bank, directory: BankDirectory,
) -> None:
    """A's request is still on its way when its lease lapses; B takes over, presents the
    same refresh token first and stores the rotation; A's request then arrives, and the
    bank, seeing a used token, revokes the grant. A must not take B's tokens for live."""
    await link_many(region_router, custody["eu"], app_id, bank, 1, users=1)
    a = _worker(region_router, custody, directory, "worker-a")
    b = _worker(region_router, custody, directory, "worker-b")
    lease_a = await _lease(a, custody)
    lease_b = await _lease(b, custody, at_offset=LEASE.total_seconds() + 1)  # A's lapsed
    assert lease_b.in_flight_before

    assert await refresh_leased(b, "eu", lease_b) == "ok"
    outcome_a = await refresh_leased(a, "eu", lease_a)  # A's request reaches the bank now

    assert outcome_a != "ok"
    assert revoked_grants(bank) == 1  # the bank saw the old token twice
    await _settle(region_router, custody, directory)
    assert await _assert_never_unflagged(region_router, custody, bank) is (
        ConnectionStatus.REAUTH_REQUIRED)


async def test_an_answer_left_uncommitted_past_the_lease_ends_flagged_once(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    bank: Bank, directory: BankDirectory,
) -> None:
    """The bank answers A (it rotated), A's lease lapses before its commit; B takes over
    and presents the retired token: revoked. B flags the connection; A's late commit is
    refused by the version, so it cannot overwrite the flag with dead tokens."""
    await link_many(region_router, custody["eu"], app_id, bank, 1, users=1)
    a = _worker(region_router, custody, directory, "worker-a")
    held = HeldCommitter(region_router, custody, max_interval=timedelta(hours=1))
    a.committer = held
    b = _worker(region_router, custody, directory, "worker-b")
    lease_a = await _lease(a, custody)
    task_a = asyncio.create_task(refresh_leased(a, "eu", lease_a))
    async with asyncio.timeout(10):
        await held.answered.wait()  # the bank rotated for A; nothing stored
    lease_b = await _lease(b, custody, at_offset=LEASE.total_seconds() + 1)

    assert await refresh_leased(b, "eu", lease_b) == "invalid_grant"
    held.go.set()
    assert await task_a == "lease_lost"

    assert revoked_grants(bank) == 1
    await _settle(region_router, custody, directory)
    assert await _assert_never_unflagged(region_router, custody, bank) is (
        ConnectionStatus.REAUTH_REQUIRED)


async def test_a_takeover_after_a_lapse_with_nothing_sent_keeps_the_grant_alive(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    bank: Bank, directory: BankDirectory,
) -> None:
    """A's lease may have lapsed before it sent (its deadline, moved by heartbeats, is
    past): A hands the row back unsent, B's takeover refresh is the only one, and the
    grant lives on: the guard is what keeps the two requests from racing."""
    await link_many(region_router, custody["eu"], app_id, bank, 1, users=1)
    a = _worker(region_router, custody, directory, "worker-a")
    b = _worker(region_router, custody, directory, "worker-b")
    lease_a = await _lease(a, custody)
    a.lease_deadlines[lease_a.credential.id] = time.monotonic() + a.lease_margin / 2
    lease_b = await _lease(b, custody, at_offset=LEASE.total_seconds() + 1)

    assert await refresh_leased(b, "eu", lease_b) == "ok"
    assert await refresh_leased(a, "eu", lease_a) == "lease_lost"

    assert revoked_grants(bank) == 0
    assert bank.requests.count == 1
    assert await _assert_never_unflagged(region_router, custody, bank) is ConnectionStatus.ACTIVE

"""A bank URL our egress policy refuses: its own outcome, a connection reason, the ceiling.

The bank directory goes through the real egress client with the production policy (no
plain http, no loopback), and the built-in sandbox profile points at a loopback http
URL: every call is refused before anything leaves, as for a misconfigured profile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from aggregator.custody import RegionCustody
from aggregator.models import Connection, ConnectionStatus, Credential, SyncState
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory, Syncer
from aggregator.worker import RefreshContext, WorkerMetrics, lease_batch
from aggregator.worker.breaker import Backoff, BreakerState
from aggregator.worker.egress import EGRESS_REFUSED
from aggregator.worker.refresh import refresh_leased
from aggregator.worker.sync_schedule import SyncSchedule
from connectors import EgressPolicy, egress_client, load_profiles
from tests.aggregator._factories import LinkFactory
from tests.aggregator.worker.test_worker_sync_schedule import RecordingSyncer

CEILING = 900.0


@pytest.fixture
async def refusing_banks() -> AsyncIterator[BankDirectory]:
    profile = load_profiles([])["sandbox-eu"]
    policy = EgressPolicy()  # production defaults: the sandbox's http://127.0.0.1 is refused
    assert policy.url_problem(profile.issuer)
    async with egress_client(policy) as http:
        banks = BankDirectory({"sandbox": profile}, http, policy=policy)
        yield banks
        await banks.aclose()


async def _connection(router: RegionRouter) -> Connection:
    async with router.reader("eu") as session:
        return (await session.execute(select(Connection))).scalar_one()


async def test_a_refused_refresh_is_its_own_outcome_and_waits_the_backoff_ceiling(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
    refusing_banks: BankDirectory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old")
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(refresh_due_at=utcnow()))
    [lease] = await lease_batch(region_router, "eu", "t", now=utcnow(), limit=1,
                                lease_for=timedelta(seconds=30))
    metrics = WorkerMetrics()
    ctx = RefreshContext(region_router, custody, refusing_banks, metrics, "t",
                         max_interval=timedelta(hours=1), backoff=Backoff(1.0, CEILING))

    assert await refresh_leased(ctx, "eu", lease) == EGRESS_REFUSED

    async with region_router.reader("eu") as session:
        credential = await session.get(Credential, linked.credential.id)
    assert credential is not None
    assert credential.refresh_due_at is not None
    # The ceiling's top half, where an unreachable bank's first retry is about 1 s away.
    assert credential.refresh_due_at >= utcnow() + timedelta(seconds=CEILING / 2 - 5)
    assert (credential.attempts, credential.lease_owner) == (1, None)
    assert credential.refresh_started_at is None  # refused before sending: nothing rotated
    connection = await _connection(region_router)
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.status_reason == EGRESS_REFUSED
    assert metrics.registry.get_sample_value(
        "aggregator_worker_refreshes_total",
        {"bank": "sandbox", "outcome": EGRESS_REFUSED}) == 1.0
    assert metrics.registry.get_sample_value(
        "aggregator_worker_refreshes_total", {"bank": "sandbox", "outcome": "unavailable"}) \
        is None
    assert ctx.breaker("sandbox").state is BreakerState.CLOSED  # the bank saw nothing


async def test_a_refused_scheduled_sync_marks_the_connection_until_one_goes_through(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
    refusing_banks: BankDirectory,
) -> None:
    linked = await make_linked("eu")
    job = SyncSchedule(region_router, refusing_banks,
                       Syncer(region_router, custody, refusing_banks))

    assert await job.run_once(asyncio.Event()) == 0

    connection = await _connection(region_router)
    assert (connection.status, connection.status_reason) == (ConnectionStatus.ACTIVE,
                                                             EGRESS_REFUSED)
    async with region_router.reader("eu") as session:
        state = await session.get(SyncState, linked.connection.id)
    assert state is not None
    assert state.last_error == EGRESS_REFUSED
    # The profile is fixed (here: a syncer that gets through): the reason goes.
    later = utcnow() + timedelta(hours=7)
    fixed = SyncSchedule(region_router, refusing_banks, RecordingSyncer(region_router))
    assert await fixed.run_once(asyncio.Event(), now=later) == 1
    assert (await _connection(region_router)).status_reason is None

"""The worker's and the gateway's metrics appear, and move with the work they describe.

A worker runs in this process against a sandbox bank on loopback (real HTTP, real
tokens, both backends); its registry is read in the Prometheus text format, as a
scraper would.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client import generate_latest
from sqlalchemy import update

from aggregator.bank_profiles import check_profiles
from aggregator.custody import RegionCustody
from aggregator.events.hooks import connection_event
from aggregator.http.metrics import HttpMetrics
from aggregator.ids import ApplicationId, ConnectionId
from aggregator.models import Connection, Credential
from aggregator.models.base import utcnow
from aggregator.sandbox import Faults
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from aggregator.worker import RefreshContext, Worker, WorkerConfig, WorkerMetrics
from aggregator.worker.outbox import outbox_job
from tests.aggregator.worker._harness import link_many, serve_banks, wait_for, write_config

N = 6


def value(exposition: str, series: str) -> float:
    """The sample ``series`` (name with labels, exactly as exposed); 0 if absent."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _pending_event(router: RegionRouter, connection_id: str) -> None:
    async with router.session("eu") as session, session.begin():
        await connection_event(session, ConnectionId(connection_id), "connection.reauthorized")


async def test_worker_metrics_appear_and_move(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    settings: Settings, tmp_path: Path,
) -> None:
    eu = custody["eu"]
    with serve_banks("bank-a") as banks:
        banks["bank-a"].sandbox.faults = Faults(latency=0.15)
        ids = await link_many(region_router, eu, app_id, banks["bank-a"], N, synced=True)
        async with region_router.session("eu") as session, session.begin():
            # A dead worker's row: in flight under an expired lease (a takeover).
            await session.execute(update(Credential).where(Credential.id == ids[0]).values(
                refresh_started_at=utcnow() - timedelta(minutes=2), lease_owner="dead",
                lease_expires_at=utcnow() - timedelta(minutes=1)))
            first = await session.get(Credential, ids[0])
            assert first is not None
            connection_id = first.connection_id
        await _pending_event(region_router, connection_id)
        loaded = load_settings(write_config(tmp_path, settings, banks))
        metrics = WorkerMetrics()
        seen: dict[str, float] = {}
        async with httpx.AsyncClient() as http:
            ctx = RefreshContext(region_router, custody, BankDirectory(
                check_profiles(loaded), http), metrics, "t", max_interval=timedelta(hours=1))
            outbox = outbox_job(region_router, http, ctx.custody, owner="t", batch=8,
                                metrics=metrics)
            assert outbox is not None
            worker = Worker(ctx, WorkerConfig(concurrency=1, batch=1, poll_seconds=0.05,
                                              stats_seconds=0.05), [outbox])
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))

            async def done() -> bool:
                text = generate_latest(metrics.registry).decode()
                for series in ('aggregator_worker_due_backlog{region="eu"}',
                               'aggregator_worker_oldest_due_age_seconds{region="eu"}',
                               'aggregator_worker_outbox_depth{region="eu"}'):
                    seen[series] = max(seen.get(series, 0.0), value(text, series))
                return value(text, 'aggregator_worker_refreshes_total{bank="bank-a",'
                                   'outcome="ok"}') >= N
            try:
                assert await wait_for(done, 20, every=0.02)
                await asyncio.sleep(0.3)  # one more stats pass, now that nothing is due
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        text = generate_latest(metrics.registry).decode()

    # Moved up while work was due, back to zero once done.
    assert seen['aggregator_worker_due_backlog{region="eu"}'] >= 1
    assert seen['aggregator_worker_oldest_due_age_seconds{region="eu"}'] > 0
    assert seen['aggregator_worker_outbox_depth{region="eu"}'] >= 1
    assert value(text, 'aggregator_worker_due_backlog{region="eu"}') == 0
    assert value(text, 'aggregator_worker_outbox_depth{region="eu"}') == 0
    assert value(text, 'aggregator_worker_refreshes_total{bank="bank-a",outcome="ok"}') == N
    assert value(text, 'aggregator_worker_refresh_duration_seconds_count{bank="bank-a"}') == N
    assert value(text, 'aggregator_worker_refresh_duration_seconds_bucket{bank="bank-a",'
                       'le="0.1"}') == 0  # the bank's 150 ms latency is measured
    assert value(text, 'aggregator_worker_lease_takeovers_total{region="eu"}') == 1
    assert value(text, 'aggregator_worker_leased_total{region="eu"}') == N
    assert value(text, 'aggregator_worker_breaker_state{bank="bank-a"}') == 0
    assert value(text, 'aggregator_worker_error_budget_remaining{bank="bank-a"}') == 1
    assert value(text, 'aggregator_worker_refresh_committed_total') == N
    assert 1 <= value(text, 'aggregator_worker_refresh_commits_total') <= N
    # The application has no webhook endpoint: the attempt fails (and is not retried).
    assert value(text, 'aggregator_worker_outbox_deliveries_total{outcome="failed"}') == 1
    assert value(text, 'aggregator_worker_in_flight') == 0


async def test_gateway_fleet_gauges_read_the_backlog_and_the_outbox(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
) -> None:
    eu = custody["eu"]
    with serve_banks("bank-a") as banks:
        ids = await link_many(region_router, eu, app_id, banks["bank-a"], 3, due_in=-30)
    async with region_router.reader("eu") as session:
        connection = await session.get(Connection, (await session.get(
            Credential, ids[0])).connection_id)  # type: ignore[union-attr]
    assert connection is not None
    await _pending_event(region_router, connection.id)
    metrics = HttpMetrics()

    await metrics.refresh_fleet(region_router)

    text = generate_latest(metrics.registry).decode()
    assert value(text, 'aggregator_refresh_due_backlog{region="eu"}') == 3
    assert value(text, 'aggregator_refresh_due_backlog{region="us"}') == 0
    assert value(text, 'aggregator_refresh_oldest_due_age_seconds{region="eu"}') >= 29
    assert value(text, 'aggregator_outbox_depth{region="eu"}') == 1
    # Scrapes within FLEET_SECONDS reuse the values instead of querying again.
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(refresh_due_at=None))
    await metrics.refresh_fleet(region_router)
    text = generate_latest(metrics.registry).decode()
    assert value(text, 'aggregator_refresh_due_backlog{region="eu"}') == 3


async def test_gateway_exposes_each_regions_bank_health(region_router: RegionRouter) -> None:
    from aggregator.bankhealth import CallRecorder
    from aggregator.bankhealth.store import publish_breakers
    from aggregator.models.base import utcnow

    recorder = CallRecorder(region_router)
    for outcome in ("ok", "ok", "ok", "unavailable"):
        recorder.call("eu", "bank-a", "refresh", outcome, 0.3)
    await recorder.flush()
    now = utcnow()
    await publish_breakers(region_router, "eu", "w:1", {"bank-a": ("half_open", now)}, now)
    metrics = HttpMetrics()

    await metrics.refresh_fleet(region_router)

    text = generate_latest(metrics.registry).decode()
    # The exposition lists labels in alphabetical order.
    labels = 'bank="bank-a",operation="refresh"'
    assert value(text, f'aggregator_bank_calls_last_hour{{{labels},outcome="ok",region="eu"}}') == 3
    assert value(text, f'aggregator_bank_error_rate_last_hour{{{labels},region="eu"}}') == 0.25
    assert value(text, f'aggregator_bank_call_p95_seconds{{{labels},region="eu"}}') == 0.5
    assert value(text, 'aggregator_bank_breaker_state{bank="bank-a",region="eu"}') == 1
    assert value(text, 'aggregator_bank_breaker_processes{bank="bank-a",region="eu"}') == 1
    assert 'region="us"}' not in text.split("aggregator_bank_calls_last_hour", 1)[1]

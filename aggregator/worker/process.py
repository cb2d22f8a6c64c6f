"""One worker process: services opened, signals wired, metrics served, a hard deadline.

SIGTERM and SIGINT set the stop event; :class:`~aggregator.worker.runner.Worker` then
stops leasing and drains. A second signal, or the drain overrunning
``shutdown_timeout``, ends the process anyway: an orchestrator's kill timer must never
be what stops a worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

import httpx

from aggregator.bank_profiles import check_profiles
from aggregator.bankhealth import CallRecorder
from aggregator.bankhealth.job import BankHealthJob
from aggregator.custody import open_custody
from aggregator.erasure import ErasureConfig, ErasureMetrics
from aggregator.plaid.wiring import attach_plaid
from aggregator.settings import Settings
from aggregator.store import RegionRouter, require_head
from aggregator.sync import BudgetMetrics, Syncer
from aggregator.sync.banks import BankDirectory
from aggregator.worker.breaker import Backoff
from aggregator.worker.consent import ConsentWatch
from aggregator.worker.erasure import DEFAULT_ESCROW, ErasureSweep
from aggregator.worker.idempotency import IdempotencyPurge
from aggregator.worker.jobs import PeriodicJob
from aggregator.worker.metrics import WorkerMetrics
from aggregator.worker.outbox import outbox_job
from aggregator.worker.plaid import PlaidSweep
from aggregator.worker.refresh import CrashPoints, RefreshContext
from aggregator.worker.rotation import KeyMetrics, KeyRotation
from aggregator.worker.runner import Worker, WorkerConfig, default_owner
from aggregator.worker.sync_schedule import SyncSchedule
from connectors import egress_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Command-line choices beyond :class:`WorkerConfig`."""

    per_bank: int = 8
    max_interval: timedelta = timedelta(days=1)
    breaker_threshold: int = 5
    breaker_cool_down: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 900.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    owner: str | None = None
    #: Commit answered rotations before sending the next refresh (shrinks the window in
    #: which a killed worker loses grants; :class:`~aggregator.worker.commit.Committer`).
    commit_before_send: bool = False
    #: How long a failed revocation's token is kept for retries after an erasure.
    escrow_for: timedelta = DEFAULT_ESCROW


async def run_worker(settings: Settings, config: WorkerConfig, options: WorkerOptions) -> None:
    """Run until SIGTERM/SIGINT, then drain within ``config.shutdown_timeout``."""
    metrics = WorkerMetrics()
    if options.metrics_port is not None:
        metrics.serve(options.metrics_port, options.metrics_host)
    profiles = check_profiles(settings)
    # Every refresh in flight may hold a database connection: a pool smaller than the
    # concurrency opens and closes overflow connections all the time, and a PostgreSQL
    # connection costs a server process (measured: the worker's main cost).
    pool = {"pool_size": config.concurrency + 2, "max_overflow": 4}
    async with AsyncExitStack() as stack:
        router = RegionRouter(settings, engine_options=pool)
        stack.push_async_callback(router.dispose)
        for region in router.regions:
            await require_head(router.engine(region), region)
        custody = await open_custody(router, settings)
        for keys in custody.values():
            stack.callback(keys.close)
        # Keep-alive connections for every refresh in flight, in guarded pools of a few
        # each (connectors.egress.sharded: httpcore's per-request pool scan).
        http = await stack.enter_async_context(
            egress_client(settings.egress, sharded=True, limits=httpx.Limits(
                max_connections=config.concurrency,
                max_keepalive_connections=config.concurrency)))
        banks = BankDirectory(profiles, http, policy=settings.egress)
        stack.push_async_callback(banks.aclose)
        ctx = RefreshContext(
            router=router, custody=custody, banks=banks,
            metrics=metrics, owner=options.owner or default_owner(),
            max_interval=options.max_interval, per_bank=options.per_bank,
            backoff=Backoff(options.backoff_base, options.backoff_cap),
            breaker_threshold=options.breaker_threshold,
            breaker_cool_down=options.breaker_cool_down, crash=CrashPoints.from_env(),
            commit_before_send=options.commit_before_send,
            recorder=CallRecorder(router),
        )
        health = bank_health_job(ctx)
        stack.push_async_callback(health.close)  # after the drain: the last flush
        attach_plaid(ctx.banks, settings)
        stop = asyncio.Event()
        _on_signals(stop, config.shutdown_timeout)
        log.info("worker %s started (regions %s)", ctx.owner, ", ".join(router.regions))
        jobs = [*_jobs(ctx, config, options, http, settings), health]
        await Worker(ctx, config, jobs).run(stop)
        log.info("worker %s stopped", ctx.owner)


def bank_health_job(ctx: RefreshContext) -> BankHealthJob:
    """Flushes ``ctx.recorder`` and publishes this process's breakers (docs/architecture.md,
    "Bank health")."""
    if ctx.recorder is None:
        raise ValueError("the worker's refresh context has no recorder")

    def states() -> dict[str, str]:
        return {bank: b.state.name.lower() for bank, b in ctx.breakers.items()}

    def regions_of(bank: str) -> list[str]:
        if ctx.banks.is_plaid(bank):
            return [r for r in ctx.banks.plaid_regions() if r in ctx.router.regions]
        try:
            return [ctx.banks.profile(bank).region]
        except Exception:
            return list(ctx.router.regions)

    return BankHealthJob(ctx.recorder, ctx.owner, states, regions_of)


def _jobs(
    ctx: RefreshContext, config: WorkerConfig, options: WorkerOptions, http: httpx.AsyncClient,
    settings: Settings,
) -> list[PeriodicJob]:
    """The periodic jobs beside refreshing, each bounded by the worker's batch size."""
    jobs: list[PeriodicJob] = [
        ErasureSweep(ctx.router, ctx.custody, ctx.banks, ErasureMetrics(ctx.metrics.registry),
                     config=ErasureConfig.from_settings(settings),
                     escrow_for=options.escrow_for, batch=max(config.batch // 4, 1)),
        PlaidSweep(ctx.router, syncer=Syncer(ctx.router, ctx.custody, ctx.banks, ctx.recorder),
                   banks=ctx.banks, batch=config.batch, registry=ctx.metrics.registry),
        SyncSchedule(ctx.router, ctx.banks, Syncer(ctx.router, ctx.custody, ctx.banks,
                                                   ctx.recorder),
                     batch=config.batch, metrics=BudgetMetrics.of(ctx.metrics.registry)),
        ConsentWatch(ctx.router, ctx.banks, batch=config.batch,
                     warning=timedelta(days=settings.worker.consent_warning_days)),
        IdempotencyPurge(ctx.router, batch=max(config.batch, 100)),
        KeyRotation(ctx.router, ctx.custody,
                    {r: settings.region(r).rotate_every for r in ctx.router.regions},
                    KeyMetrics(ctx.metrics.registry), owner=ctx.owner),
    ]
    outbox = outbox_job(ctx.router, http, ctx.custody, owner=ctx.owner, batch=config.batch,
                        policy=settings.egress, metrics=ctx.metrics)
    if outbox is not None:
        jobs.append(outbox)
    return jobs


def _on_signals(stop: asyncio.Event, shutdown_timeout: float) -> None:
    loop = asyncio.get_running_loop()

    def first() -> None:
        if stop.is_set():
            os._exit(130)  # second signal: the operator means it
        stop.set()
        # The drain gets its budget; past it (a hung bank call, a stuck DB) we leave anyway.
        loop.call_later(shutdown_timeout + 2.0, os._exit, 1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first)

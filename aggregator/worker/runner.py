"""The worker's main loop: lease per region, refresh concurrently, stop gracefully.

One :class:`Worker` per process serves every configured region. Each region has a
leasing loop; all regions share the global concurrency bound (``concurrency`` refreshes
in flight at once), and each bank has its own bound and breaker
(:class:`~aggregator.worker.refresh.RefreshContext`). The loops lease up to one
``batch`` ahead of the free slots and only in batches of at least a quarter of
``batch``: leasing each freed slot on its own cost a lease transaction per credential.
A bank whose breaker is open or whose slots are all taken is left out of the next lease
query, so its due credentials stay in the table for a worker that can serve them
instead of occupying slots here.

Shutdown (:meth:`Worker.run` returns when ``stop`` is set): leasing stops at once, work
in flight gets until ``shutdown_timeout`` minus a grace second to finish, then is
cancelled; a cancelled refresh hands its row back (still marked in flight if its request
may have reached the bank), and so does a leased credential still waiting for a slot,
at once, so nothing waits for the lease to expire.

Beside the leasing loops, each :class:`~aggregator.worker.jobs.PeriodicJob` (erasure,
Plaid webhooks, outbox delivery) runs in a loop of its own: bounded passes, the stop
event checked between items, and the same drain budget at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.models.base import utcnow
from aggregator.worker.jobs import PeriodicJob, run_periodically
from aggregator.worker.lease import Lease, backlog, heartbeat, lease_batch
from aggregator.worker.outbox import pending
from aggregator.worker.refresh import RefreshContext, refresh_leased

log = logging.getLogger(__name__)


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


def default_owner() -> str:
    """``host:pid``: unique among live workers, and says where to look when one dies."""
    return f"{socket.gethostname()[:48]}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How one worker process paces itself; every duration in seconds."""

    #: One httpx client tops out near 1,000 round trips/s (docs/architecture.md,
    #: "Performance notes").
    concurrency: int = 16
    #: Credentials per lease transaction; up to one batch is leased ahead of free slots.
    batch: int = 32
    #: Above the OAuth client's 10 s timeout; kept alive by a heartbeat every
    #: ``heartbeat_seconds`` while the worker lives, so a dead worker's leases come back
    #: within this many seconds instead of a minute.
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 4.0
    poll_seconds: float = 1.0
    shutdown_timeout: float = 10.0
    stats_seconds: float = 5.0

    @property
    def lease_for(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)


class Worker:
    """Leases and refreshes due credentials until told to stop.

    Example::

        worker = Worker(ctx, WorkerConfig(concurrency=32))
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await worker.run(stop)
    """

    def __init__(
        self, ctx: RefreshContext, config: WorkerConfig, jobs: Sequence[PeriodicJob] = ()
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.jobs = tuple(jobs)
        self._tasks: set[asyncio.Task[str]] = set()
        self._slot_freed = asyncio.Event()
        ctx.slots = asyncio.Semaphore(config.concurrency)
        ctx.lease_margin = min(2.0, config.lease_seconds / 3)

    async def run(self, stop: asyncio.Event) -> None:
        regions = self.ctx.router.regions
        loops = [asyncio.create_task(self._lease_loop(r, stop), name=f"lease-{r}")
                 for r in regions]
        stats = asyncio.create_task(self._stats_loop(regions, stop), name="worker-stats")
        beats = asyncio.create_task(self._heartbeat_loop(regions, stop), name="heartbeat")
        jobs = [asyncio.create_task(run_periodically(job, stop), name=f"job-{job.name}")
                for job in self.jobs]
        try:
            await stop.wait()
        finally:
            await self._shutdown([*loops, stats, beats], jobs)
            # Refreshes cancelled while their rotation waited still get it committed.
            await self.ctx.committer.drain()

    async def _shutdown(
        self, loops: list[asyncio.Task[None]], jobs: Sequence[asyncio.Task[None]] = ()
    ) -> None:
        for task in loops:
            task.cancel()
        await asyncio.sleep(0)  # refreshes created just now start (a task cancelled
        # before its first step would skip the handler that hands its lease back)
        for waiting in self.ctx.waiting & self._tasks:
            waiting.cancel()  # leased ahead, never sent: handed back now, no new bank call
        await asyncio.gather(*loops, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.config.shutdown_timeout - 1.0, 0.1)
        if jobs:
            # A job pass sees ``stop`` between items; its current item shares the budget.
            _, late = await asyncio.wait(jobs, timeout=deadline - loop.time())
            for task in late:
                task.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        budget = max(deadline - loop.time(), 0.1)
        if self._tasks:
            log.info("worker stopping: %d refreshes in flight", len(self._tasks))
            _, pending = await asyncio.wait(set(self._tasks), timeout=budget)
            for work in pending:
                work.cancel()
            if pending:
                await asyncio.wait(pending, timeout=0.9)

    async def _lease_loop(self, region: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            free = self.config.concurrency + self.config.batch - len(self._tasks)
            if free < max(self.config.batch // 4, 1):
                await self._wait(stop, self._slot_freed)
                continue
            limit = min(self.config.batch, free)
            leased_at = time.monotonic()  # before the lease: a conservative deadline
            try:
                leases = await lease_batch(
                    self.ctx.router, region, self.ctx.owner, now=utcnow(), limit=limit,
                    lease_for=self.config.lease_for,
                    exclude_banks=self.ctx.unavailable_banks(), mark_in_flight=True,
                    keys=self.ctx.custody[region].data_keys,
                )
            except Exception:
                log.exception("worker: leasing in region %s failed", region)
                leases = []
            if leases:
                self.ctx.crash.reached("after_lease")
            for lease in leases:
                self.ctx.lease_deadlines[lease.credential.id] = (
                    leased_at + self.config.lease_seconds)
                self._start(region, lease)
            if len(leases) < limit:
                await self._wait(stop, None)

    async def _wait(self, stop: asyncio.Event, event: asyncio.Event | None) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if event is not None:
            event.clear()
            waiters.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=self.config.poll_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _start(self, region: str, lease: Lease) -> None:
        self.ctx.metrics.leased.labels(region).inc()
        if lease.in_flight_before:
            self.ctx.metrics.takeovers.labels(region).inc()
            log.warning("credential %s: found in flight under an expired lease; resolving",
                        lease.credential.id)
        task = asyncio.create_task(self._refresh(region, lease))
        self._tasks.add(task)
        self.ctx.metrics.in_flight.set(len(self._tasks))
        task.add_done_callback(self._finished)

    async def _refresh(self, region: str, lease: Lease) -> str:
        try:
            return await refresh_leased(self.ctx, region, lease)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease is left to expire: the row comes back to a worker within it.
            log.exception("credential %s: refresh failed unexpectedly", lease.credential.id)
            self.ctx.metrics.outcome(lease.bank_id, "error")
            return "error"
        finally:
            self.ctx.lease_deadlines.pop(lease.credential.id, None)

    def _finished(self, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        self.ctx.metrics.in_flight.set(len(self._tasks))
        self._slot_freed.set()

    async def _stats_loop(self, regions: tuple[str, ...], stop: asyncio.Event) -> None:
        """The gauges that need a query, every ``stats_seconds`` (never per scrape): each
        query walks an index (``refresh_due_at``, ``next_attempt_at``) over due rows only."""
        metrics = self.ctx.metrics
        while not stop.is_set():
            for region in regions:
                try:
                    now = utcnow()
                    found = await backlog(self.ctx.router, region, now)
                    metrics.backlog.labels(region).set(found.due)
                    metrics.oldest_due.labels(region).set(_age(now, found.oldest_due_at))
                    waiting = await pending(self.ctx.router, region)
                    metrics.outbox_depth.labels(region).set(waiting.events)
                    metrics.outbox_oldest.labels(region).set(_age(now, waiting.oldest_created_at))
                except Exception:
                    log.warning("worker: stats query in region %s failed", region, exc_info=True)
            await self._sleep(stop, self.config.stats_seconds)

    async def _heartbeat_loop(self, regions: tuple[str, ...], stop: asyncio.Event) -> None:
        """Extend this worker's leases every ``heartbeat_seconds`` while it has any."""
        every = min(self.config.heartbeat_seconds, self.config.lease_seconds / 3)
        while not stop.is_set():
            await self._sleep(stop, every)
            if not self._tasks:
                continue
            for region in regions:
                beat = time.monotonic()  # before the update: a conservative new deadline
                try:
                    extended = await heartbeat(self.ctx.router, region, self.ctx.owner,
                                               now=utcnow(), lease_for=self.config.lease_for)
                    self._extended(extended, beat)
                except Exception:
                    log.warning("worker: heartbeat in region %s failed", region, exc_info=True)

    def _extended(self, extended: set[str], beat: float) -> None:
        """Move the deadlines a heartbeat at ``beat`` extended: those it names that were
        still live then by our own reckoning. A lease the row lost without lapsing (its
        owner cleared as suspect, :func:`aggregator.worker.refresh.reverify`) is not
        extended, so its deadline stays where the database lease ends."""
        deadlines = self.ctx.lease_deadlines
        for credential_id in extended:
            deadline = deadlines.get(credential_id)
            if deadline is not None and deadline > beat:
                deadlines[credential_id] = beat + self.config.lease_seconds

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

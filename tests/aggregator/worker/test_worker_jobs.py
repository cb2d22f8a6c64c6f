"""Periodic jobs beside refreshing: scheduled by the runner, stopped within the budget."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx

from aggregator.custody import RegionCustody
from aggregator.store import RegionRouter
from aggregator.worker import RefreshContext, Worker, WorkerConfig, WorkerMetrics
from aggregator.worker.outbox import OutboxSweep
from tests.aggregator.worker.test_worker_refresh import StubBanks, StubOAuth


class SlowJob:
    """Counts passes; each pass handles items one by one and stops when told."""

    name = "slow"
    interval = 0.05

    def __init__(self) -> None:
        self.passes = 0
        self.items = 0

    async def run_once(self, stop: asyncio.Event) -> int:
        self.passes += 1
        for _ in range(1000):  # a large backlog, bounded
            if stop.is_set():
                break
            await asyncio.sleep(0.01)
            self.items += 1
        return self.items


class FailingJob:
    name = "failing"
    interval = 0.02

    def __init__(self) -> None:
        self.passes = 0

    async def run_once(self, stop: asyncio.Event) -> int:
        self.passes += 1
        raise RuntimeError("database away")


async def test_the_runner_schedules_jobs_survives_failures_and_stops_within_budget(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> None:
    ctx = RefreshContext(region_router, custody, StubBanks(StubOAuth()), WorkerMetrics(), "t",
                         max_interval=timedelta(hours=1))
    slow, failing = SlowJob(), FailingJob()
    worker = Worker(ctx, WorkerConfig(poll_seconds=0.05, shutdown_timeout=2.0),
                    jobs=[slow, failing])
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, 3.0)

    assert time.monotonic() - started < 1.0  # the pass saw ``stop`` between items
    assert slow.passes == 1
    assert 0 < slow.items < 1000
    assert failing.passes >= 2  # a failed pass is logged and retried, not fatal


async def test_the_outbox_pass_is_the_one_call_into_deliver_due(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> None:
    calls: list[dict[str, Any]] = []

    class Stats:
        delivered = 3

    async def deliver_due(*args: Any, **kwargs: Any) -> Stats:
        calls.append({"args": args, **kwargs})
        return Stats()

    async with httpx.AsyncClient() as http:
        sweep = OutboxSweep(region_router, http, custody, "outbox:t", deliver_due, batch=7)
        assert await sweep.run_once(asyncio.Event()) == 3
        stopped = asyncio.Event()
        stopped.set()
        assert await sweep.run_once(stopped) == 0
    assert len(calls) == 1
    assert calls[0]["limit"] == 7
    assert calls[0]["owner"] == "outbox:t"

"""Periodic jobs run beside the refresh leasing: erasure, Plaid webhooks, scheduled sync,
outbox delivery, KEK rotation.

Each job does one bounded pass (``batch`` items at most) and then sleeps ``interval``
seconds, so a backlog drains over several passes instead of one unbounded loop, and a
stop request is honoured between items: :meth:`PeriodicJob.run_once` receives the stop
event and returns early once it is set. Every job's work is resumable (a row lease or a
state compare-and-set), so a pass cut short by shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class PeriodicJob(Protocol):
    """One kind of background work the :class:`~aggregator.worker.runner.Worker` schedules.

    Contract: ``run_once`` does at most a bounded amount of work, checks ``stop`` between
    items, and returns how many items it handled; it may raise, and the runner logs the
    error and tries again after ``interval``. Example::

        worker = Worker(ctx, config, jobs=[ErasureSweep(router, custody, banks)])
    """

    name: str
    interval: float

    async def run_once(self, stop: asyncio.Event) -> int: ...


async def run_periodically(job: PeriodicJob, stop: asyncio.Event) -> None:
    """Pass after pass until ``stop``; a failed pass is logged and the next one tried."""
    while not stop.is_set():
        try:
            await job.run_once(stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker job %s: pass failed; retrying in %.0f s", job.name,
                          job.interval)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), job.interval)

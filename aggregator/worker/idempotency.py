"""The worker's idempotency pass: delete idempotency keys past their 24 hours.

Expired keys already count as absent when a request claims them
(:mod:`aggregator.idempotency`), so this pass only bounds the table's size: each pass
deletes at most ``batch`` rows per region, oldest first, and a backlog drains over
several passes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aggregator.idempotency import purge_expired
from aggregator.store import RegionRouter


@dataclass
class IdempotencyPurge:
    """:class:`~aggregator.worker.jobs.PeriodicJob` deleting expired idempotency keys."""

    router: RegionRouter
    batch: int = 500
    interval: float = 60.0
    name: str = "idempotency-purge"

    async def run_once(self, stop: asyncio.Event) -> int:
        purged = 0
        for region in self.router.regions:
            if stop.is_set():
                break
            purged += await purge_expired(self.router, region, limit=self.batch)
        return purged

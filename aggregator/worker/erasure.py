"""The worker's erasure pass: resume open requests, retry failed revocations, expire escrow.

Erasure requests usually finish in the gateway's background task; this pass is what
makes them finish anyway when that process died mid-request (the request's lease
expires and :func:`~aggregator.erasure.resume_pending` takes it over), and what keeps
trying the banks that could not be reached at the time (the receipt records each retry).
Tokens kept in escrow for those retries are dropped after ``escrow_for`` (default 7
days): a revocation that has failed for a week is given up rather than keeping a
working token of an erased user around indefinitely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.erasure import (
    ErasureConfig,
    ErasureMetrics,
    expire_escrow,
    resume_pending,
    retry_failed,
)
from aggregator.erasure.revocation import Banks
from aggregator.models import ErasureRequest, ErasureRevocation, ErasureState, RevocationOutcome
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter

log = logging.getLogger(__name__)

#: How long a failed revocation's token stays in escrow for retries.
DEFAULT_ESCROW = timedelta(days=7)
#: A failed revocation is retried at most this often (the bank was down: give it time).
DEFAULT_RETRY_EVERY = timedelta(hours=1)


@dataclass
class ErasureSweep:
    """:class:`~aggregator.worker.jobs.PeriodicJob` for erasure; one per worker process."""

    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    banks: Banks
    metrics: ErasureMetrics | None = None
    config: ErasureConfig = field(default_factory=ErasureConfig)
    escrow_for: timedelta = DEFAULT_ESCROW
    retry_every: timedelta = DEFAULT_RETRY_EVERY
    batch: int = 10
    interval: float = 30.0
    name: str = "erasure"

    async def run_once(self, stop: asyncio.Event, *, now: datetime | None = None) -> int:
        now = now or utcnow()
        done = await resume_pending(self.router, self.custody, self.banks, config=self.config,
                                    now=now, limit=self.batch)
        if self.metrics is not None:
            await self.metrics.refresh(self.router, now)
        retried = 0
        for region in self.router.regions:
            if stop.is_set():
                break
            for request_id in await self._failed(region, now):
                if stop.is_set():
                    break
                retried += len(await retry_failed(self.router, self.custody[region],
                                                  self.banks, request_id, config=self.config))
            expired = await expire_escrow(self.router, region, now - self.escrow_for)
            if expired:
                log.warning("erasure: gave up revoking %d grants in %s after %s", expired,
                            region, self.escrow_for)
        return len(done) + retried

    async def _failed(self, region: str, now: datetime) -> list[str]:
        """Completed requests with a failed revocation still in escrow, not tried lately."""
        r, q = ErasureRevocation, ErasureRequest
        async with self.router.reader(region) as session:
            return list((await session.execute(
                select(r.request_id).join(q, q.id == r.request_id).where(
                    q.state == ErasureState.COMPLETED, r.outcome == RevocationOutcome.FAILED,
                    r.token_escrow.is_not(None),
                    (r.last_attempt_at.is_(None)) | (r.last_attempt_at < now - self.retry_every),
                ).group_by(r.request_id).order_by(r.request_id).limit(self.batch)
            )).scalars())

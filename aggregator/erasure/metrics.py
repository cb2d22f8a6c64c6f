"""Prometheus gauges of erasure requests: open, and overdue against their deadline.

Gauges rather than counters because "overdue" is a property of the requests now, not
an event. Counting needs the databases (async) and a Prometheus scrape is synchronous,
so :meth:`ErasureMetrics.refresh` recounts when something changes: the erasure routes
call it on every request, and the worker should call it after
:func:`~aggregator.erasure.job.resume_pending`.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select

from aggregator.models import ErasureRequest, ErasureState
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter

_requests = table_of(ErasureRequest)


async def count_overdue(router: RegionRouter, region: str, now: datetime) -> tuple[int, int]:
    """(open requests, open requests past their deadline) of ``region``."""
    c = _requests.c
    async with router.reader(region) as session:
        row = (await session.execute(
            select(func.count(), func.count().filter(c.deadline_at < now))
            .where(c.state != ErasureState.COMPLETED)
        )).one()
    return int(row[0]), int(row[1])


class ErasureMetrics:
    """``aggregator_erasure_requests_open`` and ``…_overdue``, by region."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge("aggregator_erasure_requests_open",
                          "Erasure requests not completed yet", ["region"], registry=registry)
        self.overdue = Gauge("aggregator_erasure_requests_overdue",
                             "Erasure requests not completed by their statutory deadline",
                             ["region"], registry=registry)

    async def refresh(self, router: RegionRouter, now: datetime | None = None) -> None:
        for region in router.regions:
            opened, late = await count_overdue(router, region, now or utcnow())
            self.open.labels(region).set(opened)
            self.overdue.labels(region).set(late)

"""The worker's outbox pass: deliver due outbound events (issue 6, "Outbound events").

THE SINGLE CALL SITE for the colleague's ``deliver_due`` (``aggregator/events/``). When
this was written that package was still being built (``aggregator/events/delivery.py``
present, no ``__init__.py``), so it is looked up at start-up rather than imported:
:func:`outbox_job` returns None, and the worker runs without an outbox pass, while the
function is missing. The call below follows the signature found then —
``deliver_due(router, http, custody, *, owner, limit) -> DeliveryStats`` — and is the
only line to adapt if it changes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select

from aggregator.custody import RegionCustody
from aggregator.models import OutboundEvent
from aggregator.models.base import table_of
from aggregator.store import RegionRouter
from aggregator.worker.metrics import WorkerMetrics
from connectors import EgressPolicy

log = logging.getLogger(__name__)

Deliver = Callable[..., Awaitable[Any]]
_MODULES = ("aggregator.events", "aggregator.events.delivery")


@dataclass
class OutboxSweep:
    """:class:`~aggregator.worker.jobs.PeriodicJob` delivering due outbox events."""

    router: RegionRouter
    http: httpx.AsyncClient
    custody: Mapping[str, RegionCustody]
    owner: str
    deliver_due: Deliver
    batch: int = 32
    interval: float = 1.0
    name: str = "outbox"
    #: The outbound policy each delivery's URL is checked against (``settings.egress``).
    policy: EgressPolicy = field(default_factory=EgressPolicy)
    metrics: WorkerMetrics | None = None

    async def run_once(self, stop: asyncio.Event) -> int:
        if stop.is_set():
            return 0
        # OUTBOX CALL SITE: the one call into aggregator.events.
        stats = await self.deliver_due(self.router, self.http, self.custody, owner=self.owner,
                                       limit=self.batch, policy=self.policy)
        delivered = int(getattr(stats, "delivered", 0))
        if self.metrics is not None:
            self.metrics.delivered(delivered, int(getattr(stats, "failed", 0)),
                                   int(getattr(stats, "lost", 0)))
        return delivered


@dataclass(frozen=True, slots=True)
class Pending:
    events: int
    oldest_created_at: datetime | None


async def pending(router: RegionRouter, region: str) -> Pending:
    """Events still to be delivered (``next_attempt_at`` set); walks that column's index."""
    e = table_of(OutboundEvent).c
    async with router.reader(region) as session:
        row = (await session.execute(
            select(func.count(), func.min(e.created_at)).where(e.next_attempt_at.is_not(None))
        )).one()
    oldest: datetime | None = row[1]
    if isinstance(oldest, str):  # SQLite aggregates lose the column type
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=UTC)
    return Pending(int(row[0]), oldest)


def find_deliver_due() -> Deliver | None:
    """``deliver_due`` from ``aggregator.events`` if that package provides it yet."""
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found = getattr(module, "deliver_due", None)
        if callable(found):
            return found  # type: ignore[no-any-return]
    return None


def outbox_job(
    router: RegionRouter, http: httpx.AsyncClient, custody: Mapping[str, RegionCustody], *,
    owner: str, batch: int, policy: EgressPolicy | None = None,
    metrics: WorkerMetrics | None = None,
) -> OutboxSweep | None:
    """The outbox pass if ``deliver_due`` exists, else None (logged)."""
    deliver = find_deliver_due()
    if deliver is None:
        log.warning("worker: aggregator.events.deliver_due not found; no outbox delivery pass")
        return None
    return OutboxSweep(router, http, custody, f"outbox:{owner}"[:64], deliver, batch=batch,
                       policy=policy or EgressPolicy(), metrics=metrics)

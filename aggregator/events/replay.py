"""Reading the outbox back: an application's events across regions, and redelivery.

Events live in the region of the user they concern, so listing them asks every region
(each query an index range scan on ``(application_id, created_at, id)``) and merges the
pages; the keyset ``(created_at, id)`` makes the order total and pages stable.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from aggregator.ids import ApplicationId
from aggregator.models import OutboundEvent
from aggregator.models.base import table_of, utcnow
from aggregator.store.router import RegionRouter

_events = table_of(OutboundEvent)


async def list_events(
    router: RegionRouter, app_id: ApplicationId, *, since: datetime | None,
    after: tuple[datetime, str] | None, limit: int,
) -> tuple[list[OutboundEvent], bool]:
    """Up to ``limit`` events of the app, oldest first, and whether more follow."""
    c = _events.c
    stmt = select(OutboundEvent).where(c.application_id == app_id)
    if since is not None:
        stmt = stmt.where(c.created_at >= since)
    if after is not None:
        at, last = after
        stmt = stmt.where(or_(c.created_at > at, and_(c.created_at == at, c.id > last)))
    stmt = stmt.order_by(c.created_at, c.id).limit(limit + 1)
    pages: list[Sequence[OutboundEvent]] = []
    for region in router.regions:
        async with router.reader(region) as session:
            pages.append((await session.execute(stmt)).scalars().all())
    merged = list(heapq.merge(*pages, key=lambda e: (e.created_at, e.id)))
    return merged[:limit], len(merged) > limit


async def redeliver(
    router: RegionRouter, region: str, app_id: ApplicationId, event_id: str
) -> OutboundEvent | None:
    """Make the event due now with a fresh retry schedule; None if not the app's."""
    c = _events.c
    async with router.session(region) as session, session.begin():
        result = await session.execute(
            update(_events).where(c.id == event_id, c.application_id == app_id)
            .values(next_attempt_at=utcnow(), attempts=0, lease_owner=None, last_error=None)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        return await session.get(OutboundEvent, event_id, populate_existing=True)

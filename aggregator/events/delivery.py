"""Delivering due events: leased, signed, posted once each, retried for more than a day.

At least once: an event is marked delivered only after its endpoint answered 2xx, so a
crash between the answer and the commit sends it again (receivers de-duplicate on
``webhook-id``, which stays the same across attempts, as the spec asks).

Leasing follows :mod:`aggregator.worker.lease`: ``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL, and on both databases a compare-and-set ``UPDATE`` that pushes
``next_attempt_at`` past the lease and names the owner. A leased event is therefore
not due for anyone else until the lease lapses (a dead worker's events come back by
themselves), and the outcome is written only while the lease is still ours.

Retries: after the n-th failed attempt the next one waits ``SCHEDULE[n-1]`` times a
jitter factor in [1, 1.2) (spreading a recovering receiver's load; never shorter, so
the schedule's span is a floor). Eight attempts span more than 27 hours; after the
last, ``next_attempt_at`` is cleared and the event waits for a redelivery. Redirects
are not followed: a 3xx is a failure, since following one would let an endpoint
point us at an internal address the URL check refused.

SSRF: the URL is checked against the outbound policy again before each attempt (it
was registered under a policy that may since have tightened), and ``http`` should be an
:func:`connectors.egress_client` of the same policy, which checks the resolved address
of every connection and caps the answer; a refusal is the attempt's ``unsafe_url``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update

from aggregator.custody import RegionCustody
from aggregator.events.endpoints import check_url, secrets_in_use, url_of
from aggregator.events.standard_webhooks import headers
from aggregator.models import Application, OutboundEvent
from aggregator.models.base import table_of, utcnow
from aggregator.store.router import RegionRouter
from connectors import EgressPolicy, EgressRefused, ResponseTooLarge

_events = table_of(OutboundEvent)

SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=5), timedelta(hours=10), timedelta(hours=10),
)
JITTER = 0.2
LEASE_FOR = timedelta(seconds=60)
_STRICT = EgressPolicy()


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt ended: ``delivered``, or the status/error code of the failure."""

    delivered: bool
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    failed: int = 0
    lost: int = 0  # the lease lapsed before the outcome was written


def body_of(event: OutboundEvent) -> bytes:
    """The JSON posted: the spec's recommended ``type`` / ``timestamp`` / ``data`` shape."""
    return json.dumps(
        {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data},
        separators=(",", ":"), sort_keys=True,
    ).encode()


def next_attempt(attempts: int, now: datetime, rng: random.Random) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None when retries ran out."""
    if attempts > len(SCHEDULE):
        return None
    return now + SCHEDULE[attempts - 1] * rng.uniform(1.0, 1.0 + JITTER)


async def lease_due(
    router: RegionRouter, region: str, owner: str, *, now: datetime, limit: int,
    lease_for: timedelta = LEASE_FOR,
) -> list[tuple[OutboundEvent, Application]]:
    """Lease up to ``limit`` due events with their applications, oldest first."""
    c = _events.c
    expires = now + lease_for
    async with router.session(region) as session, session.begin():
        ids = list((await session.execute(
            select(c.id).where(c.next_attempt_at <= now).order_by(c.next_attempt_at)
            .limit(limit).with_for_update(skip_locked=True)
        )).scalars())
        if not ids:
            return []
        await session.execute(
            update(_events).where(c.id.in_(ids), c.next_attempt_at <= now)
            .values(next_attempt_at=expires, lease_owner=owner[:64])
        )
        rows = (await session.execute(
            select(OutboundEvent, Application)
            .join(Application, Application.id == OutboundEvent.application_id)
            .where(c.id.in_(ids), c.lease_owner == owner[:64], c.next_attempt_at == expires)
            .order_by(OutboundEvent.created_at)
        )).all()
    return [(row[0], row[1]) for row in rows]


async def post(
    http: httpx.AsyncClient, url: str, signing: list[str], event: OutboundEvent,
    *, now: datetime, request_timeout: float, policy: EgressPolicy = _STRICT,
) -> Attempt:
    """One signed POST; every transport failure becomes a code here, at the boundary."""
    body = body_of(event)
    sent = {"content-type": "application/json",
            **headers(signing, event.id, int(now.timestamp()), body)}
    try:
        check_url(url, policy)
        async with http.stream("POST", url, content=body, headers=sent,
                               follow_redirects=False, timeout=request_timeout) as response:
            status = response.status_code
    except (ValueError, EgressRefused):
        return Attempt(False, error="unsafe_url")
    except ResponseTooLarge:
        return Attempt(False, error="too_large")
    except httpx.TimeoutException:
        return Attempt(False, error="timeout")
    except httpx.HTTPError:
        return Attempt(False, error="connect")
    return Attempt(200 <= status < 300, status, None if status < 300 else f"http_{status}")


async def _record(
    router: RegionRouter, region: str, event: OutboundEvent, owner: str,
    attempt: Attempt, now: datetime, rng: random.Random,
) -> bool:
    c = _events.c
    attempts = event.attempts + 1
    values: dict[str, object] = {
        "attempts": attempts, "lease_owner": None, "last_status": attempt.status,
        "last_error": attempt.error,
    }
    if attempt.delivered:
        values.update(delivered_at=now, next_attempt_at=None)
    elif attempt.error == "no_endpoint":
        values.update(attempts=event.attempts, next_attempt_at=None)
    else:
        values["next_attempt_at"] = next_attempt(attempts, now, rng)
    async with router.session(region) as session, session.begin():
        result = await session.execute(
            update(_events).where(c.id == event.id, c.lease_owner == owner[:64],
                                  c.next_attempt_at == event.next_attempt_at).values(values)
        )
    return getattr(result, "rowcount", 0) == 1


async def deliver_due(
    router: RegionRouter, http: httpx.AsyncClient, custody: Mapping[str, RegionCustody], *,
    owner: str, limit: int = 100, request_timeout: float = 10.0, now: datetime | None = None,
    rng: random.Random | None = None, policy: EgressPolicy = _STRICT,
) -> DeliveryStats:
    """Deliver up to ``limit`` due events per region, concurrently; one pass, no loop.

    The worker calls it on every tick. An application without an endpoint gets none
    of its events sent: they stay listed (``GET /v1/events``) and can be redelivered.
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
    stats = DeliveryStats()
    for region in router.regions:
        leased = await lease_due(router, region, owner, now=now or utcnow(), limit=limit)
        await asyncio.gather(*(
            _deliver(router, http, custody[region], event, app, owner=owner, stats=stats,
                     request_timeout=request_timeout, now=now, rng=rng, policy=policy)
            for event, app in leased
        ))
    return stats


async def _deliver(
    router: RegionRouter, http: httpx.AsyncClient, keys: RegionCustody,
    event: OutboundEvent, app: Application, *, owner: str, stats: DeliveryStats,
    request_timeout: float, now: datetime | None, rng: random.Random, policy: EgressPolicy,
) -> None:
    signing = secrets_in_use(keys.hasher, app, utcnow())
    url = url_of(keys.hasher, app)
    if url is None or not signing:
        attempt = Attempt(False, error="no_endpoint")
    else:
        attempt = await post(http, url, signing, event, now=utcnow(),
                             request_timeout=request_timeout, policy=policy)
    if not await _record(router, keys.region, event, owner, attempt, now or utcnow(), rng):
        stats.lost += 1
    elif attempt.delivered:
        stats.delivered += 1
    else:
        stats.failed += 1

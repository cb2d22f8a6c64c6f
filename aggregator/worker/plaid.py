"""The worker's Plaid pass: apply stored webhooks, each by exactly one worker, with backoff.

The receiver stores each verified webhook as a ``pending`` row (the row *is* the job,
:mod:`aggregator.models.plaid`). Here a worker takes a due row by a compare-and-set on
``available_at`` (``pending`` and ``available_at <= now`` → ``available_at = now +
lease``): on PostgreSQL the second of two concurrent ``UPDATE``\\ s waits for the first
and then no longer matches; SQLite serialises writers. The winner applies the row with
:func:`~aggregator.plaid.apply_webhook_event` in its own transaction, which also
re-checks ``pending`` under a row lock, so an event is applied once even if a lease
lapsed. A failure leaves the row pending with ``attempts + 1`` and ``available_at``
pushed out by exponential backoff with jitter; a dead worker's row comes back when its
lease ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update

from aggregator.models import PlaidWebhookEvent, WebhookStatus
from aggregator.models.base import table_of, utcnow
from aggregator.plaid import NoPlaidHooks, PlaidHooks, apply_webhook_event, pending_events
from aggregator.store import RegionRouter
from aggregator.worker.breaker import Backoff

log = logging.getLogger(__name__)
_events = table_of(PlaidWebhookEvent)


@dataclass
class PlaidSweep:
    """:class:`~aggregator.worker.jobs.PeriodicJob` applying stored Plaid webhooks."""

    router: RegionRouter
    hooks: PlaidHooks = field(default_factory=NoPlaidHooks)
    batch: int = 50
    lease: timedelta = timedelta(seconds=60)
    backoff: Backoff = field(default_factory=lambda: Backoff(5.0, 3600.0))
    rng: random.Random = field(default_factory=random.SystemRandom)
    interval: float = 2.0
    name: str = "plaid"

    async def run_once(self, stop: asyncio.Event) -> int:
        applied = 0
        for region in self.router.regions:
            async with self.router.reader(region) as session:
                keys = await pending_events(session, self.batch)
            for key in keys:
                if stop.is_set():
                    return applied
                if await self.apply_one(region, key):
                    applied += 1
        return applied

    async def apply_one(self, region: str, key: bytes) -> bool:
        """Claim and apply one event; False if another worker has it or it failed."""
        now = utcnow()
        if not await self._claim(region, key, now):
            return False
        try:
            async with self.router.session(region) as session, session.begin():
                outcome = await apply_webhook_event(session, key, self.hooks)
        except Exception as exc:
            await self._back_off(region, key, type(exc).__name__)
            return False
        log.info("plaid webhook %s in %s: %s", key.hex()[:12], region, outcome)
        return outcome is not None

    async def _claim(self, region: str, key: bytes, now: datetime) -> bool:
        c = _events.c
        async with self.router.session(region) as session, session.begin():
            result = await session.execute(
                update(_events).where(c.body_sha256 == key, c.status == WebhookStatus.PENDING,
                                      c.available_at <= now)
                .values(available_at=now + self.lease)
            )
        return getattr(result, "rowcount", 0) == 1

    async def _back_off(self, region: str, key: bytes, error: str) -> None:
        c = _events.c
        async with self.router.reader(region) as session:
            event = await session.get(PlaidWebhookEvent, key)
        attempts = (event.attempts if event is not None else 0) + 1
        delay = self.backoff.delay(attempts, None, self.rng)
        log.warning("plaid webhook %s in %s failed (%s), attempt %d; retry in %.0f s",
                    key.hex()[:12], region, error, attempts, delay)
        async with self.router.session(region) as session, session.begin():
            await session.execute(
                update(_events).where(c.body_sha256 == key, c.status == WebhookStatus.PENDING)
                .values(attempts=c.attempts + 1, available_at=utcnow() + timedelta(seconds=delay))
            )

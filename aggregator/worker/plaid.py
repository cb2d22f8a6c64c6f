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

A ``SYNC_UPDATES_AVAILABLE`` row comes out of its transaction still pending with outcome
``sync_requested`` (its budget unit spent, :mod:`aggregator.plaid.apply`); the worker then
syncs the connection (:class:`~aggregator.sync.Syncer`, no lock held across Plaid's
calls) and closes the row. A sync that fails for a retryable reason (Plaid unavailable)
is backed off like any failure and retried without spending again; one that fails for
good closes the row as ``sync_failed`` (the reason is on ``sync_states.last_error``).

Each pass also purges applied and orphaned rows older than
:data:`~aggregator.plaid.HISTORY_RETENTION`, a bounded batch per region, so the table
(one row per distinct body: repeats re-arm their row) does not grow forever. Every
applied webhook is counted by region, type, code and outcome
(``aggregator_plaid_webhooks_applied``); a code Plaid does not document for our products
is counted as ``OTHER``, so traffic cannot grow the label set.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import update

from aggregator.errors import GatewayError
from aggregator.events.hooks import OutboxPlaidHooks
from aggregator.ids import ConnectionId
from aggregator.models import PlaidWebhookEvent, WebhookStatus
from aggregator.models.base import table_of, utcnow
from aggregator.plaid import (
    HISTORY_RETENTION,
    SYNC_REQUESTED,
    PlaidHooks,
    apply_webhook_event,
    finish_sync,
    pending_events,
    purge_expired,
)
from aggregator.plaid.apply import DOCUMENTED_CODES
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from aggregator.worker.breaker import Backoff
from connectors import BankUnavailable, ConnectorError, SyncPolicy

log = logging.getLogger(__name__)
_events = table_of(PlaidWebhookEvent)


class ConnectionSync(Protocol):
    """What runs a requested sync: :class:`~aggregator.sync.Syncer`."""

    async def sync(self, connection_id: ConnectionId, *, actor: str = ...,
                   request_id: str | None = ..., spent_at: datetime | None = ...) -> Any: ...


@dataclass
class PlaidSweep:
    """:class:`~aggregator.worker.jobs.PeriodicJob` applying stored Plaid webhooks."""

    router: RegionRouter
    hooks: PlaidHooks = field(default_factory=OutboxPlaidHooks)
    syncer: ConnectionSync | None = None
    banks: BankDirectory | None = None
    batch: int = 50
    lease: timedelta = timedelta(seconds=60)
    backoff: Backoff = field(default_factory=lambda: Backoff(5.0, 3600.0))
    rng: random.Random = field(default_factory=random.SystemRandom)
    interval: float = 2.0
    retention: timedelta = HISTORY_RETENTION
    #: A webhook failing this often is closed as ``failed``: never retried forever.
    max_attempts: int = 10
    name: str = "plaid"
    registry: CollectorRegistry | None = None
    applied: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.applied = Counter(
            "aggregator_plaid_webhooks_applied",
            "Plaid webhooks applied by the worker, by region, type, code and outcome",
            ["region", "type", "code", "outcome"], registry=self.registry)

    async def run_once(self, stop: asyncio.Event) -> int:
        applied = 0
        for region in self.router.regions:
            await self.purge(region)
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
                outcome = await apply_webhook_event(session, key, self.hooks,
                                                    self._policy(region))
                event = await session.get(PlaidWebhookEvent, key)
                connection_id = event.connection_id if event is not None else None
                kind = (event.webhook_type, event.webhook_code) if event else ("", "")
        except Exception as exc:
            await self._back_off(region, key, type(exc).__name__)
            return False
        if outcome == SYNC_REQUESTED and connection_id is not None:
            outcome = await self._sync(region, key, connection_id)
        log.info("plaid webhook %s in %s: %s", key.hex()[:12], region, outcome)
        if outcome is not None:
            kind = kind if kind in DOCUMENTED_CODES else ("OTHER", "OTHER")
            self.applied.labels(region, *kind, outcome).inc()
        return outcome is not None

    async def purge(self, region: str) -> int:
        """Drop one bounded batch of applied rows past their history retention."""
        async with self.router.session(region) as session, session.begin():
            return await purge_expired(session, utcnow() - self.retention, self.batch * 10)

    def _policy(self, region: str) -> SyncPolicy:
        return self.banks.plaid_policy(region) if self.banks is not None else SyncPolicy()

    async def _sync(self, region: str, key: bytes, connection_id: str) -> str | None:
        if self.syncer is None:
            log.warning("plaid webhook %s in %s: no sync job in this worker; left pending",
                        key.hex()[:12], region)
            return None
        started = utcnow()
        outcome = "synced"
        try:
            await self.syncer.sync(ConnectionId(connection_id), actor="webhook")
        except BankUnavailable as exc:  # Plaid down or mutating: retry, unit already spent
            await self._back_off(region, key, exc.code)
            return None
        except (ConnectorError, GatewayError) as exc:
            log.warning("plaid sync of %s failed: %s", connection_id, exc.code)
            outcome = "sync_failed"
        async with self.router.session(region) as session, session.begin():
            await finish_sync(session, key, outcome, started_at=started)
        return outcome

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
        if attempts >= self.max_attempts:
            log.error("plaid webhook %s in %s failed (%s) %d times; given up",
                      key.hex()[:12], region, error, attempts)
            async with self.router.session(region) as session, session.begin():
                await session.execute(
                    update(_events)
                    .where(c.body_sha256 == key, c.status == WebhookStatus.PENDING)
                    .values(attempts=attempts, status=WebhookStatus.APPLIED,
                            outcome="failed", applied_at=utcnow())
                )
            return
        delay = self.backoff.delay(attempts, None, self.rng)
        log.warning("plaid webhook %s in %s failed (%s), attempt %d; retry in %.0f s",
                    key.hex()[:12], region, error, attempts, delay)
        async with self.router.session(region) as session, session.begin():
            await session.execute(
                update(_events).where(c.body_sha256 == key, c.status == WebhookStatus.PENDING)
                .values(attempts=c.attempts + 1, available_at=utcnow() + timedelta(seconds=delay))
            )

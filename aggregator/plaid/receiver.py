"""``POST /webhooks/plaid/{region}``: verify, de-duplicate, store with its job, answer.

Verification (:class:`connectors.WebhookVerifier`) runs on the raw body before anything
else; a rejection stores nothing and is counted by reason. A verified webhook is
inserted (insert-or-ignore on the SHA-256 of its body, so Plaid's retries collapse) into
the region's ``plaid_webhook_events`` as a ``pending`` job, or as ``orphaned`` when no
connection of *this* region holds the item: another region's item is never looked up,
let alone applied, here.

Group commit: a region's store takes one write transaction at a time (SQLite's lock;
on either backend a commit costs a disk flush), so concurrent webhooks are stored in
shared transactions. The first request that finds no writer becomes the writer and
commits everything queued meanwhile (up to :data:`MAX_BATCH` per transaction) until the
queue is empty; every request still answers only after its own row is committed. A
batch costs two statements whatever its size (:func:`store_webhooks`): one lookup of
the items' connections and one multi-row insert-or-ignore.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.models import Connection, PlaidWebhookEvent, WebhookStatus
from aggregator.models.base import table_of
from aggregator.store import RegionRouter
from connectors import PlaidWebhook, WebhookRejected, WebhookVerifier

log = logging.getLogger("aggregator.plaid.webhooks")
_events = table_of(PlaidWebhookEvent)
#: Webhooks stored per transaction at most.
MAX_BATCH = 64
_Queued = tuple[PlaidWebhook, "asyncio.Future[Receipt]"]


class Receipt(enum.Enum):
    """What happened to a verified webhook."""

    STORED = "stored"  # new; pending for the worker
    DUPLICATE = "duplicate"  # the same body was stored before (a Plaid retry)
    ORPHANED = "orphaned"  # stored, but no connection of this region has the item


class PlaidWebhooks:
    """The receiver of every Plaid region this process serves."""

    def __init__(
        self, router: RegionRouter, verifiers: Mapping[str, WebhookVerifier],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.router = router
        self.verifiers = dict(verifiers)
        self._queues: dict[str, list[_Queued]] = {r: [] for r in self.verifiers}
        self._writing: set[str] = set()
        #: ``outcome`` is a receipt (stored, duplicate, orphaned: accepted) or a
        #: :class:`~connectors.RejectReason` value (rejected, and why).
        self.counter = Counter(
            "aggregator_plaid_webhooks", "Plaid webhooks received, by region and outcome",
            ["region", "outcome"], registry=registry,
        )
        self._exposed: set[int] = {id(registry)} if registry is not None else set()

    def expose(self, registry: CollectorRegistry) -> None:
        """Serve the counters from ``registry`` too (the app's ``/metrics``); idempotent."""
        if id(registry) not in self._exposed:
            self._exposed.add(id(registry))
            registry.register(self.counter)

    def max_body_bytes(self, region: str) -> int:
        return self.verifiers[region].max_body_bytes

    async def receive(self, region: str, body: bytes, header: str | None) -> Receipt:
        """Verify and store; raises :class:`WebhookRejected` (already logged and counted)."""
        try:
            hook = await self.verifiers[region].verify(body, header)
        except WebhookRejected as exc:
            self.counter.labels(region, exc.reason.value).inc()
            log.warning("plaid webhook rejected", extra={"region": region,
                                                         "reason": exc.reason.value})
            raise
        receipt = await self._store(region, hook)
        self.counter.labels(region, receipt.value).inc()
        return receipt

    async def _store(self, region: str, hook: PlaidWebhook) -> Receipt:
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        queue = self._queues[region]
        queue.append((hook, future))
        if region not in self._writing:
            self._writing.add(region)
            try:
                while queue:
                    batch = queue[:MAX_BATCH]
                    del queue[:MAX_BATCH]
                    await self._commit(region, batch)
            finally:
                self._writing.discard(region)
                for _, stranded in queue:  # only if this writer was cancelled
                    if not stranded.done():
                        stranded.set_exception(RuntimeError("webhook writer cancelled"))
                queue.clear()
        return await future

    async def _commit(self, region: str, batch: list[_Queued]) -> None:
        try:
            async with self.router.session(region) as session, session.begin():
                receipts = await store_webhooks(session, region, [hook for hook, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if not future.done():
                future.set_result(receipt)


async def store_webhook(session: AsyncSession, region: str, hook: PlaidWebhook) -> Receipt:
    """Insert-or-ignore one webhook and its job in the session's transaction."""
    (receipt,) = await store_webhooks(session, region, [hook])
    return receipt


async def store_webhooks(
    session: AsyncSession, region: str, hooks: Sequence[PlaidWebhook]
) -> list[Receipt]:
    """Insert-or-ignore ``hooks`` in the session's transaction, in two statements.

    The receipts are in the order of ``hooks``; a body repeated within the batch is
    stored once and its later copies are duplicates, as if they had come later.
    """
    if not hooks:
        return []
    items = sorted({h.item_id for h in hooks if h.item_id is not None})
    owners: dict[str, str] = {}
    if items:
        rows = await session.execute(
            select(Connection.external_ref, Connection.id)
            .where(Connection.external_ref.in_(items)).order_by(Connection.created_at)
        )
        for item, owner in rows:
            if item is not None:
                owners.setdefault(item, owner)  # the oldest, as LIMIT 1 chose before
    now = datetime.now(UTC)
    fresh: dict[bytes, dict[str, Any]] = {}
    for hook in hooks:
        if hook.body_sha256 in fresh:
            continue
        connection_id: str | None = (
            owners.get(hook.item_id) if hook.item_id is not None else None)
        fresh[hook.body_sha256] = {
            "body_sha256": hook.body_sha256, "region": region, "item_id": hook.item_id,
            "connection_id": connection_id, "webhook_type": hook.webhook_type,
            "webhook_code": hook.webhook_code, "body": hook.body.decode("utf-8"),
            "signed_at": hook.issued_at, "received_at": now,
            "status": WebhookStatus.PENDING if connection_id else WebhookStatus.ORPHANED,
            "attempts": 0, "available_at": now,
        }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_events).values(list(fresh.values())).on_conflict_do_nothing(
        index_elements=["body_sha256"]
    ).returning(_events.c.body_sha256)
    # RETURNING, not rowcount: drivers disagree on rowcount for an ignored conflict.
    stored = set((await session.execute(statement)).scalars())
    receipts = []
    for hook in hooks:
        if hook.body_sha256 not in stored:
            receipts.append(Receipt.DUPLICATE)
            continue
        stored.discard(hook.body_sha256)  # a later copy in this batch is a duplicate
        orphan = fresh[hook.body_sha256]["connection_id"] is None
        receipts.append(Receipt.ORPHANED if orphan else Receipt.STORED)
    return receipts

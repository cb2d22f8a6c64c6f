"""``POST /webhooks/plaid/{region}``: verify, store with its job (or coalesce), answer.

Verification (:class:`connectors.WebhookVerifier`) runs on the raw body before anything
else; a rejection stores nothing, is counted by reason and logged with its region and
reason code (never the JWS, the body or the item id). A verified webhook becomes a
``pending`` job in the region's ``plaid_webhook_events``, or ``orphaned`` when no
connection of *this* region holds the item: another region's item is never looked up,
let alone applied, here.

Repeats (README, "Plaid webhooks: repeats"). Plaid's later notifications of the same
kind are byte-identical (only the signature's ``iat`` differs), so the SHA-256 of the
body tells a repeat, not a retry. A delivery identical to a row still *pending* is
coalesced into it (the pending job will act on the state of things when it runs;
``redelivered_at`` records it, so a sync already running is followed by another). A
delivery identical to a row already *applied* (or orphaned) is a new notification: the
row is re-armed as a new job. The table holds one row per distinct body, and the worker
purges applied rows after :data:`~aggregator.plaid.apply.HISTORY_RETENTION`.

Group commit with a bounded wait: every commit costs a disk flush, so webhooks are
stored in shared transactions of at most :data:`MAX_BATCH`. The writer role is a
per-region FIFO semaphore: a request queues its webhook, takes a writer slot, and
commits whatever is queued (its own webhook included) unless an earlier writer already
did. No request ever writes more than one batch for others, so none waits for more than
a commit in flight plus its own, however long the queue grows. SQLite takes one write
transaction at a time, so it has one slot; PostgreSQL has :data:`PG_WRITERS` (one: the
receiver is bound by its own CPU, and fewer, larger batches cost less of it than
overlapping commits save; bench/README.md, webhook row). A batch costs two statements
whatever its size (:func:`store_webhooks`): one lookup of the items' connections and one
upsert (PostgreSQL: ``INSERT … SELECT FROM unnest`` of one array per column; SQLite: a
multi-row ``VALUES``). On SQLite the batch's transaction runs whole in a worker thread on
the region's blocking writer engine (:meth:`RegionRouter.blocking_writer`): one hand-over
to a thread per batch instead of one per statement and cursor call.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import String, bindparam, case, func, literal_column, null, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as CoreConnection
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from aggregator.models import Connection, PlaidWebhookEvent, WebhookStatus
from aggregator.models.base import table_of
from aggregator.store import RegionRouter
from connectors import PlaidWebhook, WebhookRejected, WebhookVerifier

log = logging.getLogger("aggregator.plaid.webhooks")
_events = table_of(PlaidWebhookEvent)
#: Webhooks stored per transaction at most.
MAX_BATCH = 64
#: Concurrent write transactions per PostgreSQL region (SQLite: one). Four overlapped
#: commits but made batches four times smaller: more CPU per webhook, fewer per second.
PG_WRITERS = 1
_Queued = tuple[PlaidWebhook, "asyncio.Future[Receipt]"]


class Receipt(enum.Enum):
    """What happened to a verified webhook."""

    STORED = "stored"  # new, or a repeat of an applied one: pending for the worker
    DUPLICATE = "duplicate"  # identical to a webhook still pending: coalesced into it
    ORPHANED = "orphaned"  # stored, but no connection of this region has the item


class PlaidWebhooks:
    """The receiver of every Plaid region this process serves."""

    def __init__(
        self, router: RegionRouter, verifiers: Mapping[str, WebhookVerifier],
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.router = router
        self.verifiers = dict(verifiers)
        self.clock = clock
        self._queues: dict[str, list[_Queued]] = {r: [] for r in self.verifiers}
        self._writers = {r: asyncio.Semaphore(self._slots(r)) for r in self.verifiers}
        #: ``outcome`` is a receipt (stored, duplicate, orphaned: accepted) or a
        #: :class:`~connectors.RejectReason` value (rejected, and why).
        self.counter = Counter(
            "aggregator_plaid_webhooks", "Plaid webhooks received, by region and outcome",
            ["region", "outcome"], registry=registry,
        )
        self._exposed: set[int] = {id(registry)} if registry is not None else set()
        self._children: dict[tuple[str, str], Any] = {}  # labels() looked up once each

    def expose(self, registry: CollectorRegistry) -> None:
        """Serve the counters from ``registry`` too (the app's ``/metrics``); idempotent."""
        if id(registry) not in self._exposed:
            self._exposed.add(id(registry))
            registry.register(self.counter)

    def _slots(self, region: str) -> int:
        dialect = self.router.engine(region).dialect.name
        return PG_WRITERS if dialect == "postgresql" else 1

    def max_body_bytes(self, region: str) -> int:
        return self.verifiers[region].max_body_bytes

    async def receive(self, region: str, body: bytes, header: str | None) -> Receipt:
        """Verify and store; raises :class:`WebhookRejected` (already logged and counted)."""
        try:
            hook = await self.verifiers[region].verify(body, header)
        except WebhookRejected as exc:
            self._count(region, exc.reason.value)
            log.warning("plaid webhook rejected", extra={"fields": {
                "region": region, "reason": exc.reason.value}})
            raise
        receipt = await self._store(region, hook)
        self._count(region, receipt.value)
        return receipt

    def _count(self, region: str, outcome: str) -> None:
        child = self._children.get((region, outcome))
        if child is None:
            child = self._children[region, outcome] = self.counter.labels(region, outcome)
        child.inc()

    async def _store(self, region: str, hook: PlaidWebhook) -> Receipt:
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        queue = self._queues[region]
        queue.append((hook, future))
        async with self._writers[region]:  # FIFO: earlier holders may have written ours
            while not future.done() and queue:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                await self._commit(region, batch)
        # Not done with the queue empty: another writer's batch in flight holds ours.
        return await future

    async def _commit(self, region: str, batch: list[_Queued]) -> None:
        hooks, now = [hook for hook, _ in batch], self.clock()
        try:
            blocking = self.router.blocking_writer(region)
            if blocking is not None:  # SQLite: the whole transaction in one thread hop
                receipts = await asyncio.to_thread(_write, blocking, region, hooks, now)
            else:
                async with self.router.session(region) as session, session.begin():
                    receipts = await store_webhooks(session, region, hooks, now=now)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RuntimeError(
                "webhook writer cancelled")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if not future.done():
                future.set_result(receipt)


async def store_webhook(session: AsyncSession, region: str, hook: PlaidWebhook, *,
                        now: datetime | None = None) -> Receipt:
    """Store (or coalesce) one webhook and its job in the session's transaction."""
    (receipt,) = await store_webhooks(session, region, [hook], now=now)
    return receipt


async def store_webhooks(
    session: AsyncSession, region: str, hooks: Sequence[PlaidWebhook], *,
    now: datetime | None = None,
) -> list[Receipt]:
    """Upsert ``hooks`` in the session's transaction, in two statements.

    New bodies are inserted as jobs; a body identical to a pending row is coalesced into
    it; a body identical to an applied or orphaned row re-arms that row as a new job.
    The receipts are in the order of ``hooks``; a body repeated within the batch is
    stored once and its later copies are coalesced, as if they had come later.
    """
    return await session.run_sync(_store, region, hooks, now)


def _write(engine: Engine, region: str, hooks: Sequence[PlaidWebhook],
           now: datetime) -> list[Receipt]:
    """:func:`store_webhooks` in a transaction of its own on a blocking engine (a thread)."""
    with engine.begin() as connection:  # Core: an ORM session costs more and adds nothing
        return _store(connection, region, hooks, now)


#: The owners of a batch's items; one cached statement whatever the batch size.
_OWNERS = (
    select(Connection.external_ref, Connection.id)
    .where(Connection.external_ref.in_(bindparam("items", expanding=True)))
    .order_by(Connection.created_at)
)


def _store(session: Session | CoreConnection, region: str, hooks: Sequence[PlaidWebhook],
           now: datetime | None) -> list[Receipt]:
    if not hooks:
        return []
    items = sorted({h.item_id for h in hooks if h.item_id is not None})
    owners: dict[str, str] = {}
    if items:
        for item, owner in session.execute(_OWNERS, {"items": items}):
            if item is not None:
                owners.setdefault(item, owner)  # the oldest, as LIMIT 1 chose before
    now = now or datetime.now(UTC)
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
            "attempts": 0, "available_at": now, "redelivered_at": None,
        }
    # RETURNING, not rowcount: drivers disagree on rowcount for upserts. A row whose
    # received_at is ours and that was not coalesced is one this statement (re)armed.
    # Rows in key order: two concurrent batches sharing bodies then lock them in the same
    # order on PostgreSQL, so they queue instead of deadlocking.
    rows = [fresh[key] for key in sorted(fresh)]
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "postgresql":
        # One statement of one size whatever the batch: each column as one array. The
        # multi-row VALUES form had 13 parameters a row, too many for psycopg's cache of
        # converted queries: re-parsing it was a fifth of the receiver's CPU.
        columns = {name: [row[name] for row in rows] for name in _PG_COLUMNS}
        columns["status"] = [status.value for status in columns["status"]]
        result = session.execute(_pg_upsert(), columns | {"region": region, "now": now})
    else:
        # One cached statement, run with many parameter sets: SQLAlchemy sends it as a
        # multi-row INSERT ("insertmanyvalues") without compiling it per batch size.
        result = session.execute(_upsert("sqlite"), rows)
    stored = {key: received == now and redelivered is None
              for key, received, redelivered in result}
    receipts = []
    for hook in hooks:
        if not stored.get(hook.body_sha256, False):
            receipts.append(Receipt.DUPLICATE)
            continue
        stored[hook.body_sha256] = False  # a later copy in this batch is coalesced
        orphan = fresh[hook.body_sha256]["connection_id"] is None
        receipts.append(Receipt.ORPHANED if orphan else Receipt.STORED)
    return receipts


#: Per-row columns of the PostgreSQL batch, sent as arrays (the rest are constants).
_PG_COLUMNS = ("body_sha256", "item_id", "connection_id", "webhook_type", "webhook_code",
               "body", "signed_at", "status")


@functools.cache
def _pg_upsert() -> Any:
    """:func:`_upsert` for PostgreSQL: ``INSERT … SELECT`` from ``unnest`` of arrays."""
    c = _events.c
    # Status as text: the values the Enum column stores (webhook_status is a VARCHAR).
    types = {name: String() if name == "status" else c[name].type for name in _PG_COLUMNS}
    batch = func.unnest(*(bindparam(name, type_=postgresql.ARRAY(types[name]))
                          for name in _PG_COLUMNS)
                        ).table_valued(*_PG_COLUMNS).render_derived(name="batch")
    now = bindparam("now", type_=c.received_at.type)
    rows = select(
        *(batch.c[name] for name in _PG_COLUMNS), bindparam("region", type_=c.region.type),
        now, literal_column("0"), now, null(),
    ).order_by(batch.c.body_sha256)
    statement = postgresql.insert(_events).from_select(
        [*_PG_COLUMNS, "region", "received_at", "attempts", "available_at", "redelivered_at"],
        rows)
    return statement.on_conflict_do_update(
        index_elements=["body_sha256"], set_=_rearm_or_coalesce(statement.excluded),
    ).returning(_events.c.body_sha256, _events.c.received_at, _events.c.redelivered_at)


@functools.cache
def _upsert(dialect: str) -> Any:
    """Insert, or coalesce into a pending row, or re-arm a done one; RETURNING the key."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_events)
    return statement.on_conflict_do_update(
        index_elements=["body_sha256"], set_=_rearm_or_coalesce(statement.excluded),
    ).returning(_events.c.body_sha256, _events.c.received_at, _events.c.redelivered_at)


def _rearm_or_coalesce(new: Any) -> dict[str, Any]:
    """SET clauses of the upsert: keep a pending row (noting the repeat), re-arm any other."""
    c = _events.c
    # Constants written into the SQL, not bound: every bound value of the SET clause is
    # processed again for every row of an executemany (ten enum conversions per row).
    pending = c.status == literal_column(f"'{WebhookStatus.PENDING.value}'")

    def pick(column: str, rearmed: Any) -> Any:
        return case((pending, c[column]), else_=rearmed)

    return {
        "status": pick("status", new.status),
        "connection_id": pick("connection_id", new.connection_id),
        "signed_at": pick("signed_at", new.signed_at),
        "received_at": pick("received_at", new.received_at),
        "available_at": pick("available_at", new.available_at),
        "attempts": pick("attempts", literal_column("0")),
        "outcome": pick("outcome", null()),
        "applied_at": pick("applied_at", null()),
        "redelivered_at": case((pending, new.received_at), else_=null()),
    }

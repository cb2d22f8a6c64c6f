"""Storing a batch of verified webhooks: two statements, receipts in order, on both stores."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from aggregator.models import Connection, PlaidWebhookEvent, WebhookStatus
from aggregator.plaid import PlaidWebhooks, Receipt
from aggregator.plaid.receiver import store_webhooks
from aggregator.store import RegionRouter
from tests.aggregator.plaid.conftest import ITEM
from tests.aggregator.plaid.test_apply import webhook


async def test_a_batch_stores_each_body_once_with_its_connection(
    region_router: RegionRouter, connection: Connection,
) -> None:
    known = webhook("ITEM", "LOGIN_REPAIRED")
    stranger = webhook("ITEM", "LOGIN_REPAIRED", item_id="item-of-nobody")
    async with region_router.session("eu") as session, session.begin():
        receipts = await store_webhooks(session, "eu", [known, stranger, known])
    assert receipts == [Receipt.STORED, Receipt.ORPHANED, Receipt.DUPLICATE]
    async with region_router.session("eu") as session, session.begin():
        # pending: coalesced; orphaned: a new notification, its item looked up again
        assert await store_webhooks(session, "eu", [known, stranger]) == [
            Receipt.DUPLICATE, Receipt.ORPHANED]
    async with region_router.reader("eu") as session:
        rows = {e.item_id: e for e in (await session.execute(
            select(PlaidWebhookEvent))).scalars()}
    assert set(rows) == {ITEM, "item-of-nobody"}
    assert (rows[ITEM].status, rows[ITEM].connection_id) == (WebhookStatus.PENDING,
                                                             connection.id)
    assert rows["item-of-nobody"].status is WebhookStatus.ORPHANED


async def test_no_request_writes_more_than_its_own_batch_under_sustained_load(
    region_router: RegionRouter, connection: Connection,
) -> None:
    """Issue 15: the request that became the writer stayed one until the queue drained
    (seconds under load). Now every commit is made by a request whose own webhook is in
    it, so none waits for more than the commit in flight and its own."""
    hooks = [webhook("ITEM", f"CODE_{i}") for i in range(40)]
    commits: list[tuple[asyncio.Task[object] | None, list[bytes]]] = []
    tasks: list[asyncio.Task[object]] = []

    class Recording(PlaidWebhooks):
        async def _commit(self, region: str, batch: list) -> None:  # type: ignore[type-arg]
            commits.append((asyncio.current_task(), [h.body_sha256 for h, _ in batch]))
            if len(tasks) < len(hooks):  # more traffic arrives during every commit
                tasks.append(asyncio.create_task(self._store("eu", hooks[len(tasks)])))
            await super()._commit(region, batch)

    receiver = Recording(region_router, {"eu": None})  # type: ignore[dict-item]
    tasks.append(asyncio.create_task(receiver._store("eu", hooks[0])))
    for _ in range(3000):  # bounded: 30 s at most
        if len(tasks) == len(hooks) and all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    assert [t.result() for t in tasks] == [Receipt.STORED] * len(hooks)
    by_task: dict[object, int] = {}
    for task, keys in commits:
        by_task[task] = by_task.get(task, 0) + 1
        owner = tasks.index(task)  # type: ignore[arg-type]
        assert hooks[owner].body_sha256 in keys  # a writer commits its own webhook
    assert max(by_task.values()) == 1


async def test_a_writer_whose_webhook_is_in_anothers_batch_waits_without_spinning(
    region_router: RegionRouter, connection: Connection,
) -> None:
    """With several writer slots (PostgreSQL), a request may find its webhook already
    taken by a batch in flight: it waits for that commit instead of opening empty ones."""
    hooks = [webhook("ITEM", f"SLOT_{i}") for i in range(8)]
    batches: list[int] = []

    class Recording(PlaidWebhooks):
        def _slots(self, region: str) -> int:
            return 4

        async def _commit(self, region: str, batch: list) -> None:  # type: ignore[type-arg]
            batches.append(len(batch))
            await asyncio.sleep(0.05)  # a slow flush: the other slots are free meanwhile
            await super()._commit(region, batch)

    receiver = Recording(region_router, {"eu": None})  # type: ignore[dict-item]
    receipts = await asyncio.wait_for(
        asyncio.gather(*(receiver._store("eu", hook) for hook in hooks)), 30)
    assert receipts == [Receipt.STORED] * len(hooks)
    assert 0 not in batches  # no empty transaction was opened
    assert sum(batches) == len(hooks)
